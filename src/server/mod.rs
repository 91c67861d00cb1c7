//! Embedding and starting the broker: [`Server`], [`ServerHandle`]; the hooks
//! ([`Authenticator`]) are defined by the broker and re-exported here.
//!
//! **Owns:** start-up (configuration check, resource preflight, binding listeners, building
//! the cross-shard grid, starting one executor thread per shard) and shutdown.
//!
//! **Must not touch:** connection or session state; that belongs to the shards.
//!
//! ```no_run
//! use surgemq::config::Config;
//! use surgemq::server::Server;
//!
//! let mut config = Config::default();
//! config.listeners = vec!["127.0.0.1:0".parse().unwrap()];
//! config.shards = 2;
//! let handle = Server::new(config).start().expect("broker starts");
//! println!("listening on {:?}", handle.local_addrs());
//! let summary = handle.shutdown();
//! println!("{summary:?}");
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{bounded, Sender};
use glommio::{LocalExecutorBuilder, Placement};

use crate::broker::runtime::shard_main;
pub use crate::broker::shard::ShardSummary;
use crate::broker::transport::Listening;
use crate::broker::{net, ShardMsg};
use crate::config::{AcceptMode, Config, ConfigError};
use crate::mesh;

mod security;

pub use crate::broker::home_shard;
pub use crate::broker::hooks::{
    AllowAll, AuthExchange, AuthStep, Authenticator, ClientInfo, ClientRights,
};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The persistent state could not be read or written (`persistence.dir`), or a log
    /// was written by a newer version.
    #[error("persistence: {message}")]
    Persistence {
        /// What failed, with the path.
        message: String,
    },
    /// A security file (`password_file`, `acl_file`) could not be read or does not parse.
    #[error("{path}: {message}")]
    Security {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong (with the line number for a parse error).
        message: String,
    },
    /// A shard's executor could not be created (io_uring or locked-memory limits).
    #[error(
        "cannot start shard {shard}: {message}. SurgeMQ needs io_uring (Linux 5.8+, not blocked by \
         seccomp: with Docker use --security-opt seccomp=unconfined; check sysctl kernel.io_uring_disabled=0) \
         and RLIMIT_MEMLOCK of at least 512 KiB per shard (ulimit -l, or LimitMEMLOCK= in systemd)"
    )]
    Runtime {
        /// The shard.
        shard: usize,
        /// glommio's error.
        message: String,
    },
}

/// A broker to start.
pub struct Server {
    config: Config,
    auth: Arc<dyn Authenticator>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish()
    }
}

impl Server {
    /// A broker with this configuration and the allow-all authenticator.
    pub fn new(config: Config) -> Server {
        Server {
            config,
            auth: Arc::new(AllowAll),
        }
    }

    /// Uses `auth` to admit clients.
    pub fn with_authenticator(mut self, auth: impl Authenticator) -> Server {
        self.auth = Arc::new(auth);
        self
    }

    /// Validates the configuration, binds the listeners and starts every shard. Returns
    /// once all shards run (or the first error).
    pub fn start(self) -> Result<ServerHandle, StartError> {
        let cfg = self.config;
        cfg.validate()?;
        // One hook stack per listener's pair of security files (see `security`).
        let security::Stacks {
            domains,
            listener_domains,
            files: mut security,
        } = security::stacks(&cfg, self.auth)?;
        let domains = Arc::new(domains);
        let shards = cfg.shard_count();
        // glommio needs 512 KiB of locked memory per executor for its rings; raise the soft
        // limit if the hard one allows (it does for root), so the common case just works.
        let _ = net::raise_memlock(512 * 1024 * (shards as u64 + 2));

        // What each listener's connections get: `listeners` are plain MQTT with the top
        // level's settings; `[[listener]]` tables have their own (TLS files read here).
        let limits = &cfg.limits;
        let per_ip = (limits.max_connections_per_ip > 0).then(|| {
            Arc::new(crate::broker::admission::IpCounts::new(
                limits.max_connections_per_ip,
            ))
        });
        let caps = |max_connections| crate::broker::admission::Caps {
            max_connections,
            open: Arc::default(),
            per_ip: per_ip.clone(),
        };
        let mut specs: Vec<(SocketAddr, Arc<Listening>)> = cfg
            .listeners
            .iter()
            .enumerate()
            .map(|(index, addr)| {
                let plain = Listening {
                    index,
                    tls: None,
                    allow_anonymous: cfg.allow_anonymous,
                    identity_as_username: false,
                    domain: 0,
                    caps: caps(0),
                    rate: limits.max_connection_rate,
                    websocket: None,
                };
                (*addr, Arc::new(plain))
            })
            .collect();
        for (l, domain) in cfg.listener.iter().zip(listener_domains) {
            let Some(addr) = l.address else { continue };
            let tls = match (&l.certfile, &l.keyfile) {
                (Some(cert), Some(key)) => Some(security.listener_tls(l, cert, key)?),
                _ => None,
            };
            let listening = Listening {
                index: specs.len(),
                tls,
                allow_anonymous: l.allow_anonymous.unwrap_or(cfg.allow_anonymous),
                identity_as_username: l.use_identity_as_username,
                domain,
                caps: caps(l.max_connections),
                rate: l.max_connection_rate.unwrap_or(limits.max_connection_rate),
                websocket: (l.protocol == crate::config::ListenerProtocol::Websockets).then(|| {
                    let max_frame = match l.websockets_max_frame_size {
                        0 => u64::from(limits.max_packet_size) + 5,
                        n => n,
                    };
                    (l.http_path.clone(), max_frame)
                }),
            };
            specs.push((addr, Arc::new(listening)));
        }

        // Listeners: bound here, on the calling thread, so that errors are reported before
        // anything starts and port 0 resolves once for every shard.
        let reuse = cfg.accept_mode == AcceptMode::ReusePort;
        let mut per_shard: Vec<Vec<(std::net::TcpListener, Arc<Listening>)>> =
            (0..shards).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        for (addr, listening) in specs {
            let first =
                net::bind(addr, reuse).map_err(|source| StartError::Bind { addr, source })?;
            let actual = first
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            addrs.push(actual);
            if let Some(v) = per_shard.get_mut(0) {
                v.push((first, listening.clone()));
            }
            if reuse {
                for v in per_shard.iter_mut().skip(1) {
                    let l = net::bind(actual, true).map_err(|source| StartError::Bind {
                        addr: actual,
                        source,
                    })?;
                    v.push((l, listening.clone()));
                }
            }
        }

        // The Prometheus endpoint, served by shard 0.
        let mut metrics = match cfg.metrics.listen {
            Some(addr) => {
                let l =
                    net::bind(addr, false).map_err(|source| StartError::Bind { addr, source })?;
                let actual = l
                    .local_addr()
                    .map_err(|source| StartError::Bind { addr, source })?;
                tracing::info!(address = %actual, "metrics endpoint listening");
                Some((l, actual))
            }
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(|(_, a)| *a);

        // Durable state: read back, re-homed onto this run's shards and written as a new
        // epoch before any shard starts (blocking I/O is fine here).
        let mut persist: Vec<Option<crate::broker::runtime::PersistStart>> =
            (0..shards).map(|_| None).collect();
        if cfg.persistence.mode != crate::config::PersistMode::Off {
            let recovered =
                crate::broker::recovery::recover(&cfg.persistence, shards).map_err(|e| {
                    StartError::Persistence {
                        message: e.to_string(),
                    }
                })?;
            let interest = Arc::new(recovered.interest);
            let pressure: Arc<[std::sync::atomic::AtomicBool]> = (0..shards)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect();
            for (slot, start) in persist.iter_mut().zip(recovered.shards) {
                *slot = Some((start, interest.clone(), pressure.clone()));
            }
        }

        let cfg = Arc::new(cfg);
        // The CPUs this process may run on (its affinity mask, which `taskset` sets).
        let mut allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        allowed.sort_unstable();
        let grid = mesh::grid::<ShardMsg>(shards, cfg.mesh.channel_capacity)
            .into_iter()
            .zip(mesh::grid::<ShardMsg>(shards, cfg.mesh.channel_capacity));
        let (ready_tx, ready_rx) = bounded::<Result<(), StartError>>(shards);
        let mut stops = Vec::with_capacity(shards);
        let mut threads = Vec::with_capacity(shards);
        for (((id, (data_ends, control_ends)), listeners), persist) in
            grid.enumerate().zip(per_shard).zip(persist)
        {
            let (stop_tx, stop_rx) = bounded::<()>(1);
            stops.push(stop_tx);
            let placement = match cfg.cpus.as_ref().and_then(|c| c.get(id)) {
                Some(&cpu) => Placement::Fixed(cpu),
                None => match allowed.get(id) {
                    // Thread-per-core means a shard stays on its core: its caches, its
                    // io_uring and its memory stay warm and nothing migrates between them.
                    Some(&cpu) if cfg.pin_shards && allowed.len() >= shards => {
                        Placement::Fixed(cpu)
                    }
                    _ => Placement::Unbound,
                },
            };
            let cfg = cfg.clone();
            let domains = domains.clone();
            let metrics = if id == 0 {
                metrics.take().map(|(l, _)| l)
            } else {
                None
            };
            let ready = ready_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("surgemq-shard-{id}"))
                .spawn(move || -> ShardSummary {
                    let ex = match LocalExecutorBuilder::new(placement)
                        .name(&format!("shard-{id}"))
                        .io_memory(256 << 10)
                        // The kernel sizes io_uring's poll cancellation hash from the ring:
                        // with glommio's default depth (128) every idle connection's poll
                        // lands in one of 8 buckets, and connecting or closing is O(n) in
                        // open connections (measured: 42% of a 10k-connection setup in
                        // io_poll_find). 4096 gives the maximum 256 buckets.
                        .ring_depth(4096)
                        .make()
                    {
                        Ok(ex) => ex,
                        Err(e) => {
                            let _ = ready.send(Err(StartError::Runtime {
                                shard: id,
                                message: e.to_string(),
                            }));
                            return ShardSummary::default();
                        }
                    };
                    ex.run(shard_main(
                        id,
                        cfg,
                        domains,
                        data_ends,
                        control_ends,
                        listeners,
                        metrics,
                        persist,
                        ready,
                        stop_rx,
                    ))
                })
                .map_err(|e| StartError::Runtime {
                    shard: id,
                    message: e.to_string(),
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let handle = ServerHandle {
            addrs,
            stops,
            threads,
            security,
            metrics_addr,
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    handle.shutdown();
                    return Err(e);
                }
                Err(_) => {
                    handle.shutdown();
                    return Err(StartError::Runtime {
                        shard: 0,
                        message: "a shard thread exited during start-up".into(),
                    });
                }
            }
        }
        tracing::info!(shards, listeners = ?handle.addrs, "surgemq started");
        Ok(handle)
    }
}

/// A running broker.
#[derive(Debug)]
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    stops: Vec<Sender<()>>,
    threads: Vec<std::thread::JoinHandle<ShardSummary>>,
    /// The security files in force (for a reload).
    security: security::SecurityFiles,
    /// Where the `[metrics]` endpoint listens, if it does.
    metrics_addr: Option<SocketAddr>,
}

impl ServerHandle {
    /// The addresses the listeners are bound to (with the real port when 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address of the `[metrics]` HTTP endpoint (with the real port when 0 was
    /// asked), if it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Reads the security files again (what `SIGHUP` does to the binary): every password
    /// and ACL file, the top level's and the listeners' own, and the TLS certificates and
    /// client CAs (for new connections).
    /// Password files apply to every CONNECT from now on; connections already admitted
    /// stay. ACL files apply to every client, connected ones included, from each shard's
    /// next check or delivery; subscriptions made before stay, but what they deliver is
    /// checked against the new rules. Every file is read and parsed before any is
    /// replaced: one that cannot be read or does not parse leaves them all in force (the
    /// error says why). Without security files, nothing to do.
    pub fn reload_security(&self) -> Result<(), StartError> {
        self.security.reload()
    }

    /// Stops accepting, closes every connection and stops the shards. Returns the counters
    /// summed over shards.
    pub fn shutdown(self) -> ShardSummary {
        for s in &self.stops {
            let _ = s.try_send(());
        }
        let mut total = ShardSummary::default();
        for t in self.threads {
            if let Ok(s) = t.join() {
                total.add(&s);
            }
        }
        tracing::info!(summary = ?total, "surgemq stopped");
        total
    }
}
