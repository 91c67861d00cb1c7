//! Will messages: published when a connection ends without DISCONNECT (socket closed,
//! keep alive expired, protocol error, taken over) and not after DISCONNECT; delivered at
//! the lower of the will QoS and the granted QoS; stored as retained when the will asks.
//! Every test runs on 3.1 and 3.1.1, with the will's client and the subscriber on
//! different shards and on the same shard.

mod common;

use std::time::{Duration, Instant};

use common::*;
use surgemq::protocol::*;

/// (watcher shard, will client shard, tag): different shards, then the same shard.
const PLACES: [(usize, usize, &str); 2] = [(0, 1, "x"), (1, 1, "s")];

const ALL_QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn watcher(
    b: &Broker,
    v: ProtocolVersion,
    shard: usize,
    prefix: &str,
    filter: &str,
    qos: QoS,
) -> Raw {
    let mut w = b.client(v, &b.id_on(shard, prefix), true);
    assert_eq!(
        w.subscribe(1, &[(filter, qos)]),
        vec![ReasonCode(qos as u8)]
    );
    w
}

fn msg(p: &Publish) -> (&str, &[u8], QoS, bool, bool) {
    (p.topic.as_str(), &p.payload[..], p.qos, p.dup, p.retain)
}

#[test]
fn will_published_when_socket_closes_without_disconnect() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            let l = v.level();
            let topic = format!("will/{l}{tag}");
            let mut w = watcher(&b, v, ws, &format!("w{l}{tag}"), "will/#", QoS::AtLeastOnce);
            let id = b.id_on(cs, &format!("c{l}{tag}"));
            let c = b.client_with(
                v,
                &id,
                true,
                0,
                Some(will_msg(&topic, b"gone", QoS::AtLeastOnce, false)),
            );
            // [MQTT-3.1.2-8]: the connection ends without DISCONNECT.
            drop(c);
            let p = w.recv_publish();
            assert_eq!(
                msg(&p),
                (&*topic, &b"gone"[..], QoS::AtLeastOnce, false, false),
                "{v:?} {tag}"
            );
            // Published once.
            w.expect_nothing();
        }
    }
}

#[test]
fn will_not_published_after_disconnect() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            let l = v.level();
            let topic = format!("nw/{l}{tag}");
            let mut w = watcher(&b, v, ws, &format!("w{l}{tag}"), &topic, QoS::AtLeastOnce);
            for clean in [true, false] {
                let id = b.id_on(cs, &format!("c{l}{tag}{}", u8::from(clean)));
                let c = b.client_with(
                    v,
                    &id,
                    clean,
                    0,
                    Some(will_msg(&topic, b"will", QoS::AtLeastOnce, false)),
                );
                // [MQTT-3.1.2-10]: DISCONNECT removes the will.
                assert!(c.disconnect_and_wait().is_empty());
                // A marker from the will's own shard, published after the close: a will
                // would have been routed before it on the same path.
                let mut m = b.client(v, &b.id_on(cs, &format!("m{l}{tag}")), true);
                m.publish_acked(&topic, b"marker", QoS::AtLeastOnce, false, 1);
                let p = w.recv_publish();
                assert_eq!(&p.payload[..], b"marker", "{v:?} {tag} clean {clean}");
                w.expect_nothing();
                m.disconnect_and_wait();
            }
        }
    }
}

#[test]
fn will_qos_is_the_lower_of_will_and_granted_qos() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            for will_qos in ALL_QOS {
                for sub_qos in ALL_QOS {
                    let l = v.level();
                    let (wq, sq) = (will_qos as u8, sub_qos as u8);
                    let topic = format!("wq/{l}{tag}{wq}{sq}");
                    let mut w = watcher(&b, v, ws, &format!("w{l}{tag}{wq}{sq}"), &topic, sub_qos);
                    let id = b.id_on(cs, &format!("c{l}{tag}{wq}{sq}"));
                    let c = b.client_with(
                        v,
                        &id,
                        true,
                        0,
                        Some(will_msg(&topic, b"q", will_qos, false)),
                    );
                    drop(c);
                    let p = w.recv_publish();
                    assert_eq!(
                        msg(&p),
                        (&*topic, &b"q"[..], will_qos.min(sub_qos), false, false),
                        "{v:?} {tag} will {will_qos:?} granted {sub_qos:?}"
                    );
                    assert_eq!(
                        p.packet_id.is_some(),
                        will_qos.min(sub_qos) != QoS::AtMostOnce
                    );
                    w.expect_nothing();
                }
            }
        }
    }
}

#[test]
fn retained_will_is_stored_for_later_subscribers() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            let l = v.level();
            let topic = format!("wr/{l}{tag}");
            let mut w = watcher(&b, v, ws, &format!("w{l}{tag}"), &topic, QoS::ExactlyOnce);
            let id = b.id_on(cs, &format!("c{l}{tag}"));
            let c = b.client_with(
                v,
                &id,
                true,
                0,
                Some(will_msg(&topic, b"last words", QoS::ExactlyOnce, true)),
            );
            drop(c);
            // To an existing subscription RETAIN is 0 [MQTT-3.3.1-9].
            let p = w.recv_publish();
            assert_eq!(
                msg(&p),
                (&*topic, &b"last words"[..], QoS::ExactlyOnce, false, false),
                "{v:?} {tag}"
            );
            // A later subscriber gets it as a retained message, RETAIN 1 [MQTT-3.3.1-8],
            // at the granted QoS.
            for (n, shard) in [0usize, 1].into_iter().enumerate() {
                let mut later = b.client(v, &b.id_on(shard, &format!("l{l}{tag}{n}")), true);
                assert_eq!(
                    later.subscribe(1, &[(&topic, QoS::AtLeastOnce)]),
                    vec![ReasonCode(1)]
                );
                let p = later.recv_publish();
                assert_eq!(
                    msg(&p),
                    (&*topic, &b"last words"[..], QoS::AtLeastOnce, false, true),
                    "{v:?} {tag} later subscriber on shard {shard}"
                );
                later.expect_nothing();
            }
        }
    }
}

#[test]
fn will_published_on_keepalive_expiry() {
    let b = Broker::start(2);
    // All cases at once: each waits for its keep alive.
    let mut cases = Vec::new();
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            let l = v.level();
            let topic = format!("wk/{l}{tag}");
            let w = watcher(&b, v, ws, &format!("w{l}{tag}"), &topic, QoS::AtLeastOnce);
            let id = b.id_on(cs, &format!("c{l}{tag}"));
            let c = b.client_with(
                v,
                &id,
                true,
                1,
                Some(will_msg(&topic, b"timeout", QoS::AtLeastOnce, false)),
            );
            cases.push((v, tag, topic, w, c, Instant::now()));
        }
    }
    for (v, tag, topic, w, c, t0) in &mut cases {
        // Keep alive 1 s: the broker may give up after 1.5 s of silence [MQTT-3.1.2-24];
        // the will comes then, with sweep slack, well within 4 s.
        let left = Duration::from_secs(4).saturating_sub(t0.elapsed());
        let p = match w.recv_within(left) {
            Some(Packet::Publish(p)) => p,
            other => panic!("{v:?} {tag}: expected the will, got {other:?}"),
        };
        let at = t0.elapsed();
        assert!(
            at >= Duration::from_secs(1),
            "{v:?} {tag}: will after {at:?}"
        );
        assert_eq!(
            msg(&p),
            (&**topic, &b"timeout"[..], QoS::AtLeastOnce, false, false),
            "{v:?} {tag}"
        );
        w.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())));
        // The silent client was disconnected.
        assert!(c.closed_within(WAIT).is_some(), "{v:?} {tag}");
    }
}

#[test]
fn will_published_on_protocol_error() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            let l = v.level();
            let topic = format!("we/{l}{tag}");
            let mut w = watcher(&b, v, ws, &format!("w{l}{tag}"), &topic, QoS::AtLeastOnce);
            let id = b.id_on(cs, &format!("c{l}{tag}"));
            let mut c = b.client_with(
                v,
                &id,
                true,
                0,
                Some(will_msg(&topic, b"broken", QoS::AtLeastOnce, false)),
            );
            // Reserved packet type 0: the broker closes the connection [MQTT-4.8.0-1] and
            // that is an end without DISCONNECT.
            c.send_bytes(b"\x00\x00garbage");
            assert_eq!(c.expect_closed(), vec![], "{v:?} {tag}");
            let p = w.recv_publish();
            assert_eq!(
                msg(&p),
                (&*topic, &b"broken"[..], QoS::AtLeastOnce, false, false),
                "{v:?} {tag}"
            );
            w.expect_nothing();
        }
    }
}

/// Takeover [MQTT-3.1.4-2]: the old connection is closed without DISCONNECT. Its will is
/// published when the session ends with it, that is when either side is clean; when both
/// keep the session (clean session 0 on both), the session goes on and the will is not
/// published (mosquitto 2.0 does the same; 5.0 ties a will to the session's end).
#[test]
fn will_of_the_old_connection_on_takeover_follows_the_session() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, cs, tag) in PLACES {
            for (old_clean, new_clean) in
                [(true, true), (true, false), (false, true), (false, false)]
            {
                let l = v.level();
                let k = format!("{}{}", u8::from(old_clean), u8::from(new_clean));
                let topic = format!("wt/{l}{tag}{k}");
                let mut w = watcher(
                    &b,
                    v,
                    ws,
                    &format!("w{l}{tag}{k}"),
                    &topic,
                    QoS::AtLeastOnce,
                );
                let id = b.id_on(cs, &format!("c{l}{tag}{k}"));
                let mut old = b.client_with(
                    v,
                    &id,
                    old_clean,
                    0,
                    Some(will_msg(&topic, b"old", QoS::AtLeastOnce, false)),
                );
                let new = b.client_with(
                    v,
                    &id,
                    new_clean,
                    0,
                    Some(will_msg(&topic, b"new", QoS::AtLeastOnce, false)),
                );
                assert_eq!(old.expect_closed(), vec![], "{v:?} {tag}");
                if old_clean || new_clean {
                    let p = w.recv_publish();
                    assert_eq!(
                        msg(&p),
                        (&*topic, &b"old"[..], QoS::AtLeastOnce, false, false),
                        "{v:?} {tag} {k}"
                    );
                }
                w.expect_nothing();
                // The new connection's will belongs to the new connection: not published
                // when it disconnects normally.
                assert!(new.disconnect_and_wait().is_empty());
                w.expect_nothing();
                if !new_clean {
                    // Leave no persistent session behind for the next round.
                    b.client(v, &id, true).disconnect_and_wait();
                }
            }
        }
    }
}

#[test]
fn will_not_published_when_connect_is_refused() {
    let b = Broker::start(2);
    for v in V3 {
        for (ws, _, tag) in PLACES {
            let l = v.level();
            let topic = format!("wn/{l}{tag}");
            let mut w = watcher(&b, v, ws, &format!("w{l}{tag}"), &topic, QoS::AtLeastOnce);
            // Refused with "identifier rejected": 3.1.1 allows an empty client id only with
            // clean session 1 [MQTT-3.1.3-8]; 3.1 requires 1 to 23 characters.
            let mut c = b.raw(v);
            let will = Some(will_msg(&topic, b"refused", QoS::AtLeastOnce, false));
            let ack = c.connect_raw_ack(connect_packet(v, "", false, 0, will));
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x02], "{v:?} {tag}");
            assert_eq!(c.expect_closed(), vec![]);
            // The will is discarded with the refused connection.
            let mut m = b.client(v, &b.id_on(ws, &format!("m{l}{tag}")), true);
            m.publish_acked(&topic, b"marker", QoS::AtLeastOnce, false, 1);
            let p = w.recv_publish();
            assert_eq!(&p.payload[..], b"marker", "{v:?} {tag}");
            w.expect_nothing();
        }
    }
}
