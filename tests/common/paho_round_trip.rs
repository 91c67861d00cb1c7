//! The interop round trip the security and transport tests share: Python's paho-mqtt 2.x
//! connects (over TCP, TLS, WebSockets or WSS), subscribes, publishes `payload` to itself
//! and prints what it receives. Included with `#[path = "common/paho_round_trip.rs"]`.

use std::path::Path;
use std::process::Command;

const SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
port, proto, transport, ca, payload = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
got = threading.Event()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + transport + "-" + proto,
                protocol=mqtt.MQTTv5 if proto == "5" else mqtt.MQTTv311, transport=transport)
if transport == "websockets":
    c.ws_set_options(path="/mqtt")
if ca:
    c.tls_set(ca_certs=ca)
def on_connect(c, u, flags, rc, props=None):
    c.subscribe("py/#", qos=1)
def on_subscribe(c, u, mid, rcs, props=None):
    c.publish("py/x", payload, qos=1)
def on_message(c, u, m):
    print(m.payload.decode(), flush=True)
    got.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("localhost", port)
c.loop_start()
ok = got.wait(10)
c.disconnect()
c.loop_stop()
sys.exit(0 if ok else 1)
"#;

/// Runs the round trip against `localhost:port` with MQTT `proto` ("311" or "5"), over
/// WebSockets (path `/mqtt`) when `websockets`, over TLS trusting `ca` when given; returns
/// what paho printed, after checking it exited successfully.
pub fn paho_round_trip(
    port: u16,
    proto: &str,
    websockets: bool,
    ca: Option<&Path>,
    payload: &str,
) -> String {
    let transport = if websockets { "websockets" } else { "tcp" };
    let ca = ca.map_or(String::new(), |p| p.display().to_string());
    let out = Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            &port.to_string(),
            proto,
            transport,
            &ca,
            payload,
        ])
        .output()
        .expect("python3 with paho-mqtt 2.x is required (scripts/install-test-deps.sh)");
    assert!(
        out.status.success(),
        "paho {proto} {transport} {ca}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
