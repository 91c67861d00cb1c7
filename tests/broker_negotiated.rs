//! A connection's negotiated terms, over TCP with 2 shards (client ids on both): what a
//! 5.0 client learns in CONNACK (Server Keep Alive) and the limit its Receive Maximum puts
//! on what the broker sends it, also when it resumes a session with a smaller one.
//! (The rest of 5.0 is its own issue; these are the terms the broker core builds once at
//! CONNECT.)

mod common;

use std::time::Duration;

use bytestring::ByteString;
use common::*;
use surgemq::protocol::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn connect_v5(client_id: &str, clean: bool, keep_alive: u16, receive_max: Option<u16>) -> Connect {
    let mut properties = Properties::new();
    if let Some(r) = receive_max {
        properties.get_mut().receive_maximum = Some(r);
    }
    Connect {
        version: V5,
        clean_start: clean,
        keep_alive,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties,
    }
}

#[test]
fn server_keep_alive_is_told_in_connack_when_the_server_changes_it() {
    let b = Broker::with(2, |c| {
        c.limits.keepalive_min = 10;
        c.limits.keepalive_max = 60;
    });
    for shard in 0..2 {
        for (asked, told) in [(1000, Some(60)), (0, Some(10)), (5, Some(10)), (30, None)] {
            let id = b.id_on(shard, &format!("ska{asked}-"));
            let mut c = b.raw(V5);
            let ack = c.connect_with(connect_v5(&id, true, asked, None));
            assert_eq!(ack.reason, ReasonCode::SUCCESS);
            assert_eq!(
                ack.properties.server_keep_alive, told,
                "{id}: keep alive {asked} [MQTT-3.2.2-21]"
            );
        }
    }
}

#[test]
fn receive_maximum_limits_what_is_in_flight_also_after_resuming_with_a_smaller_one() {
    let b = Broker::start(2);
    for sub_shard in 0..2 {
        let id = b.id_on(sub_shard, "rmax");
        let topic = format!("rmax/{sub_shard}");
        let mut sub = b.raw(V5);
        sub.connect_with(with_expiry(connect_v5(&id, false, 60, Some(4)), Some(600)));
        sub.subscribe(1, &[(&topic, QoS::AtLeastOnce)]);
        let mut publ = b.client(V5, &b.id_on(1 - sub_shard, "rmax-pub"), true);
        for i in 0..6u16 {
            publ.publish_acked(&topic, &[i as u8], QoS::AtLeastOnce, false, i + 1);
        }
        // Receive Maximum 4: four in flight, the others wait [MQTT-3.3.4-9].
        let first: Vec<Publish> = (0..4).map(|_| sub.recv_publish_noack()).collect();
        assert_eq!(
            first.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        let ids: Vec<_> = first.iter().map(|p| p.packet_id).collect();
        sub.expect_nothing();
        // The client goes away without acknowledging, and comes back allowing 2.
        drop(sub);
        let mut sub = b.raw(V5);
        let ack = sub.connect_with(with_expiry(connect_v5(&id, false, 60, Some(2)), Some(600)));
        assert!(ack.session_present, "{id}");
        let again: Vec<Publish> = (0..2).map(|_| sub.recv_publish_noack()).collect();
        assert_eq!(
            again.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(
            again.iter().all(|p| p.dup),
            "resent with DUP [MQTT-3.3.1-1]"
        );
        sub.expect_nothing();
        // Each PUBACK lets exactly one more out, in order: first the rest of what was in
        // flight (same ids, DUP), then what was queued.
        let mut got = Vec::new();
        let mut next = again;
        while got.len() < 6 {
            let p = next.remove(0);
            let i = usize::from(p.payload[0]);
            if i < 4 {
                // Still in flight from before: its own packet id, DUP.
                assert_eq!((p.packet_id, p.dup), (ids[i], true), "{id}: message {i}");
            } else {
                assert!(!p.dup, "{id}: message {i} was never sent before");
            }
            got.push(p.payload[0]);
            sub.send(&Packet::PubAck(Ack::new(p.packet_id.expect("QoS 1"))));
            if got.len() + next.len() < 6 {
                next.push(sub.recv_publish_noack());
                assert!(
                    sub.recv_within(Duration::from_millis(100)).is_none(),
                    "more than the window"
                );
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5], "{id}");
    }
}

fn with_expiry(mut c: Connect, seconds: Option<u32>) -> Connect {
    c.properties.get_mut().session_expiry_interval = seconds;
    c
}

/// Connects `id` (5.0) and returns whether the broker had a session for it.
fn present(b: &Broker, id: &str, clean: bool, expiry: Option<u32>) -> (Raw, bool) {
    let mut c = b.raw(V5);
    let ack = c.connect_with(with_expiry(connect_v5(id, clean, 60, None), expiry));
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "{id}");
    (c, ack.session_present)
}

#[test]
fn session_expiry_interval_decides_how_long_a_5_0_session_outlives_its_connection() {
    let b = Broker::start(2);
    for shard in 0..2 {
        // Clean Start 0 without an interval: the session ends with the connection
        // (expiry 0 is the default) [MQTT-3.1.2-23].
        let id = b.id_on(shard, "sx-zero");
        let (c, was) = present(&b, &id, false, None);
        assert!(!was);
        c.disconnect_and_wait();
        let (c, was) = present(&b, &id, false, None);
        assert!(!was, "{id}: an expiry of 0 keeps nothing");
        c.disconnect_and_wait();
        // Clean Start 1 with an interval: a new session, kept after the connection.
        let id = b.id_on(shard, "sx-kept");
        let (mut c, _) = present(&b, &id, true, Some(60));
        c.subscribe(1, &[("sx/kept", QoS::AtLeastOnce)]);
        c.disconnect_and_wait();
        let (c, was) = present(&b, &id, false, Some(60));
        assert!(was, "{id}: kept for its interval");
        // A DISCONNECT may shorten it to 0: the session ends then [MQTT-3.14.2-2 allows
        // a change except from 0].
        let mut c = c;
        c.send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: {
                let mut p = Properties::new();
                p.get_mut().session_expiry_interval = Some(0);
                p
            },
        }));
        c.expect_closed();
        let (c, was) = present(&b, &id, false, Some(60));
        assert!(!was, "{id}: ended by DISCONNECT with expiry 0");
        c.disconnect_and_wait();
        // A short interval runs out (the sweep runs twice a second).
        let id = b.id_on(shard, "sx-short");
        let (c, _) = present(&b, &id, false, Some(1));
        c.disconnect_and_wait();
        std::thread::sleep(Duration::from_millis(2200));
        let (c, was) = present(&b, &id, false, Some(1));
        assert!(!was, "{id}: expired after 1 s");
        c.disconnect_and_wait();
    }
}

#[test]
fn a_disconnect_cannot_make_a_session_with_expiry_0_outlive_its_connection() {
    let b = Broker::start(2);
    for shard in 0..2 {
        let id = b.id_on(shard, "sx-bad");
        let (mut c, _) = present(&b, &id, true, None);
        c.send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: {
                let mut p = Properties::new();
                p.get_mut().session_expiry_interval = Some(30);
                p
            },
        }));
        let got = c.expect_closed();
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR),
            "{id}: DISCONNECT 0x82 [MQTT-3.14.2-2]: {got:?}"
        );
    }
}

#[test]
fn connack_carries_the_assigned_client_identifier_and_the_capped_expiry() {
    let b = Broker::with(2, |c| c.limits.session_expiry_max = Some(100));
    let mut c = b.raw(V5);
    let ack = c.connect_with(with_expiry(connect_v5("", true, 60, None), Some(5000)));
    let assigned = ack
        .properties
        .assigned_client_identifier
        .clone()
        .expect("an assigned id [MQTT-3.2.2-16]");
    assert!(!assigned.is_empty());
    assert_eq!(ack.properties.session_expiry_interval, Some(100));
    assert_eq!(ack.properties.maximum_packet_size, Some(1 << 20));
    // The assigned id is the session's: it works for the rest of the connection.
    c.subscribe(1, &[("assigned/t", QoS::AtLeastOnce)]);
    c.disconnect_and_wait();
    // A 5.0 client asking for less than the cap is not told anything.
    let mut c = b.raw(V5);
    let ack = c.connect_with(with_expiry(
        connect_v5("sx-under", true, 60, None),
        Some(50),
    ));
    assert_eq!(ack.properties.session_expiry_interval, None);
    assert_eq!(ack.properties.assigned_client_identifier, None);
}
