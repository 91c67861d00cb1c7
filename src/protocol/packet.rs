//! The packet types: plain data, shared by all three protocol versions.
//!
//! One struct per packet, with the 5.0-only parts (reason codes, properties) present in
//! every version and left at their defaults on 3.x connections. That way the broker and the
//! client handle one shape, and only the codec knows which bytes a version puts on the wire.

use std::num::NonZeroU16;

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::Properties;
use super::reason::ReasonCode;
use super::topic::{TopicFilter, TopicName};

/// A packet identifier: never 0 on the wire ([MQTT-2.3.1-1]), so the type cannot hold 0.
pub type PacketId = NonZeroU16;

/// The protocol version of a connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Self::V3_1 => 3,
            Self::V3_1_1 => 4,
            Self::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            _ => "MQTT",
        }
    }

    /// True for 5.0, which has reason codes and properties.
    #[inline]
    pub fn is_v5(self) -> bool {
        self == Self::V5
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// At most once (0).
    AtMostOnce = 0,
    /// At least once (1).
    AtLeastOnce = 1,
    /// Exactly once (2).
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two wire bits; None for 3 (invalid everywhere).
    #[inline]
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The fourteen (3.x) or fifteen (5.0) control packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

/// A Will message, carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will topic.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain.
    pub retain: bool,
    /// 5.0 will properties (delay interval, expiry, content type, ...).
    pub properties: Properties,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Version announced by the protocol name and level.
    pub version: ProtocolVersion,
    /// Clean session (3.x) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier, possibly empty.
    pub client_id: ByteString,
    /// The will, if the will flag was set.
    pub will: Option<Will>,
    /// User name, if its flag was set.
    pub username: Option<ByteString>,
    /// Password, if its flag was set.
    pub password: Option<Bytes>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// CONNACK. `reason` is in the 5.0 code space on every version; the codec maps it to and
/// from the 3.x return codes (see [`ReasonCode::to_connack_v3`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session present (always false on 3.1, which has no such flag).
    pub session_present: bool,
    /// Result of the connection attempt.
    pub reason: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties,
}

/// PUBLISH. Topic and payload are slices of the frame they were decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; empty only on 5.0 when a topic alias stands for it.
    pub topic: TopicName,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// 5.0 properties.
    pub properties: Properties,
    /// Application message.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share this shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The acknowledged packet identifier.
    pub packet_id: PacketId,
    /// 5.0 reason code (Success on 3.x).
    pub reason: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement without properties (the only kind 3.x has).
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }
    }
}

/// 5.0 Retain Handling subscription option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not already exist.
    SendIfNew = 1,
    /// Do not send retained messages.
    DoNotSend = 2,
}

/// Subscription options. On 3.x only `qos` exists; the others keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// 5.0 No Local.
    pub no_local: bool,
    /// 5.0 Retain As Published.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and 3.x defaults for the rest.
    pub fn new(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    /// The 5.0 options byte (5.0 §3.8.3.1): QoS in bits 0-1, No Local bit 2, Retain As
    /// Published bit 3, Retain Handling bits 4-5.
    pub fn to_byte(self) -> u8 {
        self.qos as u8
            | u8::from(self.no_local) << 2
            | u8::from(self.retain_as_published) << 3
            | (self.retain_handling as u8) << 4
    }

    /// The options a 5.0 options byte stands for; None when reserved bits are set or a
    /// field has a reserved value.
    pub fn from_byte(b: u8) -> Option<SubscriptionOptions> {
        if b & 0xC0 != 0 {
            return None;
        }
        Some(SubscriptionOptions {
            qos: QoS::from_u8(b & 3)?,
            no_local: b & 0x04 != 0,
            retain_as_published: b & 0x08 != 0,
            retain_handling: match (b >> 4) & 3 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return None,
            },
        })
    }
}

/// One entry of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter.
    pub filter: TopicFilter,
    /// Requested options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one subscription [MQTT-3.8.3-3].
    pub subscriptions: Vec<Subscription>,
    /// 5.0 properties (subscription identifier, user properties).
    pub properties: Properties,
}

/// SUBACK. Codes are 5.0 reason codes; on 3.x they are 0, 1, 2 or 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One code per subscription, in order.
    pub codes: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one filter [MQTT-3.10.3-2].
    pub filters: Vec<TopicFilter>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// UNSUBACK. `codes` is empty on 3.x, one per filter on 5.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// 5.0 reason codes.
    pub codes: Vec<ReasonCode>,
    /// 5.0 properties.
    pub properties: Properties,
}

/// DISCONNECT (and, with a different packet type, AUTH share the reason + properties shape).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// 5.0 reason code (Normal disconnection on 3.x).
    pub reason: ReasonCode,
    /// 5.0 properties.
    pub properties: Properties,
}

/// AUTH (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason: ReasonCode,
    /// Properties (authentication method and data).
    pub properties: Properties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::SUCCESS
    }
}

/// A control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    /// Boxed: it is large and arrives once per connection.
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn subscription_options_bytes_round_trip() {
        let mut valid = 0;
        for b in 0..=255u8 {
            match SubscriptionOptions::from_byte(b) {
                Some(o) => {
                    assert_eq!(o.to_byte(), b);
                    valid += 1;
                }
                // Reserved bits, QoS 3 or Retain Handling 3.
                None => assert!(b & 0xC0 != 0 || b & 3 == 3 || (b >> 4) & 3 == 3, "{b:#x}"),
            }
        }
        assert_eq!(valid, 3 * 2 * 2 * 3);
    }
}
