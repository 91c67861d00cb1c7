//! Connection admission over real TCP with two shards: the per-IP cap over every listener,
//! a listener's own cap, the accept pace, and a client retrying a wrong password a
//! thousand times. Each refusal closes the connection, is counted, and leaves every other
//! client alone; a closed connection gives its place back.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::time::{Duration, Instant};

use common::*;
use surgemq::config::{AcceptMode, Config, Listener};
use surgemq::protocol::*;

/// Whether a connection to `addr` is served: CONNECT answered within the wait.
fn served(addr: std::net::SocketAddr, id: &str) -> Option<Raw> {
    let mut c = Raw::open(addr, ProtocolVersion::V3_1_1);
    let connect = connect_packet(ProtocolVersion::V3_1_1, id, true, 0, None);
    if !c.try_send(&Packet::Connect(Box::new(connect))) {
        return None;
    }
    // A refused connection is closed (or reset) without a CONNACK.
    c.stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut ack = [0u8; 4];
    std::io::Read::read_exact(&mut c.stream, &mut ack).ok()?;
    (ack == [0x20, 0x02, 0x00, 0x00]).then_some(c)
}

/// Waits until a connection to `addr` is served again (a closed one gives its place back
/// once the broker has seen the close).
fn served_soon(addr: std::net::SocketAddr, id: &str) -> Raw {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(c) = served(addr, id) {
            return c;
        }
        assert!(Instant::now() < deadline, "{id}: no place came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_per_ip_cap_spans_listeners_and_shards() {
    let mut b = Broker::with(2, |c: &mut Config| {
        c.listeners = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
        c.limits.max_connections_per_ip = 3;
    });
    let addrs = b.handle.as_ref().unwrap().local_addrs().to_vec();
    let mut held: Vec<Raw> = (0..3)
        .map(|i| served(addrs[i % 2], &b.id_on(i % 2, &format!("ip{i}"))).expect("under the cap"))
        .collect();
    for (n, addr) in addrs.iter().enumerate() {
        let mut over = Raw::open(*addr, ProtocolVersion::V3_1_1);
        // Closed before any byte is read: no CONNACK, just the close (or a reset).
        over.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 16];
        match std::io::Read::read(&mut over.stream, &mut buf) {
            Ok(0) => {}
            Err(e) if !is_timeout(&e) => {}
            other => panic!("listener {n}: not closed: {other:?}"),
        }
    }
    // The clients under the cap noticed nothing.
    held[0].subscribe(1, &[("t", QoS::AtMostOnce)]);
    held[1].publish("t", b"fine", QoS::AtMostOnce, false, None);
    assert_eq!(&held[0].recv_publish().payload[..], b"fine");
    // A closed connection gives its place back.
    held.pop().unwrap().disconnect();
    let _again = served_soon(addrs[1], "ip-again");
    drop(held);
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.connections_refused_ip >= 2, "{summary:?}");
}

#[test]
fn a_listener_cap_counts_its_own_connections() {
    let mut b = Broker::with(2, |c: &mut Config| {
        c.listener = vec![Listener {
            address: Some("127.0.0.1:0".parse().unwrap()),
            max_connections: 2,
            ..Listener::default()
        }];
    });
    let addrs = b.handle.as_ref().unwrap().local_addrs().to_vec();
    let capped = addrs[1];
    let first = served(capped, &b.id_on(0, "cap-a")).expect("first");
    let _second = served(capped, &b.id_on(1, "cap-b")).expect("second");
    assert!(
        served(capped, "cap-c").is_none(),
        "a third on a listener capped at 2"
    );
    // The other listener is not capped.
    let _plain: Vec<Raw> = (0..4)
        .map(|i| served(addrs[0], &format!("free{i}")).expect("uncapped listener"))
        .collect();
    // Its place comes back when a connection closes, including one that moved to another
    // shard after CONNECT.
    first.disconnect();
    let _third = served_soon(capped, &b.id_on(0, "cap-d"));
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.connections_refused_limit >= 1, "{summary:?}");
}

#[test]
fn the_accept_pace_spreads_a_burst_without_refusing() {
    let b = Broker::with(2, |c: &mut Config| {
        // Shard 0 alone accepts: the whole pace is one loop's, so the test can count.
        c.accept_mode = AcceptMode::RoundRobin;
        c.limits.max_connection_rate = 20;
    });
    let started = Instant::now();
    let clients: Vec<Raw> = (0..60)
        .map(|i| {
            let mut c = Raw::open(b.addr, ProtocolVersion::V3_1_1);
            let id = format!("pace{i}");
            c.send(&Packet::Connect(Box::new(connect_packet(
                ProtocolVersion::V3_1_1,
                &id,
                true,
                0,
                None,
            ))));
            c
        })
        .collect();
    for (i, mut c) in clients.into_iter().enumerate() {
        match c.recv_within(Duration::from_secs(10)) {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason, ReasonCode::SUCCESS, "{i}"),
            other => panic!("client {i} was not served: {other:?}"),
        }
    }
    // A second's burst (20), then 20 a second: the last 40 take at least 2 s (a lower
    // bound only, so a slow machine cannot fail it).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "60 connections in {took:?} at 20/s"
    );
}

#[test]
fn a_thousand_wrong_passwords_are_refused_and_counted() {
    let dir = client_env::TempDir::new("admission");
    let file = dir.path.join("passwd");
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_surgemq"))
        .args(["passwd", "-c", "-b"])
        .arg(&file)
        .args(["alice", "right"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok);
    let mut b = Broker::with(2, move |c: &mut Config| c.password_file = Some(file));
    let mut bystander = b.client(ProtocolVersion::V5, &b.id_on(0, "by"), true);
    bystander.subscribe(1, &[("t", QoS::AtMostOnce)]);
    let mut publisher = b.client(ProtocolVersion::V3_1_1, &b.id_on(1, "pb"), true);
    for i in 0..1000u32 {
        let v = if i % 2 == 0 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let mut c = b.raw(v);
        let mut p = connect_packet(v, &format!("guess{i}"), true, 0, None);
        p.username = Some("alice".into());
        p.password = Some(bytes::Bytes::from(format!("wrong{i}")));
        let ack = c.connect_with(p);
        // (3.x's return code 0x04 reads back as its 5.0 equivalent.)
        assert_eq!(
            ack.reason,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "attempt {i}"
        );
        assert!(c.closed_within(WAIT).is_some(), "attempt {i} left open");
        if i % 100 == 0 {
            publisher.publish("t", format!("{i}").as_bytes(), QoS::AtMostOnce, false, None);
            assert_eq!(bystander.recv_publish().payload, format!("{i}").as_bytes());
        }
    }
    bystander.ping();
    let summary = b.handle.take().unwrap().shutdown();
    assert_eq!(summary.connects_refused, 1000, "{summary:?}");
}
