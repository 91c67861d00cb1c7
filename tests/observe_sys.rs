//! The `$SYS` tree, read with `mosquitto_sub -t '$SYS/#'` (3.1, 3.1.1 and 5.0) from a
//! broker with two shards and clients on both: its values follow known traffic exactly
//! (packets and bytes each way, publishes, clients, subscriptions, retained messages),
//! per shard too; `$SYS` is read-only for clients of every version, `#` does not match it,
//! and its retained values are not persisted.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fn sys_broker(tweak: impl FnOnce(&mut Config)) -> Broker {
    Broker::with(2, |c: &mut Config| {
        c.sys_interval = 1;
        tweak(c);
    })
}

/// The retained `$SYS` values `mosquitto_sub` gets on subscribing (topic -> payload).
fn read_sys(b: &Broker, version: &str) -> HashMap<String, String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.addr.port().to_string()])
        .args(["-V", version, "-t", "$SYS/#", "--retained-only", "-W", "3"])
        .args(["-F", "%t=>%p"])
        .output()
        .expect("mosquitto_sub is required: apt-get install mosquitto-clients");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut values = HashMap::new();
    for line in text.lines() {
        if let Some((topic, value)) = line.split_once("=>") {
            // The first value of a topic is the retained one (a later tick's comes live).
            values
                .entry(topic.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    assert!(
        !values.is_empty(),
        "no $SYS values: {text:?} {:?}",
        out.stderr
    );
    values
}

fn num(values: &HashMap<String, String>, topic: &str) -> u64 {
    let v = values
        .get(&format!("$SYS/broker/{topic}"))
        .unwrap_or_else(|| panic!("no $SYS/broker/{topic}"));
    v.parse().unwrap_or_else(|_| panic!("{topic}: {v}"))
}

/// A raw client that counts the bytes of what it sends and receives (3.1.1: encodings are
/// deterministic, so a received packet encoded again has its length on the wire).
struct Counted {
    c: Raw,
    sent: u64,
    received: u64,
}

impl Counted {
    fn open(b: &Broker) -> Counted {
        Counted {
            c: b.raw(ProtocolVersion::V3_1_1),
            sent: 0,
            received: 0,
        }
    }

    /// Opened and connected (CONNECT and CONNACK counted).
    fn connected(b: &Broker, id: &str, clean: bool) -> Counted {
        let mut c = Counted::open(b);
        let v = ProtocolVersion::V3_1_1;
        c.send(&Packet::Connect(Box::new(connect_packet(
            v, id, clean, 0, None,
        ))));
        assert!(matches!(c.recv(), Packet::ConnAck(_)));
        c
    }

    fn send(&mut self, p: &Packet) {
        self.sent += len(p);
        self.c.send(p);
    }

    fn recv(&mut self) -> Packet {
        let p = self.c.recv();
        self.received += len(&p);
        p
    }
}

fn len(p: &Packet) -> u64 {
    let mut b = BytesMut::new();
    p.encode(ProtocolVersion::V3_1_1, &mut b).unwrap();
    b.len() as u64
}

fn publish(topic: &str, payload: &'static [u8], qos: QoS, id: Option<u16>, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).unwrap(),
        packet_id: id.map(pid),
        properties: Properties::new(),
        payload: bytes::Bytes::from_static(payload),
    })
}

fn subscribe(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(filter).unwrap(),
            options: SubscriptionOptions::new(QoS::AtLeastOnce),
        }],
        properties: Properties::new(),
    })
}

#[test]
fn sys_values_follow_known_traffic_exactly() {
    let b = sys_broker(|_| {});
    // A subscriber on shard 0, a publisher on shard 1, a persistent client that leaves.
    let mut sub = Counted::connected(&b, &b.id_on(0, "sub"), true);
    sub.send(&subscribe("t/#"));
    assert!(matches!(sub.recv(), Packet::SubAck(_)));
    let mut publisher = Counted::connected(&b, &b.id_on(1, "pub"), true);
    let mut away = Counted::connected(&b, &b.id_on(1, "away"), false);
    away.send(&subscribe("o/#"));
    assert!(matches!(away.recv(), Packet::SubAck(_)));
    away.send(&Packet::Disconnect(Disconnect::default()));
    // 7 QoS 1 messages delivered, 2 retained ones nobody subscribes to.
    for i in 1..=7 {
        publisher.send(&publish("t/x", b"hello", QoS::AtLeastOnce, Some(i), false));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        match sub.recv() {
            Packet::Publish(p) => sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap()))),
            other => panic!("{other:?}"),
        }
    }
    publisher.send(&publish("r/1", b"retained", QoS::AtMostOnce, None, true));
    publisher.send(&publish("r/2", b"retained", QoS::AtMostOnce, None, true));
    publisher.c.ping();
    publisher.sent += 2;
    publisher.received += 2;
    // Two ticks later the tree has all of it.
    std::thread::sleep(Duration::from_millis(2500));
    let clients = [&sub, &publisher, &away];
    let sent: u64 = clients.iter().map(|c| c.sent).sum();
    let received: u64 = clients.iter().map(|c| c.received).sum();
    // CONNECT x3, SUBSCRIBE x2, PUBLISH x9, PUBACK x7, PINGREQ, DISCONNECT.
    let packets_in = 3 + 2 + 9 + 7 + 1 + 1;
    // CONNACK x3, SUBACK x2, PUBACK x7, PUBLISH x7, PINGRESP.
    let packets_out = 3 + 2 + 7 + 7 + 1;
    for (i, version) in ["mqttv31", "mqttv311", "mqttv5"].into_iter().enumerate() {
        if i > 0 {
            // A tick after the earlier reader left (it leaves on a tick's message).
            std::thread::sleep(Duration::from_millis(1500));
        }
        let v = read_sys(&b, version);
        // Nothing a reader does (connect, subscribe, get the tree) touches these.
        assert_eq!(num(&v, "publish/messages/received"), 9, "{version}");
        assert_eq!(num(&v, "publish/bytes/received"), 7 * 5 + 2 * 8);
        assert_eq!(num(&v, "publish/messages/dropped"), 0);
        let sys_topics = v.len() as u64;
        assert_eq!(num(&v, "retained messages/count"), 2 + sys_topics, "{v:?}");
        assert_eq!(num(&v, "clients/expired"), 0);
        assert_eq!(num(&v, "clients/disconnected"), 1, "{version}");
        assert!(v["$SYS/broker/version"].starts_with("surgemq version "));
        assert!(v["$SYS/broker/uptime"].ends_with(" seconds"));
        // This reader is in the values only if a tick fell between its CONNECT and its
        // SUBSCRIBE: then one client and one packet each way more.
        let connected = num(&v, "clients/connected");
        assert!(connected == 2 || connected == 3, "{version}: {connected}");
        let reader = connected - 2;
        assert_eq!(num(&v, "clients/total"), 3 + reader);
        assert_eq!(
            num(&v, "shards/0/sessions") + num(&v, "shards/1/sessions"),
            3 + reader
        );
        assert_eq!(
            num(&v, "shards/0/subscriptions") + num(&v, "shards/1/subscriptions"),
            2,
            "{version}: {v:?}"
        );
        if i > 0 {
            // Earlier readers came and went: their packets and the $SYS messages they got
            // are in the rest.
            assert!(num(&v, "messages/received") > packets_in);
            assert!(num(&v, "publish/messages/sent") > 7);
            continue;
        }
        // The first reader: every packet and byte each way is known.
        assert_eq!(num(&v, "messages/received"), packets_in + reader);
        assert_eq!(num(&v, "messages/sent"), packets_out + reader);
        assert_eq!(num(&v, "publish/messages/sent"), 7);
        assert_eq!(num(&v, "publish/bytes/sent"), 7 * 5);
        assert_eq!(num(&v, "subscriptions/count"), 2);
        if reader == 0 {
            assert_eq!(num(&v, "bytes/received"), sent);
            assert_eq!(num(&v, "bytes/sent"), received);
        }
    }
    // More traffic: the counters follow.
    for i in 1..=5 {
        publisher.send(&publish("t/y", b"again", QoS::AtLeastOnce, Some(i), false));
        assert!(matches!(publisher.recv(), Packet::PubAck(_)));
        match sub.recv() {
            Packet::Publish(p) => sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap()))),
            other => panic!("{other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(2500));
    let v = read_sys(&b, "mqttv311");
    assert_eq!(num(&v, "publish/messages/received"), 14);
    assert_eq!(num(&v, "publish/bytes/received"), 12 * 5 + 2 * 8);
}

#[test]
fn clients_never_publish_to_sys_and_wildcards_do_not_match_it() {
    let b = sys_broker(|_| {});
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            let mut all = b.client(v, &b.id_on(shard, &format!("all{tag}")), true);
            all.subscribe(
                1,
                &[("#", QoS::AtMostOnce), ("+/broker/uptime", QoS::AtMostOnce)],
            );
            let mut sys = b.client(v, &b.id_on(1 - shard, &format!("sys{tag}")), true);
            sys.subscribe(1, &[("$SYS/broker/uptime", QoS::AtMostOnce)]);
            // The retained value at once, then one a tick.
            let got = sys.recv_publish();
            assert_eq!(got.topic.as_str(), "$SYS/broker/uptime");
            assert!(got.retain, "{tag}");
            // A client's PUBLISH to $SYS is not routed: 5.0 says so, 3.x is acknowledged.
            let mut p = b.client(v, &b.id_on(shard, &format!("p{tag}")), true);
            p.publish(
                "$SYS/broker/uptime",
                b"forged",
                QoS::AtLeastOnce,
                true,
                Some(3),
            );
            let mut want = Ack::new(pid(3));
            if v.is_v5() {
                want.reason = ReasonCode::NOT_AUTHORIZED;
            }
            assert_eq!(p.recv(), Packet::PubAck(want), "{tag}");
            let live = sys.recv_publish();
            assert_ne!(&live.payload[..], b"forged", "{tag}");
            assert!(live.payload.ends_with(b" seconds"));
            // Nor the bare `$SYS` topic, nor (5.0) through a topic alias.
            p.publish("$SYS", b"forged", QoS::AtLeastOnce, true, Some(4));
            let mut want = Ack::new(pid(4));
            if v.is_v5() {
                want.reason = ReasonCode::NOT_AUTHORIZED;
                assert_eq!(p.recv(), Packet::PubAck(want));
                for (topic, id) in [("$SYS/broker/uptime", 5), ("", 6)] {
                    p.send(&aliased(topic, id));
                    let mut want = Ack::new(pid(id));
                    want.reason = ReasonCode::NOT_AUTHORIZED;
                    assert_eq!(p.recv(), Packet::PubAck(want), "alias {topic:?}");
                }
            } else {
                assert_eq!(p.recv(), Packet::PubAck(want));
            }
            // What a new subscriber gets is still the broker's value.
            let mut late = b.client(v, &b.id_on(shard, &format!("l{tag}")), true);
            late.subscribe(
                1,
                &[
                    ("$SYS/broker/uptime", QoS::AtMostOnce),
                    ("$SYS", QoS::AtMostOnce),
                ],
            );
            let got = late.recv_publish();
            assert!(got.payload.ends_with(b" seconds"), "{tag}: {got:?}");
            all.expect_nothing();
            // A will on $SYS is refused with the CONNECT.
            let mut w = b.raw(v);
            let c = connect_packet(
                v,
                &format!("w{tag}"),
                true,
                0,
                Some(will_msg(
                    "$SYS/broker/uptime",
                    b"gone",
                    QoS::AtMostOnce,
                    true,
                )),
            );
            if v.is_v5() {
                assert_eq!(w.connect_with(c).reason, ReasonCode::NOT_AUTHORIZED);
            } else {
                assert_eq!(w.connect_raw_ack(c)[3], 0x05, "{tag}");
            }
        }
    }
}

/// A QoS 1 PUBLISH (retained) whose topic alias is 1, with `topic` (empty: the alias
/// alone).
fn aliased(topic: &str, id: u16) -> Packet {
    let mut properties = Properties::new();
    properties.get_mut().topic_alias = Some(1);
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: if topic.is_empty() {
            TopicName::empty()
        } else {
            TopicName::new(topic).unwrap()
        },
        packet_id: Some(pid(id)),
        properties,
        payload: bytes::Bytes::from_static(b"forged"),
    })
}

#[test]
fn sys_values_do_not_take_the_clients_retained_room() {
    // Room for 2 retained messages per shard; `$SYS` stores dozens besides.
    let b = sys_broker(|c| c.limits.retained_max_messages = 4);
    let v = ProtocolVersion::V3_1_1;
    let mut sys = b.client(v, "sys", true);
    sys.subscribe(1, &[("$SYS/broker/uptime", QoS::AtMostOnce)]);
    sys.recv_publish();
    let mut p = b.client(v, "p", true);
    let topics: Vec<String> = (0..2)
        .flat_map(|shard| (0..2).map(move |i| topic_on(shard, 2, &format!("mine{i}/"))))
        .collect();
    for (i, t) in topics.iter().enumerate() {
        p.publish_acked(t, b"kept", QoS::AtLeastOnce, true, i as u16 + 1);
    }
    let mut c = b.client(v, "c", true);
    c.subscribe(1, &[("+/+", QoS::AtMostOnce)]);
    let mut got: Vec<String> = (0..4)
        .map(|_| c.recv_publish().topic.as_str().to_owned())
        .collect();
    got.sort();
    let mut want = topics.clone();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn one_shard_publishes_its_tree_too() {
    let b = Broker::with(1, |c: &mut Config| c.sys_interval = 1);
    let v = ProtocolVersion::V5;
    let mut p = b.client(v, "p", true);
    p.publish_acked("a", b"x", QoS::AtLeastOnce, false, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = b.client(v, "c", true);
    c.subscribe(
        1,
        &[
            ("$SYS/broker/publish/messages/received", QoS::AtMostOnce),
            ("$SYS/broker/shards/+/sessions", QoS::AtMostOnce),
        ],
    );
    let mut got = HashMap::new();
    for _ in 0..2 {
        let m = c.recv_publish();
        got.insert(m.topic.as_str().to_owned(), m.payload.to_vec());
    }
    assert_eq!(got["$SYS/broker/publish/messages/received"], b"1");
    assert_eq!(got["$SYS/broker/shards/0/sessions"], b"1");
}

#[test]
fn sys_values_are_not_persisted() {
    let data = client_env::TempDir::new("sys-data");
    let dir = data.path.clone();
    {
        let b = sys_broker(|c| {
            persist_sync(c, &dir);
        });
        let mut c = b.client(ProtocolVersion::V3_1_1, "keep", true);
        c.publish_acked("kept/r", b"mine", QoS::AtLeastOnce, true, 1);
        let mut sys = b.client(ProtocolVersion::V3_1_1, "sys", true);
        sys.subscribe(1, &[("$SYS/broker/uptime", QoS::AtMostOnce)]);
        sys.recv_publish();
    }
    // Restarted without $SYS: the client's retained message is back, no $SYS value is.
    let b = Broker::with(2, |c: &mut Config| {
        c.sys_interval = 0;
        persist_sync(c, &dir);
    });
    let mut c = b.client(ProtocolVersion::V3_1_1, "look", true);
    c.subscribe(
        1,
        &[("kept/#", QoS::AtMostOnce), ("$SYS/#", QoS::AtMostOnce)],
    );
    let got = c.recv_publish();
    assert_eq!(got.topic.as_str(), "kept/r");
    c.expect_nothing();
}
