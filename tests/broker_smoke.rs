//! The harness itself, and the basic path: publisher and subscriber on different shards
//! and on the same shard, every QoS, both 3.x versions.

mod common;

use common::*;
use surgemq::protocol::*;

fn pubsub(same_shard: bool) {
    let b = Broker::start(2);
    for v in V3 {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let sub_id = b.id_on(0, &format!("sub{}{:?}", v.level(), qos));
            let pub_id = b.id_on(
                if same_shard { 0 } else { 1 },
                &format!("pub{}{:?}", v.level(), qos),
            );
            let mut sub = b.client(v, &sub_id, true);
            assert_eq!(
                sub.subscribe(1, &[("t/+", QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut publ = b.client(v, &pub_id, true);
            for i in 0..20u16 {
                publ.publish_acked("t/x", format!("m{i}").as_bytes(), qos, false, i + 1);
            }
            for i in 0..20u16 {
                let p = sub.recv_publish();
                assert_eq!(
                    (p.qos, &p.payload[..], p.retain),
                    (qos, format!("m{i}").as_bytes(), false)
                );
            }
            sub.expect_nothing();
        }
    }
}

#[test]
fn publish_subscribe_across_shards() {
    pubsub(false);
}

#[test]
fn publish_subscribe_on_one_shard() {
    pubsub(true);
}
