//! The per-client session state machine (server side).
//!
//! **Owns:** everything MQTT remembers about one client between packets: its subscriptions,
//! the outgoing QoS 1/2 flows (in-flight window, packet ids, the queue behind the window),
//! the incoming QoS 2 packet ids awaiting PUBREL (exactly-once), and the rules that need
//! that history (a second CONNECT, an ack for an unknown id, packets a server never
//! receives).
//!
//! **Must not touch:** sockets, timers, the topic index, other sessions or other shards.
//! Input is decoded packets and deliveries. Output is of two kinds, kept apart because
//! they are ordered differently:
//! - the session's own traffic (PUBLISH frames of deliveries and resends, our PUBRELs),
//!   appended to the connection's write buffer at once, in the order it happens;
//! - the [`Response`] to the client's packet (PUBACK, PUBREC, PUBCOMP, UNSUBACK,
//!   PINGRESP), returned as a value with at most one [`Action`] for the shard (route a
//!   message, change subscriptions, close). The shard's acknowledgement gate writes
//!   responses in the order of the packets they answer, and may hold one back (until a
//!   retained message is stored on its owner shard, later until it is on disk) without
//!   holding back deliveries.
//!
//! Because it does no I/O it is tested by feeding packets and reading bytes.
//!
//! ## Limits and what happens at them
//! - In-flight window (`max_inflight`): outgoing QoS 1/2 messages beyond it wait in the
//!   queue, in order.
//! - Memory: the session keeps the messages it is given as they are (a clone shares their
//!   bytes). The broker gives it only messages that own their memory (routing copies a
//!   kept message once out of the publisher's read buffer, shared by every subscriber), so
//!   what a queue holds is what [`Message::cost`] counts; a caller that hands it slices of
//!   a larger buffer pins that buffer for as long as the message is kept.
//! - Queue (`max_queued_messages`, `max_queued_bytes`): a QoS 1/2 delivery that does not fit
//!   is dropped and counted ([`DeliverOutcome::Dropped`]); the shard logs it with the client
//!   id. QoS 0 is never queued behind the window; it is written at once or, for an offline
//!   session, dropped (MQTT allows but does not require storing QoS 0 [MQTT-3.1.2-5]).
//! - Incoming QoS 2 ids awaiting PUBREL: at most `max_inflight_incoming`; more is a protocol
//!   violation by the client (it ignores our window).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::protocol::ProcessHasher;
use crate::protocol::{
    encode_publish_header_aliased, Ack, Packet, PacketId, PacketType, Properties, ProtocolVersion,
    Publish, QoS, ReasonCode, SubscriptionOptions, TopicAliases, TopicFilter, TopicName, UnsubAck,
};

/// An application message as it travels between sessions and shards. Plain `Send` data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: TopicName,
    /// Payload (a slice of the publisher's read buffer until something stores it).
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// 5.0 properties to forward (expiry, content type, user properties, ...).
    pub properties: Properties,
    /// When its 5.0 Message Expiry Interval runs out, counted from when the server
    /// received it; None: never. (An interval of 0, which the specification leaves open,
    /// expires on receipt: the message reaches no one and is not retained.) Deliveries carry what is left of the interval
    /// [MQTT-3.3.2-6]; a copy that has not started onward delivery by then is dropped
    /// [MQTT-3.3.2-5].
    pub expires: Option<std::time::Instant>,
}

impl Message {
    /// A message from a received PUBLISH.
    pub fn from_publish(p: Publish) -> Message {
        let expires = Message::expiry_of(&p.properties);
        Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            expires,
        }
    }

    /// When a message published now with these properties expires (their Message Expiry
    /// Interval from now), if ever.
    pub fn expiry_of(properties: &Properties) -> Option<std::time::Instant> {
        properties.message_expiry_interval.and_then(|s| {
            std::time::Instant::now().checked_add(std::time::Duration::from_secs(u64::from(s)))
        })
    }

    /// Whether its expiry interval has run out at `now`.
    pub fn expired(&self, now: std::time::Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// A copy that owns its memory (topic, payload and 5.0 properties), for anything kept
    /// beyond the current read turn (queues, retained store): a slice would pin the whole
    /// read buffer it came from.
    pub fn detached(&self) -> Message {
        // One allocation for topic and payload (each a slice of it), so the copy costs one
        // malloc, and its clones (in flight, queued, per shard) share one reference count.
        let t = self.topic.len();
        let mut b = bytes::BytesMut::with_capacity(t + self.payload.len());
        b.extend_from_slice(self.topic.as_bytes());
        b.extend_from_slice(&self.payload);
        let b = b.freeze();
        Message {
            topic: self.topic.rebased(b.slice(..t)),
            payload: b.slice(t..),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.detached(),
            expires: self.expires,
        }
    }

    /// Bytes this message accounts for in a queue: topic, payload and encoded properties,
    /// plus [`QUEUE_ENTRY_OVERHEAD`] for the entry itself, so that a queue of tiny (or
    /// empty) messages is bounded by `max_queued_bytes` too.
    pub fn cost(&self) -> usize {
        QUEUE_ENTRY_OVERHEAD
            + self.topic.len()
            + self.payload.len()
            + self.properties.encoded_len().unwrap_or(0)
    }
}

/// A session expiry interval that never ends (5.0 §3.1.2.11.2: 0xFFFFFFFF), and what a 3.x
/// persistent session gets unless the configuration caps it.
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// Session limits (from the broker configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Outgoing QoS 1/2 messages sent and not yet completely acknowledged.
    pub max_inflight: u16,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub max_inflight_incoming: u16,
    /// Messages waiting behind the in-flight window (or while offline).
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) waiting behind the window.
    pub max_queued_bytes: usize,
    /// Largest packet the client accepts (5.0 Maximum Packet Size; `u32::MAX`: no limit
    /// beyond the protocol's). A message whose PUBLISH would be larger is not sent to it.
    pub max_packet_out: u32,
    /// 5.0 topic aliases the session may use towards the client on its current
    /// connection (the client's Topic Alias Maximum, capped by the server); 0: none.
    pub max_topic_alias_out: u16,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_inflight: 128,
            max_inflight_incoming: 65_535,
            max_queued_messages: 1000,
            max_queued_bytes: 16 << 20,
            max_packet_out: u32::MAX,
            max_topic_alias_out: 0,
        }
    }
}

/// A protocol violation by the client, found with the help of session history. The
/// connection is closed (5.0: DISCONNECT with [`SessionError::reason_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A second CONNECT on a connection.
    #[error("second CONNECT on a connection [MQTT-3.1.0-2]")]
    SecondConnect,
    /// A packet type only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) or AUTH
    /// where no authentication method was negotiated.
    #[error("{0:?} is not a packet a client sends (§2.2.1)")]
    UnexpectedPacket(PacketType),
    /// More incoming QoS 2 flows than the window allows.
    #[error("client exceeded the incoming QoS 2 window (5.0 §4.9 Receive Maximum)")]
    ReceiveMaximumExceeded,
    /// A PUBLISH with a QoS above what the server supports.
    #[error("PUBLISH QoS above the server maximum [MQTT-3.2.2-11]")]
    QoSNotSupported,
    /// A QoS 0 PUBLISH whose payload is not the UTF-8 its Payload Format Indicator says.
    #[error("QoS 0 PUBLISH with Payload Format Indicator 1 and a payload that is not UTF-8")]
    PayloadFormatInvalid,
    /// A SUBSCRIBE with more than one Subscription Identifier (5.0 §3.8.2.1.2).
    #[error("SUBSCRIBE with more than one Subscription Identifier (5.0 §3.8.2.1.2)")]
    SubscriptionIdentifierRepeated,
    /// No Local on a shared subscription [MQTT-3.8.3-4].
    #[error("No Local set on a shared subscription [MQTT-3.8.3-4]")]
    NoLocalOnSharedSubscription,
}

impl SessionError {
    /// The 5.0 reason code for the DISCONNECT.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            SessionError::ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            SessionError::QoSNotSupported => ReasonCode::QOS_NOT_SUPPORTED,
            SessionError::PayloadFormatInvalid => ReasonCode::PAYLOAD_FORMAT_INVALID,
            _ => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// The answer to one of the client's packets, written by the shard's acknowledgement gate
/// so that answers keep the order of the packets [MQTT-4.6.0-2] [MQTT-4.6.0-3].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// PUBACK for a QoS 1 PUBLISH (5.0: with its reason code; 3.x has none).
    PubAck(PacketId, ReasonCode),
    /// PUBREC for a QoS 2 PUBLISH (also for a resend of one already forwarded).
    PubRec(PacketId, ReasonCode),
    /// PUBCOMP for a PUBREL (5.0: with Packet Identifier Not Found for an unknown id).
    PubComp(PacketId, ReasonCode),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGRESP.
    PingResp,
}

impl Response {
    /// 5.0: the PUBLISH this acknowledges matched no subscription (0x10, a success code:
    /// the flow goes on as usual) (5.0 §3.4.2.1).
    pub fn no_matching_subscribers(&mut self) {
        if let Response::PubAck(_, r) | Response::PubRec(_, r) = self {
            if *r == ReasonCode::SUCCESS {
                *r = ReasonCode::NO_MATCHING_SUBSCRIBERS;
            }
        }
    }

    /// 5.0: the PUBLISH this acknowledges is refused with `code` (0x80 or above), as the
    /// PUBACK's or PUBREC's reason code.
    pub fn refuse(&mut self, code: ReasonCode) {
        if let Response::PubAck(_, r) | Response::PubRec(_, r) = self {
            *r = code;
        }
    }

    /// Appends the packet to `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) {
        match self {
            Response::PubAck(id, reason) => write_ack_with(version, 0x40, *id, *reason, out),
            Response::PubRec(id, reason) => write_ack_with(version, 0x50, *id, *reason, out),
            Response::PubComp(id, reason) => write_ack_with(version, 0x70, *id, *reason, out),
            Response::UnsubAck(u) => encode(&Packet::UnsubAck(u.clone()), version, out),
            Response::PingResp => out.put_slice(&[0xD0, 0x00]),
        }
    }
}

/// What a packet asks of the shard: an action and the response to send once the gate lets
/// it go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handled {
    /// What the shard must do, if anything.
    pub action: Option<Action>,
    /// The answer to the client, if the packet has one.
    pub response: Option<Response>,
}

impl Handled {
    fn nothing() -> Handled {
        Handled::default()
    }

    fn respond(response: Response) -> Handled {
        Handled {
            action: None,
            response: Some(response),
        }
    }
}

/// What the shard must do after a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Route this message to subscribers (and the retained store if `retain`).
    Route(Message),
    /// Apply these subscriptions to the index, then send SUBACK with `codes` (one per
    /// requested filter, in order) once every shard routes the new filters.
    Subscribe {
        /// SUBSCRIBE packet id, for the SUBACK.
        packet_id: PacketId,
        /// Accepted subscriptions (filter, options and identifier) to add or replace.
        added: Vec<(TopicFilter, Subscribed)>,
        /// One code per requested filter.
        codes: Vec<ReasonCode>,
    },
    /// The session removed these subscriptions (the UNSUBSCRIBE's filters it held):
    /// remove them from the index, then send the UNSUBACK.
    Unsubscribe(Vec<TopicFilter>),
    /// The client sent DISCONNECT: close without publishing the will (unless the 5.0
    /// reason is "Disconnect with Will Message").
    Disconnect {
        /// Publish the will anyway (5.0 reason 0x04).
        publish_will: bool,
        /// 5.0: the session expiry interval from now on, if the DISCONNECT changes it.
        session_expiry: Option<u32>,
    },
}

/// Result of offering a message to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverOutcome {
    /// Encoded into the write buffer.
    Written,
    /// Stored behind the in-flight window or for an offline session.
    Queued,
    /// Not delivered, with the reason; the caller counts and logs it.
    Dropped(DropReason),
}

/// Why a delivery was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session queue is at `max_queued_messages` or `max_queued_bytes`.
    QueueFull,
    /// QoS 0 for a session with no connection.
    Offline,
    /// The PUBLISH would exceed the client's Maximum Packet Size: discarded as if it had
    /// been sent (5.0 §3.1.2.11.4).
    TooLarge,
    /// Its 5.0 Message Expiry Interval ran out before delivery started [MQTT-3.3.2-5].
    Expired,
    /// The client may not receive it (the authorization hook's read rights).
    NotAuthorized,
}

/// State of one outgoing QoS 1/2 flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1 sent, PUBACK pending.
    Qos1Sent,
    /// QoS 2 sent, PUBREC pending.
    Qos2Sent,
    /// PUBREL sent, PUBCOMP pending (the message itself is no longer needed).
    Released,
}

#[derive(Debug)]
struct Inflight {
    id: PacketId,
    stage: Stage,
    /// The message, kept until the flow no longer needs to resend it.
    message: Option<Message>,
    /// RETAIN flag as delivered (resends repeat it).
    retain: bool,
    /// Subscription identifiers and share group as delivered (resends repeat them).
    tags: Tagged,
    /// Sent on the current connection. False for a flow a resumed session has not resent
    /// yet because the new connection's window is smaller than what is in flight.
    sent: bool,
    /// Where the shard's log knows the delivery from (see [`Flow`]).
    durable: LogRef,
}

/// What one queued message costs beyond its topic, payload and properties: the queue entry
/// (with the message's handles to its bytes) and the heap blocks of topic and payload.
pub const QUEUE_ENTRY_OVERHEAD: usize = std::mem::size_of::<Queued>() + 2 * 16;

/// A queued delivery: the message and the QoS, RETAIN and tags it will be sent with.
#[derive(Debug)]
struct Queued {
    message: Message,
    qos: QoS,
    retain: bool,
    tags: Tagged,
    /// Where the shard's log knows the delivery from (see [`Flow`]).
    durable: LogRef,
}

impl Queued {
    /// What it counts against `max_queued_bytes`: the message and its tags.
    fn cost(&self) -> usize {
        self.message.cost() + self.tags.as_ref().map_or(0, |t| t.cost())
    }
}

/// A subscription as the session and the index keep it: the options it was made with and
/// its 5.0 Subscription Identifier (0: none; the codec refuses 0 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The SUBSCRIBE's options for this filter.
    pub options: SubscriptionOptions,
    /// The SUBSCRIBE's Subscription Identifier, 0 when it had none.
    pub identifier: u32,
}

impl Subscribed {
    /// A subscription with these options and no identifier.
    pub fn new(options: SubscriptionOptions) -> Subscribed {
        Subscribed {
            options,
            identifier: 0,
        }
    }
}

/// What a delivery carries besides the message, for what few subscriptions use: boxed, so
/// that a plain delivery carries one null pointer ([`Tagged`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags {
    /// The 5.0 Subscription Identifiers of the client's subscriptions it matched, each
    /// once, sent with it [MQTT-3.3.4-3] [MQTT-3.3.4-4]. Never sent to a 3.x client.
    pub identifiers: smallvec::SmallVec<[u32; 2]>,
    /// The shared subscription it was delivered through: if the session ends before the
    /// client acknowledges it, it goes to another member of the group (5.0 §4.8.2).
    pub share: Option<TopicFilter>,
}

impl Tags {
    /// Adds a matching subscription's identifier (0, none, adds nothing; one already there
    /// is not repeated).
    pub fn add_identifier(&mut self, id: u32) {
        if id != 0 && !self.identifiers.contains(&id) {
            self.identifiers.push(id);
        }
    }

    /// Heap bytes it holds, counted with a queued message.
    fn cost(&self) -> usize {
        std::mem::size_of::<Tags>()
            + if self.identifiers.spilled() {
                4 * self.identifiers.capacity()
            } else {
                0
            }
            + self.share.as_ref().map_or(0, |f| f.len())
    }
}

/// A delivery's [`Tags`], if any.
pub type Tagged = Option<Box<Tags>>;

/// Adds a matching subscription's identifier to a delivery's tags (0, none, adds nothing
/// and allocates nothing).
pub fn tag_identifier(tags: &mut Tagged, id: u32) {
    if id != 0 {
        tags.get_or_insert_with(Box::default).add_identifier(id);
    }
}

/// A change to what a persistent session holds, for the shard's log (see
/// [`crate::persist`]): told only for deliveries the log knows (a non-zero `durable`
/// number), and only while the shard keeps a log for the session ([`FlowLog::set`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Message `durable` joined the end of the flows (queued, or sent at once: then a
    /// [`Flow::Sent`] follows).
    Delivered {
        /// The message's number in the log, and its ingress.
        durable: LogRef,
        /// QoS it is sent with.
        qos: QoS,
        /// RETAIN as sent.
        retain: bool,
        /// Subscription identifiers sent with it.
        identifiers: smallvec::SmallVec<[u32; 2]>,
        /// The share group it came through.
        share: Option<TopicFilter>,
    },
    /// The first unsent delivery of `durable` went out with packet id `id`.
    Sent {
        /// The message's number in the log.
        durable: u64,
        /// Its packet id.
        id: PacketId,
        /// At QoS 2: the PUBLISH must not leave before this is durable (the client may
        /// deliver it at once, and a crash must not send it again under another id).
        exactly_once: bool,
    },
    /// PUBREC received for outgoing flow `id`: only PUBREL is owed now.
    Released(PacketId),
    /// Outgoing flow `id` ended.
    Finished(PacketId),
    /// The first unsent delivery of this message left without being sent.
    Unqueued(LogRef),
    /// Incoming QoS 2 id acknowledged with PUBREC, awaiting PUBREL.
    Qos2Received(PacketId),
    /// Incoming QoS 2 flow ended.
    Qos2Ended(PacketId),
}

impl Flow {
    fn delivered(durable: LogRef, qos: QoS, retain: bool, tags: Option<&Tags>) -> Flow {
        Flow::Delivered {
            durable,
            qos,
            retain,
            identifiers: tags.map(|t| t.identifiers.clone()).unwrap_or_default(),
            share: tags.and_then(|t| t.share.clone()),
        }
    }
}

/// What the shard's log knows of a delivery: the message's number in the log (0: not
/// written down) and, for a QoS 2 message whose publisher's shard must learn that it was
/// delivered (see `broker::durable`), its ingress number (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogRef {
    /// The message's number in the shard's log; 0: not logged.
    pub msg: u64,
    /// The ingress the message came with; 0: none.
    pub ingress: u64,
}

impl LogRef {
    /// A delivery the log does not know.
    pub const NONE: LogRef = LogRef { msg: 0, ingress: 0 };

    /// Whether the log knows the delivery.
    pub fn is_logged(self) -> bool {
        self.msg != 0
    }
}

/// Where a session tells the changes of its durable state ([`Flow`]): a scratch list the
/// shard reuses, switched on only for a persistent session of a shard that keeps a log.
#[derive(Debug, Default)]
pub struct FlowLog {
    on: bool,
    events: Vec<Flow>,
}

impl FlowLog {
    /// A log that records nothing (clean sessions, no persistence).
    pub fn off() -> FlowLog {
        FlowLog::default()
    }

    /// Records from now on (`true`) or not.
    pub fn set(&mut self, on: bool) {
        self.on = on;
    }

    /// Takes what was recorded, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Flow> {
        self.events.drain(..)
    }

    /// Whether anything was recorded and not drained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn push(&mut self, f: impl FnOnce() -> Flow) {
        if self.on {
            self.events.push(f());
        }
    }

    fn unqueued(&mut self, durable: LogRef) {
        if durable.is_logged() {
            self.push(|| Flow::Unqueued(durable));
        }
    }
}

/// A delivery as a restored session holds it (see [`Session::restore`]) or as a
/// compaction writes it down ([`Session::durable_flows`]).
#[derive(Debug, Clone)]
pub struct RestoredFlow {
    /// The message (None for a released QoS 2 flow: only its PUBREL is owed).
    pub message: Option<Message>,
    /// Its number in the shard's log and its ingress.
    pub durable: LogRef,
    /// QoS it is sent with (1 or 2).
    pub qos: QoS,
    /// RETAIN as sent.
    pub retain: bool,
    /// Subscription identifiers and share group.
    pub tags: Tagged,
    /// Its packet id, once sent.
    pub packet_id: Option<PacketId>,
    /// PUBREC received: only PUBREL is owed.
    pub released: bool,
}

/// Counters a session keeps (32 bits each, saturating: they exist per session, and the
/// shard's own counters are the totals).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// Deliveries dropped because the queue was full.
    pub dropped_queue_full: u32,
    /// QoS 0 deliveries dropped while offline.
    pub dropped_offline: u32,
    /// Acks for packet ids with no flow (ignored).
    pub unknown_acks: u32,
    /// Incoming QoS 2 duplicates not forwarded again.
    pub qos2_duplicates: u32,
    /// Deliveries larger than the client's Maximum Packet Size, discarded.
    pub dropped_too_large: u32,
    /// Messages whose expiry interval ran out before they were sent (offered, or waiting
    /// in the queue).
    pub dropped_expired: u32,
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    client_id: ByteString,
    version: ProtocolVersion,
    /// Seconds the session outlives its connection: 0 ends it with the connection (3.x
    /// clean session 1, 5.0 Session Expiry Interval 0), [`NEVER_EXPIRES`] keeps it until a
    /// clean start replaces it (3.x clean session 0, 5.0 0xFFFFFFFF).
    expiry: u32,
    limits: SessionLimits,
    subscriptions: std::collections::HashMap<TopicFilter, Subscribed, ProcessHasher>,
    /// The topic aliases of the current connection (5.0, only when the client allows
    /// some): see [`TopicAliases`].
    aliases_out: Option<Box<TopicAliases>>,
    /// The user name of the connection serving the session (or that last served it), for
    /// the authorization hooks.
    username: Option<Box<str>>,
    /// What the client may receive, as the authorization hook resolved it for the
    /// connection serving it (None: everything); see [`Session::may_read`]. Boxed to a
    /// thin pointer: 8 bytes in every session, where the `Arc<dyn>` itself is 16.
    #[allow(clippy::redundant_allocation)]
    rights: Option<Box<std::sync::Arc<dyn crate::security::ClientRights>>>,
    inflight: VecDeque<Inflight>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Incoming QoS 2 ids that got PUBREC and wait for PUBREL (up to 65,535: a set, so
    /// each PUBLISH and PUBREL costs O(1)).
    incoming_qos2: IdSet,
    /// Flows in `inflight` with `sent == false` (see [`Session::resume`]); at most the
    /// window, itself a `u16`.
    unsent: u16,
    last_id: u16,
    /// Which of the broker's hook stacks (a listener's security files) the client was
    /// admitted by: its rights come from that one, a reload included.
    domain: u16,
    connected: bool,
    /// The shard's log has heard of this session (it was persistent when created, or was
    /// restored from the log): its end is written down too. A session created clean never
    /// touches the disk.
    logged: bool,
    stats: SessionStats,
    /// Queued messages dropped as expired, not yet taken by [`Session::take_expired_drops`].
    expired_unreported: u32,
    /// Queued or in-flight messages dropped because the client may no longer read them
    /// (its rights changed after they were queued or sent), not yet taken by
    /// [`Session::take_denied_drops`].
    denied_unreported: u32,
}

impl Session {
    /// A new, connected session; `persistent` keeps it forever after its connection
    /// ([`NEVER_EXPIRES`]) until [`Session::set_expiry`] says otherwise.
    pub fn new(
        client_id: ByteString,
        version: ProtocolVersion,
        persistent: bool,
        limits: SessionLimits,
    ) -> Session {
        Session {
            client_id,
            version,
            expiry: if persistent { NEVER_EXPIRES } else { 0 },
            limits,
            subscriptions: Default::default(),
            aliases_out: None,
            username: None,
            rights: None,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            incoming_qos2: IdSet::default(),
            unsent: 0,
            last_id: 0,
            domain: 0,
            connected: true,
            logged: false,
            stats: SessionStats::default(),
            expired_unreported: 0,
            denied_unreported: 0,
        }
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// The user name of the connection serving the session (or that last served it).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// A connection with this user name serves the session from now on.
    pub fn set_username(&mut self, username: Option<Box<str>>) {
        self.username = username;
    }

    /// The hook stack (a listener's security files) its rights come from.
    pub fn domain(&self) -> u16 {
        self.domain
    }

    /// A client admitted by hook stack `domain` serves the session from now on.
    pub fn set_domain(&mut self, domain: u16) {
        self.domain = domain;
    }

    /// What the authorization hook lets the client do, from now on (None: everything).
    pub fn set_rights(
        &mut self,
        rights: Option<std::sync::Arc<dyn crate::security::ClientRights>>,
    ) {
        self.rights = rights.map(Box::new);
    }

    /// What the authorization hook lets the client do (None: everything).
    pub fn rights(&self) -> Option<&dyn crate::security::ClientRights> {
        self.rights.as_deref().map(|r| &**r)
    }

    /// Whether a message to `topic` may be delivered to the client: its caller does not
    /// offer one that may not (the session keeps no rules of its own).
    #[inline]
    pub fn may_read(&self, topic: &str) -> bool {
        self.rights.as_ref().map_or(true, |r| r.read(topic))
    }

    /// The largest packet the client accepts (5.0 Maximum Packet Size; `u32::MAX`: none).
    pub fn max_packet_out(&self) -> u32 {
        self.limits.max_packet_out
    }

    /// The protocol version of the current (or last) connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.expiry != 0
    }

    /// Seconds the session is kept after its connection ends (see [`NEVER_EXPIRES`]).
    pub fn expiry(&self) -> u32 {
        self.expiry
    }

    /// Sets how long the session is kept after its connection ends: from the CONNECT
    /// that attaches it, or from a 5.0 DISCONNECT [MQTT-3.14.2-2].
    pub fn set_expiry(&mut self, seconds: u32) {
        self.expiry = seconds;
    }

    /// Whether the shard's log has heard of the session (see [`Session::set_logged`]).
    pub fn is_logged(&self) -> bool {
        self.logged
    }

    /// The shard's log has heard of the session: its end must be written down too.
    pub fn set_logged(&mut self) {
        self.logged = true;
    }

    /// Whether a connection is attached.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Current subscriptions (restored into the index when a persistent session resumes).
    pub fn subscriptions(&self) -> impl Iterator<Item = (&TopicFilter, &Subscribed)> {
        self.subscriptions.iter()
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Messages dropped from the queue because they expired, since the last call (the
    /// shard adds them to its counters).
    pub fn take_expired_drops(&mut self) -> u32 {
        std::mem::take(&mut self.expired_unreported)
    }

    /// Queued or in-flight messages dropped since the last call because the client may no
    /// longer read them (the caller counts them).
    pub fn take_denied_drops(&mut self) -> u32 {
        std::mem::take(&mut self.denied_unreported)
    }

    /// Whether a QoS 1/2 delivery would go out now: connected, nothing queued, room in
    /// the in-flight window.
    pub fn has_room(&self) -> bool {
        self.connected
            && self.queue.is_empty()
            && self.inflight.len() < usize::from(self.limits.max_inflight)
    }

    /// Outgoing flows in progress.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// The messages the shard's log knows that the session holds (in flight or queued),
    /// as (number in the log, [`Message::cost`]): what a compaction would write.
    pub fn durable_costs(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        let inflight = self
            .inflight
            .iter()
            .filter(|f| f.durable.is_logged())
            .filter_map(|f| Some((f.durable.msg, f.message.as_ref()?.cost())));
        let queued = self
            .queue
            .iter()
            .filter(|q| q.durable.is_logged())
            .map(|q| (q.durable.msg, q.message.cost()));
        inflight.chain(queued)
    }

    /// Messages waiting behind the window.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// What the messages in flight and queued take ([`Message::cost`]; for statistics: a
    /// walk over the in-flight window only, the queue's is kept).
    pub fn held_bytes(&self) -> usize {
        let inflight: usize = self
            .inflight
            .iter()
            .filter_map(|f| f.message.as_ref())
            .map(Message::cost)
            .sum();
        inflight + self.queued_bytes
    }

    /// The limits of the connection that resumes the session (a 5.0 client's Receive
    /// Maximum may differ from its previous connection's). Call before [`Session::resume`]:
    /// flows in flight beyond a smaller window keep their packet ids and are resent as the
    /// window frees up; new messages wait behind them.
    pub fn set_limits(&mut self, limits: SessionLimits) {
        self.limits = limits;
        // Aliases belong to a connection [MQTT-3.3.2-7]: new terms, a new table.
        self.aliases_out = None;
    }

    /// What the queued messages count against `max_queued_bytes` ([`Message::cost`]).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The connection went away. A persistent session keeps its state and queues QoS 1/2
    /// deliveries until the client returns. Messages are kept as they were given: the
    /// broker hands the session messages that own their memory (see [`Session::deliver`]).
    pub fn detach(&mut self) {
        self.connected = false;
        self.aliases_out = None;
    }

    /// A new connection takes over this persistent session: resend every unacknowledged
    /// PUBLISH with DUP set and every pending PUBREL, in their original order
    /// ([MQTT-4.4.0-1]), then fill the window from the queue.
    ///
    /// The new connection's window may be smaller than what is in flight (a 5.0 client
    /// that reconnects with a lower Receive Maximum): PUBRELs are always resent (their
    /// flows already count against the window), PUBLISHes only while the window has room
    /// [MQTT-3.3.4-9]. The others keep their packet ids, so a QoS 2 message the client may
    /// already hold is never sent under a new id, and go out, in order, as acks free the
    /// window, ahead of anything queued.
    pub fn resume(&mut self, version: ProtocolVersion, out: &mut BytesMut) {
        self.resume_logged(version, out, &mut FlowLog::off())
    }

    /// [`Session::resume`], telling `log` which flows ended or were sent.
    pub fn resume_logged(
        &mut self,
        version: ProtocolVersion,
        out: &mut BytesMut,
        log: &mut FlowLog,
    ) {
        self.version = version;
        self.connected = true;
        self.aliases_out = None;
        let window = usize::from(self.limits.max_inflight);
        // The new connection may accept smaller packets: a PUBLISH in flight that no
        // longer fits is discarded as if it had been delivered (5.0 §3.1.2.11.4).
        if self.limits.max_packet_out != u32::MAX {
            let before = self.inflight.len();
            let limits = self.limits;
            self.inflight.retain(|f| {
                let keep = f.message.as_ref().map_or(true, |m| {
                    !too_large(version, limits, m, stage_qos(f.stage), f.tags.as_deref())
                });
                if !keep && f.durable.is_logged() {
                    log.push(|| Flow::Finished(f.id));
                }
                keep
            });
            let dropped = before - self.inflight.len();
            bump_by(&mut self.stats.dropped_too_large, dropped);
        }
        // A PUBLISH in flight the client may no longer read (its rights changed since it
        // was sent: a reload, another listener's rules after a takeover, a restart) is not
        // sent again: discarded as if delivered (mosquitto checks read access on every
        // send, resends included). A PUBREL carries no message and always goes.
        if let Some(rights) = self.rights.as_deref() {
            let before = self.inflight.len();
            self.inflight.retain(|f| {
                let keep = f.message.as_ref().map_or(true, |m| rights.read(&m.topic));
                if !keep && f.durable.is_logged() {
                    log.push(|| Flow::Finished(f.id));
                }
                keep
            });
            let dropped = before - self.inflight.len();
            self.denied_unreported = self
                .denied_unreported
                .saturating_add(u32::try_from(dropped).unwrap_or(u32::MAX));
        }
        // Every PUBREL goes out, wherever it stands in the window's order, so PUBLISHes
        // get only the room the PUBRELs leave.
        let mut sent = self
            .inflight
            .iter()
            .filter(|f| f.stage == Stage::Released)
            .count();
        self.unsent = 0;
        for f in &mut self.inflight {
            f.sent = match (&f.message, f.stage) {
                (_, Stage::Released) => {
                    write_ack(version, 0x62, f.id, out);
                    true
                }
                (Some(m), stage) if sent < window => {
                    write_publish(
                        &mut Wire {
                            version,
                            limits: &self.limits,
                            aliases: &mut self.aliases_out,
                        },
                        m,
                        stage_qos(stage),
                        f.retain,
                        f.tags.as_deref(),
                        Some(f.id),
                        true,
                        out,
                    );
                    sent += 1;
                    true
                }
                (Some(_), _) => false,
                // A flow with neither a message nor a PUBREL to resend cannot exist
                // (`Released` is the only stage without a message).
                (None, _) => true,
            };
            if !f.sent {
                self.unsent += 1;
            }
        }
        self.drain_queue(out, log);
    }

    /// Offers a message that matched one of this client's subscriptions, to be sent at
    /// `qos` (already the minimum of published and granted QoS) with `retain`.
    /// `out` is the connection's write buffer, `None` when the session is offline.
    pub fn deliver(
        &mut self,
        message: &Message,
        qos: QoS,
        retain: bool,
        out: Option<&mut BytesMut>,
    ) -> DeliverOutcome {
        self.deliver_tagged(message, qos, retain, None, out)
    }

    /// [`Session::deliver`] with the subscription identifiers and share group it is
    /// delivered with.
    pub fn deliver_tagged(
        &mut self,
        message: &Message,
        qos: QoS,
        retain: bool,
        tags: Tagged,
        out: Option<&mut BytesMut>,
    ) -> DeliverOutcome {
        self.deliver_logged(
            message,
            qos,
            retain,
            tags,
            LogRef::NONE,
            out,
            &mut FlowLog::off(),
        )
    }

    /// [`Session::deliver_tagged`] for a message the shard's log knows as `durable` (0:
    /// not written down): what changes in the session's flows is told to `log`.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_logged(
        &mut self,
        message: &Message,
        qos: QoS,
        retain: bool,
        tags: Tagged,
        durable: LogRef,
        out: Option<&mut BytesMut>,
        log: &mut FlowLog,
    ) -> DeliverOutcome {
        if self.too_large(message, qos, tags.as_deref()) {
            bump(&mut self.stats.dropped_too_large);
            return DeliverOutcome::Dropped(DropReason::TooLarge);
        }
        if message.expires.is_some() && message.expired(std::time::Instant::now()) {
            bump(&mut self.stats.dropped_expired);
            return DeliverOutcome::Dropped(DropReason::Expired);
        }
        let out = match out {
            Some(out) if self.connected => out,
            _ => {
                if qos == QoS::AtMostOnce {
                    bump(&mut self.stats.dropped_offline);
                    return DeliverOutcome::Dropped(DropReason::Offline);
                }
                return self.enqueue(message, qos, retain, tags, durable, log);
            }
        };
        if qos == QoS::AtMostOnce {
            write_publish(
                &mut Wire {
                    version: self.version,
                    limits: &self.limits,
                    aliases: &mut self.aliases_out,
                },
                message,
                qos,
                retain,
                tags.as_deref(),
                None,
                false,
                out,
            );
            return DeliverOutcome::Written;
        }
        // Order: nothing may overtake what already waits in the queue.
        if !self.queue.is_empty() || self.inflight.len() >= usize::from(self.limits.max_inflight) {
            return self.enqueue(message, qos, retain, tags, durable, log);
        }
        if durable.is_logged() {
            log.push(|| Flow::delivered(durable, qos, retain, tags.as_deref()));
        }
        self.send_new(message.clone(), qos, retain, tags, durable, out, log);
        DeliverOutcome::Written
    }

    /// Whether the PUBLISH of `message` at `qos` would exceed the client's Maximum Packet
    /// Size (with the properties it is sent with).
    fn too_large(&self, message: &Message, qos: QoS, tags: Option<&Tags>) -> bool {
        too_large(self.version, self.limits, message, qos, tags)
    }

    fn enqueue(
        &mut self,
        message: &Message,
        qos: QoS,
        retain: bool,
        tags: Tagged,
        durable: LogRef,
        log: &mut FlowLog,
    ) -> DeliverOutcome {
        let entry = Queued {
            message: message.clone(),
            qos,
            retain,
            tags,
            durable,
        };
        let cost = entry.cost();
        // A message is refused when the queue already holds the limit (so one message
        // larger than the byte limit still fits an empty queue).
        if self.queue.len() >= self.limits.max_queued_messages
            || self.queued_bytes >= self.limits.max_queued_bytes
        {
            bump(&mut self.stats.dropped_queue_full);
            return DeliverOutcome::Dropped(DropReason::QueueFull);
        }
        self.queued_bytes += cost;
        if durable.is_logged() {
            log.push(|| Flow::delivered(durable, qos, retain, entry.tags.as_deref()));
        }
        self.queue.push_back(entry);
        DeliverOutcome::Queued
    }

    #[allow(clippy::too_many_arguments)]
    fn send_new(
        &mut self,
        message: Message,
        qos: QoS,
        retain: bool,
        tags: Tagged,
        durable: LogRef,
        out: &mut BytesMut,
        log: &mut FlowLog,
    ) {
        let id = self.next_id();
        if durable.is_logged() {
            log.push(|| Flow::Sent {
                durable: durable.msg,
                id,
                exactly_once: qos == QoS::ExactlyOnce,
            });
        }
        write_publish(
            &mut Wire {
                version: self.version,
                limits: &self.limits,
                aliases: &mut self.aliases_out,
            },
            &message,
            qos,
            retain,
            tags.as_deref(),
            Some(id),
            false,
            out,
        );
        self.inflight.push_back(Inflight {
            id,
            stage: if qos == QoS::AtLeastOnce {
                Stage::Qos1Sent
            } else {
                Stage::Qos2Sent
            },
            message: Some(message),
            retain,
            tags,
            sent: true,
            durable,
        });
    }

    /// Fills the window while it has room: first the flows a resume could not resend yet
    /// (they are older), then queued messages.
    fn drain_queue(&mut self, out: &mut BytesMut, log: &mut FlowLog) {
        let window = usize::from(self.limits.max_inflight);
        if self.unsent > 0 {
            let version = self.version;
            let room = window.saturating_sub(self.inflight.len() - usize::from(self.unsent));
            let mut resent = 0;
            for f in self.inflight.iter_mut().filter(|f| !f.sent).take(room) {
                if let Some(m) = &f.message {
                    write_publish(
                        &mut Wire {
                            version,
                            limits: &self.limits,
                            aliases: &mut self.aliases_out,
                        },
                        m,
                        stage_qos(f.stage),
                        f.retain,
                        f.tags.as_deref(),
                        Some(f.id),
                        true,
                        out,
                    );
                }
                f.sent = true;
                resent += 1;
            }
            self.unsent -= resent;
        }
        let mut now = None;
        while self.inflight.len() < window {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= q.cost();
            if q.message.expires.is_some()
                && q.message
                    .expired(*now.get_or_insert_with(std::time::Instant::now))
            {
                // Waited in the queue past its expiry [MQTT-3.3.2-5].
                bump(&mut self.stats.dropped_expired);
                bump(&mut self.expired_unreported);
                log.unqueued(q.durable);
                continue;
            }
            if !self.may_read(&q.message.topic) {
                // Queued under rights the client no longer has (a reload of the rules, or
                // a log restored without its user): checked again before it is sent.
                bump(&mut self.denied_unreported);
                log.unqueued(q.durable);
                continue;
            }
            if self.too_large(&q.message, q.qos, q.tags.as_deref()) {
                // Queued for an earlier connection that accepted larger packets.
                bump(&mut self.stats.dropped_too_large);
                log.unqueued(q.durable);
                continue;
            }
            self.send_new(q.message, q.qos, q.retain, q.tags, q.durable, out, log);
        }
    }

    /// The next packet id not used by an outgoing flow. Ids are handed out in sequence,
    /// so a collision needs a flow to stay open for 65,535 newer ones; the scan over the
    /// (small, bounded) window only guards that case [MQTT-2.3.1-2].
    fn next_id(&mut self) -> PacketId {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            let Some(id) = PacketId::new(self.last_id) else {
                continue;
            };
            if !self.inflight.iter().any(|f| f.id == id) {
                return id;
            }
        }
    }

    /// Handles one packet received after CONNECT. The session's own traffic (deliveries
    /// that an ack lets into the window, PUBRELs) is appended to `out`; the answer to the
    /// packet and the action for the shard are returned.
    pub fn handle(&mut self, packet: Packet, out: &mut BytesMut) -> Result<Handled, SessionError> {
        self.handle_logged(packet, out, &mut FlowLog::off())
    }

    /// [`Session::handle`], telling `log` what changes in the session's durable state.
    pub fn handle_logged(
        &mut self,
        packet: Packet,
        out: &mut BytesMut,
        log: &mut FlowLog,
    ) -> Result<Handled, SessionError> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, log),
            Packet::PubAck(a) => {
                self.complete(a.packet_id, Stage::Qos1Sent, out, log);
                Ok(Handled::nothing())
            }
            Packet::PubRec(a) => {
                self.on_pubrec(a, out, log);
                Ok(Handled::nothing())
            }
            Packet::PubRel(a) => Ok(Handled::respond(self.on_pubrel(a, log))),
            Packet::PubComp(a) => {
                self.complete(a.packet_id, Stage::Released, out, log);
                Ok(Handled::nothing())
            }
            Packet::Subscribe(s) => {
                // One identifier at most: "a Protocol Error to include the Subscription
                // Identifier more than once" (5.0 §3.8.2.1.2); the codec already refuses 0.
                let identifier = match s.properties.subscription_identifiers.as_slice() {
                    [] => 0,
                    [id] => *id,
                    _ => return Err(SessionError::SubscriptionIdentifierRepeated),
                };
                let mut added = Vec::with_capacity(s.subscriptions.len());
                let mut codes = Vec::with_capacity(s.subscriptions.len());
                // The shard applies limits first and records what it accepts with
                // `add_subscription`; nothing changes here until then.
                for sub in s.subscriptions {
                    if sub.options.no_local && sub.filter.shared().is_some() {
                        return Err(SessionError::NoLocalOnSharedSubscription);
                    }
                    codes.push(ReasonCode(sub.options.qos as u8));
                    added.push((
                        sub.filter,
                        Subscribed {
                            options: sub.options,
                            identifier,
                        },
                    ));
                }
                Ok(Handled {
                    action: Some(Action::Subscribe {
                        packet_id: s.packet_id,
                        added,
                        codes,
                    }),
                    response: None,
                })
            }
            Packet::Unsubscribe(u) => {
                let mut codes = Vec::with_capacity(u.filters.len());
                let mut removed = Vec::with_capacity(u.filters.len());
                for f in u.filters {
                    codes.push(if self.subscriptions.remove(&f).is_some() {
                        removed.push(f);
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NO_SUBSCRIPTION_EXISTED
                    });
                }
                Ok(Handled {
                    response: Some(Response::UnsubAck(UnsubAck {
                        packet_id: u.packet_id,
                        codes,
                        properties: Properties::new(),
                    })),
                    action: Some(Action::Unsubscribe(removed)),
                })
            }
            Packet::PingReq => Ok(Handled::respond(Response::PingResp)),
            Packet::Disconnect(d) => Ok(Handled {
                action: Some(Action::Disconnect {
                    publish_will: d.reason == ReasonCode::DISCONNECT_WITH_WILL,
                    session_expiry: d.properties.session_expiry_interval,
                }),
                response: None,
            }),
            Packet::Connect(_) => Err(SessionError::SecondConnect),
            other => Err(SessionError::UnexpectedPacket(other.packet_type())),
        }
    }

    fn on_publish(&mut self, p: Publish, log: &mut FlowLog) -> Result<Handled, SessionError> {
        let ok = ReasonCode::SUCCESS;
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => {
                if self.payload_format_invalid(&p) {
                    return Err(SessionError::PayloadFormatInvalid);
                }
                Ok(Handled {
                    action: Some(Action::Route(Message::from_publish(p))),
                    response: None,
                })
            }
            (QoS::AtLeastOnce, Some(id)) => {
                if self.payload_format_invalid(&p) {
                    let bad = ReasonCode::PAYLOAD_FORMAT_INVALID;
                    return Ok(Handled::respond(Response::PubAck(id, bad)));
                }
                Ok(Handled {
                    action: Some(Action::Route(Message::from_publish(p))),
                    response: Some(Response::PubAck(id, ok)),
                })
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Exactly once: an id still awaiting PUBREL is a resend of a message already
                // forwarded; acknowledge it again and do not forward it twice [MQTT-4.3.3-2].
                if self.incoming_qos2.contains(&id.get()) {
                    bump(&mut self.stats.qos2_duplicates);
                    return Ok(Handled::respond(Response::PubRec(id, ok)));
                }
                if self.payload_format_invalid(&p) {
                    // A PUBREC with an error code ends the flow: no id is kept.
                    let bad = ReasonCode::PAYLOAD_FORMAT_INVALID;
                    return Ok(Handled::respond(Response::PubRec(id, bad)));
                }
                if self.incoming_qos2.len() >= usize::from(self.limits.max_inflight_incoming) {
                    return Err(SessionError::ReceiveMaximumExceeded);
                }
                self.incoming_qos2.insert(id.get());
                log.push(|| Flow::Qos2Received(id));
                Ok(Handled {
                    action: Some(Action::Route(Message::from_publish(p))),
                    response: Some(Response::PubRec(id, ok)),
                })
            }
        }
    }

    /// 5.0: a PUBLISH that says its payload is UTF-8 (Payload Format Indicator 1) and is
    /// not. The server validates it, as 5.0 §3.3.2.3.2 allows, so that no subscriber is
    /// sent text that is not text: QoS 1/2 get PUBACK / PUBREC 0x99 and the message is
    /// not routed; QoS 0, which has no ack, DISCONNECT 0x99.
    fn payload_format_invalid(&self, p: &Publish) -> bool {
        self.version.is_v5()
            && p.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&p.payload).is_err()
    }

    fn on_pubrel(&mut self, a: Ack, log: &mut FlowLog) -> Response {
        let id = a.packet_id;
        if self.incoming_qos2.remove(&id.get()) {
            log.push(|| Flow::Qos2Ended(id));
            Response::PubComp(id, ReasonCode::SUCCESS)
        } else {
            // A PUBREL for a flow we completed already (our PUBCOMP was lost): answer again
            // so the client can finish; 5.0 says which case it was.
            bump(&mut self.stats.unknown_acks);
            Response::PubComp(id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)
        }
    }

    fn on_pubrec(&mut self, a: Ack, out: &mut BytesMut, log: &mut FlowLog) {
        let Some(f) = self
            .inflight
            .iter_mut()
            .find(|f| f.id == a.packet_id && f.stage == Stage::Qos2Sent)
        else {
            bump(&mut self.stats.unknown_acks);
            if self.version.is_v5() {
                let rel = Packet::PubRel(Ack {
                    packet_id: a.packet_id,
                    reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                    properties: Properties::new(),
                });
                encode(&rel, self.version, out);
            }
            return;
        };
        if !f.sent {
            f.sent = true;
            self.unsent -= 1;
        }
        if !a.reason.is_success() {
            // 5.0 §4.3.3: a PUBREC with a failure code ends the flow and frees the id.
            let id = a.packet_id;
            if f.durable.is_logged() {
                log.push(|| Flow::Finished(id));
            }
            self.inflight.retain(|f| f.id != id);
            self.drain_queue(out, log);
            return;
        }
        if f.durable.is_logged() {
            log.push(|| Flow::Released(a.packet_id));
        }
        f.stage = Stage::Released;
        // The message is delivered; only the id is kept until PUBCOMP.
        f.message = None;
        write_ack(self.version, 0x62, a.packet_id, out);
    }

    /// Ends the flow `id` if it is at `stage`, then refills the window.
    fn complete(&mut self, id: PacketId, stage: Stage, out: &mut BytesMut, log: &mut FlowLog) {
        // Acks mostly arrive in order, so the front is checked first.
        let pos = if self.inflight.front().is_some_and(|f| f.id == id) {
            Some(0)
        } else {
            self.inflight.iter().position(|f| f.id == id)
        };
        match pos {
            Some(pos) if self.inflight.get(pos).is_some_and(|f| f.stage == stage) => {
                if let Some(f) = self.inflight.remove(pos) {
                    if !f.sent {
                        // Acknowledged from the previous connection before it was resent.
                        self.unsent -= 1;
                    }
                    if f.durable.is_logged() {
                        log.push(|| Flow::Finished(id));
                    }
                }
                self.drain_queue(out, log);
            }
            _ => bump(&mut self.stats.unknown_acks),
        }
    }

    /// Records an accepted subscription (replacing one to the same filter). Returns true
    /// if it is new.
    pub fn add_subscription(&mut self, filter: TopicFilter, sub: Subscribed) -> bool {
        self.subscriptions.insert(filter, sub).is_none()
    }

    /// Takes out the messages the session holds through a shared subscription that the
    /// client has not acknowledged (sent and waiting for PUBACK or PUBREC, or queued), in
    /// order: when the session ends they go to another member of their group (5.0
    /// §4.8.2). A QoS 2 message the client has acknowledged with PUBREC is its own and
    /// is not taken.
    /// (Only an ending session's are taken: its end is what the log records, not this.)
    pub fn take_shared(&mut self) -> Vec<(TopicFilter, Message)> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.inflight.len() {
            let shared = self.inflight.get(i).is_some_and(|f| {
                f.stage != Stage::Released
                    && f.message.is_some()
                    && f.tags.as_ref().is_some_and(|t| t.share.is_some())
            });
            match shared.then(|| self.inflight.remove(i)).flatten() {
                Some(f) => {
                    if !f.sent {
                        self.unsent -= 1;
                    }
                    if let (Some(m), Some(share)) = (f.message, f.tags.and_then(|t| t.share)) {
                        taken.push((share, m));
                    }
                }
                None => i += 1,
            }
        }
        let queue = std::mem::take(&mut self.queue);
        for q in queue {
            let share = q.tags.as_ref().and_then(|t| t.share.clone());
            match share {
                Some(share) => {
                    self.queued_bytes -= q.cost();
                    taken.push((share, q.message));
                }
                None => self.queue.push_back(q),
            }
        }
        taken
    }

    /// Forgets an incoming QoS 2 id the shard refused after all (PUBREC with an error code
    /// ends the flow: no PUBREL follows, and the id may be reused for a new message).
    pub fn forget_incoming_qos2(&mut self, id: PacketId, log: &mut FlowLog) {
        if self.incoming_qos2.remove(&id.get()) {
            log.push(|| Flow::Qos2Ended(id));
        }
    }

    /// Whether the session holds a subscription to exactly this filter.
    pub fn has_subscription(&self, filter: &TopicFilter) -> bool {
        self.subscriptions.contains_key(filter)
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Every message the session holds, in flight then queued (tests check what they
    /// point into).
    #[cfg(test)]
    pub(crate) fn held_messages(&self) -> impl Iterator<Item = &Message> {
        self.inflight
            .iter()
            .filter_map(|f| f.message.as_ref())
            .chain(self.queue.iter().map(|q| &q.message))
    }

    /// A persistent session as the shard's log left it, offline: its subscriptions, its
    /// outgoing flows in order (those with a packet id are in flight and are resent on
    /// resume [MQTT-4.4.0-1]; the others are queued), and its incoming QoS 2 ids. A flow
    /// in flight with neither a message nor a PUBREL owed cannot be resent and is left out.
    pub fn restore(
        client_id: ByteString,
        expiry: u32,
        limits: SessionLimits,
        subscriptions: impl IntoIterator<Item = (TopicFilter, Subscribed)>,
        flows: impl IntoIterator<Item = RestoredFlow>,
        incoming_qos2: impl IntoIterator<Item = PacketId>,
    ) -> Session {
        let mut s = Session::new(client_id, ProtocolVersion::V3_1_1, true, limits);
        s.expiry = expiry;
        s.connected = false;
        s.logged = true;
        s.subscriptions.extend(subscriptions);
        for f in flows {
            match (f.packet_id, f.released, f.message) {
                (Some(id), released, message) if released || message.is_some() => {
                    s.last_id = s.last_id.max(id.get());
                    s.inflight.push_back(Inflight {
                        id,
                        stage: match (released, f.qos) {
                            (true, _) => Stage::Released,
                            (false, QoS::ExactlyOnce) => Stage::Qos2Sent,
                            (false, _) => Stage::Qos1Sent,
                        },
                        message: if released { None } else { message },
                        retain: f.retain,
                        tags: f.tags,
                        sent: true,
                        durable: f.durable,
                    });
                }
                (None, false, Some(message)) => {
                    let q = Queued {
                        message,
                        qos: f.qos,
                        retain: f.retain,
                        tags: f.tags,
                        durable: f.durable,
                    };
                    s.queued_bytes += q.cost();
                    s.queue.push_back(q);
                }
                _ => {}
            }
        }
        s.incoming_qos2
            .extend(incoming_qos2.into_iter().map(PacketId::get));
        s
    }

    /// The deliveries the shard's log knows (a non-zero number), in order, as
    /// [`Session::restore`] takes them: what a compaction writes down.
    pub fn durable_flows(&self) -> impl Iterator<Item = RestoredFlow> + '_ {
        let inflight = self
            .inflight
            .iter()
            .filter(|f| f.durable.is_logged())
            .map(|f| RestoredFlow {
                message: f.message.clone(),
                durable: f.durable,
                qos: stage_qos(f.stage),
                retain: f.retain,
                tags: f.tags.clone(),
                packet_id: Some(f.id),
                released: f.stage == Stage::Released,
            });
        let queued = self
            .queue
            .iter()
            .filter(|q| q.durable.is_logged())
            .map(|q| RestoredFlow {
                message: Some(q.message.clone()),
                durable: q.durable,
                qos: q.qos,
                retain: q.retain,
                tags: q.tags.clone(),
                packet_id: None,
                released: false,
            });
        inflight.chain(queued)
    }

    /// Incoming QoS 2 ids awaiting PUBREL.
    pub fn incoming_qos2_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.incoming_qos2.iter().copied()
    }

    /// Resets state for a clean start on an existing id (the old session is discarded).
    pub fn clear(&mut self) {
        self.subscriptions.clear();
        self.inflight.clear();
        self.unsent = 0;
        self.queue.clear();
        self.queued_bytes = 0;
        self.incoming_qos2.clear();
    }
}

/// Adds one to a session counter (they saturate: see [`SessionStats`]).
fn bump(counter: &mut u32) {
    bump_by(counter, 1);
}

/// Adds `n` to a session counter, saturating.
fn bump_by(counter: &mut u32, n: usize) {
    *counter = counter.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
}

/// Whether the PUBLISH of `message` at `qos` would exceed `limits.max_packet_out` (the
/// Message Expiry Interval it is sent with has the size of the one it was published with).
fn too_large(
    version: ProtocolVersion,
    limits: SessionLimits,
    message: &Message,
    qos: QoS,
    tags: Option<&Tags>,
) -> bool {
    too_large_by(version, limits, message, qos, tags, 0)
}

/// [`too_large`] with `more` bytes added to the packet.
fn too_large_by(
    version: ProtocolVersion,
    limits: SessionLimits,
    message: &Message,
    qos: QoS,
    tags: Option<&Tags>,
    more: usize,
) -> bool {
    if limits.max_packet_out == u32::MAX {
        return false;
    }
    let Ok(n) = crate::protocol::publish_len(
        version,
        &message.topic,
        qos != QoS::AtMostOnce,
        &message.properties,
        message.payload.len(),
    ) else {
        return true;
    };
    // What `outgoing_properties` changes, counted without building it: the remaining
    // expiry replaces a 4-byte value of the same size; identifiers add one property each
    // (and may lengthen the property length's own encoding).
    let ids = tags.map_or(&[][..], |t| &t.identifiers[..]);
    let extra = if version.is_v5() && !ids.is_empty() {
        use crate::protocol::wire::varint_len;
        let added: usize = ids.iter().map(|&i| 1 + varint_len(i as usize)).sum();
        let base = message.properties.encoded_len().unwrap_or(0);
        added + varint_len(base + added) - varint_len(base)
    } else {
        0
    };
    n + extra + more > limits.max_packet_out as usize
}

/// The QoS a flow at `stage` was sent with (`Released` only resends a PUBREL).
fn stage_qos(stage: Stage) -> QoS {
    if stage == Stage::Qos1Sent {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

/// The alias (and whether the client knows it) a delivery of `topic` goes with, when the
/// connection uses outbound aliases (see [`TopicAliases`]).
fn alias_for(
    aliases: &mut Option<Box<TopicAliases>>,
    limits: &SessionLimits,
    version: ProtocolVersion,
    m: &Message,
    qos: QoS,
    tags: Option<&Tags>,
) -> Option<(u16, bool)> {
    if limits.max_topic_alias_out == 0 || !version.is_v5() {
        return None;
    }
    let table =
        aliases.get_or_insert_with(|| Box::new(TopicAliases::new(limits.max_topic_alias_out)));
    if let Some(alias) = table.known(&m.topic) {
        // Sent without its name: smaller than what the size check passed.
        return Some((alias, true));
    }
    // Giving it an alias sends the name and the alias: 3 bytes more, and the length
    // fields may grow by 2. A message that would then exceed the client's Maximum Packet
    // Size goes without one [MQTT-3.1.2-24].
    if too_large_by(version, *limits, m, qos, tags, 5) {
        return None;
    }
    Some((table.assign(&m.topic), false)).filter(|(a, _)| *a != 0)
}

/// A set of packet ids with a fixed-key hasher: no per-session hasher state (an
/// `AHashSet` carries 32 bytes of keys), and placement never depends on it.
type IdSet = std::collections::HashSet<u16, std::hash::BuildHasherDefault<ahash::AHasher>>;

fn encode(p: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    // Acks the session builds are always encodable; a failure would be a codec bug, and
    // dropping an ack is safer than panicking a shard.
    if let Err(e) = p.encode(version, out) {
        tracing::error!(error = %e, "failed to encode a session packet");
    }
}

/// A PUBACK, PUBREC or PUBCOMP with `reason`: the four bytes of [`write_ack`] when the
/// reason is Success or the client speaks 3.x (which has no reason codes), else a 5.0 ack
/// with its reason code.
fn write_ack_with(
    version: ProtocolVersion,
    first: u8,
    id: PacketId,
    reason: ReasonCode,
    out: &mut BytesMut,
) {
    if reason == ReasonCode::SUCCESS || !version.is_v5() {
        return write_ack(version, first, id, out);
    }
    let ack = Ack {
        packet_id: id,
        reason,
        properties: Properties::new(),
    };
    let p = match first {
        0x40 => Packet::PubAck(ack),
        0x50 => Packet::PubRec(ack),
        _ => Packet::PubComp(ack),
    };
    encode(&p, version, out);
}

/// Writes a 3.x-shaped ack (PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70): on 5.0 a
/// success ack with no properties has the same four bytes.
#[inline]
fn write_ack(_version: ProtocolVersion, first: u8, id: PacketId, out: &mut BytesMut) {
    let [hi, lo] = id.get().to_be_bytes();
    out.put_slice(&[first, 0x02, hi, lo]);
}

#[inline]
/// The properties a delivery of `m` is sent with: its own, with what is left of its
/// expiry interval and the subscription identifiers it matched (5.0 only; a clone only
/// when one of those applies).
fn outgoing_properties<'a>(
    version: ProtocolVersion,
    m: &'a Message,
    tags: Option<&Tags>,
) -> std::borrow::Cow<'a, Properties> {
    use std::borrow::Cow;
    let ids = tags.map_or(&[][..], |t| &t.identifiers[..]);
    if !version.is_v5() || (m.expires.is_none() && ids.is_empty()) {
        return Cow::Borrowed(&m.properties);
    }
    let mut p = m.properties.clone();
    if let Some(deadline) = m.expires {
        // A message with an expiry is sent with what is left of it [MQTT-3.3.2-6] (at
        // least a second: one whose delivery had started before it ran out is still
        // resent).
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let secs = u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1);
        p.get_mut().message_expiry_interval = Some(secs);
    }
    if !ids.is_empty() {
        // A publisher's own identifiers never reach here (it may not send any
        // [MQTT-3.3.4-6]); these are the receiver's [MQTT-3.3.4-3].
        p.get_mut().subscription_identifiers = ids.to_vec();
    }
    Cow::Owned(p)
}

/// What writing a delivery needs of the connection: its version, the client's limits, and
/// the connection's outbound topic aliases.
struct Wire<'a> {
    version: ProtocolVersion,
    limits: &'a SessionLimits,
    aliases: &'a mut Option<Box<TopicAliases>>,
}

/// Writes a delivery of `m`; on 5.0 under a topic alias when the client allows them (see
/// `alias_for`), the topic left out when the client already knows the alias.
#[allow(clippy::too_many_arguments)]
fn write_publish(
    wire: &mut Wire<'_>,
    m: &Message,
    qos: QoS,
    retain: bool,
    tags: Option<&Tags>,
    id: Option<PacketId>,
    dup: bool,
    out: &mut BytesMut,
) {
    let version = wire.version;
    let alias = alias_for(wire.aliases, wire.limits, version, m, qos, tags);
    let properties = outgoing_properties(version, m, tags);
    let topic = match alias {
        Some((_, true)) => "",
        _ => &m.topic,
    };
    match encode_publish_header_aliased(
        version,
        dup,
        qos,
        retain,
        topic,
        id,
        &properties,
        alias.map(|(a, _)| a),
        m.payload.len(),
        out,
    ) {
        Ok(()) => out.put_slice(&m.payload),
        Err(e) => tracing::error!(error = %e, topic = %m.topic, "failed to encode a delivery"),
    }
}

#[cfg(test)]
mod tests;
