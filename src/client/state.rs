//! The sans-I/O client state machine.
//!
//! **Owns:** everything a client must remember about its session: packet identifiers in
//! use, outgoing QoS 1/2 flows and where each one stands (PUBACK, PUBREC, PUBCOMP),
//! SUBSCRIBE and UNSUBSCRIBE awaiting their acks, incoming QoS 2 identifiers awaiting
//! PUBREL (what makes receiving exactly-once), keep-alive timing, and what to resend when a
//! connection is re-established.
//!
//! **Must not touch:** sockets, timers, wakers or tasks. Input is decoded packets, requests
//! from the application and the current time as an argument; output is bytes appended to
//! [`ClientState::output`] and [`Event`]s. The async layer ([`super::Client`]) is one
//! driver of it; a test is another.
//!
//! ## Invariants
//! - A packet identifier is in use by at most one outgoing PUBLISH/PUBREL flow or pending
//!   SUBSCRIBE/UNSUBSCRIBE at a time [MQTT-2.3.1-2]; it is free again only after the flow's
//!   final ack.
//! - An outgoing QoS 1/2 message stays in the state until its flow completes, across
//!   connection losses: nothing is dropped because a connection broke. On every successful
//!   CONNACK the state resends, in their original order, every unacknowledged PUBLISH (with
//!   DUP set if it had been sent before [MQTT-3.3.1-1]) and every PUBREL [MQTT-4.4.0-1],
//!   then every unacknowledged SUBSCRIBE and UNSUBSCRIBE (both are idempotent).
//! - An incoming QoS 2 message is delivered to the application once: the first PUBLISH
//!   with a given identifier is delivered and its identifier remembered; a redelivery with
//!   that identifier before the PUBREL is acknowledged but not delivered again.
//!
//! ## Limits
//! - Outgoing window: at most `max_inflight` QoS 1/2 flows. [`ClientState::publish`] hands
//!   the message back ([`PublishError::WindowFull`]) beyond it; the caller waits.
//! - Pending SUBSCRIBE/UNSUBSCRIBE: at most `max_pending_requests`, likewise handed back.
//! - Incoming QoS 2 identifiers: bounded by the identifier space (65,535).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ahash::{HashMap, HashMapExt, HashSet, HashSetExt};
use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use crate::protocol::{
    publish_len, Ack, ConnAck, Connect, Disconnect, EncodeError, Packet, PacketId, Properties,
    ProtocolVersion, Publish, QoS, ReasonCode, SubAck, Subscribe, Subscription, TopicFilter,
    UnsubAck, Unsubscribe,
};

/// Topic aliases the client gives the server at most, whatever CONNACK allows: each holds
/// a topic, and giving one away when all are taken scans them.
pub const MAX_ALIASES_OUT: u16 = 32;

/// Writes a PUBLISH, under a 5.0 topic alias when the connection has some (see
/// [`crate::protocol::TopicAliases`]): a topic the server knows by alias goes with an
/// empty name; a new one takes an alias unless the alias would make the packet larger
/// than the server's Maximum Packet Size. On error nothing is written and no alias given.
fn write_publish(
    version: ProtocolVersion,
    aliases: &mut Option<crate::protocol::TopicAliases>,
    server: &ServerTerms,
    p: &Publish,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let Some(table) = aliases.as_mut() else {
        return p.encode(version, out);
    };
    let len = publish_len(
        version,
        &p.topic,
        p.packet_id.is_some(),
        &p.properties,
        p.payload.len(),
    )?;
    let (topic, alias) = match table.known(&p.topic) {
        Some(a) => ("", a),
        // The alias adds 3 bytes, and the length fields may grow by 2; it is given only
        // when the packet then still encodes (within the server's Maximum Packet Size and
        // the protocol's), so the server always learns it.
        None if len + 5
            <= (server.maximum_packet_size as usize).min(crate::protocol::VARINT_MAX as usize) =>
        {
            (&*p.topic, table.assign(&p.topic))
        }
        None => return p.encode(version, out),
    };
    crate::protocol::encode_publish_header_aliased(
        version,
        p.dup,
        p.qos,
        p.retain,
        topic,
        p.packet_id,
        &p.properties,
        Some(alias).filter(|a| *a != 0),
        p.payload.len(),
        out,
    )?;
    out.put_slice(&p.payload);
    Ok(())
}

/// Writes an unfinished flow's PUBLISH again (DUP when it went out on an earlier
/// connection).
fn write_again(
    version: ProtocolVersion,
    aliases: &mut Option<crate::protocol::TopicAliases>,
    server: &ServerTerms,
    f: &mut OutFlight,
    out: &mut BytesMut,
) {
    f.publish.dup = f.sent;
    // Encoded once already (checked in `publish`).
    let _ = write_publish(version, aliases, server, &f.publish, out);
    f.sent = true;
    f.waiting = false;
}

/// Packet identifiers held at once, below the 65,535 that exist, so one is always free.
const MAX_IDS_IN_USE: usize = 65_000;

/// Identifies one application request (a QoS 1/2 publish, a subscribe or an unsubscribe)
/// for its whole life, unlike a packet identifier, which is reused once free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// Protocol version spoken on every connection of this session.
    pub version: ProtocolVersion,
    /// Keep alive announced in CONNECT; zero disables pings.
    pub keep_alive: Duration,
    /// How long a PINGREQ may go unanswered before the connection is declared dead.
    pub ping_timeout: Duration,
    /// Outgoing QoS 1/2 flows at once.
    pub max_inflight: u16,
    /// SUBSCRIBE and UNSUBSCRIBE requests awaiting their ack at once.
    pub max_pending_requests: u16,
    /// 5.0 enhanced authentication: the method and the answer to each challenge.
    pub auth: Option<Responder>,
}

/// The client's side of 5.0 enhanced authentication: its method, and what it answers to
/// each challenge (AUTH 0x18) the server sends with some Authentication Data, during
/// CONNECT and on re-authentication (5.0 §4.12). The answer runs on the driver's task with
/// the client's state locked: it must be quick and must not call the client.
#[derive(Clone)]
pub struct Responder {
    /// The Authentication Method of the CONNECT.
    pub method: ByteString,
    /// Answers a challenge's data with the data of the client's AUTH 0x18.
    pub respond: RespondFn,
}

/// What answers an enhanced authentication challenge (see [`Responder`]).
pub type RespondFn = std::sync::Arc<dyn Fn(Option<&[u8]>) -> Option<bytes::Bytes> + Send + Sync>;

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            version: ProtocolVersion::V3_1_1,
            keep_alive: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            max_inflight: 128,
            max_pending_requests: 1024,
            auth: None,
        }
    }
}

/// Where the current connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No connection (before the first, between reconnects, after a disconnect).
    Disconnected,
    /// CONNECT written; waiting for CONNACK.
    AwaitConnAck,
    /// CONNACK accepted the connection.
    Connected,
}

/// Something the application (or the async layer) must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A CONNACK accepted the connection. Resends have already been written.
    Connected(ConnAck),
    /// An application message from the server.
    Message(Publish),
    /// A QoS 1/2 publish completed: PUBACK or PUBCOMP arrived (`Ok`, with the PUBACK's
    /// success code: 5.0 may say 0x10, no matching subscribers), or the server refused it
    /// with a 5.0 reason code in PUBACK or PUBREC (`Err`).
    PublishDone {
        /// The request.
        token: Token,
        /// Outcome.
        result: Result<ReasonCode, ReasonCode>,
    },
    /// SUBACK: one code per requested filter (granted QoS 0/1/2 or a failure code).
    SubAck {
        /// The request.
        token: Token,
        /// Codes in request order.
        codes: Vec<ReasonCode>,
    },
    /// UNSUBACK (codes are empty on 3.x).
    UnsubAck {
        /// The request.
        token: Token,
        /// 5.0 reason codes.
        codes: Vec<ReasonCode>,
    },
}

/// A request the state cannot take now; the message or filters are handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// The outgoing window is full; retry after a [`Event::PublishDone`].
    WindowFull(Publish),
    /// QoS 0 while no connection is up: it would be lost, so it is not taken.
    NotConnected(Publish),
    /// 5.0: beyond what the server said it takes (QoS above its Maximum QoS: 0x9B, RETAIN
    /// where it keeps none: 0x9A, larger than its Maximum Packet Size: 0x95).
    NotAllowed(ReasonCode, Publish),
    /// The message cannot be encoded (e.g. larger than the protocol allows).
    Encode(EncodeError, Publish),
}

/// A request refused because too many SUBSCRIBE/UNSUBSCRIBE are pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestsFull;

/// The server broke the protocol; the connection must be closed ([MQTT-4.8.0-1]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// A packet a server never sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ), or a
    /// packet other than CONNACK before CONNACK [MQTT-3.2.0-1].
    #[error("unexpected {0} from the server (3.1.1 §3.2, [MQTT-3.2.0-1])")]
    Unexpected(&'static str),
    /// Session Present set although the client asked for a clean session [MQTT-3.2.2-1].
    #[error("CONNACK with Session Present set in reply to a clean session [MQTT-3.2.2-1]")]
    SessionPresentOnClean,
    /// 5.0: an AUTH with another Authentication Method than the CONNECT's, a reason other
    /// than 0x18 (or 0x00 after a re-authentication), or to a client that named no method
    /// (5.0 §4.12).
    #[error("unexpected AUTH from the server (5.0 §4.12)")]
    Auth,
    /// 5.0: a PUBLISH with a Topic Alias of 0 or above the client's Topic Alias Maximum
    /// [MQTT-3.3.2-9], or an empty topic with an alias the server never set (5.0
    /// §3.3.2.3.4).
    #[error("PUBLISH with an invalid or unknown topic alias {0} [MQTT-3.3.2-9]")]
    TopicAlias(u16),
    /// A SUBACK whose code count differs from the SUBSCRIBE's filter count [MQTT-3.9.3-1].
    #[error("SUBACK has {got} codes for {want} filters [MQTT-3.9.3-1]")]
    SubAckCount {
        /// Filters requested.
        want: usize,
        /// Codes received.
        got: usize,
    },
}

/// What a 5.0 server said about itself in CONNACK, with the protocol's defaults for what
/// it left out (and for 3.x, which says nothing): the client keeps within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTerms {
    /// QoS 1/2 publishes the server takes at once (Receive Maximum) [MQTT-3.3.4-7].
    pub receive_maximum: u16,
    /// Largest packet the server accepts [MQTT-3.2.2-15].
    pub maximum_packet_size: u32,
    /// Topic aliases the client may use towards the server [MQTT-3.2.2-17].
    pub topic_alias_maximum: u16,
    /// Keep alive the server requires instead of the client's, seconds [MQTT-3.2.2-21].
    pub keep_alive: Option<u16>,
    /// Highest QoS the server takes [MQTT-3.2.2-11].
    pub maximum_qos: QoS,
    /// Whether the server keeps retained messages [MQTT-3.2.2-14].
    pub retain_available: bool,
}

impl Default for ServerTerms {
    fn default() -> Self {
        ServerTerms {
            receive_maximum: u16::MAX,
            maximum_packet_size: u32::MAX,
            topic_alias_maximum: 0,
            keep_alive: None,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
        }
    }
}

impl ServerTerms {
    fn of(ack: &ConnAck) -> ServerTerms {
        let p = &ack.properties;
        let d = ServerTerms::default();
        ServerTerms {
            receive_maximum: p.receive_maximum.unwrap_or(d.receive_maximum),
            maximum_packet_size: p.maximum_packet_size.unwrap_or(d.maximum_packet_size),
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            keep_alive: p.server_keep_alive,
            maximum_qos: p.maximum_qos.unwrap_or(d.maximum_qos),
            retain_available: p.retain_available.unwrap_or(true),
        }
    }
}

/// The CONNACK refused the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection refused: {} ({:#04x})", .0.name(), .0.0)]
pub struct Refused(pub ReasonCode);

/// What [`ClientState::handle`] can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The server broke the protocol.
    #[error(transparent)]
    Protocol(#[from] ProtocolViolation),
    /// The connection was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// The keep-alive deadline passed with a PINGREQ unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no PINGRESP within {0:?}: the server or the path to it is dead")]
pub struct PingTimeout(pub Duration);

/// The ack an outgoing flow waits for.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    PubAck,
    PubRec,
    PubComp,
}

#[derive(Debug)]
struct OutFlight {
    token: Token,
    publish: Publish,
    stage: Stage,
    /// Written on some connection already: a resend carries DUP.
    sent: bool,
    /// Held back after a reconnect by the server's Receive Maximum: written, in order, as
    /// acks make room [MQTT-3.3.4-7].
    waiting: bool,
}

#[derive(Debug)]
struct Pending {
    token: Token,
    packet: Packet,
    /// For SUBSCRIBE: the number of filters, to check the SUBACK.
    filters: usize,
}

/// The client side of one MQTT session. See the module documentation.
#[derive(Debug)]
pub struct ClientState {
    opts: StateOptions,
    phase: Phase,
    /// Clean-session flag of the CONNECT in progress.
    clean: bool,
    out: BytesMut,
    events: VecDeque<Event>,
    next_pid: u16,
    next_token: u64,
    outgoing: HashMap<u16, OutFlight>,
    pending: HashMap<u16, Pending>,
    incoming_qos2: HashSet<u16>,
    /// What the current connection's server allows (5.0 CONNACK).
    server: ServerTerms,
    /// Topic aliases the client announced it takes (its CONNECT's Topic Alias Maximum).
    alias_max_in: u16,
    /// The server's topic aliases on this connection, by alias - 1 [MQTT-3.3.2-7].
    aliases_in: Vec<Option<crate::protocol::TopicName>>,
    /// The reason of the server's 5.0 DISCONNECT on this connection, if it sent one.
    disconnect_reason: Option<ReasonCode>,
    /// A re-authentication this client started is under way (only the client starts one,
    /// 5.0 §4.12.1).
    reauthenticating: bool,
    /// Topic aliases the client gives the server on this connection (5.0, when CONNACK
    /// allows some; at most [`MAX_ALIASES_OUT`]).
    aliases_out: Option<crate::protocol::TopicAliases>,
    last_write: Option<Instant>,
    last_read: Option<Instant>,
    ping_sent: Option<Instant>,
}

impl ClientState {
    /// A session with nothing in flight.
    pub fn new(opts: StateOptions) -> ClientState {
        ClientState {
            opts,
            phase: Phase::Disconnected,
            clean: true,
            out: BytesMut::with_capacity(4096),
            events: VecDeque::new(),
            next_pid: 0,
            next_token: 0,
            outgoing: HashMap::new(),
            pending: HashMap::new(),
            incoming_qos2: HashSet::new(),
            server: ServerTerms::default(),
            alias_max_in: 0,
            aliases_in: Vec::new(),
            disconnect_reason: None,
            reauthenticating: false,
            aliases_out: None,
            last_write: None,
            last_read: None,
            ping_sent: None,
        }
    }

    /// The settings in force.
    pub fn options(&self) -> &StateOptions {
        &self.opts
    }

    /// Where the current connection stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Bytes to write, in order. The driver takes them (e.g. with `split()`).
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Outgoing QoS 1/2 flows not yet complete.
    pub fn inflight(&self) -> usize {
        self.outgoing.len()
    }

    /// What the server of the current (or last) connection allows.
    pub fn server(&self) -> &ServerTerms {
        &self.server
    }

    /// The reason code of the 5.0 DISCONNECT the server sent on this connection, if any.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        self.disconnect_reason
    }

    /// Whether a QoS 1/2 publish would be taken now.
    pub fn window_open(&self) -> bool {
        // The second bound keeps a packet identifier free whatever `max_inflight` is, so
        // `alloc_pid` always finds one. A 5.0 server's Receive Maximum bounds it too
        // [MQTT-3.3.4-7].
        self.outgoing.len() < usize::from(self.opts.max_inflight.min(self.server.receive_maximum))
            && self.outgoing.len() + self.pending.len() < MAX_IDS_IN_USE
    }

    /// Whether a SUBSCRIBE/UNSUBSCRIBE would be taken now.
    pub fn requests_open(&self) -> bool {
        self.pending.len() < usize::from(self.opts.max_pending_requests)
            && self.pending.len() + self.outgoing.len() < MAX_IDS_IN_USE
    }

    /// SUBSCRIBE and UNSUBSCRIBE requests awaiting their acks.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Incoming QoS 2 identifiers awaiting PUBREL.
    pub fn incoming_qos2(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Packet identifiers in use now (for tests and assertions).
    pub fn packet_ids_in_use(&self) -> impl Iterator<Item = u16> + '_ {
        self.outgoing.keys().chain(self.pending.keys()).copied()
    }

    /// Starts a connection: discards output of the previous one and writes `connect`.
    /// With a clean session the incoming QoS 2 identifiers are forgotten (the server
    /// forgets them too); outgoing messages are kept and sent again after CONNACK, so a
    /// clean reconnect does not silently lose what the application handed over.
    pub fn start_connect(&mut self, connect: &Connect) -> Result<(), EncodeError> {
        self.out.clear();
        self.clean = connect.clean_start;
        if connect.clean_start {
            self.incoming_qos2.clear();
        }
        self.ping_sent = None;
        self.last_write = None;
        self.last_read = None;
        self.phase = Phase::AwaitConnAck;
        // A new connection: its own terms and aliases.
        self.server = ServerTerms::default();
        self.alias_max_in = if self.opts.version.is_v5() {
            connect.properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        };
        self.aliases_in.clear();
        self.aliases_out = None;
        self.disconnect_reason = None;
        self.reauthenticating = false;
        Packet::Connect(Box::new(connect.clone())).encode(self.opts.version, &mut self.out)
    }

    /// The connection is gone (I/O error, timeout, protocol violation, or after our
    /// DISCONNECT). Unwritten output is discarded; flows stay for the next connection.
    pub fn connection_lost(&mut self) {
        self.phase = Phase::Disconnected;
        self.out.clear();
        self.ping_sent = None;
    }

    /// Writes DISCONNECT; the driver flushes it and closes the connection.
    pub fn disconnect(&mut self) {
        if self.phase == Phase::Connected {
            // A DISCONNECT without properties always encodes.
            let _ =
                Packet::Disconnect(Disconnect::default()).encode(self.opts.version, &mut self.out);
        }
        self.phase = Phase::Disconnected;
    }

    /// Removes every outstanding request and returns their tokens, for failing them when
    /// the session ends for good.
    pub fn drain_requests(&mut self) -> Vec<Token> {
        let mut tokens: Vec<Token> = self
            .outgoing
            .drain()
            .map(|(_, f)| f.token)
            .chain(self.pending.drain().map(|(_, p)| p.token))
            .collect();
        tokens.sort();
        tokens
    }

    fn next_token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// The next free packet identifier. Callers bound `outgoing + pending` below 65,535,
    /// so the search ends.
    fn alloc_pid(&mut self) -> PacketId {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            let Some(pid) = PacketId::new(self.next_pid) else {
                continue;
            };
            if !self.outgoing.contains_key(&pid.get()) && !self.pending.contains_key(&pid.get()) {
                return pid;
            }
        }
    }

    /// Takes a message to publish. QoS 0 is written at once (only while connected); QoS 1/2
    /// gets a packet identifier and a place in the window, is written at once if connected
    /// and otherwise after the next CONNACK, and completes with [`Event::PublishDone`].
    /// `publish.packet_id` and `publish.dup` are set here.
    pub fn publish(&mut self, mut publish: Publish) -> Result<Option<Token>, PublishError> {
        publish.dup = false;
        if self.opts.version.is_v5() {
            if let Some(code) = self.not_allowed(&publish) {
                return Err(PublishError::NotAllowed(code, publish));
            }
        }
        if publish.qos == QoS::AtMostOnce {
            if self.phase != Phase::Connected {
                return Err(PublishError::NotConnected(publish));
            }
            publish.packet_id = None;
            // On error nothing has been written.
            if let Err(e) = self.write_publish(&publish) {
                return Err(PublishError::Encode(e, publish));
            }
            return Ok(None);
        }
        if !self.window_open() {
            return Err(PublishError::WindowFull(publish));
        }
        let pid = self.alloc_pid();
        publish.packet_id = Some(pid);
        let connected = self.phase == Phase::Connected;
        if connected {
            if let Err(e) = self.write_publish(&publish) {
                publish.packet_id = None;
                return Err(PublishError::Encode(e, publish));
            }
        } else if let Err(e) = publish_len(
            self.opts.version,
            &publish.topic,
            true,
            &publish.properties,
            publish.payload.len(),
        ) {
            // Check the size now, not at resend time, so the caller hears of it.
            publish.packet_id = None;
            return Err(PublishError::Encode(e, publish));
        }
        let token = self.next_token();
        let stage = if publish.qos == QoS::AtLeastOnce {
            Stage::PubAck
        } else {
            Stage::PubRec
        };
        self.outgoing.insert(
            pid.get(),
            OutFlight {
                token,
                publish,
                stage,
                sent: connected,
                waiting: false,
            },
        );
        Ok(Some(token))
    }

    /// Writes a PUBLISH on this connection (see [`write_publish`]).
    fn write_publish(&mut self, p: &Publish) -> Result<(), EncodeError> {
        write_publish(
            self.opts.version,
            &mut self.aliases_out,
            &self.server,
            p,
            &mut self.out,
        )
    }

    /// What in `publish` the current server said it does not take (5.0).
    fn not_allowed(&self, publish: &Publish) -> Option<ReasonCode> {
        if publish.qos > self.server.maximum_qos {
            return Some(ReasonCode::QOS_NOT_SUPPORTED);
        }
        if publish.retain && !self.server.retain_available {
            return Some(ReasonCode::RETAIN_NOT_SUPPORTED);
        }
        if self.server.maximum_packet_size != u32::MAX {
            let n = publish_len(
                self.opts.version,
                &publish.topic,
                publish.qos != QoS::AtMostOnce,
                &publish.properties,
                publish.payload.len(),
            )
            .unwrap_or(usize::MAX);
            if n > self.server.maximum_packet_size as usize {
                return Some(ReasonCode::PACKET_TOO_LARGE);
            }
        }
        None
    }

    /// Takes a SUBSCRIBE; completes with [`Event::SubAck`].
    pub fn subscribe(&mut self, subscriptions: Vec<Subscription>) -> Result<Token, RequestsFull> {
        self.subscribe_with(subscriptions, Properties::new())
    }

    /// Takes a SUBSCRIBE with 5.0 properties (a Subscription Identifier, user
    /// properties); completes with [`Event::SubAck`].
    pub fn subscribe_with(
        &mut self,
        subscriptions: Vec<Subscription>,
        properties: Properties,
    ) -> Result<Token, RequestsFull> {
        self.request(|pid| {
            let n = subscriptions.len();
            (
                Packet::Subscribe(Subscribe {
                    packet_id: pid,
                    subscriptions,
                    properties,
                }),
                n,
            )
        })
    }

    /// Takes an UNSUBSCRIBE; completes with [`Event::UnsubAck`].
    pub fn unsubscribe(&mut self, filters: Vec<TopicFilter>) -> Result<Token, RequestsFull> {
        self.request(|pid| {
            (
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: pid,
                    filters,
                    properties: Properties::new(),
                }),
                0,
            )
        })
    }

    fn request(
        &mut self,
        build: impl FnOnce(PacketId) -> (Packet, usize),
    ) -> Result<Token, RequestsFull> {
        if !self.requests_open() {
            return Err(RequestsFull);
        }
        let pid = self.alloc_pid();
        let (packet, filters) = build(pid);
        if self.phase == Phase::Connected {
            // SUBSCRIBE/UNSUBSCRIBE built from valid filters always encode.
            let _ = packet.encode(self.opts.version, &mut self.out);
        }
        let token = self.next_token();
        self.pending.insert(
            pid.get(),
            Pending {
                token,
                packet,
                filters,
            },
        );
        Ok(token)
    }

    /// Feeds one packet from the server.
    pub fn handle(&mut self, packet: Packet, now: Instant) -> Result<(), HandleError> {
        self.last_read = Some(now);
        if self.phase == Phase::AwaitConnAck {
            return match packet {
                Packet::ConnAck(ack) => self.connack(ack),
                // The enhanced authentication exchange comes before CONNACK.
                Packet::Auth(a) => Ok(self.on_auth(a, false)?),
                _ => Err(ProtocolViolation::Unexpected("packet before CONNACK").into()),
            };
        }
        match packet {
            Packet::Publish(mut p) => {
                if self.opts.version.is_v5() {
                    self.resolve_alias(&mut p)?;
                }
                self.incoming_publish(p)
            }
            Packet::PubAck(a) => {
                // A flow held back by the window was not sent on this connection: an ack
                // for its id is a stray one (ignored, as for an unknown id).
                if let Some(f) = self.outgoing.get(&a.packet_id.get()).filter(|f| !f.waiting) {
                    if f.stage == Stage::PubAck {
                        let token = f.token;
                        self.outgoing.remove(&a.packet_id.get());
                        let result = if a.reason.is_success() {
                            Ok(a.reason)
                        } else {
                            Err(a.reason)
                        };
                        self.events.push_back(Event::PublishDone { token, result });
                        self.send_waiting();
                    }
                }
                // An ack for an identifier not in flight is ignored (as mosquitto's
                // library does): it cannot complete anything.
            }
            Packet::PubRec(a) => {
                let pid = a.packet_id;
                match self.outgoing.get_mut(&pid.get()) {
                    Some(f)
                        if !f.waiting
                            && (f.stage == Stage::PubRec || f.stage == Stage::PubComp) =>
                    {
                        if f.stage == Stage::PubRec && !a.reason.is_success() {
                            // 5.0: the server refused the message; the flow ends here.
                            let token = f.token;
                            self.outgoing.remove(&pid.get());
                            self.events.push_back(Event::PublishDone {
                                token,
                                result: Err(a.reason),
                            });
                            self.send_waiting();
                        } else {
                            f.stage = Stage::PubComp;
                            // Payload no longer needed: free it early.
                            f.publish.payload = bytes::Bytes::new();
                            self.write_ack(Packet::PubRel(Ack::new(pid)));
                        }
                    }
                    _ => {}
                }
            }
            Packet::PubRel(a) => {
                self.incoming_qos2.remove(&a.packet_id.get());
                // Answer even for an unknown identifier: the server may resend PUBREL after a
                // reconnect whose PUBCOMP we already wrote.
                self.write_ack(Packet::PubComp(Ack::new(a.packet_id)));
            }
            Packet::PubComp(a) => {
                if let Some(f) = self.outgoing.get(&a.packet_id.get()) {
                    if f.stage == Stage::PubComp {
                        let token = f.token;
                        self.outgoing.remove(&a.packet_id.get());
                        self.events.push_back(Event::PublishDone {
                            token,
                            result: Ok(ReasonCode::SUCCESS),
                        });
                        self.send_waiting();
                    }
                }
            }
            Packet::SubAck(s) => self.suback(s)?,
            Packet::UnsubAck(u) => self.unsuback(u),
            Packet::PingResp => self.ping_sent = None,
            Packet::ConnAck(_) => {
                return Err(ProtocolViolation::Unexpected("second CONNACK").into())
            }
            Packet::Disconnect(d) => {
                // 5.0 server-initiated DISCONNECT; the driver sees the close next and
                // reports this reason.
                self.disconnect_reason = Some(d.reason);
            }
            Packet::Connect(_) => return Err(ProtocolViolation::Unexpected("CONNECT").into()),
            Packet::Subscribe(_) => return Err(ProtocolViolation::Unexpected("SUBSCRIBE").into()),
            Packet::Unsubscribe(_) => {
                return Err(ProtocolViolation::Unexpected("UNSUBSCRIBE").into())
            }
            Packet::PingReq => return Err(ProtocolViolation::Unexpected("PINGREQ").into()),
            Packet::Auth(a) => self.on_auth(a, true)?,
        }
        Ok(())
    }

    fn connack(&mut self, ack: ConnAck) -> Result<(), HandleError> {
        if !ack.reason.is_success() {
            self.phase = Phase::Disconnected;
            return Err(Refused(ack.reason).into());
        }
        if self.clean && ack.session_present {
            self.phase = Phase::Disconnected;
            return Err(ProtocolViolation::SessionPresentOnClean.into());
        }
        // 3.1 has no Session Present flag: its absence says nothing there, and forgetting
        // the identifiers would deliver a resent QoS 2 message twice.
        let flag_known = self.opts.version != ProtocolVersion::V3_1;
        if !ack.session_present && (flag_known || self.clean) {
            // The server has no record of PUBLISHes it received at QoS 2: it will not
            // resend a PUBREL, and a new message may reuse an identifier.
            self.incoming_qos2.clear();
        }
        if self.opts.version.is_v5() {
            self.server = ServerTerms::of(&ack);
            let max = self.server.topic_alias_maximum.min(MAX_ALIASES_OUT);
            self.aliases_out = (max > 0).then(|| crate::protocol::TopicAliases::new(max));
        }
        self.phase = Phase::Connected;
        self.resend();
        self.events.push_back(Event::Connected(ack));
        Ok(())
    }

    /// An AUTH from the server: a challenge is answered by the responder (AUTH 0x18 with
    /// the same method); 0x00 ends a re-authentication (after CONNACK only).
    fn on_auth(
        &mut self,
        a: crate::protocol::Auth,
        connected: bool,
    ) -> Result<(), ProtocolViolation> {
        let Some(r) = &self.opts.auth else {
            return Err(ProtocolViolation::Auth);
        };
        if a.properties.authentication_method.as_deref() != Some(&*r.method)
            || (connected && !self.reauthenticating)
        {
            return Err(ProtocolViolation::Auth);
        }
        match a.reason {
            ReasonCode::CONTINUE_AUTHENTICATION => {
                let data = (r.respond)(a.properties.authentication_data.as_deref());
                let method = r.method.clone();
                self.write_auth(ReasonCode::CONTINUE_AUTHENTICATION, method, data);
                Ok(())
            }
            ReasonCode::SUCCESS if connected => {
                self.reauthenticating = false;
                Ok(())
            }
            _ => Err(ProtocolViolation::Auth),
        }
    }

    /// 5.0: starts a re-authentication (AUTH 0x19 with the method and `data`); the server
    /// answers with challenges (answered by the responder) and AUTH 0x00, or DISCONNECT
    /// when it fails. False when not connected or no method was named.
    pub fn reauthenticate(&mut self, data: Option<bytes::Bytes>) -> bool {
        let Some(method) = self.opts.auth.as_ref().map(|r| r.method.clone()) else {
            return false;
        };
        if self.phase != Phase::Connected {
            return false;
        }
        self.reauthenticating = true;
        self.write_auth(ReasonCode::REAUTHENTICATE, method, data);
        true
    }

    fn write_auth(&mut self, reason: ReasonCode, method: ByteString, data: Option<bytes::Bytes>) {
        let mut properties = Properties::new();
        properties.get_mut().authentication_method = Some(method);
        properties.get_mut().authentication_data = data;
        // Properties the client built always encode.
        let _ = Packet::Auth(crate::protocol::Auth { reason, properties })
            .encode(self.opts.version, &mut self.out);
    }

    /// 5.0: resolves and removes the server's topic alias (an empty topic takes its
    /// alias's; a topic with an alias sets it), so the application sees full topics.
    fn resolve_alias(&mut self, p: &mut Publish) -> Result<(), ProtocolViolation> {
        let Some(alias) = p.properties.topic_alias else {
            return Ok(());
        };
        let Some(slot) = usize::from(alias)
            .checked_sub(1)
            .filter(|_| alias <= self.alias_max_in)
        else {
            return Err(ProtocolViolation::TopicAlias(alias));
        };
        if p.topic.is_empty() {
            p.topic = self
                .aliases_in
                .get(slot)
                .cloned()
                .flatten()
                .ok_or(ProtocolViolation::TopicAlias(alias))?;
        } else {
            if self.aliases_in.len() <= slot {
                self.aliases_in.resize(slot + 1, None);
            }
            if let Some(a) = self.aliases_in.get_mut(slot) {
                // Kept for the connection: its own bytes, not a slice of a read buffer.
                *a = Some(p.topic.detached());
            }
        }
        p.properties.get_mut().topic_alias = None;
        Ok(())
    }

    /// The keep alive in force: the server's, when it set one [MQTT-3.2.2-21].
    fn keep_alive(&self) -> Duration {
        match self.server.keep_alive {
            Some(k) => Duration::from_secs(u64::from(k)),
            None => self.opts.keep_alive,
        }
    }

    /// Writes every unfinished flow and request again, oldest first (tokens grow with
    /// submission order), within the new server's terms: PUBRELs always (their flows count
    /// against the window already), PUBLISHes while the server's Receive Maximum has room
    /// (the rest wait, see `send_waiting`); a PUBLISH the new server does not take (its
    /// Maximum QoS, Retain Available or Maximum Packet Size) fails with that code.
    fn resend(&mut self) {
        if self.opts.version.is_v5() {
            let refused: Vec<(u16, ReasonCode)> = self
                .outgoing
                .iter()
                .filter(|(_, f)| f.stage != Stage::PubComp)
                .filter_map(|(pid, f)| self.not_allowed(&f.publish).map(|c| (*pid, c)))
                .collect();
            for (pid, code) in refused {
                if let Some(f) = self.outgoing.remove(&pid) {
                    self.events.push_back(Event::PublishDone {
                        token: f.token,
                        result: Err(code),
                    });
                }
            }
        }
        let window = usize::from(self.server.receive_maximum);
        let mut in_flight = self
            .outgoing
            .values()
            .filter(|f| f.stage == Stage::PubComp)
            .count();
        let mut order: Vec<(Token, u16, bool)> = self
            .outgoing
            .iter()
            .map(|(pid, f)| (f.token, *pid, true))
            .chain(self.pending.iter().map(|(pid, p)| (p.token, *pid, false)))
            .collect();
        order.sort_unstable();
        let version = self.opts.version;
        for (_, pid, is_flow) in order {
            if is_flow {
                let Some(f) = self.outgoing.get_mut(&pid) else {
                    continue;
                };
                match f.stage {
                    Stage::PubAck | Stage::PubRec if in_flight >= window => f.waiting = true,
                    Stage::PubAck | Stage::PubRec => {
                        write_again(
                            version,
                            &mut self.aliases_out,
                            &self.server,
                            f,
                            &mut self.out,
                        );
                        in_flight += 1;
                    }
                    Stage::PubComp => {
                        if let Some(id) = PacketId::new(pid) {
                            let _ = Packet::PubRel(Ack::new(id)).encode(version, &mut self.out);
                        }
                    }
                }
            } else if let Some(p) = self.pending.get(&pid) {
                let _ = p.packet.encode(version, &mut self.out);
            }
        }
    }

    /// Writes flows a reconnect held back (see `resend`), oldest first, while the server's
    /// Receive Maximum has room.
    fn send_waiting(&mut self) {
        let mut waiting: Vec<(Token, u16)> = self
            .outgoing
            .iter()
            .filter(|(_, f)| f.waiting)
            .map(|(pid, f)| (f.token, *pid))
            .collect();
        if waiting.is_empty() || self.phase != Phase::Connected {
            return;
        }
        waiting.sort_unstable();
        let in_flight = self.outgoing.len() - waiting.len();
        let room = usize::from(self.server.receive_maximum).saturating_sub(in_flight);
        let version = self.opts.version;
        for (_, pid) in waiting.into_iter().take(room) {
            if let Some(f) = self.outgoing.get_mut(&pid) {
                write_again(
                    version,
                    &mut self.aliases_out,
                    &self.server,
                    f,
                    &mut self.out,
                );
            }
        }
    }

    fn incoming_publish(&mut self, p: Publish) {
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => self.events.push_back(Event::Message(p)),
            (QoS::AtLeastOnce, Some(pid)) => {
                self.events.push_back(Event::Message(p));
                self.write_ack(Packet::PubAck(Ack::new(pid)));
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                if self.incoming_qos2.insert(pid.get()) {
                    self.events.push_back(Event::Message(p));
                }
                self.write_ack(Packet::PubRec(Ack::new(pid)));
            }
        }
    }

    fn suback(&mut self, s: SubAck) -> Result<(), ProtocolViolation> {
        let Some(p) = self.pending.get(&s.packet_id.get()) else {
            return Ok(());
        };
        if !matches!(p.packet, Packet::Subscribe(_)) {
            return Ok(());
        }
        if p.filters != s.codes.len() {
            return Err(ProtocolViolation::SubAckCount {
                want: p.filters,
                got: s.codes.len(),
            });
        }
        let token = p.token;
        self.pending.remove(&s.packet_id.get());
        self.events.push_back(Event::SubAck {
            token,
            codes: s.codes,
        });
        Ok(())
    }

    fn unsuback(&mut self, u: UnsubAck) {
        if let Some(p) = self.pending.get(&u.packet_id.get()) {
            if matches!(p.packet, Packet::Unsubscribe(_)) {
                let token = p.token;
                self.pending.remove(&u.packet_id.get());
                self.events.push_back(Event::UnsubAck {
                    token,
                    codes: u.codes,
                });
            }
        }
    }

    fn write_ack(&mut self, p: Packet) {
        // Acks without properties always encode.
        let _ = p.encode(self.opts.version, &mut self.out);
    }

    /// The driver wrote bytes at `now` (keep alive counts from the last packet sent).
    pub fn note_write(&mut self, now: Instant) {
        self.last_write = Some(now);
    }

    /// When [`ClientState::handle_timeout`] must next be called, if ever.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Connected || self.keep_alive().is_zero() {
            return None;
        }
        if let Some(sent) = self.ping_sent {
            return Some(sent + self.opts.ping_timeout);
        }
        // Ping when nothing went out, or nothing came in, for a keep-alive period (as
        // mosquitto's library does): a publisher that only writes still notices a dead
        // server.
        let last = match (self.last_write, self.last_read) {
            (Some(w), Some(r)) => w.min(r),
            (a, b) => a.or(b)?,
        };
        Some(last + self.keep_alive())
    }

    /// Sends PINGREQ when keep alive requires it; fails when a PINGREQ went unanswered for
    /// `ping_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PingTimeout> {
        if self.phase != Phase::Connected || self.keep_alive().is_zero() {
            return Ok(());
        }
        if let Some(sent) = self.ping_sent {
            if now >= sent + self.opts.ping_timeout {
                return Err(PingTimeout(self.opts.ping_timeout));
            }
            return Ok(());
        }
        if self.next_timeout().is_some_and(|t| now >= t) {
            self.write_ack(Packet::PingReq);
            self.ping_sent = Some(now);
        }
        Ok(())
    }
}
