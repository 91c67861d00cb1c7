//! Errors of the codec layer.
//!
//! Every decode error names the normative statement (or, where the specification has no
//! numbered statement, the section) that it enforces, and knows the 5.0 reason code a
//! server sends in its CONNACK or DISCONNECT for it. Errors are small `Copy`-able values:
//! building one costs nothing on the hot path, and the connection is closed anyway.

use super::reason::ReasonCode;
use super::PacketType;

/// Why a frame was rejected. The connection that sent it must be closed
/// ([MQTT-4.8.0-1] in 3.1.1: "Unless stated otherwise, if either the Server or Client
/// encounters a protocol violation, it MUST close the Network Connection").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the receiver's maximum packet size; detected from the fixed
    /// header, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size {max} (5.0 §3.1.2.11.4, [MQTT-3.2.2-15])")]
    PacketTooLarge {
        /// Total frame size announced by the fixed header.
        size: usize,
        /// The limit in force.
        max: u32,
    },
    /// A Variable Byte Integer (remaining length, property length, subscription
    /// identifier) longer than four bytes.
    #[error("variable byte integer longer than 4 bytes (3.1.1 §2.2.3, 5.0 §1.5.5)")]
    VarIntTooLong,
    /// A Variable Byte Integer not encoded in the fewest bytes.
    #[error("variable byte integer not minimally encoded [MQTT-1.5.5-1]")]
    VarIntNotMinimal,
    /// Packet type 0 (reserved), or AUTH (15) on a 3.x connection.
    #[error("reserved or unsupported packet type {0} ([MQTT-2.2.2-2] / 5.0 §2.1.2)")]
    InvalidPacketType(u8),
    /// Fixed header flags that are reserved and not set to their mandated value.
    #[error("invalid fixed header flags {flags:#06b} for {packet:?} [MQTT-2.2.2-2] / 5.0 [MQTT-2.1.3-1]")]
    InvalidHeaderFlags {
        /// The packet whose header was wrong.
        packet: PacketType,
        /// The four flag bits received.
        flags: u8,
    },
    /// PUBLISH with both QoS bits set.
    #[error("PUBLISH QoS 3 [MQTT-3.3.1-4]")]
    InvalidQoS,
    /// PUBLISH with DUP set at QoS 0.
    #[error("PUBLISH with DUP set at QoS 0 [MQTT-3.3.1-2]")]
    DupAtQoS0,
    /// The packet ended before a field it must contain.
    #[error(
        "packet too short: {0} is missing or truncated (remaining length disagrees with content)"
    )]
    Truncated(&'static str),
    /// Bytes were left over after the last field of a packet.
    #[error(
        "{0} bytes after the end of the packet's fields (remaining length disagrees with content)"
    )]
    TrailingBytes(usize),
    /// A string that is not well-formed UTF-8 (including encoded surrogates).
    #[error("ill-formed UTF-8 in {0} [MQTT-1.5.3-1] / 5.0 [MQTT-1.5.4-1]")]
    InvalidUtf8(&'static str),
    /// A string containing U+0000.
    #[error("U+0000 in {0} [MQTT-1.5.3-2] / 5.0 [MQTT-1.5.4-2]")]
    NullCharacter(&'static str),
    /// A PUBLISH or Will topic name of zero length (without a 5.0 topic alias).
    #[error("empty topic name [MQTT-4.7.3-1]")]
    EmptyTopicName,
    /// A topic name containing `+` or `#`.
    #[error("wildcard in topic name [MQTT-3.3.2-2] / [MQTT-4.7.1-1]")]
    WildcardInTopicName,
    /// A topic filter of zero length.
    #[error("empty topic filter [MQTT-4.7.3-1]")]
    EmptyTopicFilter,
    /// `#` not alone in the last level of a filter.
    #[error("multi-level wildcard not alone in the last level of a filter [MQTT-4.7.1-2]")]
    InvalidMultiLevelWildcard,
    /// `+` sharing a level with other characters.
    #[error("single-level wildcard not alone in its level [MQTT-4.7.1-3]")]
    InvalidSingleLevelWildcard,
    /// A `$share/` filter without a valid share name and filter (5.0 §4.8.2).
    #[error("invalid shared subscription filter [MQTT-4.8.2-1] / [MQTT-4.8.2-2]")]
    InvalidSharedFilter,
    /// Packet identifier 0 where one is required.
    #[error("packet identifier 0 in {0:?} [MQTT-2.3.1-1] / 5.0 [MQTT-2.2.1-3]")]
    ZeroPacketId(PacketType),
    /// SUBSCRIBE without any topic filter.
    #[error("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")]
    NoSubscriptions,
    /// UNSUBSCRIBE without any topic filter.
    #[error("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")]
    NoUnsubscriptions,
    /// SUBACK without any return code.
    #[error("SUBACK without return codes (§3.9.3)")]
    NoSubAckCodes,
    /// Reserved bits set, or QoS 3, in a SUBSCRIBE's options byte.
    #[error("invalid subscription options {0:#010b} [MQTT-3-8.3-4] / 5.0 [MQTT-3.8.3-5]")]
    InvalidSubscriptionOptions(u8),
    /// Maximum QoS 3 in a SUBSCRIBE's options (3.1.1 [MQTT-3-8.3-4]: malformed; 5.0
    /// §3.8.3.1: a Protocol Error).
    #[error("subscription QoS 3 [MQTT-3-8.3-4] / 5.0 §3.8.3.1")]
    InvalidSubscriptionQoS,
    /// Retain Handling 3 (5.0 §3.8.3.1: a Protocol Error).
    #[error("retain handling 3 is a protocol error (5.0 §3.8.3.1)")]
    InvalidRetainHandling,
    /// No Local on a shared subscription.
    #[error("No Local set on a shared subscription [MQTT-3.8.3-4]")]
    NoLocalOnSharedSubscription,
    /// A reason or return code not defined for this packet.
    #[error("reason code {code:#04x} is not valid in {packet:?} (3.1.1 [MQTT-3.9.3-2], 5.0 §2.4)")]
    InvalidReasonCode {
        /// The packet that carried it.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
    /// Reserved bits set in CONNACK's acknowledge flags.
    #[error("reserved CONNACK flag bits set {0:#010b} (§3.2.2.1, 5.0 [MQTT-3.2.2-1])")]
    InvalidConnAckFlags(u8),
    /// CONNACK with session present set and a non-zero return code.
    #[error("CONNACK with session present and a failure code [MQTT-3.2.2-4] / 5.0 [MQTT-3.2.2-6]")]
    SessionPresentOnFailure,
    /// CONNECT's protocol name is neither `MQTT` nor `MQIsdp`.
    #[error("unsupported protocol name [MQTT-3.1.2-1]")]
    UnsupportedProtocolName,
    /// CONNECT's protocol level is not 3, 4 or 5 (or does not fit the protocol name).
    /// The server answers CONNACK 0x01 / reason 0x84 and closes [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0} [MQTT-3.1.2-2]")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT's reserved flag bit set.
    #[error("CONNECT reserved flag set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will flag.
    #[error(
        "will QoS / retain set without will flag [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]"
    )]
    WillFlagsWithoutWill,
    /// Will QoS 3.
    #[error("will QoS 3 [MQTT-3.1.2-14] / 5.0 [MQTT-3.1.2-12]")]
    InvalidWillQoS,
    /// 3.x: password flag set without the user name flag.
    #[error("password without user name [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// A 5.0 property identifier that does not exist.
    #[error("unknown property identifier {0:#04x} (5.0 §2.2.2.2)")]
    UnknownProperty(u8),
    /// A 5.0 property that may not appear in this packet (5.0 §2.2.2.2: a Malformed Packet).
    #[error("property {id:#04x} not allowed in {packet:?} (5.0 §2.2.2.2)")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// Where it appeared.
        packet: PacketType,
    },
    /// A 5.0 property that may appear once, repeated.
    #[error("property {0:#04x} included more than once (5.0 §3.x: a Protocol Error)")]
    DuplicateProperty(u8),
    /// A 5.0 property with a value outside its range (e.g. Receive Maximum 0, a boolean 2).
    #[error("property {0:#04x} has a value outside its range (5.0 §3.x: a Protocol Error)")]
    InvalidPropertyValue(u8),
    /// A 5.0 topic alias of 0.
    #[error("topic alias 0 [MQTT-3.3.2-8]")]
    TopicAliasZero,
}

impl DecodeError {
    /// The 5.0 reason code a server puts in CONNACK (during CONNECT) or DISCONNECT.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolName | UnsupportedProtocolLevel(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            WildcardInTopicName => ReasonCode::TOPIC_NAME_INVALID,
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            // 5.0 §3.3.2.1: a zero-length topic without a topic alias is a Protocol Error.
            EmptyTopicName
            | ZeroPacketId(_)
            | InvalidSubscriptionQoS
            | NoSubscriptions
            | NoUnsubscriptions
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | DuplicateProperty(_)
            | InvalidPropertyValue(_) => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// A short stable name, for counters and log fields.
    pub fn kind(&self) -> &'static str {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => "packet_too_large",
            VarIntTooLong | VarIntNotMinimal => "bad_varint",
            InvalidPacketType(_) => "bad_packet_type",
            InvalidHeaderFlags { .. } | InvalidQoS | DupAtQoS0 => "bad_header_flags",
            Truncated(_) | TrailingBytes(_) => "bad_length",
            InvalidUtf8(_) | NullCharacter(_) => "bad_utf8",
            EmptyTopicName | WildcardInTopicName => "bad_topic_name",
            EmptyTopicFilter
            | InvalidMultiLevelWildcard
            | InvalidSingleLevelWildcard
            | InvalidSharedFilter => "bad_topic_filter",
            ZeroPacketId(_) => "zero_packet_id",
            NoSubscriptions | NoUnsubscriptions | NoSubAckCodes => "empty_payload",
            InvalidSubscriptionOptions(_)
            | InvalidSubscriptionQoS
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription => "bad_subscription_options",
            InvalidReasonCode { .. } | InvalidConnAckFlags(_) | SessionPresentOnFailure => {
                "bad_ack"
            }
            UnsupportedProtocolName | UnsupportedProtocolLevel(_) => "unsupported_protocol",
            ConnectReservedFlag
            | WillFlagsWithoutWill
            | InvalidWillQoS
            | PasswordWithoutUsername => "bad_connect_flags",
            UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | TopicAliasZero => "bad_property",
        }
    }
}

/// Why a packet could not be encoded. These are caller bugs or values beyond what the
/// wire format can carry; nothing is written to the buffer when encoding fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The remaining length would exceed 268,435,455 bytes.
    #[error("remaining length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// A string or binary field longer than 65,535 bytes.
    #[error("{0} is longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// QoS 1/2 PUBLISH, SUBSCRIBE or UNSUBSCRIBE without a packet identifier.
    #[error("packet identifier required for {0:?}")]
    MissingPacketId(PacketType),
    /// QoS 0 PUBLISH with a packet identifier.
    #[error("QoS 0 PUBLISH must not carry a packet identifier [MQTT-2.3.1-5]")]
    UnexpectedPacketId,
    /// SUBSCRIBE / UNSUBSCRIBE / SUBACK with an empty list.
    #[error("{0:?} needs at least one entry")]
    EmptyPayload(PacketType),
    /// A packet that does not exist in the connection's protocol version.
    #[error("{0:?} does not exist before MQTT 5.0")]
    NotInVersion(PacketType),
    /// A value a Variable Byte Integer cannot carry (over 268,435,455).
    #[error("value {0} does not fit a variable byte integer")]
    VarIntTooLarge(u32),
}
