//! Byte-exact codec test vectors, written by hand from the specifications:
//!
//! - MQTT 3.1 (IBM/Eurotech, protocol name "MQIsdp", level 3),
//! - MQTT 3.1.1 (OASIS Standard, 29 October 2014), chapters 2 and 3,
//! - MQTT 5.0 (OASIS Standard, 7 March 2019), chapters 2 and 3.
//!
//! Each positive vector is decoded (and compared with a packet value built by hand) and
//! the packet value is encoded (and compared with the same bytes). Where the encoder picks
//! one canonical form among several legal ones (5.0 acks, DISCONNECT and AUTH without a
//! reason code or properties), the canonical form is the round-trip vector and the longer
//! forms are decode-only vectors. None of the bytes below were produced by the encoder.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use surgemq::protocol::{
    decode, Ack, Auth, ConnAck, Connect, DecodeError, DecodeOptions, Disconnect, Packet, PacketId,
    PacketType, Properties, PropertySet, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, Subscription, SubscriptionOptions, TopicFilter, TopicName, UnsubAck,
    Unsubscribe, Will,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn bs(s: &'static str) -> ByteString {
    ByteString::from_static(s)
}

fn topic(s: &'static str) -> TopicName {
    TopicName::new(bs(s)).unwrap()
}

fn filter(s: &'static str) -> TopicFilter {
    TopicFilter::new(bs(s)).unwrap()
}

fn props(p: PropertySet) -> Properties {
    Properties::from(p)
}

fn no_props() -> Properties {
    Properties::new()
}

fn user(k: &'static str, v: &'static str) -> (ByteString, ByteString) {
    (bs(k), bs(v))
}

/// Decodes exactly one complete frame and checks the whole buffer was consumed.
fn decode_one(version: ProtocolVersion, bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, &DecodeOptions::new(version))
        .unwrap_or_else(|e| panic!("{version:?}: {bytes:02x?} should decode, got {e:?}"))
        .unwrap_or_else(|| panic!("{version:?}: {bytes:02x?} is a complete frame"));
    assert!(
        buf.is_empty(),
        "frame not fully consumed: {:02x?}",
        &buf[..]
    );
    packet
}

fn encode(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    assert_eq!(packet.encoded_len(version).unwrap(), buf.len());
    buf.to_vec()
}

/// Decode `bytes` to `expected`, and encode `expected` back to `bytes`.
fn round_trip(version: ProtocolVersion, bytes: &[u8], expected: Packet) {
    assert_eq!(
        decode_one(version, bytes),
        expected,
        "decode on {version:?}"
    );
    assert_eq!(encode(version, &expected), bytes, "encode on {version:?}");
}

fn v31(bytes: &[u8], expected: Packet) {
    round_trip(V3_1, bytes, expected);
}

fn v311(bytes: &[u8], expected: Packet) {
    round_trip(V3_1_1, bytes, expected);
}

fn v5(bytes: &[u8], expected: Packet) {
    round_trip(V5, bytes, expected);
}

/// Decode-only: a legal but non-canonical form.
fn decodes(version: ProtocolVersion, bytes: &[u8], expected: Packet) {
    assert_eq!(
        decode_one(version, bytes),
        expected,
        "decode on {version:?}"
    );
}

fn rejects(version: ProtocolVersion, bytes: &[u8], expected: DecodeError) {
    rejects_with(DecodeOptions::new(version), bytes, expected);
}

fn rejects_with(opts: DecodeOptions, bytes: &[u8], expected: DecodeError) {
    let mut buf = BytesMut::from(bytes);
    assert_eq!(
        decode(&mut buf, &opts),
        Err(expected),
        "{:?}: {bytes:02x?}",
        opts.version
    );
}

fn publish(
    dup: bool,
    qos: QoS,
    retain: bool,
    t: TopicName,
    id: Option<u16>,
    properties: Properties,
    payload: &'static [u8],
) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: t,
        packet_id: id.map(pid),
        properties,
        payload: Bytes::from_static(payload),
    })
}

fn ack_with(id: u16, reason: u8, properties: Properties) -> Ack {
    Ack {
        packet_id: pid(id),
        reason: ReasonCode(reason),
        properties,
    }
}

fn sub(f: &'static str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter(f),
        options: SubscriptionOptions::new(qos),
    }
}

fn codes(c: &[u8]) -> Vec<ReasonCode> {
    c.iter().map(|&c| ReasonCode(c)).collect()
}

// ---------------------------------------------------------------------------------------
// CONNECT (3.1.1 §3.1, 5.0 §3.1, 3.1 "CONNECT")
// ---------------------------------------------------------------------------------------

#[test]
fn connect_v311_minimal() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0D,                         // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04,                               // protocol level 4
        0x02,                               // flags: clean session
        0x00, 0x3C,                         // keep alive 60
        0x00, 0x01, b'a',                   // client id "a"
    ];
    v311(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V3_1_1,
            clean_start: true,
            keep_alive: 60,
            client_id: bs("a"),
            will: None,
            username: None,
            password: None,
            properties: no_props(),
        })),
    );
}

#[test]
fn connect_v311_empty_client_id() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0C,                         // CONNECT, remaining length 12
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04,                               // level 4
        0x02,                               // flags: clean session
        0x00, 0x00,                         // keep alive 0 (disabled)
        0x00, 0x00,                         // client id "" (allowed with clean session)
    ];
    v311(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V3_1_1,
            clean_start: true,
            keep_alive: 0,
            client_id: bs(""),
            will: None,
            username: None,
            password: None,
            properties: no_props(),
        })),
    );
}

#[test]
fn connect_v311_will_username_password() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x23,                         // CONNECT, remaining length 35
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04,                               // level 4
        0xEE,                               // flags: user 0x80 | password 0x40 | will retain 0x20
                                            //   | will QoS 1 (0x08) | will 0x04 | clean 0x02
        0x00, 0x0A,                         // keep alive 10
        0x00, 0x03, b'c', b'i', b'd',       // client id "cid"
        0x00, 0x03, b'w', b'/', b't',       // will topic "w/t"
        0x00, 0x03, b'b', b'y', b'e',       // will message "bye"
        0x00, 0x04, b'u', b's', b'e', b'r', // user name "user"
        0x00, 0x02, 0x01, 0x02,             // password (binary) 01 02
    ];
    v311(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V3_1_1,
            clean_start: true,
            keep_alive: 10,
            client_id: bs("cid"),
            will: Some(Will {
                topic: topic("w/t"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: no_props(),
            }),
            username: Some(bs("user")),
            password: Some(Bytes::from_static(&[0x01, 0x02])),
            properties: no_props(),
        })),
    );
}

#[test]
fn connect_v31_mqisdp_minimal() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x12,                                     // CONNECT, remaining length 18
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,                                           // protocol version 3
        0x02,                                           // flags: clean session
        0x00, 0x3C,                                     // keep alive 60
        0x00, 0x04, b'c', b'l', b'i', b'1',             // client id "cli1"
    ];
    v31(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V3_1,
            clean_start: true,
            keep_alive: 60,
            client_id: bs("cli1"),
            will: None,
            username: None,
            password: None,
            properties: no_props(),
        })),
    );
}

#[test]
fn connect_v31_mqisdp_will_username_password() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1A,                                     // CONNECT, remaining length 26
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // "MQIsdp"
        0x03,                                           // version 3
        0xD6,                                           // flags: user 0x80 | password 0x40
                                                        //   | will QoS 2 (0x10) | will 0x04 | clean 0x02
        0x00, 0x1E,                                     // keep alive 30
        0x00, 0x01, b'c',                               // client id "c"
        0x00, 0x01, b't',                               // will topic "t"
        0x00, 0x00,                                     // will message "" (empty)
        0x00, 0x01, b'u',                               // user name "u"
        0x00, 0x01, b'p',                               // password "p"
    ];
    v31(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V3_1,
            clean_start: true,
            keep_alive: 30,
            client_id: bs("c"),
            will: Some(Will {
                topic: topic("t"),
                payload: Bytes::new(),
                qos: QoS::ExactlyOnce,
                retain: false,
                properties: no_props(),
            }),
            username: Some(bs("u")),
            password: Some(Bytes::from_static(b"p")),
            properties: no_props(),
        })),
    );
}

#[test]
fn connect_v5_minimal() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0E,                         // CONNECT, remaining length 14
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x05,                               // protocol version 5
        0x02,                               // flags: clean start
        0x00, 0x3C,                         // keep alive 60
        0x00,                               // property length 0
        0x00, 0x01, b'a',                   // client id "a"
    ];
    let expected = Packet::Connect(Box::new(Connect {
        version: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: bs("a"),
        will: None,
        username: None,
        password: None,
        properties: no_props(),
    }));
    v5(&bytes, expected.clone());
    // CONNECT carries its own version: a server decodes it before it knows the version.
    decodes(V3_1_1, &bytes, expected.clone());
    decodes(V3_1, &bytes, expected);
}

#[test]
fn connect_v5_properties_will_properties_user_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x71,                         // CONNECT, remaining length 113
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x05,                               // version 5
        0xCE,                               // flags: user 0x80 | password 0x40 | will QoS 1 (0x08)
                                            //   | will 0x04 | clean start 0x02
        0x00, 0x78,                         // keep alive 120
        0x1B,                               // property length 27
        0x11, 0x00, 0x00, 0x0E, 0x10,       //   session expiry interval 3600
        0x17, 0x00,                         //   request problem information 0
        0x19, 0x01,                         //   request response information 1
        0x21, 0x00, 0x14,                   //   receive maximum 20
        0x22, 0x00, 0x0A,                   //   topic alias maximum 10
        0x26, 0x00, 0x01, b'k',             //   user property name "k"
              0x00, 0x01, b'v',             //                 value "v"
        0x27, 0x00, 0x00, 0x10, 0x00,       //   maximum packet size 4096
        0x00, 0x02, b'c', b'5',             // client id "c5"
        0x2E,                               // will property length 46
        0x01, 0x01,                         //   payload format indicator 1 (UTF-8)
        0x02, 0x00, 0x00, 0x00, 0x3C,       //   message expiry interval 60
        0x03, 0x00, 0x0A, b't', b'e', b'x', b't', b'/',
              b'p', b'l', b'a', b'i', b'n', //   content type "text/plain"
        0x08, 0x00, 0x03, b'r', b'/', b't', //   response topic "r/t"
        0x09, 0x00, 0x03, 0xC0, 0xFF, 0xEE, //   correlation data C0 FF EE
        0x18, 0x00, 0x00, 0x00, 0x05,       //   will delay interval 5
        0x26, 0x00, 0x02, b'w', b'k',       //   user property name "wk"
              0x00, 0x02, b'w', b'v',       //                 value "wv"
        0x00, 0x06, b'w', b'i', b'l', b'l', b'/', b't', // will topic "will/t"
        0x00, 0x04, b'g', b'o', b'n', b'e', // will payload "gone"
        0x00, 0x04, b'u', b's', b'e', b'r', // user name "user"
        0x00, 0x02, b'p', b'w',             // password "pw"
    ];
    v5(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V5,
            clean_start: true,
            keep_alive: 120,
            client_id: bs("c5"),
            will: Some(Will {
                topic: topic("will/t"),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: props(PropertySet {
                    payload_format_indicator: Some(true),
                    message_expiry_interval: Some(60),
                    content_type: Some(bs("text/plain")),
                    response_topic: Some(bs("r/t")),
                    correlation_data: Some(Bytes::from_static(&[0xC0, 0xFF, 0xEE])),
                    will_delay_interval: Some(5),
                    user_properties: vec![user("wk", "wv")],
                    ..Default::default()
                }),
            }),
            username: Some(bs("user")),
            password: Some(Bytes::from_static(b"pw")),
            properties: props(PropertySet {
                session_expiry_interval: Some(3600),
                request_problem_information: Some(false),
                request_response_information: Some(true),
                receive_maximum: Some(20),
                topic_alias_maximum: Some(10),
                user_properties: vec![user("k", "v")],
                maximum_packet_size: Some(4096),
                ..Default::default()
            }),
        })),
    );
}

#[test]
fn connect_v5_password_without_username_is_allowed() {
    // 5.0 §3.1.2.9 dropped 3.1.1's [MQTT-3.1.2-22].
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x11,                         // CONNECT, remaining length 17
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x05,                               // version 5
        0x42,                               // flags: password 0x40 | clean start 0x02
        0x00, 0x00,                         // keep alive 0
        0x00,                               // property length 0
        0x00, 0x01, b'a',                   // client id "a"
        0x00, 0x01, b'p',                   // password "p"
    ];
    v5(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V5,
            clean_start: true,
            keep_alive: 0,
            client_id: bs("a"),
            will: None,
            username: None,
            password: Some(Bytes::from_static(b"p")),
            properties: no_props(),
        })),
    );
}

#[test]
fn connect_v5_authentication_method_and_data() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1C,                         // CONNECT, remaining length 28
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x05,                               // version 5
        0x00,                               // flags: none (clean start 0)
        0xFF, 0xFF,                         // keep alive 65535
        0x0E,                               // property length 14
        0x15, 0x00, 0x05, b'P', b'L', b'A', b'I', b'N', // authentication method "PLAIN"
        0x16, 0x00, 0x03, 0x00, b'x', 0x00, //   authentication data 00 'x' 00 (binary)
        0x00, 0x01, b'z',                   // client id "z"
    ];
    v5(
        &bytes,
        Packet::Connect(Box::new(Connect {
            version: V5,
            clean_start: false,
            keep_alive: 65535,
            client_id: bs("z"),
            will: None,
            username: None,
            password: None,
            properties: props(PropertySet {
                authentication_method: Some(bs("PLAIN")),
                authentication_data: Some(Bytes::from_static(&[0x00, b'x', 0x00])),
                ..Default::default()
            }),
        })),
    );
}

// ---------------------------------------------------------------------------------------
// CONNACK (3.1.1 §3.2, 5.0 §3.2)
// ---------------------------------------------------------------------------------------

fn connack(session_present: bool, reason: ReasonCode, properties: Properties) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        reason,
        properties,
    })
}

#[test]
fn connack_v311_accepted() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x02, // CONNACK, remaining length 2
        0x00,       // acknowledge flags: session present 0
        0x00,       // return code 0: connection accepted
    ];
    v311(&bytes, connack(false, ReasonCode::SUCCESS, no_props()));
}

#[test]
fn connack_v311_session_present() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x02, // CONNACK, remaining length 2
        0x01,       // acknowledge flags: session present 1
        0x00,       // return code 0
    ];
    v311(&bytes, connack(true, ReasonCode::SUCCESS, no_props()));
}

#[test]
fn connack_v311_refusal_codes_map_to_v5_reason_codes() {
    // 3.1.1 Table 3.1 return codes and the 5.0 reason codes they stand for.
    let table: [(u8, ReasonCode); 5] = [
        (0x01, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION), // 0x84
        (0x02, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),  // 0x85 (identifier rejected)
        (0x03, ReasonCode::SERVER_UNAVAILABLE),           // 0x88
        (0x04, ReasonCode::BAD_USER_NAME_OR_PASSWORD),    // 0x86
        (0x05, ReasonCode::NOT_AUTHORIZED),               // 0x87
    ];
    for (code, reason) in table {
        assert_eq!(ReasonCode::from_connack_v3(code), Some(reason));
        #[rustfmt::skip]
        let bytes = [
            0x20, 0x02, // CONNACK, remaining length 2
            0x00,       // session present 0 (required with a refusal, [MQTT-3.2.2-4])
            code,       // return code
        ];
        v311(&bytes, connack(false, reason, no_props()));
        v31(&bytes, connack(false, reason, no_props()));
    }
    assert_eq!(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION.0, 0x84);
    assert_eq!(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID.0, 0x85);
    assert_eq!(ReasonCode::SERVER_UNAVAILABLE.0, 0x88);
    assert_eq!(ReasonCode::BAD_USER_NAME_OR_PASSWORD.0, 0x86);
    assert_eq!(ReasonCode::NOT_AUTHORIZED.0, 0x87);
}

#[test]
fn connack_v31_accepted() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x02, // CONNACK, remaining length 2
        0x00,       // reserved (topic name compression response, unused)
        0x00,       // return code 0
    ];
    v31(&bytes, connack(false, ReasonCode::SUCCESS, no_props()));
}

#[test]
fn connack_v5_minimal() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x03, // CONNACK, remaining length 3
        0x00,       // connect acknowledge flags: session present 0
        0x00,       // reason code 0x00 Success
        0x00,       // property length 0
    ];
    v5(&bytes, connack(false, ReasonCode::SUCCESS, no_props()));
}

#[test]
fn connack_v5_with_server_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x24,                         // CONNACK, remaining length 36
        0x01,                               // session present 1
        0x00,                               // reason code Success
        0x21,                               // property length 33
        0x12, 0x00, 0x06, b'a', b'u', b't', b'o', b'-', b'1', // assigned client id "auto-1"
        0x13, 0x00, 0x1E,                   //   server keep alive 30
        0x21, 0x00, 0x0A,                   //   receive maximum 10
        0x22, 0x00, 0x05,                   //   topic alias maximum 5
        0x24, 0x01,                         //   maximum QoS 1
        0x25, 0x00,                         //   retain available 0
        0x27, 0x00, 0x01, 0x00, 0x00,       //   maximum packet size 65536
        0x28, 0x01,                         //   wildcard subscription available 1
        0x29, 0x00,                         //   subscription identifiers available 0
        0x2A, 0x01,                         //   shared subscription available 1
    ];
    v5(
        &bytes,
        connack(
            true,
            ReasonCode::SUCCESS,
            props(PropertySet {
                assigned_client_identifier: Some(bs("auto-1")),
                server_keep_alive: Some(30),
                receive_maximum: Some(10),
                topic_alias_maximum: Some(5),
                maximum_qos: Some(QoS::AtLeastOnce),
                retain_available: Some(false),
                maximum_packet_size: Some(65536),
                wildcard_subscription_available: Some(true),
                subscription_identifier_available: Some(false),
                shared_subscription_available: Some(true),
                ..Default::default()
            }),
        ),
    );
}

#[test]
fn connack_v5_refused_with_reason_string() {
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x0A,                               // CONNACK, remaining length 10
        0x00,                                     // session present 0
        0x87,                                     // reason code 0x87 Not authorized
        0x07,                                     // property length 7
        0x1F, 0x00, 0x04, b'n', b'o', b'p', b'e', //   reason string "nope"
    ];
    v5(
        &bytes,
        connack(
            false,
            ReasonCode::NOT_AUTHORIZED,
            props(PropertySet {
                reason_string: Some(bs("nope")),
                ..Default::default()
            }),
        ),
    );
}

// ---------------------------------------------------------------------------------------
// PUBLISH (3.1.1 §3.3, 5.0 §3.3)
// ---------------------------------------------------------------------------------------

#[test]
fn publish_qos0_all_versions() {
    #[rustfmt::skip]
    let v3 = [
        0x30, 0x0A,                         // PUBLISH, DUP 0, QoS 0, RETAIN 0, remaining length 10
        0x00, 0x03, b'a', b'/', b'b',       // topic name "a/b" (no packet id at QoS 0)
        b'h', b'e', b'l', b'l', b'o',       // payload "hello"
    ];
    let p = publish(
        false,
        QoS::AtMostOnce,
        false,
        topic("a/b"),
        None,
        no_props(),
        b"hello",
    );
    v31(&v3, p.clone());
    v311(&v3, p.clone());
    #[rustfmt::skip]
    let v5b = [
        0x30, 0x0B,                         // PUBLISH QoS 0, remaining length 11
        0x00, 0x03, b'a', b'/', b'b',       // topic name "a/b"
        0x00,                               // property length 0
        b'h', b'e', b'l', b'l', b'o',       // payload "hello"
    ];
    v5(&v5b, p);
}

#[test]
fn publish_qos0_retain_empty_payload() {
    #[rustfmt::skip]
    let bytes = [
        0x31, 0x03,                         // PUBLISH QoS 0, RETAIN 1, remaining length 3
        0x00, 0x01, b't',                   // topic name "t", payload empty
    ];
    let p = publish(
        false,
        QoS::AtMostOnce,
        true,
        topic("t"),
        None,
        no_props(),
        b"",
    );
    v311(&bytes, p.clone());
    v31(&bytes, p);
}

#[test]
fn publish_qos1_dup() {
    #[rustfmt::skip]
    let bytes = [
        0x3A, 0x09,                         // PUBLISH DUP 1 (0x08), QoS 1 (0x02), remaining length 9
        0x00, 0x03, b'a', b'/', b'b',       // topic name "a/b"
        0x00, 0x0A,                         // packet identifier 10
        b'h', b'i',                         // payload "hi"
    ];
    let p = publish(
        true,
        QoS::AtLeastOnce,
        false,
        topic("a/b"),
        Some(10),
        no_props(),
        b"hi",
    );
    v31(&bytes, p.clone());
    v311(&bytes, p);
}

#[test]
fn publish_qos2_retain_and_dup_retain() {
    #[rustfmt::skip]
    let bytes = [
        0x35, 0x08,                         // PUBLISH QoS 2 (0x04), RETAIN 1, remaining length 8
        0x00, 0x03, b'x', b'/', b'y',       // topic name "x/y"
        0x12, 0x34,                         // packet identifier 0x1234
        0xFF,                               // payload FF (binary)
    ];
    let p = publish(
        false,
        QoS::ExactlyOnce,
        true,
        topic("x/y"),
        Some(0x1234),
        no_props(),
        &[0xFF],
    );
    v311(&bytes, p.clone());
    v31(&bytes, p);
    #[rustfmt::skip]
    let dup = [
        0x3D, 0x07,                         // PUBLISH DUP 1, QoS 2, RETAIN 1, remaining length 7
        0x00, 0x03, b'x', b'/', b'y',       // topic name "x/y"
        0xFF, 0xFF,                         // packet identifier 65535, empty payload
    ];
    v311(
        &dup,
        publish(
            true,
            QoS::ExactlyOnce,
            true,
            topic("x/y"),
            Some(65535),
            no_props(),
            b"",
        ),
    );
}

#[test]
fn publish_two_byte_remaining_length() {
    // 135 = 0x87 -> Variable Byte Integer 0x87 0x01 (3.1.1 §2.2.3, 5.0 §1.5.5).
    #[rustfmt::skip]
    let header = [
        0x30, 0x87, 0x01,                   // PUBLISH QoS 0, remaining length 135
        0x00, 0x03, b'a', b'/', b'b',       // topic name "a/b"
    ];
    let payload: &'static [u8] = &[0x5A; 130]; // 130 bytes of 'Z'
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(payload);
    v311(
        &bytes,
        publish(
            false,
            QoS::AtMostOnce,
            false,
            topic("a/b"),
            None,
            no_props(),
            payload,
        ),
    );
}

#[test]
fn publish_v31_dup_at_qos0_tolerated() {
    // 3.1 did not forbid DUP on QoS 0; the decoder tolerates it there.
    #[rustfmt::skip]
    let bytes = [
        0x38, 0x04,                         // PUBLISH DUP 1, QoS 0, remaining length 4
        0x00, 0x01, b't',                   // topic "t"
        b'!',                               // payload "!"
    ];
    decodes(
        V3_1,
        &bytes,
        publish(
            true,
            QoS::AtMostOnce,
            false,
            topic("t"),
            None,
            no_props(),
            b"!",
        ),
    );
}

#[test]
fn publish_v5_qos1_topic_alias() {
    #[rustfmt::skip]
    let bytes = [
        0x32, 0x0D,                         // PUBLISH QoS 1, remaining length 13
        0x00, 0x03, b'a', b'/', b'b',       // topic name "a/b"
        0x00, 0x01,                         // packet identifier 1
        0x03,                               // property length 3
        0x23, 0x00, 0x05,                   //   topic alias 5
        b'h', b'i',                         // payload "hi"
    ];
    v5(
        &bytes,
        publish(
            false,
            QoS::AtLeastOnce,
            false,
            topic("a/b"),
            Some(1),
            props(PropertySet {
                topic_alias: Some(5),
                ..Default::default()
            }),
            b"hi",
        ),
    );
}

#[test]
fn publish_v5_empty_topic_with_alias() {
    // §3.3.2.3.4: a zero-length topic name with a topic alias uses the alias mapping.
    #[rustfmt::skip]
    let bytes = [
        0x30, 0x08,                         // PUBLISH QoS 0, remaining length 8
        0x00, 0x00,                         // topic name "" (zero length)
        0x03,                               // property length 3
        0x23, 0x00, 0x05,                   //   topic alias 5
        b'h', b'i',                         // payload "hi"
    ];
    v5(
        &bytes,
        publish(
            false,
            QoS::AtMostOnce,
            false,
            TopicName::empty(),
            None,
            props(PropertySet {
                topic_alias: Some(5),
                ..Default::default()
            }),
            b"hi",
        ),
    );
}

#[test]
fn publish_v5_subscription_identifiers_user_properties_and_more() {
    #[rustfmt::skip]
    let bytes = [
        0x3D, 0x3C,                         // PUBLISH DUP 1, QoS 2, RETAIN 1, remaining length 60
        0x00, 0x03, b't', b'/', b'1',       // topic name "t/1"
        0x01, 0x02,                         // packet identifier 0x0102
        0x32,                               // property length 50
        0x01, 0x00,                         //   payload format indicator 0 (bytes)
        0x02, 0x00, 0x00, 0x01, 0x2C,       //   message expiry interval 300
        0x03, 0x00, 0x04, b't', b'e', b'x', b't', //   content type "text"
        0x08, 0x00, 0x04, b'r', b'e', b's', b'p', //   response topic "resp"
        0x09, 0x00, 0x02, 0x01, 0x02,       //   correlation data 01 02
        0x0B, 0x01,                         //   subscription identifier 1
        0x0B, 0x80, 0x01,                   //   subscription identifier 128 (2-byte VBI)
        0x0B, 0xFF, 0xFF, 0xFF, 0x7F,       //   subscription identifier 268435455 (max)
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b', // user property "a" = "b"
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'c', // user property "a" = "c" (repeat allowed)
        0xDE, 0xAD,                         // payload DE AD
    ];
    v5(
        &bytes,
        publish(
            true,
            QoS::ExactlyOnce,
            true,
            topic("t/1"),
            Some(0x0102),
            props(PropertySet {
                payload_format_indicator: Some(false),
                message_expiry_interval: Some(300),
                content_type: Some(bs("text")),
                response_topic: Some(bs("resp")),
                correlation_data: Some(Bytes::from_static(&[0x01, 0x02])),
                subscription_identifiers: vec![1, 128, 268_435_455],
                user_properties: vec![user("a", "b"), user("a", "c")],
                ..Default::default()
            }),
            &[0xDE, 0xAD],
        ),
    );
}

// ---------------------------------------------------------------------------------------
// PUBACK / PUBREC / PUBREL / PUBCOMP (3.1.1 §3.4-3.7, 5.0 §3.4-3.7)
// ---------------------------------------------------------------------------------------

#[test]
fn acks_v3() {
    #[rustfmt::skip]
    let puback = [0x40, 0x02, 0x00, 0x01]; // PUBACK, remaining length 2, packet id 1
    #[rustfmt::skip]
    let pubrec = [0x50, 0x02, 0x00, 0x02]; // PUBREC, remaining length 2, packet id 2
    #[rustfmt::skip]
    let pubrel = [0x62, 0x02, 0x00, 0x03]; // PUBREL, flags 0010, remaining length 2, id 3
    #[rustfmt::skip]
    let pubcomp = [0x70, 0x02, 0xAB, 0xCD]; // PUBCOMP, remaining length 2, packet id 0xABCD
    for v in [V3_1, V3_1_1] {
        round_trip(v, &puback, Packet::PubAck(Ack::new(pid(1))));
        round_trip(v, &pubrec, Packet::PubRec(Ack::new(pid(2))));
        round_trip(v, &pubrel, Packet::PubRel(Ack::new(pid(3))));
        round_trip(v, &pubcomp, Packet::PubComp(Ack::new(pid(0xABCD))));
    }
}

#[test]
fn acks_v5_success_canonical_form() {
    // §3.4.2.1: reason code and property length omitted when Success and no properties.
    v5(&[0x40, 0x02, 0x00, 0x01], Packet::PubAck(Ack::new(pid(1))));
    v5(&[0x50, 0x02, 0x00, 0x02], Packet::PubRec(Ack::new(pid(2))));
    v5(&[0x62, 0x02, 0x00, 0x03], Packet::PubRel(Ack::new(pid(3))));
    v5(&[0x70, 0x02, 0x00, 0x04], Packet::PubComp(Ack::new(pid(4))));
}

#[test]
fn acks_v5_longer_legal_forms_decode() {
    for header in [0x40u8, 0x50, 0x62, 0x70] {
        #[rustfmt::skip]
        let rl3 = [
            header, 0x03, // ack, remaining length 3
            0x00, 0x07,   // packet id 7
            0x00,         // reason code Success, property length omitted
        ];
        #[rustfmt::skip]
        let rl4 = [
            header, 0x04, // ack, remaining length 4
            0x00, 0x07,   // packet id 7
            0x00,         // reason code Success
            0x00,         // property length 0
        ];
        let a = Ack::new(pid(7));
        let expected = match header {
            0x40 => Packet::PubAck(a),
            0x50 => Packet::PubRec(a),
            0x62 => Packet::PubRel(a),
            _ => Packet::PubComp(a),
        };
        decodes(V5, &rl3, expected.clone());
        decodes(V5, &rl4, expected.clone());
        // ... and the encoder writes the canonical remaining length 2 form.
        assert_eq!(encode(V5, &expected), [header, 0x02, 0x00, 0x07]);
    }
}

#[test]
fn acks_v5_reason_codes_and_properties() {
    #[rustfmt::skip]
    let puback = [
        0x40, 0x03, // PUBACK, remaining length 3
        0x00, 0x01, // packet id 1
        0x10,       // reason code 0x10 No matching subscribers (no property length)
    ];
    v5(&puback, Packet::PubAck(ack_with(1, 0x10, no_props())));
    #[rustfmt::skip]
    let puback_err = [
        0x40, 0x0A,                         // PUBACK, remaining length 10
        0x00, 0x01,                         // packet id 1
        0x80,                               // reason code 0x80 Unspecified error
        0x06,                               // property length 6
        0x1F, 0x00, 0x03, b'e', b'r', b'r', //   reason string "err"
    ];
    v5(
        &puback_err,
        Packet::PubAck(ack_with(
            1,
            0x80,
            props(PropertySet {
                reason_string: Some(bs("err")),
                ..Default::default()
            }),
        )),
    );
    #[rustfmt::skip]
    let puback_ok_props = [
        0x40, 0x0B,                         // PUBACK, remaining length 11
        0x00, 0x01,                         // packet id 1
        0x00,                               // reason code Success (needed before properties)
        0x07,                               // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property "k" = "v"
    ];
    v5(
        &puback_ok_props,
        Packet::PubAck(ack_with(
            1,
            0x00,
            props(PropertySet {
                user_properties: vec![user("k", "v")],
                ..Default::default()
            }),
        )),
    );
    #[rustfmt::skip]
    let pubrec = [
        0x50, 0x03, // PUBREC, remaining length 3
        0x00, 0x02, // packet id 2
        0x91,       // reason code 0x91 Packet Identifier in use
    ];
    v5(&pubrec, Packet::PubRec(ack_with(2, 0x91, no_props())));
    #[rustfmt::skip]
    let pubrel = [
        0x62, 0x03, // PUBREL, remaining length 3
        0x00, 0x03, // packet id 3
        0x92,       // reason code 0x92 Packet Identifier not found
    ];
    v5(&pubrel, Packet::PubRel(ack_with(3, 0x92, no_props())));
    #[rustfmt::skip]
    let pubcomp = [
        0x70, 0x0B,                         // PUBCOMP, remaining length 11
        0x00, 0x04,                         // packet id 4
        0x92,                               // reason code 0x92 Packet Identifier not found
        0x07,                               // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property "k" = "v"
    ];
    v5(
        &pubcomp,
        Packet::PubComp(ack_with(
            4,
            0x92,
            props(PropertySet {
                user_properties: vec![user("k", "v")],
                ..Default::default()
            }),
        )),
    );
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE (3.1.1 §3.8, 5.0 §3.8)
// ---------------------------------------------------------------------------------------

#[test]
fn subscribe_v3_multiple_filters() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x12,                         // SUBSCRIBE, flags 0010, remaining length 18
        0x00, 0x0A,                         // packet id 10
        0x00, 0x03, b'a', b'/', b'b', 0x00, // filter "a/b", requested QoS 0
        0x00, 0x03, b'c', b'/', b'+', 0x01, // filter "c/+", requested QoS 1
        0x00, 0x01, b'#', 0x02,             // filter "#",   requested QoS 2
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(10),
        subscriptions: vec![
            sub("a/b", QoS::AtMostOnce),
            sub("c/+", QoS::AtLeastOnce),
            sub("#", QoS::ExactlyOnce),
        ],
        properties: no_props(),
    });
    v311(&bytes, expected.clone());
    v31(&bytes, expected);
}

#[test]
fn subscribe_v31_tolerates_other_header_flags() {
    // On 3.1 the PUBREL / SUBSCRIBE / UNSUBSCRIBE flag bits are not enforced (they are
    // on 3.1.1, see the rejection vectors).
    #[rustfmt::skip]
    let bytes = [
        0x80, 0x06,                         // SUBSCRIBE, flags 0000, remaining length 6
        0x00, 0x01,                         // packet id 1
        0x00, 0x01, b'a', 0x01,             // filter "a", QoS 1
    ];
    decodes(
        V3_1,
        &bytes,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            subscriptions: vec![sub("a", QoS::AtLeastOnce)],
            properties: no_props(),
        }),
    );
    // PUBREL with flags 0000.
    decodes(
        V3_1,
        &[0x60, 0x02, 0x00, 0x01],
        Packet::PubRel(Ack::new(pid(1))),
    );
    // UNSUBSCRIBE with flags 0000.
    #[rustfmt::skip]
    let unsub = [
        0xA0, 0x05,                         // UNSUBSCRIBE, flags 0000, remaining length 5
        0x00, 0x01,                         // packet id 1
        0x00, 0x01, b'a',                   // filter "a"
    ];
    decodes(
        V3_1,
        &unsub,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(1),
            filters: vec![filter("a")],
            properties: no_props(),
        }),
    );
}

#[test]
fn subscribe_v5_options_and_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x29,                         // SUBSCRIBE, remaining length 41
        0x00, 0x0B,                         // packet id 11
        0x09,                               // property length 9
        0x0B, 0x05,                         //   subscription identifier 5
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property "k" = "v"
        0x00, 0x03, b'a', b'/', b'b',       // filter "a/b"
        0x0D,                               //   options: QoS 1 | No Local 0x04 | RAP 0x08 | RH 0
        0x00, 0x03, b'c', b'/', b'#',       // filter "c/#"
        0x12,                               //   options: QoS 2 | RH 1 (0x10)
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'd', // "$share/g/d"
        0x28,                               //   options: QoS 0 | RAP 0x08 | RH 2 (0x20)
        0x00, 0x01, b'e',                   // filter "e"
        0x00,                               //   options: all zero
    ];
    v5(
        &bytes,
        Packet::Subscribe(Subscribe {
            packet_id: pid(11),
            subscriptions: vec![
                Subscription {
                    filter: filter("a/b"),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    },
                },
                Subscription {
                    filter: filter("c/#"),
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: false,
                        retain_as_published: false,
                        retain_handling: RetainHandling::SendIfNew,
                    },
                },
                Subscription {
                    filter: filter("$share/g/d"),
                    options: SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        no_local: false,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                },
                sub("e", QoS::AtMostOnce),
            ],
            properties: props(PropertySet {
                subscription_identifiers: vec![5],
                user_properties: vec![user("k", "v")],
                ..Default::default()
            }),
        }),
    );
}

#[test]
fn subscribe_v5_no_properties() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x07,                         // SUBSCRIBE, remaining length 7
        0x00, 0x01,                         // packet id 1
        0x00,                               // property length 0
        0x00, 0x01, b'+',                   // filter "+"
        0x01,                               //   options: QoS 1
    ];
    v5(
        &bytes,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            subscriptions: vec![sub("+", QoS::AtLeastOnce)],
            properties: no_props(),
        }),
    );
}

// ---------------------------------------------------------------------------------------
// SUBACK (3.1.1 §3.9, 5.0 §3.9)
// ---------------------------------------------------------------------------------------

#[test]
fn suback_v311_with_failure() {
    #[rustfmt::skip]
    let bytes = [
        0x90, 0x06,             // SUBACK, remaining length 6
        0x00, 0x0A,             // packet id 10
        0x00, 0x01, 0x02, 0x80, // granted QoS 0, 1, 2, and 0x80 Failure
    ];
    v311(
        &bytes,
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            codes: codes(&[0x00, 0x01, 0x02, 0x80]),
            properties: no_props(),
        }),
    );
    // Encode-only: a 5.0 failure code (0x87 Not authorized) becomes 3.1.1's 0x80.
    let from_v5 = Packet::SubAck(SubAck {
        packet_id: pid(10),
        codes: codes(&[0x01, 0x87]),
        properties: no_props(),
    });
    assert_eq!(
        encode(V3_1_1, &from_v5),
        [0x90, 0x04, 0x00, 0x0A, 0x01, 0x80]
    );
}

#[test]
fn suback_v31() {
    #[rustfmt::skip]
    let bytes = [
        0x90, 0x04, // SUBACK, remaining length 4
        0x00, 0x0A, // message id 10
        0x01, 0x02, // granted QoS 1, 2
    ];
    v31(
        &bytes,
        Packet::SubAck(SubAck {
            packet_id: pid(10),
            codes: codes(&[0x01, 0x02]),
            properties: no_props(),
        }),
    );
}

#[test]
fn suback_v5() {
    #[rustfmt::skip]
    let minimal = [
        0x90, 0x04, // SUBACK, remaining length 4
        0x00, 0x0B, // packet id 11
        0x00,       // property length 0
        0x01,       // reason code 0x01 Granted QoS 1
    ];
    v5(
        &minimal,
        Packet::SubAck(SubAck {
            packet_id: pid(11),
            codes: codes(&[0x01]),
            properties: no_props(),
        }),
    );
    #[rustfmt::skip]
    let bytes = [
        0x90, 0x0F,                         // SUBACK, remaining length 15
        0x00, 0x0B,                         // packet id 11
        0x06,                               // property length 6
        0x1F, 0x00, 0x03, b'r', b's', b'n', //   reason string "rsn"
        0x01, 0x02, 0x00,                   // Granted QoS 1, 2, 0
        0x80, 0x87, 0xA2,                   // Unspecified error, Not authorized,
                                            //   Wildcard Subscriptions not supported
    ];
    v5(
        &bytes,
        Packet::SubAck(SubAck {
            packet_id: pid(11),
            codes: codes(&[0x01, 0x02, 0x00, 0x80, 0x87, 0xA2]),
            properties: props(PropertySet {
                reason_string: Some(bs("rsn")),
                ..Default::default()
            }),
        }),
    );
}

// ---------------------------------------------------------------------------------------
// UNSUBSCRIBE / UNSUBACK (3.1.1 §3.10-3.11, 5.0 §3.10-3.11)
// ---------------------------------------------------------------------------------------

#[test]
fn unsubscribe_v3() {
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x0C,                         // UNSUBSCRIBE, flags 0010, remaining length 12
        0x00, 0x0C,                         // packet id 12
        0x00, 0x03, b'a', b'/', b'b',       // filter "a/b"
        0x00, 0x03, b'c', b'/', b'#',       // filter "c/#"
    ];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(12),
        filters: vec![filter("a/b"), filter("c/#")],
        properties: no_props(),
    });
    v311(&bytes, expected.clone());
    v31(&bytes, expected);
}

#[test]
fn unsubscribe_v5() {
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x1B,                         // UNSUBSCRIBE, remaining length 27
        0x00, 0x0C,                         // packet id 12
        0x07,                               // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property "k" = "v"
        0x00, 0x03, b'a', b'/', b'b',       // filter "a/b"
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'+', // "$share/g/+"
    ];
    v5(
        &bytes,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(12),
            filters: vec![filter("a/b"), filter("$share/g/+")],
            properties: props(PropertySet {
                user_properties: vec![user("k", "v")],
                ..Default::default()
            }),
        }),
    );
}

#[test]
fn unsuback_v3_has_no_payload() {
    #[rustfmt::skip]
    let bytes = [
        0xB0, 0x02, // UNSUBACK, remaining length 2
        0x00, 0x0C, // packet id 12
    ];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: pid(12),
        codes: Vec::new(),
        properties: no_props(),
    });
    v311(&bytes, expected.clone());
    v31(&bytes, expected);
}

#[test]
fn unsuback_v5_with_codes() {
    #[rustfmt::skip]
    let bytes = [
        0xB0, 0x06,       // UNSUBACK, remaining length 6
        0x00, 0x0C,       // packet id 12
        0x00,             // property length 0
        0x00, 0x11, 0x87, // Success, No subscription existed, Not authorized
    ];
    v5(
        &bytes,
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(12),
            codes: codes(&[0x00, 0x11, 0x87]),
            properties: no_props(),
        }),
    );
    #[rustfmt::skip]
    let with_props = [
        0xB0, 0x08,                   // UNSUBACK, remaining length 8
        0x00, 0x0D,                   // packet id 13
        0x04,                         // property length 4
        0x1F, 0x00, 0x01, b'r',       //   reason string "r"
        0x8F,                         // Topic Filter invalid
    ];
    v5(
        &with_props,
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(13),
            codes: codes(&[0x8F]),
            properties: props(PropertySet {
                reason_string: Some(bs("r")),
                ..Default::default()
            }),
        }),
    );
}

// ---------------------------------------------------------------------------------------
// PINGREQ / PINGRESP (3.1.1 §3.12-3.13, 5.0 §3.12-3.13)
// ---------------------------------------------------------------------------------------

#[test]
fn ping_all_versions() {
    for v in [V3_1, V3_1_1, V5] {
        round_trip(v, &[0xC0, 0x00], Packet::PingReq); // PINGREQ, remaining length 0
        round_trip(v, &[0xD0, 0x00], Packet::PingResp); // PINGRESP, remaining length 0
    }
}

// ---------------------------------------------------------------------------------------
// DISCONNECT (3.1.1 §3.14, 5.0 §3.14)
// ---------------------------------------------------------------------------------------

#[test]
fn disconnect_v3() {
    for v in [V3_1, V3_1_1] {
        round_trip(v, &[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
        // DISCONNECT
    }
}

#[test]
fn disconnect_v5() {
    // Normal disconnection, no properties: remaining length 0 (§3.14.2.1).
    v5(&[0xE0, 0x00], Packet::Disconnect(Disconnect::default()));
    // Longer legal forms of the same.
    decodes(
        V5,
        &[0xE0, 0x01, 0x00],
        Packet::Disconnect(Disconnect::default()),
    );
    decodes(
        V5,
        &[0xE0, 0x02, 0x00, 0x00],
        Packet::Disconnect(Disconnect::default()),
    );
    #[rustfmt::skip]
    let reason_only = [
        0xE0, 0x01, // DISCONNECT, remaining length 1
        0x8E,       // reason code 0x8E Session taken over (property length omitted)
    ];
    v5(
        &reason_only,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            properties: no_props(),
        }),
    );
    #[rustfmt::skip]
    let with_expiry = [
        0xE0, 0x07,                   // DISCONNECT, remaining length 7
        0x04,                         // reason code 0x04 Disconnect with Will Message
        0x05,                         // property length 5
        0x11, 0x00, 0x00, 0x00, 0x78, //   session expiry interval 120
    ];
    v5(
        &with_expiry,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::DISCONNECT_WITH_WILL,
            properties: props(PropertySet {
                session_expiry_interval: Some(120),
                ..Default::default()
            }),
        }),
    );
    #[rustfmt::skip]
    let moved = [
        0xE0, 0x0F,                               // DISCONNECT, remaining length 15
        0x9C,                                     // reason code 0x9C Use another server
        0x0D,                                     // property length 13
        0x1C, 0x00, 0x05, b'o', b't', b'h', b'e', b'r', // server reference "other"
        0x1F, 0x00, 0x02, b'g', b'o',             //   reason string "go"
    ];
    v5(
        &moved,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::USE_ANOTHER_SERVER,
            properties: props(PropertySet {
                server_reference: Some(bs("other")),
                reason_string: Some(bs("go")),
                ..Default::default()
            }),
        }),
    );
}

// ---------------------------------------------------------------------------------------
// AUTH (5.0 §3.15)
// ---------------------------------------------------------------------------------------

#[test]
fn auth_v5() {
    // Success without properties: remaining length 0 (§3.15.2.1).
    v5(&[0xF0, 0x00], Packet::Auth(Auth::default()));
    decodes(V5, &[0xF0, 0x01, 0x00], Packet::Auth(Auth::default()));
    decodes(V5, &[0xF0, 0x02, 0x00, 0x00], Packet::Auth(Auth::default()));
    #[rustfmt::skip]
    let cont = [
        0xF0, 0x17,                         // AUTH, remaining length 23
        0x18,                               // reason code 0x18 Continue authentication
        0x15,                               // property length 21
        0x15, 0x00, 0x0B, b'S', b'C', b'R', b'A', b'M', b'-',
              b'S', b'H', b'A', b'-', b'1', //   authentication method "SCRAM-SHA-1"
        0x16, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04, // authentication data 01 02 03 04
    ];
    v5(
        &cont,
        Packet::Auth(Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: props(PropertySet {
                authentication_method: Some(bs("SCRAM-SHA-1")),
                authentication_data: Some(Bytes::from_static(&[1, 2, 3, 4])),
                ..Default::default()
            }),
        }),
    );
    #[rustfmt::skip]
    let reauth = [
        0xF0, 0x0A,                               // AUTH, remaining length 10
        0x19,                                     // reason code 0x19 Re-authenticate
        0x08,                                     // property length 8
        0x15, 0x00, 0x05, b'P', b'L', b'A', b'I', b'N', // authentication method "PLAIN"
    ];
    v5(
        &reauth,
        Packet::Auth(Auth {
            reason: ReasonCode::REAUTHENTICATE,
            properties: props(PropertySet {
                authentication_method: Some(bs("PLAIN")),
                ..Default::default()
            }),
        }),
    );
}

#[test]
fn auth_does_not_encode_before_v5() {
    let mut buf = BytesMut::new();
    assert!(Packet::Auth(Auth::default())
        .encode(V3_1_1, &mut buf)
        .is_err());
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------------------
// Framing: "need more" and back-to-back frames
// ---------------------------------------------------------------------------------------

#[test]
fn partial_frame_needs_more_and_leaves_buffer_untouched() {
    #[rustfmt::skip]
    let frame = [
        0x32, 0x09,                         // PUBLISH QoS 1, remaining length 9
        0x00, 0x03, b'a', b'/', b'b',       // topic "a/b"
        0x00, 0x01,                         // packet id 1
        b'h', b'i',                         // payload "hi"
    ];
    let opts = DecodeOptions::new(V3_1_1);
    // Every strict prefix (including the empty buffer and a header cut inside the
    // remaining length) is "need more", and nothing is consumed.
    for n in 0..frame.len() {
        let mut buf = BytesMut::from(&frame[..n]);
        assert_eq!(decode(&mut buf, &opts), Ok(None), "prefix of {n} bytes");
        assert_eq!(&buf[..], &frame[..n], "prefix of {n} bytes was modified");
    }
    // A remaining length cut after a continuation byte.
    let mut buf = BytesMut::from(&[0x30u8, 0x87][..]);
    assert_eq!(decode(&mut buf, &opts), Ok(None));
    assert_eq!(&buf[..], &[0x30, 0x87]);
    // Completing the frame then decodes it.
    let mut buf = BytesMut::from(&frame[..5]);
    assert_eq!(decode(&mut buf, &opts), Ok(None));
    buf.extend_from_slice(&frame[5..]);
    assert_eq!(
        decode(&mut buf, &opts),
        Ok(Some(publish(
            false,
            QoS::AtLeastOnce,
            false,
            topic("a/b"),
            Some(1),
            no_props(),
            b"hi"
        )))
    );
    assert!(buf.is_empty());
}

#[test]
fn back_to_back_frames_decode_in_order() {
    #[rustfmt::skip]
    let bytes = [
        0x30, 0x04, 0x00, 0x01, b't', b'x', // PUBLISH QoS 0 "t", payload "x"
        0xC0, 0x00,                         // PINGREQ
        0x40, 0x02, 0x00, 0x05,             // PUBACK packet id 5
        0xE0,                               // first byte of a DISCONNECT (incomplete)
    ];
    let opts = DecodeOptions::new(V3_1_1);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        decode(&mut buf, &opts),
        Ok(Some(publish(
            false,
            QoS::AtMostOnce,
            false,
            topic("t"),
            None,
            no_props(),
            b"x"
        )))
    );
    assert_eq!(&buf[..], &bytes[6..]);
    assert_eq!(decode(&mut buf, &opts), Ok(Some(Packet::PingReq)));
    assert_eq!(&buf[..], &bytes[8..]);
    assert_eq!(
        decode(&mut buf, &opts),
        Ok(Some(Packet::PubAck(Ack::new(pid(5)))))
    );
    assert_eq!(&buf[..], &[0xE0]);
    assert_eq!(decode(&mut buf, &opts), Ok(None));
    buf.extend_from_slice(&[0x00]);
    assert_eq!(
        decode(&mut buf, &opts),
        Ok(Some(Packet::Disconnect(Disconnect::default())))
    );
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, &opts), Ok(None));
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: fixed header
// ---------------------------------------------------------------------------------------

#[test]
fn reject_reserved_packet_type_0() {
    for v in [V3_1, V3_1_1, V5] {
        rejects(v, &[0x00, 0x00], DecodeError::InvalidPacketType(0));
    }
}

#[test]
fn reject_auth_before_v5() {
    rejects(V3_1_1, &[0xF0, 0x00], DecodeError::InvalidPacketType(15));
    rejects(V3_1, &[0xF0, 0x00], DecodeError::InvalidPacketType(15));
}

#[test]
fn reject_bad_header_flags() {
    // 3.1.1 §2.2.2 [MQTT-2.2.2-2], 5.0 §2.1.3 [MQTT-2.1.3-1].
    for v in [V3_1_1, V5] {
        // PUBREL with flags 0000 instead of 0010.
        rejects(
            v,
            &[0x60, 0x02, 0x00, 0x01],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::PubRel,
                flags: 0,
            },
        );
        // SUBSCRIBE with flags 0000 instead of 0010.
        rejects(
            v,
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Subscribe,
                flags: 0,
            },
        );
        // UNSUBSCRIBE with flags 0011.
        rejects(
            v,
            &[0xA3, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Unsubscribe,
                flags: 3,
            },
        );
        // PUBACK with flags 0010.
        rejects(
            v,
            &[0x42, 0x02, 0x00, 0x01],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::PubAck,
                flags: 2,
            },
        );
        // PINGREQ with flags 0001.
        rejects(
            v,
            &[0xC1, 0x00],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::PingReq,
                flags: 1,
            },
        );
        // CONNECT with flags 1000.
        rejects(
            v,
            &[0x18, 0x00],
            DecodeError::InvalidHeaderFlags {
                packet: PacketType::Connect,
                flags: 8,
            },
        );
    }
}

#[test]
fn reject_publish_qos3() {
    // [MQTT-3.3.1-4]
    for v in [V3_1, V3_1_1, V5] {
        rejects(
            v,
            &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
            DecodeError::InvalidQoS,
        );
    }
}

#[test]
fn reject_publish_dup_at_qos0() {
    // [MQTT-3.3.1-2]
    for v in [V3_1_1, V5] {
        rejects(v, &[0x38, 0x03, 0x00, 0x01, b't'], DecodeError::DupAtQoS0);
    }
}

#[test]
fn reject_remaining_length_of_five_bytes() {
    // 3.1.1 §2.2.3 / 5.0 §1.5.5: at most four bytes.
    rejects(
        V3_1_1,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        DecodeError::VarIntTooLong,
    );
    // Detected as soon as the fourth byte still has its continuation bit.
    rejects(
        V5,
        &[0x30, 0x80, 0x80, 0x80, 0x80],
        DecodeError::VarIntTooLong,
    );
}

#[test]
fn reject_non_minimal_variable_byte_integer() {
    // [MQTT-1.5.5-1]: 0 encoded as 0x80 0x00.
    rejects(V3_1_1, &[0xC0, 0x80, 0x00], DecodeError::VarIntNotMinimal);
    // 2 encoded as 0x82 0x80 0x00.
    rejects(
        V5,
        &[0x40, 0x82, 0x80, 0x00, 0x00, 0x01],
        DecodeError::VarIntNotMinimal,
    );
    // Non-minimal property length inside a 5.0 PUBACK.
    #[rustfmt::skip]
    let bytes = [
        0x40, 0x05, // PUBACK, remaining length 5
        0x00, 0x01, // packet id 1
        0x00,       // Success
        0x80, 0x00, // property length 0 in two bytes
    ];
    rejects(V5, &bytes, DecodeError::VarIntNotMinimal);
}

#[test]
fn reject_packet_too_large_from_fixed_header_alone() {
    // Remaining length 128 (0x80 0x01): a 131-byte frame; only the header is present.
    let opts = DecodeOptions {
        version: V5,
        max_packet_size: 100,
    };
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x01][..]);
    assert_eq!(
        decode(&mut buf, &opts),
        Err(DecodeError::PacketTooLarge {
            size: 131,
            max: 100
        })
    );
    // Boundary: a 4-byte PUBACK with max 4 is fine, with max 3 too large.
    let ok = DecodeOptions {
        version: V3_1_1,
        max_packet_size: 4,
    };
    let mut buf = BytesMut::from(&[0x40u8, 0x02, 0x00, 0x01][..]);
    assert_eq!(
        decode(&mut buf, &ok),
        Ok(Some(Packet::PubAck(Ack::new(pid(1)))))
    );
    rejects_with(
        DecodeOptions {
            version: V3_1_1,
            max_packet_size: 3,
        },
        &[0x40, 0x02],
        DecodeError::PacketTooLarge { size: 4, max: 3 },
    );
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: lengths
// ---------------------------------------------------------------------------------------

#[test]
fn reject_truncated_bodies() {
    // PUBACK whose remaining length 1 cannot hold the packet identifier.
    rejects(
        V3_1_1,
        &[0x40, 0x01, 0x00],
        DecodeError::Truncated("packet identifier"),
    );
    // PUBLISH whose topic length (5) exceeds the remaining length.
    rejects(
        V3_1_1,
        &[0x30, 0x03, 0x00, 0x05, b'a'],
        DecodeError::Truncated("topic name"),
    );
    #[rustfmt::skip]
    let connect = [
        0x10, 0x0D,                         // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04, 0x02, 0x00, 0x3C,             // level 4, clean, keep alive 60
        0x00, 0x05, b'a',                   // client id claims 5 bytes, 1 present
    ];
    rejects(
        V3_1_1,
        &connect,
        DecodeError::Truncated("client identifier"),
    );
    // 5.0 PUBACK whose property length (7) runs past the end.
    rejects(
        V5,
        &[0x40, 0x05, 0x00, 0x01, 0x00, 0x07, 0x1F],
        DecodeError::Truncated("properties"),
    );
}

#[test]
fn reject_trailing_bytes() {
    // 3.1.1 PUBACK with remaining length 3.
    rejects(
        V3_1_1,
        &[0x40, 0x03, 0x00, 0x01, 0x00],
        DecodeError::TrailingBytes(1),
    );
    // PINGREQ with remaining length 1.
    rejects(V3_1_1, &[0xC0, 0x01, 0x00], DecodeError::TrailingBytes(1));
    // 3.1.1 DISCONNECT with a body.
    rejects(V3_1_1, &[0xE0, 0x01, 0x00], DecodeError::TrailingBytes(1));
    // 3.1.1 UNSUBACK with a payload (5.0 reason code shape).
    rejects(
        V3_1_1,
        &[0xB0, 0x03, 0x00, 0x01, 0x00],
        DecodeError::TrailingBytes(1),
    );
    #[rustfmt::skip]
    let connect = [
        0x10, 0x0E,                         // CONNECT, remaining length 14
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04, 0x02, 0x00, 0x3C,             // level 4, clean, keep alive 60
        0x00, 0x01, b'a',                   // client id "a"
        0xFF,                               // stray byte
    ];
    rejects(V3_1_1, &connect, DecodeError::TrailingBytes(1));
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: strings and topics
// ---------------------------------------------------------------------------------------

#[test]
fn reject_invalid_utf8() {
    // [MQTT-1.5.3-1] / 5.0 [MQTT-1.5.4-1]
    rejects(
        V3_1_1,
        &[0x30, 0x03, 0x00, 0x01, 0xFF],
        DecodeError::InvalidUtf8("topic name"),
    );
    #[rustfmt::skip]
    let connect = [
        0x10, 0x0F,                         // CONNECT, remaining length 15
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04, 0x02, 0x00, 0x3C,             // level 4, clean, keep alive 60
        0x00, 0x03, 0xED, 0xA0, 0x80,       // client id: encoded surrogate U+D800
    ];
    rejects(
        V3_1_1,
        &connect,
        DecodeError::InvalidUtf8("client identifier"),
    );
    #[rustfmt::skip]
    let subscribe = [
        0x82, 0x06,                         // SUBSCRIBE, remaining length 6
        0x00, 0x01,                         // packet id 1
        0x00, 0x01, 0xC3,                   // filter: truncated 2-byte sequence
        0x00,                               // QoS 0
    ];
    rejects(V3_1_1, &subscribe, DecodeError::InvalidUtf8("topic filter"));
}

#[test]
fn reject_null_character_in_topic() {
    // [MQTT-1.5.3-2] / 5.0 [MQTT-1.5.4-2]
    rejects(
        V3_1_1,
        &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'],
        DecodeError::NullCharacter("topic name"),
    );
}

#[test]
fn reject_wildcard_in_topic_name() {
    // [MQTT-3.3.2-2]
    rejects(
        V3_1_1,
        &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
        DecodeError::WildcardInTopicName,
    );
    rejects(
        V5,
        &[0x30, 0x04, 0x00, 0x01, b'#', 0x00],
        DecodeError::WildcardInTopicName,
    );
}

#[test]
fn reject_empty_topic_name() {
    // [MQTT-4.7.3-1]; 5.0 only with a topic alias.
    rejects(
        V3_1_1,
        &[0x30, 0x02, 0x00, 0x00],
        DecodeError::EmptyTopicName,
    );
    rejects(
        V5,
        &[0x30, 0x03, 0x00, 0x00, 0x00],
        DecodeError::EmptyTopicName,
    );
}

#[test]
fn reject_bad_topic_filters() {
    // [MQTT-4.7.1-2]: "#" must be last and alone.
    #[rustfmt::skip]
    let multi = [
        0x82, 0x0A,                         // SUBSCRIBE, remaining length 10
        0x00, 0x01,                         // packet id 1
        0x00, 0x05, b'a', b'/', b'#', b'/', b'b', // filter "a/#/b"
        0x00,                               // QoS 0
    ];
    rejects(V3_1_1, &multi, DecodeError::InvalidMultiLevelWildcard);
    // [MQTT-4.7.1-3]: "+" must occupy a whole level.
    #[rustfmt::skip]
    let single = [
        0x82, 0x07,                         // SUBSCRIBE, remaining length 7
        0x00, 0x01,                         // packet id 1
        0x00, 0x02, b'a', b'+',             // filter "a+"
        0x00,                               // QoS 0
    ];
    rejects(V3_1_1, &single, DecodeError::InvalidSingleLevelWildcard);
    // Same rules in UNSUBSCRIBE, 5.0.
    #[rustfmt::skip]
    let unsub = [
        0xA2, 0x07,                         // UNSUBSCRIBE, remaining length 7
        0x00, 0x01,                         // packet id 1
        0x00,                               // property length 0
        0x00, 0x02, b'a', b'#',             // filter "a#"
    ];
    rejects(V5, &unsub, DecodeError::InvalidMultiLevelWildcard);
    // [MQTT-4.7.3-1]: empty filter.
    rejects(
        V3_1_1,
        &[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
        DecodeError::EmptyTopicFilter,
    );
    // 5.0 §4.8.2: "$share/g" has no filter part.
    #[rustfmt::skip]
    let shared = [
        0x82, 0x0E,                         // SUBSCRIBE, remaining length 14
        0x00, 0x01,                         // packet id 1
        0x00,                               // property length 0
        0x00, 0x08, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', // "$share/g"
        0x00,                               // options
    ];
    rejects(V5, &shared, DecodeError::InvalidSharedFilter);
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: packet identifiers and payload presence
// ---------------------------------------------------------------------------------------

#[test]
fn reject_zero_packet_id() {
    // [MQTT-2.3.1-1] / 5.0 [MQTT-2.2.1-3]
    rejects(
        V3_1_1,
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        DecodeError::ZeroPacketId(PacketType::Publish),
    );
    rejects(
        V3_1_1,
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        DecodeError::ZeroPacketId(PacketType::Subscribe),
    );
    for v in [V3_1_1, V5] {
        rejects(
            v,
            &[0x40, 0x02, 0x00, 0x00],
            DecodeError::ZeroPacketId(PacketType::PubAck),
        );
    }
    rejects(
        V3_1_1,
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
        DecodeError::ZeroPacketId(PacketType::Unsubscribe),
    );
}

#[test]
fn reject_subscribe_without_filters() {
    // [MQTT-3.8.3-3]
    rejects(
        V3_1_1,
        &[0x82, 0x02, 0x00, 0x01],
        DecodeError::NoSubscriptions,
    );
    rejects(
        V5,
        &[0x82, 0x03, 0x00, 0x01, 0x00],
        DecodeError::NoSubscriptions,
    );
    // [MQTT-3.10.3-2]
    rejects(
        V3_1_1,
        &[0xA2, 0x02, 0x00, 0x01],
        DecodeError::NoUnsubscriptions,
    );
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: subscription options and acks
// ---------------------------------------------------------------------------------------

#[test]
fn reject_subscription_option_reserved_bits() {
    // 3.1.1 [MQTT-3-8.3-4]: upper six bits reserved.
    rejects(
        V3_1_1,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
        DecodeError::InvalidSubscriptionOptions(0x04),
    );
    // 3.1.1: requested QoS 3.
    rejects(
        V3_1_1,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
        DecodeError::InvalidSubscriptionQoS,
    );
    // 5.0 [MQTT-3.8.3-5]: bits 6 and 7 reserved.
    rejects(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40],
        DecodeError::InvalidSubscriptionOptions(0x40),
    );
    rejects(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x80],
        DecodeError::InvalidSubscriptionOptions(0x80),
    );
}

#[test]
fn reject_retain_handling_3() {
    // 5.0 §3.8.3.1: Retain Handling 3 is a Protocol Error.
    rejects(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30],
        DecodeError::InvalidRetainHandling,
    );
}

#[test]
fn reject_no_local_on_shared_subscription() {
    // 5.0 [MQTT-3.8.3-4]
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x10,                         // SUBSCRIBE, remaining length 16
        0x00, 0x01,                         // packet id 1
        0x00,                               // property length 0
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'a', // "$share/g/a"
        0x04,                               // options: No Local
    ];
    rejects(V5, &bytes, DecodeError::NoLocalOnSharedSubscription);
}

#[test]
fn reject_invalid_suback_codes() {
    // 3.1.1 [MQTT-3.9.3-2]: 0x00, 0x01, 0x02, 0x80 only.
    rejects(
        V3_1_1,
        &[0x90, 0x03, 0x00, 0x01, 0x03],
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 0x03,
        },
    );
    rejects(
        V3_1_1,
        &[0x90, 0x03, 0x00, 0x01, 0x87],
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 0x87,
        },
    );
    // SUBACK without codes.
    rejects(
        V3_1_1,
        &[0x90, 0x02, 0x00, 0x01],
        DecodeError::NoSubAckCodes,
    );
}

#[test]
fn reject_invalid_v5_ack_reason_codes() {
    // 0x92 belongs to PUBREL/PUBCOMP, not PUBACK (§3.4.2.1).
    rejects(
        V5,
        &[0x40, 0x03, 0x00, 0x01, 0x92],
        DecodeError::InvalidReasonCode {
            packet: PacketType::PubAck,
            code: 0x92,
        },
    );
    // 0x10 belongs to PUBACK/PUBREC, not PUBREL (§3.6.2.1).
    rejects(
        V5,
        &[0x62, 0x03, 0x00, 0x01, 0x10],
        DecodeError::InvalidReasonCode {
            packet: PacketType::PubRel,
            code: 0x10,
        },
    );
    // DISCONNECT 0x01 is not a DISCONNECT reason code (§3.14.2.1).
    rejects(
        V5,
        &[0xE0, 0x01, 0x01],
        DecodeError::InvalidReasonCode {
            packet: PacketType::Disconnect,
            code: 0x01,
        },
    );
    // AUTH 0x80 (§3.15.2.1: 0x00, 0x18, 0x19 only).
    rejects(
        V5,
        &[0xF0, 0x01, 0x80],
        DecodeError::InvalidReasonCode {
            packet: PacketType::Auth,
            code: 0x80,
        },
    );
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: CONNECT and CONNACK
// ---------------------------------------------------------------------------------------

/// A 3.1.1 CONNECT with client id "a" and the given flags, without will or credentials.
fn connect_v311_flags(flags: u8) -> Vec<u8> {
    #[rustfmt::skip]
    let bytes = vec![
        0x10, 0x0D,                         // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04,                               // level 4
        flags,                              // connect flags under test
        0x00, 0x3C,                         // keep alive 60
        0x00, 0x01, b'a',                   // client id "a"
    ];
    bytes
}

#[test]
fn reject_connect_reserved_flag() {
    // [MQTT-3.1.2-3]
    rejects(
        V3_1_1,
        &connect_v311_flags(0x03),
        DecodeError::ConnectReservedFlag,
    );
}

#[test]
fn reject_will_qos_or_retain_without_will_flag() {
    // [MQTT-3.1.2-13] (QoS), [MQTT-3.1.2-15] (retain)
    rejects(
        V3_1_1,
        &connect_v311_flags(0x0A),
        DecodeError::WillFlagsWithoutWill,
    );
    rejects(
        V3_1_1,
        &connect_v311_flags(0x22),
        DecodeError::WillFlagsWithoutWill,
    );
}

#[test]
fn reject_will_qos_3() {
    // [MQTT-3.1.2-14]
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x14,                         // CONNECT, remaining length 20
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04,                               // level 4
        0x1E,                               // flags: will QoS 3 (0x18) | will | clean
        0x00, 0x3C,                         // keep alive 60
        0x00, 0x01, b'a',                   // client id "a"
        0x00, 0x01, b't',                   // will topic "t"
        0x00, 0x02, b'x', b'y',             // will message "xy"
    ];
    rejects(V3_1_1, &bytes, DecodeError::InvalidWillQoS);
}

#[test]
fn reject_password_without_username_v3() {
    // 3.1.1 [MQTT-3.1.2-22]
    #[rustfmt::skip]
    let v311 = [
        0x10, 0x10,                         // CONNECT, remaining length 16
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x04,                               // level 4
        0x42,                               // flags: password | clean
        0x00, 0x3C,                         // keep alive 60
        0x00, 0x01, b'a',                   // client id "a"
        0x00, 0x01, b'p',                   // password "p"
    ];
    rejects(V3_1_1, &v311, DecodeError::PasswordWithoutUsername);
    #[rustfmt::skip]
    let v31b = [
        0x10, 0x12,                                     // CONNECT, remaining length 18
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // "MQIsdp"
        0x03,                                           // version 3
        0x42,                                           // flags: password | clean
        0x00, 0x3C,                                     // keep alive 60
        0x00, 0x01, b'a',                               // client id "a"
        0x00, 0x01, b'p',                               // password "p"
    ];
    rejects(V3_1, &v31b, DecodeError::PasswordWithoutUsername);
}

#[test]
fn reject_unsupported_protocol_level_or_name() {
    // [MQTT-3.1.2-2]: level 6 under "MQTT".
    #[rustfmt::skip]
    let level6 = [
        0x10, 0x0D,                         // CONNECT, remaining length 13
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x06,                               // level 6 (unknown)
        0x02, 0x00, 0x3C,                   // clean, keep alive 60
        0x00, 0x01, b'a',                   // client id "a"
    ];
    rejects(V3_1_1, &level6, DecodeError::UnsupportedProtocolLevel(6));
    // Level 3 belongs to "MQIsdp", not "MQTT".
    let mut level3 = level6;
    level3[8] = 0x03;
    rejects(V3_1_1, &level3, DecodeError::UnsupportedProtocolLevel(3));
    // "MQIsdp" with level 4.
    #[rustfmt::skip]
    let mqisdp4 = [
        0x10, 0x0F,                                     // CONNECT, remaining length 15
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // "MQIsdp"
        0x04,                                           // level 4 (not 3.1)
        0x02, 0x00, 0x3C,                               // clean, keep alive 60
        0x00, 0x01, b'a',                               // client id "a"
    ];
    rejects(V3_1_1, &mqisdp4, DecodeError::UnsupportedProtocolLevel(4));
    // [MQTT-3.1.2-1]: unknown protocol name.
    let mut name = level6;
    name[7] = b'X'; // "MQTX"
    name[8] = 0x04;
    rejects(V3_1_1, &name, DecodeError::UnsupportedProtocolName);
}

#[test]
fn reject_connack_bad_flags_and_codes() {
    // 3.1.1 §3.2.2.1: bits 7-1 reserved.
    rejects(
        V3_1_1,
        &[0x20, 0x02, 0x02, 0x00],
        DecodeError::InvalidConnAckFlags(0x02),
    );
    // 5.0 [MQTT-3.2.2-1]
    rejects(
        V5,
        &[0x20, 0x03, 0x80, 0x00, 0x00],
        DecodeError::InvalidConnAckFlags(0x80),
    );
    // 3.1.1 return code 6 is reserved.
    rejects(
        V3_1_1,
        &[0x20, 0x02, 0x00, 0x06],
        DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: 0x06,
        },
    );
    // 5.0 0x8E (Session taken over) is not a CONNACK reason code.
    rejects(
        V5,
        &[0x20, 0x03, 0x00, 0x8E, 0x00],
        DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: 0x8E,
        },
    );
    // [MQTT-3.2.2-4] / 5.0 [MQTT-3.2.2-6]: session present with a refusal.
    rejects(
        V3_1_1,
        &[0x20, 0x02, 0x01, 0x05],
        DecodeError::SessionPresentOnFailure,
    );
    rejects(
        V5,
        &[0x20, 0x03, 0x01, 0x87, 0x00],
        DecodeError::SessionPresentOnFailure,
    );
}

// ---------------------------------------------------------------------------------------
// Rejection vectors: 5.0 properties
// ---------------------------------------------------------------------------------------

/// A 5.0 CONNECT with client id "a" and the given property block (without its length).
fn connect_v5_props(block: &[u8]) -> Vec<u8> {
    assert!(block.len() < 100);
    let remaining = 14 + block.len();
    #[rustfmt::skip]
    let mut bytes = vec![
        0x10, remaining as u8,              // CONNECT, remaining length
        0x00, 0x04, b'M', b'Q', b'T', b'T', // "MQTT"
        0x05,                               // version 5
        0x02,                               // clean start
        0x00, 0x3C,                         // keep alive 60
        block.len() as u8,                  // property length
    ];
    bytes.extend_from_slice(block);
    bytes.extend_from_slice(&[0x00, 0x01, b'a']); // client id "a"
    bytes
}

#[test]
fn connect_v5_props_helper_builds_a_valid_frame() {
    // Sanity check of the helper used below: session expiry 1 is accepted.
    let bytes = connect_v5_props(&[0x11, 0x00, 0x00, 0x00, 0x01]);
    match decode_one(V5, &bytes) {
        Packet::Connect(c) => assert_eq!(c.properties.session_expiry_interval, Some(1)),
        p => panic!("{p:?}"),
    }
}

#[test]
fn reject_duplicate_property() {
    // §3.1.2.11.2: Session Expiry Interval more than once is a Protocol Error.
    rejects(
        V5,
        &connect_v5_props(&[
            0x11, 0x00, 0x00, 0x00, 0x0A, // session expiry 10
            0x11, 0x00, 0x00, 0x00, 0x14, // session expiry 20
        ]),
        DecodeError::DuplicateProperty(0x11),
    );
    // §3.3.2.3.4: Topic Alias more than once.
    #[rustfmt::skip]
    let publish = [
        0x30, 0x0A,                         // PUBLISH QoS 0, remaining length 10
        0x00, 0x01, b't',                   // topic "t"
        0x06,                               // property length 6
        0x23, 0x00, 0x01,                   //   topic alias 1
        0x23, 0x00, 0x02,                   //   topic alias 2
    ];
    rejects(V5, &publish, DecodeError::DuplicateProperty(0x23));
    // §3.8.2.1.2: Subscription Identifier more than once in SUBSCRIBE.
    #[rustfmt::skip]
    let subscribe = [
        0x82, 0x0B,                         // SUBSCRIBE, remaining length 11
        0x00, 0x01,                         // packet id 1
        0x04,                               // property length 4
        0x0B, 0x01, 0x0B, 0x02,             //   subscription identifier 1, 2
        0x00, 0x01, b'a', 0x00,             // filter "a", options 0
    ];
    rejects(V5, &subscribe, DecodeError::DuplicateProperty(0x0B));
}

#[test]
fn reject_unknown_property() {
    // §2.2.2.2: 0x04 is not a property identifier.
    #[rustfmt::skip]
    let bytes = [
        0x40, 0x06, // PUBACK, remaining length 6
        0x00, 0x01, // packet id 1
        0x00,       // Success
        0x02,       // property length 2
        0x04, 0x00, //   identifier 0x04 (undefined)
    ];
    rejects(V5, &bytes, DecodeError::UnknownProperty(0x04));
}

#[test]
fn reject_property_not_allowed_on_packet() {
    // Topic Alias (0x23) in CONNECT.
    rejects(
        V5,
        &connect_v5_props(&[0x23, 0x00, 0x01]),
        DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet: PacketType::Connect,
        },
    );
    // Will Delay Interval (0x18) in CONNECT's own properties (it belongs to the Will).
    rejects(
        V5,
        &connect_v5_props(&[0x18, 0x00, 0x00, 0x00, 0x01]),
        DecodeError::PropertyNotAllowed {
            id: 0x18,
            packet: PacketType::Connect,
        },
    );
    // Session Expiry Interval (0x11) in PUBLISH.
    #[rustfmt::skip]
    let publish = [
        0x30, 0x09,                         // PUBLISH QoS 0, remaining length 9
        0x00, 0x01, b't',                   // topic "t"
        0x05,                               // property length 5
        0x11, 0x00, 0x00, 0x00, 0x01,       //   session expiry 1
    ];
    rejects(
        V5,
        &publish,
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet: PacketType::Publish,
        },
    );
}

#[test]
fn reject_receive_maximum_zero() {
    // §3.1.2.11.3: Receive Maximum 0 is a Protocol Error.
    rejects(
        V5,
        &connect_v5_props(&[0x21, 0x00, 0x00]),
        DecodeError::InvalidPropertyValue(0x21),
    );
}

#[test]
fn reject_topic_alias_zero() {
    // [MQTT-3.3.2-8]
    #[rustfmt::skip]
    let bytes = [
        0x30, 0x07,                         // PUBLISH QoS 0, remaining length 7
        0x00, 0x01, b't',                   // topic "t"
        0x03,                               // property length 3
        0x23, 0x00, 0x00,                   //   topic alias 0
    ];
    rejects(V5, &bytes, DecodeError::TopicAliasZero);
}

#[test]
fn reject_subscription_identifier_zero() {
    // §3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error.
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x09,                         // SUBSCRIBE, remaining length 9
        0x00, 0x01,                         // packet id 1
        0x02,                               // property length 2
        0x0B, 0x00,                         //   subscription identifier 0
        0x00, 0x01, b'a', 0x00,             // filter "a", options 0
    ];
    rejects(V5, &bytes, DecodeError::InvalidPropertyValue(0x0B));
}

// ---------------------------------------------------------------------------------------
// DecodeError::reason_code (5.0 §2.4, §4.13)
// ---------------------------------------------------------------------------------------

#[test]
fn reason_codes_of_decode_errors() {
    assert_eq!(
        DecodeError::PacketTooLarge {
            size: 131,
            max: 100
        }
        .reason_code(),
        ReasonCode(0x95)
    );
    assert_eq!(
        DecodeError::UnsupportedProtocolLevel(6).reason_code(),
        ReasonCode(0x84)
    );
    assert_eq!(
        DecodeError::UnsupportedProtocolName.reason_code(),
        ReasonCode(0x84)
    );
    for malformed in [
        DecodeError::VarIntNotMinimal,
        DecodeError::VarIntTooLong,
        DecodeError::InvalidQoS,
        DecodeError::Truncated("packet identifier"),
        DecodeError::TrailingBytes(1),
        DecodeError::InvalidUtf8("topic name"),
        DecodeError::ConnectReservedFlag,
        DecodeError::InvalidWillQoS,
        DecodeError::InvalidSubscriptionOptions(0x40),
        DecodeError::UnknownProperty(0x04),
        DecodeError::InvalidHeaderFlags {
            packet: PacketType::PubRel,
            flags: 0,
        },
    ] {
        assert_eq!(malformed.reason_code(), ReasonCode(0x81), "{malformed:?}");
    }
    assert_eq!(
        DecodeError::DuplicateProperty(0x11).reason_code(),
        ReasonCode(0x82)
    );
    assert_eq!(
        DecodeError::InvalidPropertyValue(0x21).reason_code(),
        ReasonCode(0x82)
    );
    assert_eq!(
        DecodeError::InvalidRetainHandling.reason_code(),
        ReasonCode(0x82)
    );
    assert_eq!(
        DecodeError::NoLocalOnSharedSubscription.reason_code(),
        ReasonCode(0x82)
    );
    assert_eq!(DecodeError::TopicAliasZero.reason_code(), ReasonCode(0x94));
}

#[test]
fn reason_code_of_property_not_allowed_is_malformed_packet() {
    // 5.0 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for
    // its packet type, or contains a value not of the specified data type, is a Malformed
    // Packet. If received, use a CONNACK or DISCONNECT packet with Reason Code 0x81
    // (Malformed Packet)".
    assert_eq!(
        DecodeError::PropertyNotAllowed {
            id: 0x23,
            packet: PacketType::Connect,
        }
        .reason_code(),
        ReasonCode(0x81)
    );
}

#[test]
fn reason_code_of_v5_subscribe_maximum_qos_3_is_protocol_error() {
    // 5.0 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    // (Only the reserved bits 6-7 make it a Malformed Packet, [MQTT-3.8.3-5].)
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x07,                         // SUBSCRIBE, remaining length 7
        0x00, 0x01,                         // packet id 1
        0x00,                               // property length 0
        0x00, 0x01, b'a',                   // filter "a"
        0x03,                               //   options: Maximum QoS 3
    ];
    let mut buf = BytesMut::from(&bytes[..]);
    let err = decode(&mut buf, &DecodeOptions::new(V5)).unwrap_err();
    assert_eq!(err, DecodeError::InvalidSubscriptionQoS);
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn reason_code_of_v5_empty_topic_without_alias_is_protocol_error() {
    // 5.0 §3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is
    // no Topic Alias."
    #[rustfmt::skip]
    let bytes = [
        0x30, 0x03, // PUBLISH QoS 0, remaining length 3
        0x00, 0x00, // topic name "" (zero length)
        0x00,       // property length 0 (no Topic Alias)
    ];
    let mut buf = BytesMut::from(&bytes[..]);
    let err = decode(&mut buf, &DecodeOptions::new(V5)).unwrap_err();
    assert_eq!(err, DecodeError::EmptyTopicName);
    assert_eq!(err.reason_code(), ReasonCode::PROTOCOL_ERROR);
}
