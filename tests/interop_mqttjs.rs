//! Interoperability with MQTT.js (npm `mqtt` 5.x, pinned in tests/mqttjs/package.json: the
//! client of browser dashboards and Node.js services) in MQTT 3.1, 3.1.1 and 5.0, over TCP,
//! WebSockets, TLS and WSS, against an in-process two-shard broker that accepts round-robin,
//! so connections also move to their session's home shard after CONNECT.
//!
//! Each client is one `node tests/mqttjs/driver.js CONFIG` process: it connects, subscribes,
//! publishes (awaiting each flow), waits for N messages, stays quiet a little to catch
//! extras, then leaves with DISCONNECT or by destroying its socket. It prints one JSON object
//! per event; the tests wait on events to order the clients and assert on exact contents.
//!
//! A missing `node` or an uninstalled `tests/mqttjs/node_modules` fails the test with what
//! to run; every process has a deadline and is killed when its handle drops.

#[path = "common/client_env.rs"]
mod client_env;
mod common;
#[path = "common/subprocess.rs"]
mod subprocess;
#[path = "common/test_ca.rs"]
mod test_ca;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Broker;
use serde_json::{json, Value};
use subprocess::{spawn, Proc};
use surgemq::config::{AcceptMode, Config, Listener, ListenerProtocol};

const HINT: &str = "node and MQTT.js are required: install nodejs and npm, then run \
                    scripts/install-test-deps.sh (npm ci in tests/mqttjs)";
/// Longest wait for any one event of a subprocess.
const T: Duration = Duration::from_secs(20);
/// MQTT.js's protocolVersion for 3.1, 3.1.1 and 5.0.
const VERSIONS: [u8; 3] = [3, 4, 5];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mqttjs")
}

/// A broker with a plain TCP listener and a WebSocket one (and `more` listeners after them).
struct Target {
    broker: Broker,
    tcp: SocketAddr,
    ws: SocketAddr,
}

impl Target {
    fn start(more: Vec<Listener>) -> Target {
        let mut listeners = vec![Listener {
            address: Some("127.0.0.1:0".parse().unwrap()),
            protocol: ListenerProtocol::Websockets,
            http_path: "/mqtt".into(),
            ..Listener::default()
        }];
        listeners.extend(more);
        let broker = Broker::with(2, move |c: &mut Config| {
            c.accept_mode = AcceptMode::RoundRobin;
            c.listener = listeners;
        });
        let addrs = broker.handle.as_ref().unwrap().local_addrs();
        Target {
            tcp: addrs[0],
            ws: addrs[1],
            broker,
        }
    }

    fn url(&self, transport: &str) -> String {
        match transport {
            "tcp" => format!("mqtt://127.0.0.1:{}", self.tcp.port()),
            "ws" => format!("ws://127.0.0.1:{}/mqtt", self.ws.port()),
            other => panic!("no transport {other}"),
        }
    }

    fn id_on(&self, shard: usize, prefix: &str) -> String {
        self.broker.id_on(shard, prefix)
    }
}

/// One MQTT.js client process.
struct Js {
    proc: Proc,
}

impl Js {
    /// Starts the driver with `cfg` (a JSON object; `url`, `id` and `version` at least).
    fn start(cfg: Value) -> Js {
        assert!(
            dir().join("node_modules/mqtt").is_dir(),
            "tests/mqttjs/node_modules/mqtt is missing: {HINT}"
        );
        let name = format!("mqtt.js {} v{}", cfg["id"], cfg["version"]);
        let mut cmd = Command::new("node");
        cmd.arg(dir().join("driver.js")).arg(cfg.to_string());
        Js {
            proc: spawn(&mut cmd, &name, HINT, None),
        }
    }

    /// The next event named `name` (earlier ones stay in `proc.seen`); an `error` or
    /// `timeout` from the driver fails at once.
    fn event(&mut self, name: &str) -> Value {
        let tag = format!("\"event\":\"{name}\"");
        let line = self.proc.wait_line(name, T, |l| {
            l.contains(&tag)
                || l.contains("\"event\":\"error\"")
                || l.contains("\"event\":\"timeout\"")
        });
        let v: Value = serde_json::from_str(&line).expect("the driver writes JSON");
        assert_eq!(
            v["event"],
            name,
            "{}: output:\n{}\nstderr:\n{}",
            self.proc.name,
            self.proc.seen.join("\n"),
            self.proc.stderr()
        );
        v
    }

    /// Waits for CONNACK, asserts it accepted, returns it.
    fn connack(&mut self) -> Value {
        let v = self.event("connack");
        assert_eq!(v["rc"], 0, "{}: refused: {v}", self.proc.name);
        v
    }

    fn suback(&mut self) -> Vec<u64> {
        self.event("suback")["granted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_u64().unwrap())
            .collect()
    }

    /// Waits for `done` and a successful exit; returns the messages received and the
    /// publish flows completed.
    fn done(mut self) -> (Vec<Value>, usize) {
        let v = self.event("done");
        self.proc.wait_success(T);
        (
            v["messages"].as_array().unwrap().clone(),
            v["completed"].as_array().unwrap().len(),
        )
    }
}

/// A message as the tests compare it: (topic, payload, qos, retain).
fn brief(m: &Value) -> (String, String, u64, bool) {
    (
        m["topic"].as_str().unwrap().to_owned(),
        m["payload"].as_str().unwrap().to_owned(),
        m["qos"].as_u64().unwrap(),
        m["retain"].as_bool().unwrap(),
    )
}

fn briefs(ms: &[Value]) -> Vec<(String, String, u64, bool)> {
    ms.iter().map(brief).collect()
}

fn want(topic: &str, payload: &str, qos: u64, retain: bool) -> (String, String, u64, bool) {
    (topic.to_owned(), payload.to_owned(), qos, retain)
}

/// Runs a publisher to completion; asserts every flow completed.
fn publish(url: &str, id: &str, version: u8, msgs: Value) {
    let n = msgs.as_array().unwrap().len();
    let mut p = Js::start(json!({"url": url, "id": id, "version": version, "publish": msgs}));
    assert_eq!(p.connack()["session_present"], false);
    let (_, completed) = p.done();
    assert_eq!(completed, n, "publish flows completed by {id}");
}

/// QoS 0, 1 and 2 from a publisher on one shard to a subscriber on the other, in each
/// version, with one of them over WebSockets: exact order, QoS, flags; nothing extra.
#[test]
fn mqttjs_publishes_and_subscribes_across_shards_over_tcp_and_websockets() {
    let t = Target::start(vec![]);
    for version in VERSIONS {
        for (sub_shard, sub_via, pub_via) in [(0, "tcp", "ws"), (1, "ws", "tcp")] {
            let tag = format!("{version}{sub_shard}");
            let topic = format!("x/{tag}");
            let mut sub = Js::start(json!({
                "url": t.url(sub_via), "id": t.id_on(sub_shard, &format!("js-s{tag}")),
                "version": version, "subscribe": [{"filter": "x/#", "qos": 2}],
                "expect": 6, "quiet_ms": 300,
            }));
            assert_eq!(sub.connack()["session_present"], false);
            assert_eq!(sub.suback(), [2]);
            let msgs: Vec<Value> = (0..6)
                .map(|i| json!({"topic": topic, "payload": format!("m{i}"), "qos": i % 3}))
                .collect();
            publish(
                &t.url(pub_via),
                &t.id_on(1 - sub_shard, &format!("js-p{tag}")),
                version,
                json!(msgs),
            );
            let (got, _) = sub.done();
            let expected: Vec<_> = (0..6)
                .map(|i| want(&topic, &format!("m{i}"), i % 3, false))
                .collect();
            let route = format!(
                "v{version}: {pub_via} on shard {} to {sub_via} on shard {sub_shard}",
                1 - sub_shard
            );
            // MQTT.js hands a QoS 2 message over at PUBREL, one round trip after its
            // PUBLISH: only QoS 0 and 1 keep their order in what it reports.
            let below_2 = |ms: &[(String, String, u64, bool)]| {
                ms.iter().filter(|m| m.2 < 2).cloned().collect::<Vec<_>>()
            };
            let mut got = briefs(&got);
            assert_eq!(below_2(&got), below_2(&expected), "{route}");
            got.sort();
            assert_eq!(got, expected, "{route}");
        }
    }
}

/// Retained messages, wills (sent when the socket is destroyed, not after DISCONNECT) and a
/// persistent session that gets what was published while it was away, in each version.
#[test]
fn mqttjs_retained_messages_wills_and_persistent_sessions() {
    let t = Target::start(vec![]);
    let url = t.url("tcp");
    for version in VERSIONS {
        let v = version;
        // Retained: the latest per topic, with RETAIN set, to a subscriber that comes later.
        publish(
            &url,
            &t.id_on(1, &format!("js-rp{v}")),
            v,
            json!([
                {"topic": format!("r{v}/x"), "payload": "first", "qos": 1, "retain": true},
                {"topic": format!("r{v}/x"), "payload": "hello", "qos": 1, "retain": true},
                {"topic": format!("r{v}/y"), "payload": "not kept", "qos": 1},
            ]),
        );
        let mut sub = Js::start(json!({
            "url": url, "id": t.id_on(0, &format!("js-rs{v}")), "version": v,
            "subscribe": [{"filter": format!("r{v}/#"), "qos": 1}], "expect": 1, "quiet_ms": 300,
        }));
        sub.connack();
        assert_eq!(sub.suback(), [1]);
        let (got, _) = sub.done();
        assert_eq!(
            briefs(&got),
            [want(&format!("r{v}/x"), "hello", 1, true)],
            "v{v}"
        );

        // Wills: one client leaves by destroying its socket (its will goes out), the
        // other with DISCONNECT (its will is discarded).
        let mut watcher = Js::start(json!({
            "url": t.url("ws"), "id": t.id_on(0, &format!("js-ww{v}")), "version": v,
            "subscribe": [{"filter": format!("will{v}/#"), "qos": 1}],
            "expect": 1, "quiet_ms": 500,
        }));
        watcher.connack();
        watcher.suback();
        for (id, end) in [("js-wa", "disconnect"), ("js-wb", "close")] {
            let mut c = Js::start(json!({
                "url": url, "id": t.id_on(1, &format!("{id}{v}")), "version": v,
                "will": {"topic": format!("will{v}/{end}"), "payload": "gone", "qos": 1,
                         "retain": false},
                "end": end,
            }));
            c.connack();
            c.done();
        }
        let (got, _) = watcher.done();
        assert_eq!(
            briefs(&got),
            [want(&format!("will{v}/close"), "gone", 1, false)],
            "v{v}"
        );

        // A persistent session (5.0: clean start 0 and a session expiry) keeps its
        // subscription and queues QoS 1 while its client is away.
        let id = t.id_on(1, &format!("js-ps{v}"));
        let mut session = json!({"url": url, "id": id, "version": v, "clean": false});
        if v == 5 {
            session["connect_properties"] = json!({"sessionExpiryInterval": 300});
        }
        let mut first = session.clone();
        first["subscribe"] = json!([{"filter": format!("p{v}/#"), "qos": 1}]);
        let mut c = Js::start(first);
        c.connack();
        assert_eq!(c.suback(), [1]);
        c.done();
        publish(
            &t.url("ws"),
            &t.id_on(0, &format!("js-pp{v}")),
            v,
            json!([
                {"topic": format!("p{v}/a"), "payload": "while away 1", "qos": 1},
                {"topic": format!("p{v}/a"), "payload": "while away 2", "qos": 1},
            ]),
        );
        let mut back = session.clone();
        back["expect"] = json!(2);
        back["quiet_ms"] = json!(300);
        let mut c = Js::start(back);
        // 3.1's CONNACK has no session present flag.
        assert_eq!(c.connack()["session_present"], v > 3, "v{v}");
        let (got, _) = c.done();
        assert_eq!(
            briefs(&got),
            [
                want(&format!("p{v}/a"), "while away 1", 1, false),
                want(&format!("p{v}/a"), "while away 2", 1, false),
            ],
            "v{v}"
        );
    }
}

/// 5.0: an assigned client id, topic aliases both ways (MQTT.js assigns its own when the
/// broker allows them; the broker uses the subscriber's), publication properties carried
/// to the subscriber, a subscription identifier, No Local, and a will sent on request by a
/// DISCONNECT with reason 0x04.
#[test]
fn mqttjs_v5_properties_topic_aliases_no_local_and_assigned_ids() {
    let t = Target::start(vec![]);
    let url = t.url("tcp");
    let mut sub = Js::start(json!({
        "url": t.url("ws"), "id": t.id_on(0, "js-v5s"), "version": 5,
        "connect_properties": {"topicAliasMaximum": 5},
        "subscribe": [{"filter": "v5/#", "qos": 1}],
        "subscribe_properties": {"subscriptionIdentifier": 7},
        "expect": 4, "quiet_ms": 300,
    }));
    sub.connack();
    assert_eq!(sub.suback(), [1]);

    let props = json!({
        "userProperties": {"site": "north", "unit": "7"},
        "contentType": "text/plain",
        "responseTopic": "reply/here",
        "correlationData": "req-1",
        "messageExpiryInterval": 100,
        "payloadFormatIndicator": true,
    });
    let mut p = Js::start(json!({
        "url": url, "id": "", "version": 5, "auto_topic_alias": true,
        "publish": [
            {"topic": "v5/a", "payload": "one", "qos": 1, "properties": props},
            {"topic": "v5/a", "payload": "two", "qos": 1},
            {"topic": "v5/a", "payload": "three", "qos": 0},
        ],
    }));
    let ack = p.connack();
    let assigned = ack["properties"]["assignedClientIdentifier"]
        .as_str()
        .expect("an assigned client id for an empty one");
    assert!(!assigned.is_empty());
    assert!(
        ack["properties"]["topicAliasMaximum"].as_u64().unwrap() > 0,
        "{ack}"
    );
    assert_eq!(p.done().1, 3);

    // No Local: a client subscribed to its own topic with nl does not get its message
    // back; the other subscriber does.
    let mut nl = Js::start(json!({
        "url": url, "id": t.id_on(1, "js-v5nl"), "version": 5,
        "subscribe": [{"filter": "v5/#", "qos": 1, "nl": true}],
        "publish": [{"topic": "v5/own", "payload": "mine", "qos": 1}],
        "quiet_ms": 500,
    }));
    nl.connack();
    let (own, _) = nl.done();
    assert!(own.is_empty(), "No Local delivered {own:?}");

    let (got, _) = sub.done();
    assert_eq!(
        briefs(&got),
        [
            want("v5/a", "one", 1, false),
            want("v5/a", "two", 1, false),
            want("v5/a", "three", 0, false),
            want("v5/own", "mine", 1, false),
        ]
    );
    let first = &got[0]["properties"];
    assert_eq!(
        first["userProperties"],
        json!({"site": "north", "unit": "7"})
    );
    assert_eq!(first["contentType"], "text/plain");
    assert_eq!(first["responseTopic"], "reply/here");
    assert_eq!(first["correlationData"], "req-1");
    assert_eq!(first["payloadFormatIndicator"], true);
    let left = first["messageExpiryInterval"].as_u64().unwrap();
    assert!((90..=100).contains(&left), "expiry left {left}");
    // Every delivery names the subscription and carries the alias the broker set up for
    // its topic (MQTT.js resolved the topics above through them): one per topic.
    for (m, alias) in got.iter().zip([1, 1, 1, 2]) {
        assert_eq!(m["properties"]["subscriptionIdentifier"], 7, "{m}");
        assert_eq!(m["properties"]["topicAlias"], alias, "{m}");
    }
    assert!(got[1]["properties"].get("userProperties").is_none());

    // DISCONNECT with reason 0x04 asks for the will.
    let mut watcher = Js::start(json!({
        "url": url, "id": t.id_on(1, "js-v5w"), "version": 5,
        "subscribe": [{"filter": "v5will/#", "qos": 1}], "expect": 1, "quiet_ms": 300,
    }));
    watcher.connack();
    watcher.suback();
    let mut c = Js::start(json!({
        "url": t.url("ws"), "id": t.id_on(0, "js-v5wc"), "version": 5,
        "will": {"topic": "v5will/x", "payload": "asked for", "qos": 1, "retain": false,
                 "properties": {"contentType": "text/plain"}},
        "end": "disconnect_with_will",
    }));
    c.connack();
    c.done();
    let (got, _) = watcher.done();
    assert_eq!(briefs(&got), [want("v5will/x", "asked for", 1, false)]);
    assert_eq!(got[0]["properties"]["contentType"], "text/plain");
}

/// MQTT.js over TLS (`mqtts://`) and WSS trusting a CA made for the test, in 3.1.1 and 5.0.
#[test]
fn mqttjs_over_tls_and_wss() {
    let dir = client_env::TempDir::new("mqttjs-tls");
    test_ca::write_localhost_ca(&dir.path, "MQTT.js");
    let tls = |protocol: ListenerProtocol| Listener {
        address: Some("127.0.0.1:0".parse().unwrap()),
        protocol,
        http_path: "/mqtt".into(),
        certfile: Some(dir.path.join("server.pem")),
        keyfile: Some(dir.path.join("server.key")),
        ..Listener::default()
    };
    let t = Target::start(vec![
        tls(ListenerProtocol::Mqtt),
        tls(ListenerProtocol::Websockets),
    ]);
    let addrs = t.broker.handle.as_ref().unwrap().local_addrs();
    let ca_file = dir.path.join("ca.pem");
    for version in [4, 5] {
        for (shard, url) in [
            (0, format!("mqtts://127.0.0.1:{}", addrs[2].port())),
            (1, format!("wss://127.0.0.1:{}/mqtt", addrs[3].port())),
        ] {
            let topic = format!("tls{version}/{shard}");
            let mut c = Js::start(json!({
                "url": url, "id": t.id_on(shard, &format!("js-tls{version}")),
                "version": version, "ca": ca_file, "servername": "localhost",
                "subscribe": [{"filter": topic, "qos": 1}],
                "publish": [{"topic": topic, "payload": "secret", "qos": 1}],
                "expect": 1,
            }));
            c.connack();
            let (got, _) = c.done();
            assert_eq!(briefs(&got), [want(&topic, "secret", 1, false)], "{url}");
        }
    }
}
