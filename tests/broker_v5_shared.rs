//! Shared subscriptions (5.0 §4.8.2, and 3.1.1 members as mosquitto, EMQX and HiveMQ
//! allow) and Subscription Identifiers (5.0 §3.3.4) over TCP with 2 shards, members and
//! publishers on the same and on different shards.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use surgemq::protocol::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// SUBSCRIBE `filters` at `qos`, with a Subscription Identifier if given; returns SUBACK's
/// codes.
fn subscribe_id(
    c: &mut Raw,
    id: u16,
    filters: &[&str],
    qos: QoS,
    ident: Option<u32>,
) -> Vec<ReasonCode> {
    let mut properties = Properties::new();
    if let Some(i) = ident {
        properties.get_mut().subscription_identifiers = vec![i];
    }
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        subscriptions: filters
            .iter()
            .map(|f| Subscription {
                filter: TopicFilter::new(*f).unwrap(),
                options: SubscriptionOptions::new(qos),
            })
            .collect(),
        properties,
    }));
    match c.recv() {
        Packet::SubAck(a) => a.codes,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Every PUBLISH that arrives until `quiet` passes with nothing, acknowledged.
fn drain(c: &mut Raw, quiet: Duration) -> Vec<Publish> {
    let mut got = Vec::new();
    while let Some(p) = c.recv_within(quiet) {
        match p {
            Packet::Publish(p) => {
                if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                    c.send(&Packet::PubAck(Ack::new(id)));
                }
                got.push(p);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    got
}

fn n_of(p: &Publish) -> u32 {
    String::from_utf8_lossy(&p.payload).parse().unwrap()
}

#[test]
fn a_share_group_of_both_versions_on_both_shards_gets_each_message_once() {
    let b = Broker::start(2);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let g = format!("$share/g{}/jobs{}/+", qos as u8, qos as u8);
        let mut members = [
            b.client(V5, &b.id_on(0, "sm-a"), true),
            b.client(V311, &b.id_on(0, "sm-b"), true),
            b.client(V5, &b.id_on(1, "sm-c"), true),
            b.client(V311, &b.id_on(1, "sm-d"), true),
        ];
        for m in members.iter_mut() {
            assert_eq!(m.subscribe(1, &[(&g, qos)]), [ReasonCode(qos as u8)]);
        }
        let mut plain = b.client(V311, &b.id_on(1, "sm-plain"), true);
        plain.subscribe(1, &[(&format!("jobs{}/#", qos as u8), qos)]);
        let mut p0 = b.client(V5, &b.id_on(0, "sm-p0"), true);
        let mut p1 = b.client(V311, &b.id_on(1, "sm-p1"), true);
        let n = 200u32;
        for i in 0..n {
            let p = if i % 2 == 0 { &mut p0 } else { &mut p1 };
            let t = format!("jobs{}/x", qos as u8);
            p.publish_acked(&t, i.to_string().as_bytes(), qos, false, (i + 1) as u16);
        }
        let mut all = Vec::new();
        for m in members.iter_mut() {
            let got = drain(m, QUIET);
            assert!(!got.is_empty(), "every member gets a share");
            all.extend(got.iter().map(n_of));
        }
        all.sort();
        assert_eq!(
            all,
            (0..n).collect::<Vec<_>>(),
            "each message once, {qos:?}"
        );
        assert_eq!(drain(&mut plain, QUIET).len(), n as usize);
    }
}

#[test]
fn a_member_leaving_mid_flood_loses_no_qos1_message() {
    let b = Broker::start(2);
    for (leaver_shard, v) in [(0, V5), (1, V311), (0, V311), (1, V5)] {
        let g = format!("$share/lv/flood{leaver_shard}{}", v.level());
        let t = &g["$share/lv/".len()..];
        // The leaver never acknowledges: whatever it holds when its session ends (clean
        // session / expiry 0) goes to the stayer, so the stayer sees every message.
        let mut leaver = b.client(v, &b.id_on(leaver_shard, "lv-leave"), true);
        let mut stayer = b.client(V5, &b.id_on(1 - leaver_shard, "lv-stay"), true);
        leaver.subscribe(1, &[(&g, QoS::AtLeastOnce)]);
        stayer.subscribe(1, &[(&g, QoS::AtLeastOnce)]);
        let mut p = b.client(V5, &b.id_on(leaver_shard, "lv-pub"), true);
        let n = 300u32;
        let mut seen = BTreeSet::new();
        for i in 0..n {
            p.publish(
                t,
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
                Some((i % 60000 + 1) as u16),
            );
            if i == n / 2 {
                drop(leaver.stream.shutdown(std::net::Shutdown::Both));
            }
        }
        for _ in 0..n {
            assert!(matches!(p.recv(), Packet::PubAck(_)));
        }
        let deadline = Instant::now() + WAIT;
        while seen.len() < n as usize && Instant::now() < deadline {
            seen.extend(
                drain(&mut stayer, Duration::from_millis(500))
                    .iter()
                    .map(n_of),
            );
        }
        assert_eq!(
            seen.len(),
            n as usize,
            "leaver on shard {leaver_shard} at {v:?}"
        );
        drop(leaver);
    }
}

#[test]
fn subscription_identifiers_come_with_every_matching_delivery_and_are_checked() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let mut c = b.client(V5, &b.id_on(shard, "sid"), true);
        let mut old = b.client(V311, &b.id_on(shard, "sid-311"), true);
        let mut p = b.client(V311, &b.id_on(1 - shard, "sid-p"), true);
        let t = format!("sid{shard}/a/b");
        p.publish_acked(&t, b"kept", QoS::AtLeastOnce, true, 1);
        // The retained message carries the identifier of the subscription it came by.
        assert_eq!(
            subscribe_id(
                &mut c,
                1,
                &[&format!("sid{shard}/#")],
                QoS::AtLeastOnce,
                Some(268_435_455)
            ),
            [ReasonCode(1)]
        );
        let r = c.recv_publish();
        assert!(r.retain);
        assert_eq!(r.properties.subscription_identifiers, [268_435_455]);
        subscribe_id(
            &mut c,
            2,
            &[&format!("sid{shard}/+/b")],
            QoS::AtMostOnce,
            Some(1),
        );
        c.recv_publish();
        subscribe_id(
            &mut c,
            3,
            &[&format!("sid{shard}/a/+")],
            QoS::AtMostOnce,
            None,
        );
        c.recv_publish();
        old.subscribe(1, &[(&format!("sid{shard}/#"), QoS::AtLeastOnce)]);
        old.recv_publish();
        p.publish_acked(&t, b"live", QoS::AtLeastOnce, false, 2);
        // One copy (overlapping subscriptions of one client), every identifier once, in
        // any order [MQTT-3.3.4-3] [MQTT-3.3.4-4]; the one without adds none.
        let got = c.recv_publish();
        assert_eq!(&got.payload[..], b"live");
        assert_eq!(got.qos, QoS::AtLeastOnce);
        let mut ids = got.properties.subscription_identifiers.clone();
        ids.sort();
        assert_eq!(ids, [1, 268_435_455]);
        c.expect_nothing();
        // The 3.1.1 subscriber gets the message and no properties (none exist in 3.1.1).
        assert_eq!(&old.recv_publish().payload[..], b"live");
        // Identifiers belong to the subscriber: a publisher's is a protocol error
        // [MQTT-3.3.4-6] (tested in broker_v5_publish.rs); two in one SUBSCRIBE too.
        let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
        expect_protocol_error(c, subscription("x", o, &[1, 2]));
        // [MQTT-3.8.3-4]: No Local on a shared subscription.
        let c = b.client(V5, &b.id_on(shard, "nls"), true);
        o.no_local = true;
        expect_protocol_error(c, subscription("$share/g/nls", o, &[]));
    }
}

fn subscription(filter: &str, options: SubscriptionOptions, ids: &[u32]) -> Packet {
    let mut properties = Properties::new();
    properties.get_mut().subscription_identifiers = ids.to_vec();
    Packet::Subscribe(Subscribe {
        packet_id: pid(9),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(filter).unwrap(),
            options,
        }],
        properties,
    })
}

/// Sends `p` and expects DISCONNECT 0x82 and the close.
fn expect_protocol_error(mut c: Raw, p: Packet) {
    c.send(&p);
    let got = c.expect_closed();
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR),
        "{got:?}"
    );
}

#[test]
fn connack_says_shared_subscriptions_and_identifiers_are_available() {
    let b = Broker::start(2);
    let mut c = b.raw(V5);
    let ack = c.connect("avail", true, 0, None);
    // Absent means available (5.0 §3.2.2.3.11-13).
    assert_eq!(ack.properties.shared_subscription_available, None);
    assert_eq!(ack.properties.subscription_identifier_available, None);
    assert_eq!(ack.properties.wildcard_subscription_available, None);
}

#[test]
fn a_leaving_members_messages_reach_another_shard_with_no_other_traffic() {
    let b = Broker::start(2);
    for (shard, v) in [(0, V5), (1, V311)] {
        let g = format!("$share/idle/idle{shard}");
        let t = &g["$share/idle/".len()..];
        let mut leaver = b.client(v, &b.id_on(shard, "idle-leave"), true);
        let mut stayer = b.client(V5, &b.id_on(1 - shard, "idle-stay"), true);
        leaver.subscribe(1, &[(&g, QoS::AtLeastOnce)]);
        stayer.subscribe(1, &[(&g, QoS::AtLeastOnce)]);
        let mut p = b.client(V5, &b.id_on(1 - shard, "idle-pub"), true);
        for i in 0..4u32 {
            p.publish_acked(
                t,
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
                i as u16 + 1,
            );
        }
        // Each holds two: the leaver does not acknowledge.
        let mut seen: BTreeSet<u32> = drain(&mut stayer, QUIET).iter().map(n_of).collect();
        let held: Vec<u32> = (0..2).map(|_| n_of(&leaver.recv_publish_noack())).collect();
        assert_eq!(seen.len() + held.len(), 4);
        // Then all is quiet on the leaver's shard: its going is the last thing there.
        std::thread::sleep(QUIET);
        drop(leaver);
        let deadline = Instant::now() + WAIT;
        while seen.len() < 4 && Instant::now() < deadline {
            seen.extend(
                drain(&mut stayer, Duration::from_millis(200))
                    .iter()
                    .map(n_of),
            );
        }
        assert_eq!(seen, (0..4).collect(), "leaver on shard {shard}");
    }
}
