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

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::connection::CloseReason;
use crate::notify::WaitList;

use super::shard::Shard;
use super::ShardMsg;
use crate::observe::sys::SysTree;
use crate::observe::{Gauges, MeshStats, ShardStats};
use crate::protocol::{Properties, ProtocolVersion, QoS, TopicName};
use crate::session::Message;

/// Microseconds from `since` to now.
pub(crate) fn micros_since(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Whether `topic` is in the `$SYS` tree, which only the broker publishes to.
pub(crate) fn is_sys(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// A completed round: its number, when it completed, every shard's report.
type Completed = (u64, Instant, Rc<Vec<ShardStats>>);

/// Shard 0's gathering of every shard's report, for the `$SYS` tree and `/metrics`.
#[derive(Debug)]
pub(crate) struct Gather {
    /// The round under way (a generation: a report of an earlier round, from a shard that
    /// answered late, is ignored, so a round's sum never mixes two moments).
    round: Cell<u64>,
    /// Per shard, its report for `round` once it came (empty: no round under way).
    reports: RefCell<Vec<Option<ShardStats>>>,
    /// Whether the round under way ends with a `$SYS` update.
    publish_sys: Cell<bool>,
    /// When the round under way started: one older than [`ROUND_TIMEOUT`] is given up
    /// (a report was lost: a shard stopped, or a panic), never waited for forever.
    round_started: Cell<Instant>,
    /// The `$SYS` tree (None when `sys_interval` is 0).
    tree: Option<RefCell<SysTree>>,
    started: Instant,
    /// The last round that completed, for scrapes.
    last: RefCell<Option<Completed>>,
    /// Woken when a round completes.
    done: WaitList,
}

impl Gather {
    /// `sys`: the `$SYS` tree is kept too.
    pub(crate) fn new(sys: bool) -> Gather {
        Gather {
            round: Cell::new(0),
            reports: RefCell::new(Vec::new()),
            publish_sys: Cell::new(false),
            round_started: Cell::new(Instant::now()),
            tree: sys.then(|| RefCell::new(SysTree::new())),
            started: Instant::now(),
            last: RefCell::new(None),
            done: WaitList::default(),
        }
    }
}

/// How long a gathering round may wait for its reports before the next request starts
/// a new one.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// Index of `reason` in [`crate::observe::CLOSE_REASONS`]; None for a connection that
/// moved to its home shard (not an end: counted where it ends).
fn close_index(reason: CloseReason) -> Option<usize> {
    Some(match reason {
        CloseReason::ClientDisconnect { .. } => 0,
        CloseReason::SocketClosed => 1,
        CloseReason::KeepAliveTimeout => 2,
        CloseReason::ConnectTimeout => 3,
        CloseReason::TakenOver => 4,
        CloseReason::ProtocolError => 5,
        CloseReason::Refused => 6,
        CloseReason::ServerShutdown => 7,
        CloseReason::Migrated => return None,
    })
}

/// Clients connected on this shard by listener (`listeners` of them at least: every
/// listener has its series, zeros included) and protocol version: open connections that
/// serve a session (a taken-over one that has not closed yet does not).
fn connected(st: &super::shard::State, listeners: usize) -> Vec<[u64; 3]> {
    let mut by = vec![[0u64; 3]; listeners];
    for (_, (_, c)) in st.conns.iter() {
        let serves = c
            .session
            .get()
            .and_then(|id| st.links.get(id))
            .is_some_and(|l| std::rc::Rc::ptr_eq(l, c));
        if !serves || !c.open.get() {
            continue;
        }
        let l = usize::from(c.listener.get());
        if by.len() <= l {
            by.resize(l + 1, [0u64; 3]);
        }
        let v = crate::observe::version_index(c.version.get());
        if let Some(n) = by.get_mut(l).and_then(|l: &mut [u64; 3]| l.get_mut(v)) {
            *n += 1;
        }
    }
    by
}

impl Shard {
    /// `n` bytes were read from a client.
    #[inline]
    pub(crate) fn count_read(&self, n: usize) {
        let mut t = self.traffic.borrow_mut();
        t.bytes_in += n as u64;
        t.read_calls += 1;
    }

    /// A connection ended.
    pub(crate) fn count_close(&self, reason: CloseReason) {
        let Some(i) = close_index(reason) else {
            return;
        };
        if let Some(n) = self.closes.borrow_mut().by_reason.get_mut(i) {
            *n += 1;
        }
    }

    /// A CONNECT of protocol `version` came on listener `listener`.
    pub(crate) fn count_connect(&self, listener: usize, version: ProtocolVersion) {
        let mut c = self.connects.borrow_mut();
        if c.len() <= listener {
            c.resize(listener + 1, [0; 3]);
        }
        let v = crate::observe::version_index(version);
        if let Some(n) = c.get_mut(listener).and_then(|l| l.get_mut(v)) {
            *n += 1;
        }
    }

    /// Writes a CONNACK refusing the connection with `code` (see
    /// [`super::negotiated::write_refusal`]) and counts it.
    pub(crate) fn refusal(
        &self,
        out: &mut bytes::BytesMut,
        version: ProtocolVersion,
        code: crate::protocol::ReasonCode,
        client_max: u32,
    ) {
        self.closes.borrow_mut().refused(code.0);
        super::negotiated::write_refusal(out, version, code, client_max);
    }

    /// A packet of `len` bytes came from a client (decoded whole).
    #[inline]
    pub(crate) fn count_received(&self, packet: &crate::protocol::Packet, len: usize) {
        let payload = match packet {
            crate::protocol::Packet::Publish(p) => p.payload.len(),
            _ => 0,
        };
        self.traffic
            .borrow_mut()
            .received(packet.packet_type() as u8, len, payload);
    }

    /// `bytes`, whole packets, go to a client (of protocol 5.0 when `v5`). Counted when
    /// handed to the socket: a connection that fails mid-write has them counted.
    pub(crate) fn count_sent(&self, bytes: &[u8], v5: bool) {
        let mut t = self.traffic.borrow_mut();
        t.bytes_out += bytes.len() as u64;
        t.sent(bytes, v5);
    }

    /// This shard's report: its counters, and what it holds now (a walk over its
    /// sessions and retained messages: once per `sys_interval` and per scrape, at most
    /// one scrape's a second; never per message).
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
                overflowed: self.mesh.overflowed() + self.control.overflowed(),
                congestion_episodes: self.congestion_episodes.get(),
                holdback_micros: self
                    .holdback_micros
                    .get()
                    .saturating_add(self.holdback_since.get().map_or(0, micros_since)),
            },
            closes: *self.closes.borrow(),
            connects: self.connects.borrow().clone(),
            connected: connected(&st, self.cfg.listener_count()),
        }
    }

    /// Shard 0, every `sys_interval` seconds: a round that ends with a `$SYS` update.
    pub(crate) fn sys_tick(&self) {
        self.gather_start(true);
    }

    /// Shard 0: the round whose reports a caller may use, started now unless one is
    /// under way that does what is asked (`sys`: it ends with a `$SYS` update) and is
    /// younger than [`ROUND_TIMEOUT`]. A round that never completes (a report lost: a
    /// shard stopped) is replaced by the next request's; whoever waited for it gets that
    /// one.
    fn gather_start(&self, sys: bool) -> Option<u64> {
        let g = self.gather.as_ref()?;
        let under_way = {
            let r = g.reports.borrow();
            !r.is_empty()
                && r.iter().any(Option::is_none)
                && g.round_started.get().elapsed() < ROUND_TIMEOUT
        };
        if under_way && (!sys || g.publish_sys.get()) {
            return Some(g.round.get());
        }
        let round = g.round.get() + 1;
        g.round.set(round);
        g.round_started.set(Instant::now());
        g.publish_sys.set(sys);
        *g.reports.borrow_mut() = vec![None; self.shards];
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
        Some(round)
    }

    /// Shard 0: every shard's report, from a round completed less than `fresh` ago or
    /// else from one started now (so requests in a tight loop cost the shards one walk
    /// per `fresh`, not one each); None without gathering, or when the round did not
    /// complete within `limit` (a shard is not running).
    pub(crate) async fn gathered(
        &self,
        fresh: Duration,
        limit: Duration,
    ) -> Option<Rc<Vec<ShardStats>>> {
        let g = self.gather.as_ref()?;
        if let Some((_, at, reports)) = &*g.last.borrow() {
            if at.elapsed() < fresh {
                return Some(reports.clone());
            }
        }
        let want = self.gather_start(false)?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some((round, _, reports)) = &*g.last.borrow() {
                if *round >= want {
                    return Some(reports.clone());
                }
            }
            if !super::serve::woken_before(g.done.wait(), deadline).await {
                return None;
            }
        }
    }

    /// Shard `from` gathers reports: this shard's goes back to it.
    pub(crate) fn on_stats_request(&self, from: usize, round: u64) {
        let stats = Box::new(self.stats());
        self.send_control(from, ShardMsg::StatsReport { round, stats });
    }

    /// A shard's report for `round`: once every shard's is in, the round is complete:
    /// waiting scrapes get it and, for a `$SYS` round, what changed in the tree is
    /// published.
    pub(crate) fn on_stats_report(&self, round: u64, stats: Box<ShardStats>) {
        let Some(g) = &self.gather else {
            return;
        };
        if g.round.get() != round {
            return;
        }
        let reports = {
            let mut r = g.reports.borrow_mut();
            if r.is_empty() {
                // This round is complete already.
                return;
            }
            let shard = stats.shard;
            if let Some(slot) = r.get_mut(shard) {
                *slot = Some(*stats);
            }
            if r.iter().any(Option::is_none) {
                return;
            }
            Rc::new(r.drain(..).flatten().collect::<Vec<ShardStats>>())
        };
        *g.last.borrow_mut() = Some((round, Instant::now(), reports.clone()));
        g.done.wake_all();
        let Some(tree) = g.tree.as_ref().filter(|_| g.publish_sys.get()) else {
            return;
        };
        let now = g.started.elapsed().as_secs_f64();
        let every = !self.cfg.retain_available;
        let updates = tree
            .borrow_mut()
            .update(now, env!("CARGO_PKG_VERSION"), &reports, every);
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
