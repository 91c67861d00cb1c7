//! ACL files in mosquitto's syntax (`acl_file`), enforced: over TCP with two shards,
//! clients on the same and on different shards, for 3.1, 3.1.1 and 5.0. A denied PUBLISH
//! is not routed (5.0: 0x87; 3.x: acknowledged as usual), a denied filter gets SUBACK 0x87
//! (3.x: 0x80), a delivery the client may not read is not made, retained ones included,
//! `pattern` lines resolve per client, a reload applies to connected clients, and a
//! persistent session restored after a restart keeps its user's rules.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

const ACL: &str = "\
# anonymous clients
topic read public/#
topic write public/in

user admin
topic readwrite #

user alice
topic readwrite sensors/#
topic deny sensors/secret

user bob
topic read sensors/+/temp

pattern readwrite devices/%c/#
";

fn start(acl: &str, tweak: impl FnOnce(&mut Config)) -> (Broker, client_env::TempDir) {
    let dir = client_env::TempDir::new("acl");
    let file = dir.path.join("acl");
    std::fs::write(&file, acl).unwrap();
    let b = Broker::with(2, move |c: &mut Config| {
        c.acl_file = Some(file);
        tweak(c);
    });
    (b, dir)
}

/// A connected client with this user name (no password file: any is admitted).
fn user(b: &Broker, v: ProtocolVersion, id: &str, name: Option<&str>, clean: bool) -> Raw {
    connect_as(b, v, id, name, clean).0
}

/// A connected client with this user name (no password file: any is admitted); not
/// `clean`: a persistent session (5.0: expiry "never"). Returns it and session present.
fn connect_as(
    b: &Broker,
    v: ProtocolVersion,
    id: &str,
    name: Option<&str>,
    clean: bool,
) -> (Raw, bool) {
    let mut c = b.raw(v);
    let mut p = connect_packet(v, id, clean, 0, None);
    p.username = name.map(bytestring::ByteString::from);
    if v.is_v5() && !clean {
        p.properties.get_mut().session_expiry_interval = Some(u32::MAX);
    }
    let ack = c.connect_with(p);
    assert_eq!(
        ack.reason,
        ReasonCode::SUCCESS,
        "CONNECT of {id} as {name:?} refused"
    );
    (c, ack.session_present)
}

fn denied(v: ProtocolVersion) -> ReasonCode {
    if v.is_v5() {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode::UNSPECIFIED_ERROR
    }
}

#[test]
fn subscriptions_need_a_covering_read_rule() {
    let (b, _dir) = start(ACL, |_| {});
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            let mut bob = user(
                &b,
                v,
                &b.id_on(shard, &format!("b{tag}")),
                Some("bob"),
                true,
            );
            let codes = bob.subscribe(
                1,
                &[
                    ("sensors/+/temp", QoS::AtLeastOnce),
                    ("sensors/#", QoS::AtLeastOnce),
                    ("$share/g/sensors/+/temp", QoS::AtLeastOnce),
                    ("$share/g/sensors/#", QoS::AtLeastOnce),
                ],
            );
            assert_eq!(
                codes,
                [ReasonCode(1), denied(v), ReasonCode(1), denied(v)],
                "{tag}"
            );
            let mut alice = user(
                &b,
                v,
                &b.id_on(1 - shard, &format!("a{tag}")),
                Some("alice"),
                true,
            );
            let codes = alice.subscribe(
                1,
                &[
                    ("sensors/#", QoS::AtMostOnce),
                    ("sensors/secret", QoS::AtMostOnce),
                    ("#", QoS::AtMostOnce),
                ],
            );
            assert_eq!(codes, [ReasonCode(0), denied(v), denied(v)], "{tag}");
            let mut anon = user(&b, v, &b.id_on(shard, &format!("n{tag}")), None, true);
            let codes = anon.subscribe(
                1,
                &[
                    ("public/#", QoS::AtMostOnce),
                    ("public/in", QoS::AtMostOnce),
                    ("#", QoS::AtMostOnce),
                    ("$SYS/#", QoS::AtMostOnce),
                ],
            );
            assert_eq!(
                codes,
                [ReasonCode(0), ReasonCode(0), denied(v), denied(v)],
                "{tag}"
            );
        }
    }
}

#[test]
fn publishes_need_a_write_rule_and_5_0_says_why() {
    let (b, _dir) = start(ACL, |_| {});
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            let mut admin = user(
                &b,
                v,
                &b.id_on(1 - shard, &format!("m{tag}")),
                Some("admin"),
                true,
            );
            admin.subscribe(1, &[("#", QoS::AtLeastOnce)]);
            let id = b.id_on(shard, &format!("d{tag}"));
            let mut dev = user(&b, v, &id, None, true);
            let refused = if v.is_v5() {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            };
            // Not its own device, not a topic it may only read: acknowledged (3.x) or
            // refused (5.0), and never delivered.
            dev.publish("devices/other/up", b"no", QoS::AtLeastOnce, false, Some(1));
            let mut want = Ack::new(pid(1));
            want.reason = refused;
            assert_eq!(dev.recv(), Packet::PubAck(want), "{tag}");
            dev.publish("public/x", b"no", QoS::AtMostOnce, false, None);
            // Its own device (the pattern) and the anonymous write rule.
            dev.publish_acked(
                &format!("devices/{id}/up"),
                b"mine",
                QoS::AtLeastOnce,
                false,
                2,
            );
            dev.publish_acked("public/in", b"in", QoS::AtLeastOnce, false, 3);
            let got: Vec<String> = (0..2)
                .map(|_| String::from_utf8_lossy(&admin.recv_publish().payload).into_owned())
                .collect();
            assert_eq!(got, ["mine", "in"], "{tag}");
            admin.expect_nothing();
        }
    }
}

#[test]
fn deliveries_and_retained_messages_are_checked_for_read() {
    let (b, _dir) = start(ACL, |_| {});
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            let mut admin = user(
                &b,
                v,
                &b.id_on(shard, &format!("m{tag}")),
                Some("admin"),
                true,
            );
            let root = format!("sensors/{tag}");
            // Retained before the subscription: the secret one is held back too.
            admin.publish_acked("sensors/secret", b"r-secret", QoS::AtLeastOnce, true, 1);
            admin.publish_acked(
                &format!("{root}/temp"),
                b"r-temp",
                QoS::AtLeastOnce,
                true,
                2,
            );
            let mut alice = user(
                &b,
                v,
                &b.id_on(1 - shard, &format!("a{tag}")),
                Some("alice"),
                true,
            );
            alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]);
            let mut retained = Vec::new();
            while let Some(Packet::Publish(p)) = alice.recv_within(QUIET) {
                if let Some(id) = p.packet_id {
                    alice.send(&Packet::PubAck(Ack::new(id)));
                }
                retained.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            assert!(
                retained.contains(&"r-temp".to_owned()),
                "{tag}: {retained:?}"
            );
            assert!(
                !retained.contains(&"r-secret".to_owned()),
                "{tag}: {retained:?}"
            );
            // Live: the deny rule inside alice's filter holds back just that topic.
            admin.publish_acked("sensors/secret", b"secret", QoS::AtLeastOnce, false, 3);
            admin.publish_acked(&format!("{root}/temp"), b"temp", QoS::AtLeastOnce, false, 4);
            assert_eq!(&alice.recv_publish().payload[..], b"temp", "{tag}");
            alice.expect_nothing();
            admin.publish_acked("sensors/secret", b"", QoS::AtLeastOnce, true, 5);
        }
    }
    let mut b = b;
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.read_denied >= 12, "{summary:?}");
}

#[test]
fn a_reload_applies_to_connected_clients() {
    let (b, dir) = start(ACL, |_| {});
    let v = ProtocolVersion::V5;
    let mut alice = user(&b, v, &b.id_on(0, "ra"), Some("alice"), true);
    alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]);
    let mut admin = user(&b, v, &b.id_on(1, "rm"), Some("admin"), true);
    admin.publish_acked("sensors/a/temp", b"before", QoS::AtLeastOnce, false, 1);
    assert_eq!(&alice.recv_publish().payload[..], b"before");
    std::fs::write(
        dir.path.join("acl"),
        "user admin\ntopic readwrite #\nuser alice\ntopic read sensors/b/#\n",
    )
    .unwrap();
    b.handle.as_ref().unwrap().reload_security().unwrap();
    admin.publish_acked("sensors/a/temp", b"after", QoS::AtLeastOnce, false, 2);
    admin.publish_acked("sensors/b/temp", b"still", QoS::AtLeastOnce, false, 3);
    assert_eq!(&alice.recv_publish().payload[..], b"still");
    alice.expect_nothing();
    // Its rights to publish changed too: write is gone.
    alice.publish("sensors/b/x", b"no", QoS::AtLeastOnce, false, Some(5));
    let mut want = Ack::new(pid(5));
    want.reason = ReasonCode::NOT_AUTHORIZED;
    assert_eq!(alice.recv(), Packet::PubAck(want));
    // A broken file is refused and the rules in force stay.
    std::fs::write(dir.path.join("acl"), "topic read a/#/b\n").unwrap();
    let e = b.handle.as_ref().unwrap().reload_security().unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    admin.publish_acked("sensors/b/temp", b"kept", QoS::AtLeastOnce, false, 4);
    assert_eq!(&alice.recv_publish().payload[..], b"kept");
}

/// A broker with [`ACL`] and admin's client `id` subscribed to `sensors/#`, watching for
/// wills.
fn will_watcher(id: &str) -> (Broker, client_env::TempDir, Raw) {
    let (b, dir) = start(ACL, |_| {});
    let mut watcher = user(
        &b,
        ProtocolVersion::V5,
        &b.id_on(0, id),
        Some("admin"),
        true,
    );
    watcher.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]);
    (b, dir, watcher)
}

/// alice connected as `id` with a QoS 1 will on `topic`; for 5.0 with a Will Delay
/// Interval of `delay` and a Session Expiry Interval of `expiry` seconds.
fn alice_with_will(
    b: &Broker,
    v: ProtocolVersion,
    id: &str,
    topic: &str,
    delay: u32,
    expiry: u32,
) -> Raw {
    let mut will = will_msg(topic, b"gone", QoS::AtLeastOnce, false);
    let mut p = connect_packet(v, id, true, 0, None);
    if v.is_v5() {
        will.properties.get_mut().will_delay_interval = Some(delay);
        p.properties.get_mut().session_expiry_interval = Some(expiry);
    }
    p.will = Some(will);
    p.username = Some("alice".into());
    let mut c = b.raw(v);
    assert_eq!(c.connect_with(p).reason, ReasonCode::SUCCESS, "{id}");
    c
}

/// Reloads an ACL in which alice may only read `sensors/#`.
fn take_alices_write_right(b: &Broker, dir: &client_env::TempDir) {
    std::fs::write(
        dir.path.join("acl"),
        "user admin\ntopic readwrite #\nuser alice\ntopic read sensors/#\n",
    )
    .unwrap();
    b.handle.as_ref().unwrap().reload_security().unwrap();
}

/// A will is authorized at CONNECT and again when it is due: after a reload that took
/// the right away, it is not published (counted as a denied PUBLISH).
#[test]
fn a_will_is_checked_again_when_it_is_due() {
    let (b, dir, mut watcher) = will_watcher("ww");
    let with_will =
        |v: ProtocolVersion, id: String, topic: String| alice_with_will(&b, v, &id, &topic, 0, 0);
    let mut before = Vec::new();
    let mut after = Vec::new();
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            before.push(with_will(
                v,
                b.id_on(shard, &format!("wb{tag}")),
                format!("sensors/b{tag}"),
            ));
            after.push(with_will(
                v,
                b.id_on(shard, &format!("wa{tag}")),
                format!("sensors/a{tag}"),
            ));
        }
    }
    // Closed without DISCONNECT while alice may write: every will is published.
    let n = before.len();
    drop(before);
    let mut got: Vec<String> = (0..n)
        .map(|_| watcher.recv_publish().topic.to_string())
        .collect();
    got.sort();
    assert!(got.iter().all(|t| t.starts_with("sensors/b")), "{got:?}");
    assert_eq!(got.len(), n);
    take_alices_write_right(&b, &dir);
    drop(after);
    watcher.expect_nothing();
    let mut b = b;
    let summary = b.handle.take().unwrap().shutdown();
    // Once each: a will is not checked (nor counted) twice.
    assert_eq!(summary.publish_denied, n as u64, "{summary:?}");
}

/// The other ways a will becomes due are checked too: a taken-over connection's will (3.1.1,
/// clean session: published at the takeover), a 5.0 will whose Will Delay Interval ends,
/// and a 5.0 delayed will whose session expires first. Each is published while alice may
/// write, and not after a reload took the right away.
#[test]
fn wills_due_later_or_at_a_takeover_are_checked_when_due() {
    let (b, dir, mut watcher) = will_watcher("lw");
    let connect =
        |v, id: &str, topic: &str, delay, expiry| alice_with_will(&b, v, id, topic, delay, expiry);
    let v4 = ProtocolVersion::V3_1_1;
    let v5 = ProtocolVersion::V5;
    let cases = |round: &str| {
        let taken = b.id_on(1, &format!("lt{round}"));
        let victim = connect(v4, &taken, &format!("sensors/{round}/taken"), 0, 0);
        let delayed = connect(
            v5,
            &b.id_on(1, &format!("ld{round}")),
            &format!("sensors/{round}/delayed"),
            2,
            60,
        );
        let expiring = connect(
            v5,
            &b.id_on(0, &format!("le{round}")),
            &format!("sensors/{round}/expired"),
            60,
            2,
        );
        (taken, victim, delayed, expiring)
    };
    let run = |watcher: &mut Raw, cases: (String, Raw, Raw, Raw), reload: &dyn Fn()| {
        let (taken, mut victim, delayed, expiring) = cases;
        drop(delayed);
        drop(expiring);
        // The broker has seen both closes (and kept both wills) before any reload, so
        // what stops them is the check when they are due, 2 s after the close. (Were a
        // close seen after the reload, the check at the close would stop the will and
        // the count below would still hold: 700 ms is ample on loopback.)
        std::thread::sleep(std::time::Duration::from_millis(700));
        reload();
        // The takeover: a new connection with the same client id closes the old one.
        let _successor = user(&b, v4, &taken, Some("alice"), true);
        victim.expect_closed();
        // Both delays end within three seconds (the sweep runs twice a second).
        let mut got = Vec::new();
        while let Some(p) = watcher.recv_within(std::time::Duration::from_millis(3500)) {
            if let Packet::Publish(p) = p {
                got.push(p.topic.to_string());
                if let Some(id) = p.packet_id {
                    watcher.send(&Packet::PubAck(Ack::new(id)));
                }
            }
            if got.len() == 3 {
                break;
            }
        }
        got.sort();
        got
    };
    let allowed = run(&mut watcher, cases("a"), &|| {});
    assert_eq!(
        allowed,
        ["sensors/a/delayed", "sensors/a/expired", "sensors/a/taken"]
    );
    let denied = run(&mut watcher, cases("b"), &|| {
        take_alices_write_right(&b, &dir)
    });
    assert!(denied.is_empty(), "{denied:?}");
    let mut b = b;
    let summary = b.handle.take().unwrap().shutdown();
    // Once each: a will is not checked (nor counted) twice.
    assert_eq!(summary.publish_denied, 3, "{summary:?}");
}

#[test]
fn a_restored_session_keeps_its_users_rules() {
    let data = client_env::TempDir::new("acl-data");
    let dir = data.path.clone();
    let persist = move |c: &mut Config| {
        persist_sync(c, &dir);
    };
    for v in VERSIONS {
        let id = format!("keep{}", v.level());
        {
            let (b, _d) = start(ACL, persist.clone());
            let mut alice = user(&b, v, &id, Some("alice"), false);
            alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]);
            alice.disconnect();
        }
        // Restarted: messages arrive for the offline session before alice reconnects.
        let (b, _d) = start(ACL, persist.clone());
        let mut admin = user(&b, v, "admin", Some("admin"), true);
        admin.publish_acked("sensors/a/temp", b"queued", QoS::AtLeastOnce, false, 1);
        admin.publish_acked("sensors/secret", b"secret", QoS::AtLeastOnce, false, 2);
        let (mut alice, present) = persistent_as(&b, v, &id, "alice");
        // (3.1 has no session present flag.)
        assert!(present || v == ProtocolVersion::V3_1, "{v:?}");
        let got = alice.recv_publish();
        assert_eq!(&got.payload[..], b"queued", "{v:?}");
        if let Some(pid) = got.packet_id {
            alice.send(&Packet::PubAck(Ack::new(pid)));
        }
        alice.expect_nothing();
        // Clean up for the next version.
        drop(alice);
        let mut gone = b.raw(v);
        gone.connect(&id, true, 0, None);
    }
}

#[test]
fn an_acl_file_that_does_not_parse_stops_the_start_with_its_line() {
    let dir = client_env::TempDir::new("acl");
    let file = dir.path.join("acl");
    std::fs::write(&file, "user a\ntopic read ok/#\ntopic bad/#/x\n").unwrap();
    let cfg = Config {
        listeners: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 1,
        acl_file: Some(file.clone()),
        ..Config::default()
    };
    match surgemq::server::Server::new(cfg).start() {
        Ok(h) => {
            h.shutdown();
            panic!("started with a broken ACL file");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("line 3"), "{text}");
            assert!(text.contains(file.to_str().unwrap()), "{text}");
        }
    }
}

/// A persistent session connected with this user name (5.0: expiry "never").
fn persistent_as(b: &Broker, v: ProtocolVersion, id: &str, name: &str) -> (Raw, bool) {
    connect_as(b, v, id, Some(name), false)
}

#[test]
fn another_user_never_resumes_a_session() {
    let (b, _dir) = start(ACL, |_| {});
    for v in VERSIONS {
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("u{}", v.level()));
            let (mut alice, _) = persistent_as(&b, v, &id, "alice");
            alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]);
            alice.disconnect();
            let mut admin = user(&b, v, &b.id_on(1 - shard, "um"), Some("admin"), true);
            admin.publish_acked("sensors/a/temp", b"for alice", QoS::AtLeastOnce, false, 1);
            // bob takes alice's client id: a new session, nothing of hers.
            let (mut bob, present) = persistent_as(&b, v, &id, "bob");
            assert!(!present, "{v:?}");
            bob.expect_nothing();
            admin.publish_acked("sensors/b/temp", b"later", QoS::AtLeastOnce, false, 2);
            bob.expect_nothing();
            bob.disconnect();
            let mut gone = b.raw(v);
            gone.connect(&id, true, 0, None);
        }
    }
}

#[test]
fn queued_messages_are_checked_again_after_a_reload() {
    let (b, dir) = start(ACL, |_| {});
    for v in VERSIONS {
        std::fs::write(dir.path.join("acl"), ACL).unwrap();
        b.handle.as_ref().unwrap().reload_security().unwrap();
        let id = b.id_on(0, &format!("q{}", v.level()));
        let (mut alice, _) = persistent_as(&b, v, &id, "alice");
        alice.subscribe(1, &[("sensors/#", QoS::AtLeastOnce)]);
        alice.disconnect();
        let mut admin = user(&b, v, &b.id_on(1, "qm"), Some("admin"), true);
        admin.publish_acked("sensors/a/temp", b"revoked", QoS::AtLeastOnce, false, 1);
        admin.publish_acked("sensors/b/temp", b"kept", QoS::AtLeastOnce, false, 2);
        // Queued under the old rules; alice loses sensors/a before she comes back.
        std::fs::write(
            dir.path.join("acl"),
            "user admin\ntopic readwrite #\nuser alice\ntopic read sensors/b/#\n",
        )
        .unwrap();
        b.handle.as_ref().unwrap().reload_security().unwrap();
        let (mut alice, present) = persistent_as(&b, v, &id, "alice");
        assert!(present || v == ProtocolVersion::V3_1, "{v:?}");
        let got = alice.recv_publish();
        assert_eq!(&got.payload[..], b"kept", "{v:?}");
        if let Some(pid) = got.packet_id {
            alice.send(&Packet::PubAck(Ack::new(pid)));
        }
        alice.expect_nothing();
        drop(alice);
        let mut gone = b.raw(v);
        gone.connect(&id, true, 0, None);
    }
}

#[test]
fn a_share_group_member_that_may_not_read_is_passed_over() {
    let (b, _dir) = start(ACL, |_| {});
    let v = ProtocolVersion::V5;
    for shard in 0..2 {
        let mut alice = user(&b, v, &b.id_on(shard, "ga"), Some("alice"), true);
        let mut admin = user(&b, v, &b.id_on(shard, "gm"), Some("admin"), true);
        let filter = format!("$share/g{shard}/sensors/#");
        assert_eq!(
            alice.subscribe(1, &[(&filter, QoS::AtLeastOnce)]),
            [ReasonCode(1)]
        );
        assert_eq!(
            admin.subscribe(1, &[(&filter, QoS::AtLeastOnce)]),
            [ReasonCode(1)]
        );
        let mut p = user(&b, v, &b.id_on(1 - shard, "gp"), Some("admin"), true);
        for i in 0..6u16 {
            p.publish_acked(
                "sensors/secret",
                format!("s{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i + 1,
            );
        }
        // Every one reaches the member that may read it; none is lost to alice.
        for i in 0..6 {
            let got = admin.recv_publish();
            assert_eq!(got.payload, format!("s{i}").as_bytes(), "shard {shard}");
            admin.send(&Packet::PubAck(Ack::new(got.packet_id.unwrap())));
        }
        alice.expect_nothing();
    }
}
