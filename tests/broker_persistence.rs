//! Durable sessions and retained messages (`[persistence]`), over TCP with two shards:
//! what a restart keeps (subscriptions, queued and in-flight QoS 1/2 messages with their
//! packet ids, PUBRELs owed, incoming QoS 2 ids, retained messages), re-homing on another
//! shard count, expiry while down, compaction, and that clean sessions never touch the
//! disk. Each behaviour runs for every protocol version it exists in, with clients on the
//! same shard and on different shards.
//!
//! A restart here is a shutdown and a new broker on the same directory; what a crash
//! (SIGKILL) keeps is `persistence_crash.rs`.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use common::*;
use surgemq::config::{Config, PersistMode};
use surgemq::protocol::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// (subscriber shard, publisher shard): different shards, then the same shard.
const PLACES: [(usize, usize); 2] = [(0, 1), (1, 1)];

fn durable(shards: usize, dir: &std::path::Path, mode: PersistMode) -> Broker {
    let dir = dir.to_owned();
    Broker::with(shards, move |c: &mut Config| {
        c.persistence.mode = mode;
        c.persistence.dir = dir;
        c.persistence.sync_interval = 10;
    })
}

/// Stops the broker (a clean shutdown) and returns its counters.
fn stop(mut b: Broker) -> surgemq::server::ShardSummary {
    b.handle.take().unwrap().shutdown()
}

/// A persistent session (3.x clean session 0; 5.0 Session Expiry "never").
fn persistent(b: &Broker, v: ProtocolVersion, id: &str, present: bool) -> Raw {
    let mut c = b.raw(v);
    let mut properties = Properties::new();
    if v.is_v5() {
        properties.get_mut().session_expiry_interval = Some(u32::MAX);
    }
    let ack = c.connect_with(Connect {
        version: v,
        clean_start: false,
        keep_alive: 0,
        client_id: bytestring::ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties,
    });
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "CONNECT of {id}");
    // 3.1 has no session present flag.
    if v != ProtocolVersion::V3_1 {
        assert_eq!(
            ack.session_present, present,
            "session present of {id} ({v:?})"
        );
    }
    c
}

fn payload_of(p: &Publish) -> String {
    String::from_utf8(p.payload.to_vec()).unwrap()
}

#[test]
fn queued_messages_subscriptions_and_retained_survive_a_restart() {
    for v in VERSIONS {
        for (ss, ps) in PLACES {
            let dir = client_env::TempDir::new("persist-queued");
            let b = durable(2, &dir.path, PersistMode::Sync);
            let sid = b.id_on(ss, &format!("sub{}{ss}{ps}", v.level()));
            let pub_id = b.id_on(ps, &format!("pub{}{ss}{ps}", v.level()));
            let mut s = persistent(&b, v, &sid, false);
            assert_eq!(
                s.subscribe(1, &[("q/#", QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            s.disconnect_and_wait();
            let mut p = b.client(v, &pub_id, true);
            p.publish_acked("q/1", b"one", QoS::AtLeastOnce, false, 1);
            p.publish_acked("q/2", b"two", QoS::ExactlyOnce, false, 2);
            p.publish_acked("q/0", b"zero", QoS::AtMostOnce, false, 3);
            p.publish_acked("r/t", b"kept", QoS::AtLeastOnce, true, 4);
            p.publish_acked("q/3", b"three", QoS::AtLeastOnce, false, 5);
            p.disconnect_and_wait();
            stop(b);

            let b = durable(2, &dir.path, PersistMode::Sync);
            let mut s = persistent(&b, v, &sid, true);
            let got: Vec<(String, QoS, String)> = (0..3)
                .map(|_| {
                    let p = s.recv_publish();
                    (p.topic.to_string(), p.qos, payload_of(&p))
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    ("q/1".into(), QoS::AtLeastOnce, "one".into()),
                    ("q/2".into(), QoS::ExactlyOnce, "two".into()),
                    ("q/3".into(), QoS::AtLeastOnce, "three".into()),
                ],
                "{v:?} {ss}{ps}: queued QoS 1/2 kept in order, QoS 0 not queued"
            );
            s.expect_nothing();
            // The subscription itself survived: a new message reaches the session.
            let mut p = b.client(v, &pub_id, true);
            p.publish_acked("q/4", b"four", QoS::AtLeastOnce, false, 6);
            assert_eq!(payload_of(&s.recv_publish()), "four");
            // The retained message too, for a new subscriber.
            let mut n = b.client(v, &b.id_on(ps, "fresh"), true);
            assert_eq!(
                n.subscribe(1, &[("r/#", QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let r = n.recv_publish();
            assert!(r.retain && payload_of(&r) == "kept", "{v:?}: {r:?}");
            drop(b);
        }
    }
}

#[test]
fn unacknowledged_deliveries_are_resent_with_their_ids_after_a_restart() {
    for v in VERSIONS {
        for (ss, ps) in PLACES {
            let dir = client_env::TempDir::new("persist-inflight");
            let b = durable(2, &dir.path, PersistMode::Sync);
            let sid = b.id_on(ss, &format!("s{}{ss}{ps}", v.level()));
            let mut s = persistent(&b, v, &sid, false);
            s.auto_pubcomp = false;
            assert_eq!(
                s.subscribe(1, &[("f/#", QoS::ExactlyOnce)]),
                vec![ReasonCode(2)]
            );
            let mut p = b.client(v, &b.id_on(ps, "p"), true);
            p.publish_acked("f/a", b"a", QoS::AtLeastOnce, false, 1);
            p.publish_acked("f/b", b"b", QoS::ExactlyOnce, false, 2);
            p.publish_acked("f/c", b"c", QoS::ExactlyOnce, false, 3);
            let a = s.recv_publish_noack();
            let bb = s.recv_publish_noack();
            let c = s.recv_publish_noack();
            // `c` is received (PUBREC) and its PUBREL arrives; it is not completed.
            s.send(&Packet::PubRec(Ack::new(c.packet_id.unwrap())));
            assert_eq!(
                s.recv(),
                Packet::PubRel(Ack::new(c.packet_id.unwrap())),
                "{v:?}"
            );
            drop(s);
            drop(p);
            stop(b);

            let b = durable(2, &dir.path, PersistMode::Sync);
            let mut s = persistent(&b, v, &sid, true);
            s.auto_pubcomp = false;
            // In their original order [MQTT-4.4.0-1]: a and b again, with DUP and their
            // ids, and c's PUBREL.
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(s.recv());
            }
            let resent = |p: &Publish| {
                Packet::Publish(Publish {
                    dup: true,
                    ..p.clone()
                })
            };
            assert_eq!(got[0], resent(&a), "{v:?} {ss}{ps}");
            assert_eq!(got[1], resent(&bb), "{v:?} {ss}{ps}");
            assert_eq!(got[2], Packet::PubRel(Ack::new(c.packet_id.unwrap())));
            s.send(&Packet::PubAck(Ack::new(a.packet_id.unwrap())));
            s.send(&Packet::PubRec(Ack::new(bb.packet_id.unwrap())));
            assert_eq!(s.recv(), Packet::PubRel(Ack::new(bb.packet_id.unwrap())));
            s.send(&Packet::PubComp(Ack::new(bb.packet_id.unwrap())));
            s.send(&Packet::PubComp(Ack::new(c.packet_id.unwrap())));
            s.disconnect_and_wait();
            stop(b);
            // Completed flows stay completed.
            let b = durable(2, &dir.path, PersistMode::Sync);
            let mut s = persistent(&b, v, &sid, true);
            s.expect_nothing();
            drop(b);
        }
    }
}

#[test]
fn an_incoming_qos2_id_survives_a_restart_and_is_not_forwarded_twice() {
    for v in VERSIONS {
        for (ss, ps) in PLACES {
            let dir = client_env::TempDir::new("persist-qos2in");
            let b = durable(2, &dir.path, PersistMode::Sync);
            let pid_ = b.id_on(ps, &format!("p{}{ss}{ps}", v.level()));
            let mut s = b.client(v, &b.id_on(ss, "watch"), true);
            assert_eq!(
                s.subscribe(1, &[("e/#", QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let mut p = persistent(&b, v, &pid_, false);
            p.publish("e/x", b"once", QoS::ExactlyOnce, false, Some(7));
            assert_eq!(p.recv(), Packet::PubRec(Ack::new(pid(7))));
            assert_eq!(payload_of(&s.recv_publish()), "once");
            drop(p);
            drop(s);
            stop(b);

            let b = durable(2, &dir.path, PersistMode::Sync);
            let mut s = b.client(v, &b.id_on(ss, "watch"), true);
            assert_eq!(
                s.subscribe(1, &[("e/#", QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            let mut p = persistent(&b, v, &pid_, true);
            // The client did not see PUBCOMP: it sends the PUBLISH again [MQTT-4.4.0-1].
            p.publish_flags("e/x", b"once", QoS::ExactlyOnce, false, true, Some(7));
            assert_eq!(p.recv(), Packet::PubRec(Ack::new(pid(7))));
            s.expect_nothing();
            p.send(&Packet::PubRel(Ack::new(pid(7))));
            assert_eq!(p.recv(), Packet::PubComp(Ack::new(pid(7))), "{v:?}");
            drop(b);
        }
    }
}

#[test]
fn a_restart_with_another_shard_count_keeps_every_session() {
    let v = ProtocolVersion::V3_1_1;
    let dir = client_env::TempDir::new("persist-rehome");
    let ids: Vec<String> = (0..12).map(|i| format!("rehome-{i}")).collect();
    let b = durable(2, &dir.path, PersistMode::Sync);
    for id in &ids {
        let mut s = persistent(&b, v, id, false);
        assert_eq!(
            s.subscribe(1, &[(&format!("h/{id}"), QoS::AtLeastOnce)]),
            vec![ReasonCode(1)]
        );
        s.disconnect_and_wait();
    }
    let mut p = b.client(v, "rehome-pub", true);
    for (i, id) in ids.iter().enumerate() {
        p.publish_acked(
            &format!("h/{id}"),
            id.as_bytes(),
            QoS::AtLeastOnce,
            false,
            i as u16 + 1,
        );
        p.publish_acked(
            &format!("ret/{i}"),
            id.as_bytes(),
            QoS::AtLeastOnce,
            true,
            100 + i as u16,
        );
    }
    drop(p);
    stop(b);
    for shards in [3, 1] {
        let b = durable(shards, &dir.path, PersistMode::Sync);
        for id in &ids {
            let mut s = persistent(&b, v, id, true);
            if shards == 3 {
                let m = s.recv_publish();
                assert_eq!(payload_of(&m), *id, "{shards} shards");
            }
            s.expect_nothing();
            s.disconnect_and_wait();
        }
        // Retained messages moved to their topics' new owners.
        let mut n = b.client(v, "rehome-check", true);
        assert_eq!(
            n.subscribe(1, &[("ret/#", QoS::AtMostOnce)]),
            vec![ReasonCode(0)]
        );
        let mut got: Vec<String> = (0..ids.len())
            .map(|_| payload_of(&n.recv_publish()))
            .collect();
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want, "{shards} shards");
        drop(n);
        stop(b);
    }
}

#[test]
fn a_session_that_expired_while_the_broker_was_down_is_gone() {
    let v = ProtocolVersion::V5;
    let dir = client_env::TempDir::new("persist-expiry");
    let b = durable(2, &dir.path, PersistMode::Sync);
    for (id, expiry) in [("short", 1u32), ("long", 3600)] {
        let mut c = b.raw(v);
        let mut properties = Properties::new();
        properties.get_mut().session_expiry_interval = Some(expiry);
        let ack = c.connect_with(Connect {
            version: v,
            clean_start: true,
            keep_alive: 0,
            client_id: bytestring::ByteString::from(id),
            will: None,
            username: None,
            password: None,
            properties,
        });
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        c.subscribe(1, &[("x", QoS::AtLeastOnce)]);
        c.disconnect_and_wait();
    }
    stop(b);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let b = durable(2, &dir.path, PersistMode::Sync);
    for (id, present) in [("short", false), ("long", true)] {
        let mut c = b.raw(v);
        let ack = c.connect(id, false, 0, None);
        assert_eq!(ack.session_present, present, "{id}");
    }
}

#[test]
fn clean_sessions_never_touch_the_disk() {
    for v in VERSIONS {
        let dir = client_env::TempDir::new("persist-clean");
        let b = durable(2, &dir.path, PersistMode::Sync);
        let mut s = b.client(v, &b.id_on(0, "cs"), true);
        s.subscribe(1, &[("c/#", QoS::ExactlyOnce)]);
        let mut p = b.client(v, &b.id_on(1, "cp"), true);
        for i in 1..=20u16 {
            let q = [QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(i % 2)];
            p.publish_acked("c/t", b"x", q, false, i);
            s.recv_publish();
        }
        p.disconnect_and_wait();
        s.disconnect_and_wait();
        let summary = stop(b);
        assert_eq!(
            (summary.persist_commits, summary.persist_bytes),
            (0, 0),
            "{v:?}"
        );
    }
}

#[test]
fn periodic_mode_keeps_what_was_synced() {
    let v = ProtocolVersion::V3_1_1;
    let dir = client_env::TempDir::new("persist-periodic");
    let b = durable(2, &dir.path, PersistMode::Periodic);
    let sid = b.id_on(0, "per");
    let mut s = persistent(&b, v, &sid, false);
    s.subscribe(1, &[("p/#", QoS::AtLeastOnce)]);
    s.disconnect_and_wait();
    let mut p = b.client(v, &b.id_on(1, "perp"), true);
    p.publish_acked("p/1", b"1", QoS::AtLeastOnce, false, 1);
    drop(p);
    // A clean shutdown syncs what is left.
    stop(b);
    let b = durable(2, &dir.path, PersistMode::Periodic);
    let mut s = persistent(&b, v, &sid, true);
    assert_eq!(payload_of(&s.recv_publish()), "1");
}

#[test]
fn a_log_past_its_bound_is_compacted_and_still_restores() {
    let v = ProtocolVersion::V3_1_1;
    let dir = client_env::TempDir::new("persist-compact");
    let start = |dir: &std::path::Path| {
        let dir = dir.to_owned();
        Broker::with(2, move |c: &mut Config| {
            persist_sync(c, &dir);
            c.persistence.compact_bytes = 1 << 20;
        })
    };
    let b = start(&dir.path);
    let sid = b.id_on(0, "comp");
    let mut s = persistent(&b, v, &sid, false);
    s.subscribe(1, &[("k/#", QoS::AtLeastOnce)]);
    let mut p = b.client(v, &b.id_on(1, "compp"), true);
    let payload = vec![b'z'; 2000];
    // About 3 MiB of logged messages, all acknowledged by the subscriber but the last.
    for i in 0..1500u16 {
        p.publish_acked("k/t", &payload, QoS::AtLeastOnce, false, i % 60000 + 1);
        let m = s.recv_publish();
        assert_eq!(m.payload.len(), payload.len());
    }
    p.publish_acked("k/last", b"last", QoS::AtLeastOnce, false, 1);
    let last = s.recv_publish_noack();
    assert_eq!(payload_of(&last), "last");
    drop(s);
    drop(p);
    let summary = stop(b);
    assert!(summary.persist_compactions >= 1, "{summary:?}");
    let size: u64 = std::fs::read_dir(dir.path.join("shard-0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(size < 2 << 20, "shard-0 holds {size} bytes");
    let b = start(&dir.path);
    let mut s = persistent(&b, v, &sid, true);
    let again = s.recv_publish();
    assert_eq!((payload_of(&again), again.dup), ("last".to_owned(), true));
    s.expect_nothing();
}

#[test]
fn a_log_over_max_disk_bytes_refuses_new_messages_and_loses_none() {
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for (ss, ps) in PLACES {
            let dir = client_env::TempDir::new("persist-quota");
            let start = |dir: &std::path::Path| {
                let dir = dir.to_owned();
                Broker::with(2, move |c: &mut Config| {
                    persist_sync(c, &dir);
                    // 1 MiB per shard (the least allowed): about 15 of these messages.
                    c.persistence.max_disk_bytes = 2 << 20;
                })
            };
            let b = start(&dir.path);
            let sid = b.id_on(ss, &format!("q{}{ss}{ps}", v.level()));
            let mut s = persistent(&b, v, &sid, false);
            s.subscribe(1, &[("q/#", QoS::AtLeastOnce)]);
            s.disconnect_and_wait();
            let mut p = b.client(v, &b.id_on(ps, "qp"), true);
            // Each message's commit nearly fills 64 KiB, so a compaction (which drops only
            // padding) cannot bring the log back under the limit.
            let payload = vec![b'q'; 64_000];
            let mut accepted = Vec::new();
            // Until three refusals in a row: the first ones may be followed by a
            // compaction that gives the commits' padding back.
            let mut refused_in_a_row = 0;
            for i in 1..=100u16 {
                p.publish(
                    &format!("q/{i}"),
                    &payload,
                    QoS::AtLeastOnce,
                    false,
                    Some(i),
                );
                match p.recv_within(std::time::Duration::from_millis(700)) {
                    Some(Packet::PubAck(a)) if a.reason.is_success() => {
                        accepted.push(i);
                        refused_in_a_row = 0;
                    }
                    Some(Packet::PubAck(a)) => {
                        assert!(v.is_v5(), "3.x gets no negative ack");
                        assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED);
                        refused_in_a_row += 1;
                        // Time for the compaction the refusal set off.
                        std::thread::sleep(std::time::Duration::from_millis(300));
                    }
                    None => {
                        assert!(!v.is_v5(), "5.0 is told why");
                        refused_in_a_row += 1;
                    }
                    other => panic!("{other:?}"),
                }
                if refused_in_a_row == 3 {
                    break;
                }
            }
            assert_eq!(
                refused_in_a_row, 3,
                "{v:?} {ss}{ps}: the limit was never reached"
            );
            assert!(!accepted.is_empty());
            // A persistent subscription is refused too, while the log is full.
            let mut s2 = persistent(&b, v, &b.id_on(ps, "qs2"), false);
            let codes = s2.subscribe(1, &[("z", QoS::AtLeastOnce)]);
            let want = if v.is_v5() { 0x97 } else { 0x80 };
            assert_eq!(codes, vec![ReasonCode(want)], "{v:?}");
            drop(s2);
            drop(p);
            let summary = stop(b);
            assert!(summary.persist_refused >= 2, "{summary:?}");
            // Every acknowledged message is there after a restart, and nothing else.
            let b = start(&dir.path);
            let mut s = persistent(&b, v, &sid, true);
            let got: Vec<String> = accepted
                .iter()
                .map(|_| s.recv_publish().topic.to_string())
                .collect();
            let want: Vec<String> = accepted.iter().map(|i| format!("q/{i}")).collect();
            assert_eq!(got, want, "{v:?} {ss}{ps}");
            s.expect_nothing();
            drop(b);
        }
    }
}

/// A 5.0 connection with a will delayed `delay` seconds and a session kept an hour.
fn with_delayed_will(b: &Broker, id: &str, delay: u32, present: bool) -> Raw {
    let mut c = b.raw(ProtocolVersion::V5);
    let mut will = will_msg(&format!("will/{id}"), b"gone", QoS::AtLeastOnce, false);
    will.properties.get_mut().will_delay_interval = Some(delay);
    let mut properties = Properties::new();
    properties.get_mut().session_expiry_interval = Some(3600);
    let ack = c.connect_with(Connect {
        version: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 0,
        client_id: bytestring::ByteString::from(id),
        will: Some(will),
        username: None,
        password: None,
        properties,
    });
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(ack.session_present, present, "{id}");
    c
}

#[test]
fn a_delayed_will_waits_out_its_delay_across_a_restart_and_a_resume_cancels_it() {
    let dir = client_env::TempDir::new("persist-will");
    let b = durable(2, &dir.path, PersistMode::Sync);
    // A persistent watcher: a will published while it is away (at the shutdown) would
    // wait in its queue and reach it as soon as it is back.
    let watcher = b.id_on(1, "willwatch");
    let mut w = persistent(&b, ProtocolVersion::V5, &watcher, false);
    w.subscribe(1, &[("will/#", QoS::AtLeastOnce)]);
    // Both lose their connection (no DISCONNECT): their wills wait 5 s, room for a slow
    // restart before "back" resumes.
    let dropped = std::time::Instant::now();
    for id in ["late", "back"] {
        drop(with_delayed_will(&b, id, 5, false));
    }
    // Not before their delay; and a shutdown does not publish them (their sessions live
    // on in the log: had it, the restarted broker would have nothing to publish below).
    w.expect_nothing();
    w.disconnect_and_wait();
    stop(b);
    let b = durable(2, &dir.path, PersistMode::Sync);
    let mut w = persistent(&b, ProtocolVersion::V5, &watcher, true);
    // "back" is resumed in time: its will is not published [MQTT-3.1.3-10].
    let back = with_delayed_will(&b, "back", 5, true);
    // "late" is published once its delay has passed, not before.
    let p = w.recv_within(std::time::Duration::from_secs(10));
    let at = dropped.elapsed();
    match p {
        Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "will/late"),
        other => panic!("expected the will of late, got {other:?}"),
    }
    assert!(
        at >= std::time::Duration::from_millis(4900),
        "published after {at:?}"
    );
    w.expect_nothing();
    drop(back);
}

#[test]
fn a_directory_that_cannot_be_used_is_a_clear_start_error() {
    // Under /proc nothing can be created, even as root.
    let mut cfg = Config {
        listeners: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 2,
        log_level: "warn".into(),
        ..Config::default()
    };
    persist_sync(
        &mut cfg,
        std::path::Path::new("/proc/surgemq-cannot-be-here"),
    );
    match surgemq::server::Server::new(cfg).start() {
        Ok(h) => {
            h.shutdown();
            panic!("started on a directory it cannot write");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with("persistence:") && text.contains("/proc/surgemq-cannot-be-here"),
                "{text}"
            );
        }
    }
}

#[test]
fn a_delayed_will_survives_a_compaction() {
    let dir = client_env::TempDir::new("persist-willcompact");
    let start = |dir: &std::path::Path| {
        let dir = dir.to_owned();
        Broker::with(2, move |c: &mut Config| {
            persist_sync(c, &dir);
            c.persistence.compact_bytes = 1 << 20;
        })
    };
    let b = start(&dir.path);
    let watcher = b.id_on(1, "cwatch");
    let mut w = persistent(&b, ProtocolVersion::V5, &watcher, false);
    w.subscribe(1, &[("will/#", QoS::AtLeastOnce)]);
    let dropped = std::time::Instant::now();
    drop(with_delayed_will(&b, "compacted", 10, false));
    // Enough acknowledged traffic on the will's shard to compact its log.
    let shard = surgemq::server::home_shard("compacted", 2);
    let mut s = persistent(&b, ProtocolVersion::V3_1_1, &b.id_on(shard, "csub"), false);
    s.subscribe(1, &[("k/#", QoS::AtLeastOnce)]);
    let mut p = b.client(ProtocolVersion::V3_1_1, &b.id_on(shard, "cpub"), true);
    let payload = vec![b'k'; 2000];
    for i in 0..1500u16 {
        p.publish_acked("k/t", &payload, QoS::AtLeastOnce, false, i + 1);
        s.recv_publish();
    }
    w.disconnect_and_wait();
    let summary = stop(b);
    assert!(summary.persist_compactions >= 1, "{summary:?}");
    assert!(
        dropped.elapsed() < std::time::Duration::from_secs(10),
        "too slow to test"
    );
    let b = start(&dir.path);
    let mut w = persistent(&b, ProtocolVersion::V5, &watcher, true);
    match w.recv_within(std::time::Duration::from_secs(15)) {
        Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "will/compacted"),
        other => panic!("expected the will, got {other:?}"),
    }
    assert!(dropped.elapsed() >= std::time::Duration::from_millis(9900));
}
