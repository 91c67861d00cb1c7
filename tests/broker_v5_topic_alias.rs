//! 5.0 topic aliases over TCP with 2 shards. From client to broker: an alias set with a
//! topic stands for it in later PUBLISHes of the same connection; the message reaches 3.1.1
//! and 5.0 subscribers on both shards with its full topic and without the alias; an alias
//! of 0 or above the Topic Alias Maximum closes with DISCONNECT 0x94, an alias never set
//! with 0x82, and no other client notices. From broker to client: aliases within what the
//! client allows, least recently used replaced, none for clients that allow none.

mod common;

use common::*;
use surgemq::protocol::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn aliased(topic: &str, alias: u16, payload: &[u8]) -> Packet {
    let mut properties = Properties::new();
    properties.get_mut().topic_alias = Some(alias);
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: if topic.is_empty() {
            TopicName::empty()
        } else {
            TopicName::new(topic).unwrap()
        },
        packet_id: None,
        properties,
        payload: bytes::Bytes::copy_from_slice(payload),
    })
}

fn connect5(b: &Broker, id: &str) -> (Raw, ConnAck) {
    let mut c = b.raw(V5);
    let ack = c.connect(id, true, 60, None);
    (c, ack)
}

#[test]
fn an_alias_stands_for_its_topic_for_every_subscriber() {
    let b = Broker::start(2);
    for pub_shard in 0..2 {
        let topic = format!("alias/{pub_shard}");
        let mut subs = Vec::new();
        for shard in 0..2 {
            let mut s3 = b.client(V311, &b.id_on(shard, &format!("al3-{pub_shard}")), true);
            s3.subscribe(1, &[("alias/#", QoS::AtMostOnce)]);
            let (mut s5, _) = connect5(&b, &b.id_on(shard, &format!("al5-{pub_shard}")));
            s5.subscribe(1, &[("alias/#", QoS::AtMostOnce)]);
            subs.push(s3);
            subs.push(s5);
        }
        let (mut p, ack) = connect5(&b, &b.id_on(pub_shard, "al-pub"));
        assert_eq!(
            ack.properties.topic_alias_maximum,
            Some(10),
            "5.0 §3.2.2.3.8"
        );
        p.send(&aliased(&topic, 3, b"first"));
        p.send(&aliased("", 3, b"second"));
        // A new topic for the same alias replaces it.
        p.send(&aliased("alias/other", 3, b"third"));
        p.send(&aliased("", 3, b"fourth"));
        for s in &mut subs {
            for (t, payload) in [
                (topic.as_str(), &b"first"[..]),
                (topic.as_str(), b"second"),
                ("alias/other", b"third"),
                ("alias/other", b"fourth"),
            ] {
                let got = s.recv_publish();
                assert_eq!((got.topic.as_str(), &got.payload[..]), (t, payload));
                assert_eq!(got.properties.topic_alias, None, "never forwarded");
            }
        }
        p.ping();
    }
}

#[test]
fn invalid_and_unknown_aliases_close_with_their_reason_codes() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let (mut bystander, _) = connect5(&b, &b.id_on(1 - shard, "al-by"));
        bystander.subscribe(1, &[("al/#", QoS::AtMostOnce)]);
        for (packets, want, what) in [
            (
                vec![aliased("al/x", 0, b"x")],
                ReasonCode::TOPIC_ALIAS_INVALID,
                "alias 0",
            ),
            (
                vec![aliased("al/x", 11, b"x")],
                ReasonCode::TOPIC_ALIAS_INVALID,
                "alias above 10",
            ),
            (
                vec![aliased("", 4, b"x")],
                ReasonCode::PROTOCOL_ERROR,
                "alias never set",
            ),
        ] {
            let (mut c, _) = connect5(&b, &b.id_on(shard, "al-bad"));
            for p in &packets {
                c.send(p);
            }
            let got = c.expect_closed();
            assert!(
                matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == want),
                "{what}: {got:?}"
            );
        }
        // Aliases do not outlive their connection [MQTT-3.3.2-7].
        let (mut c, _) = connect5(&b, &b.id_on(shard, "al-again"));
        c.send(&aliased("al/kept", 2, b"x"));
        c.disconnect_and_wait();
        let (mut c, _) = connect5(&b, &b.id_on(shard, "al-again"));
        c.send(&aliased("", 2, b"y"));
        let got = c.expect_closed();
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR),
            "{got:?}"
        );
        // The bystander saw the one good message and nothing else, and still works.
        let m = bystander.recv_publish();
        assert_eq!(m.topic.as_str(), "al/kept");
        bystander.expect_nothing();
        bystander.ping();
    }
}

#[test]
fn the_broker_sends_aliases_within_what_the_client_allows() {
    let b = Broker::start(2);
    for shard in 0..2 {
        // Allows 2 aliases; another allows none; a 3.1.1 subscriber has none.
        let mut c = b.raw(V5);
        let mut connect = connect_packet(V5, &b.id_on(shard, "out-al"), true, 60, None);
        connect.properties.get_mut().topic_alias_maximum = Some(2);
        c.connect_with(connect);
        let mut none = b.client(V5, &b.id_on(shard, "out-none"), true);
        let mut old = b.client(ProtocolVersion::V3_1_1, &b.id_on(shard, "out-311"), true);
        let f = format!("oa{shard}/#");
        for s in [&mut c, &mut none, &mut old] {
            s.subscribe(1, &[(&f, QoS::AtLeastOnce)]);
        }
        let mut p = b.client(V5, &b.id_on(1 - shard, "out-pub"), true);
        let topics = ["a", "b", "a", "c", "a", "b"];
        for (i, t) in topics.iter().enumerate() {
            let t = format!("oa{shard}/{t}");
            p.publish_acked(&t, t.as_bytes(), QoS::AtLeastOnce, false, i as u16 + 1);
        }
        // The client resolves aliases as the specification says; each message's payload
        // is its topic.
        let mut table: std::collections::HashMap<u16, String> = Default::default();
        let mut sent_names = 0;
        for _ in topics {
            let got = c.recv_publish();
            let alias = got.properties.topic_alias.expect("an alias");
            assert!((1..=2).contains(&alias), "{alias}");
            let topic = if got.topic.is_empty() {
                table.get(&alias).expect("a known alias").clone()
            } else {
                sent_names += 1;
                table.insert(alias, got.topic.to_string());
                got.topic.to_string()
            };
            assert_eq!(topic.as_bytes(), &got.payload[..]);
        }
        assert_eq!(
            sent_names, 4,
            "a, b, c, then b again after c took its alias"
        );
        for s in [&mut none, &mut old] {
            for _ in topics {
                let got = s.recv_publish();
                assert_eq!(got.properties.topic_alias, None);
                assert_eq!(got.topic.as_bytes(), &got.payload[..]);
            }
        }
    }
}
