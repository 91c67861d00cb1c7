//! The shards' reports in the Prometheus exposition format (OpenMetrics text, as the
//! `prometheus-client` crate writes it), one series per shard (`shard` label) so a
//! dashboard can sum them or show the imbalance.
//!
//! **Owns:** metric names, help texts and labels. **Must not touch:** sockets, shards (the
//! broker's HTTP side asks for the reports and serves what [`render`] returns).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::{ShardStats, CLOSE_REASONS, PACKET_TYPES, VERSIONS};
use crate::protocol::ReasonCode;

/// A series' labels.
type Labels = Vec<(&'static str, String)>;

/// The Content-Type of what [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Collects the series of one scrape.
struct Scrape {
    registry: Registry,
}

impl Scrape {
    /// A counter family: one series per (labels, value).
    fn counter(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, u64)>) {
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).inc_by(value);
        }
        self.registry.register(name, help_text(help), family);
    }

    /// A counter family of seconds.
    fn seconds(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, f64)>) {
        let family = Family::<Labels, Counter<f64, AtomicU64>>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).inc_by(value);
        }
        self.registry.register(name, help_text(help), family);
    }

    /// A gauge family.
    fn gauge(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, u64)>) {
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in series {
            family
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        self.registry.register(name, help_text(help), family);
    }
}

/// `help` without its closing period: the encoder adds one.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

fn shard(s: &ShardStats) -> Labels {
    vec![("shard", s.shard.to_string())]
}

fn with(s: &ShardStats, key: &'static str, value: impl ToString) -> Labels {
    vec![("shard", s.shard.to_string()), (key, value.to_string())]
}

/// Series by shard, listener and protocol version of counts kept as `ShardStats::connects`.
fn by_listener(
    shards: &[ShardStats],
    f: fn(&ShardStats) -> &Vec<[u64; 3]>,
) -> impl Iterator<Item = (Labels, u64)> + '_ {
    shards.iter().flat_map(move |s| {
        f(s).iter().enumerate().flat_map(move |(l, by_version)| {
            by_version.iter().zip(VERSIONS).map(move |(n, v)| {
                (
                    vec![
                        ("shard", s.shard.to_string()),
                        ("listener", l.to_string()),
                        ("version", v.to_owned()),
                    ],
                    *n,
                )
            })
        })
    })
}

/// Every metric of these reports (one per shard), in the text format.
pub fn render(shards: &[ShardStats]) -> String {
    let mut m = Scrape {
        registry: Registry::with_prefix("surgemq"),
    };
    let per = |f: fn(&ShardStats) -> u64| shards.iter().map(move |s| (shard(s), f(s)));

    // Connections.
    m.gauge(
        "connections",
        "Connections open.",
        per(|s| s.gauges.connections),
    );
    m.counter(
        "connections_accepted",
        "Connections accepted.",
        per(|s| s.counters.connections_accepted),
    );
    m.counter(
        "connections_migrated",
        "Connections moved after CONNECT to the shard that holds their session.",
        per(|s| s.counters.connections_migrated),
    );
    m.counter(
        "connects",
        "CONNECT packets received, by listener (its place in the configuration: `listeners` first, then `[[listener]]` tables) and protocol version; counted on the shard that accepted the connection.",
        by_listener(shards, |s| &s.connects),
    );
    m.gauge(
        "clients_connected",
        "Clients connected now (CONNECT accepted, connection open), by listener and protocol version; on the shard that holds the session.",
        by_listener(shards, |s| &s.connected),
    );
    m.counter(
        "connections_refused",
        "Connections closed before MQTT: over a connection cap, over the per-IP cap, a TLS handshake that did not complete, a WebSocket upgrade or frame that broke the rules.",
        shards.iter().flat_map(|s| {
            let c = &s.counters;
            [
                (with(s, "reason", "max_connections"), c.connections_refused_limit),
                (with(s, "reason", "max_connections_per_ip"), c.connections_refused_ip),
                (with(s, "reason", "tls_handshake"), c.tls_handshake_failed),
                (with(s, "reason", "websocket"), c.websocket_errors),
            ]
        }),
    );
    m.counter(
        "connack_refusals",
        "CONNECTs refused, by the reason code of the CONNACK (the 5.0 code; 3.x clients get the nearest 3.x code).",
        shards.iter().flat_map(|s| {
            s.closes
                .connack_refused
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(move |(i, n)| {
                    let code = ReasonCode(0x80 + i as u8);
                    (with(s, "reason", format!("0x{:02x}", code.0)), *n)
                })
        }),
    );
    m.counter(
        "disconnects",
        "Connections ended, by reason.",
        shards.iter().flat_map(|s| {
            s.closes
                .by_reason
                .iter()
                .zip(CLOSE_REASONS)
                .map(move |(n, r)| (with(s, "reason", r), *n))
        }),
    );

    // Packets and bytes.
    m.counter(
        "bytes_received",
        "MQTT bytes read from clients.",
        per(|s| s.traffic.bytes_in),
    );
    m.counter(
        "bytes_sent",
        "MQTT bytes written to clients.",
        per(|s| s.traffic.bytes_out),
    );
    let by_type = |f: fn(&ShardStats) -> [u64; 16]| {
        shards.iter().flat_map(move |s| {
            f(s).into_iter()
                .zip(PACKET_TYPES)
                .skip(1)
                .map(move |(n, t)| (with(s, "type", t), n))
        })
    };
    m.counter(
        "packets_received",
        "MQTT packets received, by type.",
        by_type(|s| s.traffic.packets_in),
    );
    m.counter(
        "packets_sent",
        "MQTT packets sent, by type.",
        by_type(|s| s.traffic.packets_out),
    );
    m.counter(
        "packet_bytes_received",
        "Bytes of the MQTT packets received (whole packets, fixed header included), by type.",
        by_type(|s| s.traffic.packet_bytes_in),
    );
    m.counter(
        "packet_bytes_sent",
        "Bytes of the MQTT packets sent, by type.",
        by_type(|s| s.traffic.packet_bytes_out),
    );
    m.counter(
        "publish_payload_bytes_received",
        "Payload bytes of the PUBLISH packets received.",
        per(|s| s.traffic.publish_payload_in),
    );
    m.counter(
        "publish_payload_bytes_sent",
        "Payload bytes of the PUBLISH packets sent.",
        per(|s| s.traffic.publish_payload_out),
    );
    m.counter(
        "read_calls",
        "Reads from client connections that returned data.",
        per(|s| s.traffic.read_calls),
    );
    m.counter(
        "write_calls",
        "Writes to client connections that wrote something.",
        per(|s| s.traffic.write_calls),
    );

    // Messages.
    m.counter(
        "messages_routed",
        "PUBLISH packets received from clients (each routed once, whatever its fan-out).",
        per(|s| s.counters.publishes_received),
    );
    m.counter(
        "messages_delivered",
        "Deliveries written or queued for subscribers.",
        per(|s| s.counters.messages_delivered),
    );
    m.counter(
        "messages_dropped",
        "Messages not delivered, by reason.",
        shards.iter().flat_map(|s| {
            let c = &s.counters;
            [
                (with(s, "reason", "queue_full"), c.dropped_queue_full),
                (
                    with(s, "reason", "write_buffer"),
                    c.dropped_qos0_write_buffer,
                ),
                (with(s, "reason", "offline_qos0"), c.dropped_offline_qos0),
                (with(s, "reason", "too_large"), c.dropped_too_large),
                (with(s, "reason", "expired"), c.dropped_expired),
                (with(s, "reason", "read_denied"), c.read_denied),
                (with(s, "reason", "publish_denied"), c.publish_denied),
                (
                    with(s, "reason", "share_group_empty"),
                    c.shared_undeliverable,
                ),
                (with(s, "reason", "shard_stopped"), c.mesh_undeliverable),
                (with(s, "reason", "retained_not_stored"), c.retained_dropped),
            ]
        }),
    );
    m.gauge(
        "inflight_messages",
        "QoS 1/2 messages in flight to clients.",
        per(|s| s.gauges.inflight),
    );
    m.gauge(
        "queued_messages",
        "Messages queued for clients.",
        per(|s| s.gauges.queued),
    );
    m.gauge(
        "held_bytes",
        "What the in-flight and queued messages take (topic, payload, properties).",
        per(|s| s.gauges.held_bytes),
    );
    m.gauge(
        "retained_messages",
        "Retained messages stored.",
        per(|s| s.gauges.retained),
    );
    m.gauge(
        "retained_bytes",
        "What the retained messages take (topic, payload, properties).",
        per(|s| s.gauges.retained_bytes),
    );

    // Sessions and subscriptions.
    m.gauge(
        "sessions",
        "Sessions, with or without a connection.",
        per(|s| s.gauges.sessions),
    );
    m.gauge(
        "sessions_online",
        "Sessions with a connection serving them.",
        per(|s| s.gauges.sessions_online),
    );
    m.counter(
        "sessions_expired",
        "Offline sessions ended by their expiry.",
        per(|s| s.counters.sessions_expired),
    );
    m.counter(
        "takeovers",
        "Sessions taken over by a new connection.",
        per(|s| s.counters.takeovers),
    );
    m.gauge(
        "subscriptions",
        "Subscriptions (a shared one once per member).",
        per(|s| s.gauges.subscriptions),
    );
    m.gauge(
        "shared_subscriptions",
        "Shared subscriptions ($share/...).",
        per(|s| s.gauges.shared_subscriptions),
    );
    m.counter(
        "subscribe_denied",
        "Subscriptions refused by the ACL or the authorization hook.",
        per(|s| s.counters.subscribe_denied),
    );

    // Between shards, and flow control.
    m.counter(
        "mesh_batches",
        "Batches sent to other shards.",
        per(|s| s.mesh.batches),
    );
    m.counter(
        "mesh_messages",
        "Messages sent to other shards.",
        per(|s| s.mesh.items),
    );
    m.counter(
        "mesh_overflow_batches",
        "Batches to other shards that found the channel full and waited in the sender's overflow queue.",
        per(|s| s.mesh.overflowed),
    );
    m.counter(
        "congestion_episodes",
        "Times a local subscriber fell far enough behind that the shard held its publishers back.",
        per(|s| s.mesh.congestion_episodes),
    );
    m.seconds(
        "holdback_seconds",
        "Time the shard held its publishers back because a local subscriber was behind (flow control).",
        shards
            .iter()
            .map(|s| (shard(s), s.mesh.holdback_micros as f64 / 1e6)),
    );

    // Persistence.
    m.counter(
        "persist_commits",
        "Log commits written and synced.",
        per(|s| s.counters.persist_commits),
    );
    m.counter(
        "persist_bytes",
        "Bytes of records committed to the log.",
        per(|s| s.counters.persist_bytes),
    );
    m.counter(
        "persist_errors",
        "Log commits or compactions that failed.",
        per(|s| s.counters.persist_errors),
    );
    m.counter(
        "persist_refused",
        "QoS 1/2 PUBLISHes and persistent SUBSCRIBEs refused while the log was full or failing.",
        per(|s| s.counters.persist_refused),
    );

    // Errors.
    m.counter(
        "malformed_packets",
        "Connections closed for a malformed packet.",
        per(|s| s.counters.malformed_packets),
    );
    m.counter(
        "protocol_errors",
        "Connections closed for another protocol violation.",
        per(|s| s.counters.protocol_errors),
    );
    m.counter(
        "connection_panics",
        "Connection tasks that panicked (a bug).",
        per(|s| s.counters.connection_panics),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &m.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_has_its_series() {
        let mut a = ShardStats::default();
        a.traffic.packets_in[3] = 7;
        a.traffic.bytes_in = 100;
        a.gauges.sessions = 2;
        a.closes.by_reason[0] = 1;
        a.closes.connack_refused[0x06] = 3;
        a.connects = vec![[0, 4, 1]];
        a.connected = vec![[0, 0, 0], [0, 0, 2]];
        a.traffic.packet_bytes_out[13] = 6;
        let mut b = a.clone();
        b.shard = 1;
        b.traffic.packets_in[3] = 5;
        let text = render(&[a, b]);
        for line in [
            "surgemq_packets_received_total{shard=\"0\",type=\"publish\"} 7",
            "surgemq_packets_received_total{shard=\"1\",type=\"publish\"} 5",
            "surgemq_bytes_received_total{shard=\"1\"} 100",
            "surgemq_sessions{shard=\"0\"} 2",
            "surgemq_connack_refusals_total{shard=\"0\",reason=\"0x86\"} 3",
            "surgemq_connects_total{shard=\"0\",listener=\"0\",version=\"3.1.1\"} 4",
            "surgemq_clients_connected{shard=\"1\",listener=\"1\",version=\"5.0\"} 2",
            "surgemq_packet_bytes_sent_total{shard=\"0\",type=\"pingresp\"} 6",
            "# TYPE surgemq_sessions gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
    }
}
