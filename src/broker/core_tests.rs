//! Races of the broker core written out step by step with the [`harness`](super::harness):
//! each would need luck to reproduce over TCP. (Issue 9: bugs 2, 4, 5 and 10.)

use super::harness::*;
use super::{home_shard, ShardMsg};
use crate::protocol::*;

const V3: [ProtocolVersion; 2] = [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1];

/// A topic under `prefix/` whose retained message lives on `owner` of 2 shards.
fn topic_on(owner: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}/{i}"))
        .find(|t| home_shard(t, 2) == owner)
        .expect("some topic hashes there")
}

fn is_interest_add(m: &InFlight) -> bool {
    matches!(m.msg, ShardMsg::InterestAdd { .. })
}

fn is_interest_ack(m: &InFlight) -> bool {
    matches!(m.msg, ShardMsg::InterestAck { .. })
}

#[test]
fn a_late_interest_ack_does_not_deliver_into_the_session_that_reused_the_slot() {
    for v in V3 {
        let mut h = Harness::new(2, |_| {});
        let t = topic_on(1, "late");
        let p = h.retained_on(1, v, &t, b"kept");
        // A subscribes on shard 0; shard 1 answers, and the answer (with the retained
        // message) is still on its way when A's connection ends.
        let a = h.connect(0, v, "a", true);
        h.send(&a, subscribe(1, "late/#", QoS::AtLeastOnce));
        assert!(h.deliver_one(is_interest_add));
        let ack = h.hold(is_interest_ack);
        let slot = a.session.slot();
        h.drop_client(a);
        // B gets A's slot, and subscribes to the same filter (so only the session's
        // identity, not its subscriptions, tells A's answer from B's).
        let mut b = h.connect(0, v, "b", true);
        assert_eq!(b.session.slot(), slot, "the slot is reused");
        h.send(&b, subscribe(5, "late/#", QoS::AtLeastOnce));
        h.deliver_all();
        let got = h.output(&mut b);
        assert!(
            matches!(got.first(), Some(Packet::SubAck(a)) if a.packet_id.get() == 5),
            "{got:?}"
        );
        assert_eq!(publishes(&got), vec![(t.clone(), b"kept".to_vec())]);
        let id = match got.get(1) {
            Some(Packet::Publish(p)) => p.packet_id.expect("QoS 1"),
            other => panic!("{other:?}"),
        };
        // A's answer arrives now: nothing of it reaches B.
        h.deliver_held(ack);
        h.deliver_all();
        let got = h.output(&mut b);
        assert!(
            got.is_empty(),
            "{v:?}: B got A's SUBACK or retained messages: {got:?}"
        );
        // Nothing of A's holds B's window: with its one delivery acknowledged, B's
        // window is empty and a new message goes out at once.
        h.send(&b, Packet::PubAck(Ack::new(id)));
        h.send(&p, publish(&t, b"x", QoS::AtLeastOnce, false, 2));
        h.deliver_all();
        let got = h.output(&mut b);
        assert_eq!(publishes(&got), vec![(t.clone(), b"x".to_vec())], "{got:?}");
    }
}

#[test]
fn a_snapshot_older_than_a_live_retained_message_is_not_delivered_after_it() {
    for v in V3 {
        let mut h = Harness::new(2, |_| {});
        let t = topic_on(1, "stale");
        let p = h.retained_on(1, v, &t, b"v1");
        let mut s = h.connect(0, v, "sub", true);
        h.send(&s, subscribe(1, &t, QoS::AtMostOnce));
        // Shard 1 routes the topic to shard 0 now and answers with its snapshot (v1);
        // the answer is held while v2 is published and reaches shard 0 first (data and
        // control planes are separate channels).
        assert!(h.deliver_one(is_interest_add));
        let ack = h.hold(is_interest_ack);
        h.send(&p, publish(&t, b"v2", QoS::AtLeastOnce, true, 2));
        h.deliver_all();
        h.deliver_held(ack);
        h.deliver_all();
        let got = h.output(&mut s);
        assert_eq!(
            publishes(&got),
            vec![(t.clone(), b"v2".to_vec())],
            "{v:?}: the subscriber must end up holding v2, not v1: {got:?}"
        );
    }
}

#[test]
fn deliveries_an_ack_releases_keep_their_order_while_an_answer_is_deferred() {
    for v in V3 {
        let mut h = Harness::new(2, |c| c.limits.max_inflight = 1);
        let p = h.connect(0, v, "pub", true);
        let mut c = h.connect(0, v, "c", true);
        h.send(&c, subscribe(1, "d", QoS::AtLeastOnce));
        h.deliver_all();
        h.output(&mut c);
        // m1 fills C's window of one; m2 waits in its queue.
        h.send(&p, publish("d", b"m1", QoS::AtLeastOnce, false, 1));
        h.send(&p, publish("d", b"m2", QoS::AtLeastOnce, false, 2));
        let first = h.output(&mut c);
        let id1 = match first.as_slice() {
            [Packet::Publish(m)] => m.packet_id.expect("QoS 1"),
            other => panic!("expected m1 only, got {other:?}"),
        };
        // C publishes a retained message stored on shard 1: its PUBACK waits for shard 1.
        let t = topic_on(1, "deferred");
        h.send(&c, publish(&t, b"r", QoS::AtLeastOnce, true, 7));
        // C acknowledges m1, which lets m2 out; then m3 (QoS 0) is published.
        h.send(&c, Packet::PubAck(Ack::new(id1)));
        h.send(&p, publish("d", b"m3", QoS::AtMostOnce, false, 0));
        let got = h.output(&mut c);
        assert_eq!(
            publishes(&got),
            vec![("d".into(), b"m2".to_vec()), ("d".into(), b"m3".to_vec())],
            "{v:?}: [MQTT-4.6.0-6] order per publisher: {got:?}"
        );
        assert!(
            !got.iter().any(|p| matches!(p, Packet::PubAck(_))),
            "the PUBACK waits for the owner shard: {got:?}"
        );
        h.deliver_all();
        let got = h.output(&mut c);
        assert!(
            matches!(got.as_slice(), [Packet::PubAck(a)] if a.packet_id.get() == 7),
            "{got:?}"
        );
    }
}

#[test]
fn control_messages_travel_on_the_control_plane() {
    // Data congestion holds the data plane only, so nothing a SUBACK, a CONNACK or a
    // retained PUBACK waits for may travel on it.
    for v in V3 {
        let mut h = Harness::new(2, |_| {});
        let t = topic_on(1, "plane");
        // More retained messages on shard 1 than its first batch, so the stream fetches.
        for i in 0..(2 * super::retained_stream::PART_BUDGET) {
            let t = topic_on(1, &format!("plane/{i}"));
            h.retained_on(1, v, &t, b"old");
        }
        h.mesh.clear();
        let p = h.connect(0, v, "pub", true);
        let s = h.connect(0, v, "sub", true);
        h.send(&s, subscribe(1, "plane/#", QoS::AtLeastOnce));
        h.send(&p, publish(&t, b"r", QoS::AtLeastOnce, true, 1));
        let mut seen = Vec::new();
        while let Some(m) = h.mesh.first() {
            seen.push((m.msg.kind(), m.plane));
            let to_data = matches!(m.msg, ShardMsg::Publish(_) | ShardMsg::Retain { .. });
            assert_eq!(
                m.plane == Plane::Data,
                to_data,
                "{} on {:?}",
                m.msg.kind(),
                m.plane
            );
            h.deliver_one(|_| true);
        }
        for kind in [
            "InterestAdd",
            "InterestAck",
            "Retain",
            "RetainStored",
            "RetainedFetch",
            "RetainedBatch",
        ] {
            assert!(
                seen.iter().any(|(k, _)| *k == kind),
                "{kind} not seen in {seen:?}"
            );
        }
    }
}

/// Whether `ptr` points into `range`.
fn inside(range: &std::ops::Range<usize>, ptr: *const u8) -> bool {
    range.contains(&(ptr as usize))
}

/// A PUBLISH carrying 5.0 properties whose strings and binaries are slices of its frame.
fn publish_with_properties(topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) -> Packet {
    let mut p = publish(topic, payload, qos, retain, id);
    if let Packet::Publish(p) = &mut p {
        let props = p.properties.get_mut();
        props.user_properties.push(("k".into(), "v".into()));
        props.correlation_data = Some(bytes::Bytes::from_static(b"corr"));
        props.content_type = Some("text/plain".into());
    }
    p
}

/// Every pointer a kept message holds into memory: payload, and properties' strings and
/// binaries.
fn held_pointers(m: &crate::session::Message) -> Vec<*const u8> {
    let mut v = vec![m.payload.as_ptr()];
    if let Some(c) = &m.properties.correlation_data {
        v.push(c.as_ptr());
    }
    if let Some(c) = &m.properties.content_type {
        v.push(c.as_ptr());
    }
    for (k, val) in &m.properties.user_properties {
        v.push(k.as_ptr());
        v.push(val.as_ptr());
    }
    v
}

#[test]
fn kept_messages_do_not_pin_the_publishers_read_buffer() {
    // Bug 8: a kept message (queued offline, in flight, sent to another shard, retained)
    // is copied out of the publisher's read buffer once, small or large (a slice of a
    // 20 KiB message used to pin a whole read chunk, up to 8 times what was counted), 5.0
    // properties included.
    for v in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let mut h = Harness::new(2, |_| {});
        let off = h.connect(0, v, "off", false);
        h.send(&off, subscribe(1, "pin/#", QoS::AtLeastOnce));
        h.deliver_all();
        h.drop_client(off);
        let on = h.connect(0, v, "on", true);
        h.send(&on, subscribe(1, "pin/#", QoS::AtLeastOnce));
        let remote = h.connect(1, v, "remote", true);
        h.send(&remote, subscribe(1, "pin/#", QoS::AtLeastOnce));
        h.deliver_all();
        let p = h.connect(0, v, "pub", true);
        let big = vec![1u8; 20 * 1024];
        let packets = if v.is_v5() {
            vec![
                publish_with_properties("pin/small", b"s", QoS::AtLeastOnce, true, 1),
                publish_with_properties("pin/big", &big, QoS::AtLeastOnce, false, 2),
            ]
        } else {
            vec![
                publish("pin/small", b"s", QoS::AtLeastOnce, true, 1),
                publish("pin/big", &big, QoS::AtLeastOnce, false, 2),
            ]
        };
        let mut packets = packets;
        packets.push(publish(
            "elsewhere",
            &[0u8; 30_000],
            QoS::AtMostOnce,
            false,
            0,
        ));
        let range = h.send_in_one_read(&p, &packets);
        let sent_on: Vec<_> = h
            .mesh
            .iter()
            .filter_map(|m| match &m.msg {
                ShardMsg::Publish(m) | ShardMsg::Retain { msg: m, .. } => Some(held_pointers(m)),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(!sent_on.is_empty());
        assert!(
            sent_on.iter().all(|&p| !inside(&range, p)),
            "{v:?}: a mesh message pins the read buffer"
        );
        h.deliver_all();
        let mut checked = 0;
        for shard in 0..2 {
            let st = h.shards[shard].state.borrow();
            for client in ["off", "on", "remote"] {
                let Some(e) = st.sessions.find(client).and_then(|id| st.sessions.get(id)) else {
                    continue;
                };
                let held: Vec<_> = e.held_messages().collect();
                assert_eq!(held.len(), 2, "{client} holds both deliveries");
                for m in held {
                    checked += 1;
                    assert!(
                        held_pointers(m).iter().all(|&p| !inside(&range, p)),
                        "{v:?}: {client}'s message of {} bytes pins the read buffer",
                        m.payload.len()
                    );
                }
            }
        }
        assert_eq!(checked, 6, "three sessions, two messages each");
        let owner = &h.shards[home_shard("pin/small", 2)];
        let st = owner.state.borrow();
        let m = st.retained.get("pin/small").expect("stored on its owner");
        assert!(
            held_pointers(m).iter().all(|&p| !inside(&range, p)),
            "retained pins it"
        );
    }
}

#[test]
fn retained_messages_of_a_filter_unsubscribed_before_suback_are_not_sent() {
    // UNSUBSCRIBE of one of two filters while the SUBSCRIBE waits for the other shard:
    // the other filter's retained messages still come, the unsubscribed one's do not
    // [MQTT-3.10.4-2] (the other shard's first batches stay matched to their filters).
    for v in V3 {
        let mut h = Harness::new(2, |_| {});
        let a = topic_on(1, "ua");
        let b = topic_on(1, "ub");
        h.retained_on(1, v, &a, b"a");
        h.retained_on(1, v, &b, b"b");
        let mut c = h.connect(0, v, "c", true);
        h.send(
            &c,
            Packet::Subscribe(Subscribe {
                packet_id: PacketId::new(1).unwrap(),
                subscriptions: ["ua/#", "ub/#"]
                    .iter()
                    .map(|f| Subscription {
                        filter: TopicFilter::new(*f).unwrap(),
                        options: SubscriptionOptions::new(QoS::AtLeastOnce),
                    })
                    .collect(),
                properties: Properties::new(),
            }),
        );
        h.send(&c, unsubscribe(2, "ua/#"));
        let got = h.drain(&mut c);
        assert!(
            matches!(got.as_slice(), [Packet::SubAck(_), Packet::UnsubAck(_), ..]),
            "{got:?}"
        );
        assert_eq!(
            publishes(&got),
            vec![(b.clone(), b"b".to_vec())],
            "{v:?}: only the filter still held"
        );
    }
}

#[test]
fn retained_messages_follow_their_suback_when_an_earlier_ack_is_deferred() {
    for v in V3 {
        let mut h = Harness::new(2, |_| {});
        let t = topic_on(1, "rs");
        h.retained_on(1, v, &t, b"kept");
        let mut c = h.connect(0, v, "c", true);
        // C's retained PUBLISH is stored on shard 1: its PUBACK waits in the gate.
        let own = topic_on(1, "own");
        h.send(&c, publish(&own, b"x", QoS::AtLeastOnce, true, 7));
        // C subscribes; shard 1 answers with its snapshot before storing C's message.
        h.send(&c, subscribe(2, "rs/#", QoS::AtLeastOnce));
        assert!(h.deliver_one(is_interest_add));
        assert!(h.deliver_one(is_interest_ack));
        let got = h.output(&mut c);
        assert!(
            got.is_empty(),
            "{v:?}: nothing may precede the PUBACK, and no retained message its SUBACK: {got:?}"
        );
        h.deliver_all();
        let got = h.output(&mut c);
        assert!(
            matches!(
                got.as_slice(),
                [Packet::PubAck(a), Packet::SubAck(s), Packet::Publish(m)]
                    if a.packet_id.get() == 7 && s.packet_id.get() == 2 && m.topic.as_str() == t
            ),
            "{v:?}: PUBACK, SUBACK, then the retained message: {got:?}"
        );
    }
}

#[test]
fn a_filter_subscribed_again_during_its_retained_stream_starts_anew() {
    for v in V3 {
        // A small write buffer pauses the stream after a few messages.
        let mut h = Harness::new(2, |c| c.limits.max_write_buffer = 256);
        let topics: Vec<String> = (0..100).map(|i| format!("j/{i:03}")).collect();
        for t in &topics {
            h.store(t, b"v", QoS::AtLeastOnce);
        }
        let mut c = h.connect(0, v, "c", true);
        h.send(&c, subscribe(1, "j/#", QoS::AtMostOnce));
        h.deliver_all();
        let first = publishes(&h.output(&mut c));
        assert!(
            !first.is_empty() && first.len() < 100,
            "paused part way: {}",
            first.len()
        );
        // UNSUBSCRIBE and SUBSCRIBE again at QoS 1, before the rest went out.
        h.send(&c, unsubscribe(2, "j/#"));
        h.send(&c, subscribe(3, "j/#", QoS::AtLeastOnce));
        let got = h.drain(&mut c);
        let qos: Vec<QoS> = got
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(p.qos),
                _ => None,
            })
            .collect();
        assert!(
            qos.iter().all(|q| *q == QoS::AtLeastOnce),
            "{v:?}: the old job went on at QoS 0: {qos:?}"
        );
        let mut again: Vec<String> = publishes(&got).into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            again, topics,
            "{v:?}: the new job sends every topic once, in order"
        );
        again.dedup();
        assert_eq!(again.len(), 100);
    }
}

#[test]
fn a_sparse_local_retained_walk_goes_on_in_later_turns() {
    // A filter that matches one topic among 10,000 walks this shard's store in steps of
    // FETCH_BUDGET nodes, one per turn, instead of in one go.
    let mut h = Harness::new(1, |_| {});
    for i in 0..10_000 {
        let t = if i == 9_999 {
            format!("w{i:05}/x/z")
        } else {
            format!("w{i:05}/x")
        };
        h.store(&t, b"v", QoS::AtMostOnce);
    }
    let mut c = h.connect(0, ProtocolVersion::V3_1_1, "c", true);
    h.send(&c, subscribe(1, "+/+/z", QoS::AtMostOnce));
    let got = h.output(&mut c);
    assert!(
        matches!(got.as_slice(), [Packet::SubAck(_)]),
        "the walk stopped at its budget: {got:?}"
    );
    let mut steps = 0;
    while publishes(&h.output(&mut c)).is_empty() {
        assert!(h.run_later(), "the walk goes on");
        steps += 1;
        assert!(steps < 100);
    }
    assert!(steps >= 2, "several turns: {steps}");
    assert!(!h.run_later(), "nothing left once finished");
}

#[test]
fn a_retained_stream_is_not_held_by_answers_deferred_after_its_suback() {
    // The stream waits for its own SUBACK to leave the gate, not for the gate to be
    // empty: a client that keeps publishing retained messages stored on other shards
    // always has an ack deferred, and must still get its retained messages.
    for v in V3 {
        let mut h = Harness::new(2, |c| c.limits.max_write_buffer = 256);
        let topics: Vec<String> = (0..)
            .map(|i| format!("k/{i:03}"))
            .filter(|t| home_shard(t, 2) == 0)
            .take(50)
            .collect();
        for t in &topics {
            h.store(t, b"v", QoS::AtMostOnce);
        }
        let mut c = h.connect(0, v, "c", true);
        h.send(&c, subscribe(1, "k/#", QoS::AtMostOnce));
        h.deliver_all();
        let mut got = publishes(&h.output(&mut c));
        assert!(got.len() < 50, "paused by the small write buffer");
        // An ack deferred behind the SUBACK, never released during the test.
        h.send(
            &c,
            publish(&topic_on(1, "own"), b"x", QoS::AtLeastOnce, true, 9),
        );
        for _ in 0..100 {
            h.shards[0].resume_retained(Some(c.session));
            let more = publishes(&h.output(&mut c));
            if more.is_empty() {
                break;
            }
            got.extend(more);
        }
        let got: Vec<String> = got.into_iter().map(|(t, _)| t).collect();
        assert_eq!(got, topics, "{v:?}");
    }
}
