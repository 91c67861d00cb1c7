//! Malformed and forbidden input: each case closes the offending connection (3.x has no
//! way to tell the reason, so nothing is sent before the close) [MQTT-4.8.0-1], while
//! clients already connected on the same shard and on the other shard keep working, and
//! a fresh client can still connect afterwards. Every case runs on 3.1 and 3.1.1 (unless
//! it is a 3.1.1-only rule) with the offending client's id on shard 0 and on shard 1.

mod common;

use bytes::BytesMut;
use common::*;
use surgemq::protocol::*;

const MAX_PACKET: u32 = 1024;

fn broker() -> Broker {
    Broker::with(2, |c| c.limits.max_packet_size = MAX_PACKET)
}

fn connect_bytes(c: Connect) -> Vec<u8> {
    let v = c.version;
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(c)).encode(v, &mut out).unwrap();
    out.to_vec()
}

/// Index of the connect flags byte in an encoded 3.x CONNECT with a 1-byte length.
fn flags_at(v: ProtocolVersion) -> usize {
    2 + 2 + v.protocol_name().len() + 1
}

/// Two clients, on `shard` and on the other shard, both subscribed to `topic`.
fn good_clients(b: &Broker, v: ProtocolVersion, shard: usize, tag: &str, topic: &str) -> Vec<Raw> {
    [shard, 1 - shard]
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let mut c = b.client(v, &b.id_on(s, &format!("g{i}{tag}")), true);
            assert_eq!(
                c.subscribe(1, &[(topic, QoS::AtLeastOnce)]),
                vec![ReasonCode(1)]
            );
            c
        })
        .collect()
}

/// Each good client publishes; each receives both messages.
fn still_work(goods: &mut [Raw], topic: &str, what: &str) {
    for i in 0..goods.len() {
        let payload = format!("from {i}");
        goods[i].publish_acked(
            topic,
            payload.as_bytes(),
            QoS::AtLeastOnce,
            false,
            10 + i as u16,
        );
        for (j, g) in goods.iter_mut().enumerate() {
            let p = g.recv_publish();
            assert_eq!(
                (p.topic.as_str(), &p.payload[..]),
                (topic, payload.as_bytes()),
                "{what}: client {j}"
            );
        }
    }
    for g in goods.iter_mut() {
        g.expect_nothing();
    }
}

/// Runs one case: `bad(v, id)` gives the bytes the offending client sends, after its
/// CONNECT was accepted when `connected`, else as its first bytes. The broker must send
/// exactly `reply` and close.
fn case(
    name: &str,
    versions: &[ProtocolVersion],
    connected: bool,
    bad: fn(ProtocolVersion, &str) -> Vec<u8>,
    reply: &[u8],
) {
    let b = broker();
    for &v in versions {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            let what = format!("{name} ({v:?}, shard {shard})");
            let topic = format!("ok/{tag}");
            let mut goods = good_clients(&b, v, shard, &tag, &topic);
            let id = b.id_on(shard, &format!("bad{tag}"));
            let mut c = if connected {
                b.client(v, &id, true)
            } else {
                b.raw(v)
            };
            // The broker may close while we are still writing.
            let _ = c.try_send_bytes(&bad(v, &id));
            assert_eq!(c.bytes_until_closed(), reply, "{what}");
            still_work(&mut goods, &topic, &what);
            // A new client can connect on either shard.
            for s in 0..2 {
                let mut fresh = b.client(v, &b.id_on(s, &format!("f{tag}")), true);
                fresh.ping();
                fresh.disconnect_and_wait();
            }
            for g in goods {
                g.disconnect_and_wait();
            }
        }
    }
}

/// A case after an accepted CONNECT, for both 3.x versions, closed with nothing sent.
macro_rules! closes {
    ($(#[$m:meta])* $name:ident, $bad:expr) => {
        closes!($(#[$m])* $name, &V3, $bad);
    };
    ($(#[$m:meta])* $name:ident, $versions:expr, $bad:expr) => {
        #[test]
        $(#[$m])*
        fn $name() {
            case(stringify!($name), $versions, true, |v, _| $bad(v), &[]);
        }
    };
}

fn publish(header: u8, topic: &[u8], id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = raw_str(topic);
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    raw_frame(header, &body)
}

fn subscribe(header: u8, id: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for (f, o) in filters {
        body.extend_from_slice(&raw_str(f));
        body.push(*o);
    }
    raw_frame(header, &body)
}

// --- Fixed header -----------------------------------------------------------------------

// [MQTT-2.2.3]: the remaining length has at most four bytes.
closes!(remaining_length_of_five_bytes, |_| vec![
    0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01
]);
// [MQTT-2.2.1]: packet types 0 and 15 are reserved.
closes!(reserved_packet_type_0, |_| vec![0x00, 0x00]);
closes!(reserved_packet_type_15, |_| vec![0xF0, 0x00]);
// [MQTT-3.3.1-4]: QoS 3.
closes!(publish_with_qos_3, |_| publish(0x36, b"a/b", Some(1), b"x"));
// [MQTT-3.8.1-1], [MQTT-2.2.2-2]: SUBSCRIBE flags must be 0010 (3.1 did not require it).
closes!(subscribe_with_flags_0x80, &[V311], |_| subscribe(
    0x80,
    1,
    &[(b"a/b", 1)]
));
// [MQTT-3.10.1-1]
closes!(unsubscribe_with_flags_0xa0, &[V311], |_| {
    raw_frame(0xA0, &[&[0u8, 1][..], &raw_str(b"a/b")].concat())
});
// [MQTT-3.6.1-1]
closes!(pubrel_with_flags_0x60, &[V311], |_| vec![
    0x60, 0x02, 0x00, 0x01
]);
// [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
closes!(qos0_publish_with_dup, &[V311], |_| publish(
    0x38, b"a/b", None, b"x"
));
// [MQTT-2.2.2-2]: flags of PINGREQ must be 0.
closes!(pingreq_with_flags, |_| vec![0xC1, 0x00]);

// --- PUBLISH topic ----------------------------------------------------------------------

// [MQTT-3.3.2-2], [MQTT-4.7.1-1]: no wildcards in a topic name.
closes!(publish_topic_with_plus, |_| publish(
    0x30, b"a/+", None, b"x"
));
closes!(publish_topic_with_hash, |_| publish(
    0x30, b"a/#", None, b"x"
));
closes!(publish_topic_single_hash, |_| publish(
    0x32,
    b"#",
    Some(1),
    b"x"
));
// [MQTT-1.5.3-1]: ill-formed UTF-8.
closes!(publish_topic_invalid_utf8, |_| publish(
    0x30,
    b"a/\xC3\x28",
    None,
    b"x"
));
// [MQTT-1.5.3-1]: UTF-16 surrogate code point encoded in UTF-8.
closes!(publish_topic_with_surrogate, |_| publish(
    0x30,
    b"a/\xED\xA0\x80",
    None,
    b"x"
));
// [MQTT-1.5.3-2]: U+0000.
closes!(publish_topic_with_nul, |_| publish(
    0x30, b"a\0b", None, b"x"
));
// [MQTT-4.7.3-1]: a topic name has at least one character.
closes!(publish_empty_topic, |_| publish(0x30, b"", None, b"x"));
// [MQTT-2.3.1-1]: packet id 0.
closes!(publish_qos1_packet_id_0, |_| publish(
    0x32,
    b"a/b",
    Some(0),
    b"x"
));
// A topic length beyond the packet.
closes!(publish_truncated_topic, |_| raw_frame(
    0x30,
    &[0x00, 0x0A, b'a']
));

// --- Sizes ------------------------------------------------------------------------------

// limits.max_packet_size: a larger packet closes the connection.
closes!(publish_over_max_packet_size, |_| publish(
    0x30,
    b"big",
    None,
    &[b'x'; 2000]
));
// One byte over the limit is enough.
closes!(publish_one_byte_over_max_packet_size, |_| {
    let p = publish(0x30, b"big", None, &[]);
    // 1 + 2 length bytes + body: pad the payload to reach MAX_PACKET + 1.
    let pad = MAX_PACKET as usize + 1 - (p.len() + 1);
    publish(0x30, b"big", None, &vec![b'x'; pad])
});

#[test]
fn publish_of_exactly_max_packet_size_is_accepted() {
    let b = broker();
    for v in V3 {
        for (ss, ps) in [(0, 1), (1, 1)] {
            let topic = format!("max/{}{ss}{ps}", v.level());
            let mut sub = b.client(v, &b.id_on(ss, &format!("s{}{ss}{ps}", v.level())), true);
            assert_eq!(
                sub.subscribe(1, &[(&topic, QoS::AtMostOnce)]),
                vec![ReasonCode(0)]
            );
            let mut publ = b.client(v, &b.id_on(ps, &format!("p{}{ss}{ps}", v.level())), true);
            // QoS 1: 1 header byte + 2 length bytes + 2 + topic + 2 id + payload = 1024.
            let pad = MAX_PACKET as usize - (1 + 2 + 2 + topic.len() + 2);
            let frame = publish(0x32, topic.as_bytes(), Some(1), &vec![b'y'; pad]);
            assert_eq!(frame.len(), MAX_PACKET as usize);
            publ.send_bytes(&frame);
            assert_eq!(publ.recv(), Packet::PubAck(Ack::new(pid(1))));
            let p = sub.recv_publish();
            assert_eq!(p.payload.len(), pad);
            publ.ping();
        }
    }
}

// --- Other packets ----------------------------------------------------------------------

// [MQTT-3.8.3-3]: SUBSCRIBE with no filter.
closes!(subscribe_without_filters, |_| raw_frame(
    0x82,
    &[0x00, 0x01]
));
// [MQTT-3-8.3-4]: requested QoS 3, or reserved bits of the options byte set.
closes!(subscribe_qos_3, |_| subscribe(0x82, 1, &[(b"a/b", 3)]));
closes!(subscribe_reserved_option_bits, &[V311], |_| subscribe(
    0x82,
    1,
    &[(b"a/b", 0x04)]
));
// [MQTT-4.7.1-2], [MQTT-4.7.1-3]: misplaced wildcards in a filter.
closes!(subscribe_hash_not_last, |_| subscribe(
    0x82,
    1,
    &[(b"a/#/b", 0)]
));
closes!(subscribe_plus_inside_a_level, |_| subscribe(
    0x82,
    1,
    &[(b"a+/b", 0)]
));
// [MQTT-4.7.3-1]: empty filter.
closes!(subscribe_empty_filter, |_| subscribe(0x82, 1, &[(b"", 0)]));
// [MQTT-2.3.1-1]
closes!(subscribe_packet_id_0, |_| subscribe(0x82, 0, &[(b"a", 0)]));
// [MQTT-3.10.3-2]: UNSUBSCRIBE with no filter.
closes!(unsubscribe_without_filters, |_| raw_frame(
    0xA2,
    &[0x00, 0x01]
));
// [MQTT-3.1.0-2]: a second CONNECT.
closes!(second_connect, |v| connect_bytes(connect_packet(
    v, "again", true, 0, None
)));
// Packets only a server sends.
closes!(connack_from_client, |_| vec![0x20, 0x02, 0x00, 0x00]);
closes!(suback_from_client, |_| vec![0x90, 0x03, 0x00, 0x01, 0x00]);
closes!(unsuback_from_client, |_| vec![0xB0, 0x02, 0x00, 0x01]);
closes!(pingresp_from_client, |_| vec![0xD0, 0x00]);
// Fixed-size packets with a wrong length.
closes!(pingreq_with_a_body, |_| vec![0xC0, 0x01, 0x00]);
closes!(puback_with_extra_byte, |_| vec![
    0x40, 0x03, 0x00, 0x01, 0x00
]);
closes!(puback_truncated, |_| vec![0x40, 0x01, 0x00]);

// --- CONNECT ----------------------------------------------------------------------------

/// A case before CONNECT was accepted, for both versions.
macro_rules! refuses {
    ($name:ident, $reply:expr, $bad:expr) => {
        #[test]
        fn $name() {
            case(stringify!($name), &V3, false, $bad, &$reply);
        }
    };
}

// [MQTT-3.1.0-1]: the first packet must be CONNECT.
refuses!(first_packet_not_connect, [], |_, _| vec![0xC0, 0x00]);
refuses!(publish_before_connect, [], |_, _| publish(
    0x30, b"a/b", None, b"x"
));
// [MQTT-3.1.2-3]: the reserved connect flag must be 0.
refuses!(connect_reserved_flag, [], |v, id| {
    let mut c = connect_bytes(connect_packet(v, id, true, 0, None));
    c[flags_at(v)] |= 0x01;
    c
});
// [MQTT-3.1.2-13]: will QoS without the will flag.
refuses!(connect_will_qos_without_will, [], |v, id| {
    let mut c = connect_bytes(connect_packet(v, id, true, 0, None));
    c[flags_at(v)] |= 0x08;
    c
});
// [MQTT-3.1.2-14]: will QoS 3.
refuses!(connect_will_qos_3, [], |v, id| {
    let will = will_msg("w/t", b"w", QoS::AtLeastOnce, false);
    let mut c = connect_bytes(connect_packet(v, id, true, 0, Some(will)));
    c[flags_at(v)] |= 0x18;
    c
});
// [MQTT-3.1.2-15]: will retain without the will flag.
refuses!(connect_will_retain_without_will, [], |v, id| {
    let mut c = connect_bytes(connect_packet(v, id, true, 0, None));
    c[flags_at(v)] |= 0x20;
    c
});
// [MQTT-3.1.2-22]: password flag without user name flag.
refuses!(connect_password_without_username, [], |v, id| {
    let mut c = connect_bytes(connect_packet(v, id, true, 0, None));
    c[flags_at(v)] |= 0x40;
    c.extend_from_slice(&raw_str(b"secret"));
    c[1] += 8;
    c
});
// [MQTT-3.1.3-10], [MQTT-4.7.1-1]: a will topic is a topic name: no wildcards.
refuses!(connect_will_topic_with_wildcard, [], |v, id| {
    let will = will_msg("w/t", b"w", QoS::AtLeastOnce, false);
    let mut c = connect_bytes(connect_packet(v, id, true, 0, Some(will)));
    let at = c.windows(3).position(|w| w == b"w/t").unwrap();
    c[at + 2] = b'#';
    c
});
// [MQTT-1.5.3-1]: a client id that is not UTF-8.
refuses!(connect_client_id_invalid_utf8, [], |v, _| {
    let mut c = connect_bytes(connect_packet(v, "idXY", true, 0, None));
    let at = c.windows(4).position(|w| w == b"idXY").unwrap();
    c[at + 2] = 0xC3;
    c[at + 3] = 0x28;
    c
});
// [MQTT-3.1.2-2]: an unsupported protocol level is answered with CONNACK 0x01, then
// the connection is closed.
refuses!(
    connect_unsupported_protocol_level,
    [0x20, 0x02, 0x00, 0x01],
    |_, id| {
        let mut c = connect_bytes(connect_packet(V311, id, true, 0, None));
        c[flags_at(V311) - 1] = 6;
        c
    }
);
