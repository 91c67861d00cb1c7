//! Connection lifecycle log lines from the `surgemq` binary (two shards): a client
//! connecting (address, client id, protocol version, clean start, keep alive, user name)
//! and disconnecting (why), in `log_format = "json"` (one object per line) and "text".

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use surgemq::protocol::*;

/// The broker binary (two shards) with `format` logs on a free port, once it accepts.
fn start(format: &str) -> (Child, std::net::SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let file =
        std::env::temp_dir().join(format!("surgemq-logs-{format}-{}.toml", std::process::id()));
    let text = format!(
        "listeners = [\"{addr}\"]\nshards = 2\nlog_level = \"info\"\nlog_format = \"{format}\"\nsys_interval = 0\n"
    );
    std::fs::write(&file, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_surgemq"))
        .arg("--config")
        .arg(&file)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("surgemq binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&file);
    (child, addr)
}

/// Connects and leaves two clients: one sends DISCONNECT, one just closes its socket.
fn traffic(addr: std::net::SocketAddr) {
    let mut c = Raw::open(addr, ProtocolVersion::V3_1_1);
    let mut p = connect_packet(ProtocolVersion::V3_1_1, "logtest", true, 30, None);
    p.username = Some("alice".into());
    assert_eq!(c.connect_with(p).reason, ReasonCode::SUCCESS);
    c.disconnect_and_wait();
    let mut c = Raw::open(addr, ProtocolVersion::V5);
    c.connect("dropper", true, 0, None);
    drop(c);
    // A clean start takes over a connected client's id (its session goes with it).
    let mut first = Raw::open(addr, ProtocolVersion::V3_1_1);
    first.connect("taken", true, 0, None);
    let mut second = Raw::open(addr, ProtocolVersion::V3_1_1);
    second.connect("taken", true, 0, None);
    first.expect_closed();
    std::thread::sleep(Duration::from_millis(300));
}

/// Stops the broker and returns what it logged.
fn logs(mut child: Child) -> String {
    // SIGTERM: a clean stop.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    // tracing writes to standard output.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    out
}

#[test]
fn json_lines_say_who_connected_and_why_they_left() {
    let (child, addr) = start("json");
    traffic(addr);
    let text = logs(child);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |message: &str, client: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message && l["client_id"] == client)
            .unwrap_or_else(|| panic!("no {message} for {client} in:\n{text}"))
            .clone()
    };
    let c = &find("client connected", "logtest");
    assert!(
        c["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{c}"
    );
    assert_eq!(c["protocol"], "3.1.1");
    assert_eq!(c["clean"], true);
    assert_eq!(c["keep_alive"], 30);
    assert_eq!(c["username"], "alice");
    assert_eq!(c["session_present"], false);
    assert_eq!(c["level"], "INFO");
    assert!(c["timestamp"].is_string());
    let d = &find("client disconnected", "logtest");
    assert_eq!(d["reason"], "client sent DISCONNECT");
    assert_eq!(find("client connected", "dropper")["protocol"], "5.0");
    let d = &find("client disconnected", "taken");
    assert_eq!(d["reason"], "session taken over by a new connection");
    let ends = lines
        .iter()
        .filter(|l| l["message"] == "client disconnected" && l["client_id"] == "taken")
        .count();
    assert_eq!(
        ends, 2,
        "the taken-over one, then the second at shutdown:\n{text}"
    );
    let d = &find("client disconnected", "dropper");
    assert_eq!(d["reason"], "connection closed by the client or lost");
}

#[test]
fn text_lines_carry_the_same_fields() {
    let (child, addr) = start("text");
    traffic(addr);
    let text = logs(child);
    let line = text
        .lines()
        .find(|l| l.contains("client connected") && l.contains("client_id=logtest"))
        .unwrap_or_else(|| panic!("{text}"));
    for field in [
        "protocol=\"3.1.1\"",
        "clean=true",
        "keep_alive=30",
        "username=\"alice\"",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    assert!(text
        .lines()
        .any(|l| l.contains("client disconnected") && l.contains("client_id=logtest")));
}
