//! Session takeover: a second connection with a client id already connected closes the
//! first [MQTT-3.1.4-2]. Both connections of an id always run on the id's home shard;
//! every test runs for ids on shard 0 and on shard 1, on 3.1 and 3.1.1, with the other
//! clients (publisher) on the same and on the other shard.

mod common;

use common::*;
use surgemq::protocol::*;

fn msg(p: &Publish) -> (&str, &[u8], QoS, bool, bool) {
    (p.topic.as_str(), &p.payload[..], p.qos, p.dup, p.retain)
}

/// (id shard, other client's shard, tag) for ids on both shards, others on the same shard
/// and on the other one.
const PLACES: [(usize, usize, &str); 4] = [(0, 0, "00"), (0, 1, "01"), (1, 1, "11"), (1, 0, "10")];

#[test]
fn second_connection_closes_the_first_and_works() {
    let b = Broker::start(2);
    for v in V3 {
        for (is, os, tag) in PLACES {
            for clean in [true, false] {
                let l = v.level();
                let k = u8::from(clean);
                let id = b.id_on(is, &format!("t{l}{tag}{k}"));
                let topic = format!("tk/{l}{tag}{k}");
                let mut first = connect_expect(&b, v, &id, clean, false);
                assert_eq!(
                    first.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                // The second connection is accepted; for clean session 0 the session of the
                // first is resumed (3.1.1: session present 1).
                let mut second = connect_expect(&b, v, &id, clean, !clean);
                // The first is closed without any packet (3.x has no DISCONNECT from the
                // server).
                assert_eq!(first.expect_closed(), vec![], "{v:?} {tag} clean {clean}");

                // The second works: it subscribes, receives and publishes.
                assert_eq!(
                    second.subscribe(2, &[(&topic, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                let mut other = b.client(v, &b.id_on(os, &format!("o{l}{tag}{k}")), true);
                assert_eq!(
                    other.subscribe(1, &[(&format!("{topic}/back"), QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                other.publish_acked(&topic, b"to second", QoS::AtLeastOnce, false, 1);
                let p = second.recv_publish();
                assert_eq!(
                    msg(&p),
                    (&*topic, &b"to second"[..], QoS::AtLeastOnce, false, false),
                    "{v:?} {tag} clean {clean}"
                );
                second.expect_nothing();
                second.publish_acked(
                    &format!("{topic}/back"),
                    b"from second",
                    QoS::AtLeastOnce,
                    false,
                    1,
                );
                let p = other.recv_publish();
                assert_eq!(&p.payload[..], b"from second");
                second.ping();
                assert!(second.disconnect_and_wait().is_empty());
                other.disconnect_and_wait();
            }
        }
    }
}

#[test]
fn takeover_across_protocol_versions() {
    let b = Broker::start(2);
    for (first_v, second_v) in [(V31, V311), (V311, V31)] {
        for (is, os, tag) in PLACES {
            let id = b.id_on(is, &format!("tv{}{tag}", first_v.level()));
            let topic = format!("tv/{}{tag}", first_v.level());
            let mut first = connect_expect(&b, first_v, &id, false, false);
            assert_eq!(
                first.subscribe(1, &[(&topic, QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut second = connect_expect(&b, second_v, &id, false, true);
            assert_eq!(first.expect_closed(), vec![]);
            // The resumed session delivers in the new connection's protocol.
            let mut other = b.client(
                second_v,
                &b.id_on(os, &format!("o{}{tag}", first_v.level())),
                true,
            );
            other.publish_acked(&topic, b"cross", QoS::ExactlyOnce, false, 1);
            let p = second.recv_publish();
            assert_eq!(
                msg(&p),
                (&*topic, &b"cross"[..], QoS::ExactlyOnce, false, false),
                "{first_v:?} -> {second_v:?} {tag}"
            );
            second.expect_nothing();
            second.disconnect_and_wait();
        }
    }
}

#[test]
fn persistent_session_taken_over_keeps_subscriptions_and_inflight() {
    let b = Broker::start(2);
    for v in V3 {
        for (is, os, tag) in PLACES {
            let l = v.level();
            let id = b.id_on(is, &format!("tp{l}{tag}"));
            let topic = format!("tp/{l}{tag}");
            let mut first = connect_expect(&b, v, &id, false, false);
            assert_eq!(
                first.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let mut publ = b.client(v, &b.id_on(os, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"unacked", QoS::AtLeastOnce, false, 1);
            let p1 = first.recv_publish_noack();
            assert_eq!(&p1.payload[..], b"unacked");

            // Taken over with clean session 0: session present [MQTT-3.2.2-2], the
            // unacknowledged message resent with DUP 1 and its id [MQTT-4.4.0-1].
            let mut second = connect_expect(&b, v, &id, false, true);
            assert_eq!(first.expect_closed(), vec![]);
            let p2 = second.recv_publish_noack();
            assert_eq!(
                msg(&p2),
                (&*topic, &b"unacked"[..], QoS::AtLeastOnce, true, false),
                "{v:?} {tag}"
            );
            assert_eq!(p2.packet_id, p1.packet_id);
            second.send(&Packet::PubAck(Ack::new(p2.packet_id.unwrap())));
            second.expect_nothing();

            // The subscription came along: no new SUBSCRIBE needed.
            publ.publish_acked(&topic, b"after", QoS::AtLeastOnce, false, 2);
            let p = second.recv_publish();
            assert_eq!(
                msg(&p),
                (&*topic, &b"after"[..], QoS::AtLeastOnce, false, false),
                "{v:?} {tag}"
            );
            second.expect_nothing();
            second.disconnect_and_wait();
        }
    }
}

#[test]
fn takeover_with_clean_session_1_discards_the_session() {
    let b = Broker::start(2);
    for v in V3 {
        for (is, os, tag) in PLACES {
            let l = v.level();
            let id = b.id_on(is, &format!("tc{l}{tag}"));
            let topic = format!("tc/{l}{tag}");
            let mut first = connect_expect(&b, v, &id, false, false);
            assert_eq!(
                first.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let mut publ = b.client(v, &b.id_on(os, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"unacked", QoS::AtLeastOnce, false, 1);
            let _ = first.recv_publish_noack();

            let mut second = connect_expect(&b, v, &id, true, false);
            assert_eq!(first.expect_closed(), vec![]);
            // Nothing resent, no subscription.
            second.expect_nothing();
            publ.publish_acked(&topic, b"after", QoS::AtLeastOnce, false, 2);
            second.expect_nothing();
            second.disconnect_and_wait();
        }
    }
}

#[test]
fn only_the_latest_of_many_connections_stays_open() {
    let b = Broker::start(2);
    for v in V3 {
        for (is, os, tag) in PLACES {
            let l = v.level();
            let id = b.id_on(is, &format!("tm{l}{tag}"));
            let topic = format!("tm/{l}{tag}");
            let mut conns = Vec::new();
            for n in 0..8 {
                let mut c = connect_expect(&b, v, &id, false, n > 0);
                assert_eq!(
                    c.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                conns.push(c);
            }
            let mut last = conns.pop().unwrap();
            for (n, c) in conns.iter_mut().enumerate() {
                assert_eq!(c.expect_closed(), vec![], "{v:?} {tag} connection {n}");
            }
            let mut publ = b.client(v, &b.id_on(os, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"latest", QoS::AtLeastOnce, false, 1);
            let p = last.recv_publish();
            assert_eq!(&p.payload[..], b"latest");
            // One subscription, one copy.
            last.expect_nothing();
            last.disconnect_and_wait();
        }
    }
}

#[test]
fn a_taken_over_connection_gets_no_more_messages() {
    let b = Broker::start(2);
    for v in V3 {
        for (is, os, tag) in PLACES {
            let l = v.level();
            let id = b.id_on(is, &format!("tg{l}{tag}"));
            let topic = format!("tg/{l}{tag}");
            let mut first = connect_expect(&b, v, &id, false, false);
            assert_eq!(
                first.subscribe(1, &[(&topic, QoS::AtMostOnce)]),
                vec![ReasonCode(0)]
            );
            let mut second = connect_expect(&b, v, &id, false, true);
            let mut publ = b.client(v, &b.id_on(os, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"m", QoS::AtMostOnce, false, 0);
            assert_eq!(&second.recv_publish().payload[..], b"m");
            // The first connection saw its end and nothing of the new message.
            assert_eq!(first.expect_closed(), vec![], "{v:?} {tag}");
            second.expect_nothing();
            second.disconnect_and_wait();
        }
    }
}

/// 5.0: the connection taken over is told why, DISCONNECT 0x8E, before its close
/// (whatever the new connection's version); a 3.x one just sees the close.
#[test]
fn a_taken_over_5_0_connection_gets_disconnect_0x8e() {
    let b = Broker::start(2);
    for shard in 0..2 {
        for (old_v, new_v) in [
            (ProtocolVersion::V5, ProtocolVersion::V5),
            (ProtocolVersion::V5, ProtocolVersion::V3_1_1),
            (ProtocolVersion::V3_1_1, ProtocolVersion::V5),
        ] {
            let id = b.id_on(shard, "to8e");
            let mut old = b.client(old_v, &id, true);
            old.ping();
            let _new = b.client(new_v, &id, true);
            let got = old.expect_closed();
            if old_v.is_v5() {
                assert!(
                    matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER),
                    "{old_v:?} -> {new_v:?}: {got:?}"
                );
            } else {
                assert!(got.is_empty(), "{got:?}");
            }
        }
    }
}
