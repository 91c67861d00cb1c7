//! A shard's runtime: its main loop (mesh receivers, accept loops, the keep-alive and
//! expiry sweeps) from start to shutdown.
//!
//! **Owns:** the tasks of one shard and their order of start and stop.
//!
//! **Must not touch:** connection or session state except through [`Shard`]'s operations.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::shard::{Shard, ShardSummary};
use super::{connect, net, ShardMsg};
use crate::config::{AcceptMode, Config};
use crate::mesh;
use crate::server::StartError;

/// How long shutdown waits for connections to close before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Data-plane receivers pause while a local subscriber is behind; control-plane ones never
/// do (see [`crate::mesh`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plane {
    Data,
    Control,
}

/// What a shard restores at start when persistence is on: its part of the recovered
/// state and log, and every shard's restored filters.
pub(crate) type PersistStart = (
    super::recovery::ShardStart,
    Arc<Vec<(bytestring::ByteString, usize)>>,
    Arc<[std::sync::atomic::AtomicBool]>,
);

#[allow(clippy::too_many_arguments)]
pub(crate) async fn shard_main(
    id: usize,
    cfg: Arc<Config>,
    domains: Arc<super::hooks::Domains>,
    data_ends: mesh::MeshEnds<ShardMsg>,
    control_ends: mesh::MeshEnds<ShardMsg>,
    listeners: Vec<(std::net::TcpListener, Arc<super::transport::Listening>)>,
    metrics: Option<std::net::TcpListener>,
    persist: Option<PersistStart>,
    ready: Sender<Result<(), StartError>>,
    stop: Receiver<()>,
) -> ShardSummary {
    // One overflow batch per destination beyond the channel is allowed before publishers
    // are paused: with a full channel, a shard's senders are the ones to slow down.
    let ((mesh, data_rx), (control, control_rx)) = futures::future::join(
        data_ends.connect(
            cfg.mesh.batch_size,
            4 * (cfg.mesh.channel_capacity / 16).max(1),
        ),
        control_ends.connect(cfg.mesh.batch_size, usize::MAX),
    )
    .await;
    let mut shard = Shard::new(id, cfg.clone(), mesh, control, domains);
    let mut journal = None;
    let mut due_wills = Vec::new();
    if let Some((start, interest, pressure)) = persist {
        match super::journal::Journal::open_at(&start.path, start.tail).await {
            Ok(j) => journal = Some(j),
            Err(e) => {
                let _ = ready.send(Err(StartError::Persistence {
                    message: format!("shard {id}: cannot open {}: {e}", start.path.display()),
                }));
                return ShardSummary::default();
            }
        }
        shard.persist = Some(Box::new(super::durable::Durable::new(
            &cfg.persistence,
            id,
            shard.shards,
            pressure,
            start.image.last_message_id,
            (start.epoch, start.seq),
            start.tail,
        )));
        due_wills = shard.restore(start.image, &interest);
        shard.state.get_mut().sessions.record_changes();
    }
    let shard = Rc::new(shard);
    // Wills whose delay passed (or whose session ended) while the broker was down.
    for w in due_wills {
        shard.publish_will(w);
    }
    shard.flush_mesh();
    let committer =
        journal.map(|j| glommio::spawn_local(super::durable::commit_loop(shard.clone(), j)));
    let receivers = data_rx
        .into_iter()
        .map(|r| (Plane::Data, r))
        .chain(control_rx.into_iter().map(|r| (Plane::Control, r)));
    for (plane, (_from, rx)) in receivers {
        let s = shard.clone();
        glommio::spawn_local(async move {
            let mut since_yield = 0usize;
            loop {
                // Flow control: while a local subscriber is behind, leave data batches in
                // the channel; the sending shard then holds back its own publishers.
                while plane == Plane::Data && s.output_congested() {
                    s.output_drained.wait().await;
                }
                let Some(batch) = rx.recv().await else {
                    break;
                };
                since_yield += batch.len();
                for m in batch {
                    crate::broker::guarded("mesh message", || s.on_mesh(m));
                }
                s.flush_mesh();
                if since_yield >= 1024 {
                    since_yield = 0;
                    glommio::yield_if_needed().await;
                }
            }
        })
        .detach();
    }
    let mut accept_tasks = Vec::new();
    for (l, listening) in listeners {
        let listener = net::listener(l);
        let s = shard.clone();
        let round_robin = cfg.accept_mode == AcceptMode::RoundRobin;
        // This loop's share of the listener's pace: all of it when it alone accepts.
        let share = if round_robin {
            listening.rate
        } else {
            listening
                .rate
                .div_ceil(u32::try_from(s.shards).unwrap_or(1).max(1))
        };
        let mut pace = super::admission::Pace::new(share);
        accept_tasks.push(glommio::spawn_local(async move {
            let mut next = 0usize;
            loop {
                // Over the pace: not accepting for a moment; new connections wait in the
                // kernel's accept queue.
                if let Some(p) = pace.as_mut() {
                    let wait = p.next_wait(std::time::Instant::now());
                    if !wait.is_zero() {
                        glommio::timer::sleep(wait).await;
                    }
                }
                if round_robin {
                    match listener.shared_accept().await {
                        Ok(a) => {
                            // In turn over the shards; after CONNECT each connection still
                            // moves to its session's home shard.
                            let target = next % s.shards;
                            next += 1;
                            if target == s.id {
                                let stream = a.bind_to_executor();
                                crate::broker::guarded("accept", || {
                                    connect::spawn_accepted(s.clone(), stream, listening.clone())
                                });
                            } else {
                                s.send_control(
                                    target,
                                    ShardMsg::Accepted(crate::broker::AcceptedConn(
                                        a,
                                        listening.clone(),
                                    )),
                                );
                                s.control.flush();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                } else {
                    match listener.accept().await {
                        Ok(stream) => crate::broker::guarded("accept", || {
                            connect::spawn_accepted(s.clone(), stream, listening.clone())
                        }),
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
        }));
    }
    // Streams of retained messages whose walk of this shard's store goes on: one step
    // each, then the shard's other tasks get their turn.
    {
        let s = shard.clone();
        glommio::spawn_local(async move {
            while !s.stopping.get() {
                if s.state.borrow().retained_later.is_empty() {
                    s.retained_work.wait().await;
                    continue;
                }
                crate::broker::guarded("retained walk", || s.continue_retained());
                s.flush_mesh();
                // One step per stream, then every other task of the shard gets its turn,
                // sockets included: a timer goes through the reactor, which a plain yield
                // would not (glommio polls it only between task-queue runs).
                glommio::timer::sleep(Duration::from_micros(10)).await;
            }
        })
        .detach();
    }
    // Keep-alive sweep: one pass over the shard's connections a second.
    {
        let s = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(500)).await;
                if s.stopping.get() {
                    break;
                }
                let now = Instant::now();
                crate::broker::guarded("keep-alive sweep", || s.sweep(now));
                crate::broker::guarded("session expiry", || s.expire_sessions(now));
            }
        })
        .detach();
    }
    // `$SYS`: shard 0 gathers every shard's report each `sys_interval` (the first at
    // once, as mosquitto publishes its tree at start).
    if shard.gather.is_some() && cfg.sys_interval > 0 {
        let s = shard.clone();
        let every = Duration::from_secs(u64::from(cfg.sys_interval));
        glommio::spawn_local(async move {
            while !s.stopping.get() {
                crate::broker::guarded("$SYS update", || s.sys_tick());
                glommio::timer::sleep(every).await;
            }
        })
        .detach();
    }
    // The Prometheus endpoint (shard 0, with `[metrics] listen`).
    if let Some(l) = metrics {
        glommio::spawn_local(super::metrics_http::serve_metrics(
            shard.clone(),
            net::listener(l),
        ))
        .detach();
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    // The stop signal comes from a non-glommio thread: poll it (never block a shard).
    while let Err(TryRecvError::Empty) = stop.try_recv() {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    shard.stopping.set(true);
    drop(accept_tasks);
    shard.close_all();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shard.connection_count() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    // Best effort, like the connections' own wills at shutdown.
    crate::broker::guarded("wills at shutdown", || shard.publish_all_wills());
    // The log's last commit: everything appended, including those wills.
    if let Some(c) = committer {
        if let Some(d) = shard.durable() {
            d.finish.set(true);
            d.work.notify();
        }
        c.await;
    }
    let summary = shard.summary();
    tracing::info!(shard = id, summary = ?summary, "shard stopped");
    summary
}
