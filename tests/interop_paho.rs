//! Interoperability with Eclipse Paho's Python client (pip package `paho-mqtt` 2.x, callback
//! API version 2) in MQTT 3.1.1 and 3.1, run as `python3` subprocesses against an
//! in-process two-shard broker.
//!
//! One script, [`SCRIPT`] (run with `python3 -c`), drives one paho client per process as told by a JSON argument:
//! connect (optionally with a will and clean session 0), subscribe, publish (waiting for each
//! flow to complete), wait for N messages, stay quiet a little to catch extras, then leave
//! cleanly, or vanish without DISCONNECT. It prints one JSON object per line for each event
//! (`connack`, `suback`, `published`, `message`, `done`); the test waits for events to order
//! the clients and asserts on their exact contents.
//!
//! A missing python3 or paho-mqtt 2.x fails the test with what to install; every process
//! has a deadline (in the script, and the test's waits) and is killed when its handle drops.

mod common;
#[path = "common/subprocess.rs"]
mod subprocess;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::Broker;
use subprocess::{spawn, Proc};

const HINT: &str = "python3 with paho-mqtt 2.x is required: install python3 and \
                    `pip install 'paho-mqtt>=2,<3'`";
/// Longest wait for any one event of a subprocess.
const T: Duration = Duration::from_secs(20);

/// The paho client driver. Argument: a JSON object with
/// `port`, `id`, `proto` ("311" | "31"), `clean` (bool), optional `will`
/// ({topic, payload, qos, retain}), `subscribe` ([[filter, qos], ...]), `publish`
/// ([{topic, payload, qos, retain}, ...]), `expect` (messages to wait for), `quiet_ms`
/// (extra wait for unexpected messages), `end`: "disconnect" (default), "linger" (wait to be
/// killed) or "close" (stop the network loop, close the socket, exit: no DISCONNECT).
const SCRIPT: &str = r#"
import json, os, sys, threading, time
import paho.mqtt.client as mqtt

cfg = json.loads(sys.argv[1])
lock = threading.Lock()

def out(**kw):
    with lock:
        sys.stdout.write(json.dumps(kw) + "\n")
        sys.stdout.flush()

def watchdog():
    out(event="timeout")
    os._exit(3)

timer = threading.Timer(cfg.get("timeout", 30), watchdog)
timer.daemon = True
timer.start()

proto = {"311": mqtt.MQTTv311, "31": mqtt.MQTTv31}[cfg["proto"]]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg["id"],
                clean_session=cfg.get("clean", True), protocol=proto,
                reconnect_on_failure=False)
if cfg.get("will"):
    w = cfg["will"]
    c.will_set(w["topic"], w["payload"], qos=w["qos"], retain=w["retain"])

connected = threading.Event()
subscribed = threading.Event()
enough = threading.Event()
messages = []
completed = []
expect = cfg.get("expect", 0)

def on_connect(client, userdata, flags, reason_code, properties):
    out(event="connack", rc=reason_code.value, session_present=bool(flags.session_present))
    connected.set()

def on_subscribe(client, userdata, mid, reason_code_list, properties):
    out(event="suback", granted=[rc.value for rc in reason_code_list])
    subscribed.set()

def on_message(client, userdata, msg):
    m = dict(topic=msg.topic, payload=msg.payload.decode(), qos=msg.qos,
             retain=bool(msg.retain), dup=bool(msg.dup))
    with lock:
        messages.append(m)
        n = len(messages)
    out(event="message", **m)
    if n >= expect:
        enough.set()

def on_publish(client, userdata, mid, reason_code, properties):
    with lock:
        completed.append(mid)

def on_disconnect(client, userdata, flags, reason_code, properties):
    out(event="disconnected", rc=reason_code.value)

c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = on_message
c.on_publish = on_publish
c.on_disconnect = on_disconnect

def must(ev, what):
    if not ev.wait(15):
        out(event="error", what="no " + what)
        os._exit(2)

c.connect("127.0.0.1", cfg["port"], keepalive=60)
c.loop_start()
must(connected, "CONNACK")

if cfg.get("subscribe"):
    c.subscribe([(f, q) for f, q in cfg["subscribe"]])
    must(subscribed, "SUBACK")

for p in cfg.get("publish", []):
    info = c.publish(p["topic"], p["payload"], qos=p["qos"], retain=p.get("retain", False))
    info.wait_for_publish(15)
    if not info.is_published():
        out(event="error", what="publish not completed", mid=info.mid)
        os._exit(2)
    out(event="published", mid=info.mid, rc=int(info.rc))

if expect:
    must(enough, "%d messages" % expect)
if cfg.get("quiet_ms"):
    time.sleep(cfg["quiet_ms"] / 1000.0)

def finish():
    with lock:
        snapshot = dict(messages=list(messages), completed=list(completed))
    out(event="done", **snapshot)

end = cfg.get("end", "disconnect")
if end == "linger":
    out(event="lingering")
    time.sleep(3600)
elif end == "close":
    c.loop_stop()
    c.socket().close()
    finish()
    os._exit(0)
else:
    c.disconnect()
    c.loop_stop()
    finish()
"#;

/// Fails the test, saying what to install, unless python3 can import paho-mqtt 2.x.
fn require_paho() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let check = "import paho.mqtt, sys; \
                     sys.exit(0 if int(paho.mqtt.__version__.split('.')[0]) >= 2 else 3)";
        match Command::new("python3").args(["-c", check]).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("`python3` is not installed (not found on PATH): {HINT}")
            }
            Err(e) => panic!("cannot run python3: {e}"),
            Ok(o) if o.status.code() == Some(3) => {
                panic!("paho-mqtt is older than 2.0: {HINT}")
            }
            Ok(o) if !o.status.success() => panic!(
                "python3 cannot import paho.mqtt ({}): {HINT}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Ok(_) => {}
        }
    });
}

// ------------------------------------------------------------------------------------------
// A minimal JSON reader for the script's output (no JSON crate among the dependencies).
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing data in JSON: {text}");
        v
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no `{key}` in {self:?}")),
            _ => panic!("not an object: {self:?}"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }

    fn int(&self) -> i64 {
        match self {
            Json::Num(n) if n.fract() == 0.0 => *n as i64,
            _ => panic!("not an integer: {self:?}"),
        }
    }

    fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            _ => panic!("not a bool: {self:?}"),
        }
    }

    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => panic!("not an array: {self:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) {
        assert!(
            self.s[self.i..].starts_with(lit.as_bytes()),
            "JSON: expected {lit} at {}",
            self.i
        );
        self.i += lit.len();
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s.get(self.i).copied() {
            Some(b'n') => {
                self.eat("null");
                Json::Null
            }
            Some(b't') => {
                self.eat("true");
                Json::Bool(true)
            }
            Some(b'f') => {
                self.eat("false");
                Json::Bool(false)
            }
            Some(b'"') => Json::Str(self.string()),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    match self.s[self.i] {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Json::Arr(items);
                        }
                        c => panic!("JSON: unexpected {:?} in array", c as char),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(fields);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.ws();
                    self.eat(":");
                    fields.push((k, self.value()));
                    self.ws();
                    match self.s[self.i] {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Json::Obj(fields);
                        }
                        c => panic!("JSON: unexpected {:?} in object", c as char),
                    }
                }
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-.eE0123456789".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(
                    text.parse()
                        .unwrap_or_else(|_| panic!("JSON: bad number at {start}")),
                )
            }
        }
    }

    fn string(&mut self) -> String {
        self.eat("\"");
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            self.i += 4;
                            let code = u32::from_str_radix(hex, 16).unwrap();
                            // Surrogate pairs are not needed: payloads here are ASCII.
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        _ => panic!("JSON: bad escape"),
                    }
                }
                _ => {
                    // Copy one UTF-8 sequence.
                    let start = self.i - 1;
                    let len = match c {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    self.i = start + len;
                    out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap());
                }
            }
        }
    }
}

#[test]
fn json_reader_reads_what_python_writes() {
    let v = Json::parse(
        r#"{"event": "done", "messages": [{"topic": "a/b", "payload": "x \"y\" \u00e9", "qos": 2, "retain": false, "dup": true}], "n": null, "e": []}"#,
    );
    assert_eq!(v.get("event").str(), "done");
    let m = &v.get("messages").arr()[0];
    assert_eq!(m.get("payload").str(), "x \"y\" é");
    assert_eq!(m.get("qos").int(), 2);
    assert!(!m.get("retain").bool());
    assert!(m.get("dup").bool());
    assert_eq!(v.get("n"), &Json::Null);
    assert!(v.get("e").arr().is_empty());
}

// ------------------------------------------------------------------------------------------
// Driving the script
// ------------------------------------------------------------------------------------------

/// One paho client process.
struct Paho {
    proc: Proc,
}

/// A message as the script reports it: (topic, payload, qos, retain, dup).
type Msg = (String, String, i64, bool, bool);

fn msg(topic: &str, payload: &str, qos: i64, retain: bool) -> Msg {
    (topic.to_owned(), payload.to_owned(), qos, retain, false)
}

fn to_msg(m: &Json) -> Msg {
    (
        m.get("topic").str().to_owned(),
        m.get("payload").str().to_owned(),
        m.get("qos").int(),
        m.get("retain").bool(),
        m.get("dup").bool(),
    )
}

/// The JSON config of one client: fills in port, id and proto.
fn config(b: &Broker, id: &str, proto: &str, rest: &str) -> String {
    let mut cfg = format!(
        r#"{{"port": {}, "id": "{id}", "proto": "{proto}""#,
        b.addr.port()
    );
    if !rest.is_empty() {
        cfg.push_str(", ");
        cfg.push_str(rest);
    }
    cfg.push('}');
    cfg
}

impl Paho {
    fn start(b: &Broker, id: &str, proto: &str, rest: &str) -> Paho {
        require_paho();
        let mut cmd = Command::new("python3");
        cmd.args(["-u", "-c", SCRIPT, &config(b, id, proto, rest)]);
        Paho {
            proc: spawn(&mut cmd, &format!("paho {id}"), HINT, None),
        }
    }

    /// The next event named `name` (earlier events are kept in `proc.seen`); an `error` or
    /// `timeout` event from the script fails at once.
    fn event(&mut self, name: &str) -> Json {
        let tag = format!("\"event\": \"{name}\"");
        let line = self.proc.wait_line(name, T, |l| {
            l.contains(&tag)
                || l.contains("\"event\": \"error\"")
                || l.contains("\"event\": \"timeout\"")
        });
        let v = Json::parse(&line);
        assert_eq!(
            v.get("event").str(),
            name,
            "{}: output:\n{}\nstderr:\n{}",
            self.proc.name,
            self.proc.seen.join("\n"),
            self.proc.stderr()
        );
        v
    }

    /// Waits for CONNACK and returns session_present (asserting the connection accepted).
    fn connack(&mut self) -> bool {
        let v = self.event("connack");
        assert_eq!(v.get("rc").int(), 0, "{}: refused", self.proc.name);
        v.get("session_present").bool()
    }

    fn suback(&mut self) -> Vec<i64> {
        self.event("suback")
            .get("granted")
            .arr()
            .iter()
            .map(Json::int)
            .collect()
    }

    /// Waits for the `done` event and a successful exit; returns the messages received and
    /// the number of completed publish flows.
    fn done(mut self) -> (Vec<Msg>, usize) {
        let v = self.event("done");
        self.proc.wait_success(T);
        (
            v.get("messages").arr().iter().map(to_msg).collect(),
            v.get("completed").arr().len(),
        )
    }
}

fn publish_list(msgs: &[(&str, &str, u8, bool)]) -> String {
    let items: Vec<String> = msgs
        .iter()
        .map(|(t, p, q, r)| {
            format!(r#"{{"topic": "{t}", "payload": "{p}", "qos": {q}, "retain": {r}}}"#)
        })
        .collect();
    format!(r#""publish": [{}]"#, items.join(", "))
}

/// Runs one publisher to completion; asserts every flow completed.
fn run_publisher(b: &Broker, id: &str, proto: &str, msgs: &[(&str, &str, u8, bool)]) {
    let mut p = Paho::start(b, id, proto, &publish_list(msgs));
    assert!(!p.connack());
    let (_, completed) = p.done();
    assert_eq!(completed, msgs.len(), "publish flows completed by {id}");
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// 10 messages at `qos` from a publisher on one shard to a subscriber on the other, both
/// directions; exact order, payloads and flags; nothing extra.
fn pubsub(proto: &str, qos: u8) {
    let b = Broker::start(2);
    let n = 10;
    for (sub_shard, pub_shard) in [(0, 1), (1, 0)] {
        let tag = format!("{proto}{qos}{sub_shard}");
        let topic = format!("x/{tag}");
        let mut sub = Paho::start(
            &b,
            &b.id_on(sub_shard, &format!("ps{tag}")),
            proto,
            &format!(r#""subscribe": [["x/#", 2]], "expect": {n}, "quiet_ms": 300"#),
        );
        assert!(!sub.connack());
        assert_eq!(sub.suback(), [2]);
        let payloads: Vec<String> = (0..n).map(|i| format!("m{i}-{tag}")).collect();
        let list: Vec<(&str, &str, u8, bool)> = payloads
            .iter()
            .map(|p| (topic.as_str(), p.as_str(), qos, false))
            .collect();
        run_publisher(&b, &b.id_on(pub_shard, &format!("pp{tag}")), proto, &list);
        let (got, _) = sub.done();
        let want: Vec<Msg> = payloads
            .iter()
            .map(|p| msg(&topic, p, i64::from(qos), false))
            .collect();
        assert_eq!(got, want, "shard {pub_shard} -> shard {sub_shard}");
    }
}

#[test]
fn paho_v311_qos0() {
    pubsub("311", 0);
}

#[test]
fn paho_v311_qos1() {
    pubsub("311", 1);
}

#[test]
fn paho_v311_qos2() {
    pubsub("311", 2);
}

#[test]
fn paho_v31_qos0() {
    pubsub("31", 0);
}

#[test]
fn paho_v31_qos1() {
    pubsub("31", 1);
}

#[test]
fn paho_v31_qos2() {
    pubsub("31", 2);
}

/// Retained: the latest message per topic is stored and delivered to new subscribers with
/// RETAIN set, at min(stored QoS, granted QoS); an empty retained message clears it.
fn retained(proto: &str) {
    let b = Broker::start(2);
    let pub_id = b.id_on(1, &format!("rp{proto}"));
    run_publisher(
        &b,
        &pub_id,
        proto,
        &[
            ("r/x", "first", 1, true),
            ("r/x", "hello", 1, true),
            ("r/y", "two", 2, true),
            ("r/z", "not kept", 1, false),
        ],
    );

    let mut sub = Paho::start(
        &b,
        &b.id_on(0, &format!("rs{proto}")),
        proto,
        r#""subscribe": [["r/#", 2]], "expect": 2, "quiet_ms": 300"#,
    );
    assert!(!sub.connack());
    assert_eq!(sub.suback(), [2]);
    let (mut got, _) = sub.done();
    // Retained messages of different topics may come in any order.
    got.sort();
    assert_eq!(
        got,
        vec![msg("r/x", "hello", 1, true), msg("r/y", "two", 2, true)]
    );

    // Granted QoS 0: the QoS 2 retained message comes at QoS 0 [MQTT-3.8.4-6].
    let mut low = Paho::start(
        &b,
        &b.id_on(1, &format!("rl{proto}")),
        proto,
        r#""subscribe": [["r/y", 0]], "expect": 1, "quiet_ms": 300"#,
    );
    assert!(!low.connack());
    assert_eq!(low.suback(), [0]);
    let (got, _) = low.done();
    assert_eq!(got, vec![msg("r/y", "two", 0, true)]);

    // Clear both topics; a new subscriber gets nothing.
    run_publisher(
        &b,
        &pub_id,
        proto,
        &[("r/x", "", 1, true), ("r/y", "", 2, true)],
    );
    let mut sub = Paho::start(
        &b,
        &b.id_on(0, &format!("rz{proto}")),
        proto,
        r#""subscribe": [["r/#", 2]], "quiet_ms": 500"#,
    );
    assert!(!sub.connack());
    assert_eq!(sub.suback(), [2]);
    let (got, _) = sub.done();
    assert_eq!(got, vec![]);
}

#[test]
fn paho_v311_retained() {
    retained("311");
}

#[test]
fn paho_v31_retained() {
    retained("31");
}

/// A will is published when its client is killed (SIGKILL) or closes its socket without
/// DISCONNECT, and not when it sends DISCONNECT.
fn will(proto: &str) {
    let b = Broker::start(2);
    let mut watcher = Paho::start(
        &b,
        &b.id_on(0, &format!("ww{proto}")),
        proto,
        r#""subscribe": [["w/#", 2]], "expect": 2, "quiet_ms": 300"#,
    );
    assert!(!watcher.connack());
    assert_eq!(watcher.suback(), [2]);

    let will = |topic: &str, payload: &str, qos: u8, retain: bool| {
        format!(
            r#""will": {{"topic": "{topic}", "payload": "{payload}", "qos": {qos}, "retain": {retain}}}"#
        )
    };

    // DISCONNECT: will discarded.
    let mut polite = Paho::start(
        &b,
        &b.id_on(1, &format!("wp{proto}")),
        proto,
        &will("w/polite", "never", 1, false),
    );
    assert!(!polite.connack());
    polite.done();

    // SIGKILL of the process.
    let mut killed = Paho::start(
        &b,
        &b.id_on(1, &format!("wk{proto}")),
        proto,
        &format!(r#"{}, "end": "linger""#, will("w/killed", "gone", 1, false)),
    );
    assert!(!killed.connack());
    killed.event("lingering");
    killed.proc.kill();
    let m = watcher.event("message");
    assert_eq!(to_msg(&m), msg("w/killed", "gone", 1, false));

    // Socket closed by the client without DISCONNECT; a retained QoS 2 will.
    let mut closer = Paho::start(
        &b,
        &b.id_on(1, &format!("wc{proto}")),
        proto,
        &format!(r#"{}, "end": "close""#, will("w/closed", "bye", 2, true)),
    );
    assert!(!closer.connack());
    closer.done();

    let (got, _) = watcher.done();
    assert_eq!(
        got,
        vec![
            msg("w/killed", "gone", 1, false),
            msg("w/closed", "bye", 2, false)
        ]
    );

    // The retained will is stored.
    let mut late = Paho::start(
        &b,
        &b.id_on(0, &format!("wl{proto}")),
        proto,
        r#""subscribe": [["w/#", 2]], "expect": 1, "quiet_ms": 300"#,
    );
    assert!(!late.connack());
    assert_eq!(late.suback(), [2]);
    let (got, _) = late.done();
    assert_eq!(got, vec![msg("w/closed", "bye", 2, true)]);
}

#[test]
fn paho_v311_will() {
    will("311");
}

#[test]
fn paho_v31_will() {
    will("31");
}

/// clean_session=False: QoS 1 messages published while the subscriber is away are
/// delivered in order on its return, with session_present set.
fn persistent(proto: &str) {
    let b = Broker::start(2);
    let sub_id = b.id_on(0, &format!("pc{proto}"));
    let pub_id = b.id_on(1, &format!("pp{proto}"));

    let mut sub = Paho::start(
        &b,
        &sub_id,
        proto,
        r#""clean": false, "subscribe": [["p/#", 1]]"#,
    );
    assert!(!sub.connack(), "a new session is not present");
    assert_eq!(sub.suback(), [1]);
    sub.done();

    let payloads: Vec<String> = (0..5).map(|i| format!("off{i}")).collect();
    let mut list: Vec<(&str, &str, u8, bool)> = payloads
        .iter()
        .map(|p| ("p/x", p.as_str(), 1, false))
        .collect();
    // QoS 2 is queued too, at the granted QoS 1.
    list.push(("p/x", "off5", 2, false));
    run_publisher(&b, &pub_id, proto, &list);

    let mut sub = Paho::start(
        &b,
        &sub_id,
        proto,
        r#""clean": false, "expect": 6, "quiet_ms": 300"#,
    );
    // MQTT 3.1 has no Session Present flag (the first CONNACK byte is reserved); 3.1.1
    // must set it for a resumed session [MQTT-3.2.2-2].
    assert_eq!(sub.connack(), proto == "311", "CONNACK session_present");
    let (got, _) = sub.done();
    let want: Vec<Msg> = (0..6)
        .map(|i| msg("p/x", &format!("off{i}"), 1, false))
        .collect();
    assert_eq!(got, want);

    // A clean session discards it: nothing is queued afterwards.
    let mut clean = Paho::start(&b, &sub_id, proto, r#""clean": true"#);
    assert!(!clean.connack());
    clean.done();
    run_publisher(&b, &pub_id, proto, &[("p/x", "lost", 1, false)]);
    let mut sub = Paho::start(&b, &sub_id, proto, r#""clean": false, "quiet_ms": 300"#);
    assert!(!sub.connack(), "the clean session replaced the stored one");
    let (got, _) = sub.done();
    assert_eq!(got, vec![]);
}

#[test]
fn paho_v311_persistent_session() {
    persistent("311");
}

#[test]
fn paho_v31_persistent_session() {
    persistent("31");
}
