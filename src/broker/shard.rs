//! One shard: its state, its counters, and the dispatch of messages from other shards.
//!
//! Every operation on a shard is synchronous: it borrows the state, changes it, appends
//! bytes to write buffers, queues mesh messages, and returns. No borrow is ever held across
//! an `.await`, because nothing here awaits; connection tasks and mesh receivers call in
//! and do their I/O afterwards. The operations live in one file per concern:
//! [`super::lifecycle`], [`super::routing`], [`super::gate`], [`super::flow`],
//! [`super::subscribe`], [`super::retained`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::connection::{CloseReason, ConnShared};
use super::hooks::Authenticator;
use super::retained_stream::RetainedStream;
use super::store::{SessionId, SessionStore};
use super::subscribe::PendingSub;
use super::ShardMsg;
use crate::config::Config;
use crate::index::{InterestTrie, RetainedTrie, SubscriptionTrie};
use crate::mesh::MeshTx;
use crate::notify::WaitList;
use crate::protocol::TopicFilter;
use crate::session::{Message, SessionLimits, Subscribed};

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
    /// Deliveries discarded because they exceed the subscriber's 5.0 Maximum Packet Size.
    pub dropped_too_large: u64,
    /// 5.0 messages dropped because their Message Expiry Interval ran out before
    /// delivery (offered, queued, or in the retained store).
    pub dropped_expired: u64,
    /// Retained messages not stored (limits).
    pub retained_dropped: u64,
    /// Retained messages for a new subscription dropped at a full session queue.
    pub retained_delivery_dropped: u64,
    /// CONNECTs refused because the shard holds `max_sessions` sessions.
    pub sessions_refused_limit: u64,
    /// Offline sessions removed at the end of their expiry interval.
    pub sessions_expired: u64,
    /// 5.0 QoS 1/2 PUBLISHes refused with 0x99: Payload Format Indicator 1 and a payload
    /// that is not UTF-8 (QoS 0 ones close the connection: `protocol_errors`).
    pub payload_format_invalid: u64,
    /// PUBLISHes the authorization hook refused (not routed).
    pub publish_denied: u64,
    /// Subscriptions the authorization hook refused (SUBACK 0x87 / 0x80).
    pub subscribe_denied: u64,
    /// Deliveries not made because the client may not read the topic (the hook's
    /// [`ClientRights::read`](crate::security::ClientRights::read)), retained ones
    /// included.
    pub read_denied: u64,
    /// TLS connections whose handshake did not complete (a client that does not speak
    /// TLS, a refused or missing client certificate, garbage, or the connect timeout).
    pub tls_handshake_failed: u64,
    /// Connections closed at accept because their IP address had
    /// `limits.max_connections_per_ip` open already.
    pub connections_refused_ip: u64,
    /// CONNECTs refused by their checks (client identifier, allow_anonymous, user name
    /// and password, the will's authorization), each answered with its CONNACK code.
    pub connects_refused: u64,
    /// WebSocket connections refused at the upgrade (not an upgrade request, wrong path,
    /// no MQTT subprotocol) or closed for a frame that broke the rules (text, unmasked,
    /// too long, malformed).
    pub websocket_errors: u64,
    /// 5.0 enhanced authentications refused (unsupported method, the hook's failure, or
    /// a protocol error during the exchange): CONNACK with the code, or DISCONNECT on
    /// re-authentication.
    pub auth_refused: u64,
    /// Messages a session held through a shared subscription when it ended, given to
    /// another member of the group.
    pub shared_redelivered: u64,
    /// Messages for a share group that had no member left to take them.
    pub shared_undeliverable: u64,
    /// Mesh messages dropped because their destination shard had stopped.
    pub mesh_undeliverable: u64,
    /// Connection tasks that panicked (a bug), cleaned up and closed.
    pub connection_panics: u64,
    /// Log commits written and synced (persistence on).
    pub persist_commits: u64,
    /// Bytes of records committed to the log (before padding).
    pub persist_bytes: u64,
    /// Log commits or compactions that failed (each retried; acknowledgements held
    /// meanwhile in mode `sync`).
    pub persist_errors: u64,
    /// Logs replaced by a snapshot of the live state.
    pub persist_compactions: u64,
    /// QoS 1/2 PUBLISHes and persistent SUBSCRIBEs refused while the log was over
    /// `persistence.max_disk_bytes` or failing.
    pub persist_refused: u64,
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
        self.dropped_too_large += o.dropped_too_large;
        self.dropped_expired += o.dropped_expired;
        self.retained_dropped += o.retained_dropped;
        self.retained_delivery_dropped += o.retained_delivery_dropped;
        self.sessions_refused_limit += o.sessions_refused_limit;
        self.sessions_expired += o.sessions_expired;
        self.payload_format_invalid += o.payload_format_invalid;
        self.auth_refused += o.auth_refused;
        self.publish_denied += o.publish_denied;
        self.subscribe_denied += o.subscribe_denied;
        self.read_denied += o.read_denied;
        self.tls_handshake_failed += o.tls_handshake_failed;
        self.connections_refused_ip += o.connections_refused_ip;
        self.connects_refused += o.connects_refused;
        self.websocket_errors += o.websocket_errors;
        self.shared_redelivered += o.shared_redelivered;
        self.shared_undeliverable += o.shared_undeliverable;
        self.mesh_undeliverable += o.mesh_undeliverable;
        self.connection_panics += o.connection_panics;
        self.persist_commits += o.persist_commits;
        self.persist_bytes += o.persist_bytes;
        self.persist_errors += o.persist_errors;
        self.persist_compactions += o.persist_compactions;
        self.persist_refused += o.persist_refused;
    }
}

/// Which connection serves which session: kept beside the [`SessionStore`] (which holds
/// no connection handles), indexed by the session's slot. A link counts only while its
/// connection names the same session (slot and generation) in `ConnShared::session`, so
/// a stale id finds nothing, at no memory cost beyond one pointer per slot.
#[derive(Debug, Default)]
pub(crate) struct Links(Vec<Option<Rc<ConnShared>>>);

impl Links {
    /// The connection serving session `id`, if any.
    #[inline]
    pub(crate) fn get(&self, id: SessionId) -> Option<&Rc<ConnShared>> {
        match self.0.get(id.slot() as usize) {
            Some(Some(c)) if c.session.get() == Some(id) => Some(c),
            _ => None,
        }
    }

    /// `conn` (whose `session` is already `id`) serves session `id` from now on.
    pub(crate) fn set(&mut self, id: SessionId, conn: Rc<ConnShared>) {
        debug_assert_eq!(conn.session.get(), Some(id));
        let slot = id.slot() as usize;
        if self.0.len() <= slot {
            self.0.resize_with(slot + 1, || None);
        }
        if let Some(s) = self.0.get_mut(slot) {
            *s = Some(conn);
        }
    }

    /// No connection serves session `id` any more; returns the one that did.
    pub(crate) fn take(&mut self, id: SessionId) -> Option<Rc<ConnShared>> {
        let s = self.0.get_mut(id.slot() as usize)?;
        if s.as_ref().is_some_and(|c| c.session.get() == Some(id)) {
            s.take()
        } else {
            None
        }
    }
}

/// Everything mutable a shard owns.
#[derive(Debug)]
pub(crate) struct State {
    pub sessions: SessionStore,
    /// The connection serving each session that has one.
    pub(crate) links: Links,
    pub(crate) subs: SubscriptionTrie<SessionId, Subscribed>,
    /// Local subscriptions per filter; the shard's interest bit is set while above 0.
    pub(crate) local_filters: AHashMap<TopicFilter, u32>,
    pub(crate) interest: InterestTrie,
    pub(crate) retained: RetainedTrie<Message>,
    /// Retained messages on their way to new subscriptions, per session.
    pub(crate) streams: AHashMap<SessionId, RetainedStream>,
    /// 5.0 wills waiting for their Will Delay Interval, by session (see [`super::will`]).
    pub(crate) delayed_wills: AHashMap<SessionId, (Instant, Box<crate::protocol::Will>)>,
    /// The deadlines of `delayed_wills`, soonest first (stale entries skipped).
    pub(crate) will_deadlines:
        std::collections::BinaryHeap<std::cmp::Reverse<(Instant, SessionId)>>,
    /// Delayed wills of sessions that ended, to publish once the state is not borrowed.
    pub(crate) wills_due: Vec<crate::protocol::Will>,
    /// Streams whose walk of this shard's store goes on in a later turn (bounded by the
    /// number of streams: a session is listed once).
    pub(crate) retained_later: Vec<SessionId>,
    pub(crate) pending: AHashMap<u64, PendingSub>,
    /// Connections whose ack waits for other shards (a retained message stored by its
    /// owner, deliveries made durable), with how many answers are still to come.
    /// And the ingress whose routing ends then (see [`super::durable`]), 0: none.
    pub(crate) awaiting: AHashMap<u64, super::gate::Awaiting>,
    pub(crate) next_token: u64,
    /// Live connections, by slot, with the generation of their [`ConnId`].
    pub conns: slab::Slab<(u32, Rc<ConnShared>)>,
    pub(crate) next_conn_generation: u32,
    /// Scratch for collecting matches (reused to avoid an allocation per message).
    pub(crate) matches: Vec<super::routing::Match>,
    /// Messages of ended sessions' shared subscriptions, to give to other members once
    /// the state is not borrowed (see [`super::shared`]).
    pub(crate) shared_orphans: Vec<(TopicFilter, Message)>,
}

/// One shard.
pub(crate) struct Shard {
    pub id: usize,
    pub shards: usize,
    pub cfg: Arc<Config>,
    /// Data plane: PUBLISH fan-out and retained updates; its congestion holds publishers
    /// back.
    pub mesh: Rc<MeshTx<ShardMsg>>,
    /// Control plane: never held back by data (see [`crate::mesh`]).
    pub control: Rc<MeshTx<ShardMsg>>,
    pub state: RefCell<State>,
    pub(crate) metrics: Cell<ShardSummary>,
    /// The hook stacks: the connection's listener picks one at CONNECT, and its session
    /// keeps it ([`crate::session::Session::domain`]).
    pub(crate) domains: Arc<super::hooks::Domains>,
    pub stopping: Cell<bool>,
    /// Connections above the output soft watermark (not counting slow ones). While above 0
    /// the shard stops reading from publishers and from other shards.
    pub(crate) output_congested: Cell<usize>,
    /// Woken when `output_congested` drops to 0.
    pub output_drained: WaitList,
    /// Woken when `State::retained_later` has streams to go on with.
    pub(crate) retained_work: WaitList,
    /// When a queue-full drop was last logged (drops are logged at most once a second).
    pub(crate) drop_logged: LogGate,
    /// When something the authorization hook refused was last logged (at most once a
    /// second, with the totals).
    pub(crate) deny_logged: LogGate,
    /// When a transport failure (a TLS handshake) was last logged (at most once a second).
    pub(crate) transport_logged: LogGate,
    /// The hook's [`Authenticator::rights_generation`] the sessions' rights were resolved
    /// at (see [`Shard::refresh_rights`]).
    pub(crate) rights_generation: Cell<u64>,
    /// Rotates the choice of shard for messages a share group's chosen shard could not
    /// take (see [`super::shared`]).
    pub(crate) share_turn: Cell<u32>,
    /// Connections beyond `max_connections` being told "server busy" (see
    /// `connect::refuse_busy`).
    pub(crate) busy_refusals: Cell<usize>,
    /// This shard's share of `max_connections`.
    pub max_connections: usize,
    /// This shard's share of `max_sessions`.
    pub(crate) max_sessions: usize,
    /// This shard's share of `retained_max_messages`.
    pub(crate) max_retained: usize,
    pub(crate) limits: SessionLimits,
    /// The log, when `persistence.mode` is not off (see [`super::durable`]).
    pub(crate) persist: Option<Box<super::durable::Durable>>,
    /// Bytes and packets through this shard's connections (see [`super::stats`]).
    pub(crate) traffic: RefCell<crate::observe::Traffic>,
    /// Times a local subscriber fell far enough behind that this shard held its
    /// publishers back.
    pub(crate) congestion_episodes: Cell<u64>,
    /// Since when the publishers are held back (an episode under way), and how long they
    /// were in all the episodes before, in microseconds.
    pub(crate) holdback_since: Cell<Option<Instant>>,
    pub(crate) holdback_micros: Cell<u64>,
    /// How connections ended, and CONNACK refusals.
    pub(crate) closes: RefCell<crate::observe::Closes>,
    /// CONNECTs received per listener and protocol version.
    pub(crate) connects: RefCell<Vec<[u64; 3]>>,
    /// `$SYS` topics in this shard's retained store (not counted against its share of
    /// `retained_max_messages`).
    pub(crate) sys_retained: Cell<usize>,
    /// Shard 0 with `sys_interval` or `[metrics]` set: gathering every shard's report,
    /// and the `$SYS` tree.
    pub(crate) gather: Option<super::stats::Gather>,
}

/// At most one log line a second for one kind of event (floods are counted, not logged
/// line by line).
#[derive(Debug)]
pub(crate) struct LogGate(Cell<Option<Instant>>);

impl Default for LogGate {
    fn default() -> Self {
        LogGate(Cell::new(None))
    }
}

impl LogGate {
    /// Whether a line may be logged now (and, if so, the next not before a second).
    pub(crate) fn due(&self) -> bool {
        let now = Instant::now();
        if self
            .0
            .get()
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            return false;
        }
        self.0.set(Some(now));
        true
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("id", &self.id).finish()
    }
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        cfg: Arc<Config>,
        mesh: Rc<MeshTx<ShardMsg>>,
        control: Rc<MeshTx<ShardMsg>>,
        domains: Arc<super::hooks::Domains>,
    ) -> Shard {
        let shards = mesh.shards();
        let l = &cfg.limits;
        let rights_generation = Cell::new(domains.rights_generation());
        let gather = (id == 0 && (cfg.sys_interval > 0 || cfg.metrics.listen.is_some()))
            .then(|| super::stats::Gather::new(cfg.sys_interval > 0));
        let connects = vec![[0; 3]; cfg.listener_count()];
        Shard {
            rights_generation,
            id,
            shards,
            max_connections: l.max_connections.div_ceil(shards),
            max_retained: l.retained_max_messages.div_ceil(shards),
            max_sessions: l.max_sessions.div_ceil(shards),
            limits: SessionLimits {
                max_inflight: l.max_inflight,
                max_inflight_incoming: u16::MAX,
                max_queued_messages: l.max_queued_messages,
                max_queued_bytes: l.max_queued_bytes,
                max_packet_out: u32::MAX,
                max_topic_alias_out: 0,
            },
            cfg,
            mesh,
            control,
            state: RefCell::new(State {
                sessions: SessionStore::default(),
                links: Links::default(),
                subs: SubscriptionTrie::new(),
                local_filters: AHashMap::new(),
                interest: InterestTrie::new(),
                retained: RetainedTrie::new(),
                streams: AHashMap::new(),
                retained_later: Vec::new(),
                delayed_wills: AHashMap::new(),
                will_deadlines: std::collections::BinaryHeap::new(),
                wills_due: Vec::new(),
                pending: AHashMap::new(),
                awaiting: AHashMap::new(),
                next_token: 0,
                conns: slab::Slab::new(),
                next_conn_generation: 0,
                matches: Vec::new(),
                shared_orphans: Vec::new(),
            }),
            metrics: Cell::new(ShardSummary::default()),
            domains,
            stopping: Cell::new(false),
            output_congested: Cell::new(0),
            output_drained: WaitList::default(),
            retained_work: WaitList::default(),
            drop_logged: LogGate::default(),
            deny_logged: LogGate::default(),
            transport_logged: LogGate::default(),
            share_turn: Cell::new(0),
            busy_refusals: Cell::new(0),
            persist: None,
            traffic: RefCell::default(),
            congestion_episodes: Cell::new(0),
            holdback_since: Cell::new(None),
            holdback_micros: Cell::new(0),
            closes: RefCell::default(),
            // Every listener has its series from the start, zeros included.
            connects: RefCell::new(connects),
            sys_retained: Cell::new(0),
            gather,
        }
    }

    pub(crate) fn summary(&self) -> ShardSummary {
        self.metrics.get()
    }

    /// Bumps a counter (the shard's counters are its `ShardSummary`, kept in a `Cell`).
    #[inline]
    pub(crate) fn count(&self, f: impl FnOnce(&mut ShardSummary)) {
        let mut m = self.metrics.get();
        f(&mut m);
        self.metrics.set(m);
    }

    /// Sends a message to `dest`'s subscribers on the data plane (batched; its congestion
    /// holds publishers back). The data plane carries only this and [`Shard::send_retain`]:
    /// anything an answer (CONNACK, SUBACK, an ack) waits for goes by `send_control`, so
    /// data congestion can never delay it.
    pub(crate) fn send_publish(&self, dest: usize, msg: Message, ack: Option<(usize, u64)>) {
        let m = match ack {
            None => ShardMsg::Publish(msg),
            Some(ack) => ShardMsg::PublishAcked {
                msg,
                ack,
                ingress: self.routing_ingress(),
            },
        };
        let Some(m) = self.hold_data(dest, m) else {
            return;
        };
        if let Err(msg) = self.mesh.push(dest, m) {
            self.undeliverable(dest, &msg);
        }
    }

    /// Sends a retained message to its owner shard `dest` on the data plane, after the
    /// deliveries routed before it (with `ack`, the owner answers `RetainStored` on the
    /// control plane).
    pub(crate) fn send_retain(&self, dest: usize, msg: Message, ack: Option<(usize, u64)>) {
        let ingress = self.routing_ingress();
        let Some(m) = self.hold_data(dest, ShardMsg::Retain { msg, ack, ingress }) else {
            return;
        };
        if let Err(msg) = self.mesh.push(dest, m) {
            self.undeliverable(dest, &msg);
        }
    }

    /// Sends on the control plane (never held back by data). False when the message was
    /// dropped (its destination has stopped).
    pub(crate) fn send_control(&self, dest: usize, msg: ShardMsg) -> bool {
        match self.control.push(dest, msg) {
            Ok(()) => true,
            Err(msg) => {
                self.undeliverable(dest, &msg);
                false
            }
        }
    }

    /// A mesh message handed back: its destination is not a peer or has stopped (shutdown).
    pub(crate) fn undeliverable(&self, dest: usize, msg: &ShardMsg) {
        self.count(|m| m.mesh_undeliverable += 1);
        tracing::debug!(
            dest,
            kind = msg.kind(),
            "mesh destination closed: message dropped"
        );
    }

    /// Flushes both planes (end of a turn).
    pub(crate) fn flush_mesh(&self) {
        self.mesh.flush();
        self.control.flush();
    }

    /// Handles one message from another shard. Never awaits.
    pub(crate) fn on_mesh(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(m) => self.deliver_local(&m, None),
            ShardMsg::PublishAcked {
                msg,
                ack: (from, token),
                ingress,
            } => {
                let before = self.appended();
                self.with_ingress(ingress, || self.deliver_local(&msg, None));
                self.confirm(from, token, before);
            }
            ShardMsg::SharedPublish(p) => {
                let before = self.appended();
                let (ack, ingress) = (p.ack, p.ingress);
                let forwarded = self.with_ingress(ingress, || self.on_shared_publish(*p));
                if let Some((from, token)) = ack {
                    match forwarded {
                        // Handed on to other shards: answered once they answered too.
                        Some((own, answers)) => {
                            let batch = self.own_batch(before);
                            self.state.borrow_mut().awaiting.insert(
                                own,
                                super::gate::Awaiting {
                                    conn: std::rc::Weak::new(),
                                    answers,
                                    ingress: 0,
                                    then: Some((from, token, batch)),
                                },
                            );
                        }
                        None => self.confirm(from, token, before),
                    }
                }
            }
            ShardMsg::Retain { msg, ack, ingress } => {
                let before = self.appended();
                self.with_ingress(ingress, || self.store_retained(msg));
                if let Some((from, token)) = ack {
                    self.confirm(from, token, before);
                }
            }
            ShardMsg::RetainStored { token } => self.answer_arrived(token),
            ShardMsg::Accepted(a) => {
                let stream = a.0.bind_to_executor();
                super::connect::spawn_accepted(self.clone(), stream, a.1);
            }
            ShardMsg::Adopt(a) => super::connect::spawn_adopted(self.clone(), *a),
            ShardMsg::InterestAdd {
                from,
                token,
                filters,
                fetch,
            } => self.on_interest_add(from, token, filters, fetch),
            ShardMsg::InterestAck { from, token, first } => {
                self.on_interest_ack(from, token, first)
            }
            ShardMsg::RetainedFetch(f) => self.on_retained_fetch(f),
            ShardMsg::RetainedBatch(b) => self.on_retained_batch(b),
            ShardMsg::InterestRemove { from, filter } => {
                self.state.borrow_mut().interest.remove(&filter, from);
            }
            ShardMsg::StatsRequest { from, round } => self.on_stats_request(from, round),
            ShardMsg::StatsReport { round, stats } => self.on_stats_report(round, stats),
        }
    }

    /// Whether the client of session `id` may publish to `topic`: never to `$SYS`, which
    /// only the broker writes; otherwise as its rights, then `authorize_publish`, say.
    pub(crate) fn may_publish(&self, id: SessionId, topic: &str) -> bool {
        let mut st = self.state.borrow_mut();
        self.may_publish_in(&mut st.sessions, id, topic)
    }

    /// [`Shard::may_publish`] for a caller that holds the state.
    pub(crate) fn may_publish_in(
        &self,
        sessions: &mut SessionStore,
        id: SessionId,
        topic: &str,
    ) -> bool {
        if super::stats::is_sys(topic) {
            return false;
        }
        self.refresh_rights(sessions);
        let s = sessions.get(id);
        if s.and_then(|s| s.rights())
            .is_some_and(|r| !r.publish(topic))
        {
            return false;
        }
        let who = super::hooks::ClientInfo {
            client_id: s.map_or("", |s| s.client_id()),
            username: s.and_then(|s| s.username()),
        };
        self.auth(s.map_or(0, |s| s.domain()))
            .authorize_publish(&who, topic)
    }

    /// The hook stack of domain `d` (a listener's, kept by its sessions).
    pub(crate) fn auth(&self, d: u16) -> &dyn Authenticator {
        self.domains.get(d)
    }

    /// The rights domain `d`'s hooks give a client (None: no restriction).
    pub(crate) fn rights_for(
        &self,
        d: u16,
        client_id: &str,
        username: Option<&str>,
    ) -> Option<Arc<dyn crate::security::ClientRights>> {
        self.domains.rights(
            d,
            &super::hooks::ClientInfo {
                client_id,
                username,
            },
        )
    }

    /// After the hooks' rules changed (a reload: a generation moved), every session of
    /// this shard gets its rights again from its domain, before the next check or
    /// delivery. One atomic load per domain when nothing changed.
    pub(crate) fn refresh_rights(&self, sessions: &mut SessionStore) {
        let generation = self.domains.rights_generation();
        if generation == self.rights_generation.get() {
            return;
        }
        self.rights_generation.set(generation);
        let mut n = 0usize;
        sessions.for_each_mut(|s| {
            let rights = self.rights_for(s.domain(), s.client_id(), s.username());
            s.set_rights(rights);
            n += 1;
        });
        tracing::info!(
            shard = self.id,
            sessions = n,
            "authorization rules changed: rights resolved again"
        );
    }

    /// A TLS handshake did not complete: counted and logged.
    pub(crate) fn tls_failed(&self) {
        self.count(|m| m.tls_handshake_failed += 1);
        self.log_transport_failure("TLS handshake did not complete");
    }

    /// A WebSocket upgrade or frame broke the rules (`why`): counted and logged.
    pub(crate) fn ws_failed(&self, why: &'static str) {
        self.count(|m| m.websocket_errors += 1);
        self.log_transport_failure(why);
    }

    /// Logs a connection that failed below MQTT (its TLS handshake), at most once a second
    /// per shard with the total: a scanner or a flood of plain clients on a TLS port must
    /// not flood the log.
    pub(crate) fn log_transport_failure(&self, what: &'static str) {
        if !self.transport_logged.due() {
            return;
        }
        let m = self.summary();
        tracing::warn!(
            tls_handshake_failed = m.tls_handshake_failed,
            connections_refused_ip = m.connections_refused_ip,
            connections_refused_limit = m.connections_refused_limit,
            "{what}: closed (logged at most once a second per shard; the totals are this shard's)"
        );
    }

    /// Logs a refused CONNECT, at most once a second per shard (with the total): a
    /// client retrying a wrong password in a loop must not flood the log.
    pub(crate) fn log_refused_connect(&self, client_id: &str, code: crate::protocol::ReasonCode) {
        if !self.deny_logged.due() {
            return;
        }
        tracing::info!(
            client_id,
            code = %code,
            connects_refused = self.summary().connects_refused,
            "CONNECT refused (logged at most once a second per shard; the total is this shard's)"
        );
    }

    /// Logs something the authorization hook refused, at most once a second per shard
    /// (the counters have the totals): a client trying a forbidden topic in a loop must
    /// not flood the log.
    pub(crate) fn log_denied(&self, what: &'static str, client_id: &str, topic: &str) {
        if !self.deny_logged.due() {
            return;
        }
        let m = self.summary();
        tracing::warn!(
            what,
            client_id,
            topic,
            publish_denied = m.publish_denied,
            subscribe_denied = m.subscribe_denied,
            read_denied = m.read_denied,
            "not authorized (logged at most once a second per shard; the totals are this shard's)"
        );
    }

    /// The largest packet the client of `conn` accepts (its session's 5.0 Maximum Packet
    /// Size), for what the server writes outside the session (a DISCONNECT's Reason
    /// String); 0 when it cannot be known now.
    pub(crate) fn client_max(&self, conn: &ConnShared) -> u32 {
        let Some(id) = conn.session.get() else {
            return 0;
        };
        self.state
            .try_borrow()
            .ok()
            .and_then(|st| st.sessions.get(id).map(|s| s.max_packet_out()))
            .unwrap_or(0)
    }

    /// Asks every connection to close (shutdown).
    pub(crate) fn close_all(&self) {
        let st = self.state.borrow();
        for (_, c) in st.conns.iter() {
            c.1.request_close(CloseReason::ServerShutdown);
        }
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.state.borrow().conns.len()
    }
}
