//! Keep alive and connect timeout: PINGREQ/PINGRESP, closing a silent client after 1.5
//! times its keep alive, keep alive 0, traffic that keeps a connection alive, and the
//! connect timeout for connections that never complete CONNECT. Every test runs on 3.1
//! and 3.1.1 with client ids on both shards (a connection accepted by one shard moves to
//! its id's home shard, so both the staying and the moved connection are covered).
//!
//! Waiting tests run all their cases at once: each case is a connection, and one deadline
//! applies to all.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use surgemq::protocol::*;

/// One connected client per version and shard, with keep alive `ka`.
fn clients(b: &Broker, prefix: &str, ka: u16) -> Vec<(String, Raw)> {
    let mut out = Vec::new();
    for v in V3 {
        for shard in 0..b.shards {
            let id = b.id_on(shard, &format!("{prefix}{}", v.level()));
            let mut c = b.raw(v);
            let ack = c.connect_raw_ack(connect_packet(v, &id, true, ka, None));
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "{id}");
            out.push((format!("{id} ({v:?}, shard {shard})"), c));
        }
    }
    out
}

#[test]
fn pingreq_gets_pingresp() {
    let b = Broker::start(2);
    for (name, mut c) in clients(&b, "ping", 0) {
        for _ in 0..3 {
            c.send_bytes(&[0xC0, 0x00]);
            // [MQTT-3.12.4-1]: exactly PINGRESP, 0xD0 0x00.
            let got = c.closed_within(Duration::from_millis(200));
            assert!(got.is_none(), "{name}: closed after PINGREQ");
            assert_eq!(&c.buf[..], &[0xD0, 0x00], "{name}");
            c.buf.clear();
        }
        c.ping();
        c.expect_nothing();
    }
}

#[test]
fn silent_client_closed_after_one_and_a_half_keepalives() {
    let b = Broker::start(2);
    let t0 = Instant::now();
    let mut cs = clients(&b, "ka", 1);
    // Keep alive 1 s: a client silent for 1 s is late, but not yet to be closed.
    sleep(Duration::from_millis(1000).saturating_sub(t0.elapsed()));
    for (name, c) in &mut cs {
        assert!(c.is_open(), "{name}: closed before 1 s");
    }
    // [MQTT-3.1.2-24]: closed once 1.5 keep alives pass in silence; allow the sweep's
    // slack, well within 4 s. Nothing is sent before the close (3.x has no reason).
    for (name, c) in &mut cs {
        let left = Duration::from_secs(4).saturating_sub(t0.elapsed());
        let got = c.closed_within(left);
        assert_eq!(got, Some(vec![]), "{name}: still open at 4 s");
    }
}

#[test]
fn keepalive_zero_is_never_closed_for_silence() {
    let b = Broker::start(2);
    let mut cs = clients(&b, "k0", 0);
    sleep(Duration::from_secs(3));
    for (name, c) in &mut cs {
        assert!(c.is_open(), "{name}: closed with keep alive 0");
        c.ping();
    }
}

#[test]
fn pingreqs_keep_the_connection_alive() {
    let b = Broker::start(2);
    let mut cs = clients(&b, "kp", 1);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        sleep(Duration::from_millis(500));
        for (name, c) in &mut cs {
            c.send(&Packet::PingReq);
            assert_eq!(c.recv(), Packet::PingResp, "{name}");
        }
    }
    for (name, c) in &mut cs {
        assert!(c.is_open(), "{name}");
    }
}

#[test]
fn any_packet_keeps_the_connection_alive() {
    let b = Broker::start(2);
    let mut cs = clients(&b, "kq", 1);
    let t0 = Instant::now();
    let mut n = 0u16;
    while t0.elapsed() < Duration::from_secs(4) {
        sleep(Duration::from_millis(500));
        n += 1;
        for (name, c) in &mut cs {
            // A QoS 1 PUBLISH to a topic nobody reads, then its PUBACK.
            c.publish_acked("nobody/listens", b"x", QoS::AtLeastOnce, false, n);
            assert!(c.is_open(), "{name}");
        }
    }
    for (name, c) in &mut cs {
        c.ping();
        assert!(c.is_open(), "{name}");
    }
}

#[test]
fn keepalive_limits_do_not_change_a_3x_keepalive() {
    // keepalive_min/keepalive_max cannot be told to a 3.x client, which keeps its own
    // value (documented): 1 s below the minimum still times out, and 3 s above the
    // maximum is not cut to 1 s.
    let b = Broker::with(2, |c| {
        c.limits.keepalive_min = 2;
        c.limits.keepalive_max = 2;
    });
    let t0 = Instant::now();
    let mut short = clients(&b, "kmin", 1);
    let mut long = clients(&b, "kmax", 3);
    sleep(Duration::from_millis(3500).saturating_sub(t0.elapsed()));
    for (name, c) in &mut long {
        assert!(c.is_open(), "{name}: keep alive 3 closed before 3.5 s");
    }
    for (name, c) in &mut short {
        assert_eq!(
            c.closed_within(Duration::from_millis(500)),
            Some(vec![]),
            "{name}"
        );
    }
}

#[test]
fn connect_timeout_closes_a_silent_connection() {
    let b = Broker::with(2, |c| c.limits.connect_timeout = 1);
    let t0 = Instant::now();
    let mut cs: Vec<Raw> = (0..4).map(|_| b.raw(V311)).collect();
    sleep(Duration::from_millis(800).saturating_sub(t0.elapsed()));
    for c in &mut cs {
        assert!(c.is_open(), "closed before the connect timeout");
    }
    for (i, c) in cs.iter_mut().enumerate() {
        let left = Duration::from_secs(3).saturating_sub(t0.elapsed());
        assert_eq!(c.closed_within(left), Some(vec![]), "connection {i}");
    }
}

#[test]
fn connect_timeout_closes_an_incomplete_connect() {
    let b = Broker::with(2, |c| c.limits.connect_timeout = 1);
    let t0 = Instant::now();
    let mut cs = Vec::new();
    for v in V3 {
        let mut bytes = bytes::BytesMut::new();
        Packet::Connect(Box::new(connect_packet(v, "partial", true, 0, None)))
            .encode(v, &mut bytes)
            .unwrap();
        let mut c = b.raw(v);
        // All but the last byte: the CONNECT never completes.
        c.send_bytes(&bytes[..bytes.len() - 1]);
        cs.push(c);
    }
    for c in &mut cs {
        let left = Duration::from_secs(3).saturating_sub(t0.elapsed());
        assert_eq!(c.closed_within(left), Some(vec![]));
    }
}

#[test]
fn connect_timeout_does_not_apply_after_connect() {
    let b = Broker::with(2, |c| c.limits.connect_timeout = 1);
    let mut cs = clients(&b, "ct", 0);
    sleep(Duration::from_millis(2500));
    for (name, c) in &mut cs {
        assert!(c.is_open(), "{name}");
        c.ping();
    }
}

#[test]
fn receiving_messages_does_not_keep_a_silent_client_alive() {
    // Keep alive is about what the server receives [MQTT-3.1.2-24]: a subscriber that
    // only reads must still send something (PINGREQ) within its keep alive.
    let b = Broker::start(2);
    let mut subs = Vec::new();
    for v in V3 {
        for shard in 0..b.shards {
            let id = b.id_on(shard, &format!("rs{}", v.level()));
            let mut c = b.client_with(v, &id, true, 1, None);
            assert_eq!(
                c.subscribe(1, &[("feed/#", QoS::AtMostOnce)]),
                vec![ReasonCode(0)]
            );
            subs.push((format!("{id} ({v:?}, shard {shard})"), c, None::<Duration>));
        }
    }
    let t0 = Instant::now();
    let mut publ = b.client(V311, &b.id_on(0, "feeder"), true);
    while t0.elapsed() < Duration::from_secs(4) {
        publ.publish("feed/x", b"tick", QoS::AtMostOnce, false, None);
        publ.ping();
        for (_, c, closed) in &mut subs {
            if closed.is_none() && c.closed_within(Duration::from_millis(1)).is_some() {
                *closed = Some(t0.elapsed());
            }
        }
        sleep(Duration::from_millis(250));
    }
    for (name, _, closed) in &subs {
        assert!(
            closed.is_some(),
            "{name}: silent for 4 s with keep alive 1, still open"
        );
    }
}

/// 5.0: the server says why it closes: DISCONNECT 0x8D after 1.5 keep alives of silence,
/// 0x8B when it shuts down; for connections on both shards.
#[test]
fn a_5_0_client_is_told_why_it_is_closed() {
    let v = ProtocolVersion::V5;
    let mut b = Broker::start(2);
    let mut silent = Vec::new();
    let mut idle = Vec::new();
    for shard in 0..2 {
        let mut c = b.raw(v);
        c.connect(&b.id_on(shard, "ka8d"), true, 1, None);
        silent.push(c);
        let mut c = b.raw(v);
        c.connect(&b.id_on(shard, "sd8b"), true, 0, None);
        idle.push(c);
    }
    for mut c in silent {
        let got = c
            .closed_within(Duration::from_secs(5))
            .expect("closed for silence");
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
            "{got:?}"
        );
    }
    if let Some(h) = b.handle.take() {
        h.shutdown();
    }
    for mut c in idle {
        let got = c
            .closed_within(Duration::from_secs(5))
            .expect("closed at shutdown");
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SERVER_SHUTTING_DOWN),
            "{got:?}"
        );
    }
}
