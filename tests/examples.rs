//! The examples in `examples/` run as their users would run them: `server` embeds a
//! broker that `client` talks to; `client` and `pingmq` (pinger and watcher) work against
//! an in-process SurgeMQ and against mosquitto. `cargo test` builds the examples before the
//! tests; they are taken from `target/<profile>/examples/`.

#[path = "common/client_env.rs"]
mod client_env;
mod common;
#[path = "common/subprocess.rs"]
mod subprocess;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use client_env::{Kind, Target};
use subprocess::spawn;

const T: Duration = Duration::from_secs(20);

fn example(name: &str) -> Command {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (`cargo test` or `cargo build --examples`)",
        path.display()
    );
    Command::new(path)
}

const HINT: &str = "built by cargo";

#[test]
fn client_example_against_both_brokers() {
    for kind in [Kind::SurgeMq, Kind::Mosquitto] {
        let t = Target::start(kind);
        let mut p = spawn(
            example("client").arg(t.addr().to_string()),
            "client example",
            HINT,
            None,
        );
        let lines = p.wait_success(T);
        let text = lines.join("\n");
        for want in [
            "connected (session present: false)",
            "subscribed to example/stream/# with QoS 2",
            "callback: example/callback/one = handled by the callback",
            "stream: example/stream/hello = hello at QoS 0 (QoS 0)",
            "stream: example/stream/hello = hello at QoS 1 (QoS 1)",
            "stream: example/stream/hello = hello at QoS 2 (QoS 2)",
            "disconnected",
        ] {
            assert!(
                text.contains(want),
                "{kind:?}: missing {want:?} in:\n{text}"
            );
        }
    }
}

#[test]
fn server_example_serves_the_client_example() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn(
        example("server").args([addr.as_str(), "2", "30"]),
        "server example",
        HINT,
        None,
    );
    server.wait_line("listening", T, |l| l.contains("surgemq listening on"));
    let mut client = spawn(example("client").arg(&addr), "client example", HINT, None);
    let lines = client.wait_success(T);
    assert!(lines.iter().any(|l| l == "disconnected"), "{lines:?}");
}

/// The watcher reports a host down after N failed probes in a row; a host that answers is
/// never reported. TCP probes (a closed port and the broker's own port) so the test needs
/// no raw sockets; ICMP is exercised too where the process may open one.
#[test]
fn pingmq_pinger_and_watcher() {
    for kind in [Kind::SurgeMq, Kind::Mosquitto] {
        let t = Target::start(kind);
        let broker = t.addr().to_string();
        let mut watch = spawn(
            example("pingmq").args([
                "watch",
                "--broker",
                &broker,
                "--failures",
                "3",
                "--reports",
                "1",
            ]),
            "pingmq watch",
            HINT,
            None,
        );
        watch.wait_line("subscribed", T, |l| l.starts_with("watching pingmq/+/+"));
        let up = format!("127.0.0.1:{}", t.addr().port());
        let hosts = format!("{up},127.0.0.1:1,127.0.0.1");
        let mut ping = spawn(
            example("pingmq").args([
                "ping",
                "--broker",
                &broker,
                "--hosts",
                &hosts,
                "--rounds",
                "3",
                "--interval",
                "0.1",
                "--timeout-ms",
                "500",
            ]),
            "pingmq ping",
            HINT,
            None,
        );
        let lines = ping.wait_success(T);
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{up} up"))),
            "{kind:?}: {lines:?}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("127.0.0.1:1 down"))
                .count(),
            3,
            "{lines:?}"
        );
        // Loopback answers ICMP echo (or, without raw sockets, a TCP probe of port 80 that
        // is refused): either way a result line is published for it.
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("127.0.0.1 ")).count(),
            3,
            "{lines:?}"
        );
        let out = watch.wait_success(T);
        let report = out.last().unwrap();
        assert!(
            report.starts_with("DOWN 127.0.0.1:1: failed 3 times in a row"),
            "{kind:?}: {out:?}"
        );
    }
}
