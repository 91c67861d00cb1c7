//! Regression tests for the broker-core bugs: a closed connection that stalls its shard, a
//! late SUBSCRIBE that writes into another client's session, keep alive against live slow
//! clients, retained messages after UNSUBACK, reordered deliveries while an ack is held,
//! control traffic held back by data congestion, panicking connection tasks, the session
//! limit. Over real TCP, with two shards, clients on the same and on different shards.
//!
//! Several races need the pending window of a cross-shard round trip to be long. They get
//! it from [`Flood`]: a stuck subscriber on a shard and a publisher flooding it make that
//! shard hold its publishers (and, before the fix, every mesh message to it) back for
//! about a second, until the subscriber is marked slow.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;
use surgemq::server::{Authenticator, Server};

/// Makes `shard` hold back its publishers for about a second (see the module docs).
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _stuck: Raw,
}

impl Flood {
    fn start(b: &Broker, shard: usize, tag: &str) -> Flood {
        let topic = format!("flood/{tag}");
        let mut stuck = b.client(V311, &b.id_on(shard, &format!("stuck-{tag}")), true);
        stuck.subscribe(1, &[(&topic, QoS::AtMostOnce)]);
        // The stuck subscriber never reads again.
        let mut publ = b.client(V311, &b.id_on(shard, &format!("flooder-{tag}")), true);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let mut frame = BytesMut::new();
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new(topic.as_str()).unwrap(),
            packet_id: None,
            properties: Properties::new(),
            payload: bytes::Bytes::from(vec![7u8; 1024]),
        })
        .encode(V311, &mut frame)
        .unwrap();
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 64)
            .collect();
        publ.stream
            .set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // A held-back publisher's writes time out: keep trying until told to stop.
                let _ = publ.stream.write_all(&batch);
            }
        });
        // Let the stuck subscriber's socket buffers fill and its output pass the mark.
        std::thread::sleep(Duration::from_millis(300));
        Flood {
            stop,
            thread: Some(thread),
            _stuck: stuck,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bug 1a: a client subscribed to its own will topic closes; the will is routed to its own
/// dead connection, which was marked congested for good, and its shard never read a
/// publisher again.
#[test]
fn a_client_receiving_its_own_will_does_not_stall_its_shard() {
    let b = Broker::with(2, |c| c.limits.max_write_buffer = 4096);
    for v in V3 {
        for shard in 0..2 {
            let l = v.level();
            let topic = format!("self/{l}{shard}");
            let will = will_msg(&topic, &[1u8; 3000], QoS::AtMostOnce, false);
            let mut w = b.client_with(v, &b.id_on(shard, &format!("w{l}")), true, 0, Some(will));
            w.subscribe(1, &[(&format!("self/{l}{shard}"), QoS::AtMostOnce)]);
            drop(w);
            std::thread::sleep(Duration::from_millis(200));
            // Publishers on that shard are still read.
            let mut p = b.client(v, &b.id_on(shard, &format!("p{l}")), true);
            p.publish_acked("any/topic", b"x", QoS::AtLeastOnce, false, 1);
            p.ping();
        }
    }
}

/// Bug 1b: a client SUBSCRIBEs and closes before the other shards answer; the SUBACK was
/// written into its dead buffer, which was marked congested for good.
#[test]
fn a_client_closing_mid_subscribe_does_not_stall_its_shard() {
    let b = Broker::with(2, |c| {
        c.limits.max_write_buffer = 4096;
        c.limits.max_filters_per_subscribe = 4000;
    });
    for v in V3 {
        for round in 0..5 {
            let l = v.level();
            let mut s = b.raw(v);
            s.connect(&b.id_on(0, &format!("ms{l}")), true, 0, None);
            // About 3000 new filters: a SUBACK of over half the write buffer.
            let filters: Vec<Subscription> = (0..3000)
                .map(|i| Subscription {
                    filter: TopicFilter::new(format!("ms/{l}/{round}/{i}")).unwrap(),
                    options: SubscriptionOptions::new(QoS::AtMostOnce),
                })
                .collect();
            s.send(&Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                subscriptions: filters,
                properties: Properties::new(),
            }));
            drop(s);
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut p = b.client(v, &b.id_on(0, &format!("mp{}", v.level())), true);
        p.publish_acked("any/topic", b"x", QoS::AtLeastOnce, false, 1);
        p.ping();
    }
}

/// Bug 2 (and 10): a SUBSCRIBE completes after its (clean) session is gone and its slot
/// was reused by a persistent session; the retained message of the filter must not land in
/// the newcomer's session (it was delivered there, and resent to it on resume).
#[test]
fn a_late_subscribe_does_not_deliver_into_the_session_that_reused_its_slot() {
    let b = Broker::with(2, |c| c.limits.max_write_buffer = 64 * 1024);
    for v in V3 {
        let l = v.level();
        let topic = topic_on(1, 2, &format!("late{l}/"));
        let mut r = b.client(v, &b.id_on(0, &format!("lr{l}")), true);
        r.publish_acked(&topic, b"retained", QoS::AtLeastOnce, true, 1);
        let flood = Flood::start(&b, 1, &format!("late{l}"));
        let mut s = b.raw(v);
        s.connect(&b.id_on(0, &format!("ls{l}")), true, 0, None);
        s.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new(format!("late{l}/#")).unwrap(),
                options: SubscriptionOptions::new(QoS::AtLeastOnce),
            }],
            properties: Properties::new(),
        }));
        drop(s);
        std::thread::sleep(Duration::from_millis(20));
        let nid = b.id_on(0, &format!("ln{l}"));
        let mut n = b.client(v, &nid, false);
        assert_eq!(n.recv_within(Duration::from_millis(1500)), None, "{v:?}");
        drop(flood);
        n.disconnect_and_wait();
        // Resumed: nothing to resend, since nothing was ever in flight for it.
        let mut n = b.raw(v);
        n.connect(&nid, false, 0, None);
        assert_eq!(n.recv_within(QUIET), None, "{v:?}: resent on resume");
        n.disconnect_and_wait();
        b.client(v, &nid, true).disconnect_and_wait();
    }
}

/// Bug 10: a SUBACK does not wait for another shard's data congestion.
#[test]
fn control_traffic_is_not_held_back_by_data_congestion() {
    let b = Broker::start(2);
    for v in V3 {
        let l = v.level();
        let flood = Flood::start(&b, 1, &format!("ctl{l}"));
        let mut s = b.client(v, &b.id_on(0, &format!("cs{l}")), true);
        let t = Instant::now();
        s.subscribe(1, &[(&format!("ctl{l}/new/filter"), QoS::AtLeastOnce)]);
        let took = t.elapsed();
        drop(flood);
        assert!(
            took < Duration::from_millis(400),
            "{v:?}: SUBACK took {took:?} while shard 1 held its publishers back"
        );
    }
}

/// Bug 3: a slow subscriber that sends PINGREQ on time, but whose task is busy writing to
/// it, is alive [MQTT-3.1.2-24]: its packets wait in the socket.
#[test]
fn keep_alive_counts_packets_waiting_in_the_socket() {
    let b = Broker::with(2, |c| c.limits.max_write_buffer = 64 * 1024);
    for (ss, ps) in [(0, 0), (0, 1)] {
        let mut s = b.client_with(V311, &b.id_on(ss, &format!("ka{ps}")), true, 2, None);
        s.subscribe(1, &[(&format!("ka/{ps}"), QoS::AtMostOnce)]);
        let mut p = b.client(V311, &b.id_on(ps, &format!("kp{ps}")), true);
        let mut frame = BytesMut::new();
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new(format!("ka/{ps}")).unwrap(),
            packet_id: None,
            properties: Properties::new(),
            payload: bytes::Bytes::from(vec![9u8; 1024]),
        })
        .encode(V311, &mut frame)
        .unwrap();
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 64)
            .collect();
        p.stream
            .set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // 6 s = 3 keep-alive periods, with a PINGREQ every second and nothing read.
        let start = Instant::now();
        let mut next_ping = start;
        while start.elapsed() < Duration::from_secs(6) {
            let _ = p.stream.write_all(&batch);
            if Instant::now() >= next_ping {
                s.send(&Packet::PingReq);
                next_ping += Duration::from_secs(1);
            }
        }
        // Still open: read until a PINGRESP shows up.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "no PINGRESP");
            match s.recv_within(Duration::from_secs(5)) {
                Some(Packet::PingResp) => break,
                Some(_) => {}
                None => panic!("connection silent"),
            }
        }
    }
}

/// Bug 6: SUBSCRIBE and UNSUBSCRIBE of the same filter pipelined: UNSUBACK comes after
/// SUBACK, and no retained message of the filter follows the UNSUBACK [MQTT-3.10.4-2].
#[test]
fn no_retained_message_after_unsuback() {
    let b = Broker::start(2);
    for v in V3 {
        for (ss, rs) in [(0, 1), (1, 1)] {
            let l = v.level();
            let topic = topic_on(rs, 2, &format!("un{l}{ss}/"));
            let mut r = b.client(v, &b.id_on(0, &format!("ur{l}{ss}")), true);
            r.publish_acked(&topic, b"kept", QoS::AtLeastOnce, true, 1);
            let mut s = b.client(v, &b.id_on(ss, &format!("us{l}{ss}")), true);
            let filter = TopicFilter::new(format!("un{l}{ss}/#")).unwrap();
            let mut bytes = BytesMut::new();
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                subscriptions: vec![Subscription {
                    filter: filter.clone(),
                    options: SubscriptionOptions::new(QoS::AtLeastOnce),
                }],
                properties: Properties::new(),
            })
            .encode(v, &mut bytes)
            .unwrap();
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(2),
                filters: vec![filter],
                properties: Properties::new(),
            })
            .encode(v, &mut bytes)
            .unwrap();
            s.send_bytes(&bytes);
            let mut seen = Vec::new();
            while let Some(p) = s.recv_within(QUIET) {
                seen.push(p);
            }
            let kinds: Vec<PacketType> = seen.iter().map(Packet::packet_type).collect();
            let suback = kinds.iter().position(|k| *k == PacketType::SubAck);
            let unsuback = kinds.iter().position(|k| *k == PacketType::UnsubAck);
            assert!(
                suback.is_some() && unsuback.is_some() && suback < unsuback,
                "{v:?} {ss}: {kinds:?}"
            );
            assert!(
                !kinds[unsuback.unwrap()..].contains(&PacketType::Publish),
                "{v:?} {ss}: retained after UNSUBACK: {kinds:?}"
            );
        }
    }
}

/// Bug 5: while a subscriber's own retained PUBLISH waits for its ack (the topic is stored
/// on a shard that is held back), the deliveries its PUBACKs let into the window are not
/// held behind that ack, so a later delivery cannot overtake them [MQTT-4.6.0-6].
#[test]
fn deliveries_keep_their_order_while_an_ack_is_held() {
    let b = Broker::with(2, |c| {
        c.limits.max_inflight = 2;
        c.limits.max_write_buffer = 64 * 1024;
    });
    for v in V3 {
        let l = v.level();
        let topic = format!("ord{l}/t");
        let mut s = b.client(v, &b.id_on(0, &format!("os{l}")), true);
        s.subscribe(1, &[(&topic, QoS::AtLeastOnce)]);
        let mut p = b.client(v, &b.id_on(0, &format!("op{l}")), true);
        for i in 1..=3u16 {
            p.publish_acked(
                &topic,
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i,
            );
        }
        let m1 = s.recv_publish_noack();
        let m2 = s.recv_publish_noack();
        assert_eq!((&m1.payload[..], &m2.payload[..]), (&b"m1"[..], &b"m2"[..]));
        let flood = Flood::start(&b, 1, &format!("ord{l}"));
        // The subscriber's own retained PUBLISH (stored on the held-back shard 1), then its
        // acks for m1 and m2, in one write.
        let mut bytes = BytesMut::new();
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: TopicName::new(topic_on(1, 2, &format!("ordr{l}/"))).unwrap(),
            packet_id: Some(pid(9)),
            properties: Properties::new(),
            payload: bytes::Bytes::from_static(b"r"),
        })
        .encode(v, &mut bytes)
        .unwrap();
        for id in [m1.packet_id.unwrap(), m2.packet_id.unwrap()] {
            Packet::PubAck(Ack::new(id)).encode(v, &mut bytes).unwrap();
        }
        s.send_bytes(&bytes);
        std::thread::sleep(Duration::from_millis(50));
        p.publish_acked(&topic, b"m4", QoS::AtLeastOnce, false, 4);
        let mut got = Vec::new();
        while got.len() < 2 {
            match s.recv_within(WAIT).expect("deliveries") {
                Packet::Publish(m) => {
                    s.send(&Packet::PubAck(Ack::new(m.packet_id.unwrap())));
                    got.push(String::from_utf8(m.payload.to_vec()).unwrap());
                }
                Packet::PubAck(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(flood);
        assert_eq!(got, vec!["m3", "m4"], "{v:?}");
    }
}

/// Panics in the authentication hook for user name "boom".
struct Boom;

impl Authenticator for Boom {
    fn authenticate(
        &self,
        _: &str,
        username: Option<&str>,
        _: Option<&[u8]>,
    ) -> Result<(), ReasonCode> {
        if username == Some("boom") {
            panic!("test authenticator panics");
        }
        Ok(())
    }
}

/// Bug 11: a connection task that panics (a bug) is unregistered: it no longer counts
/// against `max_connections`.
#[test]
fn a_panicking_connection_task_is_unregistered() {
    let cfg = Config {
        listeners: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 1,
        log_level: "error".into(),
        limits: surgemq::config::Limits {
            max_connections: 2,
            ..Default::default()
        },
        ..Config::default()
    };
    let handle = Server::new(cfg)
        .with_authenticator(Boom)
        .start()
        .expect("broker starts");
    let addr = handle.local_addrs()[0];
    for i in 0..3 {
        let mut c = Raw::open(addr, V311);
        c.send(&Packet::Connect(Box::new(Connect {
            version: V311,
            clean_start: true,
            keep_alive: 0,
            client_id: format!("boom{i}").into(),
            will: None,
            username: Some("boom".into()),
            password: None,
            properties: Properties::new(),
        })));
        assert!(c.closed_within(WAIT).is_some(), "closed after the panic");
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut ok = Raw::open(addr, V311);
    let ack = ok.connect("fine", true, 0, None);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    drop(ok);
    let summary = handle.shutdown();
    assert_eq!(summary.connection_panics, 3);
}

/// Bug 8: `max_sessions` bounds the sessions of a shard; a new one beyond it is refused
/// (3.x: CONNACK 3), a client resuming its own session is admitted.
#[test]
fn max_sessions_refuses_new_sessions_only() {
    let b = Broker::with(1, |c| c.limits.max_sessions = 2);
    for v in V3 {
        let l = v.level();
        b.client(v, &format!("ms1{l}"), false).disconnect_and_wait();
        b.client(v, &format!("ms2{l}"), false).disconnect_and_wait();
        let mut c = b.raw(v);
        let ack = c.connect(&format!("ms3{l}"), true, 0, None);
        assert_eq!(ack.reason.to_connack_v3(), 3, "{v:?}");
        assert!(c.closed_within(WAIT).is_some());
        // Resuming is always admitted; a clean start on an existing id replaces it.
        b.client(v, &format!("ms1{l}"), false).disconnect_and_wait();
        b.client(v, &format!("ms1{l}"), true).disconnect_and_wait();
        b.client(v, &format!("ms2{l}"), true).disconnect_and_wait();
    }
}
