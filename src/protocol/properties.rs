//! MQTT 5.0 properties (§2.2.2): one struct for all of them, and the per-packet rules of
//! which may appear where, which may repeat, and which values are legal.
//!
//! [`Properties`] is a single pointer: `None` when a packet has no properties (every 3.x
//! packet, and most 5.0 ones on the hot path), so packets stay small and decoding a
//! property-less PUBLISH allocates nothing. It dereferences to an empty [`PropertySet`]
//! when absent.

use std::fmt;
use std::ops::Deref;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::packet::{PacketType, QoS};
use super::topic::TopicName;
use super::wire::{self, Reader, VARINT_MAX};

/// Property identifiers (5.0 Table 2-4).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Where a property block sits; decides which identifiers are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT's own properties.
    Connect,
    /// The Will properties inside CONNECT's payload.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

#[allow(clippy::indexing_slicing)] // `i < ids.len()`; const fns cannot use iterators.
const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

impl PropertyContext {
    /// Bit `i` set: property `i` may appear (5.0 Table 2-4).
    pub fn allowed(self) -> u64 {
        use id::*;
        match self {
            Self::Connect => mask(&[
                SESSION_EXPIRY_INTERVAL,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REQUEST_PROBLEM_INFORMATION,
                REQUEST_RESPONSE_INFORMATION,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
            ]),
            Self::Will => mask(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                WILL_DELAY_INTERVAL,
                USER_PROPERTY,
            ]),
            Self::ConnAck => mask(&[
                SESSION_EXPIRY_INTERVAL,
                ASSIGNED_CLIENT_IDENTIFIER,
                SERVER_KEEP_ALIVE,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                RESPONSE_INFORMATION,
                SERVER_REFERENCE,
                REASON_STRING,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                MAXIMUM_QOS,
                RETAIN_AVAILABLE,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                SHARED_SUBSCRIPTION_AVAILABLE,
            ]),
            Self::Publish => mask(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                SUBSCRIPTION_IDENTIFIER,
                TOPIC_ALIAS,
                USER_PROPERTY,
            ]),
            Self::Ack | Self::SubAck | Self::UnsubAck => mask(&[REASON_STRING, USER_PROPERTY]),
            Self::Subscribe => mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
            Self::Unsubscribe => mask(&[USER_PROPERTY]),
            Self::Disconnect => mask(&[
                SESSION_EXPIRY_INTERVAL,
                SERVER_REFERENCE,
                REASON_STRING,
                USER_PROPERTY,
            ]),
            Self::Auth => mask(&[
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REASON_STRING,
                USER_PROPERTY,
            ]),
        }
    }

    fn packet_type(self) -> PacketType {
        match self {
            Self::Connect | Self::Will => PacketType::Connect,
            Self::ConnAck => PacketType::ConnAck,
            Self::Publish => PacketType::Publish,
            Self::Ack => PacketType::PubAck,
            Self::Subscribe => PacketType::Subscribe,
            Self::SubAck => PacketType::SubAck,
            Self::Unsubscribe => PacketType::Unsubscribe,
            Self::UnsubAck => PacketType::UnsubAck,
            Self::Disconnect => PacketType::Disconnect,
            Self::Auth => PacketType::Auth,
        }
    }
}

/// Every 5.0 property. Which ones a packet may carry is [`PropertyContext::allowed`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PropertySet {
    /// 0x01: true when the payload is UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03.
    pub content_type: Option<ByteString>,
    /// 0x08: a topic name (no wildcards, [MQTT-3.3.2-14]).
    pub response_topic: Option<ByteString>,
    /// 0x09.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: once in SUBSCRIBE, any number of times in PUBLISH (server to client);
    /// each 1..=268,435,455.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15.
    pub authentication_method: Option<ByteString>,
    /// 0x16.
    pub authentication_data: Option<Bytes>,
    /// 0x17.
    pub request_problem_information: Option<bool>,
    /// 0x18, seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19.
    pub request_response_information: Option<bool>,
    /// 0x1A.
    pub response_information: Option<ByteString>,
    /// 0x1C.
    pub server_reference: Option<ByteString>,
    /// 0x1F.
    pub reason_string: Option<ByteString>,
    /// 0x21: never 0.
    pub receive_maximum: Option<u16>,
    /// 0x22.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: never 0.
    pub topic_alias: Option<u16>,
    /// 0x24: 0 or 1 only.
    pub maximum_qos: Option<QoS>,
    /// 0x25.
    pub retain_available: Option<bool>,
    /// 0x26, in order, repeats allowed.
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27: never 0.
    pub maximum_packet_size: Option<u32>,
    /// 0x28.
    pub wildcard_subscription_available: Option<bool>,
    /// 0x29.
    pub subscription_identifier_available: Option<bool>,
    /// 0x2A.
    pub shared_subscription_available: Option<bool>,
}

static EMPTY: PropertySet = PropertySet {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifier_available: None,
    shared_subscription_available: None,
};

/// A packet's properties: absent (no allocation) or a boxed [`PropertySet`].
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertySet>>);

impl Properties {
    /// No properties.
    #[inline]
    pub const fn new() -> Properties {
        Properties(None)
    }

    /// True when no property is set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            None => true,
            Some(p) => **p == EMPTY,
        }
    }

    /// A copy that owns its strings and binaries (decoded properties are slices of the
    /// packet they came from, which a kept copy must not pin).
    pub fn detached(&self) -> Properties {
        let Some(p) = &self.0 else {
            return Properties::new();
        };
        let s = |v: &Option<ByteString>| v.as_deref().map(ByteString::from);
        let b = |v: &Option<Bytes>| v.as_deref().map(Bytes::copy_from_slice);
        Properties(Some(Box::new(PropertySet {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: s(&p.content_type),
            response_topic: s(&p.response_topic),
            correlation_data: b(&p.correlation_data),
            subscription_identifiers: p.subscription_identifiers.clone(),
            session_expiry_interval: p.session_expiry_interval,
            assigned_client_identifier: s(&p.assigned_client_identifier),
            server_keep_alive: p.server_keep_alive,
            authentication_method: s(&p.authentication_method),
            authentication_data: b(&p.authentication_data),
            request_problem_information: p.request_problem_information,
            will_delay_interval: p.will_delay_interval,
            request_response_information: p.request_response_information,
            response_information: s(&p.response_information),
            server_reference: s(&p.server_reference),
            reason_string: s(&p.reason_string),
            receive_maximum: p.receive_maximum,
            topic_alias_maximum: p.topic_alias_maximum,
            topic_alias: p.topic_alias,
            maximum_qos: p.maximum_qos,
            retain_available: p.retain_available,
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (ByteString::from(&**k), ByteString::from(&**v)))
                .collect(),
            maximum_packet_size: p.maximum_packet_size,
            wildcard_subscription_available: p.wildcard_subscription_available,
            subscription_identifier_available: p.subscription_identifier_available,
            shared_subscription_available: p.shared_subscription_available,
        })))
    }

    /// Mutable access, allocating the set on first use.
    pub fn get_mut(&mut self) -> &mut PropertySet {
        self.0.get_or_insert_with(Default::default)
    }

    /// Encoded length of the property block without its length prefix.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        match &self.0 {
            None => Ok(0),
            Some(p) => {
                let mut c = Counter(0);
                p.write(&mut c)?;
                Ok(c.0)
            }
        }
    }

    /// Appends the property length and the properties.
    pub(crate) fn encode(&self, len: usize, buf: &mut BytesMut) -> Result<(), EncodeError> {
        wire::put_varint(buf, len);
        if let Some(p) = &self.0 {
            p.write(buf)?;
        }
        Ok(())
    }

    /// Decodes a property length and block for `ctx`.
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        ctx: PropertyContext,
    ) -> Result<Properties, DecodeError> {
        let len = r.varint("property length")? as usize;
        if len == 0 {
            return Ok(Properties(None));
        }
        let mut r = r.sub(len, "properties")?;
        let mut p = PropertySet::default();
        let allowed = ctx.allowed();
        let mut seen = 0u64;
        while r.remaining() > 0 {
            // The identifier is a Variable Byte Integer; every defined one fits one byte,
            // so a multi-byte identifier is unknown anyway.
            let ident = r.varint("property identifier")?;
            let Ok(ident) = u8::try_from(ident) else {
                return Err(DecodeError::UnknownProperty(0xFF));
            };
            if ident > 63 || (1u64 << ident) & ALL == 0 {
                return Err(DecodeError::UnknownProperty(ident));
            }
            let bit = 1u64 << ident;
            if allowed & bit == 0 {
                return Err(DecodeError::PropertyNotAllowed {
                    id: ident,
                    packet: ctx.packet_type(),
                });
            }
            let repeatable = ident == id::USER_PROPERTY
                || (ident == id::SUBSCRIPTION_IDENTIFIER && ctx == PropertyContext::Publish);
            if seen & bit != 0 && !repeatable {
                return Err(DecodeError::DuplicateProperty(ident));
            }
            seen |= bit;
            p.read_one(ident, &mut r)?;
        }
        Ok(Properties(Some(Box::new(p))))
    }
}

/// Every defined identifier.
const ALL: u64 = mask(&[
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C,
    0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A,
]);

impl Deref for Properties {
    type Target = PropertySet;
    #[inline]
    fn deref(&self) -> &PropertySet {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}
impl Eq for Properties {}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("{}"),
            Some(p) => fmt::Debug::fmt(p, f),
        }
    }
}

impl From<PropertySet> for Properties {
    fn from(p: PropertySet) -> Self {
        Properties(Some(Box::new(p)))
    }
}

fn bool_value(ident: u8, r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    match r.u8("property value")? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(ident)),
    }
}

fn nonzero_u16(ident: u8, r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match r.u16("property value")? {
        0 => Err(DecodeError::InvalidPropertyValue(ident)),
        v => Ok(v),
    }
}

impl PropertySet {
    fn read_one(&mut self, ident: u8, r: &mut Reader<'_>) -> Result<(), DecodeError> {
        use id::*;
        const F: &str = "property value";
        match ident {
            PAYLOAD_FORMAT_INDICATOR => self.payload_format_indicator = Some(bool_value(ident, r)?),
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(r.u32(F)?),
            CONTENT_TYPE => self.content_type = Some(r.string("content type")?),
            RESPONSE_TOPIC => {
                let s = r.string("response topic")?;
                // [MQTT-3.3.2-14]: the Response Topic MUST NOT contain wildcard characters.
                TopicName::new(s.clone())?;
                self.response_topic = Some(s);
            }
            CORRELATION_DATA => self.correlation_data = Some(r.binary("correlation data")?),
            SUBSCRIPTION_IDENTIFIER => {
                let v = r.varint("subscription identifier")?;
                if v == 0 {
                    return Err(DecodeError::InvalidPropertyValue(ident));
                }
                self.subscription_identifiers.push(v);
            }
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(r.u32(F)?),
            ASSIGNED_CLIENT_IDENTIFIER => {
                self.assigned_client_identifier = Some(r.string("assigned client identifier")?)
            }
            SERVER_KEEP_ALIVE => self.server_keep_alive = Some(r.u16(F)?),
            AUTHENTICATION_METHOD => {
                self.authentication_method = Some(r.string("authentication method")?)
            }
            AUTHENTICATION_DATA => {
                self.authentication_data = Some(r.binary("authentication data")?)
            }
            REQUEST_PROBLEM_INFORMATION => {
                self.request_problem_information = Some(bool_value(ident, r)?)
            }
            WILL_DELAY_INTERVAL => self.will_delay_interval = Some(r.u32(F)?),
            REQUEST_RESPONSE_INFORMATION => {
                self.request_response_information = Some(bool_value(ident, r)?)
            }
            RESPONSE_INFORMATION => {
                self.response_information = Some(r.string("response information")?)
            }
            SERVER_REFERENCE => self.server_reference = Some(r.string("server reference")?),
            REASON_STRING => self.reason_string = Some(r.string("reason string")?),
            RECEIVE_MAXIMUM => self.receive_maximum = Some(nonzero_u16(ident, r)?),
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(r.u16(F)?),
            TOPIC_ALIAS => {
                self.topic_alias = Some(match r.u16(F)? {
                    0 => return Err(DecodeError::TopicAliasZero),
                    v => v,
                })
            }
            MAXIMUM_QOS => {
                self.maximum_qos = Some(match r.u8(F)? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(ident)),
                })
            }
            RETAIN_AVAILABLE => self.retain_available = Some(bool_value(ident, r)?),
            USER_PROPERTY => {
                let k = r.string("user property name")?;
                let v = r.string("user property value")?;
                self.user_properties.push((k, v));
            }
            MAXIMUM_PACKET_SIZE => {
                self.maximum_packet_size = Some(match r.u32(F)? {
                    0 => return Err(DecodeError::InvalidPropertyValue(ident)),
                    v => v,
                })
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                self.wildcard_subscription_available = Some(bool_value(ident, r)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                self.subscription_identifier_available = Some(bool_value(ident, r)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                self.shared_subscription_available = Some(bool_value(ident, r)?)
            }
            _ => return Err(DecodeError::UnknownProperty(ident)),
        }
        Ok(())
    }

    /// Writes every set property in identifier order. One code path serves both length
    /// computation ([`Counter`]) and output (`BytesMut`), so they cannot disagree.
    fn write<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        use id::*;
        if let Some(v) = self.payload_format_indicator {
            s.id_u8(PAYLOAD_FORMAT_INDICATOR, v as u8);
        }
        if let Some(v) = self.message_expiry_interval {
            s.id_u32(MESSAGE_EXPIRY_INTERVAL, v);
        }
        s.id_str(
            CONTENT_TYPE,
            self.content_type.as_deref().map(str::as_bytes),
            "content type",
        )?;
        s.id_str(
            RESPONSE_TOPIC,
            self.response_topic.as_deref().map(str::as_bytes),
            "response topic",
        )?;
        s.id_str(
            CORRELATION_DATA,
            self.correlation_data.as_deref(),
            "correlation data",
        )?;
        for &v in &self.subscription_identifiers {
            if v == 0 || v > VARINT_MAX {
                return Err(EncodeError::VarIntTooLarge(v));
            }
            s.put_u8(SUBSCRIPTION_IDENTIFIER);
            s.put_varint(v as usize);
        }
        if let Some(v) = self.session_expiry_interval {
            s.id_u32(SESSION_EXPIRY_INTERVAL, v);
        }
        s.id_str(
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier
                .as_deref()
                .map(str::as_bytes),
            "assigned client identifier",
        )?;
        if let Some(v) = self.server_keep_alive {
            s.id_u16(SERVER_KEEP_ALIVE, v);
        }
        s.id_str(
            AUTHENTICATION_METHOD,
            self.authentication_method.as_deref().map(str::as_bytes),
            "authentication method",
        )?;
        s.id_str(
            AUTHENTICATION_DATA,
            self.authentication_data.as_deref(),
            "authentication data",
        )?;
        if let Some(v) = self.request_problem_information {
            s.id_u8(REQUEST_PROBLEM_INFORMATION, v as u8);
        }
        if let Some(v) = self.will_delay_interval {
            s.id_u32(WILL_DELAY_INTERVAL, v);
        }
        if let Some(v) = self.request_response_information {
            s.id_u8(REQUEST_RESPONSE_INFORMATION, v as u8);
        }
        s.id_str(
            RESPONSE_INFORMATION,
            self.response_information.as_deref().map(str::as_bytes),
            "response information",
        )?;
        s.id_str(
            SERVER_REFERENCE,
            self.server_reference.as_deref().map(str::as_bytes),
            "server reference",
        )?;
        s.id_str(
            REASON_STRING,
            self.reason_string.as_deref().map(str::as_bytes),
            "reason string",
        )?;
        if let Some(v) = self.receive_maximum {
            s.id_u16(RECEIVE_MAXIMUM, v);
        }
        if let Some(v) = self.topic_alias_maximum {
            s.id_u16(TOPIC_ALIAS_MAXIMUM, v);
        }
        if let Some(v) = self.topic_alias {
            s.id_u16(TOPIC_ALIAS, v);
        }
        if let Some(v) = self.maximum_qos {
            s.id_u8(MAXIMUM_QOS, v as u8);
        }
        if let Some(v) = self.retain_available {
            s.id_u8(RETAIN_AVAILABLE, v as u8);
        }
        for (k, v) in &self.user_properties {
            wire::check_len(k.as_bytes(), "user property name")?;
            wire::check_len(v.as_bytes(), "user property value")?;
            s.put_u8(USER_PROPERTY);
            s.put_prefixed(k.as_bytes());
            s.put_prefixed(v.as_bytes());
        }
        if let Some(v) = self.maximum_packet_size {
            s.id_u32(MAXIMUM_PACKET_SIZE, v);
        }
        if let Some(v) = self.wildcard_subscription_available {
            s.id_u8(WILDCARD_SUBSCRIPTION_AVAILABLE, v as u8);
        }
        if let Some(v) = self.subscription_identifier_available {
            s.id_u8(SUBSCRIPTION_IDENTIFIER_AVAILABLE, v as u8);
        }
        if let Some(v) = self.shared_subscription_available {
            s.id_u8(SHARED_SUBSCRIPTION_AVAILABLE, v as u8);
        }
        Ok(())
    }
}

/// Output of [`PropertySet::write`]: a real buffer or a byte counter.
trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_varint(&mut self, v: usize);
    fn put_prefixed(&mut self, b: &[u8]);

    fn id_u8(&mut self, id: u8, v: u8) {
        self.put_u8(id);
        self.put_u8(v);
    }
    fn id_u16(&mut self, id: u8, v: u16) {
        self.put_u8(id);
        self.put_u16(v);
    }
    fn id_u32(&mut self, id: u8, v: u32) {
        self.put_u8(id);
        self.put_u32(v);
    }
    fn id_str(&mut self, id: u8, v: Option<&[u8]>, field: &'static str) -> Result<(), EncodeError> {
        if let Some(b) = v {
            wire::check_len(b, field)?;
            self.put_u8(id);
            self.put_prefixed(b);
        }
        Ok(())
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v)
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v)
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v)
    }
    fn put_varint(&mut self, v: usize) {
        wire::put_varint(self, v)
    }
    fn put_prefixed(&mut self, b: &[u8]) {
        wire::put_prefixed(self, b)
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_varint(&mut self, v: usize) {
        self.0 += wire::varint_len(v);
    }
    fn put_prefixed(&mut self, b: &[u8]) {
        self.0 += 2 + b.len();
    }
}
