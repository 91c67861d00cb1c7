//! The shard's side of persistence: what it appends to its log, when a commit goes to
//! disk, and which answers wait for it.
//!
//! ## What is written
//! The session store's changes ([`super::store::Change`]), the flows of persistent
//! sessions as their state machine reports them ([`crate::session::Flow`]), the messages
//! those flows hold (one [`Record::Message`] per message and shard, however many sessions
//! hold it), and the retained store's changes. Clean sessions write nothing. Records are
//! appended in the order the changes happen: store changes are drained into the log before
//! any flow or message record that follows them.
//!
//! ## Group commit and the gate (mode `sync`)
//! One task per shard ([`commit_loop`]) takes everything appended so far as one batch,
//! writes it as one sealed commit and syncs it, while the shard goes on appending to the
//! next batch. A connection whose output reflects a change that is not durable yet (the
//! ack of a PUBLISH that reached a persistent session, a SUBACK, a PUBLISH or PUBREL sent
//! to a persistent session) is tagged with the batch it waits for
//! (`ConnShared::durable_wait`), and its task writes nothing until that batch is on disk.
//! The tag is one byte (the batch number modulo 255, plus one): at most two batches are
//! ever open (the one being synced and the one being built), so equal tags never belong to
//! different open batches. A PUBLISH whose deliveries go to other shards waits, through
//! the acknowledgement gate, for each of them to confirm that its part is durable.
//!
//! ## Failures
//! A commit that fails (disk full, an I/O error, a read-only file system) is logged,
//! counted and retried with the same bytes, at growing intervals up to a second; in mode
//! `sync` what waits for it stays unacknowledged meanwhile (publishers stop at their
//! in-flight window), and nothing already durable is touched.
//!
//! **Owns:** the pending frames, the batch counters, the tags' bookkeeping, the
//! confirmations owed to other shards. **Must not touch:** what is in a session (the
//! state machine reports it), sockets, the file (the [`Journal`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;

use super::connection::ConnShared;
use super::journal::Journal;
use super::shard::Shard;
use super::store::SessionStore;
use super::ShardMsg;
use crate::config::PersistMode;
use crate::notify::Notify;
use crate::persist::frame;
use crate::persist::record::Record;
use crate::protocol::{Packet, PacketId, ProtocolVersion, Publish, QoS};
use crate::session::{Flow, FlowLog, Message, Session};

/// A shard's persistence state (present only when `persistence.mode` is not off).
#[derive(Debug)]
pub(crate) struct Durable {
    pub(crate) mode: PersistMode,
    sync_interval: Duration,
    compact_bytes: u64,
    /// Frames appended since the last batch was taken.
    frames: RefCell<Vec<u8>>,
    /// The buffer of the batch before, emptied, for the next one (no regrowth per batch).
    spare: RefCell<Vec<u8>>,
    /// Records appended so far: a caller compares it before and after a step to know
    /// whether the step wrote anything.
    appended: Cell<u64>,
    /// The batch being built (the next commit) and the last one on disk.
    building: Cell<u64>,
    durable: Cell<u64>,
    /// The last message number used.
    last_message: Cell<u64>,
    /// Connections tagged with the batch being built.
    gated: RefCell<Vec<Rc<ConnShared>>>,
    /// Confirmations owed to other shards once a batch is durable: (batch, shard, token).
    owed: RefCell<Vec<(u64, usize, u64)>>,
    /// Set when there is something to commit.
    pub(crate) work: Notify,
    /// The scratch list persistent sessions report their flows into.
    pub(crate) flows: RefCell<FlowLog>,
    /// The log's size after the last compaction (its snapshot).
    pub(crate) snapshot_bytes: Cell<u64>,
    /// The log file's epoch and sequence (see [`super::recovery`]).
    pub(crate) file: Cell<(u64, u64)>,
    /// Set while routing a QoS 2 message whose incoming id a persistent publisher's
    /// session just recorded: what goes to other shards waits in `outbox` until that
    /// record is durable (see [`Shard::hold_data`]).
    pub(crate) hold_sends: Cell<bool>,
    /// Data-plane messages held until batch `.0` is durable, per destination shard, in
    /// order; `held` counts them all.
    outbox: RefCell<Vec<std::collections::VecDeque<(u64, ShardMsg)>>>,
    held: Cell<usize>,
    /// Woken after each commit (held data released, the disk may have room again).
    pub(crate) committed: crate::notify::WaitList,
    /// Set by the shard's runtime once nothing more will be appended (shutdown): the
    /// commit loop writes what is left and ends.
    pub(crate) finish: Cell<bool>,
    /// This shard's share of `persistence.max_disk_bytes` (0: none).
    max_disk: u64,
    /// Per shard: its log is over its share of `max_disk_bytes`, or its commits fail. Set
    /// by each shard for itself, read by all: a publisher's shard refuses a message that
    /// any shard might have to write down. (The one state shards share: a flag each.)
    pressure: std::sync::Arc<[std::sync::atomic::AtomicBool]>,
    shard: usize,
    /// The log's size after the last commit.
    disk_bytes: Cell<u64>,
    /// A commit is failing (being retried).
    failing: Cell<bool>,
    /// When compaction may be tried again after one failed or was not worth it (log size).
    compact_retry_at: Cell<u64>,
    /// When a compaction may be tried again while over `max_disk_bytes`.
    next_disk_try: Cell<std::time::Instant>,
    /// Where a message is encoded before it is framed (reused).
    scratch: RefCell<BytesMut>,
    /// Records appended so far that a connection's output must wait for even when it is
    /// not the answer to the client's packet (see [`Shard::durable_point`]): a QoS 2
    /// delivery's packet id, a PUBREL owed.
    strict: Cell<u64>,
    /// The last ingress number used (see [`Durable::ingress`]).
    last_ingress: Cell<u64>,
    /// The ingress of the message being routed or delivered now, 0: none. Set around a
    /// routing step so that its deliveries and retained store are written down with it.
    pub(crate) routing_ingress: Cell<u64>,
    /// Ingresses not yet routed durably everywhere: ingress -> (publisher, message); a
    /// compaction writes them down again.
    inbound: RefCell<std::collections::HashMap<u64, (ByteString, Message)>>,
    /// Deliveries of an ingress made lately (sessions, share groups, the retained store),
    /// newest last, at most `RECENT`: a compaction keeps them, since their ingress may not
    /// be routed durably yet when the delivery itself has ended.
    recent: RefCell<std::collections::VecDeque<(u64, ByteString)>>,
}

/// How many deliveries of an ingress a shard remembers for its compactions: far more than
/// can be made between another shard's commit and its `Routed` record's.
const RECENT: usize = 65_536;

/// How long the commit loop waits, once woken, for more of the same turn's records when
/// the last batch was large (group commit under load; see [`commit_loop`]).
const LINGER: Duration = Duration::from_micros(100);

/// Records in the last batch from which the commit loop lingers.
const LINGER_AFTER: u64 = 32;

/// Data-plane messages held for other shards (see [`Shard::hold_data`]) beyond which
/// publishers are held back until a commit releases them.
const OUTBOX_LIMIT: usize = 65_536;

/// The one-byte tag of batch `n` (see the module docs).
fn tag(n: u64) -> u8 {
    (n % 255) as u8 + 1
}

impl Durable {
    pub(crate) fn new(
        cfg: &crate::config::Persistence,
        shard: usize,
        shards: usize,
        pressure: std::sync::Arc<[std::sync::atomic::AtomicBool]>,
        last_message: u64,
        file: (u64, u64),
        snapshot_bytes: u64,
    ) -> Durable {
        // Unique over shards and restarts: the epoch (one per start), the shard, a count.
        let base = ((file.0 & 0xFFFF) << 48) | (((shard as u64) & 0xFF) << 40);
        Durable {
            mode: cfg.mode,
            sync_interval: Duration::from_millis(cfg.sync_interval),
            compact_bytes: cfg.compact_bytes,
            frames: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::new()),
            appended: Cell::new(0),
            building: Cell::new(1),
            durable: Cell::new(0),
            last_message: Cell::new(last_message),
            gated: RefCell::new(Vec::new()),
            owed: RefCell::new(Vec::new()),
            work: Notify::default(),
            flows: RefCell::new(FlowLog::off()),
            snapshot_bytes: Cell::new(snapshot_bytes),
            file: Cell::new(file),
            hold_sends: Cell::new(false),
            outbox: RefCell::new((0..shards).map(|_| Default::default()).collect()),
            held: Cell::new(0),
            committed: crate::notify::WaitList::default(),
            finish: Cell::new(false),
            max_disk: cfg.max_disk_bytes / shards.max(1) as u64,
            pressure,
            shard,
            disk_bytes: Cell::new(snapshot_bytes),
            failing: Cell::new(false),
            compact_retry_at: Cell::new(0),
            next_disk_try: Cell::new(std::time::Instant::now()),
            scratch: RefCell::new(BytesMut::new()),
            strict: Cell::new(0),
            last_ingress: Cell::new(base),
            routing_ingress: Cell::new(0),
            inbound: RefCell::new(std::collections::HashMap::new()),
            recent: RefCell::new(std::collections::VecDeque::new()),
        }
    }

    /// Appends a record to the batch being built. A record too large for a frame (it
    /// cannot be: messages are bounded by `max_packet_size`) is logged and left out.
    pub(crate) fn append(&self, r: &Record) {
        if let Err(e) = r.write(&mut self.frames.borrow_mut()) {
            tracing::error!(error = %e, kind = r.kind(), "log record not written");
            return;
        }
        self.appended.set(self.appended.get() + 1);
        self.work.notify();
    }

    /// Records appended so far.
    pub(crate) fn appended(&self) -> u64 {
        self.appended.get()
    }

    /// Records appended so far that deliveries must wait for (see
    /// [`Shard::durable_point`]).
    pub(crate) fn strict_marks(&self) -> u64 {
        self.strict.get()
    }

    /// Whether new durable work is refused (see `persistence.max_disk_bytes`): the log is
    /// over this shard's share of the limit, or commits are failing (so that what waits
    /// for the disk cannot grow without bound).
    pub(crate) fn refusing(&self) -> bool {
        self.pressure
            .iter()
            .any(|p| p.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether a compaction that would leave about `live` bytes is worth it for a log of
    /// `tail` bytes: it halves the log, or it brings a log over `max_disk_bytes` back
    /// under.
    pub(crate) fn compaction_worth(&self, live: u64, tail: u64) -> bool {
        live.saturating_mul(2) <= tail
            || (self.over_disk() && live.saturating_mul(10) < self.max_disk.saturating_mul(9))
    }

    /// Whether this shard's log is over its share of `max_disk_bytes`.
    fn over_disk(&self) -> bool {
        self.max_disk != 0 && self.disk_bytes.get() > self.max_disk
    }

    /// Publishes this shard's own state for [`Durable::refusing`].
    fn update_pressure(&self) {
        let over = self.failing.get() || self.over_disk();
        if self.over_disk() {
            // The commit loop tries a compaction at once.
            self.work.notify();
        }
        if let Some(p) = self.pressure.get(self.shard) {
            // Written only when it changes: every shard reads these flags.
            if p.load(std::sync::atomic::Ordering::Relaxed) != over {
                p.store(over, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(shard = self.shard, log_bytes = self.disk_bytes.get(), limit = self.max_disk, failing = self.failing.get(), over, "log pressure changed: new QoS 1/2 messages and persistent subscriptions are {}", if over { "refused" } else { "accepted again" });
            }
        }
    }

    /// Messages held for other shards until a commit: beyond this many, publishers are held
    /// back as when the mesh is congested.
    pub(crate) fn outbox_full(&self) -> bool {
        self.held.get() >= OUTBOX_LIMIT
    }

    /// Whether acknowledgements wait for the disk.
    pub(crate) fn is_sync(&self) -> bool {
        self.mode == PersistMode::Sync
    }

    /// `conn`'s output waits for the batch being built (mode `sync`).
    pub(crate) fn gate(&self, conn: &Rc<ConnShared>) {
        if !self.is_sync() {
            return;
        }
        let t = tag(self.building.get());
        if conn.durable_wait.get() != t {
            conn.durable_wait.set(t);
            self.gated.borrow_mut().push(conn.clone());
        }
    }

    /// The last message number used.
    pub(crate) fn last_message(&self) -> u64 {
        self.last_message.get()
    }

    /// Numbers up to `n` are taken (by a compaction's snapshot).
    pub(crate) fn used_messages(&self, n: u64) {
        self.last_message.set(self.last_message.get().max(n));
    }

    /// Writes `msg` down once and returns its number (0 if it could not be written).
    pub(crate) fn message(&self, msg: &Message) -> u64 {
        let id = self.last_message.get() + 1;
        // Encoded into a scratch buffer the shard keeps, then copied once into the frame.
        let mut scratch = self.scratch.borrow_mut();
        scratch.clear();
        if !encode_message_into(msg, &mut scratch) {
            return 0;
        }
        let expires_ms = msg.expires.map_or(0, |e| {
            let left = e.saturating_duration_since(std::time::Instant::now());
            wall_ms(std::time::SystemTime::now() + left).max(1)
        });
        if let Err(e) =
            Record::write_message(&mut self.frames.borrow_mut(), id, expires_ms, &scratch)
        {
            tracing::error!(error = %e, topic = %msg.topic, "message not written to the log");
            return 0;
        }
        // A large message's buffer is not kept.
        if scratch.capacity() > 64 << 10 {
            *scratch = BytesMut::new();
        }
        self.last_message.set(id);
        self.appended.set(self.appended.get() + 1);
        self.work.notify();
        id
    }

    /// Writes down a QoS 2 message persistent session `client_id` published, before it is
    /// routed: its ingress number, which its deliveries carry, until [`Durable::routed`].
    pub(crate) fn ingress(&self, client_id: &ByteString, msg: &Message) -> u64 {
        let id = self.message(msg);
        if id == 0 {
            return 0;
        }
        let ingress = self.last_ingress.get() + 1;
        self.last_ingress.set(ingress);
        self.append(&Record::Ingress {
            ingress,
            client_id: client_id.clone(),
            msg: id,
        });
        self.inbound
            .borrow_mut()
            .insert(ingress, (client_id.clone(), msg.clone()));
        ingress
    }

    /// Every delivery of `ingress` is durable.
    pub(crate) fn routed(&self, ingress: u64) {
        if ingress != 0 && self.inbound.borrow_mut().remove(&ingress).is_some() {
            self.append(&Record::Routed { ingress });
        }
    }

    /// Ingresses not routed durably yet (for a compaction).
    pub(crate) fn unrouted(&self) -> Vec<(u64, ByteString, Message)> {
        self.inbound
            .borrow()
            .iter()
            .map(|(i, (c, m))| (*i, c.clone(), m.clone()))
            .collect()
    }

    /// Deliveries of an ingress that ended lately (for a compaction).
    pub(crate) fn recent_ingress(&self) -> Vec<(u64, ByteString)> {
        self.recent.borrow().iter().cloned().collect()
    }

    /// `who` (a session, a share group, the retained store) had a delivery of `ingress`.
    pub(crate) fn seen(&self, ingress: u64, who: &ByteString) {
        if ingress != 0 {
            let mut r = self.recent.borrow_mut();
            if r.len() >= RECENT {
                r.pop_front();
            }
            r.push_back((ingress, who.clone()));
        }
    }

    /// Appends what a persistent session (`client_id`) reported into [`Durable::flows`].
    pub(crate) fn write_flows(&self, client_id: &ByteString) {
        let mut flows = self.flows.borrow_mut();
        for f in flows.drain() {
            let c = client_id.clone();
            let r = match f {
                Flow::Delivered {
                    durable,
                    qos,
                    retain,
                    identifiers,
                    share,
                } => {
                    let share = share.map_or_else(ByteString::new, |s| s.as_bytestring().clone());
                    self.seen(durable.ingress, &c);
                    if !share.is_empty() {
                        self.seen(durable.ingress, &share);
                    }
                    Record::Delivered {
                        client_id: c,
                        msg: durable.msg,
                        qos: qos as u8,
                        retain,
                        identifiers: identifiers.to_vec(),
                        share,
                        ingress: durable.ingress,
                    }
                }
                Flow::Sent {
                    durable,
                    id,
                    exactly_once,
                } => {
                    if exactly_once {
                        self.strict.set(self.strict.get() + 1);
                    }
                    Record::Sent {
                        client_id: c,
                        msg: durable,
                        packet_id: id.get(),
                    }
                }
                Flow::Released(id) => {
                    self.strict.set(self.strict.get() + 1);
                    Record::Released {
                        client_id: c,
                        packet_id: id.get(),
                    }
                }
                Flow::Finished(id) => Record::Finished {
                    client_id: c,
                    packet_id: id.get(),
                },
                Flow::Unqueued(r) => Record::Unqueued {
                    client_id: c,
                    msg: r.msg,
                },
                Flow::Qos2Received(id) => Record::Qos2Received {
                    client_id: c,
                    packet_id: id.get(),
                },
                Flow::Qos2Ended(id) => Record::Qos2Ended {
                    client_id: c,
                    packet_id: id.get(),
                },
            };
            self.append(&r);
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn wall_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Appends a message to `out` as the log keeps it: a 5.0 PUBLISH (topic, payload, QoS,
/// RETAIN, properties); false (logged) if it does not encode.
pub(crate) fn encode_message_into(msg: &Message, out: &mut BytesMut) -> bool {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: (msg.qos != QoS::AtMostOnce)
            .then(|| PacketId::new(1))
            .flatten(),
        properties: msg.properties.clone(),
        payload: msg.payload.clone(),
    });
    match p.encode(ProtocolVersion::V5, out) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, topic = %msg.topic, "message not written to the log");
            false
        }
    }
}

impl Shard {
    /// The persistence state, when the shard keeps a log.
    #[inline]
    pub(crate) fn durable(&self) -> Option<&Durable> {
        self.persist.as_deref()
    }

    /// Moves the session store's recorded changes into the log (before any flow or
    /// message record that follows them).
    pub(crate) fn journal_changes(&self, sessions: &mut SessionStore) {
        if let Some(d) = self.durable() {
            if sessions.has_changes() {
                for c in sessions.take_changes() {
                    d.append(&c.record());
                }
            }
        }
    }

    /// The end of a step done for `conn` (a packet, an attach): store changes go to the
    /// log, and `conn`'s output waits for what the step wrote since `before` (see
    /// [`Shard::log_marks`]): for an answer to the client's packet (PUBACK, PUBREC,
    /// PUBCOMP, SUBACK, UNSUBACK, CONNACK), anything; otherwise only what a delivery must
    /// not precede: a QoS 2 delivery's packet id, a PUBREL. (A QoS 1 delivery sent before
    /// it is on disk can only be sent again after a crash, which QoS 1 allows; its
    /// publisher's ack waits for it.)
    pub(crate) fn durable_point(&self, conn: &Rc<ConnShared>, before: (u64, u64), answer: bool) {
        let Some(d) = self.durable() else {
            return;
        };
        self.journal_changes(&mut self.state.borrow_mut().sessions);
        if (answer && d.appended() != before.0) || d.strict.get() != before.1 {
            d.gate(conn);
        }
    }

    /// Where the log stands (records appended, and those deliveries must wait for), for
    /// [`Shard::durable_point`].
    pub(crate) fn log_marks(&self) -> (u64, u64) {
        self.durable()
            .map_or((0, 0), |d| (d.appended(), d.strict.get()))
    }

    /// Another shard (`from`) waits for `token` to learn that what this shard did for its
    /// message since `before` is durable: answered now if nothing was written (or the
    /// mode does not wait), else once the batch is on disk.
    pub(crate) fn confirm(&self, from: usize, token: u64, before: u64) {
        match self.durable() {
            Some(d) if d.is_sync() && d.appended() != before => {
                self.journal_changes(&mut self.state.borrow_mut().sessions);
                d.owed.borrow_mut().push((d.building.get(), from, token));
            }
            _ => {
                self.send_control(from, ShardMsg::RetainStored { token });
            }
        }
    }

    /// The batch holding what this shard wrote since `before` (0: nothing, or the mode
    /// does not wait), for a confirmation given later ([`Shard::confirm_after`]).
    pub(crate) fn own_batch(&self, before: u64) -> u64 {
        match self.durable() {
            Some(d) if d.is_sync() && d.appended() != before => {
                self.journal_changes(&mut self.state.borrow_mut().sessions);
                d.building.get()
            }
            _ => 0,
        }
    }

    /// Answers `token` to shard `from` once batch `batch` (0: none) is durable.
    pub(crate) fn confirm_after(&self, from: usize, token: u64, batch: u64) {
        match self.durable() {
            Some(d) if batch > d.durable.get() => d.owed.borrow_mut().push((batch, from, token)),
            _ => {
                self.send_control(from, ShardMsg::RetainStored { token });
            }
        }
    }

    /// A data-plane message for `dest`, handed back unless it must wait for the batch
    /// being built: while a QoS 2 message's incoming id is not durable, no other shard may
    /// deliver it (after a crash the publisher sends it again, and a delivery made
    /// elsewhere before the id was on disk would be made a second time). Later messages
    /// for the same shard queue behind held ones, so each channel keeps its order.
    pub(crate) fn hold_data(&self, dest: usize, msg: ShardMsg) -> Option<ShardMsg> {
        let Some(d) = self.durable() else {
            return Some(msg);
        };
        let mut outbox = d.outbox.borrow_mut();
        let Some(q) = outbox.get_mut(dest) else {
            return Some(msg);
        };
        if !d.hold_sends.get() && q.is_empty() {
            return Some(msg);
        }
        q.push_back((d.building.get(), msg));
        d.held.set(d.held.get() + 1);
        // Released by the commit of the batch being built, even an empty one.
        d.work.notify();
        None
    }

    /// Counts and logs (at most once a second) something refused because the log is over
    /// `max_disk_bytes` or failing.
    pub(crate) fn persist_refused(&self, what: &'static str) {
        self.count(|m| m.persist_refused += 1);
        if self.drop_logged.due() {
            let total = self.summary().persist_refused;
            tracing::warn!(shard = self.id, refused = what, refused_total = total, "log over persistence.max_disk_bytes or failing: refused (logged at most once a second)");
        }
    }

    /// Publishers wait: the channels to other shards are full, or too much waits in the
    /// outbox for a commit.
    pub(crate) fn data_congested(&self) -> bool {
        self.mesh.congested() || self.durable().is_some_and(Durable::outbox_full)
    }

    /// Completes when [`Shard::data_congested`] no longer holds.
    pub(crate) async fn until_data_uncongested(&self) {
        loop {
            if self.mesh.congested() {
                self.mesh.wait_uncongested().await;
            } else if let Some(d) = self.durable().filter(|d| d.outbox_full()) {
                d.committed.wait().await;
            } else {
                return;
            }
        }
    }

    /// The ingress of the message being routed now (0: none).
    pub(crate) fn routing_ingress(&self) -> u64 {
        self.durable().map_or(0, |d| d.routing_ingress.get())
    }

    /// Runs `f` (a routing or delivery step) with `ingress` as the message's ingress.
    pub(crate) fn with_ingress<T>(&self, ingress: u64, f: impl FnOnce() -> T) -> T {
        match self.durable() {
            Some(d) if ingress != 0 => {
                let was = d.routing_ingress.replace(ingress);
                let r = f();
                d.routing_ingress.set(was);
                r
            }
            _ => f(),
        }
    }

    /// Records appended so far (0 without a log).
    pub(crate) fn appended(&self) -> u64 {
        self.durable().map_or(0, Durable::appended)
    }

    /// Runs `f` on `session` with the flow log it reports into: the shard's, switched on,
    /// for a persistent session of a shard that keeps a log; one that records nothing
    /// (and costs nothing) otherwise. What was reported is appended afterwards.
    pub(crate) fn with_flows<T>(
        &self,
        session: &mut Session,
        f: impl FnOnce(&mut Session, &mut FlowLog) -> T,
    ) -> T {
        match self.durable() {
            Some(d) if session.is_persistent() => {
                let r = {
                    let mut log = d.flows.borrow_mut();
                    log.set(true);
                    f(session, &mut log)
                };
                if !d.flows.borrow().is_empty() {
                    d.write_flows(session.client_id());
                }
                r
            }
            _ => f(session, &mut FlowLog::off()),
        }
    }
}

/// A shard's commit task: takes what was appended as one batch, writes and syncs it
/// (mode `sync`: as soon as there is something; `periodic`: every `sync_interval`), then
/// lets the connections waiting for it write and answers the shards waiting for it.
/// Returns once the runtime sets `finish`, after a last commit.
pub(crate) async fn commit_loop(shard: Rc<Shard>, mut journal: Journal) {
    let Some(d) = shard.durable() else {
        return;
    };
    let mut backoff = Duration::from_millis(10);
    let mut failures = 0u64;
    // Records in the last batch committed.
    let mut last_batch = 0u64;
    let mut appended_then = d.appended();
    // A log restored over its share refuses from the start.
    d.update_pressure();
    loop {
        let finishing = d.finish.get();
        if !finishing {
            if d.is_sync() {
                // Woken by an append, and at least once a second to look at `finish`.
                let woken = d.work.notified();
                let tick = glommio::timer::sleep(Duration::from_secs(1));
                futures::pin_mut!(woken, tick);
                futures::future::select(woken, tick).await;
                // Under load, a moment more gathers what is being processed right now
                // into the same commit (measured: one-to-one QoS 1 at 256 in flight went
                // from about 215k to 250k msgs/s); a lone message is not made to wait.
                if last_batch >= LINGER_AFTER {
                    glommio::timer::sleep(LINGER).await;
                }
            } else {
                // In steps, so that `finish` is seen within 100 ms; always at least one.
                let until = std::time::Instant::now() + d.sync_interval;
                loop {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    glommio::timer::sleep(left.min(Duration::from_millis(100))).await;
                    if d.finish.get() || std::time::Instant::now() >= until {
                        break;
                    }
                }
            }
        }
        shard.journal_changes(&mut shard.state.borrow_mut().sessions);
        // A log grown past its bound is replaced by a snapshot, which stands for this
        // batch (after a compaction found not worth it or failed, not before the log grew
        // by half the bound again). Over `max_disk_bytes`, one is tried at most every 200
        // ms whatever the growth: as queues drain, it may bring the log back under.
        let tail = journal.tail();
        let now = std::time::Instant::now();
        let due = tail > d.compact_bytes.max(2 * d.snapshot_bytes.get())
            && tail >= d.compact_retry_at.get();
        let disk_try = d.over_disk() && now >= d.next_disk_try.get();
        if d.frames.borrow().is_empty()
            && d.gated.borrow().is_empty()
            && d.owed.borrow().is_empty()
            && d.held.get() == 0
            && !disk_try
        {
            if finishing {
                break;
            }
            continue;
        }
        let spare = std::mem::take(&mut *d.spare.borrow_mut());
        let mut frames = std::mem::replace(&mut *d.frames.borrow_mut(), spare);
        let gated = std::mem::take(&mut *d.gated.borrow_mut());
        let batch = d.building.get();
        d.building.set(batch + 1);
        last_batch = d.appended() - appended_then;
        appended_then = d.appended();
        let compacted = (due || disk_try) && super::recovery::compact(&shard, &mut journal).await;
        if compacted {
            d.compact_retry_at.set(0);
        } else if due {
            d.compact_retry_at.set(tail + d.compact_bytes / 2);
        }
        if disk_try {
            // Whatever came of it: a log still over its share after a compaction must not
            // be compacted again at once.
            d.next_disk_try.set(now + Duration::from_millis(200));
        }
        if !frames.is_empty() && !compacted {
            let records = frames.len() as u64;
            frame::seal(&mut frames, 0, frame::BLOCK);
            loop {
                match journal.commit_sealed(&frames).await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        d.failing.set(true);
                        d.update_pressure();
                        shard.count(|m| m.persist_errors += 1);
                        if failures == 1 || failures.is_power_of_two() {
                            tracing::error!(error = %e, path = %journal.path().display(), failures, "log commit failed: acknowledgements held and new QoS 1/2 messages refused, retrying");
                        }
                        if d.finish.get() && failures > 3 {
                            tracing::error!(path = %journal.path().display(), "shutting down with a log commit that failed: its changes are lost");
                            journal.close().await;
                            return;
                        }
                        glommio::timer::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            if failures > 0 {
                tracing::warn!(failures, "log commit succeeded again");
                failures = 0;
                backoff = Duration::from_millis(10);
                d.failing.set(false);
            }
            shard.count(|m| {
                m.persist_commits += 1;
                m.persist_bytes += records;
            });
        }
        // Kept for a later batch, unless a burst made it large.
        if frames.capacity() <= 8 << 20 {
            frames.clear();
            *d.spare.borrow_mut() = frames;
        }
        d.disk_bytes.set(journal.tail());
        d.update_pressure();
        d.durable.set(batch);
        let t = tag(batch);
        for c in gated {
            if c.durable_wait.get() == t {
                c.durable_wait.set(0);
                c.wake.notify();
            }
        }
        let owed: Vec<(u64, usize, u64)> = {
            let mut o = d.owed.borrow_mut();
            let (now, later): (Vec<_>, Vec<_>) = o.drain(..).partition(|(b, _, _)| *b <= batch);
            *o = later;
            now
        };
        if !owed.is_empty() {
            for (_, from, token) in owed {
                shard.send_control(from, ShardMsg::RetainStored { token });
            }
            shard.control.flush();
        }
        // Data held for this batch goes to the other shards now, in order.
        let mut released = 0;
        {
            let mut outbox = d.outbox.borrow_mut();
            for (dest, q) in outbox.iter_mut().enumerate() {
                while q.front().is_some_and(|(b, _)| *b <= batch) {
                    let Some((_, msg)) = q.pop_front() else {
                        break;
                    };
                    released += 1;
                    if let Err(msg) = shard.mesh.push(dest, msg) {
                        shard.undeliverable(dest, &msg);
                    }
                }
            }
        }
        if released > 0 {
            d.held.set(d.held.get() - released);
            shard.mesh.flush();
        }
        d.committed.wake_all();
        if finishing && d.frames.borrow().is_empty() && d.held.get() == 0 {
            break;
        }
    }
    journal.close().await;
}
