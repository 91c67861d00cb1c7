//! The benchmark runner against SurgeMQ in-process: a tiny fan-in and fan-out at every
//! QoS and both protocol versions must deliver everything, with the runner's own loss /
//! duplicate / order checks.

mod common;

use common::*;
use surgemq::bench::{run, RunSpec, Shape};
use surgemq::protocol::{ProtocolVersion, QoS};

/// A run of `shape` at `qos` on 2 runner threads, with a client-id prefix unique to this
/// process and run.
fn spec(b: &Broker, shape: Shape, qos: QoS, pubs: usize, count: u64, size: usize) -> RunSpec {
    let mut spec = RunSpec::new(b.addr, shape);
    spec.pubs = pubs;
    spec.subs = pubs;
    spec.count = Some(count);
    spec.size = size;
    spec.qos = qos;
    spec.threads = 2;
    spec.prefix = format!("t{}{:?}{:?}", std::process::id(), shape, qos);
    spec
}

fn tiny(shape: Shape, qos: QoS) {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        tiny_at(shape, qos, version);
    }
}

fn tiny_at(shape: Shape, qos: QoS, version: ProtocolVersion) {
    let b = Broker::start(2);
    let mut spec = spec(&b, shape, qos, 4, 300, 64);
    spec.version = version;
    let r = run(&spec).expect("run completes");
    let protocol = if version.is_v5() { "5.0" } else { "3.1.1" };
    assert_eq!(r.protocol, protocol);
    // Fan-in: 4 publishers x 300 to one subscriber; fan-out: 300 to each of 4.
    let n = 4 * 300;
    let sent = if shape == Shape::FanIn { n } else { 300 };
    assert_eq!(r.sent, sent, "{shape:?} {qos:?}: sent");
    assert_eq!(r.expected, n, "{shape:?} {qos:?}: expected");
    assert_eq!(
        (r.received, r.lost, r.reordered),
        (n, 0, 0),
        "{shape:?} {qos:?}"
    );
    if qos == QoS::ExactlyOnce {
        assert_eq!(r.dups, 0);
    }
    assert!(
        r.msgs_per_s > 0.0 && r.max_us > 0,
        "{shape:?} {qos:?}: timing recorded"
    );
    let json = r.json();
    assert!(
        json.starts_with('{')
            && json.contains("\"lost\":0")
            && json.contains(&format!("\"protocol\":\"{protocol}\"")),
        "{json}"
    );
}

#[test]
fn fan_in_delivers_everything_at_every_qos() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        tiny(Shape::FanIn, qos);
    }
}

#[test]
fn fan_out_delivers_everything_at_every_qos() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        tiny(Shape::FanOut, qos);
    }
}

/// The mesh shape: every client one connection that publishes to all and receives from
/// all. 20 clients x 2,000 messages is 800,000 deliveries at each QoS, with no loss at QoS
/// 1 and 2: the broker must keep reading the acks of subscribers that are behind while
/// holding their own publishes back.
#[test]
fn mesh_delivers_everything_at_qos_1_and_2() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let b = Broker::start(2);
        let r = run(&spec(&b, Shape::Mesh, qos, 20, 2000, 256)).expect("run completes");
        assert_eq!(r.sent, 40_000, "{qos:?}: sent");
        assert_eq!(r.expected, 800_000, "{qos:?}: expected");
        assert_eq!(
            (r.received - r.dups, r.lost, r.reordered),
            (800_000, 0, 0),
            "{qos:?}"
        );
    }
}

#[test]
fn connections_mode_counts_idle_clients() {
    let b = Broker::start(2);
    let mut spec = RunSpec::new(b.addr, Shape::Connections);
    spec.connections = 200;
    spec.duration = std::time::Duration::from_millis(200);
    spec.prefix = format!("c{}", std::process::id());
    let r = run(&spec).expect("run completes");
    assert_eq!(r.received, 200);
    assert!(r.connects_per_s > 0.0);
}
