//! A subscriber that stops reading must not hold back the others for long: flow control
//! pauses publishers while a subscriber drains, but one that does not drain within a
//! second is marked slow, stops holding anyone back, and from then on gets its QoS 0
//! messages dropped at `max_write_buffer` (counted).

mod common;

use std::time::{Duration, Instant};

use common::*;
use surgemq::protocol::*;

fn slow_consumer_does_not_stall(v: ProtocolVersion, slow_shard: usize, fast_shard: usize) {
    let b = Broker::with(2, |c| c.limits.max_write_buffer = 64 * 1024);
    let tag = format!("{}{slow_shard}{fast_shard}", v.level());
    // The slow subscriber subscribes and then never reads its socket again.
    let mut slow = b.client(v, &b.id_on(slow_shard, &format!("slow{tag}")), true);
    slow.subscribe(1, &[("feed", QoS::AtMostOnce)]);
    let mut fast = b.client(v, &b.id_on(fast_shard, &format!("fast{tag}")), true);
    fast.subscribe(1, &[("feed", QoS::AtMostOnce)]);
    let mut publ = b.client(v, &b.id_on(fast_shard, &format!("pub{tag}")), true);
    // 20 MB for the slow one to never read: far beyond socket buffers and max_write_buffer.
    let payload = vec![7u8; 1024];
    let n = 20_000u32;
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = 0u32;
        while got < n {
            match fast.recv_within(Duration::from_secs(10)) {
                Some(Packet::Publish(p)) => {
                    assert_eq!(p.payload.len(), 1024);
                    got += 1;
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => break,
            }
        }
        got
    });
    for _ in 0..n {
        publ.publish("feed", &payload, QoS::AtMostOnce, false, None);
    }
    // The publisher is still served (its PINGREQ answered) after all of it was sent.
    publ.ping();
    let got = reader.join().unwrap();
    let took = started.elapsed();
    // The fast subscriber lost nothing: publishers were held back, not its messages dropped.
    assert_eq!(got, n, "{v:?} fast subscriber on shard {fast_shard}");
    // Held back at most about a second by the stuck one (plus the transfer itself).
    assert!(took < Duration::from_secs(8), "{v:?}: took {took:?}");
    // The stuck connection is still open (dropping for it is not closing it).
    slow.send(&Packet::PingReq);
}

#[test]
fn stuck_subscriber_on_the_same_shard() {
    for v in V3 {
        slow_consumer_does_not_stall(v, 0, 0);
    }
}

#[test]
fn stuck_subscriber_on_another_shard() {
    for v in V3 {
        slow_consumer_does_not_stall(v, 1, 0);
    }
}
