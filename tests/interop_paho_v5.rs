//! Interoperability with Eclipse Paho's Python client (paho-mqtt 2.x) speaking MQTT 5.0,
//! against an in-process two-shard broker: CONNACK properties as paho reads them, a
//! publish with properties reaching a subscriber with its user properties in order and its
//! Message Expiry Interval counted down, No Local, PUBACK reason codes (0x10 with no
//! subscriber), Session Expiry Interval keeping a session for a reconnect, and a share
//! group of two paho clients with their own Subscription Identifiers.
//!
//! One Python script ([`SCRIPT`]) runs the whole exchange with two paho clients (on
//! different shards) and prints one JSON object per event; the test asserts on them.

mod common;
#[path = "common/subprocess.rs"]
mod subprocess;

use std::process::Command;
use std::time::Duration;

use common::Broker;
use subprocess::spawn;

const HINT: &str = "python3 with paho-mqtt 2.x is required: `pip install 'paho-mqtt>=2,<3'`";

const SCRIPT: &str = r#"
import json, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

port, sub_id, pub_id = int(sys.argv[1]), sys.argv[2], sys.argv[3]
events = []
lock = threading.Lock()
def out(**kw):
    with lock:
        print(json.dumps(kw), flush=True)

def client(cid, expiry):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    got = {"connack": threading.Event(), "suback": threading.Event(), "acks": {}, "msgs": []}
    def on_connect(cl, ud, flags, rc, props):
        out(event="connack", id=cid, rc=rc.value, present=flags.session_present,
            topic_alias_max=getattr(props, "TopicAliasMaximum", None),
            max_packet=getattr(props, "MaximumPacketSize", None))
        got["connack"].set()
    def on_subscribe(cl, ud, mid, rcs, props):
        out(event="suback", id=cid, codes=[r.value for r in rcs])
        got["suback"].set()
    def on_publish(cl, ud, mid, rc, props):
        got["acks"][mid] = rc.value
    def on_message(cl, ud, m):
        p = m.properties
        out(event="message", id=cid, topic=m.topic, payload=m.payload.decode(),
            user=getattr(p, "UserProperty", None), content_type=getattr(p, "ContentType", None),
            expiry=getattr(p, "MessageExpiryInterval", None))
        got["msgs"].append(m.topic)
    c.on_connect, c.on_subscribe, c.on_publish, c.on_message = on_connect, on_subscribe, on_publish, on_message
    cp = Properties(PacketTypes.CONNECT)
    cp.SessionExpiryInterval = expiry
    c.connect("127.0.0.1", port, keepalive=60, clean_start=True, properties=cp)
    c.loop_start()
    assert got["connack"].wait(10)
    return c, got

def publish(c, got, topic, payload, props=None):
    info = c.publish(topic, payload, qos=1, properties=props)
    info.wait_for_publish(10)
    for _ in range(100):
        if info.mid in got["acks"]:
            return got["acks"][info.mid]
        time.sleep(0.02)
    return None

sub, sg = client(sub_id, 300)
sub.subscribe([("p5/#", SubscribeOptions(qos=1, noLocal=True))])
assert sg["suback"].wait(10)
pub, pg = client(pub_id, 0)
out(event="ack", what="nobody", rc=publish(pub, pg, "nobody/here", "x"))
props = Properties(PacketTypes.PUBLISH)
props.UserProperty = [("a", "1"), ("b", "2"), ("a", "3")]
props.ContentType = "text/plain"
props.MessageExpiryInterval = 60
out(event="ack", what="subscribed", rc=publish(pub, pg, "p5/t", "hello", props))
# No Local: the subscriber's own message does not come back to it.
publish(sub, sg, "p5/own", "mine")
publish(pub, pg, "p5/after", "after")
for _ in range(200):
    if "p5/after" in sg["msgs"]:
        break
    time.sleep(0.02)
time.sleep(0.2)
pub.disconnect(); pub.loop_stop()
sub.disconnect(); sub.loop_stop()
# The subscriber's session (expiry 300) is kept: a reconnect without clean start finds it.
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sub_id, protocol=mqtt.MQTTv5)
done = threading.Event()
def on_connect(cl, ud, flags, rc, p):
    out(event="reconnect", present=flags.session_present, rc=rc.value)
    done.set()
c.on_connect = on_connect
cp = Properties(PacketTypes.CONNECT)
cp.SessionExpiryInterval = 300
c.connect("127.0.0.1", port, keepalive=60, clean_start=False, properties=cp)
c.loop_start()
assert done.wait(10)
c.disconnect(); c.loop_stop()
out(event="done")
"#;

#[test]
fn paho_v5_properties_no_local_reason_codes_and_session_expiry() {
    let check = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status();
    assert!(matches!(check, Ok(s) if s.success()), "{HINT}");
    let b = Broker::start(2);
    let sub_id = b.id_on(0, "paho5-sub");
    let pub_id = b.id_on(1, "paho5-pub");
    let mut p = spawn(
        Command::new("python3").args(["-c", SCRIPT, &b.addr.port().to_string(), &sub_id, &pub_id]),
        "paho v5 script",
        HINT,
        None,
    );
    let lines = p.wait_success(Duration::from_secs(60));
    let text = lines.join("\n");
    let has = |s: &str| lines.iter().any(|l| l.contains(s));
    assert!(has(r#""event": "done""#), "{text}");
    // CONNACK as paho reads it.
    assert!(has(r#""topic_alias_max": 10"#), "{text}");
    assert!(has(r#""max_packet": 1048576"#), "{text}");
    assert!(has(r#""codes": [1]"#), "SUBACK granted QoS 1: {text}");
    // PUBACK 0x10 (16) with no subscriber, 0 with one.
    assert!(has(r#""what": "nobody", "rc": 16"#), "{text}");
    assert!(has(r#""what": "subscribed", "rc": 0"#), "{text}");
    // The message with its properties, user properties in order, expiry counted down.
    let hello = lines
        .iter()
        .find(|l| l.contains(r#""payload": "hello""#))
        .unwrap_or_else(|| panic!("no hello: {text}"));
    assert!(
        hello.contains(r#""user": [["a", "1"], ["b", "2"], ["a", "3"]]"#),
        "{hello}"
    );
    assert!(hello.contains(r#""content_type": "text/plain""#), "{hello}");
    assert!(
        hello.contains(r#""expiry": 60"#) || hello.contains(r#""expiry": 59"#),
        "{hello}"
    );
    // No Local: "mine" never came back; "after" did.
    assert!(!has(r#""payload": "mine""#), "{text}");
    assert!(has(r#""payload": "after""#), "{text}");
    // Session kept for its expiry interval.
    assert!(has(r#""event": "reconnect", "present": true"#), "{text}");
}

const SHARED_SCRIPT: &str = r#"
import json, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

port, ids = int(sys.argv[1]), sys.argv[2:5]
def out(**kw):
    print(json.dumps(kw), flush=True)

def client(cid):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    got = {"connack": threading.Event(), "suback": threading.Event(), "msgs": [], "subids": set()}
    def on_connect(cl, ud, flags, rc, props):
        got["connack"].set()
    def on_subscribe(cl, ud, mid, rcs, props):
        got["suback"].set()
    def on_message(cl, ud, m):
        got["msgs"].append(m.payload.decode())
        for s in getattr(m.properties, "SubscriptionIdentifier", []) or []:
            got["subids"].add(s)
    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", port, keepalive=60, clean_start=True)
    c.loop_start()
    assert got["connack"].wait(10)
    return c, got

members = []
for i, cid in enumerate(ids[:2]):
    c, g = client(cid)
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 5 + i
    c.subscribe([("$share/g/ps5/#", SubscribeOptions(qos=1))], properties=sp)
    assert g["suback"].wait(10)
    members.append((cid, c, g))
p, pg = client(ids[2])
for i in range(20):
    p.publish("ps5/x", str(i), qos=1).wait_for_publish(10)
for _ in range(250):
    if sum(len(g["msgs"]) for _, _, g in members) >= 20:
        break
    time.sleep(0.02)
time.sleep(0.3)
for cid, c, g in members:
    out(event="member", id=cid, msgs=g["msgs"], subids=sorted(g["subids"]))
    c.disconnect(); c.loop_stop()
p.disconnect(); p.loop_stop()
out(event="done")
"#;

/// Two paho clients in one share group, on different shards, each with its own
/// Subscription Identifier: every message reaches exactly one of them, with that
/// member's identifier.
#[test]
fn paho_v5_shared_subscription_with_identifiers() {
    let check = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status();
    assert!(matches!(check, Ok(s) if s.success()), "{HINT}");
    let b = Broker::start(2);
    let ids = [
        b.id_on(0, "paho5-ga"),
        b.id_on(1, "paho5-gb"),
        b.id_on(1, "paho5-gp"),
    ];
    let port = b.addr.port().to_string();
    let mut p = spawn(
        Command::new("python3").args(["-c", SHARED_SCRIPT, &port, &ids[0], &ids[1], &ids[2]]),
        "paho v5 shared script",
        HINT,
        None,
    );
    let lines = p.wait_success(Duration::from_secs(60));
    let text = lines.join("\n");
    let mut all: Vec<u32> = Vec::new();
    for (i, id) in ids[..2].iter().enumerate() {
        let line = lines
            .iter()
            .find(|l| l.contains(r#""event": "member""#) && l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no line for {id}: {text}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let msgs: Vec<u32> = v["msgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().parse().unwrap())
            .collect();
        assert!(!msgs.is_empty(), "each member gets a share: {text}");
        assert_eq!(v["subids"], serde_json::json!([5 + i]), "{text}");
        all.extend(msgs);
    }
    all.sort();
    assert_eq!(
        all,
        (0..20).collect::<Vec<_>>(),
        "each message once: {text}"
    );
}
