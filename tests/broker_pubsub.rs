//! SUBSCRIBE / SUBACK, PUBLISH routing and UNSUBSCRIBE (MQTT 3.1 and 3.1.1 sections 3.3,
//! 3.8 - 3.11, 4.6, 4.7): granted and delivered QoS, overlapping subscriptions, wildcard
//! matching and `$` topics, the RETAIN flag on forwarding, ordering, fan-out and fan-in.
//! Every test runs for both 3.x versions, and, where two clients are involved, with them
//! on different shards and on the same shard.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use surgemq::protocol::*;

/// (subscriber shard, publisher shard): across shards both ways, and on one shard.
const PLACEMENTS: [(usize, usize); 4] = [(0, 1), (1, 0), (0, 0), (1, 1)];
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn q(n: u8) -> QoS {
    QoS::from_u8(n).unwrap()
}

/// Receives one PUBLISH (acknowledging it) and checks it exactly: topic, payload, QoS,
/// RETAIN 0, DUP 0, and a packet id exactly when QoS > 0.
fn expect_msg(c: &mut Raw, topic: &str, payload: &[u8], qos: QoS) -> Publish {
    let p = c.recv_publish();
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain, p.dup),
        (topic, payload, qos, false, false),
        "unexpected delivery {p:?}"
    );
    assert_eq!(p.packet_id.is_some(), qos != QoS::AtMostOnce, "{p:?}");
    p
}

fn unsubscribe(c: &mut Raw, id: u16, filters: &[&str]) {
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|f| TopicFilter::new(*f).unwrap())
            .collect(),
        properties: Properties::new(),
    }));
    assert_eq!(
        c.recv(),
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(id),
            codes: vec![],
            properties: Properties::new(),
        })
    );
}

// ---------------------------------------------------------------------------------------
// SUBACK
// ---------------------------------------------------------------------------------------

#[test]
fn suback_grants_the_requested_qos() {
    // [MQTT-3.8.4-1], [MQTT-3.8.4-2] (same packet id), [MQTT-3.9.3-1] (one code per filter,
    // in order); this broker supports QoS 2, so it grants what is asked.
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("grant{}", v.level()));
            let mut c = b.client(v, &id, true);
            // One filter per SUBSCRIBE.
            for (i, qos) in QOS.iter().enumerate() {
                assert_eq!(
                    c.subscribe(10 + i as u16, &[(&format!("g/one/{i}"), *qos)]),
                    vec![ReasonCode(*qos as u8)]
                );
            }
            // Three filters in one SUBSCRIBE, raw bytes: 90 05 <id> 02 00 01.
            c.send(&Packet::Subscribe(Subscribe {
                packet_id: pid(0x1234),
                subscriptions: [
                    (QoS::ExactlyOnce, "g/a"),
                    (QoS::AtMostOnce, "g/b"),
                    (QoS::AtLeastOnce, "g/+"),
                ]
                .iter()
                .map(|(qos, f)| Subscription {
                    filter: TopicFilter::new(*f).unwrap(),
                    options: SubscriptionOptions::new(*qos),
                })
                .collect(),
                properties: Properties::new(),
            }));
            assert_eq!(
                c.read_bytes(7),
                [0x90, 0x05, 0x12, 0x34, 0x02, 0x00, 0x01],
                "{v:?} shard {shard}"
            );
            c.expect_nothing();
        }
    }
}

/// Sends SUBSCRIBE for one filter and reads until its SUBACK, acknowledging the PUBLISH
/// packets that arrive first (§3.8.4: "The Server is permitted to start sending PUBLISH
/// packets matching the Subscription before the Server sends the SUBACK"). Each of those
/// must be for `topic` at the granted QoS. Returns the SUBACK codes and how many came first.
fn subscribe_during_traffic(
    s: &mut Raw,
    id: u16,
    topic: &str,
    qos: QoS,
) -> (Vec<ReasonCode>, usize) {
    s.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(topic).unwrap(),
            options: SubscriptionOptions::new(qos),
        }],
        properties: Properties::new(),
    }));
    let mut early = 0;
    loop {
        match s.recv() {
            Packet::SubAck(a) => {
                assert_eq!(a.packet_id, pid(id));
                return (a.codes, early);
            }
            Packet::Publish(p) => {
                assert_eq!(
                    (p.topic.as_str(), p.qos, p.retain),
                    (topic, qos, false),
                    "{p:?}"
                );
                if let Some(mid) = p.packet_id {
                    s.send(&Packet::PubAck(Ack::new(mid)));
                }
                early += 1;
            }
            other => panic!("expected SUBACK or PUBLISH, got {other:?}"),
        }
    }
}

fn suback_during_traffic(sub_shard: usize, pub_shard: usize) -> usize {
    // A publisher keeps publishing (QoS 1, round robin over 20 topics) while clients
    // subscribe, each to a topic not subscribed before: every SUBSCRIBE gets its SUBACK
    // with the granted QoS, and the messages flow after it.
    let b = Broker::start(2);
    let mut early_total = 0;
    for v in V3 {
        let topics: Vec<String> = (0..20)
            .map(|r| format!("flood{}{sub_shard}{pub_shard}/t{r}", v.level()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut publ = b.client(
            v,
            &b.id_on(pub_shard, &format!("flood-pub{}", v.level())),
            true,
        );
        let publisher = {
            let stop = stop.clone();
            let topics = topics.clone();
            std::thread::spawn(move || {
                let mut i = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    i = i % 60_000 + 1;
                    let t = &topics[usize::from(i) % topics.len()];
                    publ.publish_acked(t, b"flood", QoS::AtLeastOnce, false, i);
                }
            })
        };
        for (round, topic) in topics.iter().enumerate() {
            let id = b.id_on(sub_shard, &format!("flood-sub{}-{round}", v.level()));
            let mut s = b.client(v, &id, true);
            let (codes, early) = subscribe_during_traffic(&mut s, 1, topic, QoS::AtLeastOnce);
            assert_eq!(codes, vec![ReasonCode(1)]);
            early_total += early;
            expect_msg(&mut s, topic, b"flood", QoS::AtLeastOnce);
        }
        stop.store(true, Ordering::Relaxed);
        publisher.join().unwrap();
    }
    early_total
}

#[test]
fn suback_arrives_during_traffic_across_shards() {
    let early = suback_during_traffic(0, 1) + suback_during_traffic(1, 0);
    eprintln!("PUBLISH before SUBACK (across shards): {early}");
}

#[test]
fn suback_arrives_during_traffic_on_one_shard() {
    let early = suback_during_traffic(0, 0) + suback_during_traffic(1, 1);
    eprintln!("PUBLISH before SUBACK (one shard): {early}");
}

// ---------------------------------------------------------------------------------------
// QoS
// ---------------------------------------------------------------------------------------

#[test]
fn delivered_qos_is_min_of_published_and_granted() {
    // [MQTT-3.8.4-6] / §3.8.4: the delivered QoS is the minimum of the published QoS and
    // the granted QoS; all nine combinations.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("min{}{n}", v.level());
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let filters: Vec<(String, QoS)> = QOS
                .iter()
                .map(|g| (format!("{pre}/{}", *g as u8), *g))
                .collect();
            let refs: Vec<(&str, QoS)> = filters.iter().map(|(f, g)| (f.as_str(), *g)).collect();
            assert_eq!(
                sub.subscribe(1, &refs),
                vec![ReasonCode(0), ReasonCode(1), ReasonCode(2)]
            );
            let mut id = 0;
            for g in QOS {
                for p in QOS {
                    id += 1;
                    let payload = format!("g{}p{}", g as u8, p as u8);
                    publ.publish_acked(
                        &format!("{pre}/{}", g as u8),
                        payload.as_bytes(),
                        p,
                        false,
                        id,
                    );
                }
            }
            for g in QOS {
                for p in QOS {
                    let payload = format!("g{}p{}", g as u8, p as u8);
                    expect_msg(
                        &mut sub,
                        &format!("{pre}/{}", g as u8),
                        payload.as_bytes(),
                        p.min(g),
                    );
                }
            }
            sub.expect_nothing();
        }
    }
}

#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos() {
    // §3.3.5 [MQTT-3.3.5-1]: a client with several matching subscriptions gets the message
    // respecting the maximum QoS of them; this broker sends it once.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            for one_packet in [true, false] {
                let pre = format!("ov{}{n}{}", v.level(), u8::from(one_packet));
                let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
                let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
                let plus = format!("{pre}/+");
                let hash = format!("{pre}/#");
                let exact = format!("{pre}/b");
                let subs = [
                    (plus.as_str(), QoS::AtMostOnce),
                    (hash.as_str(), QoS::ExactlyOnce),
                    (exact.as_str(), QoS::AtLeastOnce),
                ];
                if one_packet {
                    assert_eq!(
                        sub.subscribe(1, &subs),
                        vec![ReasonCode(0), ReasonCode(2), ReasonCode(1)]
                    );
                } else {
                    for (i, s) in subs.iter().enumerate() {
                        assert_eq!(
                            sub.subscribe(1 + i as u16, &[*s]),
                            vec![ReasonCode(s.1 as u8)]
                        );
                    }
                }
                // a/b matches all three (max granted 2), a/c matches + and # (max 2),
                // a/b/c matches # only (2), a matches # only (parent).
                let topics = [
                    exact.clone(),
                    format!("{pre}/c"),
                    format!("{pre}/b/c"),
                    pre.clone(),
                ];
                let mut id = 0;
                for t in &topics {
                    for p in QOS {
                        id += 1;
                        publ.publish_acked(t, format!("{t}:{}", p as u8).as_bytes(), p, false, id);
                    }
                }
                for t in &topics {
                    for p in QOS {
                        expect_msg(&mut sub, t, format!("{t}:{}", p as u8).as_bytes(), p);
                    }
                }
                sub.expect_nothing();
            }
        }
    }
}

#[test]
fn overlapping_subscriptions_highest_granted_below_published() {
    // Overlap where every granted QoS is below 2: "x/+" QoS 0 and "x/b" QoS 1. A QoS 2
    // message is delivered once at QoS 1.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("ovl{}{n}", v.level());
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let t = format!("{pre}/b");
            assert_eq!(
                sub.subscribe(
                    1,
                    &[
                        (&format!("{pre}/+"), QoS::AtMostOnce),
                        (&t, QoS::AtLeastOnce)
                    ]
                ),
                vec![ReasonCode(0), ReasonCode(1)]
            );
            publ.publish_acked(&t, b"two", QoS::ExactlyOnce, false, 1);
            expect_msg(&mut sub, &t, b"two", QoS::AtLeastOnce);
            sub.expect_nothing();
        }
    }
}

#[test]
fn resubscribe_replaces_the_granted_qos() {
    // [MQTT-3.8.4-3]: a SUBSCRIBE with a filter identical to an existing subscription
    // replaces it (its QoS); it does not add a second subscription.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("re{}{n}", v.level());
            let t = format!("{pre}/t");
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let mut id = 0;
            for (round, g) in [2u8, 0, 1, 2, 0].into_iter().enumerate() {
                assert_eq!(
                    sub.subscribe(1 + round as u16, &[(&t, q(g))]),
                    vec![ReasonCode(g)]
                );
                for p in QOS {
                    id += 1;
                    let payload = format!("r{round}p{}", p as u8);
                    publ.publish_acked(&t, payload.as_bytes(), p, false, id);
                    expect_msg(&mut sub, &t, payload.as_bytes(), p.min(q(g)));
                }
            }
            sub.expect_nothing();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Topic matching
// ---------------------------------------------------------------------------------------

/// One subscriber per filter; one publisher publishes every topic in order (QoS 1,
/// acknowledged), then a marker per subscriber on a `$` topic only that subscriber has
/// subscribed to exactly; each subscriber's deliveries up to its marker must be exactly the
/// topics its filter matches, in order.
fn check_matching(
    b: &Broker,
    v: ProtocolVersion,
    ss: usize,
    ps: usize,
    pre: &str,
    cases: &[(&str, &[&str])],
    topics: &[&str],
) {
    let mut publ = b.client(v, &b.id_on(ps, &format!("{pre}-pub")), true);
    let mut subs = Vec::new();
    for (i, (filter, _)) in cases.iter().enumerate() {
        let mut s = b.client(v, &b.id_on(ss, &format!("{pre}-sub{i}")), true);
        let marker = format!("$mark/{pre}/{i}");
        assert_eq!(
            s.subscribe(
                1,
                &[(filter, QoS::AtLeastOnce), (&marker, QoS::AtLeastOnce)]
            ),
            vec![ReasonCode(1), ReasonCode(1)],
            "{filter}"
        );
        subs.push((s, marker));
    }
    let mut id = 0u16;
    for t in topics {
        id += 1;
        publ.publish_acked(t, t.as_bytes(), QoS::AtLeastOnce, false, id);
    }
    for (_, marker) in &subs {
        id += 1;
        publ.publish_acked(marker, b"end", QoS::AtLeastOnce, false, id);
    }
    for ((s, marker), (filter, expected)) in subs.iter_mut().zip(cases) {
        let mut got = Vec::new();
        loop {
            let p = s.recv_publish();
            assert!(!p.retain && !p.dup, "{p:?}");
            if p.topic.as_str() == marker.as_str() {
                break;
            }
            assert_eq!(&p.payload[..], p.topic.as_bytes());
            got.push(p.topic.as_str().to_owned());
        }
        assert_eq!(
            got, *expected,
            "{v:?} filter {filter:?} (sub shard {ss}, pub shard {ps})"
        );
    }
}

#[test]
fn wildcards_match_per_the_spec_examples() {
    // §4.7.1.2 / §4.7.1.3 examples: `#` matches the parent and every level below
    // [MQTT-4.7.1-2]; `+` matches exactly one level, which may be empty; levels are case
    // sensitive; empty levels count.
    let b = Broker::start(2);
    let topics = [
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport/chess/player1",
        "/finance",
        "finance",
        "Sport/tennis",
        "a//b",
        "a/b",
    ];
    let cases: &[(&str, &[&str])] = &[
        (
            "sport/tennis/player1/#",
            &[
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
            ],
        ),
        (
            "sport/#",
            &[
                "sport",
                "sport/",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2",
                "sport/chess/player1",
            ],
        ),
        (
            "sport/tennis/+",
            &["sport/tennis/player1", "sport/tennis/player2"],
        ),
        ("sport/+", &["sport/", "sport/tennis"]),
        (
            "+/tennis/#",
            &[
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2",
                "Sport/tennis",
            ],
        ),
        (
            "+/+",
            &["sport/", "sport/tennis", "/finance", "Sport/tennis", "a/b"],
        ),
        ("/+", &["/finance"]),
        ("+", &["sport", "finance"]),
        (
            "+/+/player1",
            &["sport/tennis/player1", "sport/chess/player1"],
        ),
        ("a/+/b", &["a//b"]),
        ("Sport/#", &["Sport/tennis"]),
        ("sport/tennis", &["sport/tennis"]),
        (
            "#",
            &[
                "sport",
                "sport/",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon",
                "sport/tennis/player2",
                "sport/chess/player1",
                "/finance",
                "finance",
                "Sport/tennis",
                "a//b",
                "a/b",
            ],
        ),
    ];
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            check_matching(
                &b,
                v,
                *ss,
                *ps,
                &format!("wc{}{n}", v.level()),
                cases,
                &topics,
            );
        }
    }
}

#[test]
fn leading_wildcards_do_not_match_dollar_topics() {
    // [MQTT-4.7.2-1]: filters starting with a wildcard do not match topics starting with
    // `$`; "$dev/#" does, including its parent "$dev". (Not `$SYS`: the broker's own,
    // which clients may not publish to; `tests/observe_sys.rs` checks it.)
    let topics = ["$dev/x", "$dev", "$dev/a/x", "sys/x", "$other/x"];
    let cases: &[(&str, &[&str])] = &[
        ("#", &["sys/x"]),
        ("+/x", &["sys/x"]),
        ("+/#", &["sys/x"]),
        ("+", &[]),
        ("+/+/x", &[]),
        ("$dev/#", &["$dev/x", "$dev", "$dev/a/x"]),
        ("$dev/+", &["$dev/x"]),
        ("$dev/x", &["$dev/x"]),
        ("$dev/+/x", &["$dev/a/x"]),
        ("$other/#", &["$other/x"]),
    ];
    // Topics are not namespaced per round: rounds run one after the other and each
    // round's subscribers only count what arrives before their marker.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            check_matching(
                &b,
                v,
                *ss,
                *ps,
                &format!("dollar{}{n}", v.level()),
                cases,
                &topics,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// UNSUBSCRIBE
// ---------------------------------------------------------------------------------------

#[test]
fn unsubscribe_is_acknowledged_and_stops_delivery() {
    // [MQTT-3.10.4-1] the subscription is deleted, [MQTT-3.10.4-4] UNSUBACK with the same
    // packet id, [MQTT-3.10.4-5] UNSUBACK even if no filter matched a subscription.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("un{}{n}", v.level());
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let gone = format!("{pre}/gone/+");
            let keep = format!("{pre}/keep");
            assert_eq!(
                sub.subscribe(1, &[(&gone, QoS::AtLeastOnce), (&keep, QoS::AtLeastOnce)]),
                vec![ReasonCode(1), ReasonCode(1)]
            );
            let t = format!("{pre}/gone/x");
            publ.publish_acked(&t, b"before", QoS::AtLeastOnce, false, 1);
            expect_msg(&mut sub, &t, b"before", QoS::AtLeastOnce);

            // UNSUBACK raw: b0 02 <id>.
            sub.send(&Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(0x0102),
                filters: vec![TopicFilter::new(gone.as_str()).unwrap()],
                properties: Properties::new(),
            }));
            assert_eq!(sub.read_bytes(4), [0xB0, 0x02, 0x01, 0x02]);

            // Published after the UNSUBACK: not delivered; the next message on the kept
            // subscription shows that nothing came before it.
            for (i, p) in QOS.iter().enumerate() {
                publ.publish_acked(&t, b"after", *p, false, 10 + i as u16);
            }
            publ.publish_acked(&keep, b"keep", QoS::AtLeastOnce, false, 20);
            expect_msg(&mut sub, &keep, b"keep", QoS::AtLeastOnce);

            // A filter never subscribed, and one just removed: still UNSUBACK.
            unsubscribe(&mut sub, 3, &[&format!("{pre}/never")]);
            unsubscribe(&mut sub, 4, &[&gone]);
            unsubscribe(&mut sub, 5, &[&format!("{pre}/never/#"), &keep, &gone]);
            publ.publish_acked(&keep, b"keep2", QoS::AtLeastOnce, false, 21);
            publ.publish_acked(&t, b"after2", QoS::AtLeastOnce, false, 22);

            // Subscribing again works.
            assert_eq!(
                sub.subscribe(6, &[(&gone, QoS::AtMostOnce)]),
                vec![ReasonCode(0)]
            );
            publ.publish_acked(&t, b"again", QoS::AtLeastOnce, false, 23);
            expect_msg(&mut sub, &t, b"again", QoS::AtMostOnce);
            sub.expect_nothing();
        }
    }
}

#[test]
fn unsubscribe_one_of_overlapping_subscriptions_keeps_the_other() {
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("unov{}{n}", v.level());
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            let t = format!("{pre}/a");
            let hash = format!("{pre}/#");
            assert_eq!(
                sub.subscribe(1, &[(&hash, QoS::ExactlyOnce), (&t, QoS::AtMostOnce)]),
                vec![ReasonCode(2), ReasonCode(0)]
            );
            unsubscribe(&mut sub, 2, &[&hash]);
            publ.publish_acked(&t, b"x", QoS::ExactlyOnce, false, 1);
            expect_msg(&mut sub, &t, b"x", QoS::AtMostOnce);
            sub.expect_nothing();
        }
    }
}

#[test]
fn unsubscribe_by_one_client_keeps_other_subscribers_of_the_filter() {
    // Two subscribers of one filter on the same shard (and one on the other): when one
    // unsubscribes, the others still get messages from both shards.
    let b = Broker::start(2);
    for v in V3 {
        let pre = format!("unother{}", v.level());
        let f = format!("{pre}/+");
        let mut a = b.client(v, &b.id_on(0, &format!("{pre}-a")), true);
        let mut a2 = b.client(v, &b.id_on(0, &format!("{pre}-a2")), true);
        let mut c = b.client(v, &b.id_on(1, &format!("{pre}-c")), true);
        for s in [&mut a, &mut a2, &mut c] {
            assert_eq!(
                s.subscribe(1, &[(&f, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
        }
        unsubscribe(&mut a, 2, &[&f]);
        for shard in 0..2 {
            let mut publ = b.client(v, &b.id_on(shard, &format!("{pre}-pub{shard}")), true);
            let t = format!("{pre}/{shard}");
            publ.publish_acked(&t, b"m", QoS::AtLeastOnce, false, 1);
            expect_msg(&mut a2, &t, b"m", QoS::AtLeastOnce);
            expect_msg(&mut c, &t, b"m", QoS::AtLeastOnce);
        }
        a.expect_nothing();
    }
}

// ---------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------

#[test]
fn retain_flag_is_0_on_normal_forwarding() {
    // [MQTT-3.3.1-9]: a message forwarded to an existing subscription has RETAIN 0, even
    // when it was published with RETAIN 1.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("rf{}{n}", v.level());
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            assert_eq!(
                sub.subscribe(1, &[(&format!("{pre}/#"), QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut id = 0;
            for p in QOS {
                id += 1;
                let t = format!("{pre}/{}", p as u8);
                publ.publish_acked(&t, b"retained", p, true, id);
                // expect_msg asserts RETAIN 0.
                expect_msg(&mut sub, &t, b"retained", p);
            }
            sub.expect_nothing();
        }
    }
}

#[test]
fn order_per_publisher_is_kept_for_500_qos1_messages() {
    // §4.6: messages from one publisher to one subscriber keep their order.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("ord{}{n}", v.level());
            let t = format!("{pre}/t");
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            assert_eq!(
                sub.subscribe(1, &[(&t, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            // Pipelined: all 500 PUBLISH packets, then the 500 PUBACKs in order.
            for i in 1..=500u16 {
                publ.publish(
                    &t,
                    format!("m{i}").as_bytes(),
                    QoS::AtLeastOnce,
                    false,
                    Some(i),
                );
            }
            for i in 1..=500u16 {
                assert_eq!(publ.recv(), Packet::PubAck(Ack::new(pid(i))));
            }
            for i in 1..=500u16 {
                expect_msg(&mut sub, &t, format!("m{i}").as_bytes(), QoS::AtLeastOnce);
            }
            sub.expect_nothing();
        }
    }
}

#[test]
fn publish_right_after_suback_is_delivered() {
    // A message the broker accepts after it sent the SUBACK must reach the new
    // subscription, even when the publisher's shard only just learned of the filter.
    let b = Broker::start(2);
    for v in V3 {
        for (n, (ss, ps)) in PLACEMENTS.iter().enumerate() {
            let pre = format!("fresh{}{n}", v.level());
            let mut sub = b.client(v, &b.id_on(*ss, &format!("{pre}-sub")), true);
            let mut publ = b.client(v, &b.id_on(*ps, &format!("{pre}-pub")), true);
            for i in 0..50u16 {
                let (filter, topic) = match i % 3 {
                    0 => (format!("{pre}/{i}"), format!("{pre}/{i}")),
                    1 => (format!("{pre}/{i}/+"), format!("{pre}/{i}/x")),
                    _ => (format!("{pre}/{i}/#"), format!("{pre}/{i}/x/y")),
                };
                let qos = QOS[usize::from(i % 3)];
                assert_eq!(
                    sub.subscribe(1 + i, &[(&filter, QoS::ExactlyOnce)]),
                    vec![ReasonCode(2)]
                );
                // No wait: published at once, QoS 0 without any ack.
                publ.publish(
                    &topic,
                    format!("n{i}").as_bytes(),
                    qos,
                    false,
                    (qos != QoS::AtMostOnce).then_some(1 + i),
                );
                let p = sub.recv_publish();
                assert_eq!(
                    (p.topic.as_str(), &p.payload[..], p.qos),
                    (topic.as_str(), format!("n{i}").as_bytes(), qos),
                    "{v:?} sub shard {ss} pub shard {ps} round {i}"
                );
                match qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        assert_eq!(publ.recv(), Packet::PubAck(Ack::new(pid(1 + i))))
                    }
                    QoS::ExactlyOnce => {
                        assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(1 + i))));
                        publ.send(&Packet::PubRel(Ack::new(pid(1 + i))));
                        assert_eq!(publ.recv(), Packet::PubComp(Ack::new(pid(1 + i))));
                    }
                }
            }
            sub.expect_nothing();
        }
    }
}

#[test]
fn fan_out_to_subscribers_on_both_shards() {
    let b = Broker::start(2);
    for v in V3 {
        let pre = format!("fo{}", v.level());
        let t = format!("{pre}/a/b");
        let filters = [t.clone(), format!("{pre}/+/b"), format!("{pre}/#")];
        let mut subs = Vec::new();
        for shard in 0..2 {
            for (i, f) in filters.iter().enumerate() {
                let mut s = b.client(v, &b.id_on(shard, &format!("{pre}-s{shard}-{i}")), true);
                assert_eq!(
                    s.subscribe(1, &[(f, q(i as u8))]),
                    vec![ReasonCode(i as u8)]
                );
                subs.push((s, q(i as u8)));
            }
        }
        for shard in 0..2 {
            let mut publ = b.client(v, &b.id_on(shard, &format!("{pre}-p{shard}")), true);
            for p in QOS {
                let payload = format!("from{shard}q{}", p as u8);
                publ.publish_acked(&t, payload.as_bytes(), p, false, 1);
                for (s, g) in subs.iter_mut() {
                    expect_msg(s, &t, payload.as_bytes(), p.min(*g));
                }
            }
        }
        for (s, _) in subs.iter_mut() {
            s.expect_nothing();
        }
    }
}

#[test]
fn fan_in_from_publishers_on_both_shards() {
    let b = Broker::start(2);
    for v in V3 {
        for sub_shard in 0..2 {
            let pre = format!("fi{}{sub_shard}", v.level());
            let mut sub = b.client(v, &b.id_on(sub_shard, &format!("{pre}-sub")), true);
            assert_eq!(
                sub.subscribe(1, &[(&format!("{pre}/+"), QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut pubs: Vec<Raw> = (0..4)
                .map(|i| b.client(v, &b.id_on(i % 2, &format!("{pre}-p{i}")), true))
                .collect();
            for k in 0..20u16 {
                for (i, p) in pubs.iter_mut().enumerate() {
                    let qos = QOS[(i + usize::from(k)) % 3];
                    p.publish_acked(
                        &format!("{pre}/{i}"),
                        format!("{i}:{k}").as_bytes(),
                        qos,
                        false,
                        k + 1,
                    );
                }
            }
            // Every message once; per publisher and QoS in order ([MQTT-4.6.0-6]: same
            // topic and QoS; a QoS 0 message may overtake QoS 1/2 ones waiting for the
            // in-flight window).
            let mut next = [0u16; 4];
            let mut last: std::collections::HashMap<(usize, u8), u16> = Default::default();
            for _ in 0..80 {
                let p = sub.recv_publish();
                let text = std::str::from_utf8(&p.payload).unwrap().to_owned();
                let (i, k) = text.split_once(':').unwrap();
                let (i, k): (usize, u16) = (i.parse().unwrap(), k.parse().unwrap());
                assert_eq!(p.topic.as_str(), format!("{pre}/{i}"));
                assert_eq!(p.qos, QOS[(i + usize::from(k)) % 3]);
                assert!(!p.retain && !p.dup);
                if let Some(prev) = last.insert((i, p.qos as u8), k) {
                    assert!(prev < k, "publisher {i} QoS {:?}: {k} after {prev}", p.qos);
                }
                next[i] += 1;
            }
            assert_eq!(next, [20; 4]);
            sub.expect_nothing();
        }
    }
}

#[test]
fn client_receives_its_own_publications() {
    // 3.x has no No Local option: a client subscribed to a topic it publishes to gets its
    // own messages.
    let b = Broker::start(2);
    for v in V3 {
        for shard in 0..2 {
            let pre = format!("own{}{shard}", v.level());
            let mut c = b.client(v, &b.id_on(shard, &format!("{pre}-c")), true);
            assert_eq!(
                c.subscribe(1, &[(&format!("{pre}/#"), QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            for (i, p) in QOS.iter().enumerate() {
                let id = 10 + i as u16;
                let t = format!("{pre}/{i}");
                c.publish(&t, b"me", *p, false, (*p != QoS::AtMostOnce).then_some(id));
                // Our flow's acks and the delivery interleave in any order.
                let mut done = *p == QoS::AtMostOnce;
                let mut got: Vec<Publish> = Vec::new();
                while !done || got.is_empty() {
                    match c.recv() {
                        Packet::PubAck(a) if *p == QoS::AtLeastOnce && a.packet_id == pid(id) => {
                            done = true
                        }
                        Packet::PubRec(a) if *p == QoS::ExactlyOnce && a.packet_id == pid(id) => {
                            c.send(&Packet::PubRel(Ack::new(pid(id))))
                        }
                        Packet::PubComp(a) if *p == QoS::ExactlyOnce && a.packet_id == pid(id) => {
                            done = true
                        }
                        Packet::Publish(m) => {
                            match (m.qos, m.packet_id) {
                                (QoS::AtLeastOnce, Some(mid)) => {
                                    c.send(&Packet::PubAck(Ack::new(mid)))
                                }
                                (QoS::ExactlyOnce, Some(mid)) => {
                                    c.send(&Packet::PubRec(Ack::new(mid)))
                                }
                                _ => {}
                            }
                            got.push(m);
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                assert_eq!(got.len(), 1);
                let m = &got[0];
                assert_eq!(
                    (m.topic.as_str(), &m.payload[..], m.qos, m.retain),
                    (t.as_str(), &b"me"[..], *p, false)
                );
            }
            c.expect_nothing();
        }
    }
}
