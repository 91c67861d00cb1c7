//! Retained messages streamed to a new subscription (issue 9, bug 7): in topic-tree
//! order across every shard's store, each topic once per SUBSCRIBE at the highest granted
//! QoS, paced by the subscriber (no QoS 1/2 retained message dropped at a small queue),
//! carried on across a takeover of a persistent session, and stopped by UNSUBSCRIBE.
//! Every test runs for 3.1 and 3.1.1 on two shards, with the subscriber on each shard and
//! the topics owned by both.

mod common;

use std::collections::BTreeSet;

use common::*;
use surgemq::protocol::*;

/// A tree of retained topics under `root`: 6 + 36 + 288 = 330 topics, more than one
/// fetch batch on each shard.
fn tree(root: &str) -> Vec<String> {
    let mut t = Vec::new();
    for a in 0..6 {
        t.push(format!("{root}/{a}"));
        for b in 0..6 {
            t.push(format!("{root}/{a}/{b}"));
            for c in 0..8 {
                t.push(format!("{root}/{a}/{b}/{c}"));
            }
        }
    }
    t
}

/// Publishes a retained message (QoS 1, acknowledged, so stored) on every topic, in an
/// order unrelated to the tree.
fn publish_all(publ: &mut Raw, topics: &[String], qos: QoS) {
    let mut order: Vec<&String> = topics.iter().collect();
    order.sort_by_key(|t| t.bytes().rev().collect::<Vec<u8>>());
    for (i, t) in order.iter().enumerate() {
        let id = 1 + (i % 60_000) as u16;
        publ.publish_acked(t, t.as_bytes(), qos, true, id);
    }
}

/// Acknowledges a QoS 1 delivery (every subscription here is at most QoS 1).
fn ack(c: &mut Raw, p: &Publish) {
    if let Some(id) = p.packet_id {
        c.send(&Packet::PubAck(Ack::new(id)));
    }
}

/// Receives PUBLISHes (acknowledging them) until `n` distinct topics arrived.
fn receive(c: &mut Raw, n: usize) -> Vec<Publish> {
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let p = c.recv_publish();
        ack(c, &p);
        seen.insert(p.topic.as_str().to_owned());
        got.push(p);
    }
    got
}

/// Topic-tree order, written out here rather than taken from the broker: level by level,
/// a parent before its children, siblings by their bytes.
fn tree_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Receives every one of `topics` and checks they came once each, in tree order.
fn receive_in_order(c: &mut Raw, topics: &[String], what: &str) -> Vec<Publish> {
    let got = receive(c, topics.len());
    let names: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    let mut want: Vec<&str> = topics.iter().map(String::as_str).collect();
    want.sort_by(|a, b| tree_order(a, b));
    assert_eq!(names, want, "{what}");
    got
}

/// A broker whose sessions have a window of 4 and a queue of 16.
fn small_queue_broker() -> Broker {
    Broker::with(2, |c| {
        c.limits.max_inflight = 4;
        c.limits.max_queued_messages = 16;
    })
}

/// Publishes the tree under a fresh root from the shard other than `ss`, then connects
/// the subscriber on `ss` (persistent when not `clean`).
fn publish_tree(
    b: &Broker,
    v: ProtocolVersion,
    ss: usize,
    name: &str,
    clean: bool,
) -> (String, Vec<String>, String, Raw) {
    let root = format!("{name}{}{ss}", v.level());
    let topics = tree(&root);
    let mut publ = b.client(v, &b.id_on(1 - ss, &format!("{root}-pub")), true);
    publish_all(&mut publ, &topics, QoS::AtLeastOnce);
    let id = b.id_on(ss, &format!("{root}-sub"));
    let sub = b.client(v, &id, clean);
    (root, topics, id, sub)
}

#[test]
fn retained_messages_arrive_in_topic_tree_order_from_every_shard() {
    let b = Broker::start(2);
    for v in V3 {
        for ss in 0..2 {
            let (root, topics, _, mut sub) = publish_tree(&b, v, ss, "tree", true);
            // Overlapping filters: every topic once, at the highest granted QoS; the
            // `+/+` level at QoS 1, the rest at QoS 0.
            let codes = sub.subscribe(
                1,
                &[
                    (&format!("{root}/#"), QoS::AtMostOnce),
                    (&format!("{root}/+/+"), QoS::AtLeastOnce),
                ],
            );
            assert_eq!(codes, vec![ReasonCode(0), ReasonCode(1)]);
            let got = receive_in_order(
                &mut sub,
                &topics,
                &format!("{v:?} subscriber on shard {ss}"),
            );
            for p in &got {
                let middle = p.topic.as_str().split('/').count() == 3;
                let want = if middle {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                assert_eq!(
                    (p.qos, p.retain, &p.payload[..]),
                    (want, true, p.topic.as_bytes()),
                    "{p:?}"
                );
            }
            sub.ping();
            // Nothing after the last one: each topic came once.
            sub.expect_nothing();
        }
    }
}

#[test]
fn a_small_session_queue_loses_no_qos1_retained_message() {
    // 330 QoS 1 retained messages to a session with a small window and queue: the stream
    // waits for the subscriber instead of overflowing the queue, whichever of its limits
    // (messages, bytes) is the small one, down to a queue of one message.
    let limits: [(u16, usize, usize); 3] = [(4, 16, 16 << 20), (1, 1, 16 << 20), (4, 1000, 1000)];
    for (inflight, queue, bytes) in limits {
        let mut b = Broker::with(2, |c| {
            c.limits.max_inflight = inflight;
            c.limits.max_queued_messages = queue;
            c.limits.max_queued_bytes = bytes;
        });
        for v in V3 {
            for ss in 0..2 {
                let (root, topics, _, mut sub) = publish_tree(&b, v, ss, "small", true);
                assert_eq!(
                    sub.subscribe(1, &[(&format!("{root}/#"), QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                // A slow reader: nothing read for a while, then everything.
                std::thread::sleep(QUIET);
                let what =
                    format!("{v:?} subscriber on shard {ss}, limits {inflight}/{queue}/{bytes}");
                let got = receive_in_order(&mut sub, &topics, &what);
                assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && p.retain));
            }
        }
        let s = b.handle.take().unwrap().shutdown();
        assert_eq!(
            (s.dropped_queue_full, s.retained_delivery_dropped),
            (0, 0),
            "limits {inflight}/{queue}/{bytes}: {s:?}"
        );
    }
}

#[test]
fn a_retained_stream_goes_on_after_a_takeover_of_its_session() {
    let b = small_queue_broker();
    for v in V3 {
        for ss in 0..2 {
            let (root, topics, id, mut sub) = publish_tree(&b, v, ss, "take", false);
            assert_eq!(
                sub.subscribe(1, &[(&format!("{root}/#"), QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            // Read (and acknowledge) a few, then leave without DISCONNECT.
            let first = receive(&mut sub, 20);
            drop(sub);
            let mut again = b.raw(v);
            let connack = again.connect(&id, false, 60, None);
            // 3.1 has no session present flag.
            assert_eq!(connack.session_present, v == V311, "{v:?} {ss} {connack:?}");
            // The rest arrives: the unacknowledged ones again (DUP), then the stream.
            let mut seen: BTreeSet<String> =
                first.iter().map(|p| p.topic.as_str().to_owned()).collect();
            while seen.len() < topics.len() {
                let p = again.recv_publish();
                ack(&mut again, &p);
                seen.insert(p.topic.as_str().to_owned());
            }
            assert_eq!(seen, topics.iter().cloned().collect::<BTreeSet<_>>());
            again.disconnect();
        }
    }
}

#[test]
fn unsubscribe_stops_a_retained_stream() {
    let b = small_queue_broker();
    for v in V3 {
        for ss in 0..2 {
            let (root, topics, _, mut sub) = publish_tree(&b, v, ss, "unsub", true);
            let filter = format!("{root}/#");
            assert_eq!(
                sub.subscribe(1, &[(&filter, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let mut got = receive(&mut sub, 10).len();
            sub.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(2),
                filters: vec![TopicFilter::new(filter.as_str()).unwrap()],
                properties: Properties::new(),
            }));
            // Until UNSUBACK, deliveries go on (acknowledged); after it, only what was
            // already in the window or the queue may still arrive [MQTT-3.10.4-3].
            loop {
                match sub.recv() {
                    Packet::UnsubAck(a) => {
                        assert_eq!(a.packet_id, pid(2));
                        break;
                    }
                    Packet::Publish(p) => {
                        got += 1;
                        ack(&mut sub, &p);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            let mut after = 0;
            while let Some(p) = sub.recv_within(QUIET) {
                let Packet::Publish(p) = p else {
                    panic!("unexpected {p:?}")
                };
                after += 1;
                ack(&mut sub, &p);
            }
            assert!(
                after <= 4 + 16,
                "{v:?}: {after} retained messages after UNSUBACK"
            );
            assert!(
                got + after < topics.len(),
                "{v:?}: the whole stream arrived: {}",
                got + after
            );
        }
    }
}
