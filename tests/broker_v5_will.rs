//! 5.0 wills over TCP with 2 shards (the client on one shard, the watcher on the other):
//! Will Delay Interval, a will published at the end of the delay or when the session
//! ends, whichever comes first [MQTT-3.1.3-9], not at all when the session is resumed in
//! time [MQTT-3.1.3-10], and will properties forwarded without the delay. The cases run
//! side by side, so the test takes one delay, not four.

mod common;

use std::time::{Duration, Instant};

use bytestring::ByteString;
use common::*;
use surgemq::protocol::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn connect(
    id: &str,
    clean: bool,
    session_expiry: u32,
    will_delay: Option<u32>,
    topic: &str,
) -> Connect {
    let mut properties = Properties::new();
    properties.get_mut().session_expiry_interval = Some(session_expiry);
    let will = will_delay.map(|d| {
        let mut wp = Properties::new();
        wp.get_mut().will_delay_interval = Some(d);
        wp.get_mut().user_properties = vec![("why".into(), "gone".into())];
        Will {
            topic: TopicName::new(topic).unwrap(),
            payload: bytes::Bytes::copy_from_slice(id.as_bytes()),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: wp,
        }
    });
    Connect {
        version: V5,
        clean_start: clean,
        keep_alive: 60,
        client_id: ByteString::from(id),
        will,
        username: None,
        password: None,
        properties,
    }
}

#[test]
fn will_delay_and_session_end_decide_when_a_will_is_published() {
    let b = Broker::start(2);
    let mut watchers = Vec::new();
    let mut resumed = Vec::new();
    let mut back = Vec::new();
    let t0 = Instant::now();
    for shard in 0..2 {
        let topic = format!("wd{shard}/will");
        let mut w = b.client(V5, &b.id_on(1 - shard, "wd-watch"), true);
        w.subscribe(1, &[(&format!("wd{shard}/#"), QoS::AtLeastOnce)]);
        // (client id, session expiry, will delay)
        for (name, expiry, delay) in [
            ("delayed", 60, 2),      // at the end of the delay, about 2 s
            ("resumed", 60, 2),      // reconnects after 0.5 s: never
            ("session-ends", 1, 60), // when the session ends, about 1 s
            ("no-session", 0, 60),   // at once: the session ends with the connection
            ("replaced", 60, 60),    // taken over with clean start: at once (session ended)
        ] {
            let id = b.id_on(shard, &format!("wd-{name}"));
            let mut c = b.raw(V5);
            c.connect_with(connect(&id, true, expiry, Some(delay), &topic));
            if name == "resumed" {
                resumed.push((id.clone(), topic.clone()));
            }
            if name == "replaced" {
                // A new connection with clean start ends the session: the old
                // connection's delayed will is due now.
                let mut new = b.raw(V5);
                new.connect_with(connect(&id, true, 60, None, &topic));
                let _ = c.closed_within(WAIT);
                back.push(new);
                continue;
            }
            drop(c); // no DISCONNECT: the will is due
        }
        watchers.push(w);
    }
    std::thread::sleep(Duration::from_millis(500));
    for (id, topic) in &resumed {
        let mut c = b.raw(V5);
        let ack = c.connect_with(connect(id, false, 60, Some(2), topic));
        assert!(ack.session_present, "{id}");
        back.push(c);
    }
    // Both watchers are read side by side until the last will is due.
    let mut seen: Vec<Vec<(String, Duration)>> = vec![Vec::new(), Vec::new()];
    while t0.elapsed() < Duration::from_millis(3500) {
        for (w, got) in watchers.iter_mut().zip(seen.iter_mut()) {
            if let Some(Packet::Publish(p)) = w.recv_within(Duration::from_millis(50)) {
                if let Some(id) = p.packet_id {
                    w.send(&Packet::PubAck(Ack::new(id)));
                }
                assert_eq!(
                    p.properties.will_delay_interval, None,
                    "not a PUBLISH property"
                );
                assert_eq!(
                    p.properties.user_properties,
                    vec![("why".into(), "gone".into())],
                    "will properties forwarded"
                );
                let who = String::from_utf8(p.payload.to_vec()).unwrap();
                got.push((who, t0.elapsed()));
            }
        }
    }
    for (shard, got) in seen.iter().enumerate() {
        let at = |name: &str| {
            got.iter()
                .find(|(who, _)| who.contains(&format!("wd-{name}")))
                .map(|(_, t)| *t)
        };
        let no_session = at("no-session").expect("published at once");
        assert!(
            no_session < Duration::from_millis(1000),
            "shard {shard}: {no_session:?}"
        );
        let ends = at("session-ends").expect("published when the session ended");
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&ends),
            "shard {shard}: session-ends at {ends:?}"
        );
        let delayed = at("delayed").expect("published after its delay");
        assert!(
            (Duration::from_millis(1900)..Duration::from_millis(3400)).contains(&delayed),
            "shard {shard}: delayed at {delayed:?}"
        );
        assert_eq!(
            at("resumed"),
            None,
            "shard {shard}: resumed in time: no will"
        );
        let replaced = at("replaced").expect("published when the takeover ended the session");
        assert!(
            replaced < Duration::from_millis(1000),
            "shard {shard}: {replaced:?}"
        );
        assert_eq!(got.len(), 4, "shard {shard}: {got:?}");
    }
}
