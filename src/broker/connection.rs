//! What a shard knows about one of its connections, shared between the connection's task
//! (which owns the socket) and the code that delivers to it; why a connection ends.
//!
//! **Owns:** the per-connection output buffer, wake flag, close request, keep-alive clock,
//! congestion marks and held packets.
//!
//! **Must not touch:** the session (the store owns it) and the socket (the task owns it).

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::time::Instant;

use bytes::BytesMut;

use super::store::SessionId;
use crate::notify::Notify;
use crate::protocol::{Packet, ProtocolVersion, Will};

/// A connection of this shard: slab slot plus a generation from a per-shard counter, so an
/// id held across an `.await` can never name the connection that reuses its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnId {
    slot: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(slot: usize, generation: u32) -> ConnId {
        ConnId {
            // Connections are bounded by `max_connections`, far below 2^32.
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            generation,
        }
    }

    pub(crate) fn slot(self) -> usize {
        self.slot as usize
    }

    pub(crate) fn generation(self) -> u32 {
        self.generation
    }
}

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
    pub(crate) fn publishes_will(self) -> bool {
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
    /// Its session once CONNECT was accepted.
    pub session: Cell<Option<SessionId>>,
    /// The will, published if the connection ends without DISCONNECT.
    /// Boxed: most clients have none, and this struct exists per connection.
    pub will: RefCell<Option<Box<Will>>>,
    /// Protocol version from CONNECT.
    pub version: Cell<ProtocolVersion>,
    /// The socket, for shutting it down on takeover while the task still owns it.
    pub fd: RawFd,
    /// False once the connection has ended (`Shard::connection_closed`): from then on
    /// nothing is written to it, it is never congested, and the task has let go of the
    /// socket (so `fd` may name another file).
    pub open: Cell<bool>,
    /// Responses held back so that acks keep their order [MQTT-4.6.0-2] while one of them
    /// waits (the ack of a retained PUBLISH for the topic's owner shard to store it, a
    /// SUBACK for every shard to route its filters): see [`super::gate`].
    pub deferred: RefCell<std::collections::VecDeque<Deferred>>,
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
    /// Non-zero while what `out` holds reflects a change not yet on disk (persistence mode
    /// `sync`): the tag of the log batch it waits for (see [`super::durable`]); the task
    /// writes nothing until the batch is durable and the tag cleared. One byte, which the
    /// struct's padding had spare.
    pub durable_wait: Cell<u8>,
    /// The transport frames the bytes on the socket (TLS records, WebSocket frames):
    /// nothing may be written to `fd` directly, only through the task's stream (a
    /// takeover's DISCONNECT is not sent then). Set when the serving task starts.
    pub framed: Cell<bool>,
    /// The listener the client came through (its place in the configuration, as in
    /// [`crate::observe::ShardStats::connects`]), for the connected-clients gauge. Set
    /// when the serving task starts; two bytes of the struct's padding.
    pub listener: Cell<u16>,
    /// What few connections need: held packets and 5.0 topic aliases ([`Rare`]). Boxed
    /// and absent while empty: almost every connection never holds anything, 3.x ones
    /// never have aliases, and this struct exists per connection.
    rare: RefCell<Option<Box<Rare>>>,
}

/// Where 5.0 topic `alias` (1 ..=) is kept in `Rare::aliases`.
fn alias_slot(alias: u16) -> Option<usize> {
    usize::from(alias).checked_sub(1)
}

/// Per-connection state most connections never need (see `ConnShared::rare`).
#[derive(Debug, Default)]
struct Rare {
    /// Packets of a connection that is behind (congested or slow), read while the shard
    /// holds publishers back so that its acks can drain its own window, but held, in
    /// order and unacknowledged, because they are PUBLISHes or must stay behind one. At
    /// most `max_write_buffer` bytes, each packet counted with its own size plus topic and
    /// payload (`held_cost`); beyond that the connection is not read until the shard
    /// drains.
    held: Held,
    /// 5.0 topic aliases the client set, by alias - 1 (at most `max_topic_alias`, each a
    /// copy of its topic name): they live as long as the connection [MQTT-3.3.2-7].
    aliases: Vec<Option<crate::protocol::TopicName>>,
    /// 5.0 enhanced authentication: the method, for re-authentication (see
    /// [`super::auth`]).
    auth: Option<Box<super::auth::AuthState>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.held.packets.is_empty() && self.aliases.is_empty() && self.auth.is_none()
    }
}

/// An answer in the acknowledgement gate (see [`super::gate`]).
#[derive(Debug)]
pub(crate) struct Deferred {
    /// What it waits for, or waited for (it keeps its token once released, so that what
    /// follows a SUBACK can tell whether that SUBACK has left the gate); None for an
    /// answer that only queues behind others.
    pub token: Option<u64>,
    /// Released: written as soon as everything before it is.
    pub ready: bool,
    /// The encoded answer.
    pub bytes: BytesMut,
}

/// What a connection holds back (see `Rare::held`).
#[derive(Debug, Default)]
struct Held {
    packets: std::collections::VecDeque<Packet>,
    /// What `packets` cost (`held_cost`: packet size plus topic and payload).
    bytes: usize,
}

impl ConnShared {
    /// Whether packets are held.
    pub fn holding(&self) -> bool {
        self.rare
            .borrow()
            .as_ref()
            .is_some_and(|r| !r.held.packets.is_empty())
    }

    /// What the held packets cost (packet size plus topic and payload).
    pub fn held_bytes(&self) -> usize {
        self.rare.borrow().as_ref().map_or(0, |r| r.held.bytes)
    }

    /// Holds a packet (last in order) that costs `cost` bytes.
    pub fn hold(&self, p: Packet, cost: usize) {
        let mut r = self.rare.borrow_mut();
        let h = &mut r.get_or_insert_with(Box::default).held;
        h.bytes += cost;
        h.packets.push_back(p);
    }

    /// The oldest held packet and its cost, to be handled now.
    pub fn unhold(&self, cost: impl Fn(&Packet) -> usize) -> Option<Packet> {
        let mut slot = self.rare.borrow_mut();
        let r = slot.as_mut()?;
        if r.held.packets.is_empty() {
            return None;
        }
        let p = r.held.packets.pop_front();
        if let Some(p) = &p {
            r.held.bytes = r.held.bytes.saturating_sub(cost(p));
        }
        if r.held.packets.is_empty() {
            r.held = Held::default();
            if r.is_empty() {
                *slot = None;
            }
        }
        p
    }

    /// Forgets what is held and the aliases (the connection is gone).
    pub fn clear_held(&self) {
        *self.rare.borrow_mut() = None;
    }

    /// The topic the client mapped to 5.0 topic `alias` (1 ..= the maximum), if any.
    pub fn topic_alias(&self, alias: u16) -> Option<crate::protocol::TopicName> {
        let r = self.rare.borrow();
        r.as_ref()?.aliases.get(alias_slot(alias)?)?.clone()
    }

    /// The client maps topic `alias` (1 ..= the maximum, checked by the caller) to `topic`
    /// from now on.
    pub fn set_topic_alias(&self, alias: u16, topic: crate::protocol::TopicName) {
        let Some(i) = alias_slot(alias) else {
            return;
        };
        let mut r = self.rare.borrow_mut();
        let aliases = &mut r.get_or_insert_with(Box::default).aliases;
        if aliases.len() <= i {
            aliases.resize(i + 1, None);
        }
        if let Some(a) = aliases.get_mut(i) {
            *a = Some(topic);
        }
    }

    /// Takes the enhanced authentication state out (to be put back with `put_auth`).
    pub fn take_auth(&self) -> Option<Box<super::auth::AuthState>> {
        self.rare.borrow_mut().as_mut()?.auth.take()
    }

    /// Keeps the enhanced authentication state (see [`super::auth`]).
    pub fn put_auth(&self, state: Box<super::auth::AuthState>) {
        self.rare.borrow_mut().get_or_insert_with(Box::default).auth = Some(state);
    }

    /// Whether topic `alias` already stands for `topic` (a client that sends both every
    /// time need not have its topic copied again).
    pub fn topic_alias_is(&self, alias: u16, topic: &str) -> bool {
        self.topic_alias(alias).as_deref() == Some(topic)
    }
}

impl ConnShared {
    /// Bytes waiting to reach the socket.
    pub fn pending_output(&self) -> usize {
        self.out.borrow().len() + self.writing.get()
    }

    /// Whether the answer deferred under `token` is still in the gate.
    pub fn in_gate(&self, token: u64) -> bool {
        self.deferred
            .borrow()
            .iter()
            .any(|d| d.token == Some(token))
    }
}

impl ConnShared {
    /// A new connection on socket `fd`, with the connect timeout as its first keep alive.
    pub fn new(fd: RawFd, connect_timeout: u16) -> ConnShared {
        ConnShared {
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
            rare: RefCell::new(None),

            congested_since: Cell::new(Instant::now()),
            slow: Cell::new(false),
            durable_wait: Cell::new(0),
            framed: Cell::new(false),
            listener: Cell::new(0),
        }
    }

    /// Whether the connection still serves its client: not ended and not asked to close.
    pub fn is_live(&self) -> bool {
        self.open.get() && self.close.get().is_none()
    }

    /// Asks the connection to close (first reason wins).
    pub fn request_close(&self, reason: CloseReason) {
        if self.close.get().is_none() {
            self.close.set(Some(reason));
        }
        self.wake.notify();
    }
}
