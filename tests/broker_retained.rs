//! Retained messages (MQTT 3.1 and 3.1.1 §3.3.1.3, §3.8.4): stored on the topic's owner
//! shard (`home_shard(topic)`), sent after the SUBACK with RETAIN 1 at the lower of the
//! stored and the granted QoS, replaced, deleted by an empty payload, gathered from every
//! shard for wildcard filters, re-sent on re-subscribe, and not stored when
//! `retain_available` is false. Every test runs for both 3.x versions, with the publisher,
//! the subscriber and the topic's owner on the same and on different shards.

mod common;

use std::collections::BTreeMap;

use common::*;
use surgemq::protocol::*;
use surgemq::server::home_shard;

/// (subscriber shard, publisher shard): across shards both ways, and on one shard.
const PLACEMENTS: [(usize, usize); 4] = [(0, 1), (1, 0), (0, 0), (1, 1)];
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn q(n: u8) -> QoS {
    QoS::from_u8(n).unwrap()
}

/// A topic starting with `prefix/` whose retained message lives on `owner`.
fn topic_on(b: &Broker, owner: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}/{i}"))
        .find(|t| home_shard(t, b.shards) == owner)
        .unwrap()
}

/// Receives one PUBLISH (acknowledging it) and checks topic, payload, QoS, RETAIN, DUP 0
/// and that a packet id is present exactly when QoS > 0.
fn expect_msg(c: &mut Raw, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Publish {
    let p = c.recv_publish();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain, p.dup),
        (topic, payload, qos, retain, false),
        "unexpected delivery {p:?}"
    );
    assert_eq!(p.packet_id.is_some(), qos != QoS::AtMostOnce, "{p:?}");
    p
}

/// Receives `n` PUBLISH packets (acknowledging them): topic -> (payload, QoS, RETAIN).
/// Panics on a topic received twice.
fn collect(c: &mut Raw, n: usize) -> BTreeMap<String, (Vec<u8>, QoS, bool)> {
    let mut got = BTreeMap::new();
    for _ in 0..n {
        let p = c.recv_publish();
        assert!(!p.dup, "{p:?}");
        let prev = got.insert(
            p.topic.as_str().to_owned(),
            (p.payload.to_vec(), p.qos, p.retain),
        );
        assert!(prev.is_none(), "{} delivered twice", p.topic);
    }
    got
}

/// Sends PINGREQ and returns the PUBLISH packets that arrive before the PINGRESP
/// (acknowledging them). Retained messages up to a first batch per shard (64 per
/// SUBSCRIBE, see `broker::retained_stream`) are written together with their SUBACK, so
/// after a SUBACK this is every retained message the SUBSCRIBE produced here, without
/// waiting for a quiet period.
fn drain(c: &mut Raw) -> Vec<Publish> {
    c.send(&Packet::PingReq);
    let mut got = Vec::new();
    loop {
        match c.recv() {
            Packet::PingResp => return got,
            Packet::Publish(p) => {
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => c.send(&Packet::PubAck(Ack::new(id))),
                    (QoS::ExactlyOnce, Some(id)) => c.send(&Packet::PubRec(Ack::new(id))),
                    _ => {}
                }
                got.push(p);
            }
            other => panic!("expected PUBLISH or PINGRESP, got {other:?}"),
        }
    }
}

/// Asserts nothing more came with the SUBACK (see [`drain`]).
fn no_more(c: &mut Raw) {
    let got = drain(c);
    assert!(got.is_empty(), "unexpected {got:?}");
}

// ---------------------------------------------------------------------------------------
// Basic store and delivery
// ---------------------------------------------------------------------------------------

#[test]
fn retained_is_sent_after_suback_with_retain_1() {
    // [MQTT-3.3.1-5] stored; [MQTT-3.3.1-6] sent to a new matching subscription;
    // [MQTT-3.3.1-8] with RETAIN 1; [MQTT-3.8.4-3]/§3.8.4: the SUBACK comes first (this
    // broker sends retained messages only after the SUBACK).
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for owner in 0..2 {
                let pre = format!("ret{}{n}{owner}", v.level());
                let t = topic_on(&b, owner, &pre);
                let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
                publ.publish_acked(&t, b"kept", QoS::AtLeastOnce, true, 1);
                for (i, filter) in [t.clone(), format!("{pre}/+"), format!("{pre}/#")]
                    .iter()
                    .enumerate()
                {
                    let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub{i}")), true);
                    // `subscribe` panics unless the SUBACK is the first packet.
                    assert_eq!(
                        sub.subscribe(7, &[(filter, QoS::AtLeastOnce)]),
                        vec![ReasonCode(1)]
                    );
                    expect_msg(&mut sub, &t, b"kept", QoS::AtLeastOnce, true);
                    no_more(&mut sub);
                }
            }
        }
    }
}

#[test]
fn retained_message_is_replaced() {
    // [MQTT-3.3.1-5]: a new retained message replaces the stored one for the topic, also
    // when it comes from another client on another shard, and its QoS replaces the old QoS.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for owner in 0..2 {
                let pre = format!("rep{}{n}{owner}", v.level());
                let t = topic_on(&b, owner, &pre);
                let mut p1 = b.client(v, &b.id_on(*ps, &format!("{pre}-p1")), true);
                let mut p2 = b.client(v, &b.id_on(1 - *ps, &format!("{pre}-p2")), true);
                p1.publish_acked(&t, b"v1", QoS::ExactlyOnce, true, 1);
                p1.publish_acked(&t, b"v2", QoS::AtLeastOnce, true, 2);
                let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-s1")), true);
                assert_eq!(
                    sub.subscribe(1, &[(&t, QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                expect_msg(&mut sub, &t, b"v2", QoS::AtLeastOnce, true);
                no_more(&mut sub);

                // Replaced from the other shard, at QoS 2.
                p2.publish_acked(&t, b"v3", QoS::ExactlyOnce, true, 1);
                // The existing subscriber gets it as a normal message [MQTT-3.3.1-9].
                expect_msg(&mut sub, &t, b"v3", QoS::ExactlyOnce, false);
                let mut sub2 = b.client(v, &b.id_on(*ss, &format!("{pre}-s2")), true);
                assert_eq!(
                    sub2.subscribe(1, &[(&format!("{pre}/#"), QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                expect_msg(&mut sub2, &t, b"v3", QoS::ExactlyOnce, true);
                no_more(&mut sub2);
            }
        }
    }
}

#[test]
fn empty_retained_payload_deletes_the_retained_message() {
    // [MQTT-3.3.1-10]: a retained PUBLISH with an empty payload is delivered normally to
    // current subscribers; [MQTT-3.3.1-11]: it is not stored, and it removes the retained
    // message of the topic, so a later subscriber gets nothing.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for owner in 0..2 {
                for del_qos in QOS {
                    let pre = format!("del{}{n}{owner}{}", v.level(), del_qos as u8);
                    let t = topic_on(&b, owner, &pre);
                    let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
                    publ.publish_acked(&t, b"doomed", QoS::AtLeastOnce, true, 1);
                    let mut live = b.client(v, &b.id_on(*ss, &format!("{pre}-live")), true);
                    assert_eq!(
                        live.subscribe(1, &[(&t, QoS::ExactlyOnce)]),
                        vec![ReasonCode(2)]
                    );
                    expect_msg(&mut live, &t, b"doomed", QoS::AtLeastOnce, true);

                    publ.publish_acked(&t, b"", del_qos, true, 2);
                    expect_msg(&mut live, &t, b"", del_qos, false);

                    let mut late = b.client(v, &b.id_on(*ss, &format!("{pre}-late")), true);
                    assert_eq!(
                        late.subscribe(
                            1,
                            &[
                                (&t, QoS::ExactlyOnce),
                                (&format!("{pre}/#"), QoS::AtMostOnce)
                            ]
                        ),
                        vec![ReasonCode(2), ReasonCode(0)]
                    );
                    no_more(&mut late);
                    // Nothing else reached the live subscriber: the next message it gets
                    // is a plain one published now.
                    publ.publish_acked(&t, b"next", QoS::AtLeastOnce, false, 3);
                    expect_msg(&mut live, &t, b"next", QoS::AtLeastOnce, false);
                    expect_msg(&mut late, &t, b"next", QoS::AtLeastOnce, false);
                }
            }
        }
    }
}

#[test]
fn deleting_a_topic_without_retained_message_is_harmless() {
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("delnone{}{n}", v.level());
            let t = format!("{pre}/t");
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let mut live = b.client(v, &b.id_on(*ss, &format!("{pre}-live")), true);
            assert_eq!(
                live.subscribe(1, &[(&t, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            publ.publish_acked(&t, b"", QoS::AtLeastOnce, true, 1);
            expect_msg(&mut live, &t, b"", QoS::AtLeastOnce, false);
            let mut late = b.client(v, &b.id_on(*ss, &format!("{pre}-late")), true);
            assert_eq!(
                late.subscribe(1, &[(&t, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            no_more(&mut late);
        }
    }
}

// ---------------------------------------------------------------------------------------
// QoS
// ---------------------------------------------------------------------------------------

#[test]
fn retained_qos_is_min_of_stored_and_granted() {
    // §3.8.4: a retained message is sent at the lower of its stored QoS and the granted
    // QoS; all nine combinations, topics owned by both shards.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("rq{}{n}", v.level());
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let mut stored = BTreeMap::new();
            for owner in 0..2 {
                for p in QOS {
                    let t = topic_on(&b, owner, &format!("{pre}/o{owner}q{}", p as u8));
                    publ.publish_acked(&t, format!("q{}", p as u8).as_bytes(), p, true, 1);
                    stored.insert(t, p);
                }
            }
            for g in QOS {
                let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub{}", g as u8)), true);
                assert_eq!(
                    sub.subscribe(1, &[(&format!("{pre}/#"), g)]),
                    vec![ReasonCode(g as u8)]
                );
                let got = collect(&mut sub, stored.len());
                let want: BTreeMap<String, (Vec<u8>, QoS, bool)> = stored
                    .iter()
                    .map(|(t, p)| {
                        (
                            t.clone(),
                            (format!("q{}", *p as u8).into_bytes(), (*p).min(g), true),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{v:?} granted {g:?}");
                no_more(&mut sub);
            }
        }
    }
}

#[test]
fn retained_published_with_qos0_and_qos1() {
    // A retained message published at QoS 0 (no ack: a PINGREQ round trip orders it) and
    // at QoS 1 is stored with that QoS and sent at it to a QoS 2 subscription.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for owner in 0..2 {
                let pre = format!("rq01{}{n}{owner}", v.level());
                let t0 = topic_on(&b, owner, &format!("{pre}/zero"));
                let t1 = topic_on(&b, owner, &format!("{pre}/one"));
                let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
                publ.publish(&t0, b"q0", QoS::AtMostOnce, true, None);
                publ.ping();
                publ.publish_acked(&t1, b"q1", QoS::AtLeastOnce, true, 1);
                let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
                assert_eq!(
                    sub.subscribe(1, &[(&t0, QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                expect_msg(&mut sub, &t0, b"q0", QoS::AtMostOnce, true);
                assert_eq!(
                    sub.subscribe(2, &[(&t1, QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                expect_msg(&mut sub, &t1, b"q1", QoS::AtLeastOnce, true);
                no_more(&mut sub);
            }
        }
    }
}

#[test]
fn retained_with_overlapping_filters_in_one_subscribe_is_sent_once() {
    // One SUBSCRIBE with two filters matching the retained topic: the retained message is
    // sent once, at the highest granted QoS (capped by its stored QoS).
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for owner in 0..2 {
                let pre = format!("rov{}{n}{owner}", v.level());
                let t = topic_on(&b, owner, &pre);
                let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
                publ.publish_acked(&t, b"once", QoS::ExactlyOnce, true, 1);
                let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
                assert_eq!(
                    sub.subscribe(
                        1,
                        &[
                            (&format!("{pre}/#"), QoS::AtMostOnce),
                            (&t, QoS::AtLeastOnce)
                        ]
                    ),
                    vec![ReasonCode(0), ReasonCode(1)]
                );
                expect_msg(&mut sub, &t, b"once", QoS::AtLeastOnce, true);
                no_more(&mut sub);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shards
// ---------------------------------------------------------------------------------------

#[test]
fn wildcard_subscription_gets_retained_from_every_shard() {
    // Retained topics owned by both shards (ten each): a wildcard subscription from either
    // shard gets all of them, each once, with RETAIN 1, after the SUBACK.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("every{}{n}", v.level());
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let mut want = BTreeMap::new();
            let mut owners = [0; 2];
            for i in 0..40 {
                let t = format!("{pre}/a/{i}");
                let owner = home_shard(&t, b.shards);
                if owners[owner] == 10 {
                    continue;
                }
                owners[owner] += 1;
                publ.publish_acked(&t, t.as_bytes(), QoS::AtLeastOnce, true, 1 + i);
                want.insert(t.clone(), (t.into_bytes(), QoS::AtLeastOnce, true));
            }
            assert_eq!(owners, [10, 10], "topics spread over both shards");
            for (i, filter) in [
                format!("{pre}/#"),
                format!("{pre}/a/+"),
                format!("{pre}/+/#"),
            ]
            .iter()
            .enumerate()
            {
                let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub{i}")), true);
                assert_eq!(
                    sub.subscribe(1, &[(filter, QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                assert_eq!(collect(&mut sub, want.len()), want, "{v:?} {filter}");
                no_more(&mut sub);
            }
        }
    }
}

#[test]
fn retained_stored_before_puback_is_seen_by_a_following_subscribe() {
    // The publisher has its PUBACK (the server accepted and, per [MQTT-3.3.1-5], stored
    // the retained message) before the subscriber sends SUBSCRIBE: the subscriber is a
    // "future subscriber" and must get the message, whichever shards the publisher, the
    // subscriber and the topic's owner are on. Fifty fresh topics per combination.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("race{}{n}", v.level());
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            for i in 0..50u16 {
                let owner = usize::from(i % 2);
                let t = topic_on(&b, owner, &format!("{pre}/{i}"));
                publ.publish_acked(&t, b"now", QoS::AtLeastOnce, true, 1 + i);
                assert_eq!(
                    sub.subscribe(1 + i, &[(&t, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                let got = drain(&mut sub);
                match &got[..] {
                    [p] => assert_eq!(
                        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
                        (t.as_str(), &b"now"[..], QoS::AtLeastOnce, true)
                    ),
                    _ => panic!(
                        "{v:?} sub shard {ss} pub shard {ps} owner {owner} round {i}: \
                         retained message acknowledged before SUBSCRIBE: got {got:?}"
                    ),
                }
            }
            no_more(&mut sub);
        }
    }
}

/// v1 is published with RETAIN (PUBACK received), then v2 (or, with `delete`, an empty
/// payload)
/// by another client on the other shard (PUBACK received), then a client subscribes to the
/// topic: it must get v2 (nothing after a delete), never v1. With `barrier`, the
/// subscription waits until every shard has processed what the others sent it before
/// (each of two clients, one per shard, subscribes to a fresh filter: its SUBACK comes
/// after every other shard answered, in channel order), so only the final stored state is
/// checked; without it, the subscription follows the second PUBACK at once.
fn replace_from_other_shard(barrier: bool, delete: bool) {
    let b = Broker::start(2);
    for v in V3 {
        for first in 0..2 {
            let pre = format!(
                "newer{}{first}{}{}",
                v.level(),
                u8::from(barrier),
                u8::from(delete)
            );
            let mut p1 = b.client(v, &b.id_on(first, &format!("{pre}-p1")), true);
            let mut p2 = b.client(v, &b.id_on(1 - first, &format!("{pre}-p2")), true);
            let mut bar: Vec<Raw> = (0..2)
                .map(|s| b.client(v, &b.id_on(s, &format!("{pre}-bar{s}")), true))
                .collect();
            for ss in 0..2 {
                let mut sub = b.client(v, &b.id_on(ss, &format!("{pre}-sub{ss}")), true);
                for i in 0..50u16 {
                    let owner = usize::from(i % 2);
                    let t = topic_on(&b, owner, &format!("{pre}/{ss}/{i}"));
                    p1.publish_acked(&t, b"v1", QoS::AtLeastOnce, true, 1 + i);
                    let v2: &[u8] = if delete { b"" } else { b"v2" };
                    p2.publish_acked(&t, v2, QoS::AtLeastOnce, true, 1 + i);
                    if barrier {
                        for c in bar.iter_mut() {
                            let f = format!("{pre}/barrier/{ss}/{i}");
                            assert_eq!(
                                c.subscribe(1 + i, &[(&f, QoS::AtMostOnce)]),
                                vec![ReasonCode(0)]
                            );
                        }
                    }
                    assert_eq!(
                        sub.subscribe(1 + i, &[(&t, QoS::AtLeastOnce)]),
                        vec![ReasonCode(1)]
                    );
                    let got = drain(&mut sub);
                    let ok = match &got[..] {
                        [] => v2.is_empty(),
                        [p] => !v2.is_empty() && &p.payload[..] == b"v2" && p.retain,
                        _ => false,
                    };
                    assert!(
                        ok,
                        "{v:?} v1 from shard {first}, v2 from shard {}, subscriber shard {ss}, \
                         topic owner {owner}, round {i}: after v1 then {:?} (both acknowledged), \
                         SUBSCRIBE got {got:?}",
                        1 - first,
                        String::from_utf8_lossy(v2)
                    );
                }
            }
        }
    }
}

#[test]
fn retained_replacement_from_another_shard_is_seen_at_once() {
    replace_from_other_shard(false, false);
}

#[test]
fn retained_replacement_from_another_shard_is_the_final_state() {
    replace_from_other_shard(true, false);
}

#[test]
fn retained_delete_from_another_shard_is_seen_at_once() {
    replace_from_other_shard(false, true);
}

#[test]
fn retained_delete_from_another_shard_is_the_final_state() {
    replace_from_other_shard(true, true);
}

// ---------------------------------------------------------------------------------------
// Re-subscribe, `$` topics, retain_available
// ---------------------------------------------------------------------------------------

#[test]
fn resubscribe_resends_retained_messages() {
    // [MQTT-3.8.4-3]: a SUBSCRIBE replacing an existing subscription re-sends the matching
    // retained messages (with RETAIN 1, at the new granted QoS).
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("resend{}{n}", v.level());
            let t0 = topic_on(&b, 0, &pre);
            let t1 = topic_on(&b, 1, &pre);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            publ.publish_acked(&t0, b"zero", QoS::ExactlyOnce, true, 1);
            publ.publish_acked(&t1, b"one", QoS::ExactlyOnce, true, 2);
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let f = format!("{pre}/+");
            for (round, g) in [2u8, 2, 0, 1].into_iter().enumerate() {
                assert_eq!(
                    sub.subscribe(1 + round as u16, &[(&f, q(g))]),
                    vec![ReasonCode(g)]
                );
                let got = collect(&mut sub, 2);
                assert_eq!(
                    got.get(&t0),
                    Some(&(b"zero".to_vec(), q(g), true)),
                    "round {round}"
                );
                assert_eq!(
                    got.get(&t1),
                    Some(&(b"one".to_vec(), q(g), true)),
                    "round {round}"
                );
            }
            no_more(&mut sub);
        }
    }
}

#[test]
fn retained_dollar_topic_is_not_sent_to_leading_wildcards() {
    // [MQTT-4.7.2-1] also for retained messages: "#" and "+/..." do not get a retained
    // "$..." message; "$dev/#" does. (Not `$SYS`: the broker's own, which clients may
    // not publish to.)
    for v in V3 {
        for (ss, ps) in PLACEMENTS {
            let b = Broker::start(2);
            let pre = format!("dr{}{ss}{ps}", v.level());
            let mut publ = b.client(v, &b.id_on(ps, &format!("{pre}-pub")), true);
            let mut topics = Vec::new();
            for owner in 0..2 {
                let t = topic_on(&b, owner, "$dev/x");
                publ.publish_acked(&t, b"sys", QoS::AtLeastOnce, true, 1);
                topics.push(t);
            }
            for (i, filter) in ["#", "+/x/#", "+/+/+", "+/#"].iter().enumerate() {
                let mut sub = b.client(v, &b.id_on(ss, &format!("{pre}-w{i}")), true);
                assert_eq!(
                    sub.subscribe(1, &[(filter, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                no_more(&mut sub);
            }
            let mut sub = b.client(v, &b.id_on(ss, &format!("{pre}-sys")), true);
            assert_eq!(
                sub.subscribe(1, &[("$dev/#", QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let got = collect(&mut sub, 2);
            for t in &topics {
                assert_eq!(got.get(t), Some(&(b"sys".to_vec(), QoS::AtLeastOnce, true)));
            }
            no_more(&mut sub);
        }
    }
}

#[test]
fn retain_unavailable_delivers_normally_and_stores_nothing() {
    // retain_available = false: from 3.x clients the RETAIN flag is ignored; the message
    // is delivered as a normal one (RETAIN 0) and not stored.
    let b = Broker::with(2, |c| c.retain_available = false);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for owner in 0..2 {
                let pre = format!("noret{}{n}{owner}", v.level());
                let t = topic_on(&b, owner, &pre);
                let mut live = b.client(v, &b.id_on(*ss, &format!("{pre}-live")), true);
                assert_eq!(
                    live.subscribe(1, &[(&t, QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
                for (i, p) in QOS.iter().enumerate() {
                    publ.publish_acked(&t, format!("m{i}").as_bytes(), *p, true, 1 + i as u16);
                    expect_msg(&mut live, &t, format!("m{i}").as_bytes(), *p, false);
                }
                let mut late = b.client(v, &b.id_on(*ss, &format!("{pre}-late")), true);
                assert_eq!(
                    late.subscribe(
                        1,
                        &[
                            (&t, QoS::ExactlyOnce),
                            (&format!("{pre}/#"), QoS::ExactlyOnce)
                        ]
                    ),
                    vec![ReasonCode(2), ReasonCode(2)]
                );
                no_more(&mut late);
                // Nothing else reached the live subscriber: the next message it gets is a
                // plain one published now (and the late one gets it once).
                publ.publish_acked(&t, b"next", QoS::AtLeastOnce, false, 9);
                expect_msg(&mut live, &t, b"next", QoS::AtLeastOnce, false);
                expect_msg(&mut late, &t, b"next", QoS::AtLeastOnce, false);
                no_more(&mut late);
            }
        }
    }
}
