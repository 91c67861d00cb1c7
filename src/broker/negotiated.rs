//! What a connection and the broker agreed on at CONNECT: built once, on the session's
//! home shard, from the CONNECT and the configuration ([`Negotiated::new`]); then the
//! session takes its limits from it, the connection task its keep alive and packet size,
//! and the CONNACK writer what the client must be told.
//!
//! For 5.0 the CONNACK tells the client every capability the server has that differs from
//! the protocol's defaults (5.0 §3.2.2.3): Maximum Packet Size, Retain Available, Topic
//! Alias Maximum, Subscription Identifier and Shared Subscription Available, Server Keep
//! Alive, the Assigned Client Identifier, and the Session Expiry Interval when the server
//! keeps the session for another time than asked.
//!
//! ## Session expiry
//! One number per session, in seconds, decides how long it outlives its connection: 3.x
//! clean session 1 is 0 and clean session 0 is "never"; a 5.0 client asks with the Session
//! Expiry Interval property (absent: 0) [MQTT-3.1.2-23]. `session_expiry_max` caps both;
//! a 5.0 client is told the capped value. Clean Start only decides whether an existing
//! session is resumed [MQTT-3.1.2-4] [MQTT-3.1.2-5].
//!
//! **Owns:** the rules that turn a client's requests into the connection's terms.
//!
//! **Must not touch:** sockets, sessions, shard state: it is plain data.

use bytes::BytesMut;
use bytestring::ByteString;

use crate::config::Config;
use crate::protocol::{ConnAck, Connect, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::session::{SessionLimits, NEVER_EXPIRES};

/// A connection's terms (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub version: ProtocolVersion,
    /// The client identifier, owning its bytes (not a slice of the CONNECT's read buffer).
    pub client_id: ByteString,
    pub clean_start: bool,
    /// Keep alive the server enforces, in seconds (0: none) [MQTT-3.1.2-24].
    pub keep_alive: u16,
    /// 5.0: the keep alive the client must use when it differs from the one it asked
    /// for (`keepalive_min` / `keepalive_max`), sent in CONNACK [MQTT-3.2.2-21].
    pub server_keep_alive: Option<u16>,
    /// Largest packet accepted from the client.
    pub max_packet_in: u32,
    /// Seconds the session outlives the connection (see the module docs).
    pub session_expiry: u32,
    /// 5.0: the expiry the client must be told, when it differs from what it asked.
    pub told_session_expiry: Option<u32>,
    /// 5.0: the client identifier the server assigned (the CONNECT's was empty).
    pub assigned_client_id: bool,
    /// The server keeps retained messages (`retain_available`).
    pub retain_available: bool,
    /// 5.0: topic aliases the client may use towards the server (`max_topic_alias`).
    pub topic_alias_max_in: u16,
    /// The CONNECT's user name (kept with the session for the authorization hooks).
    pub username: Option<Box<str>>,
    /// The hook stack of the listener that admitted the client (kept with the session).
    pub domain: u16,
    /// 5.0: the Authentication Method of an enhanced authentication, echoed in CONNACK
    /// with the exchange's last Authentication Data (5.0 §4.12).
    pub auth: Option<(ByteString, Option<bytes::Bytes>)>,
    /// 5.0: Response Information for a client that asked for it (`response_information`,
    /// `%c` replaced by the client identifier) (5.0 §3.1.2.11.7).
    pub response_information: Option<ByteString>,
    /// The session's limits for this client: 5.0's Receive Maximum lowers the in-flight
    /// window [MQTT-3.3.4-9], its Maximum Packet Size bounds what is sent to it
    /// (5.0 §3.1.2.11.4).
    pub limits: SessionLimits,
}

impl Negotiated {
    /// The terms for `connect` under the configuration, starting from the shard's session
    /// limits. `assigned` says the server chose the client identifier.
    pub(crate) fn new(
        connect: &Connect,
        cfg: &Config,
        session: SessionLimits,
        assigned: bool,
    ) -> Negotiated {
        let limits = &cfg.limits;
        let asked = connect.keep_alive;
        let (keep_alive, server_keep_alive) = if connect.version.is_v5() {
            let mut k = asked;
            if limits.keepalive_min != 0 && (k == 0 || k < limits.keepalive_min) {
                k = limits.keepalive_min;
            }
            if limits.keepalive_max != 0 && (k == 0 || k > limits.keepalive_max) {
                k = limits.keepalive_max;
            }
            (k, (k != asked).then_some(k))
        } else {
            // A 3.x client cannot be told another value: it keeps its own (config docs).
            (asked, None)
        };
        let mut session = session;
        if let Some(rm) = connect.properties.receive_maximum {
            session.max_inflight = session.max_inflight.min(rm.max(1));
        }
        if let Some(max) = connect.properties.maximum_packet_size {
            session.max_packet_out = max;
        }
        if let Some(max) = connect.properties.topic_alias_maximum {
            // Aliases towards the client: no more than it allows [MQTT-3.3.2-10].
            session.max_topic_alias_out = max.min(limits.max_topic_alias_out);
        }
        let v5 = connect.version.is_v5();
        let asked_expiry = match (v5, connect.clean_start) {
            (true, _) => connect.properties.session_expiry_interval.unwrap_or(0),
            (false, true) => 0,
            (false, false) => NEVER_EXPIRES,
        };
        let cap = limits.session_expiry_cap();
        // A 3.x persistent session under a cap of 0 still lasts while it is connected
        // (a takeover with clean session 0 resumes it, as before 5.0 sessions had an
        // interval); it ends at disconnect (`Shard::connection_closed`).
        let session_expiry = if cap == 0 && !v5 {
            asked_expiry
        } else {
            asked_expiry.min(cap)
        };
        Negotiated {
            version: connect.version,
            client_id: ByteString::from(&*connect.client_id),
            clean_start: connect.clean_start,
            keep_alive,
            server_keep_alive,
            max_packet_in: limits.max_packet_size,
            session_expiry,
            told_session_expiry: (v5 && session_expiry != asked_expiry).then_some(session_expiry),
            assigned_client_id: v5 && assigned,
            retain_available: cfg.retain_available,
            topic_alias_max_in: if v5 { limits.max_topic_alias } else { 0 },
            auth: connect
                .properties
                .authentication_method
                .as_ref()
                .filter(|_| v5)
                .map(|m| {
                    let data = connect.properties.authentication_data.as_ref();
                    (
                        ByteString::from(&**m),
                        data.map(|d| bytes::Bytes::copy_from_slice(d)),
                    )
                }),
            response_information: response_information(connect, cfg),
            username: connect.username.as_deref().map(Box::from),
            // Set by the caller, which knows the listener.
            domain: 0,
            limits: session,
        }
    }

    /// Writes the CONNACK accepting the connection (5.0: with the server's capabilities,
    /// see the module docs).
    pub(crate) fn write_connack(&self, out: &mut BytesMut, session_present: bool) {
        let mut properties = Properties::new();
        if self.version.is_v5() {
            let p = properties.get_mut();
            p.server_keep_alive = self.server_keep_alive;
            p.session_expiry_interval = self.told_session_expiry;
            if self.assigned_client_id {
                // [MQTT-3.2.2-16]
                p.assigned_client_identifier = Some(self.client_id.clone());
            }
            p.maximum_packet_size = Some(self.max_packet_in);
            if !self.retain_available {
                p.retain_available = Some(false);
            }
            if self.topic_alias_max_in > 0 {
                p.topic_alias_maximum = Some(self.topic_alias_max_in);
            }
            // Subscription identifiers, shared subscriptions and wildcards are supported:
            // their absence says so (5.0 §3.2.2.3.11-13).
            if let Some((method, data)) = &self.auth {
                // The method the exchange used, and its last data (5.0 §4.12).
                p.authentication_method = Some(method.clone());
                p.authentication_data = data.clone();
            }
            p.response_information = self.response_information.clone();
        }
        write_connack(
            out,
            self.version,
            session_present,
            ReasonCode::SUCCESS,
            properties,
        );
    }
}

/// 5.0 Response Information for a client that asked (`response_information`, `%c`
/// replaced by its client identifier), unless the result is unfit to send: longer than a
/// UTF-8 string may be, with wildcard or NUL characters from the client identifier (it is
/// a topic prefix), or making CONNACK larger than the client accepts.
fn response_information(connect: &Connect, cfg: &Config) -> Option<ByteString> {
    if !connect.version.is_v5()
        || connect.properties.request_response_information != Some(true)
        || cfg.response_information.is_empty()
    {
        return None;
    }
    let s = cfg.response_information.replace("%c", &connect.client_id);
    // CONNACK's other fields and properties stay well under 64 bytes.
    let room = connect
        .properties
        .maximum_packet_size
        .map_or(usize::MAX, |m| m as usize)
        .saturating_sub(64);
    let fit = s.len() <= usize::from(u16::MAX) && s.len() <= room;
    (fit && !s.contains(['+', '#', '\0'])).then(|| ByteString::from(s))
}

/// Writes CONNACK for `version` refusing a connection with `reason`; 5.0 with a Reason
/// String saying why, unless it would take the CONNACK beyond `client_max` (the client's
/// Maximum Packet Size) [MQTT-3.2.2-19]. CONNACK may carry one whatever the client's
/// Request Problem Information [MQTT-3.1.2-29].
pub(crate) fn write_refusal(
    out: &mut BytesMut,
    version: ProtocolVersion,
    reason: ReasonCode,
    client_max: u32,
) {
    let mut properties = Properties::new();
    let why = refusal_reason(reason);
    // Fixed header (2 bytes: these reasons are all under 120 bytes), flags, code, property
    // length, identifier and string length.
    if version.is_v5() && why.len() + 9 <= client_max as usize {
        properties.get_mut().reason_string = Some(ByteString::from_static(why));
    }
    write_connack(out, version, false, reason, properties);
}

/// Why the server refuses a CONNECT with `code`, in words (5.0 Reason String).
pub(crate) fn refusal_reason(code: ReasonCode) -> &'static str {
    match code {
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => "client identifier not valid",
        ReasonCode::NOT_AUTHORIZED => {
            "not authorized (no user name with allow_anonymous off, or refused by the hooks)"
        }
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => "bad user name or password",
        ReasonCode::QUOTA_EXCEEDED => "max_sessions reached",
        ReasonCode::SERVER_BUSY => "max_connections reached",
        ReasonCode::BAD_AUTHENTICATION_METHOD => "authentication method not supported",
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => "protocol version not supported",
        ReasonCode::PROTOCOL_ERROR => "protocol error in CONNECT or the authentication exchange",
        ReasonCode::MALFORMED_PACKET => "malformed CONNECT",
        ReasonCode::PACKET_TOO_LARGE => "CONNECT larger than max_packet_size",
        other => other.name(),
    }
}

fn write_connack(
    out: &mut BytesMut,
    version: ProtocolVersion,
    session_present: bool,
    reason: ReasonCode,
    properties: Properties,
) {
    match version {
        ProtocolVersion::V5 => {
            let p = Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            });
            if let Err(e) = p.encode(version, out) {
                tracing::error!(error = %e, "CONNACK encode failed");
            }
        }
        _ => {
            // 3.1 has no session present flag; refusals never carry it [MQTT-3.2.2-4].
            let sp = version == ProtocolVersion::V3_1_1 && session_present && reason.is_success();
            out.extend_from_slice(&[0x20, 0x02, u8::from(sp), reason.to_connack_v3()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, DecodeOptions};

    fn connect(version: ProtocolVersion, keep_alive: u16, receive_maximum: Option<u16>) -> Connect {
        let mut properties = Properties::new();
        if let Some(rm) = receive_maximum {
            properties.get_mut().receive_maximum = Some(rm);
        }
        Connect {
            version,
            clean_start: true,
            keep_alive,
            client_id: ByteString::from("c"),
            will: None,
            username: None,
            password: None,
            properties,
        }
    }

    fn limits(min: u16, max: u16) -> Config {
        let mut c = Config::default();
        c.limits.keepalive_min = min;
        c.limits.keepalive_max = max;
        c
    }

    const SESSION: SessionLimits = SessionLimits {
        max_inflight: 128,
        max_inflight_incoming: u16::MAX,
        max_queued_messages: 1000,
        max_queued_bytes: 1 << 20,
        max_packet_out: u32::MAX,
        max_topic_alias_out: 0,
    };

    #[test]
    fn keep_alive_is_clamped_for_5_0_and_kept_for_3_x() {
        for (asked, min, max, want, told) in [
            (60, 0, 0, 60, None),
            (0, 10, 0, 10, Some(10)),
            (5, 10, 100, 10, Some(10)),
            (500, 10, 100, 100, Some(100)),
            (0, 0, 100, 100, Some(100)),
            (50, 10, 100, 50, None),
        ] {
            let n = Negotiated::new(
                &connect(ProtocolVersion::V5, asked, None),
                &limits(min, max),
                SESSION,
                false,
            );
            assert_eq!(
                (n.keep_alive, n.server_keep_alive),
                (want, told),
                "{asked} {min} {max}"
            );
            for v in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
                let n =
                    Negotiated::new(&connect(v, asked, None), &limits(min, max), SESSION, false);
                assert_eq!((n.keep_alive, n.server_keep_alive), (asked, None));
            }
        }
    }

    #[test]
    fn receive_maximum_lowers_the_window_only() {
        let l = Config::default();
        let n = Negotiated::new(
            &connect(ProtocolVersion::V5, 0, Some(5)),
            &l,
            SESSION,
            false,
        );
        assert_eq!(n.limits.max_inflight, 5);
        let n = Negotiated::new(
            &connect(ProtocolVersion::V5, 0, Some(1000)),
            &l,
            SESSION,
            false,
        );
        assert_eq!(n.limits.max_inflight, 128);
    }

    #[test]
    fn connack_tells_a_5_0_client_its_server_keep_alive() {
        let n = Negotiated::new(
            &connect(ProtocolVersion::V5, 0, None),
            &limits(30, 0),
            SESSION,
            false,
        );
        let mut out = BytesMut::new();
        n.write_connack(&mut out, false);
        match decode(&mut out, &DecodeOptions::new(ProtocolVersion::V5)) {
            Ok(Some(Packet::ConnAck(a))) => {
                assert_eq!(a.properties.server_keep_alive, Some(30));
            }
            other => panic!("{other:?}"),
        }
        let mut out = BytesMut::new();
        write_refusal(
            &mut out,
            ProtocolVersion::V3_1_1,
            ReasonCode::NOT_AUTHORIZED,
            u32::MAX,
        );
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x05]);
        // 5.0: with a Reason String, unless the client's Maximum Packet Size forbids it.
        for (max, want) in [(u32::MAX, true), (20, false)] {
            let mut out = BytesMut::new();
            write_refusal(
                &mut out,
                ProtocolVersion::V5,
                ReasonCode::QUOTA_EXCEEDED,
                max,
            );
            assert!(out.len() <= max as usize);
            match decode(&mut out, &DecodeOptions::new(ProtocolVersion::V5)) {
                Ok(Some(Packet::ConnAck(a))) => {
                    assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED);
                    assert_eq!(a.properties.reason_string.is_some(), want);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn session_expiry_follows_clean_start_for_3_x_and_the_interval_for_5_0() {
        let mut c = connect(ProtocolVersion::V5, 0, None);
        let cfg = Config::default();
        for (v, clean, asked, want) in [
            (ProtocolVersion::V3_1_1, true, None, 0),
            (ProtocolVersion::V3_1_1, false, None, NEVER_EXPIRES),
            (ProtocolVersion::V3_1, false, Some(5), NEVER_EXPIRES),
            (ProtocolVersion::V5, false, None, 0),
            (ProtocolVersion::V5, true, Some(60), 60),
            (
                ProtocolVersion::V5,
                false,
                Some(NEVER_EXPIRES),
                NEVER_EXPIRES,
            ),
        ] {
            c.version = v;
            c.clean_start = clean;
            c.properties = Properties::new();
            c.properties.get_mut().session_expiry_interval = asked;
            let n = Negotiated::new(&c, &cfg, SESSION, false);
            assert_eq!((n.session_expiry, n.told_session_expiry), (want, None));
        }
        // Capped by session_expiry_max; a 5.0 client is told (5.0 §3.2.2.3.2).
        let mut capped = Config::default();
        capped.limits.session_expiry_max = Some(100);
        c.version = ProtocolVersion::V5;
        c.properties.get_mut().session_expiry_interval = Some(1000);
        let n = Negotiated::new(&c, &capped, SESSION, false);
        assert_eq!((n.session_expiry, n.told_session_expiry), (100, Some(100)));
        c.version = ProtocolVersion::V3_1_1;
        c.clean_start = false;
        let n = Negotiated::new(&c, &capped, SESSION, false);
        assert_eq!((n.session_expiry, n.told_session_expiry), (100, None));
    }

    #[test]
    fn connack_tells_a_5_0_client_the_servers_capabilities() {
        let mut cfg = Config {
            retain_available: false,
            ..Config::default()
        };
        cfg.limits.max_packet_size = 5000;
        let mut c = connect(ProtocolVersion::V5, 0, None);
        c.client_id = ByteString::from("surgemq-assigned");
        let n = Negotiated::new(&c, &cfg, SESSION, true);
        let mut out = BytesMut::new();
        n.write_connack(&mut out, false);
        let Ok(Some(Packet::ConnAck(a))) =
            decode(&mut out, &DecodeOptions::new(ProtocolVersion::V5))
        else {
            panic!("a CONNACK");
        };
        let p = &a.properties;
        assert_eq!(
            p.assigned_client_identifier.as_deref(),
            Some("surgemq-assigned")
        );
        assert_eq!(p.maximum_packet_size, Some(5000));
        assert_eq!(p.retain_available, Some(false));
        assert_eq!(p.topic_alias_maximum, Some(10));
        assert_eq!(p.shared_subscription_available, None, "absent: available");
        assert_eq!(
            p.subscription_identifier_available, None,
            "absent: available"
        );
        assert_eq!(p.wildcard_subscription_available, None, "absent: available");
        // 3.x: nothing but the four bytes.
        c.version = ProtocolVersion::V3_1_1;
        let n = Negotiated::new(&c, &cfg, SESSION, true);
        let mut out = BytesMut::new();
        n.write_connack(&mut out, false);
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x00]);
    }

    #[test]
    fn response_information_is_left_out_where_it_cannot_go() {
        let cfg = Config {
            response_information: "r/%c".into(),
            ..Config::default()
        };
        let ask = |id: &str, max: Option<u32>| {
            let mut c = connect(ProtocolVersion::V5, 60, None);
            c.client_id = ByteString::from(id);
            c.properties.get_mut().request_response_information = Some(true);
            c.properties.get_mut().maximum_packet_size = max;
            Negotiated::new(&c, &cfg, SESSION, false).response_information
        };
        assert_eq!(ask("dev", None).as_deref(), Some("r/dev"));
        // A client identifier may hold wildcards; a topic prefix may not.
        assert_eq!(ask("a+b", None), None);
        assert_eq!(ask("a#", None), None);
        // Longer than a UTF-8 string may be, or than the client takes.
        assert_eq!(ask(&"x".repeat(65_534), None), None);
        assert_eq!(ask(&"x".repeat(100), Some(120)), None);
        assert!(ask(&"x".repeat(100), Some(200)).is_some());
    }
}
