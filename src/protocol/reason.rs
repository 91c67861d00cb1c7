//! MQTT 5.0 reason codes, and their mapping onto the 3.1 / 3.1.1 return codes.
//!
//! The broker speaks one code space internally (5.0 reason codes); the encoder maps them
//! onto the smaller 3.x sets when the connection is 3.1 or 3.1.1, and the decoder maps 3.x
//! codes up. This keeps version differences inside the codec.

use std::fmt;

/// An MQTT 5.0 reason code (section 2.4). Several names share a value (0x00 is Success,
/// Normal disconnection and Granted QoS 0); those are associated constants.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($name:ident = $val:expr, $text:expr;)*) => {
        impl ReasonCode {
            $(
                #[doc = $text]
                pub const $name: ReasonCode = ReasonCode($val);
            )*
            /// The specification's name for this code (the first name if several share it).
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($val => $text,)*
                    #[allow(unreachable_patterns)]
                    _ => "Unknown reason code",
                }
            }
        }
    };
}

reason_codes! {
    SUCCESS = 0x00, "Success";
    GRANTED_QOS_1 = 0x01, "Granted QoS 1";
    GRANTED_QOS_2 = 0x02, "Granted QoS 2";
    DISCONNECT_WITH_WILL = 0x04, "Disconnect with Will Message";
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers";
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed";
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication";
    REAUTHENTICATE = 0x19, "Re-authenticate";
    UNSPECIFIED_ERROR = 0x80, "Unspecified error";
    MALFORMED_PACKET = 0x81, "Malformed Packet";
    PROTOCOL_ERROR = 0x82, "Protocol Error";
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error";
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version";
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid";
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password";
    NOT_AUTHORIZED = 0x87, "Not authorized";
    SERVER_UNAVAILABLE = 0x88, "Server unavailable";
    SERVER_BUSY = 0x89, "Server busy";
    BANNED = 0x8A, "Banned";
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down";
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method";
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout";
    SESSION_TAKEN_OVER = 0x8E, "Session taken over";
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid";
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid";
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use";
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found";
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded";
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid";
    PACKET_TOO_LARGE = 0x95, "Packet too large";
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high";
    QUOTA_EXCEEDED = 0x97, "Quota exceeded";
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action";
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid";
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported";
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported";
    USE_ANOTHER_SERVER = 0x9C, "Use another server";
    SERVER_MOVED = 0x9D, "Server moved";
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported";
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded";
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time";
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported";
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported";
}

impl ReasonCode {
    /// Normal disconnection (0x00).
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    /// Granted QoS 0 (0x00).
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);

    /// True for codes below 0x80 (the specification's success range).
    #[inline]
    pub fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// The 3.1 / 3.1.1 CONNACK return code for this 5.0 CONNACK reason code.
    ///
    /// 3.1.1 has six codes (section 3.2.2.3); every 5.0 failure maps to the closest one,
    /// falling back to 0x03 "Server unavailable", which tells a 3.x client to retry later.
    pub fn to_connack_v3(self) -> u8 {
        match self {
            Self::SUCCESS => 0,
            Self::UNSUPPORTED_PROTOCOL_VERSION => 1,
            Self::CLIENT_IDENTIFIER_NOT_VALID => 2,
            Self::BAD_USER_NAME_OR_PASSWORD | Self::BAD_AUTHENTICATION_METHOD => 4,
            Self::NOT_AUTHORIZED | Self::BANNED => 5,
            _ => 3,
        }
    }

    /// The 5.0 reason code for a 3.1 / 3.1.1 CONNACK return code (None: not a 3.x code).
    pub fn from_connack_v3(code: u8) -> Option<ReasonCode> {
        Some(match code {
            0 => Self::SUCCESS,
            1 => Self::UNSUPPORTED_PROTOCOL_VERSION,
            2 => Self::CLIENT_IDENTIFIER_NOT_VALID,
            3 => Self::SERVER_UNAVAILABLE,
            4 => Self::BAD_USER_NAME_OR_PASSWORD,
            5 => Self::NOT_AUTHORIZED,
            _ => return None,
        })
    }

    /// The 3.1.1 SUBACK return code: granted QoS 0..=2, or 0x80 for any failure.
    pub fn to_suback_v3(self) -> u8 {
        if self.0 <= 2 {
            self.0
        } else {
            0x80
        }
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x} ({})", self.0, self.name())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A set of reason codes as a 256-bit map, for the per-packet "which codes are allowed"
/// checks of the 5.0 decoder.
#[derive(Clone, Copy)]
pub(crate) struct CodeSet([u64; 4]);

// Indexing by `code / 64` is in bounds for every u8 (0..=3).
#[allow(clippy::indexing_slicing)]
impl CodeSet {
    const fn of(codes: &[u8]) -> CodeSet {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < codes.len() {
            let c = codes[i] as usize;
            bits[c / 64] |= 1 << (c % 64);
            i += 1;
        }
        CodeSet(bits)
    }

    #[inline]
    pub(crate) fn contains(&self, code: u8) -> bool {
        let c = code as usize;
        self.0[c / 64] & (1 << (c % 64)) != 0
    }
}

/// Reason codes a 5.0 CONNACK may carry (section 3.2.2.2).
pub(crate) const CONNACK_CODES: CodeSet = CodeSet::of(&[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
]);
/// Reason codes of PUBACK and PUBREC (sections 3.4.2.1, 3.5.2.1).
pub(crate) const PUBACK_CODES: CodeSet =
    CodeSet::of(&[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
/// Reason codes of PUBREL and PUBCOMP (sections 3.6.2.1, 3.7.2.1).
pub(crate) const PUBREL_CODES: CodeSet = CodeSet::of(&[0x00, 0x92]);
/// Reason codes of SUBACK (section 3.9.3).
pub(crate) const SUBACK_CODES: CodeSet = CodeSet::of(&[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
]);
/// Reason codes of UNSUBACK (section 3.11.3).
pub(crate) const UNSUBACK_CODES: CodeSet = CodeSet::of(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
/// Reason codes of DISCONNECT (section 3.14.2.1).
pub(crate) const DISCONNECT_CODES: CodeSet = CodeSet::of(&[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
]);
/// Reason codes of AUTH (section 3.15.2.1).
pub(crate) const AUTH_CODES: CodeSet = CodeSet::of(&[0x00, 0x18, 0x19]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_v3_mapping_round_trips_on_3x_codes() {
        for code in 0u8..=5 {
            let rc = ReasonCode::from_connack_v3(code).expect("3.x code");
            assert_eq!(rc.to_connack_v3(), code);
        }
        assert_eq!(ReasonCode::from_connack_v3(6), None);
        assert_eq!(ReasonCode::QUOTA_EXCEEDED.to_connack_v3(), 3);
    }

    #[test]
    fn code_sets() {
        assert!(PUBACK_CODES.contains(0x10));
        assert!(!PUBACK_CODES.contains(0x11));
        assert!(AUTH_CODES.contains(0x19));
        assert!(!AUTH_CODES.contains(0xFF));
        assert!(DISCONNECT_CODES.contains(0xA2));
        assert_eq!(ReasonCode(0x97).name(), "Quota exceeded");
    }
}
