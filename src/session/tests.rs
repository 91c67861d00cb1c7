//! Session state machine tests: packets in, bytes and actions out, no sockets.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};

use super::*;
use crate::protocol::{
    decode, Connect, DecodeOptions, Disconnect, Subscribe, Subscription, Unsubscribe,
};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;

/// `Session::handle`, with the response encoded after the session's own output (the
/// order the gate uses when nothing is held back).
trait HandleAll {
    fn handle_all(&mut self, p: Packet, out: &mut BytesMut)
        -> Result<Option<Action>, SessionError>;
}

impl HandleAll for Session {
    fn handle_all(
        &mut self,
        p: Packet,
        out: &mut BytesMut,
    ) -> Result<Option<Action>, SessionError> {
        let h = self.handle(p, out)?;
        if let Some(r) = h.response {
            r.encode(self.version(), out);
        }
        Ok(h.action)
    }
}

fn id(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

fn session(max_inflight: u16) -> Session {
    Session::new(
        ByteString::from("c1"),
        V4,
        true,
        SessionLimits {
            max_inflight,
            max_inflight_incoming: 4,
            max_queued_messages: 3,
            max_queued_bytes: 1 << 20,
            max_packet_out: u32::MAX,
            max_topic_alias_out: 0,
        },
    )
}

fn msg(topic: &str, payload: &'static [u8], qos: QoS) -> Message {
    Message {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        properties: Properties::new(),
        expires: None,
    }
}

fn publish(qos: QoS, pid: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new("t").unwrap(),
        packet_id: pid.map(id),
        properties: Properties::new(),
        payload: Bytes::from_static(b"x"),
    })
}

/// Every packet in `out`, drained.
fn packets(out: &mut BytesMut) -> Vec<Packet> {
    let opts = DecodeOptions::new(V4);
    let mut v = Vec::new();
    while let Some(p) = decode(out, &opts).unwrap() {
        v.push(p);
    }
    assert!(out.is_empty(), "trailing bytes");
    v
}

fn published_ids(ps: &[Packet]) -> Vec<(u16, bool)> {
    ps.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id.map_or(0, |i| i.get()), p.dup)),
            _ => None,
        })
        .collect()
}

#[test]
fn qos1_publish_is_acked_and_routed() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    let a = s
        .handle_all(publish(QoS::AtLeastOnce, Some(7)), &mut out)
        .unwrap();
    assert!(matches!(a, Some(Action::Route(m)) if m.qos == QoS::AtLeastOnce));
    assert_eq!(&out[..], &[0x40, 0x02, 0x00, 0x07]);
}

#[test]
fn qos0_publish_is_routed_without_ack() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    let a = s
        .handle_all(publish(QoS::AtMostOnce, None), &mut out)
        .unwrap();
    assert!(matches!(a, Some(Action::Route(_))));
    assert!(out.is_empty());
}

#[test]
fn qos2_inbound_is_exactly_once() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    assert!(matches!(
        s.handle_all(publish(QoS::ExactlyOnce, Some(3)), &mut out)
            .unwrap(),
        Some(Action::Route(_))
    ));
    assert_eq!(&out.split()[..], &[0x50, 0x02, 0x00, 0x03]);
    // The client resends before PUBREL (it did not get our PUBREC): ack, do not forward.
    assert_eq!(
        s.handle_all(publish(QoS::ExactlyOnce, Some(3)), &mut out)
            .unwrap(),
        None
    );
    assert_eq!(&out.split()[..], &[0x50, 0x02, 0x00, 0x03]);
    assert_eq!(s.stats().qos2_duplicates, 1);
    // PUBREL completes the flow with PUBCOMP.
    assert_eq!(
        s.handle_all(Packet::PubRel(Ack::new(id(3))), &mut out)
            .unwrap(),
        None
    );
    assert_eq!(&out.split()[..], &[0x70, 0x02, 0x00, 0x03]);
    // The id is free again: a new message with it is forwarded.
    assert!(matches!(
        s.handle_all(publish(QoS::ExactlyOnce, Some(3)), &mut out)
            .unwrap(),
        Some(Action::Route(_))
    ));
}

#[test]
fn pubrel_for_unknown_id_still_gets_pubcomp() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    s.handle_all(Packet::PubRel(Ack::new(id(9))), &mut out)
        .unwrap();
    assert_eq!(&out[..], &[0x70, 0x02, 0x00, 0x09]);
}

#[test]
fn incoming_qos2_window_is_enforced() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    for i in 1..=4 {
        s.handle_all(publish(QoS::ExactlyOnce, Some(i)), &mut out)
            .unwrap();
    }
    assert_eq!(
        s.handle_all(publish(QoS::ExactlyOnce, Some(5)), &mut out),
        Err(SessionError::ReceiveMaximumExceeded)
    );
}

#[test]
fn qos1_delivery_and_ack() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    let m = msg("a/b", b"hi", QoS::AtLeastOnce);
    assert_eq!(
        s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out)),
        DeliverOutcome::Written
    );
    let ps = packets(&mut out);
    assert_eq!(published_ids(&ps), vec![(1, false)]);
    assert_eq!(s.inflight_len(), 1);
    s.handle_all(Packet::PubAck(Ack::new(id(1))), &mut out)
        .unwrap();
    assert_eq!(s.inflight_len(), 0);
    assert!(out.is_empty());
}

#[test]
fn qos0_delivery_has_no_id_and_no_state() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    let m = msg("a", b"0", QoS::AtMostOnce);
    assert_eq!(
        s.deliver(&m, QoS::AtMostOnce, true, Some(&mut out)),
        DeliverOutcome::Written
    );
    let ps = packets(&mut out);
    match &ps[..] {
        [Packet::Publish(p)] => {
            assert_eq!(
                (p.qos, p.packet_id, p.retain),
                (QoS::AtMostOnce, None, true)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn window_queues_in_order_and_refills_on_ack() {
    let mut s = session(2);
    let mut out = BytesMut::new();
    for p in [b"1", b"2", b"3"] {
        s.deliver(
            &msg("t", p, QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            false,
            Some(&mut out),
        );
    }
    assert_eq!(
        published_ids(&packets(&mut out)),
        vec![(1, false), (2, false)]
    );
    assert_eq!(s.queued_len(), 1);
    // Acks out of order still free the window.
    s.handle_all(Packet::PubAck(Ack::new(id(2))), &mut out)
        .unwrap();
    let ps = packets(&mut out);
    assert_eq!(published_ids(&ps), vec![(3, false)]);
    match &ps[..] {
        [Packet::Publish(p)] => assert_eq!(&p.payload[..], b"3"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn queue_limit_drops_and_counts() {
    let mut s = session(1);
    let mut out = BytesMut::new();
    let m = msg("t", b"x", QoS::AtLeastOnce);
    assert_eq!(
        s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out)),
        DeliverOutcome::Written
    );
    for _ in 0..3 {
        assert_eq!(
            s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out)),
            DeliverOutcome::Queued
        );
    }
    assert_eq!(
        s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out)),
        DeliverOutcome::Dropped(DropReason::QueueFull)
    );
    assert_eq!(s.stats().dropped_queue_full, 1);
}

#[test]
fn queue_byte_limit_drops() {
    let mut s = Session::new(
        ByteString::from("c"),
        V4,
        true,
        SessionLimits {
            max_inflight: 1,
            max_inflight_incoming: 1,
            max_queued_messages: 100,
            // Room for a little more than one message of 7 bytes (topic + payload).
            max_queued_bytes: QUEUE_ENTRY_OVERHEAD + 10,
            max_packet_out: u32::MAX,
            max_topic_alias_out: 0,
        },
    );
    let mut out = BytesMut::new();
    let m = msg("t", b"123456", QoS::AtLeastOnce);
    s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out));
    // One message queued (overhead + 7 bytes), below the limit: one more fits.
    for _ in 0..2 {
        assert_eq!(
            s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out)),
            DeliverOutcome::Queued
        );
    }
    // Two queued, at or over the limit: refused.
    assert_eq!(
        s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out)),
        DeliverOutcome::Dropped(DropReason::QueueFull)
    );
}

#[test]
fn offline_session_queues_qos1_drops_qos0_and_resends_on_resume() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    s.deliver(
        &msg("t", b"a", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    out.clear(); // the connection died before the bytes went out
    s.detach();
    assert_eq!(
        s.deliver(
            &msg("t", b"q0", QoS::AtMostOnce),
            QoS::AtMostOnce,
            false,
            None
        ),
        DeliverOutcome::Dropped(DropReason::Offline)
    );
    assert_eq!(
        s.deliver(
            &msg("t", b"b", QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            false,
            None
        ),
        DeliverOutcome::Queued
    );
    s.resume(V4, &mut out);
    let ps = packets(&mut out);
    // The unacknowledged one again with DUP, then the queued one as new.
    assert_eq!(published_ids(&ps), vec![(1, true), (2, false)]);
}

#[test]
fn qos2_outbound_flow_and_pubrel_resend_on_resume() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    s.deliver(
        &msg("t", b"x", QoS::ExactlyOnce),
        QoS::ExactlyOnce,
        false,
        Some(&mut out),
    );
    assert_eq!(published_ids(&packets(&mut out)), vec![(1, false)]);
    s.handle_all(Packet::PubRec(Ack::new(id(1))), &mut out)
        .unwrap();
    assert_eq!(&out.split()[..], &[0x62, 0x02, 0x00, 0x01]);
    // Reconnect before PUBCOMP: PUBREL is sent again, not the PUBLISH [MQTT-4.4.0-1].
    s.detach();
    s.resume(V4, &mut out);
    assert_eq!(&out.split()[..], &[0x62, 0x02, 0x00, 0x01]);
    s.handle_all(Packet::PubComp(Ack::new(id(1))), &mut out)
        .unwrap();
    assert_eq!(s.inflight_len(), 0);
    // A PUBACK for a QoS 2 flow is not a valid completion.
    s.deliver(
        &msg("t", b"y", QoS::ExactlyOnce),
        QoS::ExactlyOnce,
        false,
        Some(&mut out),
    );
    out.clear();
    s.handle_all(Packet::PubAck(Ack::new(id(2))), &mut out)
        .unwrap();
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(s.stats().unknown_acks, 1);
}

#[test]
fn packet_ids_skip_ids_in_flight_after_wrap() {
    let mut s = session(2);
    let mut out = BytesMut::new();
    s.deliver(
        &msg("t", b"x", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    // Id 1 stays in flight; run the counter around.
    s.last_id = u16::MAX;
    s.deliver(
        &msg("t", b"y", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    assert_eq!(
        published_ids(&packets(&mut out)),
        vec![(1, false), (2, false)]
    );
}

#[test]
fn subscribe_and_unsubscribe() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    let sub = Packet::Subscribe(Subscribe {
        packet_id: id(5),
        subscriptions: vec![
            Subscription {
                filter: TopicFilter::new("a/+").unwrap(),
                options: SubscriptionOptions::new(QoS::ExactlyOnce),
            },
            Subscription {
                filter: TopicFilter::new("b/#").unwrap(),
                options: SubscriptionOptions::new(QoS::AtMostOnce),
            },
        ],
        properties: Properties::new(),
    });
    match s.handle_all(sub, &mut out).unwrap() {
        Some(Action::Subscribe {
            packet_id,
            added,
            codes,
        }) => {
            assert_eq!(packet_id, id(5));
            assert_eq!(added.len(), 2);
            assert_eq!(codes, vec![ReasonCode(2), ReasonCode(0)]);
            // Nothing is recorded until the shard accepts it.
            assert_eq!(s.subscription_count(), 0);
            for (f, o) in added {
                assert!(s.add_subscription(f, o));
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(
        out.is_empty(),
        "SUBACK is the shard's, after the index is updated"
    );
    assert_eq!(s.subscriptions().count(), 2);
    assert!(!s.add_subscription(
        TopicFilter::new("b/#").unwrap(),
        Subscribed::new(SubscriptionOptions::new(QoS::AtLeastOnce))
    ));
    let unsub = Packet::Unsubscribe(Unsubscribe {
        packet_id: id(6),
        filters: vec![
            TopicFilter::new("a/+").unwrap(),
            TopicFilter::new("never/held").unwrap(),
        ],
        properties: Properties::new(),
    });
    // The action names only what the session held (and so what the index must drop).
    assert!(
        matches!(s.handle_all(unsub, &mut out).unwrap(), Some(Action::Unsubscribe(f)) if f == [TopicFilter::new("a/+").unwrap()])
    );
    assert_eq!(&out[..], &[0xB0, 0x02, 0x00, 0x06]);
    assert_eq!(s.subscriptions().count(), 1);
}

#[test]
fn ping_disconnect_and_violations() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    s.handle_all(Packet::PingReq, &mut out).unwrap();
    assert_eq!(&out.split()[..], &[0xD0, 0x00]);
    assert_eq!(
        s.handle_all(Packet::Disconnect(Disconnect::default()), &mut out)
            .unwrap(),
        Some(Action::Disconnect {
            publish_will: false,
            session_expiry: None,
        })
    );
    let connect = Packet::Connect(Box::new(Connect {
        version: V4,
        clean_start: true,
        keep_alive: 0,
        client_id: ByteString::from("x"),
        will: None,
        username: None,
        password: None,
        properties: Properties::new(),
    }));
    assert_eq!(
        s.handle_all(connect, &mut out),
        Err(SessionError::SecondConnect)
    );
    assert_eq!(
        s.handle_all(Packet::PingResp, &mut out),
        Err(SessionError::UnexpectedPacket(PacketType::PingResp))
    );
}

#[test]
fn unknown_puback_is_counted_and_ignored() {
    let mut s = session(8);
    let mut out = BytesMut::new();
    s.handle_all(Packet::PubAck(Ack::new(id(42))), &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(s.stats().unknown_acks, 1);
}

#[test]
fn the_session_keeps_messages_as_given() {
    // Copying is routing's job (once per message, shared by every subscriber); a session
    // never copies again, online or offline.
    let mut s = session(1);
    let mut out = BytesMut::new();
    let big = Bytes::from(vec![7u8; 4096]);
    let m = Message {
        topic: TopicName::new("t").unwrap(),
        payload: big.slice(0..4),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
        expires: None,
    };
    s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out));
    s.deliver(&m, QoS::AtLeastOnce, false, Some(&mut out));
    s.detach();
    s.deliver(&m, QoS::AtLeastOnce, false, None);
    let held: Vec<_> = s.held_messages().map(|m| m.payload.as_ptr()).collect();
    assert_eq!(held, vec![big.as_ptr(); 3]);
}

#[test]
fn resume_resends_no_more_than_the_new_window() {
    let mut s = session(4);
    let mut out = BytesMut::new();
    for (i, q) in [
        QoS::AtLeastOnce,
        QoS::ExactlyOnce,
        QoS::AtLeastOnce,
        QoS::ExactlyOnce,
    ]
    .into_iter()
    .enumerate()
    {
        let m = msg("t", b"m", q);
        assert_eq!(
            s.deliver(&m, q, false, Some(&mut out)),
            DeliverOutcome::Written
        );
        assert_eq!(
            published_ids(&packets(&mut out)),
            vec![(i as u16 + 1, false)]
        );
    }
    s.detach();
    assert_eq!(
        s.deliver(
            &msg("t", b"q", QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            false,
            None
        ),
        DeliverOutcome::Queued
    );
    // The client comes back allowing 2 in flight.
    let mut limits = s.limits;
    limits.max_inflight = 2;
    s.set_limits(limits);
    s.resume(V4, &mut out);
    assert_eq!(
        published_ids(&packets(&mut out)),
        vec![(1, true), (2, true)]
    );
    // Flow 3 was acknowledged on the old connection before it was resent: it ends, and
    // flow 4 (not 5, the queued one) takes its place with its own id.
    s.handle_all(Packet::PubAck(Ack::new(id(3))), &mut out)
        .unwrap();
    assert!(packets(&mut out).is_empty(), "window still full");
    s.handle_all(Packet::PubAck(Ack::new(id(1))), &mut out)
        .unwrap();
    assert_eq!(published_ids(&packets(&mut out)), vec![(4, true)]);
    // PUBREC of 2: its PUBREL goes out and the flow still counts until PUBCOMP.
    s.handle_all(Packet::PubRec(Ack::new(id(2))), &mut out)
        .unwrap();
    assert_eq!(&out.split()[..], &[0x62, 0x02, 0x00, 0x02]);
    s.handle_all(Packet::PubComp(Ack::new(id(2))), &mut out)
        .unwrap();
    assert_eq!(published_ids(&packets(&mut out)), vec![(5, false)]);
    assert_eq!(s.inflight_len(), 2);
    assert_eq!(s.queued_len(), 0);
}

/// Released flows (PUBREL sent) are always resent on resume and count against the window:
/// with the window full of them, no PUBLISH goes out until a PUBCOMP.
#[test]
fn resume_counts_pubrels_against_the_window() {
    let mut s = session(4);
    let mut out = BytesMut::new();
    for _ in 0..3 {
        let m = msg("t", b"m", QoS::ExactlyOnce);
        s.deliver(&m, QoS::ExactlyOnce, false, Some(&mut out));
    }
    out.clear();
    s.handle_all(Packet::PubRec(Ack::new(id(1))), &mut out)
        .unwrap();
    s.handle_all(Packet::PubRec(Ack::new(id(2))), &mut out)
        .unwrap();
    out.clear();
    s.detach();
    let mut limits = s.limits;
    limits.max_inflight = 2;
    s.set_limits(limits);
    s.resume(V4, &mut out);
    let ps = packets(&mut out);
    assert!(published_ids(&ps).is_empty(), "{ps:?}");
    assert_eq!(ps.len(), 2, "two PUBRELs: {ps:?}");
    s.handle_all(Packet::PubComp(Ack::new(id(1))), &mut out)
        .unwrap();
    assert_eq!(published_ids(&packets(&mut out)), vec![(3, true)]);
}

/// A PUBREL resent on resume counts against the window wherever it stands: with window 1
/// and [PUBLISH 1, PUBREL 2] in flight, only the PUBREL goes out until PUBCOMP.
#[test]
fn resume_counts_a_pubrel_behind_a_publish() {
    let mut s = session(4);
    let mut out = BytesMut::new();
    s.deliver(
        &msg("t", b"a", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    s.deliver(
        &msg("t", b"b", QoS::ExactlyOnce),
        QoS::ExactlyOnce,
        false,
        Some(&mut out),
    );
    s.handle_all(Packet::PubRec(Ack::new(id(2))), &mut out)
        .unwrap();
    out.clear();
    s.detach();
    let mut limits = s.limits;
    limits.max_inflight = 1;
    s.set_limits(limits);
    s.resume(V4, &mut out);
    let ps = packets(&mut out);
    assert!(
        published_ids(&ps).is_empty(),
        "the PUBREL fills the window: {ps:?}"
    );
    assert!(matches!(ps.as_slice(), [Packet::PubRel(a)] if a.packet_id.get() == 2));
    s.handle_all(Packet::PubComp(Ack::new(id(2))), &mut out)
        .unwrap();
    assert_eq!(published_ids(&packets(&mut out)), vec![(1, true)]);
}

/// A client that comes back accepting smaller packets gets nothing larger, neither in
/// flight nor queued: those messages are discarded as if delivered (5.0 §3.1.2.11.4).
#[test]
fn resume_discards_what_no_longer_fits_the_maximum_packet_size() {
    let mut s = session(1);
    let mut out = BytesMut::new();
    let big = msg(
        "t",
        b"a message far larger than the new limit allows",
        QoS::AtLeastOnce,
    );
    let small = msg("t", b"ok", QoS::AtLeastOnce);
    for m in [&big, &small, &big, &small] {
        s.deliver(m, QoS::AtLeastOnce, false, Some(&mut out));
    }
    out.clear();
    s.detach();
    let mut limits = s.limits;
    limits.max_packet_out = 20;
    s.set_limits(limits);
    s.resume(V4, &mut out);
    let sent = |out: &mut BytesMut| -> Vec<(usize, u16)> {
        packets(out)
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some((p.payload.len(), p.packet_id.map_or(0, |i| i.get()))),
                _ => None,
            })
            .collect()
    };
    let got = sent(&mut out);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0, 2,
        "the big one in flight is gone; the small queued one follows"
    );
    assert_eq!(s.stats().dropped_too_large, 1);
    // When the window frees up, the big queued one is discarded in turn.
    s.handle_all(Packet::PubAck(Ack::new(id(got[0].1))), &mut out)
        .unwrap();
    let got = sent(&mut out);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [2]);
    assert_eq!(s.stats().dropped_too_large, 2);
}

/// Rights that allow reading topics under one prefix only.
struct ReadOnly(&'static str);

impl crate::security::ClientRights for ReadOnly {
    fn publish(&self, _: &str) -> bool {
        true
    }
    fn subscribe(&self, _: &str) -> bool {
        true
    }
    fn read(&self, topic: &str) -> bool {
        topic.starts_with(self.0)
    }
}

#[test]
fn resume_discards_in_flight_messages_the_client_may_no_longer_read() {
    let mut s = session(2);
    let mut out = BytesMut::new();
    s.deliver(
        &msg("a/1", b"kept", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    s.deliver(
        &msg("b/1", b"gone", QoS::ExactlyOnce),
        QoS::ExactlyOnce,
        false,
        Some(&mut out),
    );
    s.deliver(
        &msg("b/2", b"queued", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    out.clear();
    s.detach();
    // Back with rights that no longer cover b/ (another listener's rules, a reload).
    s.set_rights(Some(std::sync::Arc::new(ReadOnly("a/"))));
    s.resume(V4, &mut out);
    let sent: Vec<_> = packets(&mut out)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.payload),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [Bytes::from_static(b"kept")]);
    assert_eq!(s.take_denied_drops(), 2, "one in flight, one queued");
}

fn v5_session(max_inflight: u16) -> Session {
    let mut s = session(max_inflight);
    s.version = ProtocolVersion::V5;
    s
}

fn subscribe_v5(filters: &[(&str, bool)], ids: &[u32]) -> Packet {
    let mut properties = Properties::new();
    if !ids.is_empty() {
        properties.get_mut().subscription_identifiers = ids.to_vec();
    }
    Packet::Subscribe(Subscribe {
        packet_id: id(1),
        subscriptions: filters
            .iter()
            .map(|(f, no_local)| Subscription {
                filter: TopicFilter::new(*f).unwrap(),
                options: SubscriptionOptions {
                    no_local: *no_local,
                    ..SubscriptionOptions::new(QoS::AtLeastOnce)
                },
            })
            .collect(),
        properties,
    })
}

#[test]
fn subscribe_carries_its_identifier_to_every_filter() {
    let mut s = v5_session(8);
    let mut out = BytesMut::new();
    match s.handle_all(
        subscribe_v5(&[("a", false), ("b/+", false)], &[7]),
        &mut out,
    ) {
        Ok(Some(Action::Subscribe { added, .. })) => {
            assert_eq!(added.len(), 2);
            assert!(added.iter().all(|(_, sub)| sub.identifier == 7));
        }
        other => panic!("{other:?}"),
    }
    match s.handle_all(subscribe_v5(&[("a", false)], &[]), &mut out) {
        Ok(Some(Action::Subscribe { added, .. })) => assert_eq!(added[0].1.identifier, 0),
        other => panic!("{other:?}"),
    }
    // 5.0 §3.8.2.1.2: more than one identifier is a protocol error.
    assert_eq!(
        s.handle_all(subscribe_v5(&[("a", false)], &[1, 2]), &mut out),
        Err(SessionError::SubscriptionIdentifierRepeated)
    );
    // [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol error.
    let e = s
        .handle_all(
            subscribe_v5(&[("a", true), ("$share/g/a", true)], &[]),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(e, SessionError::NoLocalOnSharedSubscription);
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    assert!(s
        .handle_all(subscribe_v5(&[("a", true)], &[]), &mut out)
        .is_ok());
}

#[test]
fn deliveries_carry_their_subscription_identifiers_at_5_0_only() {
    let tags = || {
        let mut t: Tagged = None;
        tag_identifier(&mut t, 0);
        assert!(t.is_none(), "0 is no identifier");
        tag_identifier(&mut t, 5);
        tag_identifier(&mut t, 300);
        tag_identifier(&mut t, 5);
        t
    };
    let ids = |out: &mut BytesMut, version| -> Vec<Vec<u32>> {
        let opts = DecodeOptions::new(version);
        let mut v = Vec::new();
        while let Some(p) = decode(out, &opts).unwrap() {
            if let Packet::Publish(p) = p {
                v.push(p.properties.subscription_identifiers.clone());
            }
        }
        v
    };
    let mut s = v5_session(1);
    let mut out = BytesMut::new();
    let m = msg("t", b"x", QoS::AtLeastOnce);
    // Written at once (QoS 0 and 1), and queued behind the window: each keeps its own.
    s.deliver_tagged(&m, QoS::AtMostOnce, false, tags(), Some(&mut out));
    s.deliver_tagged(&m, QoS::AtLeastOnce, false, tags(), Some(&mut out));
    s.deliver_tagged(&m, QoS::AtLeastOnce, false, None, Some(&mut out));
    assert_eq!(
        ids(&mut out, ProtocolVersion::V5),
        [vec![5, 300], vec![5, 300]]
    );
    s.handle_all(Packet::PubAck(Ack::new(id(1))), &mut out)
        .unwrap();
    assert_eq!(ids(&mut out, ProtocolVersion::V5), [Vec::<u32>::new()]);
    // A resend repeats them.
    s.handle_all(Packet::PubAck(Ack::new(id(2))), &mut out)
        .unwrap();
    s.deliver_tagged(&m, QoS::AtLeastOnce, false, tags(), Some(&mut out));
    out.clear();
    s.detach();
    s.resume(ProtocolVersion::V5, &mut out);
    assert_eq!(ids(&mut out, ProtocolVersion::V5), [vec![5, 300]]);
    // 3.x has no properties at all.
    let mut s = session(4);
    s.deliver_tagged(&m, QoS::AtLeastOnce, false, tags(), Some(&mut out));
    let ps = packets(&mut out);
    assert!(matches!(&ps[..], [Packet::Publish(_)]));
}

#[test]
fn identifiers_count_against_the_maximum_packet_size() {
    let mut s = v5_session(4);
    let m = msg("t", b"abc", QoS::AtLeastOnce);
    // 2 header + 3 topic + 2 id + 1 property length + 3 payload = 11 bytes bare; a
    // subscription identifier of 300 adds 3.
    let mut limits = s.limits;
    limits.max_packet_out = 12;
    s.set_limits(limits);
    let mut out = BytesMut::new();
    let mut t: Tagged = None;
    tag_identifier(&mut t, 300);
    assert_eq!(
        s.deliver_tagged(&m, QoS::AtLeastOnce, false, t, Some(&mut out)),
        DeliverOutcome::Dropped(DropReason::TooLarge)
    );
    assert_eq!(
        s.deliver_tagged(&m, QoS::AtLeastOnce, false, None, Some(&mut out)),
        DeliverOutcome::Written
    );
}

#[test]
fn take_shared_hands_back_what_the_client_has_not_acknowledged() {
    let shared = |g: &str| {
        Some(Box::new(Tags {
            identifiers: Default::default(),
            share: Some(TopicFilter::new(g).unwrap()),
        }))
    };
    let mut s = session(2);
    let mut out = BytesMut::new();
    let m = |p: &'static [u8]| msg("t", p, QoS::ExactlyOnce);
    // In flight: 1 (shared, will be PUBREC'd), 2 (plain); queued: 3 (shared), 4 (plain),
    // 5 (shared).
    s.deliver_tagged(
        &m(b"1"),
        QoS::ExactlyOnce,
        false,
        shared("$share/g/t"),
        Some(&mut out),
    );
    s.deliver(&m(b"2"), QoS::ExactlyOnce, false, Some(&mut out));
    s.deliver_tagged(
        &m(b"3"),
        QoS::AtLeastOnce,
        false,
        shared("$share/h/t"),
        Some(&mut out),
    );
    s.deliver(&m(b"4"), QoS::ExactlyOnce, false, Some(&mut out));
    assert_eq!(s.queued_len(), 2);
    let before = s.queued_bytes();
    // The client has taken 1 (PUBREC): it is its own now.
    s.handle_all(Packet::PubRec(Ack::new(id(1))), &mut out)
        .unwrap();
    s.detach();
    s.deliver_tagged(
        &m(b"5"),
        QoS::ExactlyOnce,
        false,
        shared("$share/g/t"),
        None,
    );
    assert!(s.queued_bytes() > before);
    let taken = s.take_shared();
    let got: Vec<(&str, &[u8])> = taken
        .iter()
        .map(|(g, m)| (g.as_str(), &m.payload[..]))
        .collect();
    assert_eq!(got, [("$share/h/t", &b"3"[..]), ("$share/g/t", &b"5"[..])]);
    assert_eq!(s.queued_len(), 1, "the plain one stays");
    assert_eq!(s.queued_bytes(), m(b"4").cost());
    assert_eq!(s.inflight_len(), 2);
    // A shared one in flight and not acknowledged is taken too.
    let mut s = session(2);
    s.deliver_tagged(
        &m(b"6"),
        QoS::AtLeastOnce,
        false,
        shared("$share/g/t"),
        Some(&mut out),
    );
    s.deliver(&m(b"7"), QoS::AtLeastOnce, false, Some(&mut out));
    let taken = s.take_shared();
    assert_eq!(taken.len(), 1);
    assert_eq!(&taken[0].1.payload[..], b"6");
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn outbound_topic_aliases_replace_the_least_recently_used() {
    let mut s = v5_session(16);
    let mut limits = s.limits;
    limits.max_topic_alias_out = 2;
    s.set_limits(limits);
    let mut out = BytesMut::new();
    let topics = ["a", "b", "a", "c", "a", "b", "b"];
    for t in topics {
        s.deliver(
            &msg(t, b"x", QoS::AtMostOnce),
            QoS::AtMostOnce,
            false,
            Some(&mut out),
        );
    }
    let opts = DecodeOptions::new(ProtocolVersion::V5);
    let mut got = Vec::new();
    while let Some(Packet::Publish(p)) = decode(&mut out, &opts).unwrap() {
        got.push((p.topic.to_string(), p.properties.topic_alias));
    }
    let want: Vec<(String, Option<u16>)> = [
        ("a", 1), // new: 1
        ("b", 2), // new: 2
        ("", 1),  // a known
        ("c", 2), // full: b is the least recently used, 2 is c's now
        ("", 1),  // a known
        ("b", 2), // c least recent: 2 is b's again
        ("", 2),  // b known
    ]
    .iter()
    .map(|(t, a)| (t.to_string(), Some(*a)))
    .collect();
    assert_eq!(got, want);
    // A new connection starts without aliases [MQTT-3.3.2-7]; 3.x and a client that
    // allows none get none.
    s.deliver(
        &msg("a", b"x", QoS::AtLeastOnce),
        QoS::AtLeastOnce,
        false,
        Some(&mut out),
    );
    out.clear();
    s.detach();
    s.resume(ProtocolVersion::V5, &mut out);
    match decode(&mut out, &opts).unwrap() {
        Some(Packet::Publish(p)) => {
            assert!(p.dup);
            assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("a", Some(1)));
        }
        other => panic!("{other:?}"),
    }
    let mut limits = s.limits;
    limits.max_topic_alias_out = 0;
    s.set_limits(limits);
    s.deliver(
        &msg("a", b"x", QoS::AtMostOnce),
        QoS::AtMostOnce,
        false,
        Some(&mut out),
    );
    match decode(&mut out, &opts).unwrap() {
        Some(Packet::Publish(p)) => assert_eq!(p.properties.topic_alias, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_alias_is_given_where_it_would_break_the_clients_maximum_packet_size() {
    let mut s = v5_session(16);
    let opts = DecodeOptions::new(ProtocolVersion::V5);
    let mut out = BytesMut::new();
    // QoS 0 "t/x" with 3 bytes: 2 + (2 + 3) + 1 + 3 = 11 bytes bare, 14 with an alias.
    for (max, want) in [(12, [None, None]), (16, [Some(("t/x", 1)), Some(("", 1))])] {
        let mut limits = s.limits;
        limits.max_topic_alias_out = 2;
        limits.max_packet_out = max;
        s.set_limits(limits);
        for w in want {
            s.deliver(
                &msg("t/x", b"abc", QoS::AtMostOnce),
                QoS::AtMostOnce,
                false,
                Some(&mut out),
            );
            let Some(Packet::Publish(p)) = decode(&mut out, &opts).unwrap() else {
                panic!("a PUBLISH");
            };
            match w {
                None => assert_eq!((p.topic.as_str(), p.properties.topic_alias), ("t/x", None)),
                Some((t, a)) => {
                    assert_eq!((p.topic.as_str(), p.properties.topic_alias), (t, Some(a)))
                }
            }
        }
    }
}
