//! Shared subscriptions and subscription identifiers, step by step with the
//! [`harness`](super::harness): which member gets each message across shards, what a
//! leaving member hands on, and the races a chosen shard can lose.

use super::harness::*;
use super::ShardMsg;
use crate::protocol::*;

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn subscribe_with(id: u16, filters: &[&str], qos: QoS, identifier: Option<u32>) -> Packet {
    let mut properties = Properties::new();
    if let Some(i) = identifier {
        properties.get_mut().subscription_identifiers = vec![i];
    }
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(id).expect("non-zero"),
        subscriptions: filters
            .iter()
            .map(|f| Subscription {
                filter: TopicFilter::new(*f).expect("valid filter"),
                options: SubscriptionOptions::new(qos),
            })
            .collect(),
        properties,
    })
}

/// (payload, subscription identifiers) of every PUBLISH in `packets`.
fn received(packets: &[Packet]) -> Vec<(Vec<u8>, Vec<u32>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                p.payload.to_vec(),
                p.properties.subscription_identifiers.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn payloads(packets: &[Packet]) -> Vec<Vec<u8>> {
    received(packets).into_iter().map(|(p, _)| p).collect()
}

/// Acknowledges every QoS 1 PUBLISH in `packets`.
fn ack_all(h: &mut Harness, c: &Client, packets: &[Packet]) {
    for p in packets {
        if let Packet::Publish(Publish {
            packet_id: Some(id),
            qos: QoS::AtLeastOnce,
            ..
        }) = p
        {
            h.send(c, Packet::PubAck(Ack::new(*id)));
        }
    }
}

#[test]
fn each_message_reaches_one_member_of_the_group_across_shards() {
    // Members of both versions on both shards; publishers on both shards.
    let mut h = Harness::new(2, |_| {});
    let mut members = [
        h.connect(0, V5, "m0a", true),
        h.connect(0, V311, "m0b", true),
        h.connect(1, V311, "m1a", true),
        h.connect(1, V5, "m1b", true),
    ];
    let mut plain = h.connect(1, V5, "plain", true);
    for (i, m) in members.iter().enumerate() {
        h.send(
            m,
            subscribe(1 + i as u16, "$share/g/jobs/+", QoS::AtLeastOnce),
        );
    }
    h.send(&plain, subscribe(9, "jobs/#", QoS::AtLeastOnce));
    h.deliver_all();
    for m in members.iter_mut() {
        let got = h.drain(m);
        assert!(matches!(got.as_slice(), [Packet::SubAck(_)]), "{got:?}");
    }
    h.drain(&mut plain);
    let p0 = h.connect(0, V5, "p0", true);
    let p1 = h.connect(1, V311, "p1", true);
    let n = 40u16;
    for i in 0..n {
        let p = if i % 2 == 0 { &p0 } else { &p1 };
        h.send(
            p,
            publish("jobs/x", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1),
        );
    }
    h.deliver_all();
    let mut seen = Vec::new();
    let mut per_member = Vec::new();
    for m in members.iter_mut() {
        let got = h.drain(m);
        ack_all(&mut h, m, &got);
        let mine = payloads(&got);
        per_member.push(mine.len());
        seen.extend(mine);
    }
    seen.sort();
    let want: Vec<Vec<u8>> = (0..n).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(seen, want, "every message exactly once over the group");
    // Rotation: shards take turns, then members within a shard.
    assert!(per_member.iter().all(|&k| k == 10), "{per_member:?}");
    // The plain subscription gets every message, as if the group were not there.
    assert_eq!(payloads(&h.drain(&mut plain)).len(), usize::from(n));
    // A group of one shard's members only, reached from the other shard.
    let s = h.shards[0].summary();
    assert_eq!(s.shared_undeliverable, 0);
}

#[test]
fn a_member_that_is_busy_is_passed_over_for_one_that_can_take_the_message() {
    let mut h = Harness::new(1, |c| c.limits.max_inflight = 1);
    let mut a = h.connect(0, V5, "a", true);
    let mut b = h.connect(0, V5, "b", true);
    for (i, m) in [&a, &b].into_iter().enumerate() {
        h.send(m, subscribe(1 + i as u16, "$share/g/t", QoS::AtLeastOnce));
    }
    h.drain(&mut a);
    h.drain(&mut b);
    let p = h.connect(0, V5, "p", true);
    // a never acknowledges: once its window of one is full, b (which does) gets the
    // rest, though rotation would give a every other one.
    let mut got_b = 0;
    for i in 0..4u16 {
        h.send(
            &p,
            publish("t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1),
        );
        let got = h.drain(&mut b);
        ack_all(&mut h, &b, &got);
        got_b += payloads(&got).len();
    }
    let got_a = payloads(&h.drain(&mut a));
    assert_eq!(got_a.len(), 1, "{got_a:?}");
    assert_eq!(got_b, 3);
}

#[test]
fn a_member_whose_session_ends_hands_its_unacknowledged_messages_on() {
    for (va, vb) in [(V311, V5), (V5, V311), (V5, V5)] {
        // a (shard 0) takes messages and never acknowledges them; b is on shard 1.
        let mut h = Harness::new(2, |c| c.limits.max_inflight = 2);
        let mut a = h.connect(0, va, "a", true);
        let mut b = h.connect(1, vb, "b", true);
        h.send(&a, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
        h.send(&b, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
        h.deliver_all();
        h.drain(&mut a);
        h.drain(&mut b);
        // Only a is a member while these are published: 2 in flight, 3 queued.
        h.send(&b, unsubscribe(2, "$share/g/t"));
        h.deliver_all();
        h.drain(&mut b);
        let p = h.connect(0, V5, "p", true);
        for i in 0..5u16 {
            h.send(
                &p,
                publish("t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1),
            );
        }
        h.deliver_all();
        let got = h.drain(&mut a);
        assert_eq!(payloads(&got).len(), 2, "the window");
        // a acknowledges the first; b joins again; a's connection (and clean session)
        // ends.
        ack_all(&mut h, &a, &got[..1]);
        h.send(&b, subscribe(3, "$share/g/t", QoS::AtLeastOnce));
        h.deliver_all();
        h.drain(&mut b);
        h.drop_client(a);
        h.deliver_all();
        let mut got = Vec::new();
        loop {
            let more = h.drain(&mut b);
            if more.is_empty() {
                break;
            }
            ack_all(&mut h, &b, &more);
            got.extend(payloads(&more));
        }
        let want: Vec<Vec<u8>> = (1..5u16).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(got, want, "{va:?} -> {vb:?}");
        assert_eq!(h.shards[0].summary().shared_redelivered, 4);
    }
}

#[test]
fn a_chosen_shard_that_lost_its_member_hands_the_message_on() {
    let mut h = Harness::new(2, |_| {});
    let mut a = h.connect(0, V5, "a", true);
    let mut c = h.connect(1, V5, "c", true);
    h.send(&a, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
    h.send(&c, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
    h.deliver_all();
    h.drain(&mut a);
    h.drain(&mut c);
    // c leaves the group; shard 0 does not know yet when it routes two messages.
    h.send(&c, unsubscribe(2, "$share/g/t"));
    let remove = h.hold(|m| matches!(m.msg, ShardMsg::InterestRemove { .. }));
    let p = h.connect(0, V5, "p", true);
    for i in 0..2u16 {
        h.send(
            &p,
            publish("t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1),
        );
    }
    h.deliver_all();
    h.deliver_held(remove);
    h.deliver_all();
    let mut got = payloads(&h.drain(&mut a));
    got.sort();
    assert_eq!(
        got,
        [0u16.to_be_bytes().to_vec(), 1u16.to_be_bytes().to_vec()]
    );
    assert_eq!(payloads(&h.drain(&mut c)).len(), 0);
    // The last member leaves while a message for it is on its way: nobody can take it,
    // and it is counted.
    h.send(&c, subscribe(4, "$share/g/t", QoS::AtLeastOnce));
    h.send(&a, unsubscribe(3, "$share/g/t"));
    h.deliver_all();
    h.drain(&mut a);
    h.drain(&mut c);
    h.send(&c, unsubscribe(5, "$share/g/t"));
    let remove = h.hold(|m| matches!(m.msg, ShardMsg::InterestRemove { .. }));
    h.send(&p, publish("t", b"lost", QoS::AtLeastOnce, false, 9));
    h.deliver_all();
    h.deliver_held(remove);
    assert_eq!(h.shards[1].summary().shared_undeliverable, 1);
    assert!(payloads(&h.drain(&mut a)).is_empty());
    assert!(payloads(&h.drain(&mut c)).is_empty());
}

#[test]
fn a_new_shared_subscription_gets_no_retained_messages() {
    let mut h = Harness::new(2, |_| {});
    for owner in 0..2 {
        let t = (0..)
            .map(|i| format!("r/{i}"))
            .find(|t| super::home_shard(t, 2) == owner)
            .unwrap();
        h.store(&t, b"kept", QoS::AtLeastOnce);
    }
    for v in [V311, V5] {
        let mut m = h.connect(0, v, "m", true);
        h.send(&m, subscribe(1, "$share/g/r/#", QoS::AtLeastOnce));
        h.send(&m, subscribe(2, "r/#", QoS::AtLeastOnce));
        let got = h.drain(&mut m);
        assert_eq!(payloads(&got).len(), 2, "only the plain filter's: {got:?}");
        h.drop_client(m);
    }
}

#[test]
fn deliveries_carry_the_identifiers_of_every_matching_subscription() {
    let mut h = Harness::new(2, |_| {});
    let t = (0..)
        .map(|i| format!("s/{i}"))
        .find(|t| super::home_shard(t, 2) == 1)
        .unwrap();
    h.store(&t, b"kept", QoS::AtLeastOnce);
    for shard in 0..2 {
        let mut c = h.connect(shard, V5, "c", true);
        h.send(&c, subscribe_with(1, &["s/#"], QoS::AtLeastOnce, Some(1)));
        let got = h.drain(&mut c);
        // The retained message carries the identifier of the filter it matched.
        assert_eq!(received(&got), [(b"kept".to_vec(), vec![1])]);
        ack_all(&mut h, &c, &got);
        h.send(
            &c,
            subscribe_with(2, &["s/+", "x"], QoS::AtMostOnce, Some(2)),
        );
        h.send(&c, subscribe_with(3, &["#"], QoS::AtMostOnce, None));
        h.send(
            &c,
            subscribe_with(4, &["$share/g/s/+"], QoS::AtMostOnce, Some(4)),
        );
        let mut got = h.drain(&mut c);
        got.retain(|p| !matches!(p, Packet::Publish(p) if p.retain));
        let p = h.connect(1 - shard, V5, "p", true);
        h.send(&p, publish(&t, b"live", QoS::AtLeastOnce, false, 1));
        let got = h.drain(&mut c);
        ack_all(&mut h, &c, &got);
        let mut r = received(&got);
        for (_, ids) in r.iter_mut() {
            ids.sort();
        }
        r.sort();
        // One copy for the plain subscriptions (all their identifiers, the one without
        // adds none) and one for the share group, with its own [MQTT-3.3.4-3]
        // [MQTT-3.3.4-4] (5.0 §4.8.2).
        assert_eq!(
            r,
            [(b"live".to_vec(), vec![1, 2]), (b"live".to_vec(), vec![4])],
            "subscriber on shard {shard}"
        );
        // Subscribing again without an identifier removes it.
        h.send(
            &c,
            subscribe_with(5, &["s/#", "s/+"], QoS::AtLeastOnce, None),
        );
        let got = h.drain(&mut c);
        ack_all(&mut h, &c, &got);
        h.send(&p, publish(&t, b"again", QoS::AtLeastOnce, false, 2));
        let got = h.drain(&mut c);
        ack_all(&mut h, &c, &got);
        let mut r = received(&got);
        r.sort();
        assert_eq!(
            r,
            [(b"again".to_vec(), vec![]), (b"again".to_vec(), vec![4])]
        );
        h.drop_client(c);
        h.drop_client(p);
    }
}

#[test]
fn a_shard_with_only_offline_members_hands_messages_to_one_with_a_connected_member() {
    for (online_shard, publisher_shard) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let mut h = Harness::new(2, |_| {});
        // An offline member with a kept session on one shard, a connected one on the other.
        let away = h.connect(1 - online_shard, V5, "away", false);
        h.send(&away, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
        let mut on = h.connect(online_shard, V311, "on", true);
        h.send(&on, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
        h.deliver_all();
        h.drain(&mut on);
        let away_session = away.session;
        h.drop_client(away);
        let p = h.connect(publisher_shard, V5, "p", true);
        for (i, qos) in [
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
        ]
        .into_iter()
        .enumerate()
        {
            h.send(&p, publish("t", &[i as u8], qos, false, i as u16 + 1));
        }
        h.deliver_all();
        let got = h.drain(&mut on);
        ack_all(&mut h, &on, &got);
        // (Those handed on arrive after those that were not.)
        let mut got = payloads(&got);
        got.sort();
        assert_eq!(got, [[0], [1], [2], [3]], "online on {online_shard}");
        let st = h.shards[1 - online_shard].state.borrow();
        assert_eq!(
            st.sessions.get(away_session).map(|s| s.queued_len()),
            Some(0)
        );
    }
    // With no connected member anywhere, the offline one still gets QoS 1/2 (queued).
    let mut h = Harness::new(2, |_| {});
    let away = h.connect(1, V5, "away", false);
    h.send(&away, subscribe(1, "$share/g/t", QoS::AtLeastOnce));
    h.deliver_all();
    let away_session = away.session;
    h.drop_client(away);
    let p = h.connect(0, V5, "p", true);
    h.send(&p, publish("t", b"q", QoS::AtLeastOnce, false, 1));
    h.deliver_all();
    let st = h.shards[1].state.borrow();
    assert_eq!(
        st.sessions.get(away_session).map(|s| s.queued_len()),
        Some(1)
    );
}

#[test]
fn a_running_retained_stream_follows_a_replaced_subscription() {
    // A window of 1 and a stream that pauses once one message waits in the queue.
    let mut h = Harness::new(1, |c| {
        c.limits.max_inflight = 1;
        c.limits.max_queued_messages = 4;
    });
    for t in ["r/0", "r/1", "r/2", "r/3", "r/4"] {
        h.store(t, b"kept", QoS::AtLeastOnce);
    }
    let mut c = h.connect(0, V5, "c", true);
    h.send(&c, subscribe_with(1, &["r/#"], QoS::AtLeastOnce, Some(1)));
    let got = h.drain(&mut c);
    // SUBACK and the first retained message (the window is 1): the stream waits.
    assert_eq!(received(&got), [(b"kept".to_vec(), vec![1])]);
    // Subscribed again with another identifier and no retained messages wanted.
    let mut again = subscribe_with(2, &["r/#"], QoS::AtLeastOnce, Some(2));
    if let Packet::Subscribe(s) = &mut again {
        s.subscriptions[0].options.retain_handling = RetainHandling::DoNotSend;
    }
    h.send(&c, again);
    let mut rest = Vec::new();
    let mut next = got;
    loop {
        ack_all(&mut h, &c, &next);
        next = h.drain(&mut c);
        if next.is_empty() {
            break;
        }
        rest.extend(received(&next));
    }
    // The one already queued was delivered under the old subscription; what the stream
    // still held goes with the new identifier.
    let ids: Vec<Vec<u32>> = rest.into_iter().map(|(_, ids)| ids).collect();
    assert_eq!(ids, [vec![1], vec![2], vec![2], vec![2]]);
}
