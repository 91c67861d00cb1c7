//! Sessions: clean session 0 and 1, messages queued while offline, redelivery of
//! unacknowledged messages on reconnect, the session queue and in-flight window limits,
//! and exactly-once for inbound QoS 2. Every test runs on 3.1 and 3.1.1, with subscriber
//! and publisher on different shards and on the same shard.
//!
//! Two synchronisation tricks keep the tests free of sleeps:
//! - a *probe*: a QoS 0 subscriber on the subscriber's shard. A shard offers a message to
//!   all its matching sessions in one step, so once the probe has a message, every session
//!   on that shard (online or not) has been offered it;
//! - a *will* on each persistent subscriber (topic `gone/<id>`), watched by another
//!   client: when the will arrives the broker has noticed the dropped socket and detached
//!   the session (the will is published in the same step).

mod common;

use common::*;
use surgemq::protocol::*;

/// (subscriber shard, publisher shard, tag): different shards, then the same shard.
const PLACES: [(usize, usize, &str); 2] = [(0, 1, "x"), (1, 1, "s")];

/// A clean-session-0 connection whose will (`gone/<id>`) announces that the broker noticed
/// the connection end (see [`drop_conn`]).
fn persistent(b: &Broker, v: ProtocolVersion, id: &str, present: bool) -> Raw {
    let mut c = b.raw(v);
    let will = will_msg(&format!("gone/{id}"), b"", QoS::AtMostOnce, false);
    let ack = c.connect_raw_ack(connect_packet(v, id, false, 0, Some(will)));
    assert_eq!(ack, connack(v, present), "CONNACK of {id} ({v:?})");
    c
}

/// A client watching the wills of [`persistent`] connections.
fn watcher(b: &Broker, v: ProtocolVersion, tag: &str) -> Raw {
    let mut w = b.client(v, &b.id_on(0, &format!("w{}{tag}", v.level())), true);
    assert_eq!(
        w.subscribe(1, &[("gone/#", QoS::AtMostOnce)]),
        vec![ReasonCode(0)]
    );
    w
}

/// Drops the TCP connection without DISCONNECT and waits until the broker noticed.
fn drop_conn(c: Raw, watch: &mut Raw, id: &str) {
    drop(c);
    let p = watch.recv_publish();
    assert_eq!(p.topic.as_str(), format!("gone/{id}"), "will of {id}");
}

/// A QoS 0 subscriber to `filter` on `shard` (see the module doc).
fn probe(b: &Broker, v: ProtocolVersion, shard: usize, prefix: &str, filter: &str) -> Raw {
    let mut p = b.client(v, &b.id_on(shard, prefix), true);
    assert_eq!(
        p.subscribe(1, &[(filter, QoS::AtMostOnce)]),
        vec![ReasonCode(0)]
    );
    p
}

/// Waits until the probe has received `payloads`, in order.
fn probe_sees(p: &mut Raw, payloads: &[&[u8]]) {
    for want in payloads {
        let got = p.recv_publish();
        assert_eq!(&got.payload[..], *want, "probe");
    }
}

fn msg(p: &Publish) -> (&str, &[u8], QoS, bool, bool) {
    (p.topic.as_str(), &p.payload[..], p.qos, p.dup, p.retain)
}

#[test]
fn offline_qos1_qos2_queued_qos0_dropped_subscription_survives() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let sid = b.id_on(ss, &format!("off{l}{tag}"));
            let base = format!("off/{l}{tag}");
            let filter = format!("{base}/+");
            // A new session: session present 0 even with clean session 0 [MQTT-3.2.2-3].
            let mut sub = connect_expect(&b, v, &sid, false, false);
            assert_eq!(
                sub.subscribe(1, &[(&filter, QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            assert!(sub.disconnect_and_wait().is_empty());

            let mut pr = probe(&b, v, ss, &format!("pr{l}{tag}"), &filter);
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            let t = |s: &str| format!("{base}/{s}");
            publ.publish_acked(&t("a"), b"q1", QoS::AtLeastOnce, false, 1);
            publ.publish_acked(&t("b"), b"q0", QoS::AtMostOnce, false, 0);
            publ.publish_acked(&t("c"), b"q2", QoS::ExactlyOnce, false, 2);
            publ.publish_acked(&t("d"), b"q0 again", QoS::AtMostOnce, false, 0);
            probe_sees(&mut pr, &[b"q1", b"q0", b"q2", b"q0 again"]);

            // [MQTT-3.1.2-4]: the session is resumed; 3.1.1 says so in CONNACK
            // [MQTT-3.2.2-2]. QoS 1 and 2 messages published meanwhile are delivered
            // [MQTT-3.1.2-5], first attempts with DUP 0 [MQTT-3.3.1-3]; QoS 0 is not kept.
            let mut sub = connect_expect(&b, v, &sid, false, true);
            let a = sub.recv_publish();
            assert_eq!(
                msg(&a),
                (&*t("a"), &b"q1"[..], QoS::AtLeastOnce, false, false),
                "{v:?} {tag}"
            );
            let c = sub.recv_publish();
            assert_eq!(
                msg(&c),
                (&*t("c"), &b"q2"[..], QoS::ExactlyOnce, false, false),
                "{v:?} {tag}"
            );
            sub.expect_nothing();

            // The subscription is part of the session.
            publ.publish_acked(&t("e"), b"live", QoS::AtLeastOnce, false, 3);
            let e = sub.recv_publish();
            assert_eq!(
                msg(&e),
                (&*t("e"), &b"live"[..], QoS::AtLeastOnce, false, false),
                "{v:?} {tag}"
            );
            sub.expect_nothing();
            sub.disconnect_and_wait();
        }
    }
}

#[test]
fn clean_session_1_on_reconnect_discards_the_session() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let sid = b.id_on(ss, &format!("cs{l}{tag}"));
            let topic = format!("cs/{l}{tag}");
            let mut sub = connect_expect(&b, v, &sid, false, false);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            assert!(sub.disconnect_and_wait().is_empty());

            let mut pr = probe(&b, v, ss, &format!("pr{l}{tag}"), &topic);
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"queued", QoS::AtLeastOnce, false, 1);
            probe_sees(&mut pr, &[b"queued"]);

            // [MQTT-3.1.2-6]: clean session 1 discards the previous session; session
            // present 0 [MQTT-3.2.2-1]; nothing queued is delivered.
            let mut sub = connect_expect(&b, v, &sid, true, false);
            sub.expect_nothing();
            // ...and no subscription is left.
            publ.publish_acked(&topic, b"after", QoS::AtLeastOnce, false, 2);
            probe_sees(&mut pr, &[b"after"]);
            sub.expect_nothing();
            assert!(sub.disconnect_and_wait().is_empty());

            // The clean session 1 session ended with its connection: a clean session 0
            // connect finds no session.
            let mut sub = connect_expect(&b, v, &sid, false, false);
            sub.expect_nothing();
            publ.publish_acked(&topic, b"later", QoS::AtLeastOnce, false, 3);
            probe_sees(&mut pr, &[b"later"]);
            sub.expect_nothing();
            sub.disconnect_and_wait();
        }
    }
}

#[test]
fn clean_session_1_session_is_gone_after_disconnect_or_drop() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let topic = format!("gn/{l}{tag}");
            let mut pr = probe(&b, v, ss, &format!("pr{l}{tag}"), &topic);
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            let mut watch = watcher(&b, v, tag);
            for (n, by_drop) in [(0u16, false), (1, true)] {
                let sid = b.id_on(ss, &format!("gn{l}{tag}{n}"));
                let mut sub = b.raw(v);
                let will = will_msg(&format!("gone/{sid}"), b"", QoS::AtMostOnce, false);
                let ack = sub.connect_raw_ack(connect_packet(v, &sid, true, 0, Some(will)));
                assert_eq!(ack, connack(v, false));
                assert_eq!(
                    sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                if by_drop {
                    drop_conn(sub, &mut watch, &sid);
                } else {
                    assert!(sub.disconnect_and_wait().is_empty());
                }
                publ.publish_acked(&topic, b"offline", QoS::AtLeastOnce, false, 1);
                probe_sees(&mut pr, &[b"offline"]);

                let mut sub = connect_expect(&b, v, &sid, false, false);
                sub.expect_nothing();
                publ.publish_acked(&topic, b"again", QoS::AtLeastOnce, false, 2);
                probe_sees(&mut pr, &[b"again"]);
                sub.expect_nothing();
                sub.disconnect_and_wait();
            }
        }
    }
}

#[test]
fn unacknowledged_qos1_is_resent_with_dup_on_reconnect() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let sid = b.id_on(ss, &format!("rd{l}{tag}"));
            let topic = format!("rd/{l}{tag}");
            let mut watch = watcher(&b, v, tag);
            let mut sub = persistent(&b, v, &sid, false);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"first", QoS::AtLeastOnce, false, 1);
            let p1 = sub.recv_publish_noack();
            assert_eq!(
                msg(&p1),
                (&*topic, &b"first"[..], QoS::AtLeastOnce, false, false)
            );
            let id = p1.packet_id.expect("QoS 1 has a packet id");

            // Not acknowledged; the connection drops. [MQTT-4.4.0-1]: on reconnect with
            // clean session 0 the PUBLISH is resent with its original packet id, DUP 1
            // [MQTT-3.3.1-1], same content.
            drop_conn(sub, &mut watch, &sid);
            let mut sub = persistent(&b, v, &sid, true);
            let p2 = sub.recv_publish_noack();
            assert_eq!(
                msg(&p2),
                (&*topic, &b"first"[..], QoS::AtLeastOnce, true, false),
                "{v:?} {tag}"
            );
            assert_eq!(p2.packet_id, Some(id), "original packet id");
            sub.expect_nothing();

            // A reconnect that replaces a still-open connection resends it too.
            let mut sub2 = persistent(&b, v, &sid, true);
            let _ = sub.closed_within(WAIT).expect("old connection closed");
            drop(sub);
            let p3 = sub2.recv_publish_noack();
            assert_eq!(
                msg(&p3),
                (&*topic, &b"first"[..], QoS::AtLeastOnce, true, false)
            );
            assert_eq!(p3.packet_id, Some(id));
            sub2.send(&Packet::PubAck(Ack::new(id)));
            sub2.expect_nothing();
            // The session went on (clean session 0 on both sides): the old connection's
            // will is not published, as in mosquitto 2.0.
            watch.expect_nothing();

            // Acknowledged: not sent again.
            assert!(sub2.disconnect_and_wait().is_empty());
            let mut sub = persistent(&b, v, &sid, true);
            sub.expect_nothing();
            sub.disconnect_and_wait();
            watch.expect_nothing();
        }
    }
}

#[test]
fn qos2_redelivery_resends_publish_then_pubrel() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let sid = b.id_on(ss, &format!("q2r{l}{tag}"));
            let topic = format!("q2r/{l}{tag}");
            let mut watch = watcher(&b, v, tag);
            let mut sub = persistent(&b, v, &sid, false);
            sub.auto_pubcomp = false;
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"two", QoS::ExactlyOnce, false, 1);
            let p1 = sub.recv_publish_noack();
            assert_eq!(
                msg(&p1),
                (&*topic, &b"two"[..], QoS::ExactlyOnce, false, false)
            );
            let id = p1.packet_id.unwrap();

            // No PUBREC yet: the PUBLISH is resent with DUP 1.
            drop_conn(sub, &mut watch, &sid);
            let mut sub = persistent(&b, v, &sid, true);
            sub.auto_pubcomp = false;
            let p2 = sub.recv_publish_noack();
            assert_eq!(
                msg(&p2),
                (&*topic, &b"two"[..], QoS::ExactlyOnce, true, false),
                "{v:?} {tag}"
            );
            assert_eq!(p2.packet_id, Some(id));
            sub.send(&Packet::PubRec(Ack::new(id)));
            assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id)));

            // PUBREC sent, PUBCOMP not: the PUBREL is resent, not the PUBLISH
            // [MQTT-4.4.0-1], [MQTT-4.3.3-1].
            drop_conn(sub, &mut watch, &sid);
            let mut sub = persistent(&b, v, &sid, true);
            sub.auto_pubcomp = false;
            assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id)), "{v:?} {tag}");
            sub.expect_nothing();
            sub.send(&Packet::PubComp(Ack::new(id)));
            sub.expect_nothing();

            // Complete: nothing is resent.
            assert!(sub.disconnect_and_wait().is_empty());
            let mut sub = persistent(&b, v, &sid, true);
            sub.auto_pubcomp = false;
            sub.expect_nothing();
            sub.disconnect_and_wait();
        }
    }
}

fn queue_limited() -> Broker {
    Broker::with(2, |c| {
        c.limits.max_queued_messages = 5;
        c.limits.max_inflight = 1;
    })
}

/// Receives `payloads` one by one, checking that each waits for the previous ack
/// (in-flight window 1), then nothing more.
fn one_at_a_time(sub: &mut Raw, topic: &str, payloads: &[String]) {
    for (i, want) in payloads.iter().enumerate() {
        let p = sub.recv_publish_noack();
        assert_eq!(
            msg(&p),
            (topic, want.as_bytes(), QoS::AtLeastOnce, false, false),
            "message {i}"
        );
        // Window 1: the next one waits for this ack.
        sub.expect_nothing();
        sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())));
    }
    sub.expect_nothing();
}

#[test]
fn offline_queue_limit_keeps_the_first_messages() {
    let b = queue_limited();
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let sid = b.id_on(ss, &format!("ql{l}{tag}"));
            let topic = format!("ql/{l}{tag}");
            let mut sub = connect_expect(&b, v, &sid, false, false);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            assert!(sub.disconnect_and_wait().is_empty());

            let mut pr = probe(&b, v, ss, &format!("pr{l}{tag}"), &topic);
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            let all: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
            for (i, m) in all.iter().enumerate() {
                publ.publish_acked(&topic, m.as_bytes(), QoS::AtLeastOnce, false, i as u16 + 1);
            }
            let refs: Vec<&[u8]> = all.iter().map(|m| m.as_bytes()).collect();
            probe_sees(&mut pr, &refs);

            // Offline, nothing in flight: the queue keeps max_queued_messages (5), the
            // oldest ones; later messages are dropped.
            let mut sub = connect_expect(&b, v, &sid, false, true);
            one_at_a_time(&mut sub, &topic, &all[..5]);
            sub.disconnect_and_wait();
        }
    }
}

#[test]
fn queue_limit_behind_a_full_window_online_and_after_reconnect() {
    let b = queue_limited();
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            for reconnect in [false, true] {
                let l = v.level();
                let r = u8::from(reconnect);
                let sid = b.id_on(ss, &format!("qw{l}{tag}{r}"));
                let topic = format!("qw/{l}{tag}{r}");
                let mut watch = watcher(&b, v, &format!("{tag}{r}"));
                let mut sub = persistent(&b, v, &sid, false);
                assert_eq!(
                    sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                let mut pr = probe(&b, v, ss, &format!("pr{l}{tag}{r}"), &topic);
                let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}{r}")), true);
                let all: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
                publ.publish_acked(&topic, b"m0", QoS::AtLeastOnce, false, 1);
                let first = sub.recv_publish_noack();
                assert_eq!(&first.payload[..], b"m0");
                let id = first.packet_id.unwrap();
                for (i, m) in all.iter().enumerate().skip(1) {
                    publ.publish_acked(&topic, m.as_bytes(), QoS::AtLeastOnce, false, i as u16 + 1);
                }
                let refs: Vec<&[u8]> = all.iter().map(|m| m.as_bytes()).collect();
                probe_sees(&mut pr, &refs);
                // Window full (1 in flight): nothing else is sent.
                sub.expect_nothing();

                if reconnect {
                    drop_conn(sub, &mut watch, &sid);
                    sub = persistent(&b, v, &sid, true);
                    let again = sub.recv_publish_noack();
                    assert_eq!(
                        msg(&again),
                        (&*topic, &b"m0"[..], QoS::AtLeastOnce, true, false),
                        "{v:?} {tag}"
                    );
                    assert_eq!(again.packet_id, Some(id));
                    sub.expect_nothing();
                }
                // 1 in flight + 5 queued; m6..m9 were dropped.
                sub.send(&Packet::PubAck(Ack::new(id)));
                one_at_a_time(&mut sub, &topic, &all[1..6]);
                sub.disconnect_and_wait();
            }
        }
    }
}

#[test]
fn inbound_qos2_duplicate_before_pubrel_is_forwarded_once() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let topic = format!("eo/{l}{tag}");
            let mut sub = b.client(v, &b.id_on(ss, &format!("s{l}{tag}")), true);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            publ.publish_flags(&topic, b"once", QoS::ExactlyOnce, false, false, Some(7));
            assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(7))));
            // Resent before PUBREL (as after a lost PUBREC), with DUP 1, then once more
            // with DUP 0: the broker acknowledges again but must not forward it again
            // [MQTT-4.3.3-2].
            publ.publish_flags(&topic, b"once", QoS::ExactlyOnce, false, true, Some(7));
            assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(7))));
            publ.publish_flags(&topic, b"once", QoS::ExactlyOnce, false, false, Some(7));
            assert_eq!(publ.recv(), Packet::PubRec(Ack::new(pid(7))));
            publ.send(&Packet::PubRel(Ack::new(pid(7))));
            assert_eq!(publ.recv(), Packet::PubComp(Ack::new(pid(7))));

            let p = sub.recv_publish();
            assert_eq!(
                msg(&p),
                (&*topic, &b"once"[..], QoS::ExactlyOnce, false, false)
            );
            sub.expect_nothing();

            // After PUBCOMP the id is free: the same id is a new message.
            publ.publish_acked(&topic, b"new", QoS::ExactlyOnce, false, 7);
            let p = sub.recv_publish();
            assert_eq!(&p.payload[..], b"new");
            sub.expect_nothing();
        }
    }
}

#[test]
fn inflight_window_holds_back_unacknowledged_messages() {
    let b = Broker::with(2, |c| c.limits.max_inflight = 2);
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let l = v.level();
                let q = qos as u8;
                let topic = format!("win/{l}{tag}{q}");
                let mut sub = b.client(v, &b.id_on(ss, &format!("s{l}{tag}{q}")), true);
                sub.auto_pubcomp = false;
                assert_eq!(sub.subscribe(1, &[(&topic, qos)]), vec![ReasonCode(q)]);
                let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}{q}")), true);
                for i in 0..5u16 {
                    publ.publish_acked(&topic, format!("m{i}").as_bytes(), qos, false, i + 1);
                }
                let mut got = Vec::new();
                let take = |sub: &mut Raw, i: usize, got: &mut Vec<PacketId>| {
                    let p = sub.recv_publish_noack();
                    assert_eq!(
                        msg(&p),
                        (&*topic, format!("m{i}").as_bytes(), qos, false, false),
                        "{v:?} {tag}"
                    );
                    got.push(p.packet_id.unwrap());
                };
                take(&mut sub, 0, &mut got);
                take(&mut sub, 1, &mut got);
                // Two in flight: the third waits.
                sub.expect_nothing();
                // Finishing the flow of m0 frees one place; for QoS 2 a PUBREC is not
                // enough, the flow ends with PUBCOMP.
                let finish = |sub: &mut Raw, id: PacketId| match qos {
                    QoS::AtLeastOnce => sub.send(&Packet::PubAck(Ack::new(id))),
                    _ => {
                        sub.send(&Packet::PubRec(Ack::new(id)));
                        assert_eq!(sub.recv(), Packet::PubRel(Ack::new(id)));
                        sub.expect_nothing();
                        sub.send(&Packet::PubComp(Ack::new(id)));
                    }
                };
                finish(&mut sub, got[0]);
                take(&mut sub, 2, &mut got);
                sub.expect_nothing();
                finish(&mut sub, got[1]);
                take(&mut sub, 3, &mut got);
                sub.expect_nothing();
                finish(&mut sub, got[2]);
                take(&mut sub, 4, &mut got);
                sub.expect_nothing();
                finish(&mut sub, got[3]);
                finish(&mut sub, got[4]);
                sub.expect_nothing();
            }
        }
    }
}

#[test]
fn session_expiry_max_zero_ends_persistent_sessions_at_disconnect() {
    let b = Broker::with(2, |c| c.limits.session_expiry_max = Some(0));
    for v in V3 {
        for (ss, ps, tag) in PLACES {
            let l = v.level();
            let sid = b.id_on(ss, &format!("se{l}{tag}"));
            let topic = format!("se/{l}{tag}");
            let mut sub = connect_expect(&b, v, &sid, false, false);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            assert!(sub.disconnect_and_wait().is_empty());
            let mut pr = probe(&b, v, ss, &format!("pr{l}{tag}"), &topic);
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{l}{tag}")), true);
            publ.publish_acked(&topic, b"offline", QoS::AtLeastOnce, false, 1);
            probe_sees(&mut pr, &[b"offline"]);
            // The session ended at disconnect: no session, no subscription, no message.
            let mut sub = connect_expect(&b, v, &sid, false, false);
            sub.expect_nothing();
            sub.disconnect_and_wait();
        }
    }
}
