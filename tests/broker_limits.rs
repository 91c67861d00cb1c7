//! The `[limits]` settings as a client sees them: filters per SUBSCRIBE, subscriptions
//! per client, topic levels, retained message limits, queued bytes and connections. Each
//! test checks the documented behaviour at the limit, on 3.1 and 3.1.1, with clients on
//! different shards and on the same shard.

mod common;

use std::collections::BTreeSet;

use common::*;
use surgemq::config::AcceptMode;
use surgemq::protocol::*;
use surgemq::session::QUEUE_ENTRY_OVERHEAD;

/// (subscriber shard, publisher shard, tag): different shards, then the same shard.
const PLACES: [(usize, usize, &str); 2] = [(0, 1, "x"), (1, 1, "s")];

const REFUSED: ReasonCode = ReasonCode(0x80);

fn granted(q: QoS) -> ReasonCode {
    ReasonCode(q as u8)
}

/// Publishes QoS 0 `payload` to each topic, then a QoS 0 "end" to `end`; returns the
/// payloads `sub` received up to "end" (the end marker follows the same path, so anything
/// delivered comes before it).
fn received_until_end(sub: &mut Raw, publ: &mut Raw, topics: &[String], end: &str) -> Vec<String> {
    for t in topics {
        publ.publish(t, t.as_bytes(), QoS::AtMostOnce, false, None);
    }
    publ.publish(end, b"end", QoS::AtMostOnce, false, None);
    let mut got = Vec::new();
    loop {
        let p = sub.recv_publish();
        if &p.payload[..] == b"end" {
            return got;
        }
        got.push(String::from_utf8(p.payload.to_vec()).unwrap());
    }
}

#[test]
fn filters_beyond_max_filters_per_subscribe_are_refused() {
    let b = Broker::with(2, |c| c.limits.max_filters_per_subscribe = 3);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let base = format!("mf/{l}{tag}");
            let topics: Vec<String> = (0..5).map(|i| format!("{base}/{i}")).collect();
            let end = format!("{base}/end");
            let mut sub = b.client(v, &b.id_on(ss, &format!("s{l}{tag}")), true);
            let filters: Vec<(&str, QoS)> = topics
                .iter()
                .map(|t| (t.as_str(), QoS::AtLeastOnce))
                .collect();
            // Filters after the first 3 are refused (0x80) and not subscribed.
            assert_eq!(
                sub.subscribe(1, &filters),
                vec![
                    granted(QoS::AtLeastOnce),
                    granted(QoS::AtLeastOnce),
                    granted(QoS::AtLeastOnce),
                    REFUSED,
                    REFUSED
                ],
                "{v:?} {tag}"
            );
            assert_eq!(
                sub.subscribe(2, &[(&end, QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            assert_eq!(
                received_until_end(&mut sub, &mut publ, &topics, &end),
                topics[..3].to_vec(),
                "{v:?} {tag}"
            );
            // The connection stays open, and a new SUBSCRIBE for the rest works.
            assert_eq!(
                sub.subscribe(
                    3,
                    &[(&topics[3], QoS::AtMostOnce), (&topics[4], QoS::AtMostOnce)]
                ),
                vec![granted(QoS::AtMostOnce); 2]
            );
            assert_eq!(
                received_until_end(&mut sub, &mut publ, &topics, &end),
                topics.to_vec()
            );
        }
    }
}

#[test]
fn subscriptions_beyond_max_subscriptions_per_client_are_refused() {
    let b = Broker::with(2, |c| c.limits.max_subscriptions_per_client = 3);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let base = format!("ms/{l}{tag}");
            let t: Vec<String> = (0..5).map(|i| format!("{base}/{i}")).collect();
            let end = format!("{base}/+/end");
            let end_topic = format!("{base}/e/end");
            let mut sub = b.client(v, &b.id_on(ss, &format!("s{l}{tag}")), true);
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            // One slot for the end marker's filter, two for topics.
            assert_eq!(
                sub.subscribe(1, &[(&end, QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            assert_eq!(
                sub.subscribe(2, &[(&t[0], QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            assert_eq!(
                sub.subscribe(3, &[(&t[1], QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            // A fourth is refused...
            assert_eq!(
                sub.subscribe(4, &[(&t[2], QoS::AtMostOnce)]),
                vec![REFUSED],
                "{v:?} {tag}"
            );
            // ...replacing an existing one always works [MQTT-3.8.4-3]...
            assert_eq!(
                sub.subscribe(5, &[(&t[1], QoS::AtLeastOnce)]),
                vec![granted(QoS::AtLeastOnce)]
            );
            assert_eq!(
                received_until_end(&mut sub, &mut publ, &t, &end_topic),
                t[..2].to_vec(),
                "{v:?} {tag}"
            );
            // ...and after an UNSUBSCRIBE there is room again.
            sub.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(6),
                filters: vec![TopicFilter::new(t[0].as_str()).unwrap()],
                properties: Properties::new(),
            }));
            assert!(matches!(sub.recv(), Packet::UnsubAck(a) if a.packet_id == pid(6)));
            assert_eq!(
                sub.subscribe(7, &[(&t[2], QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            assert_eq!(sub.subscribe(8, &[(&t[3], QoS::AtMostOnce)]), vec![REFUSED]);
            assert_eq!(
                received_until_end(&mut sub, &mut publ, &t, &end_topic),
                vec![t[1].clone(), t[2].clone()],
                "{v:?} {tag}"
            );
        }
    }
}

#[test]
fn max_subscriptions_per_client_in_one_subscribe_keeps_the_first_filters() {
    let b = Broker::with(2, |c| c.limits.max_subscriptions_per_client = 3);
    for v in V3 {
        for (ss, _, tag) in PLACES {
            let l = v.level();
            let t: Vec<String> = (0..5).map(|i| format!("m1/{l}{tag}/{i}")).collect();
            let mut sub = b.client(v, &b.id_on(ss, &format!("s{l}{tag}")), true);
            let filters: Vec<(&str, QoS)> =
                t.iter().map(|t| (t.as_str(), QoS::AtMostOnce)).collect();
            // "A SUBSCRIBE filter that would add one more is refused": the first three fit.
            assert_eq!(
                sub.subscribe(1, &filters),
                vec![
                    granted(QoS::AtMostOnce),
                    granted(QoS::AtMostOnce),
                    granted(QoS::AtMostOnce),
                    REFUSED,
                    REFUSED
                ],
                "{v:?} {tag}"
            );
            // With two held, a packet of two new ones: the first fits, the second does not.
            let mut sub = b.client(v, &b.id_on(ss, &format!("z{l}{tag}")), true);
            assert_eq!(
                sub.subscribe(1, &filters[..2]),
                vec![granted(QoS::AtMostOnce); 2]
            );
            assert_eq!(
                sub.subscribe(2, &filters[2..4]),
                vec![granted(QoS::AtMostOnce), REFUSED],
                "{v:?} {tag}"
            );
        }
    }
}

#[test]
fn refused_replacement_leaves_no_stale_subscription() {
    // Fresh broker: the next session on the shard reuses the ended session's slot.
    let b = Broker::with(2, |c| c.limits.max_filters_per_subscribe = 1);
    let v = V311;
    let mut publ = b.client(v, &b.id_on(1, "pub"), true);
    let mut a = b.client(v, &b.id_on(0, "a"), true);
    assert_eq!(
        a.subscribe(1, &[("leak/a", QoS::AtMostOnce)]),
        vec![granted(QoS::AtMostOnce)]
    );
    assert_eq!(
        a.subscribe(
            2,
            &[
                ("leak/other", QoS::AtMostOnce),
                ("leak/a", QoS::AtLeastOnce)
            ]
        ),
        vec![granted(QoS::AtMostOnce), REFUSED]
    );
    assert!(a.disconnect_and_wait().is_empty());
    // A new client, never subscribed to anything.
    let mut c = b.client(v, &b.id_on(0, "c"), true);
    publ.publish_acked("leak/a", b"not for c", QoS::AtLeastOnce, false, 1);
    c.expect_nothing();
    // And the ended session's other subscription is gone as well.
    publ.publish_acked("leak/other", b"not for c", QoS::AtLeastOnce, false, 2);
    c.expect_nothing();
}

#[test]
fn topic_levels_beyond_max_topic_levels() {
    let b = Broker::with(2, |c| c.limits.max_topic_levels = 4);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let mut sub = b.client(v, &b.id_on(ss, &format!("s{l}{tag}")), true);
            let q = QoS::AtMostOnce;
            // Filters: 4 levels accepted, 5 refused with 0x80 (connection stays open).
            assert_eq!(
                sub.subscribe(
                    1,
                    &[
                        ("a/b/c/d", q),
                        ("a/b/c/d/e", q),
                        ("+/+/+/+", q),
                        ("a/b/c/d/#", q),
                        ("/l/m/n", q),
                        ("/l/m/n/o", q),
                        ("a/b/c/#", q),
                    ]
                ),
                vec![
                    granted(q),
                    REFUSED,
                    granted(q),
                    REFUSED,
                    granted(q),
                    REFUSED,
                    granted(q)
                ],
                "{v:?} {tag}"
            );
            sub.ping();

            // A PUBLISH to 4 levels is delivered...
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            publ.publish_acked("a/b/c/d", b"four", QoS::AtLeastOnce, false, 1);
            let p = sub.recv_publish();
            assert_eq!(
                (p.topic.as_str(), &p.payload[..]),
                ("a/b/c/d", &b"four"[..])
            );
            // (matched by three filters: one delivery)
            sub.expect_nothing();
            // ...a PUBLISH to 5 levels closes the publisher's connection, nothing sent.
            publ.publish("a/b/c/d/e", b"five", QoS::AtLeastOnce, false, Some(2));
            assert_eq!(publ.expect_closed(), vec![], "{v:?} {tag}");
            sub.expect_nothing();
            // Others keep working.
            let mut publ = b.client(v, &b.id_on(ps, &format!("q{l}{tag}")), true);
            publ.publish_acked("/l/m/n", b"again", QoS::AtLeastOnce, false, 1);
            assert_eq!(&sub.recv_publish().payload[..], b"again");
        }
    }
}

/// Subscribes a new client (on the publisher's shard, so that the retained store is
/// up to date for it: see below) to `filter` and returns the retained messages it gets.
fn retained_now(
    b: &Broker,
    v: ProtocolVersion,
    shard: usize,
    id: &str,
    filter: &str,
) -> BTreeSet<(String, Vec<u8>)> {
    // The SUBSCRIBE's requests to the other shards travel behind the publisher's
    // retained messages on the same shard-to-shard channels, so they see them.
    let mut c = b.client(v, &b.id_on(shard, id), true);
    assert_eq!(
        c.subscribe(1, &[(filter, QoS::AtMostOnce)]),
        vec![granted(QoS::AtMostOnce)]
    );
    let mut got = BTreeSet::new();
    while let Some(p) = c.recv_within(QUIET) {
        match p {
            Packet::Publish(p) => {
                assert!(p.retain, "a retained message has RETAIN 1 [MQTT-3.3.1-8]");
                got.insert((p.topic.to_string(), p.payload.to_vec()));
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    c.disconnect_and_wait();
    got
}

fn set(items: &[(&str, &[u8])]) -> BTreeSet<(String, Vec<u8>)> {
    items
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect()
}

#[test]
fn retained_max_messages_is_split_per_shard() {
    // 2 messages over 2 shards: one retained topic per shard.
    for v in V3 {
        for ps in 0..2 {
            let b = Broker::with(2, |c| c.limits.retained_max_messages = 2);
            let pre = format!("rm/{}{ps}/", v.level());
            let (a0, b0, a1) = (
                topic_on(0, 2, &pre),
                topic_on(0, 2, &format!("{pre}b")),
                topic_on(1, 2, &pre),
            );
            let filter = format!("{pre}#");
            let mut live = b.client(v, &b.id_on(1 - ps, "live"), true);
            assert_eq!(
                live.subscribe(1, &[(&filter, QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            let mut publ = b.client(v, &b.id_on(ps, "pub"), true);
            publ.publish_acked(&a0, b"a0", QoS::AtLeastOnce, true, 1);
            publ.publish_acked(&b0, b"b0", QoS::AtLeastOnce, true, 2);
            publ.publish_acked(&a1, b"a1", QoS::AtLeastOnce, true, 3);
            // All three are delivered to the live subscriber (RETAIN 0 [MQTT-3.3.1-9])...
            for want in [&a0, &b0, &a1] {
                let p = live.recv_publish();
                assert_eq!((p.topic.as_str(), p.retain), (want.as_str(), false));
            }
            // ...but b0 is not stored: shard 0 holds its share, 1.
            assert_eq!(
                retained_now(&b, v, ps, "r1", &filter),
                set(&[(&a0, b"a0"), (&a1, b"a1")]),
                "{v:?} publisher on {ps}"
            );
            // Replacing a stored one always works.
            publ.publish_acked(&a0, b"a0 new", QoS::AtLeastOnce, true, 4);
            assert_eq!(
                retained_now(&b, v, ps, "r2", &filter),
                set(&[(&a0, b"a0 new"), (&a1, b"a1")])
            );
            // Clearing frees the place [MQTT-3.3.1-10], [MQTT-3.3.1-11].
            publ.publish_acked(&a0, b"", QoS::AtLeastOnce, true, 5);
            publ.publish_acked(&b0, b"b0", QoS::AtLeastOnce, true, 6);
            assert_eq!(
                retained_now(&b, v, ps, "r3", &filter),
                set(&[(&b0, b"b0"), (&a1, b"a1")])
            );
        }
    }
}

#[test]
fn retained_payload_over_retained_max_payload_is_delivered_not_stored() {
    let b = Broker::with(2, |c| c.limits.retained_max_payload = 16);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let topic = format!("rp/{l}{tag}");
            let mut live = b.client(v, &b.id_on(ss, &format!("l{l}{tag}")), true);
            assert_eq!(
                live.subscribe(1, &[(&topic, QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            let small = [b's'; 16];
            let big = [b'b'; 17];
            publ.publish_acked(&topic, &small, QoS::AtLeastOnce, true, 1);
            assert_eq!(&live.recv_publish().payload[..], &small);
            assert_eq!(
                retained_now(&b, v, ps, &format!("r{l}{tag}1"), &topic),
                set(&[(&topic, &small)])
            );
            // Too large: delivered, not stored, and the earlier retained message cleared.
            publ.publish_acked(&topic, &big, QoS::AtLeastOnce, true, 2);
            assert_eq!(&live.recv_publish().payload[..], &big);
            assert_eq!(
                retained_now(&b, v, ps, &format!("r{l}{tag}2"), &topic),
                set(&[]),
                "{v:?} {tag}"
            );
        }
    }
}

#[test]
fn max_queued_bytes_drops_once_the_queue_holds_the_limit() {
    let b = Broker::with(2, |c| {
        // Three 40-byte messages (with their per-entry overhead) reach the limit.
        c.limits.max_queued_bytes = 2 * (40 + QUEUE_ENTRY_OVERHEAD) + 20;
        c.limits.max_inflight = 1;
    });
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            // Each message costs topic + payload = 40 bytes, plus the entry overhead.
            let topic = format!("qb/{l}{tag}");
            let payload = |i: usize| format!("{i}{}", "x".repeat(40 - topic.len() - 1));
            let sid = b.id_on(ss, &format!("s{l}{tag}"));
            let mut sub = b.client(v, &sid, false);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![granted(QoS::AtLeastOnce)]
            );
            sub.disconnect_and_wait();
            let mut probe = b.client(v, &b.id_on(ss, &format!("r{l}{tag}")), true);
            assert_eq!(
                probe.subscribe(1, &[(&topic, QoS::AtMostOnce)]),
                vec![granted(QoS::AtMostOnce)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            for i in 0..5 {
                publ.publish_acked(
                    &topic,
                    payload(i).as_bytes(),
                    QoS::AtLeastOnce,
                    false,
                    i as u16 + 1,
                );
                probe.recv_publish();
            }
            // Queue 0, 40, 80 bytes: below 100, accepted; at 120 the rest is dropped.
            let mut sub = b.client(v, &sid, false);
            for i in 0..3 {
                let p = sub.recv_publish();
                assert_eq!(&p.payload[..], payload(i).as_bytes(), "{v:?} {tag}");
            }
            sub.expect_nothing();
            sub.disconnect_and_wait();
        }
    }
}

/// A raw connection that sends CONNECT for `id`: Some(ack bytes) if accepted, None if the
/// broker closed it without a byte.
fn try_connect(b: &Broker, v: ProtocolVersion, id: &str) -> (Raw, Option<[u8; 4]>) {
    let mut c = b.raw(v);
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect_packet(v, id, true, 0, None)))
        .encode(v, &mut bytes)
        .unwrap();
    let _ = c.try_send_bytes(&bytes);
    // Either a CONNACK or a close without a byte; never silence.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if c.buf.len() >= 4 {
            let ack = c.buf.split_to(4);
            return (c, Some([ack[0], ack[1], ack[2], ack[3]]));
        }
        let now = std::time::Instant::now();
        assert!(now < deadline, "{id}: neither CONNACK nor close");
        c.stream.set_read_timeout(Some(deadline - now)).unwrap();
        let mut chunk = [0u8; 64];
        match std::io::Read::read(&mut c.stream, &mut chunk) {
            Ok(0) => break,
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    assert!(
        c.buf.is_empty(),
        "{id}: closed after sending {:02x?}",
        &c.buf[..]
    );
    (c, None)
}

const ACCEPTED: Option<[u8; 4]> = Some([0x20, 0x02, 0x00, 0x00]);
/// 3.x CONNACK 0x03 Server unavailable: what "server busy" is in 3.x.
const BUSY: Option<[u8; 4]> = Some([0x20, 0x02, 0x00, 0x03]);

#[test]
fn max_connections_per_shard_share_round_robin() {
    // Round robin: connection k is accepted by shard k % 2; ids homed on that shard keep
    // each connection where it was accepted. max_connections 4 = 2 per shard.
    for v in V3 {
        let b = Broker::with(2, |c| {
            c.limits.max_connections = 4;
            c.accept_mode = AcceptMode::RoundRobin;
        });
        let mut open = Vec::new();
        for k in 0..4 {
            let (c, ack) = try_connect(&b, v, &b.id_on(k % 2, &format!("c{k}")));
            assert_eq!(ack, ACCEPTED, "{v:?} connection {k}");
            open.push(c);
        }
        // The 5th and 6th (one per shard) are refused: server unavailable (busy).
        for k in 4..6 {
            let (_, ack) = try_connect(&b, v, &b.id_on(k % 2, &format!("c{k}")));
            assert_eq!(ack, BUSY, "{v:?} connection {k}");
        }
        // The open ones still work.
        for c in &mut open {
            c.ping();
        }
        // A closed connection frees its place: the 7th goes to shard 0.
        let first = open.remove(0);
        assert!(first.disconnect_and_wait().is_empty());
        let (mut c, ack) = try_connect(&b, v, &b.id_on(0, "c6"));
        assert_eq!(ack, ACCEPTED, "{v:?} after a close");
        c.ping();
    }
}

#[test]
fn max_connections_never_exceeded_with_reuse_port() {
    for v in V3 {
        let b = Broker::with(2, |c| c.limits.max_connections = 4);
        let mut accepted = Vec::new();
        for k in 0..12 {
            let (c, ack) = try_connect(&b, v, &b.id_on(k % 2, &format!("c{k}")));
            if ack == ACCEPTED {
                accepted.push(c);
            } else {
                assert_eq!(ack, BUSY, "{v:?} connection {k}");
            }
        }
        assert!(
            !accepted.is_empty() && accepted.len() <= 4,
            "{v:?}: {} accepted",
            accepted.len()
        );
        for c in &mut accepted {
            c.ping();
        }
    }
}

/// 5.0: a connection beyond `max_connections` is told "server busy" (CONNACK 0x89) with
/// the reason, whichever shard takes it and wherever its session would live.
#[test]
fn max_connections_refuses_5_0_with_server_busy() {
    let v = ProtocolVersion::V5;
    let b = Broker::with(2, |c| {
        c.limits.max_connections = 2;
        c.accept_mode = AcceptMode::RoundRobin;
    });
    let mut open = Vec::new();
    for k in 0..2 {
        let mut c = b.raw(v);
        let ack = c.connect(&b.id_on(k % 2, &format!("b5-{k}")), true, 0, None);
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        open.push(c);
    }
    // Accepted by shard 0 then 1; ids homed on either shard.
    for (k, home) in [(2, 0), (3, 1), (4, 1), (5, 0)] {
        let mut c = b.raw(v);
        let ack = c.connect(&b.id_on(home, &format!("b5-{k}")), true, 0, None);
        assert_eq!(ack.reason, ReasonCode::SERVER_BUSY, "connection {k}");
        assert_eq!(
            ack.properties.reason_string.as_deref(),
            Some("max_connections reached")
        );
        assert!(c.expect_closed().is_empty());
    }
    for c in &mut open {
        c.ping();
    }
}
