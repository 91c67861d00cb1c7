//! The MQTT client library: an async client for any executor, on a sans-I/O core.
//!
//! **Owns:** the client side of MQTT 3.1 / 3.1.1 / 5.0 sessions. [`state`] is the protocol state
//! machine (packet identifiers, QoS 1/2 flows in both directions, exactly-once receive,
//! keep alive, what to resend after a reconnect) and does no I/O. The rest of this module
//! drives it over any `futures::AsyncRead + AsyncWrite` transport.
//!
//! **Must not touch:** the broker. The client speaks MQTT through [`crate::protocol`] only,
//! so it works against any broker (the tests run it against SurgeMQ and mosquitto).
//!
//! ## Shape
//!
//! [`connect`] opens a transport through a [`Connector`], performs the CONNECT / CONNACK
//! exchange and returns a [`Connected`]: a cloneable [`Client`] handle, the [`Messages`]
//! stream, the CONNACK's session-present flag, and the [`Driver`], a future the caller
//! spawns on its executor (glommio, tokio, smol...). The driver owns the socket; the
//! handles talk to it through one small mutex-protected state, so a publish is a lock, an
//! encode into the shared output buffer and, only when the driver is idle, a wake-up.
//! [`glommio_connect`] does all of that for glommio TCP in one call.
//!
//! ```no_run
//! use surgemq::client::{glommio_connect, ConnectOptions};
//! use surgemq::protocol::QoS;
//! use futures::StreamExt;
//!
//! glommio::LocalExecutor::default().run(async {
//!     let (client, mut messages, _session_present) =
//!         glommio_connect("127.0.0.1:1883", ConnectOptions::new("sensor-1")).await?;
//!     client.subscribe("alerts/#", QoS::AtLeastOnce).await?;
//!     client.publish("sensors/1/temp", "21.5", QoS::AtLeastOnce, false).await?; // PUBACK'd
//!     if let Some(m) = messages.next().await {
//!         println!("{}: {:?}", m.topic, m.payload);
//!     }
//!     client.disconnect().await
//! }).unwrap();
//! # Ok::<(), surgemq::client::ClientError>(())
//! ```
//!
//! ## Guarantees and limits
//!
//! - `publish` at QoS 1 completes on PUBACK, at QoS 2 on PUBCOMP, at QoS 0 once the
//!   message is in the output buffer.
//! - Bounded everywhere, with back-pressure instead of growth: at most
//!   [`ConnectOptions::max_inflight`] QoS 1/2 publishes are in flight and at most
//!   [`ConnectOptions::max_buffered_bytes`] wait to be written; a `publish` beyond either
//!   waits. Received messages wait for the application in two batches of at most
//!   [`ConnectOptions::incoming_capacity`] each (the one [`Messages`] is handing out and the
//!   one the driver fills); when the driver's is full it stops reading the socket (one
//!   read's worth may overshoot), which pushes back on the broker through TCP.
//! - With [`ConnectOptions::reconnect`], a lost connection is re-established with
//!   exponential back-off; in-flight QoS 1/2 messages are resent with DUP (and PUBRELs
//!   resent), pending requests stay pending, and if the broker lost the session the
//!   client's subscriptions are renewed. Without it, the driver ends and everything
//!   pending fails with the cause.
//! - A broker that stops answering is detected: PINGREQ after a keep-alive period without
//!   traffic either way, and the connection is declared dead when the PINGRESP does not
//!   come within [`ConnectOptions::ping_timeout`].
//!
//! ## MQTT 5.0
//!
//! With [`ConnectOptions::version`] 5.0: CONNECT properties (session expiry, Receive
//! Maximum, Topic Alias Maximum, Request Response Information, user properties; will
//! properties and delay), PUBLISH properties both ways ([`Client::publish_with`] returns
//! the broker's success code, 0x10 included; a refusal is
//! [`ClientError::PublishRefused`]), subscription options and identifiers
//! ([`Client::subscribe_opts`]), shared subscriptions (`$share/{group}/{filter}`), topic
//! aliases from the broker resolved (messages always carry their topic), request /
//! response ([`Client::request`], [`Client::respond`]), and the broker's DISCONNECT
//! reason as [`ClientError::Disconnected`]. What CONNACK says is kept: its Receive
//! Maximum bounds the window, a publish above its Maximum QoS, against Retain Available
//! or beyond its Maximum Packet Size is refused before it is sent, and Server Keep Alive
//! replaces the client's ([`Client::server_terms`]). The client gives the broker topic
//! aliases when CONNACK allows some (at most [`state::MAX_ALIASES_OUT`], least recently
//! used replaced). Enhanced authentication runs through a callback
//! ([`ConnectOptions::authentication`], [`Client::reauthenticate`]). After a reconnect,
//! what was in flight is resent within the new CONNACK's terms: no more than its Receive
//! Maximum at once (the rest follows as acks make room), and a message it no longer takes
//! (Maximum QoS, Retain Available, Maximum Packet Size) fails with that reason code.

mod driver;
pub mod state;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{
    DecodeError, EncodeError, Properties, ProtocolVersion, Publish, QoS, ReasonCode, TopicFilter,
    TopicName,
};

/// A message the broker delivered to one of this client's subscriptions. The client's own
/// type: it changes with the client's API, not with the broker's internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name it was published to.
    pub topic: TopicName,
    /// Payload (a slice of the client's read buffer: cheap to clone, and it keeps that
    /// buffer alive while held).
    pub payload: Bytes,
    /// QoS it was delivered with (the lower of the published and the granted QoS).
    pub qos: QoS,
    /// RETAIN as delivered: set for a retained message sent because of a new subscription.
    pub retain: bool,
    /// 5.0 properties (empty for 3.1 / 3.1.1).
    pub properties: Properties,
}

impl Message {
    /// The message a received PUBLISH carries.
    pub fn from_publish(p: Publish) -> Message {
        Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
        }
    }
}

impl From<Publish> for Message {
    fn from(p: Publish) -> Message {
        Message::from_publish(p)
    }
}
pub use driver::{
    connect, glommio_connect, glommio_connect_tls, Client, Connected, Connector, Delivery, Driver,
    FuturesTimer, GlommioTimer, Messages, Timer,
};

/// A will message, published by the broker if the connection ends without DISCONNECT.
#[derive(Debug, Clone)]
pub struct LastWill {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// 5.0 will properties (Will Delay Interval, Message Expiry, Content Type, Response
    /// Topic, Correlation Data, User Properties); ignored on 3.x.
    pub properties: Properties,
}

/// Reconnect back-off: the first retry after `initial`, each further one after twice the
/// previous delay, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// Everything about one client session. Built with [`ConnectOptions::new`] and the
/// builder methods; every field has a default suited to a device on a LAN.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Client identifier. Empty asks the broker to assign one (needs a clean session).
    pub client_id: String,
    /// Clean session (default `true`). With `false` the broker keeps subscriptions and
    /// queues QoS 1/2 messages while the client is away.
    pub clean_session: bool,
    /// Keep alive (default 30 s; zero disables pings). Whole seconds on the wire.
    pub keep_alive: Duration,
    /// How long a PINGREQ may go unanswered (default: the keep-alive period).
    pub ping_timeout: Option<Duration>,
    /// Protocol version (default 3.1.1; 3.1 and 5.0 are supported).
    pub version: ProtocolVersion,
    /// 5.0 enhanced authentication: the method and the answer to each challenge (see
    /// [`ConnectOptions::authentication`]).
    pub authentication: Option<state::Responder>,
    /// The Authentication Data of the CONNECT, with `authentication`.
    pub authentication_data: Option<Bytes>,
    /// 5.0 CONNECT properties (Session Expiry Interval, Receive Maximum, Topic Alias
    /// Maximum, Request Response Information, User Properties...); ignored on 3.x. The
    /// builder methods below set the common ones.
    pub properties: Properties,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message.
    pub will: Option<LastWill>,
    /// Time allowed for the transport to open and the CONNACK to arrive (default 10 s).
    pub connect_timeout: Duration,
    /// QoS 1/2 publishes in flight at once (default 128).
    pub max_inflight: u16,
    /// Received messages waiting for the application before reading stops (default 1024).
    pub incoming_capacity: usize,
    /// Encoded bytes waiting to be written before publishers wait (default 1 MiB).
    pub max_buffered_bytes: usize,
    /// Largest packet accepted from the broker (default 256 MiB, the protocol's maximum).
    pub max_packet_size: u32,
    /// Reconnect automatically (default: off).
    pub reconnect: Option<Backoff>,
}

impl ConnectOptions {
    /// Defaults with this client id.
    pub fn new(client_id: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            client_id: client_id.into(),
            clean_session: true,
            keep_alive: Duration::from_secs(30),
            ping_timeout: None,
            version: ProtocolVersion::V3_1_1,
            properties: Properties::new(),
            authentication: None,
            authentication_data: None,
            username: None,
            password: None,
            will: None,
            connect_timeout: Duration::from_secs(10),
            max_inflight: 128,
            incoming_capacity: 1024,
            max_buffered_bytes: 1 << 20,
            max_packet_size: 268_435_460,
            reconnect: None,
        }
    }

    /// Sets the clean-session flag.
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    /// Sets the keep alive.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Sets how long a PINGREQ may go unanswered.
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = Some(timeout);
        self
    }

    /// Sets the protocol version.
    pub fn version(mut self, version: ProtocolVersion) -> Self {
        self.version = version;
        self
    }

    /// Sets user name and password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<Bytes>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Sets the will.
    pub fn will(
        mut self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        self.will = Some(LastWill {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: Properties::new(),
        });
        self
    }

    /// 5.0: the will waits this many seconds after the connection ends, and is not
    /// published if the client reconnects in time (Will Delay Interval). Set after
    /// [`ConnectOptions::will`].
    pub fn will_delay(mut self, seconds: u32) -> Self {
        if let Some(w) = &mut self.will {
            w.properties.get_mut().will_delay_interval = Some(seconds);
        }
        self
    }

    /// 5.0: seconds the broker keeps the session after the connection ends (Session
    /// Expiry Interval; 0, the default, ends it with the connection; `u32::MAX` never).
    pub fn session_expiry(mut self, seconds: u32) -> Self {
        self.properties.get_mut().session_expiry_interval = Some(seconds);
        self
    }

    /// 5.0: QoS 1/2 messages the broker may have in flight to this client at once
    /// (Receive Maximum; default 65,535).
    pub fn receive_maximum(mut self, n: u16) -> Self {
        self.properties.get_mut().receive_maximum = Some(n);
        self
    }

    /// 5.0: topic aliases the broker may use towards this client (Topic Alias Maximum;
    /// default 0). The client resolves them: messages always carry their full topic.
    pub fn topic_alias_maximum(mut self, n: u16) -> Self {
        self.properties.get_mut().topic_alias_maximum = Some(n);
        self
    }

    /// 5.0: asks the broker for Response Information (a topic prefix for responses,
    /// used by [`Client::request`]).
    pub fn request_response_information(mut self, ask: bool) -> Self {
        self.properties.get_mut().request_response_information = Some(ask);
        self
    }

    /// 5.0 enhanced authentication (§4.12): CONNECT names `method` with `data`, and
    /// `respond` answers each challenge (AUTH 0x18) the broker sends, before CONNACK and on
    /// re-authentication ([`Client::reauthenticate`]). The broker decides; a refusal is
    /// [`ClientError::Refused`] with its code (0x8C when it does not know the method).
    /// Every (re)connection sends the same `data`: a method that needs a fresh value per
    /// connection gets it from `respond`'s first challenge. `respond` runs with the
    /// client's state locked: it must be quick and must not call the client.
    pub fn authentication(
        mut self,
        method: impl Into<String>,
        data: Option<Bytes>,
        respond: impl Fn(Option<&[u8]>) -> Option<Bytes> + Send + Sync + 'static,
    ) -> Self {
        self.authentication = Some(state::Responder {
            method: ByteString::from(method.into()),
            respond: Arc::new(respond),
        });
        self.authentication_data = data;
        self
    }

    /// 5.0: adds a user property to the CONNECT.
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties
            .get_mut()
            .user_properties
            .push((ByteString::from(key.into()), ByteString::from(value.into())));
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the outgoing window.
    pub fn max_inflight(mut self, n: u16) -> Self {
        self.max_inflight = n;
        self
    }

    /// Sets how many received messages may wait for the application.
    pub fn incoming_capacity(mut self, n: usize) -> Self {
        self.incoming_capacity = n;
        self
    }

    /// Sets the output buffer bound.
    pub fn max_buffered_bytes(mut self, n: usize) -> Self {
        self.max_buffered_bytes = n;
        self
    }

    /// Turns on automatic reconnection.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = Some(backoff);
        self
    }

    fn validate(&self) -> Result<(), ClientError> {
        if self.keep_alive.as_secs() > u64::from(u16::MAX) {
            return Err(ClientError::InvalidOptions("keep_alive is at most 65535 s"));
        }
        let day = Duration::from_secs(86_400);
        if self.connect_timeout > day || self.ping_timeout.is_some_and(|t| t > day) {
            return Err(ClientError::InvalidOptions(
                "connect_timeout and ping_timeout are at most a day",
            ));
        }
        if self.max_inflight == 0 {
            return Err(ClientError::InvalidOptions(
                "max_inflight must be at least 1",
            ));
        }
        if self.incoming_capacity == 0 || self.max_buffered_bytes == 0 {
            return Err(ClientError::InvalidOptions(
                "incoming_capacity and max_buffered_bytes must be positive",
            ));
        }
        if self.client_id.is_empty() && !self.clean_session {
            // [MQTT-3.1.3-7]: a zero-length client id requires CleanSession = 1.
            return Err(ClientError::InvalidOptions(
                "an empty client id needs a clean session [MQTT-3.1.3-7]",
            ));
        }
        if !self.version.is_v5() && (!self.properties.is_empty() || self.authentication.is_some()) {
            return Err(ClientError::InvalidOptions(
                "CONNECT properties and enhanced authentication need MQTT 5.0",
            ));
        }
        if self.properties.receive_maximum == Some(0)
            || self.properties.maximum_packet_size == Some(0)
        {
            // Both are a Protocol Error at 0 (5.0 §3.1.2.11.3, §3.1.2.11.4).
            return Err(ClientError::InvalidOptions(
                "receive_maximum and maximum packet size must not be 0",
            ));
        }
        Ok(())
    }
}

/// Everything a client operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker refused the connection (CONNACK return code, as a 5.0 reason code:
    /// e.g. `BAD_USER_NAME_OR_PASSWORD` for 3.1.1's return code 4).
    #[error("connection refused by the broker: {} ({:#04x})", .0.name(), .0.0)]
    Refused(ReasonCode),
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    ConnectionClosed,
    /// The broker sent bytes that are not MQTT.
    #[error("malformed packet from the broker: {0}")]
    Decode(DecodeError),
    /// The broker broke the protocol's rules.
    #[error("protocol violation by the broker: {0}")]
    Protocol(state::ProtocolViolation),
    /// CONNACK or PINGRESP did not come in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The client was disconnected (by [`Client::disconnect`] or because every handle was
    /// dropped); nothing more can be done with it.
    #[error("client closed")]
    Closed,
    /// A topic name or filter that MQTT does not allow.
    #[error("invalid topic: {0}")]
    InvalidTopic(DecodeError),
    /// A message that cannot be encoded (e.g. beyond the protocol's size limit).
    #[error("cannot encode: {0}")]
    Encode(EncodeError),
    /// The broker refused a subscription (SUBACK failure code 0x80).
    #[error("subscription refused: {} ({:#04x})", .0.name(), .0.0)]
    SubscriptionRefused(ReasonCode),
    /// The broker refused a publish (5.0 PUBACK / PUBREC reason code), or the client did
    /// not send it because the broker said it would not take it (its Maximum QoS, Retain
    /// Available or Maximum Packet Size).
    #[error("publish refused: {} ({:#04x})", .0.name(), .0.0)]
    PublishRefused(ReasonCode),
    /// The broker closed the connection with a 5.0 DISCONNECT and this reason code
    /// (session taken over, keep alive timeout, server shutting down...).
    #[error("disconnected by the broker: {} ({:#04x})", .0.name(), .0.0)]
    Disconnected(ReasonCode),
    /// Options that cannot work.
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}

impl ClientError {
    /// Whether reconnecting may help (transport trouble), as opposed to a refusal or a
    /// closed client, where retrying would only repeat the answer.
    pub fn is_transient(&self) -> bool {
        match self {
            // Worth another try (shutting down, busy, quota, keep alive lost...), except a
            // takeover (reconnecting would fight the other client), an authentication or
            // authorization failure, or an administrative kick.
            ClientError::Disconnected(r) => !matches!(r.0, 0x86 | 0x87 | 0x8C | 0x8E | 0x98),
            ClientError::Io(_)
            | ClientError::ConnectionClosed
            | ClientError::Timeout(_)
            | ClientError::Decode(_)
            | ClientError::Protocol(_) => true,
            // Server unavailable / busy are worth retrying; bad credentials are not.
            ClientError::Refused(r) => matches!(r.0, 0x88 | 0x89 | 0x97 | 0x9f),
            _ => false,
        }
    }
}

/// A topic name for [`Client::publish`]: `&str`, `String` or a prebuilt [`TopicName`]
/// (cheapest: cloning one does not allocate).
pub trait IntoTopicName {
    /// Validates and converts.
    fn into_topic_name(self) -> Result<TopicName, DecodeError>;
}

impl IntoTopicName for &str {
    fn into_topic_name(self) -> Result<TopicName, DecodeError> {
        TopicName::try_from(self)
    }
}

impl IntoTopicName for String {
    fn into_topic_name(self) -> Result<TopicName, DecodeError> {
        TopicName::new(ByteString::from(self))
    }
}

impl IntoTopicName for TopicName {
    fn into_topic_name(self) -> Result<TopicName, DecodeError> {
        Ok(self)
    }
}

impl IntoTopicName for &TopicName {
    fn into_topic_name(self) -> Result<TopicName, DecodeError> {
        Ok(self.clone())
    }
}

fn topic_filter(s: &str) -> Result<TopicFilter, ClientError> {
    TopicFilter::try_from(s).map_err(ClientError::InvalidTopic)
}
