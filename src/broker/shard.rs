//! One shard's state and the operations on it: sessions, routing, subscriptions,
//! retained messages, and the shard's side of the cross-shard protocol.
//!
//! Every operation here is synchronous: it borrows the state, changes it, appends bytes to
//! write buffers, queues mesh messages, and returns. No borrow is ever held across an
//! `.await`, because nothing here awaits; connection tasks and mesh receivers call in and
//! do their I/O afterwards.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::store::SessionStore;
use super::{home_shard, ShardMsg};
use crate::config::Config;
use crate::index::{InterestTrie, SubscriptionTrie};
use crate::mesh::MeshTx;
use crate::notify::{Notify, WaitList};
use crate::protocol::{
    Packet, PacketId, Properties, ProtocolVersion, QoS, ReasonCode, SubAck, SubscriptionOptions,
    TopicFilter, Will,
};
use crate::server::Authenticator;
use crate::session::{DeliverOutcome, DropReason, Message, Session, SessionLimits};

/// Why a connection ends; decides whether its will is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent DISCONNECT (5.0: with or without "publish my will").
    ClientDisconnect { publish_will: bool },
    /// The peer closed the socket or it failed.
    SocketClosed,
    /// Nothing received for 1.5 times the keep alive [MQTT-3.1.2-24].
    KeepAliveTimeout,
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// A newer connection with the same client id [MQTT-3.1.4-2].
    TakenOver,
    /// Malformed or forbidden input.
    ProtocolError,
    /// CONNECT refused.
    Refused,
    /// The connection moved to its home shard (not an end for the client).
    Migrated,
    /// The broker is stopping.
    ServerShutdown,
}

impl CloseReason {
    /// A will is published when the connection ends without a DISCONNECT
    /// [MQTT-3.1.2-8], and when a 5.0 DISCONNECT asks for it.
    fn publishes_will(self) -> bool {
        match self {
            CloseReason::ClientDisconnect { publish_will } => publish_will,
            CloseReason::Migrated | CloseReason::Refused => false,
            _ => true,
        }
    }
}

/// What a shard knows about one of its connections; shared between the connection's task
/// (which owns the socket) and the code that delivers to it.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Encoded packets waiting to be written. Bounded by `max_write_buffer` for QoS 0;
    /// QoS 1/2 are bounded by the session's in-flight window.
    pub out: RefCell<BytesMut>,
    /// Set when `out` has data or the connection must close.
    pub wake: Notify,
    /// Set to close the connection; the task exits at its next wake-up.
    pub close: Cell<Option<CloseReason>>,
    /// Last time a packet arrived (coarse; for keep alive).
    pub last_read: Cell<Instant>,
    /// Keep alive in seconds (before CONNECT: the connect timeout); 0: none.
    pub keep_alive: Cell<u16>,
    /// Session slot once CONNECT was accepted.
    pub session: Cell<Option<usize>>,
    /// The will, published if the connection ends without DISCONNECT.
    /// Boxed: most clients have none, and this struct exists per connection.
    pub will: RefCell<Option<Box<Will>>>,
    /// Protocol version from CONNECT.
    pub version: Cell<ProtocolVersion>,
    /// The socket, for shutting it down on takeover while the task still owns it.
    pub fd: RawFd,
    /// False once the task has let go of the socket (so `fd` may name another file).
    pub open: Cell<bool>,
    /// Responses held back so that acks keep their order [MQTT-4.6.0-2] while the ack of a
    /// retained PUBLISH waits for the topic's owner shard to store it: `(Some(token), bytes)`
    /// waits for that token, `(None, bytes)` is ready but queued behind it.
    pub deferred: RefCell<std::collections::VecDeque<(Option<u64>, BytesMut)>>,
    /// Bytes taken from `out` and not yet written to the socket.
    pub writing: Cell<usize>,
    /// Messages waiting in the session queue behind the in-flight window (mirrored here
    /// for flow control).
    pub queued: Cell<usize>,
    /// Output above the soft watermark: the shard holds back its publishers until this
    /// connection drains (see `Shard::note_output`).
    pub congested: Cell<bool>,
    /// When `congested` was set.
    pub congested_since: Cell<Instant>,
    /// Did not drain for a whole second while publishers were held back: no longer holds
    /// them back; QoS 0 beyond `max_write_buffer` is dropped for it.
    pub slow: Cell<bool>,
    /// Packets of a connection that is behind (congested or slow), read while the shard
    /// holds publishers back so that its acks can drain its own window, but held, in
    /// order and unacknowledged, because they are PUBLISHes or must stay behind one. At
    /// most `max_write_buffer` bytes of payload and topic; beyond that the connection is
    /// not read until the shard drains. Boxed and absent while empty: almost every
    /// connection never holds anything, and this struct exists per connection.
    held: RefCell<Option<Box<Held>>>,
}

/// What a connection holds back (see `ConnShared::held`).
#[derive(Debug, Default)]
struct Held {
    packets: std::collections::VecDeque<Packet>,
    /// Payload and topic bytes of `packets`.
    bytes: usize,
}

impl ConnShared {
    /// Whether packets are held.
    pub fn holding(&self) -> bool {
        self.held.borrow().is_some()
    }

    /// Payload and topic bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held.borrow().as_ref().map_or(0, |h| h.bytes)
    }

    /// Holds a packet (last in order) that costs `cost` bytes.
    pub fn hold(&self, p: Packet, cost: usize) {
        let mut h = self.held.borrow_mut();
        let h = h.get_or_insert_with(Box::default);
        h.bytes += cost;
        h.packets.push_back(p);
    }

    /// The oldest held packet and its cost, to be handled now.
    pub fn unhold(&self, cost: impl Fn(&Packet) -> usize) -> Option<Packet> {
        let mut slot = self.held.borrow_mut();
        let h = slot.as_mut()?;
        let p = h.packets.pop_front();
        if let Some(p) = &p {
            h.bytes = h.bytes.saturating_sub(cost(p));
        }
        if h.packets.is_empty() {
            *slot = None;
        }
        p
    }

    /// Forgets what is held (the connection is gone).
    pub fn clear_held(&self) {
        *self.held.borrow_mut() = None;
    }
}

impl ConnShared {
    /// Bytes waiting to reach the socket.
    pub fn pending_output(&self) -> usize {
        self.out.borrow().len() + self.writing.get()
    }
}

impl ConnShared {
    /// Asks the connection to close (first reason wins).
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
        }
        self.wake.notify();
    }
}

/// One shard's counters (kept in a `Cell` on the shard; returned when it stops and
/// summed over shards).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardSummary {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused by `max_connections`.
    pub connections_refused_limit: u64,
    /// Connections moved to their home shard.
    pub connections_migrated: u64,
    /// Connections closed for malformed packets.
    pub malformed_packets: u64,
    /// Connections closed for other protocol violations.
    pub protocol_errors: u64,
    /// Connections closed by keep alive.
    pub keepalive_timeouts: u64,
    /// Sessions taken over by a new connection.
    pub takeovers: u64,
    /// PUBLISH packets received from clients.
    pub publishes_received: u64,
    /// Messages written or queued for subscribers.
    pub messages_delivered: u64,
    /// QoS 0 deliveries dropped because a write buffer was full.
    pub dropped_qos0_write_buffer: u64,
    /// QoS 1/2 deliveries dropped because a session queue was full.
    pub dropped_queue_full: u64,
    /// QoS 0 deliveries dropped for offline sessions.
    pub dropped_offline_qos0: u64,
    /// Retained messages not stored (limits).
    pub retained_dropped: u64,
}

impl ShardSummary {
    /// Adds another shard's counters.
    pub fn add(&mut self, o: &ShardSummary) {
        self.connections_accepted += o.connections_accepted;
        self.connections_refused_limit += o.connections_refused_limit;
        self.connections_migrated += o.connections_migrated;
        self.malformed_packets += o.malformed_packets;
        self.protocol_errors += o.protocol_errors;
        self.keepalive_timeouts += o.keepalive_timeouts;
        self.takeovers += o.takeovers;
        self.publishes_received += o.publishes_received;
        self.messages_delivered += o.messages_delivered;
        self.dropped_qos0_write_buffer += o.dropped_qos0_write_buffer;
        self.dropped_queue_full += o.dropped_queue_full;
        self.dropped_offline_qos0 += o.dropped_offline_qos0;
        self.retained_dropped += o.retained_dropped;
    }
}

/// A session and the connection currently serving it, if any.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Boxed so that the slab holding entries (which grows by doubling) wastes 16 bytes
    /// per spare slot rather than a whole session.
    pub session: Box<Session>,
    pub conn: Option<Rc<ConnShared>>,
}

/// A SUBSCRIBE waiting for every other shard to route its filters.
#[derive(Debug)]
struct PendingSub {
    conn: Rc<ConnShared>,
    session: usize,
    packet_id: PacketId,
    codes: Vec<ReasonCode>,
    filters: Vec<(TopicFilter, SubscriptionOptions)>,
    waiting: usize,
    retained: Vec<Message>,
}

/// Everything mutable a shard owns.
#[derive(Debug)]
pub(crate) struct State {
    pub sessions: SessionStore,
    subs: SubscriptionTrie<usize, SubscriptionOptions>,
    /// Local subscriptions per filter; the shard's interest bit is set while above 0.
    local_filters: AHashMap<TopicFilter, u32>,
    interest: InterestTrie,
    retained: AHashMap<ByteString, Message>,
    pending: AHashMap<u64, PendingSub>,
    /// Connections waiting for a retained message to be stored before acking it.
    retain_acks: AHashMap<u64, std::rc::Weak<ConnShared>>,
    next_token: u64,
    pub conns: slab::Slab<Rc<ConnShared>>,
    /// Scratch for collecting matches (reused to avoid an allocation per message).
    matches: Vec<(usize, QoS, bool)>,
}

/// One shard.
pub(crate) struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<Config>,
    pub mesh: Rc<MeshTx<ShardMsg>>,
    pub state: RefCell<State>,
    metrics: Cell<ShardSummary>,
    pub auth: Arc<dyn Authenticator>,
    pub stopping: Cell<bool>,
    /// Connections above the output soft watermark (not counting slow ones). While above 0
    /// the shard stops reading from publishers and from other shards.
    output_congested: Cell<usize>,
    /// Woken when `output_congested` drops to 0.
    pub output_drained: WaitList,
    /// When a queue-full drop was last logged (drops are logged at most once a second).
    drop_logged: Cell<Instant>,
    /// This shard's share of `max_connections`.
    pub max_connections: usize,
    /// This shard's share of `retained_max_messages`.
    max_retained: usize,
    limits: SessionLimits,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).finish()
    }
}

impl Shard {
    pub fn new(
        id: usize,
        cfg: Arc<Config>,
        mesh: Rc<MeshTx<ShardMsg>>,
        auth: Arc<dyn Authenticator>,
    ) -> Shard {
        let shards = mesh.shards();
        let l = &cfg.limits;
        Shard {
            id,
            shards,
            max_connections: l.max_connections.div_ceil(shards),
            max_retained: l.retained_max_messages.div_ceil(shards),
            limits: SessionLimits {
                max_inflight: l.max_inflight,
                max_inflight_incoming: u16::MAX,
                max_queued_messages: l.max_queued_messages,
                max_queued_bytes: l.max_queued_bytes,
            },
            cfg,
            mesh,
            state: RefCell::new(State {
                sessions: SessionStore::default(),
                subs: SubscriptionTrie::new(),
                local_filters: AHashMap::new(),
                interest: InterestTrie::new(),
                retained: AHashMap::new(),
                pending: AHashMap::new(),
                retain_acks: AHashMap::new(),
                next_token: 0,
                conns: slab::Slab::new(),
                matches: Vec::new(),
            }),
            metrics: Cell::new(ShardSummary::default()),
            auth,
            stopping: Cell::new(false),
            output_congested: Cell::new(0),
            output_drained: WaitList::default(),
            drop_logged: Cell::new(
                Instant::now()
                    .checked_sub(Duration::from_secs(2))
                    .unwrap_or_else(Instant::now),
            ),
        }
    }

    pub fn summary(&self) -> ShardSummary {
        self.metrics.get()
    }

    /// Bumps a counter (the shard's counters are its `ShardSummary`, kept in a `Cell`).
    #[inline]
    pub fn count(&self, f: impl FnOnce(&mut ShardSummary)) {
        let mut m = self.metrics.get();
        f(&mut m);
        self.metrics.set(m);
    }

    /// Registers a new connection; None when the shard is at its connection limit.
    pub fn register_conn(
        &self,
        fd: RawFd,
        connect_timeout: u16,
    ) -> Option<(usize, Rc<ConnShared>)> {
        let mut st = self.state.borrow_mut();
        if st.conns.len() >= self.max_connections || self.stopping.get() {
            self.count(|m| m.connections_refused_limit += 1);
            return None;
        }
        let conn = Rc::new(ConnShared {
            out: RefCell::new(BytesMut::new()),
            wake: Notify::default(),
            close: Cell::new(None),
            last_read: Cell::new(Instant::now()),
            keep_alive: Cell::new(connect_timeout),
            session: Cell::new(None),
            will: RefCell::new(None),
            version: Cell::new(ProtocolVersion::V3_1_1),
            fd,
            open: Cell::new(true),
            deferred: RefCell::new(std::collections::VecDeque::new()),
            writing: Cell::new(0),
            queued: Cell::new(0),
            congested: Cell::new(false),
            held: RefCell::new(None),
            congested_since: Cell::new(Instant::now()),
            slow: Cell::new(false),
        });
        let key = st.conns.insert(conn.clone());
        Some((key, conn))
    }

    /// Attaches a connection that sent an accepted CONNECT to its session (taking over an
    /// older connection of the same client id), writes CONNACK and, for a resumed session,
    /// the resent in-flight messages. Returns the session slot and session-present.
    pub fn attach(
        &self,
        conn: &Rc<ConnShared>,
        client_id: ByteString,
        version: ProtocolVersion,
        clean_start: bool,
    ) -> (usize, bool) {
        let mut removed: Vec<TopicFilter> = Vec::new();
        let (slot, present) = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let existing = st.sessions.find(&client_id);
            let mut reuse = None;
            if let Some(slot) = existing {
                if let Some(entry) = st.sessions.get_mut(slot) {
                    if let Some(old) = entry.conn.take() {
                        // [MQTT-3.1.4-2]: the existing connection is closed first. The old
                        // task still owns its socket; shutting it down now makes the close
                        // visible to that client before the new one gets CONNACK.
                        self.count(|m| m.takeovers += 1);
                        old.request_close(CloseReason::TakenOver);
                        if old.open.get() {
                            super::net::shutdown(old.fd);
                        }
                    }
                    if clean_start || !entry.session.is_persistent() {
                        removed.extend(entry.session.subscriptions().map(|(f, _)| f.clone()));
                    } else {
                        reuse = Some(slot);
                    }
                }
                if reuse.is_none() {
                    st.sessions.remove(slot);
                    for f in &removed {
                        Self::unsubscribe_one(self, st, f, slot);
                    }
                }
            }
            match reuse {
                Some(slot) => {
                    st.sessions.mark_online(slot);
                    (slot, true)
                }
                None => {
                    let session = Box::new(Session::new(
                        client_id.clone(),
                        version,
                        !clean_start,
                        self.limits,
                    ));
                    let slot = st.sessions.insert(Entry {
                        session,
                        conn: None,
                    });
                    (slot, false)
                }
            }
        };
        conn.session.set(Some(slot));
        conn.version.set(version);
        // CONNACK goes first, then whatever the resumed session must resend.
        {
            let mut out = conn.out.borrow_mut();
            write_connack(&mut out, version, present, ReasonCode::SUCCESS);
        }
        let mut st = self.state.borrow_mut();
        if let Some(entry) = st.sessions.get_mut(slot) {
            entry.conn = Some(conn.clone());
            if present {
                entry.session.resume(version, &mut conn.out.borrow_mut());
            }
        }
        drop(st);
        conn.wake.notify();
        (slot, present)
    }

    /// The connection task is ending. Publishes the will if the reason calls for it and
    /// detaches or removes the session.
    pub fn connection_closed(&self, key: usize, conn: &Rc<ConnShared>, reason: CloseReason) {
        conn.open.set(false);
        self.clear_congested(conn);
        let will = conn.will.borrow_mut().take();
        if let (Some(w), true) = (will, reason.publishes_will()) {
            let w = *w;
            self.route(Message {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: Properties::new(),
            });
        }
        let mut removed: Vec<TopicFilter> = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            st.conns.try_remove(key);
            if let Some(slot) = conn.session.get() {
                let mut remove = false;
                if let Some(entry) = st.sessions.get_mut(slot) {
                    // Only the connection that currently serves the session may end it: a
                    // taken-over connection closes after its successor attached.
                    if entry.conn.as_ref().is_some_and(|c| Rc::ptr_eq(c, conn)) {
                        entry.conn = None;
                        let keep = entry.session.is_persistent()
                            && self.cfg.limits.session_expiry_max != Some(0);
                        if keep {
                            entry.session.detach();
                            st.sessions.mark_offline(slot, Instant::now());
                        } else {
                            remove = true;
                            removed.extend(entry.session.subscriptions().map(|(f, _)| f.clone()));
                        }
                    }
                }
                if remove {
                    st.sessions.remove(slot);
                    for f in &removed {
                        Self::unsubscribe_one(self, st, f, slot);
                    }
                }
            }
        }
        self.mesh.flush();
    }

    /// Routes a message published on this shard: retained store, local subscribers, and
    /// one mesh item per other interested shard.
    pub fn route(&self, msg: Message) {
        self.route_with_ack(msg, None);
    }

    /// Whether a retained message to `topic` is stored on another shard (so its ack must
    /// wait for that shard: see [`ConnShared::deferred`]).
    pub fn retained_elsewhere(&self, topic: &str) -> bool {
        self.cfg.retain_available && home_shard(topic, self.shards) != self.id
    }

    /// Routes a retained message published by `conn` whose ack (already encoded in `ack`)
    /// must not go out before the owner shard stored the message: a SUBSCRIBE that follows
    /// the ack, on any shard, then finds it, and updates from different shards cannot be
    /// applied out of order [MQTT-3.3.1-5].
    pub fn route_deferring_ack(&self, msg: Message, conn: &Rc<ConnShared>, ack: BytesMut) {
        let token = {
            let mut st = self.state.borrow_mut();
            let token = st.next_token;
            st.next_token += 1;
            st.retain_acks.insert(token, Rc::downgrade(conn));
            token
        };
        conn.deferred.borrow_mut().push_back((Some(token), ack));
        self.route_with_ack(msg, Some(token));
    }

    /// Queues `bytes` behind held-back acks, or writes them if nothing is held back.
    pub fn respond(&self, conn: &ConnShared, bytes: BytesMut) {
        if bytes.is_empty() {
            return;
        }
        let mut d = conn.deferred.borrow_mut();
        if d.is_empty() {
            drop(d);
            conn.out.borrow_mut().unsplit(bytes);
        } else {
            d.push_back((None, bytes));
        }
    }

    /// Writes the held-back responses that are no longer waiting.
    fn release_deferred(&self, conn: &ConnShared, token: u64) {
        let mut d = conn.deferred.borrow_mut();
        for entry in d.iter_mut() {
            if entry.0 == Some(token) {
                entry.0 = None;
            }
        }
        let mut out = conn.out.borrow_mut();
        while d.front().is_some_and(|e| e.0.is_none()) {
            if let Some((_, bytes)) = d.pop_front() {
                out.unsplit(bytes);
            }
        }
        drop(out);
        drop(d);
        conn.wake.notify();
    }

    fn route_with_ack(&self, msg: Message, ack: Option<u64>) {
        if msg.retain && self.cfg.retain_available {
            let owner = home_shard(&msg.topic, self.shards);
            if owner == self.id {
                self.store_retained(msg.detached());
            } else {
                self.mesh.push(
                    owner,
                    ShardMsg::Retain {
                        msg: msg.detached(),
                        ack: ack.map(|t| (self.id, t)),
                    },
                );
            }
        }
        let mask = self.state.borrow().interest.match_mask(&msg.topic);
        for shard in mask.iter() {
            if shard == self.id {
                self.deliver_local(&msg);
            } else {
                self.mesh.push(shard, ShardMsg::Publish(msg.clone()));
            }
        }
    }

    /// Delivers to this shard's subscribers, once per session at the highest granted QoS
    /// of its matching subscriptions.
    pub fn deliver_local(&self, msg: &Message) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let mut matches = std::mem::take(&mut st.matches);
        matches.clear();
        st.subs.for_each_match(&msg.topic, |_, slot, opts| {
            matches.push((slot, opts.qos, opts.retain_as_published));
        });
        if matches.len() > 1 {
            // Overlapping subscriptions of one client: one delivery at the highest QoS.
            matches.sort_unstable_by_key(|m| m.0);
            matches.dedup_by(|b, a| {
                if a.0 == b.0 {
                    a.1 = a.1.max(b.1);
                    a.2 |= b.2;
                    true
                } else {
                    false
                }
            });
        }
        let max_write = self.cfg.limits.max_write_buffer;
        for &(slot, granted, rap) in &matches {
            let Some(entry) = st.sessions.get_mut(slot) else {
                continue;
            };
            let qos = msg.qos.min(granted);
            let retain = rap && msg.retain;
            let outcome = match &entry.conn {
                Some(conn) => {
                    if qos == QoS::AtMostOnce && conn.pending_output() >= max_write {
                        self.count(|m| m.dropped_qos0_write_buffer += 1);
                        continue;
                    }
                    let o =
                        entry
                            .session
                            .deliver(msg, qos, retain, Some(&mut conn.out.borrow_mut()));
                    conn.queued.set(entry.session.queued_len());
                    self.note_output(conn);
                    conn.wake.notify();
                    o
                }
                None => entry.session.deliver(msg, qos, retain, None),
            };
            match outcome {
                DeliverOutcome::Written | DeliverOutcome::Queued => {
                    self.count(|m| m.messages_delivered += 1)
                }
                DeliverOutcome::Dropped(DropReason::QueueFull) => {
                    self.count(|m| m.dropped_queue_full += 1);
                    // One line per client and second at most: a flood of drops must not
                    // become a flood of log lines (the counter has the total).
                    let now = Instant::now();
                    if now.duration_since(self.drop_logged.get()) >= Duration::from_secs(1) {
                        self.drop_logged.set(now);
                        let total = self.summary().dropped_queue_full;
                        tracing::warn!(client_id = %entry.session.client_id(), topic = %msg.topic, dropped_total = total, "session queue full: message dropped (logged at most once a second per shard)");
                    }
                }
                DeliverOutcome::Dropped(DropReason::Offline) => {
                    self.count(|m| m.dropped_offline_qos0 += 1)
                }
            }
        }
        st.matches = matches;
    }

    /// Flow control: when a connection's pending output passes half of
    /// `max_write_buffer`, or its session queue half of `max_queued_messages`, the shard
    /// stops reading from its publishers and from other shards (which in turn stop reading
    /// theirs), so a flood slows down to what subscribers drain instead of filling queues
    /// until messages are dropped. A connection that does not drain below a quarter of both
    /// within a second is marked slow and stops holding anyone back; then its limits apply:
    /// QoS 0 past `max_write_buffer` and QoS 1/2 past the queue limits are dropped and
    /// counted.
    pub fn note_output(&self, conn: &ConnShared) {
        let l = &self.cfg.limits;
        let over = conn.pending_output() >= l.max_write_buffer / 2
            || conn.queued.get() >= l.max_queued_messages.div_ceil(2);
        if over && !conn.congested.get() && !conn.slow.get() {
            conn.congested.set(true);
            conn.congested_since.set(Instant::now());
            self.output_congested.set(self.output_congested.get() + 1);
        }
    }

    /// Called as a connection's output drains.
    pub fn note_drained(&self, conn: &ConnShared) {
        let l = &self.cfg.limits;
        let under = conn.pending_output() < l.max_write_buffer / 4
            && conn.queued.get() <= l.max_queued_messages / 4;
        if (conn.congested.get() || conn.slow.get()) && under {
            conn.slow.set(false);
            self.clear_congested(conn);
        }
    }

    fn clear_congested(&self, conn: &ConnShared) {
        if conn.congested.replace(false) {
            let n = self.output_congested.get().saturating_sub(1);
            self.output_congested.set(n);
            if n == 0 {
                self.output_drained.wake_all();
            }
        }
    }

    /// True while some connection's output is above its soft watermark.
    pub fn output_congested(&self) -> bool {
        self.output_congested.get() > 0
    }

    /// True while publishers are held back: a subscriber here is behind, or the channels
    /// to other shards are full.
    pub fn holding_back(&self) -> bool {
        self.output_congested() || self.mesh.congested()
    }

    /// Completes when publishers are no longer held back.
    pub async fn until_released(&self) {
        while self.holding_back() {
            if self.mesh.congested() {
                let a = self.output_drained.wait();
                let b = self.mesh.wait_uncongested();
                futures::pin_mut!(a, b);
                futures::future::select(a, b).await;
            } else {
                self.output_drained.wait().await;
            }
        }
    }

    fn store_retained(&self, msg: Message) {
        let mut st = self.state.borrow_mut();
        let key = msg.topic.as_bytestring().clone();
        if msg.payload.is_empty() {
            st.retained.remove(&key);
            return;
        }
        if msg.payload.len() > self.cfg.limits.retained_max_payload {
            st.retained.remove(&key);
            self.count(|m| m.retained_dropped += 1);
            tracing::warn!(topic = %msg.topic, size = msg.payload.len(), "retained payload over retained_max_payload: not stored");
            return;
        }
        if !st.retained.contains_key(&key) && st.retained.len() >= self.max_retained {
            self.count(|m| m.retained_dropped += 1);
            tracing::warn!(topic = %msg.topic, "retained store full: message not stored");
            return;
        }
        let mut msg = msg;
        msg.retain = true;
        st.retained.insert(key, msg);
    }

    fn retained_matching(st: &State, filters: &[TopicFilter]) -> Vec<Message> {
        st.retained
            .values()
            .filter(|m| filters.iter().any(|f| f.matches(&m.topic)))
            .cloned()
            .collect()
    }

    /// Applies a SUBSCRIBE the session accepted: index, interest broadcast, and SUBACK
    /// plus retained messages once every shard routes the filters.
    pub fn subscribe(
        &self,
        conn: &Rc<ConnShared>,
        slot: usize,
        packet_id: PacketId,
        added: Vec<(TopicFilter, SubscriptionOptions)>,
        mut codes: Vec<ReasonCode>,
    ) {
        let version = conn.version.get();
        let l = &self.cfg.limits;
        let mut accepted: Vec<(TopicFilter, SubscriptionOptions)> = Vec::with_capacity(added.len());
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for (i, (filter, opts)) in added.into_iter().enumerate() {
            let (exists, count) = st.sessions.get(slot).map_or((false, 0), |e| {
                (
                    e.session.has_subscription(&filter),
                    e.session.subscription_count(),
                )
            });
            // A refused filter changes nothing: an existing subscription to it stays as it
            // was.
            let refuse = if i >= l.max_filters_per_subscribe {
                Some(ReasonCode::QUOTA_EXCEEDED)
            } else if filter.levels().count() > l.max_topic_levels {
                Some(ReasonCode::TOPIC_FILTER_INVALID)
            } else if !exists && count >= l.max_subscriptions_per_client {
                Some(ReasonCode::QUOTA_EXCEEDED)
            } else {
                None
            };
            if let Some(code) = refuse {
                if let Some(c) = codes.get_mut(i) {
                    *c = if version.is_v5() {
                        code
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    };
                }
                continue;
            }
            if let Some(e) = st.sessions.get_mut(slot) {
                e.session.add_subscription(filter.clone(), opts);
            }
            if st.subs.insert(&filter, slot, opts).is_none() {
                let n = st.local_filters.entry(filter.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    st.interest.add(&filter, self.id);
                }
            }
            accepted.push((filter, opts));
        }
        let filters: Vec<TopicFilter> = accepted.iter().map(|(f, _)| f.clone()).collect();
        let retained = if self.cfg.retain_available {
            Self::retained_matching(st, &filters)
        } else {
            Vec::new()
        };
        let token = st.next_token;
        st.next_token += 1;
        let pending = PendingSub {
            conn: conn.clone(),
            session: slot,
            packet_id,
            codes,
            filters: accepted,
            waiting: self.shards - 1,
            retained,
        };
        if pending.waiting == 0 || filters.is_empty() {
            drop(filters);
            self.complete_subscribe(st, pending);
            return;
        }
        st.pending.insert(token, pending);
        for shard in (0..self.shards).filter(|&s| s != self.id) {
            self.mesh.push(
                shard,
                ShardMsg::InterestAdd {
                    from: self.id,
                    token,
                    filters: filters.clone(),
                },
            );
        }
        // Sent now, not at the end of the read turn: SUBACK waits for the answers.
        self.mesh.flush();
    }

    fn complete_subscribe(&self, st: &mut State, p: PendingSub) {
        let conn = p.conn;
        // A connection that closed meanwhile gets nothing; the subscriptions stay with
        // its (persistent) session.
        if conn.close.get().is_some() {
            return;
        }
        let version = conn.version.get();
        let mut out = conn.out.borrow_mut();
        let ack = Packet::SubAck(SubAck {
            packet_id: p.packet_id,
            codes: p.codes,
            properties: Properties::new(),
        });
        if let Err(e) = ack.encode(version, &mut out) {
            tracing::error!(error = %e, "SUBACK encode failed");
        }
        // [MQTT-3.8.4-3]: retained messages matching the filters follow the SUBACK, with
        // RETAIN set [MQTT-3.3.1-8], at the lower of their QoS and the granted QoS.
        if let Some(entry) = st.sessions.get_mut(p.session) {
            for m in &p.retained {
                let granted = p
                    .filters
                    .iter()
                    .filter(|(f, o)| {
                        f.matches(&m.topic)
                            && o.retain_handling != crate::protocol::RetainHandling::DoNotSend
                    })
                    .map(|(_, o)| o.qos)
                    .max();
                if let Some(g) = granted {
                    entry.session.deliver(m, m.qos.min(g), true, Some(&mut out));
                }
            }
        }
        drop(out);
        self.note_output(&conn);
        conn.wake.notify();
    }

    /// Removes the session's subscriptions to these filters from the index.
    pub fn unsubscribe(&self, slot: usize, filters: &[TopicFilter]) {
        let mut st = self.state.borrow_mut();
        for f in filters {
            Self::unsubscribe_one(self, &mut st, f, slot);
        }
    }

    fn unsubscribe_one(&self, st: &mut State, filter: &TopicFilter, slot: usize) {
        if st.subs.remove(filter, slot).is_none() {
            return;
        }
        let last = match st.local_filters.get_mut(filter) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            st.local_filters.remove(filter);
            st.interest.remove(filter, self.id);
            for shard in (0..self.shards).filter(|&s| s != self.id) {
                self.mesh.push(
                    shard,
                    ShardMsg::InterestRemove {
                        from: self.id,
                        filter: filter.clone(),
                    },
                );
            }
        }
    }

    /// Handles one message from another shard. Never awaits.
    pub fn on_mesh(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(m) => self.deliver_local(&m),
            ShardMsg::Retain { msg, ack } => {
                self.store_retained(msg);
                if let Some((from, token)) = ack {
                    self.mesh.push(from, ShardMsg::RetainStored { token });
                }
            }
            ShardMsg::RetainStored { token } => {
                let conn = self.state.borrow_mut().retain_acks.remove(&token);
                if let Some(conn) = conn.and_then(|w| w.upgrade()) {
                    self.release_deferred(&conn, token);
                }
            }
            ShardMsg::Accepted(a) => {
                let shard = self.clone();
                let stream = a.0.bind_to_executor();
                super::spawn_connection(super::conn::accepted(shard, stream));
            }
            ShardMsg::Adopt(a) => {
                let shard = self.clone();
                super::spawn_connection(super::conn::adopted(shard, *a));
            }
            ShardMsg::InterestAdd {
                from,
                token,
                filters,
            } => {
                let retained = {
                    let mut st = self.state.borrow_mut();
                    for f in &filters {
                        st.interest.add(f, from);
                    }
                    if self.cfg.retain_available {
                        Self::retained_matching(&st, &filters)
                    } else {
                        Vec::new()
                    }
                };
                self.mesh
                    .push(from, ShardMsg::InterestAck { token, retained });
            }
            ShardMsg::InterestAck { token, retained } => {
                let mut st = self.state.borrow_mut();
                let done = match st.pending.get_mut(&token) {
                    Some(p) => {
                        p.retained.extend(retained);
                        p.waiting -= 1;
                        p.waiting == 0
                    }
                    None => false,
                };
                if done {
                    if let Some(p) = st.pending.remove(&token) {
                        self.complete_subscribe(&mut st, p);
                    }
                }
            }
            ShardMsg::InterestRemove { from, filter } => {
                self.state.borrow_mut().interest.remove(&filter, from);
            }
        }
    }

    /// Closes connections silent for 1.5 times their keep alive [MQTT-3.1.2-24] (and those
    /// that did not send CONNECT within the connect timeout). Runs about once a second
    /// for the whole shard rather than one timer per connection.
    pub fn sweep(&self, now: Instant) {
        let st = self.state.borrow();
        for (_, conn) in st.conns.iter() {
            if conn.congested.get()
                && now.duration_since(conn.congested_since.get()) > Duration::from_secs(1)
            {
                tracing::warn!(pending = conn.pending_output(), "slow consumer: no longer holding back publishers; QoS 0 beyond max_write_buffer is dropped for it");
                conn.slow.set(true);
                self.clear_congested(conn);
            }
            let ka = conn.keep_alive.get();
            if ka == 0 || conn.close.get().is_some() {
                continue;
            }
            let limit = if conn.session.get().is_some() {
                Duration::from_millis(u64::from(ka) * 1500)
            } else {
                Duration::from_secs(u64::from(ka))
            };
            if now.duration_since(conn.last_read.get()) > limit {
                if conn.session.get().is_some() {
                    self.count(|m| m.keepalive_timeouts += 1);
                    conn.request_close(CloseReason::KeepAliveTimeout);
                } else {
                    conn.request_close(CloseReason::ConnectTimeout);
                }
            }
        }
    }

    /// Removes persistent sessions offline for longer than `session_expiry_max`, with
    /// their subscriptions and queued messages.
    pub fn expire_sessions(&self, now: Instant) {
        let Some(max) = self.cfg.limits.session_expiry_max else {
            return;
        };
        let max = Duration::from_secs(max);
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for slot in st.sessions.offline_longer_than(now, max) {
            let Some(entry) = st.sessions.remove(slot) else {
                continue;
            };
            let filters: Vec<TopicFilter> = entry
                .session
                .subscriptions()
                .map(|(f, _)| f.clone())
                .collect();
            for f in &filters {
                Self::unsubscribe_one(self, st, f, slot);
            }
            tracing::debug!(client_id = %entry.session.client_id(), "persistent session expired");
        }
    }

    /// Asks every connection to close (shutdown).
    pub fn close_all(&self) {
        let st = self.state.borrow();
        for (_, c) in st.conns.iter() {
            c.request_close(CloseReason::ServerShutdown);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.state.borrow().conns.len()
    }
}

/// Writes CONNACK for `version`.
pub(crate) fn write_connack(
    out: &mut BytesMut,
    version: ProtocolVersion,
    session_present: bool,
    reason: ReasonCode,
) {
    match version {
        ProtocolVersion::V5 => {
            let p = Packet::ConnAck(crate::protocol::ConnAck {
                session_present,
                reason,
                properties: Properties::new(),
            });
            if let Err(e) = p.encode(version, out) {
                tracing::error!(error = %e, "CONNACK encode failed");
            }
        }
        _ => {
            let sp = version == ProtocolVersion::V3_1_1 && session_present && reason.is_success();
            out.put_slice(&[0x20, 0x02, u8::from(sp), reason.to_connack_v3()]);
        }
    }
}
