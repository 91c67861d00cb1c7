//! CONNECT and CONNACK (MQTT 3.1 and 3.1.1 section 3.1 / 3.2): the accepted CONNACK byte
//! for byte, refusals with their return codes followed by a close, packets that must close
//! the connection without any answer, client identifier rules, anonymous access and the
//! session-present flag. Every test runs for both 3.x versions where the behaviour exists
//! in both, with clients on both shards.

mod common;

use common::*;
use surgemq::protocol::*;

// ---------------------------------------------------------------------------------------
// Raw CONNECT bytes and raw reads
// ---------------------------------------------------------------------------------------

const CLEAN: u8 = 0x02;
const USERNAME: u8 = 0x80;
const PASSWORD: u8 = 0x40;

/// A CONNECT frame with this protocol name and level, connect flags and keep alive 60,
/// whose payload is `fields` (client id, then will / user name / password as the flags
/// say), each length-prefixed.
fn connect_frame(name: &[u8], level: u8, flags: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    for f in fields {
        put_str(&mut body, f);
    }
    let mut frame = vec![0x10];
    put_len(&mut frame, body.len());
    frame.extend_from_slice(&body);
    frame
}

/// The protocol name and level of a 3.x version.
fn name_level(v: ProtocolVersion) -> (&'static [u8], u8) {
    match v {
        ProtocolVersion::V3_1 => (b"MQIsdp", 3),
        _ => (b"MQTT", 4),
    }
}

/// A well-formed CONNECT for `v` with this client id and flags (plus `extra` payload
/// fields after the client id).
fn connect_v(v: ProtocolVersion, client_id: &str, flags: u8, extra: &[&[u8]]) -> Vec<u8> {
    let (name, level) = name_level(v);
    let mut fields: Vec<&[u8]> = vec![client_id.as_bytes()];
    fields.extend_from_slice(extra);
    connect_frame(name, level, flags, &fields)
}

/// A client id of exactly `len` characters that lives on `shard`.
fn id_of_len_on(b: &Broker, shard: usize, prefix: &str, len: usize) -> String {
    (0u32..)
        .map(|i| {
            let s = format!("{prefix}-{i}");
            assert!(s.len() <= len, "prefix {prefix} too long for {len}");
            format!("{s}{}", "x".repeat(len - s.len()))
        })
        .find(|id| surgemq::server::home_shard(id, b.shards) == shard)
        .unwrap()
}

/// After an accepted CONNECT: the connection works (PINGREQ is answered).
fn assert_usable(c: &mut Raw) {
    c.ping();
}

// ---------------------------------------------------------------------------------------
// Accepted
// ---------------------------------------------------------------------------------------

#[test]
fn connack_accepted_v311_exact_bytes() {
    let b = Broker::start(2);
    for shard in 0..2 {
        for flags in [CLEAN, 0] {
            let id = b.id_on(shard, &format!("acc311-{flags}"));
            let mut c = b.raw(V311);
            c.send_bytes(&connect_frame(b"MQTT", 4, flags, &[id.as_bytes()]));
            assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00], "{id}");
            assert_usable(&mut c);
            c.expect_nothing();
        }
    }
}

#[test]
fn connack_accepted_v31_mqisdp_exact_bytes() {
    let b = Broker::start(2);
    for shard in 0..2 {
        for flags in [CLEAN, 0] {
            let id = b.id_on(shard, &format!("acc31-{flags}"));
            let mut c = b.raw(V31);
            c.send_bytes(&connect_frame(b"MQIsdp", 3, flags, &[id.as_bytes()]));
            assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00], "{id}");
            assert_usable(&mut c);
            c.expect_nothing();
        }
    }
}

#[test]
fn connect_pipelined_with_following_packets_is_served() {
    // CONNECT and a PINGREQ in one write: the PINGREQ is answered after the CONNACK, also
    // when the connection moves to its home shard with those bytes.
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("pipe{}", v.level()));
            let mut c = b.raw(v);
            let mut bytes = connect_v(v, &id, CLEAN, &[]);
            bytes.extend_from_slice(&[0xC0, 0x00]);
            c.send_bytes(&bytes);
            assert_eq!(c.read_bytes(6), [0x20, 0x02, 0x00, 0x00, 0xD0, 0x00]);
            c.expect_nothing();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Protocol name and level
// ---------------------------------------------------------------------------------------

#[test]
fn unsupported_protocol_level_gets_connack_1_then_close() {
    // [MQTT-3.1.2-2]: an unsupported protocol level is answered with CONNACK return code
    // 0x01 (unacceptable protocol level) and the connection is closed.
    let b = Broker::start(2);
    let cases: &[(&[u8], u8)] = &[
        (b"MQTT", 6),
        (b"MQTT", 3),
        (b"MQTT", 0),
        (b"MQTT", 255),
        (b"MQIsdp", 4),
        (b"MQIsdp", 6),
    ];
    for shard in 0..2 {
        for &(name, level) in cases {
            let id = b.id_on(shard, "badlevel");
            let mut c = b.raw(V311);
            c.send_bytes(&connect_frame(name, level, CLEAN, &[id.as_bytes()]));
            assert_eq!(
                c.bytes_until_closed(),
                [0x20, 0x02, 0x00, 0x01],
                "protocol {:?} level {level}",
                String::from_utf8_lossy(name)
            );
        }
    }
}

#[test]
fn unknown_protocol_name_is_not_accepted_and_closed() {
    // [MQTT-3.1.2-1] (3.1.1): with an incorrect protocol name the server MAY disconnect
    // (with no CONNACK) or process the CONNECT per some other specification; it must not
    // accept it as MQTT. So: closed, and the only thing it may have sent is CONNACK 0x01.
    let b = Broker::start(2);
    let names: &[&[u8]] = &[b"MQTX", b"mqtt", b"MQIsdP", b"", b"MQTTMQTT"];
    for shard in 0..2 {
        for level in [3u8, 4] {
            for &name in names {
                let id = b.id_on(shard, "badname");
                let mut c = b.raw(V311);
                c.send_bytes(&connect_frame(name, level, CLEAN, &[id.as_bytes()]));
                let got = c.bytes_until_closed();
                assert!(
                    got.is_empty() || got == [0x20, 0x02, 0x00, 0x01],
                    "protocol name {:?} level {level}: got {got:02x?}",
                    String::from_utf8_lossy(name)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Packet order
// ---------------------------------------------------------------------------------------

#[test]
fn first_packet_not_connect_is_closed_without_connack() {
    // [MQTT-3.1.0-1]: the first packet from the client must be CONNECT; anything else
    // closes the connection, with no CONNACK.
    let b = Broker::start(2);
    for v in V3 {
        let packets = vec![
            Packet::PingReq,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: TopicName::new("first/x").unwrap(),
                packet_id: None,
                properties: Properties::new(),
                payload: bytes::Bytes::from_static(b"p"),
            }),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: TopicName::new("first/x").unwrap(),
                packet_id: Some(pid(1)),
                properties: Properties::new(),
                payload: bytes::Bytes::from_static(b"p"),
            }),
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::new("first/#").unwrap(),
                    options: SubscriptionOptions::new(QoS::AtLeastOnce),
                }],
                properties: Properties::new(),
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(1),
                filters: vec![TopicFilter::new("first/#").unwrap()],
                properties: Properties::new(),
            }),
            Packet::PubAck(Ack::new(pid(1))),
            Packet::PubRel(Ack::new(pid(1))),
            Packet::Disconnect(Disconnect::default()),
        ];
        for p in packets {
            let mut c = b.raw(v);
            c.send(&p);
            let got = c.bytes_until_closed();
            assert!(got.is_empty(), "{v:?} first packet {p:?}: got {got:02x?}");
        }
        // A packet only a server sends, as first packet: closed too.
        let mut c = b.raw(v);
        c.send_bytes(&[0x20, 0x02, 0x00, 0x00]);
        let got = c.bytes_until_closed();
        assert!(
            got.is_empty(),
            "{v:?} CONNACK as first packet: got {got:02x?}"
        );
    }
}

#[test]
fn second_connect_closes_the_connection() {
    // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation: closed, no second CONNACK.
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            for same_id in [true, false] {
                let id = b.id_on(shard, &format!("twice{}", v.level()));
                let other = b.id_on(1 - shard, &format!("twice-other{}", v.level()));
                let mut c = b.client(v, &id, true);
                c.ping();
                let again = if same_id { &id } else { &other };
                c.send_bytes(&connect_v(v, again, CLEAN, &[]));
                let got = c.bytes_until_closed();
                assert!(
                    got.is_empty(),
                    "{v:?} shard {shard} second CONNECT (same id: {same_id}): got {got:02x?}"
                );
                // The broker is fine and the id can connect again.
                let mut again = b.client(v, &id, true);
                again.ping();
            }
        }
    }
}

#[test]
fn connect_reserved_flag_set_closes_without_connack() {
    // [MQTT-3.1.2-3]: the server must validate that the reserved flag is 0 and disconnect
    // the client if it is not.
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            for flags in [0x01, CLEAN | 0x01] {
                let id = b.id_on(shard, &format!("reserved{}", v.level()));
                let mut c = b.raw(v);
                c.send_bytes(&connect_v(v, &id, flags, &[]));
                let got = c.bytes_until_closed();
                assert!(got.is_empty(), "{v:?} flags {flags:#04x}: got {got:02x?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client identifier
// ---------------------------------------------------------------------------------------

#[test]
fn v311_empty_client_id_with_clean_session_is_assigned_and_works() {
    // [MQTT-3.1.3-6]: a zero-byte client id with clean session 1 is accepted and the
    // server assigns a unique id. Two such clients must not take each other over, and each
    // can publish and subscribe, with partners on both shards.
    let b = Broker::start(2);
    let mut anon = Vec::new();
    for _ in 0..2 {
        let mut c = b.raw(V311);
        c.send_bytes(&connect_frame(b"MQTT", 4, CLEAN, &[b""]));
        assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00]);
        anon.push(c);
    }
    for (i, c) in anon.iter_mut().enumerate() {
        assert_eq!(
            c.subscribe(1, &[(&format!("anon/{i}/#"), QoS::ExactlyOnce)]),
            vec![ReasonCode(2)]
        );
    }
    for shard in 0..2 {
        // Another client publishes to each anonymous one.
        let pub_id = b.id_on(shard, "anon-pub");
        let mut p = b.client(V311, &pub_id, true);
        for i in 0..2 {
            p.publish_acked(
                &format!("anon/{i}/x"),
                format!("to{i}s{shard}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                1,
            );
        }
        for (i, c) in anon.iter_mut().enumerate() {
            let m = c.recv_publish();
            assert_eq!(m.topic.as_str(), format!("anon/{i}/x"));
            assert_eq!(&m.payload[..], format!("to{i}s{shard}").as_bytes());
            assert_eq!(m.qos, QoS::AtLeastOnce);
        }
        // And each anonymous one publishes to a subscriber on this shard.
        let sub_id = b.id_on(shard, "anon-sub");
        let mut s = b.client(V311, &sub_id, true);
        assert_eq!(
            s.subscribe(1, &[("from-anon/+", QoS::AtLeastOnce)]),
            vec![ReasonCode(1)]
        );
        for (i, c) in anon.iter_mut().enumerate() {
            c.publish_acked(
                &format!("from-anon/{i}"),
                b"hi",
                QoS::AtLeastOnce,
                false,
                10 + i as u16,
            );
            let m = s.recv_publish();
            assert_eq!(m.topic.as_str(), format!("from-anon/{i}"));
        }
        s.expect_nothing();
    }
    for c in anon.iter_mut() {
        c.ping();
        c.expect_nothing();
    }
}

#[test]
fn v311_empty_client_id_without_clean_session_gets_connack_2_then_close() {
    // [MQTT-3.1.3-8]: zero-byte client id with clean session 0: CONNACK 0x02 (identifier
    // rejected), then close.
    let b = Broker::start(2);
    for _ in 0..2 {
        let mut c = b.raw(V311);
        c.send_bytes(&connect_frame(b"MQTT", 4, 0, &[b""]));
        assert_eq!(c.bytes_until_closed(), [0x20, 0x02, 0x00, 0x02]);
    }
}

#[test]
fn v31_empty_client_id_gets_connack_2_then_close() {
    // MQTT 3.1 §3.1: the client identifier must be 1 to 23 characters; otherwise CONNACK
    // 0x02 (identifier rejected).
    let b = Broker::start(2);
    for flags in [CLEAN, 0] {
        let mut c = b.raw(V31);
        c.send_bytes(&connect_frame(b"MQIsdp", 3, flags, &[b""]));
        assert_eq!(
            c.bytes_until_closed(),
            [0x20, 0x02, 0x00, 0x02],
            "flags {flags:#04x}"
        );
    }
}

#[test]
fn v31_client_id_longer_than_23_gets_connack_2_then_close() {
    let b = Broker::start(2);
    for shard in 0..2 {
        for len in [24, 30, 65] {
            let id = id_of_len_on(&b, shard, "long", len);
            let mut c = b.raw(V31);
            c.send_bytes(&connect_frame(b"MQIsdp", 3, CLEAN, &[id.as_bytes()]));
            assert_eq!(
                c.bytes_until_closed(),
                [0x20, 0x02, 0x00, 0x02],
                "id of {len} characters"
            );
        }
        // 23 characters (and 1) are fine.
        for len in [23, 1] {
            let id = if len == 1 {
                (b'a'..=b'z')
                    .map(|c| (c as char).to_string())
                    .find(|id| surgemq::server::home_shard(id, b.shards) == shard)
                    .unwrap()
            } else {
                id_of_len_on(&b, shard, "ok23", len)
            };
            assert_eq!(id.len(), len);
            let mut c = b.raw(V31);
            c.send_bytes(&connect_frame(b"MQIsdp", 3, CLEAN, &[id.as_bytes()]));
            assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00], "{id}");
            c.ping();
        }
    }
}

#[test]
fn v311_long_client_id_is_accepted() {
    // 3.1.1 lifts the 23-character limit ([MQTT-3.1.3-5] is a minimum the server must
    // accept; this broker accepts longer ones).
    let b = Broker::start(2);
    for shard in 0..2 {
        let id = id_of_len_on(&b, shard, "long311", 100);
        let mut c = b.raw(V311);
        c.send_bytes(&connect_frame(b"MQTT", 4, CLEAN, &[id.as_bytes()]));
        assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00]);
        c.ping();
    }
}

// ---------------------------------------------------------------------------------------
// Anonymous access
// ---------------------------------------------------------------------------------------

#[test]
fn anonymous_refused_with_connack_5_when_not_allowed() {
    let b = Broker::with(2, |c| c.allow_anonymous = false);
    for v in V3 {
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("anon-no{}", v.level()));
            // No user name: CONNACK 0x05 (not authorized), then close.
            let mut c = b.raw(v);
            c.send_bytes(&connect_v(v, &id, CLEAN, &[]));
            assert_eq!(
                c.bytes_until_closed(),
                [0x20, 0x02, 0x00, 0x05],
                "{v:?} shard {shard}"
            );
            // With a user name (any), with or without a password: accepted.
            let mut c = b.raw(v);
            c.send_bytes(&connect_v(v, &id, CLEAN | USERNAME, &[b"alice"]));
            assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00]);
            c.ping();
            drop(c);
            let mut c = b.raw(v);
            c.send_bytes(&connect_v(
                v,
                &id,
                CLEAN | USERNAME | PASSWORD,
                &[b"bob", b"secret"],
            ));
            assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00]);
            c.ping();
        }
    }
}

#[test]
fn anonymous_allowed_by_default() {
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("anon-yes{}", v.level()));
            let mut c = b.raw(v);
            c.send_bytes(&connect_v(v, &id, CLEAN, &[]));
            assert_eq!(c.read_bytes(4), [0x20, 0x02, 0x00, 0x00]);
            c.ping();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Session present
// ---------------------------------------------------------------------------------------

#[test]
fn fresh_persistent_session_has_session_present_0() {
    // [MQTT-3.2.2-3]: clean session 0 and no stored session: session present 0.
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("fresh{}", v.level()));
            let mut c = b.raw(v);
            c.send_bytes(&connect_v(v, &id, 0, &[]));
            assert_eq!(
                c.read_bytes(4),
                [0x20, 0x02, 0x00, 0x00],
                "{v:?} shard {shard}"
            );
            c.ping();
            c.expect_nothing();
        }
    }
}

#[test]
fn session_present_reflects_stored_session() {
    // 3.1.1: [MQTT-3.2.2-2] resumed session: session present 1; [MQTT-3.2.2-1] clean
    // session 1: session present 0 (and the stored session is discarded, so a following
    // clean session 0 connect finds none). 3.1 has no flag: the byte is always 0.
    let b = Broker::start(2);
    for v in V3 {
        let sp: u8 = if v == V311 { 1 } else { 0 };
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("present{}", v.level()));
            let connack = |flags: u8| {
                let mut c = b.raw(v);
                c.send_bytes(&connect_v(v, &id, flags, &[]));
                let ack = c.read_bytes(4);
                c.ping();
                c.disconnect();
                ack
            };
            assert_eq!(connack(0), [0x20, 0x02, 0x00, 0x00], "{v:?} first");
            assert_eq!(connack(0), [0x20, 0x02, sp, 0x00], "{v:?} resumed");
            assert_eq!(connack(CLEAN), [0x20, 0x02, 0x00, 0x00], "{v:?} clean");
            // The clean session ended at disconnect: nothing to resume.
            assert_eq!(connack(0), [0x20, 0x02, 0x00, 0x00], "{v:?} after clean");
        }
    }
}
