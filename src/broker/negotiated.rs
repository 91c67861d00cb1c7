//! What a connection and the broker agreed on at CONNECT: built once, on the session's
//! home shard, from the CONNECT and the configuration ([`Negotiated::new`]); then the
//! session takes its limits from it, the connection task its keep alive and packet size,
//! and the CONNACK writer what the client must be told.
//!
//! 5.0's remaining terms (the client's Maximum Packet Size and Topic Alias Maximum, the
//! session expiry, the assigned client identifier) belong here too, so each is decided in
//! one place.
//!
//! **Owns:** the rules that turn a client's requests into the connection's terms.
//!
//! **Must not touch:** sockets, sessions, shard state: it is plain data.

use bytes::BytesMut;
use bytestring::ByteString;

use crate::config::Limits;
use crate::protocol::{ConnAck, Connect, Packet, Properties, ProtocolVersion, ReasonCode};
use crate::session::SessionLimits;

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
    /// The session's limits for this client: 5.0's Receive Maximum lowers the in-flight
    /// window [MQTT-3.3.4-9].
    pub limits: SessionLimits,
}

impl Negotiated {
    /// The terms for `connect` under `limits`, starting from the shard's session limits.
    pub(crate) fn new(connect: &Connect, limits: &Limits, session: SessionLimits) -> Negotiated {
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
        Negotiated {
            version: connect.version,
            client_id: ByteString::from(&*connect.client_id),
            clean_start: connect.clean_start,
            keep_alive,
            server_keep_alive,
            max_packet_in: limits.max_packet_size,
            limits: session,
        }
    }

    /// Writes the CONNACK accepting the connection.
    pub(crate) fn write_connack(&self, out: &mut BytesMut, session_present: bool) {
        let mut properties = Properties::new();
        if let Some(k) = self.server_keep_alive {
            properties.get_mut().server_keep_alive = Some(k);
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

/// Writes CONNACK for `version` refusing a connection with `reason`.
pub(crate) fn write_refusal(out: &mut BytesMut, version: ProtocolVersion, reason: ReasonCode) {
    write_connack(out, version, false, reason, Properties::new());
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

    fn limits(min: u16, max: u16) -> Limits {
        Limits {
            keepalive_min: min,
            keepalive_max: max,
            ..Limits::default()
        }
    }

    const SESSION: SessionLimits = SessionLimits {
        max_inflight: 128,
        max_inflight_incoming: u16::MAX,
        max_queued_messages: 1000,
        max_queued_bytes: 1 << 20,
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
            );
            assert_eq!(
                (n.keep_alive, n.server_keep_alive),
                (want, told),
                "{asked} {min} {max}"
            );
            for v in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
                let n = Negotiated::new(&connect(v, asked, None), &limits(min, max), SESSION);
                assert_eq!((n.keep_alive, n.server_keep_alive), (asked, None));
            }
        }
    }

    #[test]
    fn receive_maximum_lowers_the_window_only() {
        let l = Limits::default();
        let n = Negotiated::new(&connect(ProtocolVersion::V5, 0, Some(5)), &l, SESSION);
        assert_eq!(n.limits.max_inflight, 5);
        let n = Negotiated::new(&connect(ProtocolVersion::V5, 0, Some(1000)), &l, SESSION);
        assert_eq!(n.limits.max_inflight, 128);
    }

    #[test]
    fn connack_tells_a_5_0_client_its_server_keep_alive() {
        let n = Negotiated::new(
            &connect(ProtocolVersion::V5, 0, None),
            &limits(30, 0),
            SESSION,
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
        );
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x05]);
    }
}
