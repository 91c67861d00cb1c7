//! Observability, pure: what one shard reports of itself ([`ShardStats`], plain data that
//! crosses the mesh when shard 0 asks for it), the broker-wide sum of the reports, and
//! the forms operators read: mosquitto's `$SYS` tree ([`sys`]).
//!
//! **Owns:** the report types, their sum, the `$SYS` topics and values, load averages.
//!
//! **Must not touch:** sockets, timers, shards, routing: the broker gathers the reports
//! (each shard counts into cells of its own, with no atomics or locks on the data path)
//! and publishes what [`sys::SysTree`] returns.

pub mod prometheus;
pub mod sys;

pub use crate::broker::shard::ShardSummary;

/// Control packet names by their fixed-header type (1 to 15; 0 is reserved).
pub const PACKET_TYPES: [&str; 16] = [
    "reserved",
    "connect",
    "connack",
    "publish",
    "puback",
    "pubrec",
    "pubrel",
    "pubcomp",
    "subscribe",
    "suback",
    "unsubscribe",
    "unsuback",
    "pingreq",
    "pingresp",
    "disconnect",
    "auth",
];

/// Protocol versions by their place in [`ShardStats::connects`] ([`version_index`]).
pub const VERSIONS: [&str; 3] = ["3.1", "3.1.1", "5.0"];

/// The place of `v` in [`VERSIONS`].
pub fn version_index(v: crate::protocol::ProtocolVersion) -> usize {
    match v {
        crate::protocol::ProtocolVersion::V3_1 => 0,
        crate::protocol::ProtocolVersion::V3_1_1 => 1,
        crate::protocol::ProtocolVersion::V5 => 2,
    }
}

/// Why connections ended, by their place in [`Closes::by_reason`]. (A connection that
/// moves to its home shard after CONNECT has not ended: it is counted where it ends.)
pub const CLOSE_REASONS: [&str; 8] = [
    "client_disconnect",
    "socket_closed",
    "keep_alive_timeout",
    "connect_timeout",
    "taken_over",
    "protocol_error",
    "refused",
    "server_shutdown",
];

/// How connections ended on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closes {
    /// Connections ended, by [`CLOSE_REASONS`].
    pub by_reason: [u64; 8],
    /// CONNACK refusals by reason code: index `code - 0x80` (5.0 codes; a 3.x client got
    /// the nearest 3.x code).
    pub connack_refused: [u64; 48],
}

impl Default for Closes {
    fn default() -> Self {
        Closes {
            by_reason: [0; 8],
            connack_refused: [0; 48],
        }
    }
}

impl Closes {
    /// Adds another shard's.
    pub fn add(&mut self, o: &Closes) {
        for (a, b) in self.by_reason.iter_mut().zip(o.by_reason) {
            *a += b;
        }
        for (a, b) in self.connack_refused.iter_mut().zip(o.connack_refused) {
            *a += b;
        }
    }

    /// A CONNACK refused with `code` (0x80 or above).
    pub fn refused(&mut self, code: u8) {
        if let Some(n) = self
            .connack_refused
            .get_mut(usize::from(code.wrapping_sub(0x80)))
        {
            *n += 1;
        }
    }
}

/// Bytes and MQTT packets through one shard's sockets (MQTT bytes: TLS records and
/// WebSocket frames are not counted in).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Packets received, by fixed-header type ([`PACKET_TYPES`]).
    pub packets_in: [u64; 16],
    /// Packets sent, by fixed-header type.
    pub packets_out: [u64; 16],
    /// Bytes of the packets received (whole packets, fixed header included), by type.
    pub packet_bytes_in: [u64; 16],
    /// Bytes of the packets sent, by type.
    pub packet_bytes_out: [u64; 16],
    /// Payload bytes of the PUBLISH packets received.
    pub publish_payload_in: u64,
    /// Payload bytes of the PUBLISH packets sent.
    pub publish_payload_out: u64,
    /// Reads from clients that returned data.
    pub read_calls: u64,
    /// Writes to clients that wrote something.
    pub write_calls: u64,
}

impl Traffic {
    /// Adds another shard's traffic.
    pub fn add(&mut self, o: &Traffic) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.packets_in.iter_mut().zip(o.packets_in) {
            *a += b;
        }
        for (a, b) in self.packets_out.iter_mut().zip(o.packets_out) {
            *a += b;
        }
        for (a, b) in self.packet_bytes_in.iter_mut().zip(o.packet_bytes_in) {
            *a += b;
        }
        for (a, b) in self.packet_bytes_out.iter_mut().zip(o.packet_bytes_out) {
            *a += b;
        }
        self.publish_payload_in += o.publish_payload_in;
        self.publish_payload_out += o.publish_payload_out;
        self.read_calls += o.read_calls;
        self.write_calls += o.write_calls;
    }

    /// Packets received, all types.
    pub fn packets_in_total(&self) -> u64 {
        self.packets_in.iter().sum()
    }

    /// Packets sent, all types.
    pub fn packets_out_total(&self) -> u64 {
        self.packets_out.iter().sum()
    }

    /// A packet of `len` bytes received, of fixed-header type `kind`, with a PUBLISH
    /// payload of `payload` bytes (0 for other packets).
    #[inline]
    pub fn received(&mut self, kind: u8, len: usize, payload: usize) {
        let kind = usize::from(kind);
        if let (Some(n), Some(b)) = (
            self.packets_in.get_mut(kind),
            self.packet_bytes_in.get_mut(kind),
        ) {
            *n += 1;
            *b += len as u64;
        }
        self.publish_payload_in += payload as u64;
    }

    /// Counts the packets in `out`, whole encoded packets about to be written to a client
    /// (`v5`: of protocol 5.0, whose PUBLISH has properties before its payload). Reads
    /// fixed headers only (and a PUBLISH's topic and property lengths), so the cost is a
    /// few loads per packet; bytes that do not parse as packets end the walk.
    pub fn sent(&mut self, out: &[u8], v5: bool) {
        let mut at = 0;
        while let Some(&first) = out.get(at) {
            let Some((remaining, len_bytes)) = varint(out.get(at + 1..).unwrap_or_default()) else {
                return;
            };
            let body = at + 1 + len_bytes;
            let kind = first >> 4;
            // A packet cut at the end of `out` counts the bytes that are there.
            let len = (body + remaining).min(out.len()) - at;
            if let (Some(n), Some(b)) = (
                self.packets_out.get_mut(usize::from(kind)),
                self.packet_bytes_out.get_mut(usize::from(kind)),
            ) {
                *n += 1;
                *b += len as u64;
            }
            if kind == 3 {
                let body_bytes = out.get(body..body + remaining).unwrap_or_default();
                self.publish_payload_out += publish_payload(body_bytes, first, v5) as u64;
            }
            at = body + remaining;
        }
    }
}

/// A Variable Byte Integer at the start of `b`: its value and how many bytes it took.
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The payload length of a PUBLISH whose fixed header starts with `first` and whose
/// body (variable header and payload) is `body`.
fn publish_payload(body: &[u8], first: u8, v5: bool) -> usize {
    let (Some(&hi), Some(&lo)) = (body.first(), body.get(1)) else {
        return 0;
    };
    let mut header = 2 + usize::from(u16::from_be_bytes([hi, lo]));
    if (first >> 1) & 3 != 0 {
        header += 2;
    }
    if v5 {
        match varint(body.get(header..).unwrap_or_default()) {
            Some((props, n)) => header += n + props,
            None => return 0,
        }
    }
    body.len().saturating_sub(header)
}

/// What one shard holds at the moment of its report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Connections open (from accept to close, the CONNECT phase included).
    pub connections: u64,
    /// Sessions (with or without a connection).
    pub sessions: u64,
    /// Sessions with a connection serving them.
    pub sessions_online: u64,
    /// Subscriptions (a shared one counts once per member).
    pub subscriptions: u64,
    /// Of those, shared subscriptions (`$share/...`).
    pub shared_subscriptions: u64,
    /// Retained messages stored on this shard (its part of the topic space).
    pub retained: u64,
    /// What they take (topic, payload, properties and a per-entry overhead).
    pub retained_bytes: u64,
    /// QoS 1/2 messages in flight to clients (sent or owed a resend, not yet acknowledged).
    pub inflight: u64,
    /// Messages queued for clients (offline, or behind a full window).
    pub queued: u64,
    /// What the messages in flight and queued take (as `retained_bytes`).
    pub held_bytes: u64,
}

impl Gauges {
    /// Adds another shard's gauges.
    pub fn add(&mut self, o: &Gauges) {
        self.connections += o.connections;
        self.sessions += o.sessions;
        self.sessions_online += o.sessions_online;
        self.subscriptions += o.subscriptions;
        self.shared_subscriptions += o.shared_subscriptions;
        self.retained += o.retained;
        self.retained_bytes += o.retained_bytes;
        self.inflight += o.inflight;
        self.queued += o.queued;
        self.held_bytes += o.held_bytes;
    }
}

/// What one shard sent other shards, and how often it held its publishers back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Batches sent to other shards (data and control planes).
    pub batches: u64,
    /// Messages in those batches.
    pub items: u64,
    /// Batches that found their channel full and waited in the sender's overflow queue
    /// (the receiving shard was behind).
    pub overflowed: u64,
    /// Times a local subscriber fell far enough behind that the shard started holding
    /// its publishers back (flow control).
    pub congestion_episodes: u64,
    /// How long, in all, it held them back (microseconds).
    pub holdback_micros: u64,
}

impl MeshStats {
    /// Adds another shard's mesh counters.
    pub fn add(&mut self, o: &MeshStats) {
        self.batches += o.batches;
        self.items += o.items;
        self.overflowed += o.overflowed;
        self.congestion_episodes += o.congestion_episodes;
        self.holdback_micros += o.holdback_micros;
    }
}

/// One shard's report: its counters since start and what it holds now. Plain data: it
/// crosses the mesh in a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// The shard (for a sum, 0).
    pub shard: usize,
    /// Event counters (refusals, drops, errors, persistence).
    pub counters: ShardSummary,
    /// Bytes and packets.
    pub traffic: Traffic,
    /// What it holds now.
    pub gauges: Gauges,
    /// Its sends to other shards and its flow control.
    pub mesh: MeshStats,
    /// How its connections ended, and CONNACK refusals.
    pub closes: Closes,
    /// CONNECT packets received, per listener (its place in the configuration:
    /// `listeners` first, then `[[listener]]` tables) and protocol version ([`VERSIONS`]).
    pub connects: Vec<[u64; 3]>,
    /// Clients connected now (CONNECT accepted, connection open), per listener and
    /// protocol version, as `connects`.
    pub connected: Vec<[u64; 3]>,
}

/// Adds counts per listener and protocol version (the longer list sets the length).
fn add_by_listener(total: &mut Vec<[u64; 3]>, more: &[[u64; 3]]) {
    if total.len() < more.len() {
        total.resize(more.len(), [0; 3]);
    }
    for (a, b) in total.iter_mut().zip(more) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
}

impl ShardStats {
    /// The sum of every shard's report.
    pub fn sum(shards: &[ShardStats]) -> ShardStats {
        let mut total = ShardStats::default();
        for s in shards {
            total.counters.add(&s.counters);
            total.traffic.add(&s.traffic);
            total.gauges.add(&s.gauges);
            total.mesh.add(&s.mesh);
            total.closes.add(&s.closes);
            add_by_listener(&mut total.connects, &s.connects);
            add_by_listener(&mut total.connected, &s.connected);
        }
        total
    }

    /// PUBLISH deliveries dropped, every reason (mosquitto's "publish messages dropped"):
    /// a full queue or write buffer, offline QoS 0, too large for the client, expired.
    pub fn publish_dropped(&self) -> u64 {
        let c = &self.counters;
        c.dropped_queue_full
            + c.dropped_qos0_write_buffer
            + c.dropped_offline_qos0
            + c.dropped_too_large
            + c.dropped_expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_packets_are_counted_by_type_with_publish_payloads() {
        use crate::protocol::*;
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut out = bytes::BytesMut::new();
            let mut properties = Properties::new();
            if v.is_v5() {
                properties.get_mut().content_type = Some("text/plain".into());
            }
            let publish = |qos, packet_id: Option<u16>, payload: &'static [u8]| {
                Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: TopicName::new("a/b").unwrap(),
                    packet_id: packet_id.and_then(std::num::NonZeroU16::new),
                    properties: properties.clone(),
                    payload: bytes::Bytes::from_static(payload),
                })
            };
            publish(QoS::AtLeastOnce, Some(1), b"hello")
                .encode(v, &mut out)
                .unwrap();
            Packet::PingResp.encode(v, &mut out).unwrap();
            publish(QoS::AtMostOnce, None, &[7; 200])
                .encode(v, &mut out)
                .unwrap();
            let mut t = Traffic::default();
            t.sent(&out, v.is_v5());
            assert_eq!(t.packets_out[3], 2, "{v:?}");
            assert_eq!(t.packets_out[13], 1);
            assert_eq!(t.packets_out_total(), 3);
            assert_eq!(t.publish_payload_out, 205, "{v:?}");
            assert_eq!(t.packet_bytes_out.iter().sum::<u64>(), out.len() as u64);
            assert_eq!(t.packet_bytes_out[13], 2);
            assert_eq!(
                t.packet_bytes_out[3],
                out.len() as u64 - 2,
                "{v:?}: both PUBLISHes"
            );
            // A cut packet at the end is counted (its payload not); garbage ends the walk
            // without a panic.
            let before = t.packet_bytes_out[3];
            t.sent(&out[..out.len() - 100], v.is_v5());
            assert_eq!(
                t.packet_bytes_out[3] - before,
                out.len() as u64 - 2 - 100,
                "the cut packet's bytes that were there"
            );
            t.sent(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], v.is_v5());
            t.sent(&[0x30, 0x05, 0x00], v.is_v5());
        }
    }

    #[test]
    fn the_sum_adds_every_part() {
        let mut a = ShardStats::default();
        a.traffic.packets_in[3] = 2;
        a.traffic.bytes_out = 10;
        a.gauges.sessions = 3;
        a.mesh.batches = 1;
        a.counters.dropped_queue_full = 1;
        let mut b = a.clone();
        b.shard = 1;
        b.counters.dropped_expired = 4;
        let t = ShardStats::sum(&[a, b]);
        assert_eq!(t.traffic.packets_in[3], 4);
        assert_eq!(t.traffic.packets_in_total(), 4);
        assert_eq!(t.traffic.bytes_out, 20);
        assert_eq!(t.gauges.sessions, 6);
        assert_eq!(t.mesh.batches, 2);
        assert_eq!(t.publish_dropped(), 6);
    }
}
