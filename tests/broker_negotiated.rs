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
        sub.connect_with(connect_v5(&id, false, 60, Some(4)));
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
        let ack = sub.connect_with(connect_v5(&id, false, 60, Some(2)));
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
