//! Codec micro-benchmark: our decoder and encoder against rumqttc's (`mqttbytes` v4 and
//! v5) on the same bytes, in the same run.
//!
//! `cargo bench --bench codec` prints a table and one JSON line per case:
//! `{"case":"decode_publish_256","ours_ns_per_op":..,"peer_ns_per_op":..,"ratio":..}`
//! where `ratio` is peer / ours (above 1: we are faster). Each case runs several rounds
//! and keeps the median, so a noisy neighbour moves the numbers less.
//! Set `CODEC_BENCH_QUICK=1` for a short smoke run.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4 as peer4;
use rumqttc::v5::mqttbytes::v5 as peer5;
use surgemq::protocol::{decode, DecodeOptions, Packet, ProtocolVersion, Publish, QoS, TopicName};

const TOPIC: &str = "sensors/building-7/floor-3/temperature";
const MAX: usize = 1 << 20;

struct Case {
    name: String,
    ours: f64,
    peer: f64,
}

/// Rounds per case and the largest number of operations per round.
fn rounds() -> (usize, usize) {
    if std::env::var_os("CODEC_BENCH_QUICK").is_some() {
        (5, 2_000)
    } else {
        (101, 20_000)
    }
}

/// Operations per round for frames of `frame_len` bytes: enough frames to fill about
/// 128 KiB, as a broker's read buffers are small and hot in cache. (A multi-megabyte stream
/// measures the memory system, not the codec.)
fn ops_for(frame_len: usize) -> usize {
    (128 * 1024 / frame_len.max(1)).clamp(64, rounds().1)
}

/// Median ns per op of `ours` and of `peer`, each performing `ops` operations per call on
/// an input made by the untimed `setup`. Rounds alternate between the two so that a noisy
/// neighbour or a frequency change hits both alike.
fn measure_pair<S>(
    ops: usize,
    mut setup: impl FnMut() -> S,
    mut ours: impl FnMut(S),
    mut peer: impl FnMut(S),
) -> (f64, f64) {
    let (rounds, _) = rounds();
    ours(setup()); // warm up
    peer(setup());
    let time = |f: &mut dyn FnMut(S), input: S| {
        let t = Instant::now();
        f(input);
        t.elapsed().as_nanos() as f64 / ops as f64
    };
    let mut a = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    for i in 0..rounds {
        // Alternate which goes first, too.
        if i % 2 == 0 {
            a.push(time(&mut ours, setup()));
            b.push(time(&mut peer, setup()));
        } else {
            b.push(time(&mut peer, setup()));
            a.push(time(&mut ours, setup()));
        }
    }
    (median(a), median(b))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn our_publish(size: usize, version: ProtocolVersion) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new(TOPIC).unwrap(),
        packet_id: NonZeroU16::new(42),
        properties: Default::default(),
        payload: Bytes::from(vec![0xA5; size]),
    })
    .tap(|_| assert!(version == ProtocolVersion::V3_1_1 || version == ProtocolVersion::V5))
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&Self)) -> Self {
        f(&self);
        self
    }
}
impl<T> Tap for T {}

/// The same stream of `n` frames, for both decoders.
fn stream(frames: &[Vec<u8>], n: usize) -> BytesMut {
    let mut b = BytesMut::new();
    for i in 0..n {
        b.extend_from_slice(&frames[i % frames.len()]);
    }
    b
}

/// `CODEC_BENCH_FILTER=substring` runs only the matching cases (for profiling one).
fn selected(name: &str) -> bool {
    std::env::var("CODEC_BENCH_FILTER").map_or(true, |f| name.contains(&f))
}

fn decode_case(name: &str, version: ProtocolVersion, frames: &[Vec<u8>], out: &mut Vec<Case>) {
    if !selected(name) {
        return;
    }
    let avg = frames.iter().map(Vec::len).sum::<usize>() / frames.len();
    let n = ops_for(avg);
    let template = stream(frames, n);
    let opts = DecodeOptions::new(version);
    // Both decoders must accept the whole stream, or the comparison means nothing.
    {
        let mut b = template.clone();
        let mut count = 0;
        while let Some(p) = decode(&mut b, &opts).expect("ours decodes") {
            black_box(p);
            count += 1;
        }
        assert_eq!(count, n);
        let mut b = template.clone();
        for _ in 0..n {
            match version {
                ProtocolVersion::V5 => {
                    drop(peer5::Packet::read(&mut b, None).expect("peer decodes"))
                }
                _ => drop(peer4::Packet::read(&mut b, MAX).expect("peer decodes")),
            }
        }
    }
    let (ours, peer) = measure_pair(
        n,
        || template.clone(),
        |mut b| {
            while let Ok(Some(p)) = decode(&mut b, &opts) {
                black_box(p);
            }
        },
        |mut b| {
            for _ in 0..n {
                match version {
                    ProtocolVersion::V5 => {
                        black_box(peer5::Packet::read(&mut b, None).ok());
                    }
                    _ => {
                        black_box(peer4::Packet::read(&mut b, MAX).ok());
                    }
                }
            }
        },
    );
    out.push(Case {
        name: name.to_string(),
        ours,
        peer,
    });
}

fn encode_case(name: &str, version: ProtocolVersion, ours_packets: &[Packet], out: &mut Vec<Case>) {
    if !selected(name) {
        return;
    }
    // The peer's packets are the peer's decoding of our bytes: the same packets.
    let mut bytes = BytesMut::new();
    for p in ours_packets {
        p.encode(version, &mut bytes).unwrap();
    }
    let mut peer4_packets = Vec::new();
    let mut peer5_packets = Vec::new();
    {
        let mut b = bytes.clone();
        for _ in ours_packets {
            match version {
                ProtocolVersion::V5 => {
                    peer5_packets.push(peer5::Packet::read(&mut b, None).unwrap())
                }
                _ => peer4_packets.push(peer4::Packet::read(&mut b, MAX).unwrap()),
            }
        }
    }
    let n = ops_for(bytes.len() / ours_packets.len());
    let cap = bytes.len() * (n / ours_packets.len() + 1) + 1024;
    // Each round writes into a fresh, already-allocated buffer (allocation is untimed).
    let (ours, peer) = measure_pair(
        n,
        || BytesMut::with_capacity(cap),
        |mut buf| {
            for i in 0..n {
                ours_packets[i % ours_packets.len()]
                    .encode(version, &mut buf)
                    .unwrap();
            }
            black_box(&buf);
        },
        |mut buf| {
            for i in 0..n {
                match version {
                    ProtocolVersion::V5 => {
                        peer5_packets[i % peer5_packets.len()]
                            .write(&mut buf, None)
                            .unwrap();
                    }
                    _ => {
                        peer4_packets[i % peer4_packets.len()]
                            .write(&mut buf, MAX)
                            .unwrap();
                    }
                }
            }
            black_box(&buf);
        },
    );
    out.push(Case {
        name: name.to_string(),
        ours,
        peer,
    });
}

/// A mixed stream of small packets, as a broker sees it: acks, pings, small publishes,
/// subscribes.
fn mixed(version: ProtocolVersion) -> Vec<Packet> {
    use surgemq::protocol::*;
    let id = |n| NonZeroU16::new(n).unwrap();
    let mut v = vec![
        Packet::PubAck(Ack::new(id(1))),
        Packet::PubRec(Ack::new(id(2))),
        Packet::PubRel(Ack::new(id(2))),
        Packet::PubComp(Ack::new(id(2))),
        Packet::PingReq,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new("a/b/c").unwrap(),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from_static(b"21.5"),
        }),
        Packet::Subscribe(Subscribe {
            packet_id: id(3),
            subscriptions: vec![
                Subscription {
                    filter: TopicFilter::new("sensors/+/temperature").unwrap(),
                    options: SubscriptionOptions::new(QoS::AtLeastOnce),
                },
                Subscription {
                    filter: TopicFilter::new("alerts/#").unwrap(),
                    options: SubscriptionOptions::new(QoS::ExactlyOnce),
                },
            ],
            properties: Default::default(),
        }),
        Packet::SubAck(SubAck {
            packet_id: id(3),
            codes: vec![ReasonCode(1), ReasonCode(2)],
            properties: Default::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(4),
            filters: vec![TopicFilter::new("alerts/#").unwrap()],
            properties: Default::default(),
        }),
        Packet::PingResp,
    ];
    if version == ProtocolVersion::V3_1_1 {
        v.push(Packet::UnsubAck(UnsubAck {
            packet_id: id(4),
            codes: vec![],
            properties: Default::default(),
        }));
    }
    v
}

fn frames(packets: &[Packet], version: ProtocolVersion) -> Vec<Vec<u8>> {
    packets
        .iter()
        .map(|p| {
            let mut b = BytesMut::new();
            p.encode(version, &mut b).unwrap();
            b.to_vec()
        })
        .collect()
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let mut cases = Vec::new();
    for (suffix, version) in [("", ProtocolVersion::V3_1_1), ("_v5", ProtocolVersion::V5)] {
        for size in [16, 256, 4096] {
            let p = our_publish(size, version);
            decode_case(
                &format!("decode_publish_{size}{suffix}"),
                version,
                &frames(std::slice::from_ref(&p), version),
                &mut cases,
            );
            encode_case(
                &format!("encode_publish_{size}{suffix}"),
                version,
                &[p],
                &mut cases,
            );
        }
        let m = mixed(version);
        decode_case(
            &format!("decode_mixed{suffix}"),
            version,
            &frames(&m, version),
            &mut cases,
        );
        encode_case(&format!("encode_mixed{suffix}"), version, &m, &mut cases);
    }

    println!(
        "{:<26} {:>14} {:>14} {:>8}",
        "case", "ours ns/op", "rumqttc ns/op", "ratio"
    );
    for c in &cases {
        println!(
            "{:<26} {:>14.1} {:>14.1} {:>7.2}x",
            c.name,
            c.ours,
            c.peer,
            c.peer / c.ours
        );
    }
    for c in &cases {
        println!(
            "{{\"case\":\"{}\",\"ours_ns_per_op\":{:.1},\"peer_ns_per_op\":{:.1},\"ratio\":{:.3}}}",
            c.name,
            c.ours,
            c.peer,
            c.peer / c.ours
        );
    }
}
