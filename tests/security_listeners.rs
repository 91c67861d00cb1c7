//! Per-listener security files: a `[[listener]]` with its own `password_file` and
//! `acl_file` authenticates and authorizes its clients by them, one without inherits the
//! top level's; a session keeps the rights of the listener its client last came through
//! (a takeover through another listener changes them, a reload re-reads each file, a
//! restart gives them back when the client returns). Over TCP with two shards, clients
//! homed on both, for 3.1, 3.1.1 and 5.0.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::net::SocketAddr;

use common::*;
use surgemq::config::{Config, Listener};
use surgemq::protocol::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// The top level's rules: carol may use `x/#`.
const ACL_TOP: &str = "user admin\ntopic readwrite #\nuser carol\ntopic readwrite x/#\n";
/// The `own` listener's rules: carol (and bob) may use `y/#`.
const ACL_OWN: &str =
    "user admin\ntopic readwrite #\nuser carol\ntopic readwrite y/#\nuser bob\ntopic readwrite y/#\n";

/// A broker with three listeners: `top` (plain `listeners`, the top level's files),
/// `own` (its own password and ACL files) and `inherit` (its own password file, the top
/// level's ACL file). alice is only in the top password file, bob only in the listeners'
/// one; carol and admin are in both.
struct Setup {
    b: Broker,
    dir: client_env::TempDir,
    top: SocketAddr,
    own: SocketAddr,
    inherit: SocketAddr,
}

fn passwd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(u, p)| {
            let hash = surgemq::security::password::hash_password(p.as_bytes()).unwrap();
            format!("{u}:{}\n", hash.to_line())
        })
        .collect()
}

fn files(dir: &client_env::TempDir) {
    let w = |name: &str, text: &str| std::fs::write(dir.path.join(name), text).unwrap();
    w(
        "passwd-top",
        &passwd(&[("alice", "a"), ("carol", "c"), ("admin", "m")]),
    );
    w(
        "passwd-own",
        &passwd(&[("bob", "b"), ("carol", "c"), ("admin", "m")]),
    );
    w("acl-top", ACL_TOP);
    w("acl-own", ACL_OWN);
}

fn start_in(dir: client_env::TempDir, tweak: impl FnOnce(&mut Config)) -> Setup {
    let p = dir.path.clone();
    let b = Broker::with(2, move |c: &mut Config| {
        c.allow_anonymous = false;
        c.password_file = Some(p.join("passwd-top"));
        c.acl_file = Some(p.join("acl-top"));
        c.listener = vec![
            Listener {
                address: Some("127.0.0.1:0".parse().unwrap()),
                password_file: Some(p.join("passwd-own")),
                acl_file: Some(p.join("acl-own")),
                ..Listener::default()
            },
            Listener {
                address: Some("127.0.0.1:0".parse().unwrap()),
                password_file: Some(p.join("passwd-own")),
                ..Listener::default()
            },
        ];
        tweak(c);
    });
    let addrs = b.handle.as_ref().unwrap().local_addrs().to_vec();
    assert_eq!(addrs.len(), 3);
    Setup {
        top: addrs[0],
        own: addrs[1],
        inherit: addrs[2],
        b,
        dir,
    }
}

fn start() -> Setup {
    let dir = client_env::TempDir::new("listeners");
    files(&dir);
    start_in(dir, |_| {})
}

fn connect_packet_as(v: ProtocolVersion, id: &str, user: &str, pw: &str, clean: bool) -> Connect {
    let mut p = connect_packet(v, id, clean, 0, None);
    p.username = Some(bytestring::ByteString::from(user));
    p.password = Some(bytes::Bytes::copy_from_slice(pw.as_bytes()));
    if v.is_v5() && !clean {
        p.properties.get_mut().session_expiry_interval = Some(u32::MAX);
    }
    p
}

/// The CONNACK code a user gets on a listener (3.x: the return code byte as sent).
fn code(addr: SocketAddr, v: ProtocolVersion, id: &str, user: &str, pw: &str) -> ReasonCode {
    let mut c = Raw::open(addr, v);
    let p = connect_packet_as(v, id, user, pw, true);
    if v.is_v5() {
        c.connect_with(p).reason
    } else {
        ReasonCode(c.connect_raw_ack(p)[3])
    }
}

fn refused(v: ProtocolVersion) -> ReasonCode {
    if v.is_v5() {
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    } else {
        ReasonCode(0x04)
    }
}

/// A client admitted on a listener; returns it and session present.
fn client(
    addr: SocketAddr,
    v: ProtocolVersion,
    id: &str,
    user: &str,
    pw: &str,
    clean: bool,
) -> (Raw, bool) {
    let mut c = Raw::open(addr, v);
    let ack = c.connect_with(connect_packet_as(v, id, user, pw, clean));
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "{id} as {user} on {addr}");
    (c, ack.session_present)
}

fn denied(v: ProtocolVersion) -> ReasonCode {
    if v.is_v5() {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode::UNSPECIFIED_ERROR
    }
}

/// Gets the next PUBLISH's payload and acknowledges it.
fn take(c: &mut Raw) -> Vec<u8> {
    let p = c.recv_publish();
    if let Some(id) = p.packet_id {
        c.send(&Packet::PubAck(Ack::new(id)));
    }
    p.payload.to_vec()
}

#[test]
fn each_listener_authenticates_by_its_own_password_file() {
    let s = start();
    for v in VERSIONS {
        for shard in 0..2 {
            let id = |p: &str| s.b.id_on(shard, &format!("{p}{}", v.level()));
            let ok = ReasonCode::SUCCESS;
            assert_eq!(code(s.top, v, &id("a"), "alice", "a"), ok, "{v:?}");
            assert_eq!(code(s.own, v, &id("a"), "alice", "a"), refused(v));
            assert_eq!(code(s.inherit, v, &id("a"), "alice", "a"), refused(v));
            assert_eq!(code(s.top, v, &id("b"), "bob", "b"), refused(v));
            assert_eq!(code(s.own, v, &id("b"), "bob", "b"), ok);
            assert_eq!(code(s.inherit, v, &id("b"), "bob", "b"), ok);
            assert_eq!(code(s.own, v, &id("b"), "bob", "a"), refused(v));
        }
    }
    // A reload re-reads the listener's file too: bob's new password, on both listeners
    // that use it.
    std::fs::write(s.dir.path.join("passwd-own"), passwd(&[("bob", "new")])).unwrap();
    s.b.handle.as_ref().unwrap().reload_security().unwrap();
    let v = ProtocolVersion::V5;
    assert_eq!(code(s.own, v, "r1", "bob", "b"), refused(v));
    assert_eq!(code(s.own, v, "r2", "bob", "new"), ReasonCode::SUCCESS);
    assert_eq!(code(s.inherit, v, "r3", "bob", "new"), ReasonCode::SUCCESS);
    assert_eq!(code(s.top, v, "r4", "alice", "a"), ReasonCode::SUCCESS);
    // A broken file among them is refused and every file in force stays, the password
    // file that did parse included.
    std::fs::write(s.dir.path.join("passwd-own"), passwd(&[("bob", "newer")])).unwrap();
    std::fs::write(s.dir.path.join("acl-own"), "topic bad/#/x\n").unwrap();
    assert!(s.b.handle.as_ref().unwrap().reload_security().is_err());
    assert_eq!(code(s.own, v, "r5", "bob", "new"), ReasonCode::SUCCESS);
    assert_eq!(code(s.own, v, "r6", "bob", "newer"), refused(v));
}

#[test]
fn each_listener_authorizes_by_its_own_acl_file() {
    let s = start();
    for v in VERSIONS {
        for shard in 0..2 {
            let id = |p: &str| s.b.id_on(shard, &format!("{p}{}", v.level()));
            let (mut on_top, _) = client(s.top, v, &id("ct"), "carol", "c", true);
            let (mut on_own, _) = client(s.own, v, &id("co"), "carol", "c", true);
            let (mut on_inherit, _) = client(s.inherit, v, &id("ci"), "carol", "c", true);
            let filters = [("x/#", QoS::AtLeastOnce), ("y/#", QoS::AtLeastOnce)];
            let granted = ReasonCode(1);
            assert_eq!(on_top.subscribe(1, &filters), [granted, denied(v)]);
            assert_eq!(on_own.subscribe(1, &filters), [denied(v), granted]);
            assert_eq!(on_inherit.subscribe(1, &filters), [granted, denied(v)]);
            // Deliveries follow the same rules, from a publisher on the other shard.
            let (mut admin, _) = client(s.top, v, &s.b.id_on(1 - shard, "m"), "admin", "m", true);
            admin.publish_acked("x/1", b"x", QoS::AtLeastOnce, false, 1);
            admin.publish_acked("y/1", b"y", QoS::AtLeastOnce, false, 2);
            assert_eq!(take(&mut on_top), b"x");
            assert_eq!(take(&mut on_own), b"y");
            assert_eq!(take(&mut on_inherit), b"x");
            // And publishing: carol on `own` may not write x/1 (5.0 says so; 3.x is
            // acknowledged and dropped).
            on_own.publish("x/1", b"no", QoS::AtLeastOnce, false, Some(7));
            let mut want = Ack::new(pid(7));
            if v.is_v5() {
                want.reason = ReasonCode::NOT_AUTHORIZED;
            }
            assert_eq!(on_own.recv(), Packet::PubAck(want));
            on_own.publish_acked("y/1", b"yes", QoS::AtLeastOnce, false, 8);
            assert_eq!(take(&mut on_own), b"yes");
            on_top.expect_nothing();
            on_inherit.expect_nothing();
        }
    }
}

#[test]
fn a_session_keeps_the_rights_of_the_listener_it_came_through() {
    let s = start();
    let handle = s.b.handle.as_ref().unwrap();
    for v in VERSIONS {
        std::fs::write(s.dir.path.join("acl-own"), ACL_OWN).unwrap();
        handle.reload_security().unwrap();
        for shard in 0..2 {
            let id = s.b.id_on(shard, &format!("k{}", v.level()));
            let (mut carol, _) = client(s.top, v, &id, "carol", "c", false);
            assert_eq!(
                carol.subscribe(1, &[("x/#", QoS::AtLeastOnce)]),
                [ReasonCode(1)]
            );
            drop(carol);
            // Back through `own`: the session (and its x/# subscription) is resumed, with
            // `own`'s rights, which do not let it read x/.
            let (mut carol, present) = client(s.own, v, &id, "carol", "c", false);
            assert!(present || v == ProtocolVersion::V3_1, "{v:?}");
            let (mut admin, _) = client(s.top, v, &s.b.id_on(1 - shard, "km"), "admin", "m", true);
            admin.publish_acked("x/1", b"before", QoS::AtLeastOnce, false, 1);
            carol.expect_nothing();
            // A reload resolves its rights again from `own`'s file (the top level's does
            // not have z/#).
            std::fs::write(
                s.dir.path.join("acl-own"),
                format!("{ACL_OWN}user carol\ntopic read x/#\ntopic readwrite z/#\n"),
            )
            .unwrap();
            handle.reload_security().unwrap();
            admin.publish_acked("x/1", b"after", QoS::AtLeastOnce, false, 2);
            assert_eq!(take(&mut carol), b"after", "{v:?} shard {shard}");
            assert_eq!(
                carol.subscribe(2, &[("z/#", QoS::AtLeastOnce)]),
                [ReasonCode(1)]
            );
            // Clean up for the next round.
            std::fs::write(s.dir.path.join("acl-own"), ACL_OWN).unwrap();
            handle.reload_security().unwrap();
            drop(carol);
            client(s.top, v, &id, "carol", "c", true);
        }
    }
}

#[test]
fn a_restored_session_gets_its_listeners_rights_when_its_client_returns() {
    let data = client_env::TempDir::new("listeners-data");
    let dir = data.path.clone();
    let persist = move |c: &mut Config| {
        persist_sync(c, &dir);
    };
    for v in VERSIONS {
        let back = format!("back{}", v.level());
        let other = format!("other{}", v.level());
        {
            let files_dir = client_env::TempDir::new("listeners");
            files(&files_dir);
            let s = start_in(files_dir, persist.clone());
            for id in [&back, &other] {
                let (mut carol, _) = client(s.own, v, id, "carol", "c", false);
                assert_eq!(
                    carol.subscribe(1, &[("y/#", QoS::AtLeastOnce)]),
                    [ReasonCode(1)]
                );
                carol.disconnect();
            }
        }
        // Restarted: a message arrives while carol is away. The top level's rules do
        // not let her read y/, her listener's do.
        let files_dir = client_env::TempDir::new("listeners");
        files(&files_dir);
        let s = start_in(files_dir, persist.clone());
        let (mut admin, _) = client(s.top, v, "admin", "admin", "m", true);
        admin.publish_acked("y/1", b"kept", QoS::AtLeastOnce, false, 1);
        let (mut carol, present) = client(s.own, v, &back, "carol", "c", false);
        assert!(present || v == ProtocolVersion::V3_1, "{v:?}");
        assert_eq!(take(&mut carol), b"kept", "{v:?}");
        carol.expect_nothing();
        // Coming back through the top listener instead: its rules hold back what was
        // queued.
        let (mut carol, present) = client(s.top, v, &other, "carol", "c", false);
        assert!(present || v == ProtocolVersion::V3_1, "{v:?}");
        carol.expect_nothing();
        for id in [&back, &other] {
            client(s.top, v, id, "carol", "c", true);
        }
    }
}
