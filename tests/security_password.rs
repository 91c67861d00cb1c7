//! Password files in mosquitto's format (`password_file`), both ways: a file made by
//! `mosquitto_passwd` works unchanged in SurgeMQ, and one made by `surgemq passwd` works in
//! mosquitto. Over TCP with two shards, for 3.1, 3.1.1 and 5.0: the right password is
//! admitted, a wrong one or an unknown user is refused with the protocol's code (5.0: 0x86
//! Bad user name or password; 3.x: 0x04), and without a user name `allow_anonymous`
//! decides.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::process::Command;

use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// The CONNACK's code: for 3.x the return code byte as sent (`ReasonCode(0x04)`), for 5.0
/// the reason code.
fn connect_as(
    b: &Broker,
    v: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    pw: Option<&[u8]>,
) -> ReasonCode {
    let mut c = b.raw(v);
    let connect = Connect {
        version: v,
        clean_start: true,
        keep_alive: 0,
        client_id: bytestring::ByteString::from(id),
        will: None,
        username: user.map(bytestring::ByteString::from),
        password: pw.map(bytes::Bytes::copy_from_slice),
        properties: Properties::new(),
    };
    if v.is_v5() {
        c.connect_with(connect).reason
    } else {
        ReasonCode(c.connect_raw_ack(connect)[3])
    }
}

#[test]
fn a_mosquitto_passwd_file_works_unchanged() {
    let dir = client_env::TempDir::new("passwd");
    let file = dir.path.join("passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&file)
        .args(["alice", "s3cret"])
        .status()
        .expect("mosquitto_passwd is required: apt-get install mosquitto");
    assert!(made.success());
    let path = file.clone();
    let b = Broker::with(2, move |c: &mut Config| {
        c.password_file = Some(path);
        c.allow_anonymous = false;
    });
    for v in VERSIONS {
        let refused = if v.is_v5() {
            ReasonCode::BAD_USER_NAME_OR_PASSWORD
        } else {
            ReasonCode(4)
        };
        let not_authorized = if v.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode(5)
        };
        for shard in 0..2 {
            let id = b.id_on(shard, &format!("pw{}", v.level()));
            assert_eq!(
                connect_as(&b, v, &id, Some("alice"), Some(b"s3cret")),
                ReasonCode::SUCCESS,
                "{v:?}"
            );
            assert_eq!(
                connect_as(&b, v, &id, Some("alice"), Some(b"S3cret")),
                refused
            );
            assert_eq!(connect_as(&b, v, &id, Some("alice"), None), refused);
            assert_eq!(
                connect_as(&b, v, &id, Some("mallory"), Some(b"s3cret")),
                refused
            );
            assert_eq!(connect_as(&b, v, &id, None, None), not_authorized);
        }
    }
}

#[test]
fn a_surgemq_passwd_file_works_in_mosquitto() {
    let dir = client_env::TempDir::new("passwd");
    let file = dir.path.join("passwd");
    let run = |args: &[&str]| {
        let ok = Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .arg("passwd")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "surgemq passwd {args:?}");
    };
    let f = file.to_str().unwrap();
    run(&["-c", "-b", f, "bob", "hunter2"]);
    run(&["-b", f, "carol", "pw"]);
    run(&["-D", f, "carol"]);
    // mosquitto drops to its own user when started as root: let it read the file.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let m = client_env::Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        file.display()
    ));
    let publish = |user: &str, pw: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &m.addr.port().to_string()])
            .args(["-u", user, "-P", pw, "-t", "t", "-m", "x", "-q", "1"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(
        publish("bob", "hunter2"),
        "mosquitto refused bob's right password"
    );
    assert!(!publish("bob", "hunter3"));
    assert!(!publish("carol", "pw"), "a deleted user is gone");
    // And SurgeMQ reads the same file.
    let path = file.clone();
    let b = Broker::with(2, move |c: &mut Config| c.password_file = Some(path));
    assert_eq!(
        connect_as(
            &b,
            ProtocolVersion::V3_1_1,
            "x",
            Some("bob"),
            Some(b"hunter2")
        ),
        ReasonCode::SUCCESS
    );
}

#[test]
fn a_password_file_that_does_not_parse_stops_the_start_with_its_line() {
    let dir = client_env::TempDir::new("passwd");
    let file = dir.path.join("passwd");
    std::fs::write(&file, "# ok\nalice:$7$101$eA==$eA==\nbob:plaintext\n").unwrap();
    let cfg = Config {
        listeners: vec!["127.0.0.1:0".parse().unwrap()],
        shards: 1,
        password_file: Some(file.clone()),
        ..Config::default()
    };
    match surgemq::server::Server::new(cfg).start() {
        Ok(h) => {
            h.shutdown();
            panic!("started with a broken password file");
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("line 3"), "{text}");
            assert!(text.contains(file.to_str().unwrap()), "{text}");
        }
    }
}

#[test]
fn a_reload_applies_the_new_file_and_keeps_connections() {
    let dir = client_env::TempDir::new("passwd");
    let file = dir.path.join("passwd");
    let set = |user: &str, pw: &str, create: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_surgemq"));
        cmd.arg("passwd");
        if create {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&file)
            .args([user, pw])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok);
    };
    set("alice", "old", true);
    let path = file.clone();
    let b = Broker::with(2, move |c: &mut Config| c.password_file = Some(path));
    let v = ProtocolVersion::V5;
    let mut admitted = b.raw(v);
    let ack = admitted.connect_with(Connect {
        version: v,
        clean_start: true,
        keep_alive: 0,
        client_id: bytestring::ByteString::from("kept"),
        will: None,
        username: Some(bytestring::ByteString::from("alice")),
        password: Some(bytes::Bytes::from_static(b"old")),
        properties: Properties::new(),
    });
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    set("alice", "new", false);
    // Not before the reload.
    assert_eq!(
        connect_as(&b, v, "a1", Some("alice"), Some(b"old")),
        ReasonCode::SUCCESS
    );
    b.handle.as_ref().unwrap().reload_security().unwrap();
    assert_eq!(
        connect_as(&b, v, "a2", Some("alice"), Some(b"old")),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        connect_as(&b, v, "a3", Some("alice"), Some(b"new")),
        ReasonCode::SUCCESS
    );
    // The connection admitted before stays.
    admitted.ping();
    // A broken file is refused and the one in force stays.
    std::fs::write(&file, "alice:garbage\n").unwrap();
    assert!(b.handle.as_ref().unwrap().reload_security().is_err());
    assert_eq!(
        connect_as(&b, v, "a4", Some("alice"), Some(b"new")),
        ReasonCode::SUCCESS
    );
}
