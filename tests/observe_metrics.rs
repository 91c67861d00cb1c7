//! The `[metrics]` endpoint read with curl: `/metrics` in the OpenMetrics text format with
//! one series per shard whose numbers follow known traffic exactly (two shards, clients
//! on both, 3.1, 3.1.1 and 5.0), `/health`, and the HTTP answers to anything else.

mod common;

use std::process::Command;

use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;

fn metrics_broker(sys_interval: u32) -> Broker {
    Broker::with(2, move |c: &mut Config| {
        c.sys_interval = sys_interval;
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
}

/// curl's output for `path`: the status line, the headers and the body (`-i`), or what
/// `args` ask for.
fn curl(b: &Broker, path: &str, args: &[&str]) -> String {
    let addr = b
        .handle
        .as_ref()
        .unwrap()
        .metrics_addr()
        .expect("metrics on");
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl is required: apt-get install curl");
    String::from_utf8(out.stdout).unwrap()
}

/// The sum over every series of `name` whose labels contain all of `with`.
fn sum(text: &str, name: &str, with: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && with.iter().all(|w| labels.contains(w)))
                .then(|| value.parse::<u64>().unwrap())
        })
        .sum()
}

/// Every byte read or written was in a whole packet (no partial packet, no garbage): the
/// bytes by packet type add up to the totals.
fn bytes_add_up(text: &str) {
    for dir in ["received", "sent"] {
        assert_eq!(
            sum(text, &format!("surgemq_packet_bytes_{dir}_total"), &[]),
            sum(text, &format!("surgemq_bytes_{dir}_total"), &[]),
            "{dir}"
        );
    }
}

#[test]
fn metrics_follow_known_traffic_exactly() {
    for sys_interval in [0, 1] {
        let b = metrics_broker(sys_interval);
        let v5 = ProtocolVersion::V5;
        let v4 = ProtocolVersion::V3_1_1;
        let mut sub = b.client(v4, &b.id_on(0, "sub"), true);
        sub.subscribe(1, &[("t/#", QoS::AtLeastOnce)]);
        let mut publisher = b.client(v5, &b.id_on(1, "pub"), true);
        for i in 1..=4 {
            publisher.publish_acked("t/x", b"12345", QoS::AtLeastOnce, false, i);
            // (Acknowledged by `recv_publish`.)
            sub.recv_publish();
        }
        // A 3.1 client id over 23 characters: CONNACK 0x02 (0x85 Client Identifier not
        // valid, as counted).
        let mut refused = b.raw(ProtocolVersion::V3_1);
        let ack = refused.connect_raw_ack(connect_packet(
            ProtocolVersion::V3_1,
            "a-client-id-longer-than-23",
            true,
            0,
            None,
        ));
        assert_eq!(ack[3], 0x02);
        let leaving = b.client(v4, &b.id_on(1, "leaving"), true);
        leaving.disconnect_and_wait();
        sub.ping();
        // Reports younger than a second may answer a scrape: these must be newer than
        // the traffic.
        std::thread::sleep(std::time::Duration::from_millis(1100));

        let text = curl(&b, "/metrics", &[]);
        let scraped = std::time::Instant::now();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("application/openmetrics-text"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
        // One series per shard.
        for shard in ["shard=\"0\"", "shard=\"1\""] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with("surgemq_sessions{") && l.contains(shard)),
                "{shard}"
            );
        }
        let n = |name: &str, with: &[&str]| sum(&text, name, with);
        assert_eq!(
            n("surgemq_packets_received_total", &["type=\"publish\""]),
            4
        );
        assert_eq!(n("surgemq_packets_sent_total", &["type=\"publish\""]), 4);
        assert_eq!(n("surgemq_packets_received_total", &["type=\"puback\""]), 4);
        assert_eq!(n("surgemq_packets_sent_total", &["type=\"puback\""]), 4);
        assert_eq!(
            n("surgemq_packets_received_total", &["type=\"subscribe\""]),
            1
        );
        assert_eq!(
            n("surgemq_packets_received_total", &["type=\"pingreq\""]),
            1
        );
        assert_eq!(
            n("surgemq_packets_received_total", &["type=\"connect\""]),
            4
        );
        assert_eq!(n("surgemq_messages_routed_total", &[]), 4);
        assert_eq!(n("surgemq_messages_delivered_total", &[]), 4);
        assert_eq!(n("surgemq_publish_payload_bytes_received_total", &[]), 20);
        assert_eq!(n("surgemq_publish_payload_bytes_sent_total", &[]), 20);
        assert_eq!(n("surgemq_connack_refusals_total", &["reason=\"0x85\""]), 1);
        assert_eq!(n("surgemq_connack_refusals_total", &[]), 1);
        // On listener 0, by protocol version: 3.1, 3.1.1, 5.0.
        let by_version = |name: &str| {
            let one = |v: &str| n(name, &["listener=\"0\"", &format!("version=\"{v}\"")]);
            (one("3.1"), one("3.1.1"), one("5.0"))
        };
        assert_eq!(by_version("surgemq_connects_total"), (1, 2, 1));
        assert_eq!(
            n(
                "surgemq_disconnects_total",
                &["reason=\"client_disconnect\""]
            ),
            1
        );
        assert_eq!(n("surgemq_disconnects_total", &["reason=\"refused\""]), 1);
        // Connected now: the subscriber (3.1.1) and the publisher (5.0); not the refused
        // 3.1 client nor the one that left.
        assert_eq!(by_version("surgemq_clients_connected"), (0, 1, 1));
        assert_eq!(n("surgemq_sessions", &[]), 2);
        assert_eq!(n("surgemq_sessions_online", &[]), 2);
        assert_eq!(n("surgemq_subscriptions", &[]), 1);
        assert_eq!(n("surgemq_inflight_messages", &[]), 0);
        assert_eq!(n("surgemq_messages_dropped_total", &[]), 0);
        // Reads and writes happened; bytes each way are at least the packets' sizes.
        assert!(n("surgemq_read_calls_total", &[]) >= 4);
        assert!(n("surgemq_write_calls_total", &[]) >= 4);
        assert!(n("surgemq_bytes_received_total", &[]) > 4 * (2 + 5 + 3 + 5));
        // Bytes by packet type: a 5.0 PUBLISH of "t/x" at QoS 1 with 5 bytes and no
        // properties is 2 + 5 + 2 + 1 + 5 bytes; the 3.1.1 one sent is 14; acks and pings
        // are 4 and 2. Every byte read or written was in a whole packet, so the types add
        // up to the totals.
        let bytes = |dir: &str, t: &str| {
            n(
                &format!("surgemq_packet_bytes_{dir}_total"),
                &[&format!("type=\"{t}\"")],
            )
        };
        assert_eq!(bytes("received", "publish"), 4 * 15);
        assert_eq!(bytes("sent", "publish"), 4 * 14);
        assert_eq!(bytes("received", "puback"), 4 * 4);
        assert_eq!(bytes("sent", "puback"), 4 * 4);
        assert_eq!(
            (bytes("received", "pingreq"), bytes("sent", "pingresp")),
            (2, 2)
        );
        bytes_add_up(&text);
        // The numbers move with the traffic, once the last reports are a second old
        // (requests within a second share one gathering).
        publisher.publish_acked("t/y", b"6789", QoS::AtLeastOnce, false, 9);
        sub.recv_publish();
        sub.ping();
        let cached = curl(&b, "/metrics", &[]);
        // Within a second of the first scrape (and with $SYS off, whose rounds refresh
        // the reports every second too), the same reports answer.
        if sys_interval == 0 && scraped.elapsed() < std::time::Duration::from_millis(900) {
            assert_eq!(sum(&cached, "surgemq_messages_routed_total", &[]), 4);
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let text = curl(&b, "/metrics", &[]);
        assert_eq!(sum(&text, "surgemq_messages_routed_total", &[]), 5);
        assert_eq!(
            sum(&text, "surgemq_publish_payload_bytes_received_total", &[]),
            24
        );
    }
}

#[test]
fn health_and_other_requests() {
    let b = metrics_broker(0);
    let text = curl(&b, "/health", &[]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok\n"));
    assert!(curl(&b, "/nothing", &[]).starts_with("HTTP/1.1 404"));
    assert!(curl(&b, "/metrics", &["-X", "POST"]).starts_with("HTTP/1.1 405"));
    // A query string is ignored.
    assert!(curl(&b, "/metrics?x=1", &[]).starts_with("HTTP/1.1 200"));
    // Garbage and an oversized request are answered or closed; the endpoint goes on.
    let addr = b.handle.as_ref().unwrap().metrics_addr().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut s, b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut got = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let _ = std::io::Write::write_all(&mut s, &vec![b'a'; 20_000]);
    let mut got = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut got);
    assert!(got.is_empty(), "{got}");
    assert!(curl(&b, "/health", &[]).starts_with("HTTP/1.1 200"));
}

/// Connections refused "server busy" over `max_connections` count like any other: their
/// CONNECT in `connects_total` and the packet counts, their reads in the bytes, their
/// CONNACK 0x89 in the refusals.
#[test]
fn busy_refusals_count_their_connect_and_bytes() {
    let b = Broker::with(2, |c: &mut Config| {
        c.limits.max_connections = 2;
        c.accept_mode = surgemq::config::AcceptMode::RoundRobin;
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let v = ProtocolVersion::V5;
    let open: Vec<Raw> = (0..2)
        .map(|k| b.client(v, &b.id_on(k % 2, &format!("busy-{k}")), true))
        .collect();
    for k in 2..4 {
        let mut c = b.raw(v);
        let ack = c.connect(&b.id_on(k % 2, &format!("busy-{k}")), true, 0, None);
        assert_eq!(ack.reason, ReasonCode::SERVER_BUSY, "connection {k}");
        c.expect_closed();
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let text = curl(&b, "/metrics", &[]);
    let n = |name: &str, with: &[&str]| sum(&text, name, with);
    assert_eq!(n("surgemq_connects_total", &["version=\"5.0\""]), 4);
    assert_eq!(
        n("surgemq_packets_received_total", &["type=\"connect\""]),
        4
    );
    assert_eq!(n("surgemq_connack_refusals_total", &["reason=\"0x89\""]), 2);
    assert_eq!(n("surgemq_clients_connected", &[]), 2);
    bytes_add_up(&text);
    drop(open);
}
