//! The shard's side of observability: what its data path counts ([`Traffic`], plain
//! integers in one `RefCell` of its own: no atomics, no locks, nothing shared), its report
//! ([`ShardStats`]), and on shard 0 the `$SYS` tree: every `sys_interval` seconds it asks
//! every shard for its report over the control plane and, once all have answered,
//! publishes what changed, retained, like any message (so ACLs, retained storage and
//! every protocol version apply as usual).
//!
//! **Owns:** this shard's report; on shard 0 the gathering round and the tree.
//!
//! **Must not touch:** other shards' state (reports travel as messages), the disk (`$SYS`
//! retained messages are not persisted: they describe this run).

use std::time::Instant;

use bytes::Bytes;

use super::shard::Shard;
use super::ShardMsg;
use crate::observe::sys::SysTree;
use crate::observe::{Gauges, MeshStats, ShardStats};
use crate::protocol::{Properties, QoS, TopicName};
use crate::session::Message;

/// Whether `topic` is in the `$SYS` tree, which only the broker publishes to.
pub(crate) fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Shard 0's `$SYS` state.
#[derive(Debug)]
pub(crate) struct SysState {
    tree: SysTree,
    started: Instant,
    /// The gathering round under way: a report of an earlier round (a shard that answered
    /// late) is ignored, so a round's sum never mixes two moments.
    round: u64,
    /// Per shard, its report for `round` once it came.
    reports: Vec<Option<ShardStats>>,
}

impl SysState {
    pub(crate) fn new() -> SysState {
        SysState {
            tree: SysTree::new(),
            started: Instant::now(),
            round: 0,
            reports: Vec::new(),
        }
    }
}

impl Shard {
    /// `n` bytes were read from a client.
    #[inline]
    pub(crate) fn count_read(&self, n: usize) {
        self.traffic.borrow_mut().bytes_in += n as u64;
    }

    /// A packet came from a client (decoded whole).
    #[inline]
    pub(crate) fn count_received(&self, packet: &crate::protocol::Packet) {
        let payload = match packet {
            crate::protocol::Packet::Publish(p) => p.payload.len(),
            _ => 0,
        };
        self.traffic
            .borrow_mut()
            .received(packet.packet_type() as u8, payload);
    }

    /// `bytes`, whole packets, go to a client (of protocol 5.0 when `v5`). Counted when
    /// handed to the socket: a connection that fails mid-write has them counted.
    pub(crate) fn count_sent(&self, bytes: &[u8], v5: bool) {
        let mut t = self.traffic.borrow_mut();
        t.bytes_out += bytes.len() as u64;
        t.sent(bytes, v5);
    }

    /// This shard's report: its counters, and what it holds now (a walk over its
    /// sessions and retained messages: once per `sys_interval`, never per message).
    pub(crate) fn stats(&self) -> ShardStats {
        let st = self.state.borrow();
        let mut g = Gauges {
            connections: st.conns.len() as u64,
            ..Gauges::default()
        };
        for (_, s) in st.sessions.iter() {
            g.sessions += 1;
            g.sessions_online += u64::from(s.is_connected());
            for (filter, _) in s.subscriptions() {
                g.subscriptions += 1;
                g.shared_subscriptions += u64::from(filter.shared().is_some());
            }
            g.inflight += s.inflight_len() as u64;
            g.queued += s.queued_len() as u64;
            g.held_bytes += s.held_bytes() as u64;
        }
        // A walk of the retained store (at most `retained_max_messages` over the shards,
        // plus `$SYS`'s own), once per interval.
        st.retained.for_each(|m| {
            g.retained += 1;
            g.retained_bytes += m.cost() as u64;
        });
        let (data_batches, data_items) = self.mesh.sent();
        let (control_batches, control_items) = self.control.sent();
        ShardStats {
            shard: self.id,
            counters: self.summary(),
            traffic: *self.traffic.borrow(),
            gauges: g,
            mesh: MeshStats {
                batches: data_batches + control_batches,
                items: data_items + control_items,
                congestion_episodes: self.congestion_episodes.get(),
            },
        }
    }

    /// Shard 0, every `sys_interval` seconds: a new gathering round. A round whose
    /// reports did not all come (a shard that stopped) is dropped.
    pub(crate) fn sys_tick(&self) {
        let Some(sys) = &self.sys else {
            return;
        };
        let round = {
            let mut s = sys.borrow_mut();
            s.round += 1;
            s.reports = vec![None; self.shards];
            s.round
        };
        for dest in (0..self.shards).filter(|d| *d != self.id) {
            self.send_control(
                dest,
                ShardMsg::StatsRequest {
                    from: self.id,
                    round,
                },
            );
        }
        self.control.flush();
        self.on_stats_report(round, Box::new(self.stats()));
    }

    /// Shard `from` gathers reports: this shard's goes back to it.
    pub(crate) fn on_stats_request(&self, from: usize, round: u64) {
        let stats = Box::new(self.stats());
        self.send_control(from, ShardMsg::StatsReport { round, stats });
    }

    /// A shard's report for `round`: once every shard's is in, what changed in the `$SYS`
    /// tree is published.
    pub(crate) fn on_stats_report(&self, round: u64, stats: Box<ShardStats>) {
        let Some(sys) = &self.sys else {
            return;
        };
        let updates = {
            let mut s = sys.borrow_mut();
            if s.round != round {
                return;
            }
            let shard = stats.shard;
            if let Some(slot) = s.reports.get_mut(shard) {
                *slot = Some(*stats);
            }
            if s.reports.iter().any(Option::is_none) {
                return;
            }
            let reports: Vec<ShardStats> = s.reports.iter_mut().filter_map(Option::take).collect();
            let now = s.started.elapsed().as_secs_f64();
            let every = !self.cfg.retain_available;
            s.tree
                .update(now, env!("CARGO_PKG_VERSION"), &reports, every)
        };
        for (topic, value) in updates {
            let Ok(topic) = TopicName::new(topic) else {
                continue;
            };
            // QoS 0: a value that is replaced every interval is not worth a flow, nor
            // a queue entry for an offline session (mosquitto uses QoS 2).
            self.route(Message {
                topic,
                payload: Bytes::from(value.into_bytes()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::new(),
                expires: None,
            });
        }
        self.flush_mesh();
    }
}
