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
        // The ACL file goes in front of the embedder's hooks, the password file in front
        // of both.
        let mut auth = self.auth;
        let mut acl = None;
        if let Some(path) = &cfg.acl_file {
            let file = read_acl_file(path)?;
            tracing::info!(path = %path.display(), rules = file.len(), "ACL file loaded");
            let a = Arc::new(crate::security::acl_auth::AclAuth::new(file, auth));
            acl = Some((path.clone(), a.clone()));
            auth = a;
        }
        let mut passwords = None;
        if let Some(path) = &cfg.password_file {
            let file = read_password_file(path)?;
            tracing::info!(path = %path.display(), users = file.len(), "password file loaded");
            let p = Arc::new(crate::security::password::PasswordAuth::new(file, auth));
            passwords = Some((path.clone(), p.clone()));
            auth = p;
        }
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
            .map(|addr| {
                let plain = Listening {
                    tls: None,
                    allow_anonymous: cfg.allow_anonymous,
                    identity_as_username: false,
                    caps: caps(0),
                    rate: limits.max_connection_rate,
                    websocket: None,
                };
                (*addr, Arc::new(plain))
            })
            .collect();
        let mut certs = Vec::new();
        for l in &cfg.listener {
            let Some(addr) = l.address else { continue };
            let tls = match (&l.certfile, &l.keyfile) {
                (Some(cert), Some(key)) => {
                    let served = Arc::new(read_server_cert(cert, key)?);
                    let ca = match &l.cafile {
                        Some(ca) => Some(read_file(ca)?),
                        None => None,
                    };
                    let config = crate::security::tls::server_config(
                        served.clone(),
                        ca.as_deref(),
                        l.require_certificate,
                        l.tls_version,
                    )
                    .map_err(|e| StartError::Security {
                        path: cert.clone(),
                        message: e.to_string(),
                    })?;
                    certs.push((cert.clone(), key.clone(), served));
                    Some(Arc::new(config))
                }
                _ => None,
            };
            let listening = Listening {
                tls,
                allow_anonymous: l.allow_anonymous.unwrap_or(cfg.allow_anonymous),
                identity_as_username: l.use_identity_as_username,
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
            let auth = auth.clone();
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
                        auth,
                        data_ends,
                        control_ends,
                        listeners,
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
            passwords,
            acl,
            certs,
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

/// Reads and parses a security file (a start or a reload): errors name the file.
fn read_parsed<T, E: std::fmt::Display>(
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StartError> {
    let security = |message: String| StartError::Security {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| security(e.to_string()))?;
    parse(&text).map_err(|e| security(e.to_string()))
}

/// Reads and parses a password file.
fn read_password_file(
    path: &std::path::Path,
) -> Result<crate::security::password::PasswordFile, StartError> {
    read_parsed(path, crate::security::password::PasswordFile::parse)
}

/// Reads a whole security file (a certificate, a key, a CA).
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|e| StartError::Security {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads a listener's certificate chain and key (a start or a reload).
fn read_server_cert(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<crate::security::tls::ServerCert, StartError> {
    crate::security::tls::ServerCert::from_pem(&read_file(cert)?, &read_file(key)?).map_err(|e| {
        StartError::Security {
            path: cert.to_owned(),
            message: e.to_string(),
        }
    })
}

/// Reads and parses an ACL file.
fn read_acl_file(path: &std::path::Path) -> Result<crate::security::acl::Acl, StartError> {
    read_parsed(path, crate::security::acl::Acl::parse)
}

/// The ACL file in force and where it is read from (for a reload).
type AclInForce = (
    std::path::PathBuf,
    Arc<crate::security::acl_auth::AclAuth<Arc<dyn Authenticator>>>,
);

/// The password file in force and where it is read from (for a reload).
type Passwords = (
    std::path::PathBuf,
    Arc<crate::security::password::PasswordAuth<Arc<dyn Authenticator>>>,
);

/// A running broker.
#[derive(Debug)]
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    stops: Vec<Sender<()>>,
    threads: Vec<std::thread::JoinHandle<ShardSummary>>,
    passwords: Option<Passwords>,
    acl: Option<AclInForce>,
    /// Each TLS listener's certificate and key files and what it serves (for a reload).
    certs: Vec<(
        std::path::PathBuf,
        std::path::PathBuf,
        Arc<crate::security::tls::ServerCert>,
    )>,
}

impl ServerHandle {
    /// The addresses the listeners are bound to (with the real port when 0 was asked).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Reads the security files again (what `SIGHUP` does to the binary). The password
    /// file's users apply to every CONNECT from now on; connections already admitted stay.
    /// The ACL file's rules apply to every client, connected ones included, from each
    /// shard's next check or delivery; subscriptions made before stay, but what they
    /// deliver is checked against the new rules. Both files are read and parsed before
    /// either is replaced: a file that cannot be read or does not parse leaves both in
    /// force (the error says why). Without security files, nothing to do.
    pub fn reload_security(&self) -> Result<(), StartError> {
        let passwords = match &self.passwords {
            Some((path, _)) => Some(read_password_file(path)?),
            None => None,
        };
        let acl = match &self.acl {
            Some((path, _)) => Some(read_acl_file(path)?),
            None => None,
        };
        // Everything is read and parsed before anything is replaced.
        let certs = self
            .certs
            .iter()
            .map(|(cert, key, _)| read_server_cert(cert, key))
            .collect::<Result<Vec<_>, _>>()?;
        if let (Some((path, auth)), Some(file)) = (&self.passwords, passwords) {
            tracing::info!(path = %path.display(), users = file.len(), "password file reloaded");
            auth.replace(file);
        }
        if let (Some((path, auth)), Some(file)) = (&self.acl, acl) {
            tracing::info!(path = %path.display(), rules = file.len(), "ACL file reloaded");
            auth.replace(file);
        }
        for ((path, _, served), new) in self.certs.iter().zip(certs) {
            served.replace(new);
            tracing::info!(path = %path.display(), "TLS certificate reloaded (new connections)");
        }
        Ok(())
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
