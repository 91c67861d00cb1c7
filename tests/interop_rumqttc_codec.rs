//! Cross-check of our codec against rumqttc 0.25's independent implementation
//! (`rumqttc::mqttbytes::v4` for MQTT 3.1.1, `rumqttc::v5::mqttbytes::v5` for MQTT 5.0).
//!
//! Every case is a *pair*: the same logical packet built once as our [`Packet`] and once as
//! rumqttc's packet, each from the same literal values (never one converted from the other,
//! so a mapping mistake cannot hide a codec mistake). Each pair is checked both ways:
//!
//! 1. rumqttc encodes -> our `decode` -> must equal our packet (every field, via `PartialEq`);
//! 2. we encode -> rumqttc decodes -> must equal rumqttc's packet.
//!
//! 3.1.1 has exactly one encoding per packet, so on v4 the two byte strings must also be
//! identical. 5.0 allows properties in any order, so only the decoded values are compared.
//!
//! Where rumqttc departs from the specification, the case is not silently dropped: it is left
//! out of the pair checks with a comment naming rumqttc's behaviour and the clause, and a
//! `known_rumqttc_deviation_*` test pins that behaviour (so an upgrade that fixes rumqttc
//! fails loudly and the case can be enabled). Behaviour of *ours* that contradicts the
//! specification is kept as a failing test (`suspected_bug_*`), never worked around.

use std::collections::BTreeSet;
use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rumqttc::mqttbytes as r4base;
use rumqttc::mqttbytes::v4 as r4;
use rumqttc::v5::mqttbytes as r5base;
use rumqttc::v5::mqttbytes::v5 as r5;
use surgemq::protocol::properties::PropertySet;
use surgemq::protocol::{
    decode, Ack, Auth, ConnAck, Connect, DecodeError, DecodeOptions, Disconnect, Packet,
    Properties, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    Subscription, SubscriptionOptions, TopicFilter, TopicName, UnsubAck, Unsubscribe, Will,
};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// Size limit handed to rumqttc's readers and writers (it compares it with the Remaining
/// Length when reading and with the whole packet size when writing).
const MAX: usize = 1 << 24;

// ------------------------------------------------------------------------------------------
// Small constructors
// ------------------------------------------------------------------------------------------

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("packet id must be non-zero")
}

fn bs(s: &str) -> ByteString {
    ByteString::from(s)
}

fn topic(s: &str) -> TopicName {
    TopicName::new(bs(s)).expect("valid topic name")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(bs(s)).expect("valid topic filter")
}

fn props(f: impl FnOnce(&mut PropertySet)) -> Properties {
    let mut p = PropertySet::default();
    f(&mut p);
    Properties::from(p)
}

fn up(pairs: &[(&str, &str)]) -> Vec<(ByteString, ByteString)> {
    pairs.iter().map(|(k, v)| (bs(k), bs(v))).collect()
}

fn rup(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn oq(q: u8) -> QoS {
    QoS::from_u8(q).expect("qos 0..=2")
}

fn q4(q: u8) -> r4base::QoS {
    r4base::qos(q).expect("qos 0..=2")
}

fn q5(q: u8) -> r5base::QoS {
    r5base::qos(q).expect("qos 0..=2")
}

/// Number of bytes of the Remaining Length varint of a frame (and a consistency check of it).
fn remaining_len_bytes(wire: &[u8]) -> usize {
    let mut value = 0usize;
    for (i, b) in wire[1..].iter().take(4).enumerate() {
        value |= ((b & 0x7F) as usize) << (7 * i);
        if b & 0x80 == 0 {
            assert_eq!(
                1 + (i + 1) + value,
                wire.len(),
                "remaining length disagrees"
            );
            return i + 1;
        }
    }
    panic!("remaining length longer than 4 bytes");
}

// ------------------------------------------------------------------------------------------
// Our side
// ------------------------------------------------------------------------------------------

/// Decodes exactly one frame with our decoder. A strict prefix of the frame must be "need
/// more" (`Ok(None)`, nothing consumed), and the whole frame must be consumed.
fn ours_decode(wire: &[u8], version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let opts = DecodeOptions::new(version);
    if wire.len() > 1 {
        let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
        match decode(&mut partial, &opts) {
            Ok(None) => assert_eq!(partial.len(), wire.len() - 1, "prefix was consumed"),
            other => panic!("strict prefix of a frame decoded to {other:?}"),
        }
    }
    let mut buf = BytesMut::from(wire);
    let p = decode(&mut buf, &opts)?.expect("a complete frame must decode to a packet");
    assert!(
        buf.is_empty(),
        "our decoder left {} of {} bytes unconsumed",
        buf.len(),
        wire.len()
    );
    Ok(p)
}

fn ours_encode(p: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(version, &mut buf)
        .unwrap_or_else(|e| panic!("our encoder refused {p:?}: {e:?}"));
    assert_eq!(
        p.encoded_len(version).expect("encoded_len"),
        buf.len(),
        "encoded_len disagrees with encode"
    );
    buf
}

// ------------------------------------------------------------------------------------------
// rumqttc side
// ------------------------------------------------------------------------------------------

fn r4_write(p: &r4::Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    let n = p
        .write(&mut buf, MAX)
        .unwrap_or_else(|e| panic!("rumqttc v4 refused to write {p:?}: {e:?}"));
    assert_eq!(n, buf.len(), "rumqttc v4 write() returned a wrong length");
    buf
}

fn r4_read(wire: &[u8]) -> Result<r4::Packet, r4base::Error> {
    let mut buf = BytesMut::from(wire);
    let p = r4::Packet::read(&mut buf, MAX)?;
    assert!(buf.is_empty(), "rumqttc v4 left {} bytes", buf.len());
    Ok(p)
}

fn r5_write(p: &r5::Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    p.write(&mut buf, Some(MAX as u32))
        .unwrap_or_else(|e| panic!("rumqttc v5 refused to write {p:?}: {e:?}"));
    buf
}

fn r5_read(wire: &[u8]) -> Result<r5::Packet, r5base::Error> {
    let mut buf = BytesMut::from(wire);
    let p = r5::Packet::read(&mut buf, Some(MAX as u32))?;
    assert!(buf.is_empty(), "rumqttc v5 left {} bytes", buf.len());
    Ok(p)
}

// ------------------------------------------------------------------------------------------
// Pair checks
// ------------------------------------------------------------------------------------------

fn v4_rumqttc_to_ours(ours: &Packet, theirs: &r4::Packet) -> BytesMut {
    let wire = r4_write(theirs);
    let got = ours_decode(&wire, V4)
        .unwrap_or_else(|e| panic!("we rejected rumqttc's v4 {theirs:?} ({wire:02x?}): {e:?}"));
    assert_eq!(&got, ours, "rumqttc v4 -> ours, bytes {wire:02x?}");
    wire
}

fn v4_ours_to_rumqttc(ours: &Packet, theirs: &r4::Packet) -> BytesMut {
    let wire = ours_encode(ours, V4);
    let got = r4_read(&wire)
        .unwrap_or_else(|e| panic!("rumqttc v4 rejected our {ours:?} ({wire:02x?}): {e:?}"));
    assert_eq!(&got, theirs, "ours -> rumqttc v4, bytes {wire:02x?}");
    wire
}

/// Both directions, plus byte equality (3.1.1 has a single encoding per packet).
fn check_v4(ours: Packet, theirs: r4::Packet) {
    let a = v4_rumqttc_to_ours(&ours, &theirs);
    let b = v4_ours_to_rumqttc(&ours, &theirs);
    assert_eq!(a, b, "v4 encodings differ for {ours:?}");
}

fn v5_rumqttc_to_ours(ours: &Packet, theirs: &r5::Packet) -> BytesMut {
    let wire = r5_write(theirs);
    let got = ours_decode(&wire, V5)
        .unwrap_or_else(|e| panic!("we rejected rumqttc's v5 {theirs:?} ({wire:02x?}): {e:?}"));
    assert_eq!(&got, ours, "rumqttc v5 -> ours, bytes {wire:02x?}");
    wire
}

fn v5_ours_to_rumqttc(ours: &Packet, theirs: &r5::Packet) -> BytesMut {
    let wire = ours_encode(ours, V5);
    let got = r5_read(&wire)
        .unwrap_or_else(|e| panic!("rumqttc v5 rejected our {ours:?} ({wire:02x?}): {e:?}"));
    assert_eq!(&got, theirs, "ours -> rumqttc v5, bytes {wire:02x?}");
    wire
}

fn check_v5(ours: Packet, theirs: r5::Packet) {
    v5_rumqttc_to_ours(&ours, &theirs);
    v5_ours_to_rumqttc(&ours, &theirs);
}

// ==========================================================================================
// CONNECT
// ==========================================================================================

fn connect(f: impl FnOnce(&mut Connect)) -> Packet {
    let mut c = Connect {
        version: V4,
        clean_start: true,
        keep_alive: 30,
        client_id: bs("client-1"),
        will: None,
        username: None,
        password: None,
        properties: Properties::new(),
    };
    f(&mut c);
    Packet::Connect(Box::new(c))
}

#[test]
fn v4_connect() {
    // Minimal.
    check_v4(
        connect(|_| {}),
        r4::Packet::Connect(r4::Connect {
            protocol: r4base::Protocol::V4,
            keep_alive: 30,
            client_id: "client-1".into(),
            clean_session: true,
            last_will: None,
            login: None,
        }),
    );

    // Empty client id, keep alive 0 and maximum, no clean session.
    for ka in [0u16, 1, 65535] {
        check_v4(
            connect(|c| {
                c.client_id = bs("");
                c.keep_alive = ka;
                c.clean_start = false;
            }),
            r4::Packet::Connect(r4::Connect {
                protocol: r4base::Protocol::V4,
                keep_alive: ka,
                client_id: String::new(),
                clean_session: false,
                last_will: None,
                login: None,
            }),
        );
    }

    // Will (every QoS, retain on and off) and user name + password.
    for qos in 0..=2u8 {
        for retain in [false, true] {
            let payload: Vec<u8> = (0..=255u8).collect(); // binary will payload
            check_v4(
                connect(|c| {
                    c.client_id = bs("c-ü-温度");
                    c.will = Some(Will {
                        topic: topic("clients/c1/status"),
                        payload: Bytes::from(payload.clone()),
                        qos: oq(qos),
                        retain,
                        properties: Properties::new(),
                    });
                    c.username = Some(bs("user"));
                    c.password = Some(Bytes::from_static("pässwörd".as_bytes()));
                }),
                r4::Packet::Connect(r4::Connect {
                    protocol: r4base::Protocol::V4,
                    keep_alive: 30,
                    client_id: "c-ü-温度".into(),
                    clean_session: true,
                    last_will: Some(r4::LastWill {
                        topic: "clients/c1/status".into(),
                        message: Bytes::from(payload.clone()),
                        qos: q4(qos),
                        retain,
                    }),
                    login: Some(r4::Login::new("user", "pässwörd")),
                }),
            );
        }
    }

    // Will with an empty payload, user name only (rumqttc: empty password = no password flag).
    check_v4(
        connect(|c| {
            c.will = Some(Will {
                topic: topic("w"),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::new(),
            });
            c.username = Some(bs("only-user"));
        }),
        r4::Packet::Connect(r4::Connect {
            protocol: r4base::Protocol::V4,
            keep_alive: 30,
            client_id: "client-1".into(),
            clean_session: true,
            last_will: Some(r4::LastWill::new("w", Vec::new(), q4(0), false)),
            login: Some(r4::Login::new("only-user", "")),
        }),
    );

    // Not checked here, see the known_rumqttc_deviation_* tests:
    // - a password without a user name (rumqttc emits it; 3.1.1 forbids it, [MQTT-3.1.2-22]);
    // - a non-UTF-8 password (rumqttc's Login is a String; 3.1.1 §3.1.3.5: binary data).
}

fn r5_connect_props_full() -> r5::ConnectProperties {
    r5::ConnectProperties {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(100),
        max_packet_size: Some(65536),
        topic_alias_max: Some(10),
        request_response_info: Some(1),
        request_problem_info: Some(0),
        user_properties: rup(&[("a", "1"), ("a", "2"), ("ключ", "значение")]),
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(Bytes::from_static(&[0, 1, 0xFF])),
    }
}

fn our_connect_props_full() -> Properties {
    props(|p| {
        p.session_expiry_interval = Some(3600);
        p.receive_maximum = Some(100);
        p.maximum_packet_size = Some(65536);
        p.topic_alias_maximum = Some(10);
        p.request_response_information = Some(true);
        p.request_problem_information = Some(false);
        p.user_properties = up(&[("a", "1"), ("a", "2"), ("ключ", "значение")]);
        p.authentication_method = Some(bs("SCRAM-SHA-1"));
        p.authentication_data = Some(Bytes::from_static(&[0, 1, 0xFF]));
    })
}

#[test]
fn v5_connect() {
    let base = |c: &mut Connect| c.version = V5;

    // Minimal, no properties.
    check_v5(
        connect(base),
        r5::Packet::Connect(
            r5::Connect {
                keep_alive: 30,
                client_id: "client-1".into(),
                clean_start: true,
                properties: None,
            },
            None,
            None,
        ),
    );

    // Every CONNECT property, a will with every will property, user name and password.
    check_v5(
        connect(|c| {
            base(c);
            c.clean_start = false;
            c.keep_alive = 65535;
            c.properties = our_connect_props_full();
            c.will = Some(Will {
                topic: topic("clients/c1/status"),
                payload: Bytes::from_static(b"offline"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: props(|p| {
                    p.will_delay_interval = Some(5);
                    p.payload_format_indicator = Some(true);
                    p.message_expiry_interval = Some(60);
                    p.content_type = Some(bs("text/plain"));
                    p.response_topic = Some(bs("replies/c1"));
                    p.correlation_data = Some(Bytes::from_static(&[1, 2, 0, 255]));
                    p.user_properties = up(&[("w", "v"), ("w", "v")]);
                }),
            });
            c.username = Some(bs("user"));
            c.password = Some(Bytes::from_static(b"secret"));
        }),
        r5::Packet::Connect(
            r5::Connect {
                keep_alive: 65535,
                client_id: "client-1".into(),
                clean_start: false,
                properties: Some(r5_connect_props_full()),
            },
            Some(r5::LastWill::new(
                "clients/c1/status",
                b"offline".to_vec(),
                q5(1),
                true,
                Some(r5::LastWillProperties {
                    delay_interval: Some(5),
                    payload_format_indicator: Some(1),
                    message_expiry_interval: Some(60),
                    content_type: Some("text/plain".into()),
                    response_topic: Some("replies/c1".into()),
                    correlation_data: Some(Bytes::from_static(&[1, 2, 0, 255])),
                    user_properties: rup(&[("w", "v"), ("w", "v")]),
                }),
            )),
            Some(r5::Login::new("user", "secret")),
        ),
    );

    // Will without will properties at QoS 2, password without user name (legal in 5.0,
    // §3.1.2.9), empty client id.
    check_v5(
        connect(|c| {
            base(c);
            c.client_id = bs("");
            c.will = Some(Will {
                topic: topic("a/b"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: Properties::new(),
            });
            c.password = Some(Bytes::from_static(b"token-only"));
        }),
        r5::Packet::Connect(
            r5::Connect {
                keep_alive: 30,
                client_id: String::new(),
                clean_start: true,
                properties: None,
            },
            Some(r5::LastWill::new(
                "a/b",
                b"bye".to_vec(),
                q5(2),
                false,
                None,
            )),
            Some(r5::Login::new("", "token-only")),
        ),
    );

    // User name only, a single property.
    check_v5(
        connect(|c| {
            base(c);
            c.username = Some(bs("üser"));
            c.properties = props(|p| p.session_expiry_interval = Some(u32::MAX));
        }),
        r5::Packet::Connect(
            r5::Connect {
                keep_alive: 30,
                client_id: "client-1".into(),
                clean_start: true,
                properties: Some(r5::ConnectProperties {
                    session_expiry_interval: Some(u32::MAX),
                    ..r5::ConnectProperties::new()
                }),
            },
            None,
            Some(r5::Login::new("üser", "")),
        ),
    );
}

// ==========================================================================================
// CONNACK
// ==========================================================================================

#[test]
fn v4_connack() {
    use r4::ConnectReturnCode as C;
    let cases = [
        (C::Success, ReasonCode::SUCCESS),
        (
            C::RefusedProtocolVersion,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        (C::BadClientId, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        (C::ServiceUnavailable, ReasonCode::SERVER_UNAVAILABLE),
        (
            C::BadUserNamePassword,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (C::NotAuthorized, ReasonCode::NOT_AUTHORIZED),
    ];
    for (theirs, ours) in cases {
        // Session present only with success [MQTT-3.2.2-4].
        let sps: &[bool] = if ours.is_success() {
            &[false, true]
        } else {
            &[false]
        };
        for &sp in sps {
            check_v4(
                Packet::ConnAck(ConnAck {
                    session_present: sp,
                    reason: ours,
                    properties: Properties::new(),
                }),
                r4::Packet::ConnAck(r4::ConnAck::new(theirs, sp)),
            );
        }
    }
}

#[test]
fn v5_connack() {
    use r5::ConnectReturnCode as C;
    // Every 5.0 CONNACK reason code rumqttc knows (its 3.1.1-only variants,
    // RefusedProtocolVersion / BadClientId / ServiceUnavailable, panic in its v5 writer
    // and are not 5.0 codes).
    let codes = [
        (C::Success, 0x00),
        (C::UnspecifiedError, 0x80),
        (C::MalformedPacket, 0x81),
        (C::ProtocolError, 0x82),
        (C::ImplementationSpecificError, 0x83),
        (C::UnsupportedProtocolVersion, 0x84),
        (C::ClientIdentifierNotValid, 0x85),
        (C::BadUserNamePassword, 0x86),
        (C::NotAuthorized, 0x87),
        (C::ServerUnavailable, 0x88),
        (C::ServerBusy, 0x89),
        (C::Banned, 0x8A),
        (C::BadAuthenticationMethod, 0x8C),
        (C::TopicNameInvalid, 0x90),
        (C::PacketTooLarge, 0x95),
        (C::QuotaExceeded, 0x97),
        (C::PayloadFormatInvalid, 0x99),
        (C::RetainNotSupported, 0x9A),
        (C::QoSNotSupported, 0x9B),
        (C::UseAnotherServer, 0x9C),
        (C::ServerMoved, 0x9D),
        (C::ConnectionRateExceeded, 0x9F),
    ];
    for (theirs, code) in codes {
        check_v5(
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode(code),
                properties: Properties::new(),
            }),
            r5::Packet::ConnAck(r5::ConnAck {
                session_present: false,
                code: theirs,
                properties: None,
            }),
        );
        // A failure with a reason string and a server reference.
        check_v5(
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode(code),
                properties: props(|p| {
                    p.reason_string = Some(bs("why"));
                    p.server_reference = Some(bs("other.example:1883"));
                }),
            }),
            r5::Packet::ConnAck(r5::ConnAck {
                session_present: false,
                code: theirs,
                properties: Some(r5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: None,
                    max_qos: None,
                    retain_available: None,
                    max_packet_size: None,
                    assigned_client_identifier: None,
                    topic_alias_max: None,
                    reason_string: Some("why".into()),
                    user_properties: vec![],
                    wildcard_subscription_available: None,
                    subscription_identifiers_available: None,
                    shared_subscription_available: None,
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: Some("other.example:1883".into()),
                    authentication_method: None,
                    authentication_data: None,
                }),
            }),
        );
    }

    // Session present, every CONNACK property.
    for (max_qos, flag) in [(0u8, false), (1u8, true)] {
        check_v5(
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::SUCCESS,
                properties: props(|p| {
                    p.session_expiry_interval = Some(7200);
                    p.receive_maximum = Some(65535);
                    p.maximum_qos = Some(oq(max_qos));
                    p.retain_available = Some(flag);
                    p.maximum_packet_size = Some(1 << 20);
                    p.assigned_client_identifier = Some(bs("auto-3f2a"));
                    p.topic_alias_maximum = Some(0);
                    p.reason_string = Some(bs("welcome"));
                    p.user_properties = up(&[("region", "eu"), ("region", "us")]);
                    p.wildcard_subscription_available = Some(flag);
                    p.subscription_identifier_available = Some(!flag);
                    p.shared_subscription_available = Some(flag);
                    p.server_keep_alive = Some(45);
                    p.response_information = Some(bs("resp/"));
                    p.server_reference = Some(bs("srv2"));
                    p.authentication_method = Some(bs("SCRAM-SHA-256"));
                    p.authentication_data = Some(Bytes::from_static(&[9; 40]));
                }),
            }),
            r5::Packet::ConnAck(r5::ConnAck {
                session_present: true,
                code: C::Success,
                properties: Some(r5::ConnAckProperties {
                    session_expiry_interval: Some(7200),
                    receive_max: Some(65535),
                    max_qos: Some(max_qos),
                    retain_available: Some(flag as u8),
                    max_packet_size: Some(1 << 20),
                    assigned_client_identifier: Some("auto-3f2a".into()),
                    topic_alias_max: Some(0),
                    reason_string: Some("welcome".into()),
                    user_properties: rup(&[("region", "eu"), ("region", "us")]),
                    wildcard_subscription_available: Some(flag as u8),
                    subscription_identifiers_available: Some(!flag as u8),
                    shared_subscription_available: Some(flag as u8),
                    server_keep_alive: Some(45),
                    response_information: Some("resp/".into()),
                    server_reference: Some("srv2".into()),
                    authentication_method: Some("SCRAM-SHA-256".into()),
                    authentication_data: Some(Bytes::from_static(&[9; 40])),
                }),
            }),
        );
    }
}

// ==========================================================================================
// PUBLISH
// ==========================================================================================

/// PUBLISH v5 properties, in a form both sides are built from.
#[derive(Debug, Clone, Default)]
struct PubProps {
    payload_format_indicator: Option<bool>,
    message_expiry_interval: Option<u32>,
    topic_alias: Option<u16>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    user_properties: Vec<(String, String)>,
    subscription_identifiers: Vec<u32>,
    content_type: Option<String>,
}

impl PubProps {
    fn is_empty(&self) -> bool {
        self.payload_format_indicator.is_none()
            && self.message_expiry_interval.is_none()
            && self.topic_alias.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.user_properties.is_empty()
            && self.subscription_identifiers.is_empty()
            && self.content_type.is_none()
    }
}

/// One PUBLISH, from which both sides' packets are built.
#[derive(Debug, Clone)]
struct PubSpec {
    dup: bool,
    qos: u8,
    retain: bool,
    topic: String,
    pkid: u16,
    payload: Bytes,
    props: PubProps,
}

impl PubSpec {
    fn new(topic: &str, qos: u8, payload: impl Into<Bytes>) -> Self {
        PubSpec {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            pkid: if qos == 0 { 0 } else { 1 },
            payload: payload.into(),
            props: PubProps::default(),
        }
    }

    fn ours(&self) -> Packet {
        let p = &self.props;
        let properties = if p.is_empty() {
            Properties::new()
        } else {
            props(|s| {
                s.payload_format_indicator = p.payload_format_indicator;
                s.message_expiry_interval = p.message_expiry_interval;
                s.topic_alias = p.topic_alias;
                s.response_topic = p.response_topic.as_deref().map(bs);
                s.correlation_data = p.correlation_data.clone().map(Bytes::from);
                s.user_properties = p
                    .user_properties
                    .iter()
                    .map(|(k, v)| (bs(k), bs(v)))
                    .collect();
                s.subscription_identifiers = p.subscription_identifiers.clone();
                s.content_type = p.content_type.as_deref().map(bs);
            })
        };
        Packet::Publish(Publish {
            dup: self.dup,
            qos: oq(self.qos),
            retain: self.retain,
            topic: if self.topic.is_empty() {
                TopicName::empty()
            } else {
                topic(&self.topic)
            },
            packet_id: if self.qos == 0 {
                None
            } else {
                Some(pid(self.pkid))
            },
            properties,
            payload: self.payload.clone(),
        })
    }

    fn r4(&self) -> r4::Packet {
        assert!(self.props.is_empty(), "3.1.1 PUBLISH has no properties");
        r4::Packet::Publish(r4::Publish {
            dup: self.dup,
            qos: q4(self.qos),
            retain: self.retain,
            topic: self.topic.clone(),
            pkid: self.pkid,
            payload: self.payload.clone(),
        })
    }

    fn r5(&self) -> r5::Packet {
        let p = &self.props;
        let properties = if p.is_empty() {
            None
        } else {
            Some(r5::PublishProperties {
                payload_format_indicator: p.payload_format_indicator.map(u8::from),
                message_expiry_interval: p.message_expiry_interval,
                topic_alias: p.topic_alias,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone().map(Bytes::from),
                user_properties: p.user_properties.clone(),
                subscription_identifiers: p
                    .subscription_identifiers
                    .iter()
                    .map(|&v| v as usize)
                    .collect(),
                content_type: p.content_type.clone(),
            })
        };
        r5::Packet::Publish(r5::Publish {
            dup: self.dup,
            qos: q5(self.qos),
            retain: self.retain,
            topic: Bytes::copy_from_slice(self.topic.as_bytes()),
            pkid: self.pkid,
            payload: self.payload.clone(),
            properties,
        })
    }

    /// Both directions on v4; returns the varint length of the frame.
    fn check_v4(&self) -> usize {
        let (ours, theirs) = (self.ours(), self.r4());
        let a = v4_rumqttc_to_ours(&ours, &theirs);
        let b = v4_ours_to_rumqttc(&ours, &theirs);
        assert_eq!(a, b, "v4 PUBLISH encodings differ for {self:?}");
        remaining_len_bytes(&a)
    }

    /// Both directions on v5; returns the varint length of the frame.
    fn check_v5(&self) -> usize {
        let (ours, theirs) = (self.ours(), self.r5());
        let a = v5_rumqttc_to_ours(&ours, &theirs);
        if !rumqttc_reads_all_publish_props(&self.props) {
            // Skipped: rumqttc's Subscription Identifier miscount (see
            // known_rumqttc_deviation_v5_publish_subscription_identifier_miscount). Not
            // silently: the predicate is confirmed, rumqttc really gets it wrong.
            let b = ours_encode(&ours, V5);
            assert_eq!(ours_decode(&b, V5).expect("our own PUBLISH"), ours);
            assert_ne!(
                r5_read(&b).ok().as_ref(),
                Some(&theirs),
                "rumqttc read a PUBLISH the miscount model says it cannot: update the model"
            );
            assert_eq!(a.len(), b.len(), "v5 PUBLISH lengths differ for {self:?}");
            return remaining_len_bytes(&b);
        }
        let b = v5_ours_to_rumqttc(&ours, &theirs);
        // Same properties in possibly different order: same length.
        assert_eq!(a.len(), b.len(), "v5 PUBLISH lengths differ for {self:?}");
        remaining_len_bytes(&b)
    }
}

fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Whether rumqttc 0.25's `PublishProperties::read` gets every property of a PUBLISH that
/// we encoded. It adds 1 for each property identifier and then `1 + id_len` again for a
/// Subscription Identifier, so its cursor runs one byte ahead per Subscription Identifier;
/// it stops once the cursor reaches the Property Length, leaving any properties still
/// unread to the payload. Modelled on our encoder's layout, which writes properties in
/// identifier order (`PropertySet::write`).
fn rumqttc_reads_all_publish_props(p: &PubProps) -> bool {
    let mut sizes: Vec<(usize, bool)> = Vec::new(); // (bytes on the wire, is a sub id)
    if p.payload_format_indicator.is_some() {
        sizes.push((2, false)); // 0x01
    }
    if p.message_expiry_interval.is_some() {
        sizes.push((5, false)); // 0x02
    }
    if let Some(v) = &p.content_type {
        sizes.push((3 + v.len(), false)); // 0x03
    }
    if let Some(v) = &p.response_topic {
        sizes.push((3 + v.len(), false)); // 0x08
    }
    if let Some(v) = &p.correlation_data {
        sizes.push((3 + v.len(), false)); // 0x09
    }
    for &id in &p.subscription_identifiers {
        sizes.push((1 + varint_len(id as usize), true)); // 0x0B
    }
    if p.topic_alias.is_some() {
        sizes.push((3, false)); // 0x23
    }
    for (k, v) in &p.user_properties {
        sizes.push((5 + k.len() + v.len(), false)); // 0x26
    }
    let total: usize = sizes.iter().map(|&(n, _)| n).sum();
    let mut cursor = 0;
    for (n, sub_id) in sizes {
        if cursor >= total {
            return false;
        }
        cursor += n + usize::from(sub_id);
    }
    true
}

/// Remaining lengths around every varint size boundary (1/2, 2/3, 3/4 bytes).
const BOUNDARIES: [usize; 9] = [
    0, 127, 128, 200, 16_383, 16_384, 20_000, 2_097_151, 2_097_152,
];

#[test]
fn v4_publish_flags_and_sizes() {
    let mut varint_sizes = BTreeSet::new();
    for qos in 0..=2u8 {
        for retain in [false, true] {
            // DUP only at QoS > 0: [MQTT-3.3.1-2] (our decoder rejects DUP at QoS 0).
            let dups: &[bool] = if qos == 0 { &[false] } else { &[false, true] };
            for &dup in dups {
                for payload_len in [0usize, 1, 10, 300] {
                    let mut s = PubSpec::new("a/b/c", qos, vec![0xA5u8; payload_len]);
                    s.dup = dup;
                    s.retain = retain;
                    s.pkid = if qos == 0 { 0 } else { 65535 };
                    varint_sizes.insert(s.check_v4());
                }
            }
        }
    }
    // Exact remaining lengths at the varint boundaries.
    for qos in [0u8, 1] {
        for rl in BOUNDARIES {
            let topic = "t";
            let overhead = 2 + topic.len() + if qos > 0 { 2 } else { 0 };
            let payload_len = rl.saturating_sub(overhead);
            let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
            let mut s = PubSpec::new(topic, qos, payload);
            s.pkid = if qos == 0 { 0 } else { 4242 };
            varint_sizes.insert(s.check_v4());
        }
    }
    // Topic edge cases: one byte, multi-byte UTF-8, empty levels, '$' topics, spaces.
    for t in [
        "x",
        "/",
        "a//b/",
        "$SYS/broker/load",
        "温度/センサー/ü",
        "with space/tab\t",
    ] {
        PubSpec::new(t, 1, &b"p"[..]).check_v4();
    }
    assert_eq!(
        varint_sizes,
        BTreeSet::from([1, 2, 3, 4]),
        "remaining-length varint sizes covered"
    );
}

#[test]
fn v5_publish_flags_sizes_and_properties() {
    let mut varint_sizes = BTreeSet::new();
    for qos in 0..=2u8 {
        for retain in [false, true] {
            let dups: &[bool] = if qos == 0 { &[false] } else { &[false, true] };
            for &dup in dups {
                for payload_len in [0usize, 1, 10, 300] {
                    let mut s = PubSpec::new("a/b/c", qos, vec![0x5Au8; payload_len]);
                    s.dup = dup;
                    s.retain = retain;
                    s.pkid = if qos == 0 { 0 } else { 7 };
                    varint_sizes.insert(s.check_v5());
                }
            }
        }
    }
    for qos in [0u8, 2] {
        for rl in BOUNDARIES {
            let topic = "t";
            let overhead = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + 1;
            let payload = vec![0x33u8; rl.saturating_sub(overhead)];
            let mut s = PubSpec::new(topic, qos, payload);
            s.pkid = if qos == 0 { 0 } else { 1 };
            varint_sizes.insert(s.check_v5());
        }
    }
    assert_eq!(varint_sizes, BTreeSet::from([1, 2, 3, 4]));

    // Every PUBLISH property at once, repeated user properties (order kept), one or two
    // subscription identifiers (server to client): checked both ways.
    let every = PubProps {
        payload_format_indicator: Some(true),
        message_expiry_interval: Some(86_400),
        topic_alias: Some(3),
        response_topic: Some("replies/sensors/1".into()),
        correlation_data: Some(vec![0, 1, 2, 0xFE, 0xFF]),
        user_properties: rup(&[("k", "v1"), ("k", "v2"), ("ünï", "cødé"), ("", "")]),
        subscription_identifiers: vec![268_435_455],
        content_type: Some("application/json".into()),
    };
    for ids in [vec![268_435_455], vec![1, 16_384]] {
        let mut s = PubSpec::new("sensors/1/temp", 1, &b"{\"t\":21.5}"[..]);
        s.pkid = 513;
        s.props = PubProps {
            subscription_identifiers: ids,
            ..every.clone()
        };
        assert!(rumqttc_reads_all_publish_props(&s.props));
        s.check_v5();
    }
    // Subscription identifiers of every varint size: rumqttc -> ours; ours -> rumqttc is
    // skipped by its miscount (confirmed inside check_v5).
    let mut s = PubSpec::new("sensors/1/temp", 2, &b"x"[..]);
    s.props = PubProps {
        subscription_identifiers: vec![1, 127, 128, 16_383, 16_384, 2_097_152, 268_435_455],
        ..every.clone()
    };
    assert!(!rumqttc_reads_all_publish_props(&s.props));
    s.check_v5();

    // Each property alone.
    let single: Vec<PubProps> = vec![
        PubProps {
            payload_format_indicator: Some(false),
            ..Default::default()
        },
        PubProps {
            message_expiry_interval: Some(0),
            ..Default::default()
        },
        PubProps {
            topic_alias: Some(65535),
            ..Default::default()
        },
        PubProps {
            response_topic: Some("r".into()),
            ..Default::default()
        },
        PubProps {
            correlation_data: Some(vec![]),
            ..Default::default()
        },
        PubProps {
            user_properties: rup(&[("a", "b")]),
            ..Default::default()
        },
        PubProps {
            subscription_identifiers: vec![42],
            ..Default::default()
        },
        PubProps {
            content_type: Some("".into()),
            ..Default::default()
        },
    ];
    for p in single {
        for qos in 0..=2u8 {
            let mut s = PubSpec::new("x/y", qos, &b"payload"[..]);
            s.props = p.clone();
            s.check_v5();
        }
    }

    // Empty topic name standing for a topic alias (5.0 §3.3.2.3.4).
    let mut s = PubSpec::new("", 1, &b"aliased"[..]);
    s.props.topic_alias = Some(17);
    s.check_v5();

    // Properties large enough to need a two-byte property length.
    let mut s = PubSpec::new("big/props", 0, &b""[..]);
    s.props.user_properties = (0..40)
        .map(|i| (format!("key-{i}"), "v".repeat(i)))
        .collect();
    s.props.correlation_data = Some(vec![7; 20_000]);
    assert!(s.check_v5() >= 3);
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn text(&mut self, max_parts: u64) -> String {
        const PARTS: [&str; 10] = [
            "a", "sensor", "温度", "x-y", "$", "é", " ", "Zz9", "😀", ".",
        ];
        (0..self.below(max_parts + 1))
            .map(|_| *self.pick(&PARTS))
            .collect()
    }
    fn topic(&mut self) -> String {
        let levels = 1 + self.below(5);
        let t: Vec<String> = (0..levels).map(|_| self.text(3)).collect();
        let t = t.join("/");
        if t.is_empty() {
            "t".into()
        } else {
            t
        }
    }
    fn payload(&mut self, utf8: bool) -> Bytes {
        let len = match self.below(10) {
            0 => 0,
            1..=5 => self.below(128),
            6..=8 => 100 + self.below(400),
            _ => 16_000 + self.below(1_000),
        } as usize;
        if utf8 {
            let mut s = String::new();
            while s.len() < len {
                let piece: &&str = self.pick(&["a", "é", "温", "😀", "{", "\"", "0"]);
                s.push_str(piece);
            }
            Bytes::from(s)
        } else {
            Bytes::from((0..len).map(|_| self.next() as u8).collect::<Vec<u8>>())
        }
    }
    fn sub_id(&mut self) -> u32 {
        let max = *self.pick(&[127u32, 16_383, 2_097_151, 268_435_455]);
        1 + self.below(max as u64) as u32
    }
}

fn random_publish(rng: &mut Rng, v5: bool) -> PubSpec {
    let qos = rng.below(3) as u8;
    let mut props = PubProps::default();
    if v5 {
        if rng.chance(3) {
            props.payload_format_indicator = Some(rng.chance(2));
        }
        if rng.chance(3) {
            props.message_expiry_interval = Some(rng.next() as u32);
        }
        if rng.chance(3) {
            props.topic_alias = Some(1 + rng.below(65535) as u16);
        }
        if rng.chance(4) {
            props.response_topic = Some(rng.topic());
        }
        if rng.chance(4) {
            let n = rng.below(40) as usize;
            props.correlation_data = Some((0..n).map(|_| rng.next() as u8).collect());
        }
        for _ in 0..rng.below(4) {
            props.user_properties.push((rng.text(4), rng.text(6)));
        }
        for _ in 0..rng.below(4) {
            props.subscription_identifiers.push(rng.sub_id());
        }
        if rng.chance(4) {
            props.content_type = Some(rng.text(5));
        }
    }
    let utf8 = props.payload_format_indicator == Some(true);
    // With a topic alias, the topic name may be empty (5.0 §3.3.2.3.4).
    let topic = if props.topic_alias.is_some() && rng.chance(3) {
        String::new()
    } else {
        rng.topic()
    };
    PubSpec {
        // DUP only at QoS > 0 [MQTT-3.3.1-2].
        dup: qos > 0 && rng.chance(2),
        qos,
        retain: rng.chance(2),
        topic,
        pkid: if qos == 0 {
            0
        } else {
            1 + rng.below(65535) as u16
        },
        payload: rng.payload(utf8),
        props,
    }
}

/// Also checks that our decoder is indifferent to how rumqttc's bytes arrive: split at a
/// random point, the first part is "need more" and consumes nothing.
fn check_split(rng: &mut Rng, wire: &[u8], version: ProtocolVersion, expected: &Packet) {
    let opts = DecodeOptions::new(version);
    let cut = rng.below(wire.len() as u64) as usize;
    let mut buf = BytesMut::from(&wire[..cut]);
    assert!(matches!(decode(&mut buf, &opts), Ok(None)));
    assert_eq!(buf.len(), cut);
    buf.extend_from_slice(&wire[cut..]);
    // A second frame behind it must stay in the buffer.
    buf.extend_from_slice(&[0xC0, 0x00]);
    let got = decode(&mut buf, &opts).expect("decode").expect("packet");
    assert_eq!(&got, expected);
    assert_eq!(&buf[..], &[0xC0, 0x00]);
}

#[test]
fn randomized_publish_both_ways() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut v5_cases, mut v5_one_way) = (0, 0);
    for i in 0..3_000 {
        let v5 = i % 2 == 1;
        let s = random_publish(&mut rng, v5);
        if v5 {
            v5_cases += 1;
            v5_one_way += usize::from(!rumqttc_reads_all_publish_props(&s.props));
            s.check_v5();
            check_split(&mut rng, &r5_write(&s.r5()), V5, &s.ours());
        } else {
            s.check_v4();
            check_split(&mut rng, &r4_write(&s.r4()), V4, &s.ours());
        }
    }
    // The rumqttc subscription-identifier skip (ours -> rumqttc only) must stay a minority.
    assert!(
        v5_one_way * 5 < v5_cases,
        "{v5_one_way} of {v5_cases} v5 cases checked one way only"
    );
}

// ==========================================================================================
// PUBACK, PUBREC, PUBREL, PUBCOMP
// ==========================================================================================

fn ack(id: u16, code: u8, properties: Properties) -> Ack {
    Ack {
        packet_id: pid(id),
        reason: ReasonCode(code),
        properties,
    }
}

#[test]
fn v4_acks() {
    for id in [1u16, 2, 255, 256, 0x1234, 65535] {
        check_v4(
            Packet::PubAck(Ack::new(pid(id))),
            r4::Packet::PubAck(r4::PubAck::new(id)),
        );
        check_v4(
            Packet::PubRec(Ack::new(pid(id))),
            r4::Packet::PubRec(r4::PubRec::new(id)),
        );
        check_v4(
            Packet::PubRel(Ack::new(pid(id))),
            r4::Packet::PubRel(r4::PubRel::new(id)),
        );
        check_v4(
            Packet::PubComp(Ack::new(pid(id))),
            r4::Packet::PubComp(r4::PubComp::new(id)),
        );
    }
}

fn our_ack_props() -> Properties {
    props(|p| {
        p.reason_string = Some(bs("quota: 5/5"));
        p.user_properties = up(&[("trace", "abc"), ("trace", "def")]);
    })
}

#[test]
fn v5_puback_pubrec() {
    use r5::PubAckReason as A;
    use r5::PubRecReason as R;
    let codes = [
        (A::Success, R::Success, 0x00),
        (A::NoMatchingSubscribers, R::NoMatchingSubscribers, 0x10),
        (A::UnspecifiedError, R::UnspecifiedError, 0x80),
        (
            A::ImplementationSpecificError,
            R::ImplementationSpecificError,
            0x83,
        ),
        (A::NotAuthorized, R::NotAuthorized, 0x87),
        (A::TopicNameInvalid, R::TopicNameInvalid, 0x90),
        (A::PacketIdentifierInUse, R::PacketIdentifierInUse, 0x91),
        (A::QuotaExceeded, R::QuotaExceeded, 0x97),
        (A::PayloadFormatInvalid, R::PayloadFormatInvalid, 0x99),
    ];
    for (a, r, code) in codes {
        for id in [1u16, 65535] {
            // Without properties: rumqttc writes the reason code and a zero property
            // length (RL 4) unless Success (RL 2); we write RL 2 or 3. Both are legal
            // (§3.4.2.1, §3.4.2.2.1), each side must read the other's.
            check_v5(
                Packet::PubAck(ack(id, code, Properties::new())),
                r5::Packet::PubAck(r5::PubAck {
                    pkid: id,
                    reason: a,
                    properties: None,
                }),
            );
            check_v5(
                Packet::PubRec(ack(id, code, Properties::new())),
                r5::Packet::PubRec(r5::PubRec {
                    pkid: id,
                    reason: r,
                    properties: None,
                }),
            );
            // With properties.
            check_v5(
                Packet::PubAck(ack(id, code, our_ack_props())),
                r5::Packet::PubAck(r5::PubAck {
                    pkid: id,
                    reason: a,
                    properties: Some(r5::PubAckProperties {
                        reason_string: Some("quota: 5/5".into()),
                        user_properties: rup(&[("trace", "abc"), ("trace", "def")]),
                    }),
                }),
            );
            check_v5(
                Packet::PubRec(ack(id, code, our_ack_props())),
                r5::Packet::PubRec(r5::PubRec {
                    pkid: id,
                    reason: r,
                    properties: Some(r5::PubRecProperties {
                        reason_string: Some("quota: 5/5".into()),
                        user_properties: rup(&[("trace", "abc"), ("trace", "def")]),
                    }),
                }),
            );
        }
    }
}

#[test]
fn v5_pubrel_pubcomp() {
    use r5::PubCompReason as C;
    use r5::PubRelReason as R;
    for (r, c, code) in [
        (R::Success, C::Success, 0x00),
        (
            R::PacketIdentifierNotFound,
            C::PacketIdentifierNotFound,
            0x92,
        ),
    ] {
        for id in [1u16, 300, 65535] {
            check_v5(
                Packet::PubRel(ack(id, code, Properties::new())),
                r5::Packet::PubRel(r5::PubRel {
                    pkid: id,
                    reason: r,
                    properties: None,
                }),
            );
            check_v5(
                Packet::PubComp(ack(id, code, Properties::new())),
                r5::Packet::PubComp(r5::PubComp {
                    pkid: id,
                    reason: c,
                    properties: None,
                }),
            );
            check_v5(
                Packet::PubRel(ack(id, code, our_ack_props())),
                r5::Packet::PubRel(r5::PubRel {
                    pkid: id,
                    reason: r,
                    properties: Some(r5::PubRelProperties {
                        reason_string: Some("quota: 5/5".into()),
                        user_properties: rup(&[("trace", "abc"), ("trace", "def")]),
                    }),
                }),
            );
            check_v5(
                Packet::PubComp(ack(id, code, our_ack_props())),
                r5::Packet::PubComp(r5::PubComp {
                    pkid: id,
                    reason: c,
                    properties: Some(r5::PubCompProperties {
                        reason_string: Some("quota: 5/5".into()),
                        user_properties: rup(&[("trace", "abc"), ("trace", "def")]),
                    }),
                }),
            );
        }
    }
}

// ==========================================================================================
// SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK
// ==========================================================================================

const FILTERS: [(&str, u8); 7] = [
    ("a/b/c", 0),
    ("a/+/c", 1),
    ("#", 2),
    ("sport/tennis/+/#", 1),
    ("$SYS/#", 0),
    ("温度/+", 2),
    ("/", 1),
];

#[test]
fn v4_subscribe() {
    // One filter, then all of them.
    for n in [1, FILTERS.len()] {
        let subs = &FILTERS[..n];
        check_v4(
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                subscriptions: subs
                    .iter()
                    .map(|&(f, q)| Subscription {
                        filter: filter(f),
                        options: SubscriptionOptions::new(oq(q)),
                    })
                    .collect(),
                properties: Properties::new(),
            }),
            r4::Packet::Subscribe(r4::Subscribe {
                pkid: 10,
                filters: subs
                    .iter()
                    .map(|&(f, q)| r4::SubscribeFilter::new(f.into(), q4(q)))
                    .collect(),
            }),
        );
    }
}

#[test]
fn v5_subscribe() {
    use r5::RetainForwardRule as F;
    // Options: every combination of QoS, No Local, Retain As Published, Retain Handling.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for qos in 0..=2u8 {
        for no_local in [false, true] {
            for rap in [false, true] {
                for (rh, rf) in [
                    (RetainHandling::SendAtSubscribe, F::OnEverySubscribe),
                    (RetainHandling::SendIfNew, F::OnNewSubscribe),
                    (RetainHandling::DoNotSend, F::Never),
                ] {
                    let path = format!("opts/{qos}/{no_local}/{rap}/{rh:?}/+");
                    ours.push(Subscription {
                        filter: filter(&path),
                        options: SubscriptionOptions {
                            qos: oq(qos),
                            no_local,
                            retain_as_published: rap,
                            retain_handling: rh,
                        },
                    });
                    theirs.push(r5::Filter {
                        path,
                        qos: q5(qos),
                        nolocal: no_local,
                        preserve_retain: rap,
                        retain_forward_rule: rf,
                    });
                }
            }
        }
    }
    // A shared subscription (No Local must be 0 on it, [MQTT-3.8.3-4]).
    ours.push(Subscription {
        filter: filter("$share/group-1/a/#"),
        options: SubscriptionOptions::new(QoS::AtLeastOnce),
    });
    theirs.push(r5::Filter::new("$share/group-1/a/#", q5(1)));

    // No properties; subscription identifier of each varint size; user properties.
    type IdCase<'a> = (Option<u32>, &'a [(&'a str, &'a str)]);
    let id_cases: [IdCase<'_>; 6] = [
        (None, &[]),
        (Some(1), &[]),
        (Some(128), &[("x", "y")]),
        (Some(16_384), &[]),
        (Some(268_435_455), &[("a", "1"), ("a", "2")]),
        (None, &[("only", "user-props")]),
    ];
    for (id, user) in id_cases {
        let properties = if id.is_none() && user.is_empty() {
            Properties::new()
        } else {
            props(|p| {
                p.subscription_identifiers = id.into_iter().collect();
                p.user_properties = up(user);
            })
        };
        let r_props = if id.is_none() && user.is_empty() {
            None
        } else {
            Some(r5::SubscribeProperties {
                id: id.map(|v| v as usize),
                user_properties: rup(user),
            })
        };
        check_v5(
            Packet::Subscribe(Subscribe {
                packet_id: pid(65535),
                subscriptions: ours.clone(),
                properties,
            }),
            r5::Packet::Subscribe(r5::Subscribe {
                pkid: 65535,
                filters: theirs.clone(),
                properties: r_props,
            }),
        );
    }
    // A single filter.
    check_v5(
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            subscriptions: vec![Subscription {
                filter: filter("one"),
                options: SubscriptionOptions::new(QoS::ExactlyOnce),
            }],
            properties: Properties::new(),
        }),
        r5::Packet::Subscribe(r5::Subscribe {
            pkid: 1,
            filters: vec![r5::Filter::new("one", q5(2))],
            properties: None,
        }),
    );
}

#[test]
fn v4_suback() {
    use r4::SubscribeReasonCode as S;
    let cases: [&[(S, u8)]; 3] = [
        &[(S::Success(q4(0)), 0)],
        &[
            (S::Success(q4(0)), 0),
            (S::Success(q4(1)), 1),
            (S::Success(q4(2)), 2),
            (S::Failure, 0x80),
        ],
        &[(S::Failure, 0x80), (S::Failure, 0x80)],
    ];
    for codes in cases {
        check_v4(
            Packet::SubAck(SubAck {
                packet_id: pid(77),
                codes: codes.iter().map(|&(_, c)| ReasonCode(c)).collect(),
                properties: Properties::new(),
            }),
            r4::Packet::SubAck(r4::SubAck::new(77, codes.iter().map(|&(s, _)| s).collect())),
        );
    }
}

#[test]
fn v5_suback() {
    use r5::SubscribeReasonCode as S;
    // rumqttc's `Failure` is written as 0x80 and read back as `Unspecified` (the same
    // code, two names), so only `Unspecified` is used for 0x80.
    let all = [
        (S::Success(q5(0)), 0x00),
        (S::Success(q5(1)), 0x01),
        (S::Success(q5(2)), 0x02),
        (S::Unspecified, 0x80),
        (S::ImplementationSpecific, 0x83),
        (S::NotAuthorized, 0x87),
        (S::TopicFilterInvalid, 0x8F),
        (S::PkidInUse, 0x91),
        (S::QuotaExceeded, 0x97),
        (S::SharedSubscriptionsNotSupported, 0x9E),
        (S::SubscriptionIdNotSupported, 0xA1),
        (S::WildcardSubscriptionsNotSupported, 0xA2),
    ];
    for with_props in [false, true] {
        for codes in [&all[..1], &all[3..4], &all[..]] {
            check_v5(
                Packet::SubAck(SubAck {
                    packet_id: pid(300),
                    codes: codes.iter().map(|&(_, c)| ReasonCode(c)).collect(),
                    properties: if with_props {
                        our_ack_props()
                    } else {
                        Properties::new()
                    },
                }),
                r5::Packet::SubAck(r5::SubAck {
                    pkid: 300,
                    return_codes: codes.iter().map(|&(s, _)| s).collect(),
                    properties: with_props.then(|| r5::SubAckProperties {
                        reason_string: Some("quota: 5/5".into()),
                        user_properties: rup(&[("trace", "abc"), ("trace", "def")]),
                    }),
                }),
            );
        }
    }
}

#[test]
fn v4_unsubscribe_unsuback() {
    for n in [1, FILTERS.len()] {
        let fs = &FILTERS[..n];
        check_v4(
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(9),
                filters: fs.iter().map(|&(f, _)| filter(f)).collect(),
                properties: Properties::new(),
            }),
            r4::Packet::Unsubscribe(r4::Unsubscribe {
                pkid: 9,
                topics: fs.iter().map(|&(f, _)| f.to_string()).collect(),
            }),
        );
    }
    for id in [1u16, 65535] {
        check_v4(
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(id),
                codes: vec![],
                properties: Properties::new(),
            }),
            r4::Packet::UnsubAck(r4::UnsubAck::new(id)),
        );
    }
}

#[test]
fn v5_unsubscribe_unsuback() {
    for n in [1, FILTERS.len()] {
        let fs = &FILTERS[..n];
        for with_props in [false, true] {
            check_v5(
                Packet::Unsubscribe(Unsubscribe {
                    packet_id: pid(9),
                    filters: fs.iter().map(|&(f, _)| filter(f)).collect(),
                    properties: if with_props {
                        props(|p| p.user_properties = up(&[("u", "1"), ("u", "2")]))
                    } else {
                        Properties::new()
                    },
                }),
                r5::Packet::Unsubscribe(r5::Unsubscribe {
                    pkid: 9,
                    filters: fs.iter().map(|&(f, _)| f.to_string()).collect(),
                    properties: with_props.then(|| r5::UnsubscribeProperties {
                        user_properties: rup(&[("u", "1"), ("u", "2")]),
                    }),
                }),
            );
        }
    }

    use r5::UnsubAckReason as U;
    let all = [
        (U::Success, 0x00),
        (U::NoSubscriptionExisted, 0x11),
        (U::UnspecifiedError, 0x80),
        (U::ImplementationSpecificError, 0x83),
        (U::NotAuthorized, 0x87),
        (U::TopicFilterInvalid, 0x8F),
        (U::PacketIdentifierInUse, 0x91),
    ];
    for with_props in [false, true] {
        for codes in [&all[..1], &all[1..2], &all[..]] {
            check_v5(
                Packet::UnsubAck(UnsubAck {
                    packet_id: pid(4000),
                    codes: codes.iter().map(|&(_, c)| ReasonCode(c)).collect(),
                    properties: if with_props {
                        our_ack_props()
                    } else {
                        Properties::new()
                    },
                }),
                r5::Packet::UnsubAck(r5::UnsubAck {
                    pkid: 4000,
                    reasons: codes.iter().map(|&(u, _)| u).collect(),
                    properties: with_props.then(|| r5::UnsubAckProperties {
                        reason_string: Some("quota: 5/5".into()),
                        user_properties: rup(&[("trace", "abc"), ("trace", "def")]),
                    }),
                }),
            );
        }
    }
}

// ==========================================================================================
// PINGREQ, PINGRESP, DISCONNECT
// ==========================================================================================

#[test]
fn v4_ping_and_disconnect() {
    check_v4(Packet::PingReq, r4::Packet::PingReq);
    check_v4(Packet::PingResp, r4::Packet::PingResp);
    check_v4(
        Packet::Disconnect(Disconnect::default()),
        r4::Packet::Disconnect,
    );
}

#[test]
fn v5_ping() {
    check_v5(Packet::PingReq, r5::Packet::PingReq(r5::PingReq));
    check_v5(Packet::PingResp, r5::Packet::PingResp(r5::PingResp));
}

/// Reads a DISCONNECT with rumqttc's `Disconnect::read`, bypassing `Packet::read`.
fn r5_read_disconnect(wire: &[u8]) -> Result<r5::Disconnect, r5base::Error> {
    let fh = r5::check(wire.iter(), None)?;
    assert_eq!(fh.frame_length(), wire.len());
    r5::Disconnect::read(fh, Bytes::copy_from_slice(wire))
}

#[test]
fn v5_disconnect() {
    use r5::DisconnectReasonCode as D;

    // Normal disconnection without properties: both sides write [E0 00] (§3.14.2.1).
    // rumqttc -> ours through the normal path. ours -> rumqttc: rumqttc's `Packet::read`
    // refuses a DISCONNECT of Remaining Length 0 (see
    // known_rumqttc_deviation_v5_packet_read_refuses_empty_disconnect), so its
    // `Disconnect::read` is used instead.
    let ours = Packet::Disconnect(Disconnect::default());
    let theirs = r5::Disconnect::new(D::NormalDisconnection);
    let wire = v5_rumqttc_to_ours(&ours, &r5::Packet::Disconnect(theirs.clone()));
    let our_wire = ours_encode(&ours, V5);
    assert_eq!(our_wire, wire);
    assert_eq!(r5_read_disconnect(&our_wire).expect("rumqttc read"), theirs);

    let all = [
        D::NormalDisconnection,
        D::DisconnectWithWillMessage,
        D::UnspecifiedError,
        D::MalformedPacket,
        D::ProtocolError,
        D::ImplementationSpecificError,
        D::NotAuthorized,
        D::ServerBusy,
        D::ServerShuttingDown,
        D::KeepAliveTimeout,
        D::SessionTakenOver,
        D::TopicFilterInvalid,
        D::TopicNameInvalid,
        D::ReceiveMaximumExceeded,
        D::TopicAliasInvalid,
        D::PacketTooLarge,
        D::MessageRateTooHigh,
        D::QuotaExceeded,
        D::AdministrativeAction,
        D::PayloadFormatInvalid,
        D::RetainNotSupported,
        D::QoSNotSupported,
        D::UseAnotherServer,
        D::ServerMoved,
        D::SharedSubscriptionNotSupported,
        D::ConnectionRateExceeded,
        D::MaximumConnectTime,
        D::SubscriptionIdentifiersNotSupported,
        D::WildcardSubscriptionsNotSupported,
    ];
    for code in all {
        // With every DISCONNECT property: both ways.
        check_v5(
            Packet::Disconnect(Disconnect {
                reason: ReasonCode(code as u8),
                properties: props(|p| {
                    p.session_expiry_interval = Some(0);
                    p.reason_string = Some(bs("bye"));
                    p.user_properties = up(&[("k", "v"), ("k", "w")]);
                    p.server_reference = Some(bs("other:1883"));
                }),
            }),
            r5::Packet::Disconnect(r5::Disconnect {
                reason_code: code,
                properties: Some(r5::DisconnectProperties {
                    session_expiry_interval: Some(0),
                    reason_string: Some("bye".into()),
                    user_properties: rup(&[("k", "v"), ("k", "w")]),
                    server_reference: Some("other:1883".into()),
                }),
            }),
        );

        // A reason code without properties is not cross-checked in either direction:
        // - rumqttc cannot write it: `properties: None` gives a frame one byte longer than
        //   its Remaining Length, `Some(empty)` drops the reason code and writes [E0 00]
        //   (known_rumqttc_deviation_v5_disconnect_code_without_properties);
        // - rumqttc cannot read ours, the code alone with Remaining Length 1, legal per
        //   §3.14.2.2.1 (known_rumqttc_deviation_v5_disconnect_rl1_unreadable).
    }
}

// ==========================================================================================
// AUTH (5.0 only)
// ==========================================================================================
//
// rumqttc 0.25 support for AUTH is partial, so only part of it can be cross-checked:
// - `Packet::read` does not know packet type 15 (known_rumqttc_deviation_v5_auth_not_framed),
//   so its `Auth::read` is called directly on our frames;
// - `AuthReasonCode` and `AuthProperties` are not exported, so an rumqttc `Auth` can only be
//   obtained from `Auth::read`, and its fields are compared through `Debug`;
// - its AUTH property lengths are miscounted on write and on read for every property but
//   Authentication Data on read (known_rumqttc_deviation_v5_auth_property_lengths), so
//   rumqttc -> ours is checked without properties and ours -> rumqttc with Authentication
//   Data only;
// - it cannot read an AUTH of Remaining Length 0 (known_rumqttc_deviation_v5_auth_rl0).

fn r5_read_auth(wire: &[u8]) -> Result<r5::Auth, r5base::Error> {
    let fh = r5::check(wire.iter(), None)?;
    assert_eq!(fh.frame_length(), wire.len());
    r5::Auth::read(fh, Bytes::copy_from_slice(wire))
}

const AUTH_CODES: [(u8, &str); 3] = [
    (0x00, "Success"),
    (0x18, "Continue"),
    (0x19, "ReAuthentivate"), // sic, rumqttc's spelling
];

#[test]
fn v5_auth_rumqttc_to_ours() {
    for (code, name) in AUTH_CODES {
        // The only way to get an rumqttc Auth value: its own reader, on its own layout.
        let a = r5_read_auth(&[0xF0, 0x02, code, 0x00]).expect("rumqttc reads its layout");
        assert_eq!(format!("{:?}", a.code), name);
        assert!(a.properties.is_none());
        v5_rumqttc_to_ours(
            &Packet::Auth(Auth {
                reason: ReasonCode(code),
                properties: Properties::new(),
            }),
            &r5::Packet::Auth(a),
        );
    }
}

#[test]
fn v5_auth_ours_to_rumqttc() {
    for (code, name) in AUTH_CODES {
        for data in [&b""[..], b"\x00challenge\xff", &[7u8; 300]] {
            let ours = Packet::Auth(Auth {
                reason: ReasonCode(code),
                properties: props(|p| p.authentication_data = Some(Bytes::copy_from_slice(data))),
            });
            let wire = ours_encode(&ours, V5);
            assert_eq!(ours_decode(&wire, V5).expect("our own AUTH"), ours);
            let a = r5_read_auth(&wire).unwrap_or_else(|e| panic!("rumqttc: {e:?} {wire:02x?}"));
            assert_eq!(format!("{:?}", a.code), name);
            let p = a.properties.expect("properties");
            assert_eq!(p.data.as_deref(), Some(data));
            assert_eq!(p.method, None);
            assert_eq!(p.reason, None);
            assert!(p.user_properties.is_empty());
        }
    }
}

// ==========================================================================================
// Suspected bugs in OUR codec (kept failing on purpose; src/ is not changed here)
// ==========================================================================================

/// An AUTH with a non-zero reason code and no properties is encoded by us as the reason
/// code alone (Remaining Length 1, no Property Length).
///
/// MQTT 5.0 §3.15.2.1: "The Reason Code and Property Length can be omitted if the Reason
/// Code is 0x00 (Success) and there are no Properties. In this case the AUTH has a Remaining
/// Length of 0." §3.15.2.2.1 has no "if the Remaining Length is less than 2, a value of 0 is
/// used" rule (DISCONNECT has one, §3.14.2.2.1; the acks have theirs, §3.4.2.2.1 ff.), so an
/// AUTH with a reason code must carry a Property Length: `F0 02 18 00`, not `F0 01 18`
/// (§3.15.2.1 allows omitting only for 0x00 without properties). rumqttc's `Auth::read`
/// follows that layout; this was once a bug of ours.
#[test]
fn auth_with_a_reason_code_keeps_its_property_length() {
    for (code, name) in AUTH_CODES.into_iter().skip(1) {
        let ours = Packet::Auth(Auth {
            reason: ReasonCode(code),
            properties: Properties::new(),
        });
        let wire = ours_encode(&ours, V5);
        let rumqttc = r5_read_auth(&wire).map(|a| format!("{:?}", a.code));
        assert_eq!(
            &wire[..],
            &[0xF0, 0x02, code, 0x00],
            "AUTH {name} without properties must keep its Property Length (5.0 §3.15.2.1, \
             §3.15.2.2.1); rumqttc Auth::read on our bytes gives {rumqttc:?}"
        );
        assert_eq!(rumqttc.ok().as_deref(), Some(name));
    }
}

// ==========================================================================================
// Known rumqttc deviations from the specification (pinned, see the module comment)
// ==========================================================================================

/// rumqttc v4 `Login` with an empty user name and a password sets only the Password Flag.
/// 3.1.1 [MQTT-3.1.2-22]: "If the User Name Flag is set to 0, the Password Flag MUST be set
/// to 0." Our decoder rightly refuses it, so the case is not cross-checked.
#[test]
fn known_rumqttc_deviation_v4_password_without_username() {
    let theirs = r4::Packet::Connect(r4::Connect {
        protocol: r4base::Protocol::V4,
        keep_alive: 10,
        client_id: "c".into(),
        clean_session: true,
        last_will: None,
        login: Some(r4::Login::new("", "secret")),
    });
    let wire = r4_write(&theirs);
    assert_eq!(
        wire[9] & 0xC0,
        0x40,
        "rumqttc no longer sets password-only flags"
    );
    let mut buf = BytesMut::from(&wire[..]);
    assert!(matches!(
        decode(&mut buf, &DecodeOptions::new(V4)),
        Err(DecodeError::PasswordWithoutUsername)
    ));
}

/// rumqttc's `Login.password` is a `String` and its reader refuses a non-UTF-8 password,
/// but the password is Binary Data (3.1.1 §3.1.3.5, 5.0 §3.1.3.6). Cross-checks therefore
/// use UTF-8 passwords only.
#[test]
fn known_rumqttc_deviation_binary_password() {
    for version in [V4, V5] {
        let ours = connect(|c| {
            c.version = version;
            c.username = Some(bs("u"));
            c.password = Some(Bytes::from_static(&[0xFF, 0xFE, 0x00, 0x80]));
        });
        let wire = ours_encode(&ours, version);
        assert_eq!(ours_decode(&wire, version).expect("ours"), ours);
        let refused = if version == V4 {
            r4_read(&wire).is_err()
        } else {
            r5_read(&wire).is_err()
        };
        assert!(refused, "rumqttc now reads binary passwords on {version:?}");
    }
}

/// rumqttc v5 `PublishProperties::read` counts the identifier byte of a Subscription
/// Identifier twice, so with N identifiers it stops reading N bytes early and hands the
/// unread properties to the payload (5.0 §2.2.2.1: the Property Length is the number of
/// bytes of the properties). The same `1 +` is in its `SubscribeProperties::read`, where a
/// single identifier cannot trigger it. A server-to-client PUBLISH may carry several
/// Subscription Identifiers (5.0 §3.3.2.3.8), so ours -> rumqttc is skipped where the
/// model `rumqttc_reads_all_publish_props` says rumqttc cannot read it.
#[test]
fn known_rumqttc_deviation_v5_publish_subscription_identifier_miscount() {
    let ours = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("t"),
        packet_id: None,
        properties: props(|p| p.subscription_identifiers = vec![5, 6, 7]),
        payload: Bytes::from_static(b"pay"),
    });
    let wire = ours_encode(&ours, V5);
    assert_eq!(
        &wire[..],
        &[0x30, 0x0D, 0x00, 0x01, b't', 0x06, 0x0B, 5, 0x0B, 6, 0x0B, 7, b'p', b'a', b'y']
    );
    let Ok(r5::Packet::Publish(p)) = r5_read(&wire) else {
        panic!("rumqttc refused the PUBLISH")
    };
    let ids = p.properties.map(|p| p.subscription_identifiers);
    assert_eq!(
        ids,
        Some(vec![5, 6]),
        "rumqttc now reads every subscription identifier"
    );
    assert_eq!(&p.payload[..], &[0x0B, 7, b'p', b'a', b'y']);
}

/// rumqttc v5 `Packet::read` refuses a DISCONNECT of Remaining Length 0 with
/// `PayloadRequired`, although 5.0 §3.14.2.1 allows omitting the reason code and property
/// length ("the DISCONNECT has a Remaining Length of 0"), and rumqttc itself writes that form.
#[test]
fn known_rumqttc_deviation_v5_packet_read_refuses_empty_disconnect() {
    let wire = r5_write(&r5::Packet::Disconnect(r5::Disconnect::new(
        r5::DisconnectReasonCode::NormalDisconnection,
    )));
    assert_eq!(&wire[..], &[0xE0, 0x00]);
    assert!(matches!(
        r5_read(&wire),
        Err(r5base::Error::PayloadRequired)
    ));
}

/// rumqttc v5 cannot write a DISCONNECT with a non-normal reason code and no properties:
/// - `properties: None` announces Remaining Length 1 but writes two bytes (the code and a
///   zero property length), so the stray 0x00 is read as the next packet (5.0 §2.1.4:
///   the Remaining Length is the number of bytes remaining);
/// - `properties: Some(empty)` computes a length of 2, which its writer takes for the
///   bare `[E0 00]` form: the reason code is dropped and the peer sees a Normal
///   disconnection (5.0 §3.14.2.1: the code may be omitted only when it is 0x00).
#[test]
fn known_rumqttc_deviation_v5_disconnect_code_without_properties() {
    let some_empty = r5_write(&r5::Packet::Disconnect(r5::Disconnect {
        reason_code: r5::DisconnectReasonCode::ServerShuttingDown,
        properties: Some(r5::DisconnectProperties {
            session_expiry_interval: None,
            reason_string: None,
            user_properties: vec![],
            server_reference: None,
        }),
    }));
    assert_eq!(
        &some_empty[..],
        &[0xE0, 0x00],
        "rumqttc now keeps the reason code"
    );

    let wire = r5_write(&r5::Packet::Disconnect(r5::Disconnect::new(
        r5::DisconnectReasonCode::ServerShuttingDown,
    )));
    assert_eq!(
        &wire[..],
        &[0xE0, 0x01, 0x8B, 0x00],
        "rumqttc changed its layout"
    );
    let opts = DecodeOptions::new(V5);
    let mut buf = wire.clone();
    assert_eq!(
        decode(&mut buf, &opts)
            .expect("first frame")
            .expect("packet"),
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::SERVER_SHUTTING_DOWN,
            properties: Properties::new(),
        })
    );
    // The stray byte is a packet of type 0: refused.
    assert_eq!(&buf[..], &[0x00]);
    buf.extend_from_slice(&[0x00]);
    assert!(matches!(
        decode(&mut buf, &opts),
        Err(DecodeError::InvalidPacketType(0))
    ));
}

/// rumqttc v5 `Disconnect::read` cannot read a reason code without a property length
/// (Remaining Length 1), which 5.0 §3.14.2.2.1 allows ("If the Remaining Length is less than
/// 2, a value of 0 is used") and which we write for a reason code without properties.
#[test]
fn known_rumqttc_deviation_v5_disconnect_rl1_unreadable() {
    let ours = Packet::Disconnect(Disconnect {
        reason: ReasonCode::SERVER_SHUTTING_DOWN,
        properties: Properties::new(),
    });
    let wire = ours_encode(&ours, V5);
    assert_eq!(&wire[..], &[0xE0, 0x01, 0x8B]);
    assert!(r5_read(&wire).is_err(), "rumqttc now reads RL 1 DISCONNECT");
    assert!(r5_read_disconnect(&wire).is_err());
}

/// rumqttc v5 `Packet::read` (and `FixedHeader::packet_type`) does not know packet type 15,
/// AUTH (5.0 §2.1.2, Table 2-1).
#[test]
fn known_rumqttc_deviation_v5_auth_not_framed() {
    assert!(matches!(
        r5_read(&[0xF0, 0x02, 0x18, 0x00]),
        Err(r5base::Error::InvalidPacketType(15))
    ));
}

/// rumqttc v5 `Auth::read` cannot read an AUTH of Remaining Length 0, which 5.0 §3.15.2.1
/// allows for Success without properties (and which both we and rumqttc's other readers
/// treat as such).
#[test]
fn known_rumqttc_deviation_v5_auth_rl0() {
    let wire = ours_encode(&Packet::Auth(Auth::default()), V5);
    assert_eq!(&wire[..], &[0xF0, 0x00]);
    assert!(
        r5_read_auth(&wire).is_err(),
        "rumqttc now reads an empty AUTH"
    );
}

/// rumqttc v5 AUTH property lengths are wrong: on write, Authentication Method, Reason String
/// and User Property are counted without their two-byte length prefixes and Authentication
/// Data with a varint instead of a two-byte prefix; on read, Method and Reason String
/// advance its cursor without their prefixes. The frame it writes is malformed (Property
/// Length and Remaining Length too short, 5.0 §2.2.2.1, §2.1.4), and it cannot read a
/// correct AUTH carrying an Authentication Method (§3.15.2.2.2).
#[test]
fn known_rumqttc_deviation_v5_auth_property_lengths() {
    // Reading: a correct AUTH with an Authentication Method (mandatory in AUTH, §3.15.2.2.2)
    // is refused by rumqttc (its cursor runs past the property block).
    let ours = Packet::Auth(Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: props(|p| p.authentication_method = Some(bs("SCRAM-SHA-1"))),
    });
    let wire = ours_encode(&ours, V5);
    // Code, then Property Length 14 = 1 (identifier) + 2 (length) + 11.
    assert_eq!(&wire[..4], &[0xF0, 0x10, 0x18, 0x0E]);
    assert!(
        r5_read_auth(&wire).is_err(),
        "rumqttc now reads an AUTH with an Authentication Method; cross-check it"
    );

    // Writing: rumqttc reads a correct data-only AUTH (its reader counts Authentication Data
    // right), then writes it back with Property Length 5 and Remaining Length 7 where the
    // bytes need 6 and 8. We refuse the result.
    let correct = [0xF0, 0x08, 0x18, 0x06, 0x16, 0x00, 0x03, b'a', b'b', b'c'];
    let a = r5_read_auth(&correct).expect("rumqttc reads a data-only AUTH");
    assert_eq!(
        a.properties.as_ref().and_then(|p| p.data.as_deref()),
        Some(&b"abc"[..])
    );
    let theirs = r5_write(&r5::Packet::Auth(a));
    assert_eq!(
        &theirs[..],
        &[0xF0, 0x07, 0x18, 0x05, 0x16, 0x00, 0x03, b'a', b'b', b'c'],
        "rumqttc changed its AUTH writer; cross-check AUTH properties rumqttc -> ours"
    );
    let mut buf = theirs.clone();
    assert!(decode(&mut buf, &DecodeOptions::new(V5)).is_err());
    // Our own encoding of the same packet is the correct frame.
    let same = Packet::Auth(Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: props(|p| p.authentication_data = Some(Bytes::from_static(b"abc"))),
    });
    assert_eq!(&ours_encode(&same, V5)[..], &correct[..]);
}

// ==========================================================================================
// Sanity: the pair helpers really compare something
// ==========================================================================================

#[test]
#[should_panic(expected = "rumqttc v4 -> ours")]
fn pair_check_detects_a_mismatch() {
    check_v4(
        Packet::PubAck(Ack::new(pid(1))),
        r4::Packet::PubAck(r4::PubAck::new(2)),
    );
}
