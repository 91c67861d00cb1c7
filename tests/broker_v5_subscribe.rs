//! 5.0 subscription options over TCP with 2 shards (clients on the same and on different
//! shards): No Local, Retain As Published, Retain Handling 0/1/2. (Shared subscriptions
//! and Subscription Identifiers: `broker_v5_shared.rs`.)

mod common;

use common::*;
use surgemq::protocol::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn opts(qos: QoS, f: impl FnOnce(&mut SubscriptionOptions)) -> SubscriptionOptions {
    let mut o = SubscriptionOptions::new(qos);
    f(&mut o);
    o
}

#[test]
fn no_local_keeps_a_clients_own_messages_from_it() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let mut a = b.client(V5, &b.id_on(shard, "nl-a"), true);
        let mut same = b.client(V5, &b.id_on(shard, "nl-same"), true);
        let mut other = b.client(V5, &b.id_on(1 - shard, "nl-other"), true);
        let t = format!("nl{shard}/x");
        let f = format!("nl{shard}/#");
        let no_local = opts(QoS::AtLeastOnce, |o| o.no_local = true);
        assert_eq!(a.subscribe_with(1, &[(&f, no_local)]), [ReasonCode(1)]);
        for c in [&mut same, &mut other] {
            assert_eq!(c.subscribe_with(1, &[(&f, no_local)]), [ReasonCode(1)]);
        }
        a.publish_acked(&t, b"mine", QoS::AtLeastOnce, false, 1);
        for c in [&mut same, &mut other] {
            assert_eq!(&c.recv_publish().payload[..], b"mine");
        }
        a.expect_nothing();
        // Another subscription of A's without No Local that also matches still delivers
        // it, once [MQTT-3.8.3-3].
        let plain = format!("nl{shard}/+");
        assert_eq!(
            a.subscribe_with(2, &[(&plain, SubscriptionOptions::new(QoS::AtLeastOnce))]),
            [ReasonCode(1)]
        );
        a.publish_acked(&t, b"again", QoS::AtLeastOnce, false, 2);
        assert_eq!(&a.recv_publish().payload[..], b"again");
        a.expect_nothing();
        for c in [&mut same, &mut other] {
            assert_eq!(&c.recv_publish().payload[..], b"again");
        }
        // Others' messages reach A as usual.
        other.publish_acked(&t, b"theirs", QoS::AtLeastOnce, false, 3);
        assert_eq!(&a.recv_publish().payload[..], b"theirs");
    }
}

#[test]
fn retain_as_published_keeps_the_retain_flag_of_live_messages() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let f = format!("rap{shard}/#");
        let mut keep = b.client(V5, &b.id_on(shard, "rap-keep"), true);
        let mut clear = b.client(V5, &b.id_on(1 - shard, "rap-clear"), true);
        let rap = opts(QoS::AtMostOnce, |o| o.retain_as_published = true);
        keep.subscribe_with(1, &[(&f, rap)]);
        clear.subscribe_with(1, &[(&f, SubscriptionOptions::new(QoS::AtMostOnce))]);
        let mut p = b.client(V5, &b.id_on(shard, "rap-pub"), true);
        p.publish_acked(&format!("rap{shard}/t"), b"r", QoS::AtLeastOnce, true, 1);
        assert!(keep.recv_publish().retain, "[MQTT-3.3.1-13]");
        assert!(!clear.recv_publish().retain, "[MQTT-3.3.1-12]");
    }
}

#[test]
fn retain_handling_decides_whether_retained_messages_follow_the_suback() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let t = format!("rh{shard}/t");
        let mut p = b.client(V5, &b.id_on(1 - shard, "rh-pub"), true);
        p.publish_acked(&t, b"kept", QoS::AtLeastOnce, true, 1);
        let mut c = b.client(V5, &b.id_on(shard, "rh-sub"), true);
        let with = |rh| opts(QoS::AtMostOnce, |o| o.retain_handling = rh);
        let f = format!("rh{shard}/#");
        // 0: at every SUBSCRIBE [MQTT-3.3.1-9].
        c.subscribe_with(1, &[(&f, with(RetainHandling::SendAtSubscribe))]);
        assert_eq!(&c.recv_publish().payload[..], b"kept");
        c.subscribe_with(2, &[(&f, with(RetainHandling::SendAtSubscribe))]);
        assert_eq!(&c.recv_publish().payload[..], b"kept");
        // 1: only for a subscription that did not exist [MQTT-3.3.1-10].
        c.subscribe_with(3, &[(&f, with(RetainHandling::SendIfNew))]);
        c.expect_nothing();
        c.subscribe_with(4, &[(&t, with(RetainHandling::SendIfNew))]);
        assert_eq!(&c.recv_publish().payload[..], b"kept");
        // 2: never [MQTT-3.3.1-11].
        c.subscribe_with(5, &[("rh-other/#", with(RetainHandling::DoNotSend))]);
        c.subscribe_with(
            6,
            &[(&format!("rh{shard}/+"), with(RetainHandling::DoNotSend))],
        );
        c.expect_nothing();
    }
}
