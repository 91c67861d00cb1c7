//! 5.0 PUBLISH semantics over TCP with 2 shards (publisher and subscribers on the same
//! and on different shards): acks that say no one subscribed (0x10), payloads that are
//! not the UTF-8 they claim (0x99), the subscriber's Maximum Packet Size, and properties
//! forwarded to 5.0 subscribers and dropped for 3.1.1 ones.

mod common;

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use surgemq::protocol::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn publish(topic: &str, payload: &[u8], qos: QoS, id: Option<u16>, props: Properties) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).unwrap(),
        packet_id: id.map(pid),
        properties: props,
        payload: Bytes::copy_from_slice(payload),
    })
}

fn utf8_flag() -> Properties {
    let mut p = Properties::new();
    p.get_mut().payload_format_indicator = Some(true);
    p
}

#[test]
fn acks_say_when_no_one_subscribed() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let mut p = b.client(V5, &b.id_on(shard, "nms-pub"), true);
        let t = format!("nms{shard}/t");
        p.send(&publish(
            &t,
            b"x",
            QoS::AtLeastOnce,
            Some(1),
            Properties::new(),
        ));
        match p.recv() {
            Packet::PubAck(a) => assert_eq!(a.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            other => panic!("{other:?}"),
        }
        p.send(&publish(
            &t,
            b"x",
            QoS::ExactlyOnce,
            Some(2),
            Properties::new(),
        ));
        match p.recv() {
            Packet::PubRec(a) => assert_eq!(a.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
            other => panic!("{other:?}"),
        }
        // 0x10 is a success: the QoS 2 flow goes on.
        p.send(&Packet::PubRel(Ack::new(pid(2))));
        assert!(matches!(p.recv(), Packet::PubComp(a) if a.reason == ReasonCode::SUCCESS));
        // With a subscriber on the other shard: Success.
        let mut s = b.client(V5, &b.id_on(1 - shard, "nms-sub"), true);
        s.subscribe(1, &[(&t, QoS::AtMostOnce)]);
        p.send(&publish(
            &t,
            b"y",
            QoS::AtLeastOnce,
            Some(3),
            Properties::new(),
        ));
        assert!(matches!(p.recv(), Packet::PubAck(a) if a.reason == ReasonCode::SUCCESS));
        assert_eq!(&s.recv_publish().payload[..], b"y");
    }
}

#[test]
fn a_payload_that_is_not_the_utf8_it_claims_is_refused() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let t = format!("pfi{shard}/t");
        let mut s = b.client(V5, &b.id_on(1 - shard, "pfi-sub"), true);
        s.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut p = b.client(V5, &b.id_on(shard, "pfi-pub"), true);
        let bad = [0xC3u8, 0x28];
        p.send(&publish(&t, &bad, QoS::AtLeastOnce, Some(1), utf8_flag()));
        assert!(
            matches!(p.recv(), Packet::PubAck(a) if a.reason == ReasonCode::PAYLOAD_FORMAT_INVALID)
        );
        p.send(&publish(&t, &bad, QoS::ExactlyOnce, Some(2), utf8_flag()));
        assert!(
            matches!(p.recv(), Packet::PubRec(a) if a.reason == ReasonCode::PAYLOAD_FORMAT_INVALID)
        );
        // The refused QoS 2 flow is over: its id is free for a new message at once.
        p.send(&publish(
            &t,
            "ünïcode".as_bytes(),
            QoS::ExactlyOnce,
            Some(2),
            utf8_flag(),
        ));
        assert!(matches!(p.recv(), Packet::PubRec(a) if a.reason == ReasonCode::SUCCESS));
        p.send(&Packet::PubRel(Ack::new(pid(2))));
        assert!(matches!(p.recv(), Packet::PubComp(_)));
        let m = s.recv_publish();
        assert_eq!(&m.payload[..], "ünïcode".as_bytes(), "only the valid one");
        assert_eq!(
            m.properties.payload_format_indicator,
            Some(true),
            "forwarded"
        );
        s.expect_nothing();
        // QoS 0 has no ack: the connection is closed with the reason.
        p.send(&publish(&t, &bad, QoS::AtMostOnce, None, utf8_flag()));
        let got = p.expect_closed();
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PAYLOAD_FORMAT_INVALID),
            "{got:?}"
        );
        s.expect_nothing();
    }
}

#[test]
fn nothing_larger_than_the_subscribers_maximum_packet_size_is_sent_to_it() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let t = format!("mps{shard}/t");
        let mut s = b.raw(V5);
        let mut props = Properties::new();
        props.get_mut().maximum_packet_size = Some(100);
        s.connect_with(Connect {
            version: V5,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteString::from(b.id_on(1 - shard, "mps-sub")),
            will: None,
            username: None,
            password: None,
            properties: props,
        });
        s.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut big_fan = b.client(V311, &b.id_on(1 - shard, "mps-big"), true);
        big_fan.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut p = b.client(V5, &b.id_on(shard, "mps-pub"), true);
        for (i, size) in [10usize, 200, 20, 500, 30].into_iter().enumerate() {
            p.publish_acked(&t, &vec![b'a'; size], QoS::AtLeastOnce, false, i as u16 + 1);
        }
        // 5.0 §3.1.2.11.4: discarded for this subscriber as if sent; the others
        // follow; a 3.1.1 subscriber gets everything.
        let sizes: Vec<usize> = (0..3).map(|_| s.recv_publish().payload.len()).collect();
        assert_eq!(sizes, [10, 20, 30]);
        s.expect_nothing();
        let sizes: Vec<usize> = (0..5)
            .map(|_| big_fan.recv_publish().payload.len())
            .collect();
        assert_eq!(sizes, [10, 200, 20, 500, 30]);
    }
}

#[test]
fn properties_reach_5_0_subscribers_in_order_and_3_1_1_subscribers_get_the_message() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let t = format!("props{shard}/t");
        let mut s5 = b.client(V5, &b.id_on(1 - shard, "props-5"), true);
        s5.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut s3 = b.client(V311, &b.id_on(shard, "props-3"), true);
        s3.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut props = Properties::new();
        {
            let p = props.get_mut();
            p.content_type = Some("text/plain".into());
            p.response_topic = Some("reply/here".into());
            p.correlation_data = Some(Bytes::from_static(b"\x00\x01corr"));
            p.user_properties = vec![
                ("k".into(), "1".into()),
                ("a".into(), "2".into()),
                ("k".into(), "3".into()),
            ];
        }
        let mut p = b.client(V5, &b.id_on(shard, "props-pub"), true);
        p.send(&publish(
            &t,
            b"hello",
            QoS::AtLeastOnce,
            Some(1),
            props.clone(),
        ));
        assert!(matches!(p.recv(), Packet::PubAck(_)));
        let m = s5.recv_publish();
        assert_eq!(&m.payload[..], b"hello");
        assert_eq!(m.properties.content_type, props.content_type);
        assert_eq!(m.properties.response_topic, props.response_topic);
        assert_eq!(m.properties.correlation_data, props.correlation_data);
        assert_eq!(
            m.properties.user_properties, props.user_properties,
            "in order"
        );
        let m = s3.recv_publish();
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            (t.as_str(), &b"hello"[..])
        );
        // And a 3.1.1 publisher's message reaches the 5.0 subscriber cleanly.
        let mut p3 = b.client(V311, &b.id_on(1 - shard, "props-pub3"), true);
        p3.publish_acked(&t, b"from 3.1.1", QoS::AtLeastOnce, false, 1);
        let m = s5.recv_publish();
        assert_eq!(&m.payload[..], b"from 3.1.1");
        assert!(m.properties.is_empty());
        assert_eq!(&s3.recv_publish().payload[..], b"from 3.1.1");
    }
}

fn expiring(seconds: u32) -> Properties {
    let mut p = Properties::new();
    p.get_mut().message_expiry_interval = Some(seconds);
    p
}

#[test]
fn message_expiry_is_counted_down_and_expired_messages_are_not_delivered() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let t = format!("exp{shard}/t");
        // A persistent 5.0 subscriber that goes offline, on the other shard.
        let sub_id = b.id_on(1 - shard, "exp-sub");
        let mut s = b.raw(V5);
        let mut props = Properties::new();
        props.get_mut().session_expiry_interval = Some(600);
        s.connect_with(Connect {
            version: V5,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteString::from(sub_id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: props.clone(),
        });
        s.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut live3 = b.client(V311, &b.id_on(shard, "exp-live3"), true);
        live3.subscribe(1, &[(&t, QoS::AtLeastOnce)]);
        let mut p = b.client(V5, &b.id_on(shard, "exp-pub"), true);
        // Live: the interval arrives counted down from what was published [MQTT-3.3.2-6].
        p.send(&publish(
            &t,
            b"live",
            QoS::AtLeastOnce,
            Some(1),
            expiring(30),
        ));
        assert!(matches!(p.recv(), Packet::PubAck(_)));
        let m = s.recv_publish();
        let left = m.properties.message_expiry_interval.expect("an expiry");
        assert!((28..=30).contains(&left), "{left}");
        let m = live3.recv_publish();
        assert_eq!(&m.payload[..], b"live");
        // Offline: one message that expires while it waits, one that does not, and a
        // retained one that expires in the store.
        s.disconnect_and_wait();
        p.send(&publish(
            &t,
            b"short",
            QoS::AtLeastOnce,
            Some(2),
            expiring(1),
        ));
        assert!(matches!(p.recv(), Packet::PubAck(_)));
        p.publish_acked(&t, b"lasting", QoS::AtLeastOnce, false, 3);
        let r = format!("exp{shard}/retained");
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: TopicName::new(r.as_str()).unwrap(),
            packet_id: Some(pid(4)),
            properties: expiring(1),
            payload: Bytes::from_static(b"stale soon"),
        }));
        assert!(matches!(p.recv(), Packet::PubAck(_)));
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let mut s = b.raw(V5);
        let ack = s.connect_with(Connect {
            version: V5,
            clean_start: false,
            keep_alive: 60,
            client_id: ByteString::from(sub_id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: props,
        });
        assert!(ack.session_present);
        let m = s.recv_publish();
        assert_eq!(
            &m.payload[..],
            b"lasting",
            "the expired one is gone [MQTT-3.3.2-5]"
        );
        assert_eq!(m.properties.message_expiry_interval, None);
        s.expect_nothing();
        // The retained message has expired in the store too.
        let mut late = b.client(V5, &b.id_on(shard, "exp-late"), true);
        late.subscribe(1, &[(&r, QoS::AtLeastOnce)]);
        late.expect_nothing();
    }
}

/// A server DISCONNECT and a CONNACK refusal say why in a Reason String, unless that
/// would exceed the client's Maximum Packet Size [MQTT-3.14.2-3] [MQTT-3.2.2-19].
#[test]
fn disconnects_and_refusals_say_why_within_the_clients_maximum_packet_size() {
    let b = Broker::with(2, |c| c.limits.max_sessions = 2);
    for shard in 0..2 {
        for (max, says) in [(None, true), (Some(16), false)] {
            let mut c = b.raw(V5);
            let mut connect = connect_packet(V5, &b.id_on(shard, "rsn"), true, 60, None);
            connect.properties.get_mut().maximum_packet_size = max;
            c.connect_with(connect);
            // QoS 0 with a Payload Format Indicator of 1 and a payload that is not UTF-8.
            c.send(&publish(
                "rsn/t",
                &[0xff],
                QoS::AtMostOnce,
                None,
                utf8_flag(),
            ));
            let got = c.expect_closed();
            match got.as_slice() {
                [Packet::Disconnect(d)] => {
                    assert_eq!(d.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
                    assert_eq!(d.properties.reason_string.is_some(), says, "{max:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // max_sessions (1 per shard) reached: the refusal says so.
    let _a = b.client(V5, &b.id_on(0, "rsn-a"), true);
    let mut c = b.raw(V5);
    let ack = c.connect(&b.id_on(0, "rsn-b"), true, 60, None);
    assert_eq!(ack.reason, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(
        ack.properties.reason_string.as_deref(),
        Some("max_sessions reached")
    );
}
