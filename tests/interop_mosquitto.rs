//! Interoperability with the Eclipse Mosquitto command-line clients (`mosquitto_pub`,
//! `mosquitto_sub`, Debian package mosquitto-clients) run as subprocesses against an
//! in-process two-shard broker, in MQTT 3.1.1 (`-V mqttv311`), 3.1 (`-V mqttv31`) and 5.0
//! (`-V mqttv5`: properties with `-D`, subscription identifiers, shared subscriptions,
//! session expiry).
//!
//! The clients run with `-d`, whose debug lines show the packets they exchange
//! (`Client ID received SUBACK`, `Client ID received PUBLISH (d0, q1, r0, m1, 'x/y', ...)`),
//! so a test waits for SUBACK before publishing and asserts the DUP/QoS/RETAIN flags of
//! every delivery as well as the topic and payload printed by `-v` or `-F`.
//!
//! A missing program fails the test with what to install; every process is bounded by a
//! timeout and killed when its handle drops.

mod common;
#[path = "common/subprocess.rs"]
mod subprocess;

use std::process::Command;
use std::time::Duration;

use common::Broker;
use subprocess::{spawn, Proc};

const HINT: &str = "the mosquitto command-line clients are required: install the \
                    Debian/Ubuntu package mosquitto-clients (`apt-get install mosquitto-clients`)";
/// Longest wait for any one step of a subprocess.
const T: Duration = Duration::from_secs(15);
/// `-F` format: RETAIN flag, QoS, topic, payload.
const FMT: &str = "%r %q %t %p";

const V311: &str = "mqttv311";
const V31: &str = "mqttv31";
const V5: &str = "mqttv5";

fn short(v: &str) -> &'static str {
    match v {
        V311 => "4",
        V31 => "3",
        V5 => "5",
        _ => unreachable!(),
    }
}

/// Fails the test, saying what to install, unless both programs can be started.
fn require_clients() {
    static CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CHECKED.get_or_init(|| {
        for program in ["mosquitto_pub", "mosquitto_sub", "stdbuf"] {
            let hint = if program == "stdbuf" {
                "stdbuf (GNU coreutils) is required to line-buffer the clients' output"
            } else {
                HINT
            };
            match Command::new(program).arg("--help").output() {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    panic!("`{program}` is not installed (not found on PATH): {hint}")
                }
                Err(e) => panic!("cannot run `{program}`: {e}"),
            }
        }
    });
}

/// `program` (run under `stdbuf -oL`: with stdout a pipe, the clients would otherwise
/// hold their debug lines in a block buffer until exit) connecting to the broker as `id`.
fn command(b: &Broker, program: &str, id: &str, version: &str) -> Command {
    require_clients();
    let mut c = Command::new("stdbuf");
    c.args(["-oL", program, "-h", "127.0.0.1", "-p"])
        .arg(b.addr.port().to_string())
        .args(["-i", id, "-V", version, "-d"]);
    c
}

/// A `mosquitto_sub` with `-d`, a 30 s self-timeout (`-W`) and `args`.
fn sub(b: &Broker, id: &str, version: &str, args: &[&str]) -> Proc {
    let mut c = command(b, "mosquitto_sub", id, version);
    c.args(["-W", "30"]).args(args);
    spawn(&mut c, &format!("mosquitto_sub {id}"), HINT, None)
}

/// Runs `mosquitto_pub` with `-d` and `args` (and `stdin` for `-l`) to successful exit;
/// returns its output lines.
fn publish(b: &Broker, id: &str, version: &str, args: &[&str], stdin: Option<&str>) -> Vec<String> {
    let mut c = command(b, "mosquitto_pub", id, version);
    c.args(args);
    let mut p = spawn(
        &mut c,
        &format!("mosquitto_pub {id}"),
        HINT,
        stdin.map(str::as_bytes),
    );
    p.wait_success(T)
}

/// Waits for SUBACK and returns the granted QoS values mosquitto_sub prints
/// (`Subscribed (mid: 1): 2`).
fn wait_subscribed(p: &mut Proc) -> String {
    p.wait_line("SUBACK", T, |l| l.ends_with(" received SUBACK"));
    let line = p.wait_line("granted QoS", T, |l| l.starts_with("Subscribed (mid:"));
    line.rsplit("): ").next().unwrap().to_owned()
}

/// The flags and topic of one PUBLISH received by a client, from its `-d` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flags {
    dup: u8,
    qos: u8,
    retain: u8,
    topic: String,
}

fn flags(dup: u8, qos: u8, retain: u8, topic: &str) -> Flags {
    Flags {
        dup,
        qos,
        retain,
        topic: topic.to_owned(),
    }
}

/// Every `received PUBLISH (d0, q1, r0, m1, 'x/y', ... (N bytes))` line, parsed.
fn received_publishes(lines: &[String]) -> Vec<Flags> {
    lines
        .iter()
        .filter_map(|l| l.split_once(" received PUBLISH (").map(|(_, rest)| rest))
        .map(|rest| {
            let parts: Vec<&str> = rest.splitn(5, ", ").collect();
            let num = |s: &str, prefix: char| -> u8 {
                s.strip_prefix(prefix)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("bad PUBLISH debug line: {rest}"))
            };
            let topic = parts[4]
                .split("', ")
                .next()
                .unwrap()
                .trim_start_matches('\'');
            flags(
                num(parts[0], 'd'),
                num(parts[1], 'q'),
                num(parts[2], 'r'),
                topic,
            )
        })
        .collect()
}

/// The message lines (`-v` / `-F` output), without the debug lines.
fn messages(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid:"))
        .cloned()
        .collect()
}

fn count(lines: &[String], what: &str) -> usize {
    lines.iter().filter(|l| l.contains(what)).count()
}

/// N messages at `qos` from a publisher on shard 1 to a subscriber on shard 0 (and the
/// other way round), checked for order, payload and flags on both sides.
fn pubsub(version: &str, qos: u8) {
    let b = Broker::start(2);
    let n = 10;
    for (sub_shard, pub_shard) in [(0, 1), (1, 0)] {
        let tag = format!("{}{}{}", short(version), qos, sub_shard);
        let sub_id = b.id_on(sub_shard, &format!("ms{tag}"));
        let pub_id = b.id_on(pub_shard, &format!("mp{tag}"));
        let topic = format!("x/{tag}");
        let mut s = sub(
            &b,
            &sub_id,
            version,
            &["-t", "x/#", "-q", "2", "-C", &n.to_string(), "-v"],
        );
        assert_eq!(wait_subscribed(&mut s), "2", "granted QoS");

        let payloads: Vec<String> = (0..n).map(|i| format!("msg-{i} of {tag}")).collect();
        let out = publish(
            &b,
            &pub_id,
            version,
            &["-t", &topic, "-q", &qos.to_string(), "-l"],
            Some(&(payloads.join("\n") + "\n")),
        );
        let acks = [
            count(&out, "received PUBACK"),
            count(&out, "received PUBREC"),
            count(&out, "received PUBCOMP"),
        ];
        let want = match qos {
            0 => [0, 0, 0],
            1 => [n, 0, 0],
            _ => [0, n, n],
        };
        assert_eq!(
            acks, want,
            "publisher acks (PUBACK, PUBREC, PUBCOMP): {out:#?}"
        );
        assert_eq!(count(&out, "sending PUBLISH"), n, "{out:#?}");

        let lines = s.wait_success(T);
        let want: Vec<String> = payloads.iter().map(|p| format!("{topic} {p}")).collect();
        assert_eq!(messages(&lines), want, "{lines:#?}");
        assert_eq!(
            received_publishes(&lines),
            vec![flags(0, qos, 0, &topic); n],
            "{lines:#?}"
        );
        if qos == 2 {
            assert_eq!(count(&lines, "received PUBREL"), n, "{lines:#?}");
        }
    }
}

#[test]
fn mosquitto_v311_qos0() {
    pubsub(V311, 0);
}

#[test]
fn mosquitto_v311_qos1() {
    pubsub(V311, 1);
}

#[test]
fn mosquitto_v311_qos2() {
    pubsub(V311, 2);
}

#[test]
fn mosquitto_v31_qos0() {
    pubsub(V31, 0);
}

#[test]
fn mosquitto_v31_qos1() {
    pubsub(V31, 1);
}

#[test]
fn mosquitto_v31_qos2() {
    pubsub(V31, 2);
}

/// Retained messages: stored (latest wins), delivered to a new subscriber with RETAIN 1,
/// cleared by an empty retained message.
fn retained(version: &str) {
    let b = Broker::start(2);
    let v = short(version);
    let pub_id = b.id_on(1, &format!("rp{v}"));
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/x", "-q", "1", "-r", "-m", "first"],
        None,
    );
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/x", "-q", "1", "-r", "-m", "hello"],
        None,
    );
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/y", "-q", "2", "-r", "-m", "two"],
        None,
    );
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/z", "-q", "1", "-m", "not kept"],
        None,
    );

    let mut s = sub(
        &b,
        &b.id_on(0, &format!("rs{v}")),
        version,
        &["-t", "r/#", "-q", "2", "-C", "2", "-F", FMT],
    );
    let lines = s.wait_success(T);
    let mut got = messages(&lines);
    got.sort();
    assert_eq!(got, ["1 1 r/x hello", "1 2 r/y two"], "{lines:#?}");
    let mut f = received_publishes(&lines);
    f.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(f, [flags(0, 1, 1, "r/x"), flags(0, 2, 1, "r/y")]);

    // A new subscriber with granted QoS 0 gets the retained message at QoS 0.
    let mut s = sub(
        &b,
        &b.id_on(1, &format!("rl{v}")),
        version,
        &["-t", "r/y", "-q", "0", "-C", "1", "-F", FMT],
    );
    assert_eq!(messages(&s.wait_success(T)), ["1 0 r/y two"]);

    // `-n -r`: an empty retained message clears the topic.
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/x", "-q", "1", "-r", "-n"],
        None,
    );
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/y", "-q", "1", "-r", "-n"],
        None,
    );
    // A new subscriber gets no retained message: the first thing it receives is the live
    // message published after its SUBACK.
    let mut s = sub(
        &b,
        &b.id_on(0, &format!("rz{v}")),
        version,
        &["-t", "r/#", "-q", "1", "-C", "1", "-F", FMT],
    );
    wait_subscribed(&mut s);
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "r/x", "-q", "1", "-m", "live"],
        None,
    );
    let lines = s.wait_success(T);
    assert_eq!(messages(&lines), ["0 1 r/x live"], "{lines:#?}");
}

#[test]
fn mosquitto_v311_retained() {
    retained(V311);
}

#[test]
fn mosquitto_v31_retained() {
    retained(V31);
}

/// The will of a client killed with SIGKILL is published; that of a client that sends
/// DISCONNECT is not.
fn will(version: &str) {
    let b = Broker::start(2);
    let v = short(version);
    let mut watcher = sub(
        &b,
        &b.id_on(0, &format!("ww{v}")),
        version,
        &["-t", "w/#", "-q", "2", "-C", "1", "-F", FMT],
    );
    assert_eq!(wait_subscribed(&mut watcher), "2");

    // Clean exit (`-E`: DISCONNECT once subscribed): the will is discarded.
    let mut polite = sub(
        &b,
        &b.id_on(1, &format!("wc{v}")),
        version,
        &[
            "-t",
            "dummy",
            "-E",
            "--will-topic",
            "w/clean",
            "--will-payload",
            "never",
            "--will-qos",
            "1",
        ],
    );
    let lines = polite.wait_success(T);
    assert_eq!(count(&lines, "sending DISCONNECT"), 1, "{lines:#?}");

    // Killed: the will is published (live subscribers get RETAIN 0).
    let mut victim = sub(
        &b,
        &b.id_on(1, &format!("wk{v}")),
        version,
        &[
            "-t",
            "dummy",
            "--will-topic",
            "w/x",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
        ],
    );
    wait_subscribed(&mut victim);
    victim.kill();

    // The first and only message is the killed client's will, not the polite one's.
    let lines = watcher.wait_success(T);
    assert_eq!(messages(&lines), ["0 1 w/x gone"], "{lines:#?}");
    assert_eq!(received_publishes(&lines), [flags(0, 1, 0, "w/x")]);

    // --will-retain: the will was stored as a retained message too.
    let mut late = sub(
        &b,
        &b.id_on(0, &format!("wl{v}")),
        version,
        &["-t", "w/#", "-q", "1", "-C", "1", "-F", FMT],
    );
    assert_eq!(messages(&late.wait_success(T)), ["1 1 w/x gone"]);
}

#[test]
fn mosquitto_v311_will() {
    will(V311);
}

#[test]
fn mosquitto_v31_will() {
    will(V31);
}

/// `-c` (clean session 0): QoS 1 messages published while the subscriber is offline are
/// delivered, in order, when it comes back.
fn persistent(version: &str) {
    let b = Broker::start(2);
    let v = short(version);
    let sub_id = b.id_on(0, &format!("pc{v}"));
    let pub_id = b.id_on(1, &format!("pp{v}"));

    // Subscribe, then DISCONNECT and exit (`-E`).
    let mut s = sub(&b, &sub_id, version, &["-c", "-t", "p/#", "-q", "1", "-E"]);
    assert_eq!(wait_subscribed(&mut s), "1");
    s.wait_success(T);

    let payloads: Vec<String> = (0..5).map(|i| format!("off{i}")).collect();
    let out = publish(
        &b,
        &pub_id,
        version,
        &["-t", "p/x", "-q", "1", "-l"],
        Some(&(payloads.join("\n") + "\n")),
    );
    assert_eq!(count(&out, "received PUBACK"), 5, "{out:#?}");

    // Back online with the same id: the queued messages arrive.
    let mut s = sub(
        &b,
        &sub_id,
        version,
        &["-c", "-t", "p/#", "-q", "1", "-C", "5", "-v"],
    );
    let lines = s.wait_success(T);
    let want: Vec<String> = payloads.iter().map(|p| format!("p/x {p}")).collect();
    assert_eq!(messages(&lines), want, "{lines:#?}");
    assert_eq!(received_publishes(&lines), vec![flags(0, 1, 0, "p/x"); 5]);

    // Without -c, the same id discards the stored session: a message published after
    // that is queued for nobody, and the next `-c` session starts empty (the first thing
    // it gets is the message published after its SUBACK).
    let mut s = sub(&b, &sub_id, version, &["-t", "q/#", "-q", "1", "-E"]);
    s.wait_success(T);
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "p/x", "-q", "1", "-m", "lost"],
        None,
    );
    let mut s = sub(
        &b,
        &sub_id,
        version,
        &["-c", "-t", "p/#", "-q", "1", "-C", "1", "-v"],
    );
    wait_subscribed(&mut s);
    publish(
        &b,
        &pub_id,
        version,
        &["-t", "p/x", "-q", "1", "-m", "fresh"],
        None,
    );
    assert_eq!(messages(&s.wait_success(T)), ["p/x fresh"]);
}

#[test]
fn mosquitto_v311_persistent_session() {
    persistent(V311);
}

#[test]
fn mosquitto_v31_persistent_session() {
    persistent(V31);
}

#[test]
fn mosquitto_v5_qos0() {
    pubsub(V5, 0);
}

#[test]
fn mosquitto_v5_qos1() {
    pubsub(V5, 1);
}

#[test]
fn mosquitto_v5_qos2() {
    pubsub(V5, 2);
}

/// 5.0 properties set with `mosquitto_pub -D publish ...` reach a `mosquitto_sub` on the
/// other shard (and on the same one) as `-F` prints them, with the subscriber's
/// Subscription Identifier and the expiry counted down.
#[test]
fn mosquitto_v5_properties_and_subscription_identifier() {
    let b = Broker::start(2);
    for (sub_shard, pub_shard) in [(0, 1), (1, 1)] {
        let tag = format!("{sub_shard}{pub_shard}");
        let mut s = sub(
            &b,
            &b.id_on(sub_shard, &format!("m5s{tag}")),
            V5,
            &[
                "-t",
                &format!("p5/{tag}/#"),
                "-q",
                "1",
                "-C",
                "1",
                "-D",
                "subscribe",
                "subscription-identifier",
                "7",
                "-F",
                "%t|%p|C=%C|E=%E|P=%P|S=%S|R=%R|D=%D|F=%F",
            ],
        );
        wait_subscribed(&mut s);
        let out = publish(
            &b,
            &b.id_on(pub_shard, &format!("m5p{tag}")),
            V5,
            &[
                "-t",
                &format!("p5/{tag}/x"),
                "-q",
                "1",
                "-m",
                "hello",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
                "-D",
                "publish",
                "content-type",
                "text/plain",
                "-D",
                "publish",
                "message-expiry-interval",
                "60",
                "-D",
                "publish",
                "response-topic",
                "r/1",
                "-D",
                "publish",
                "correlation-data",
                "abc",
                "-D",
                "publish",
                "payload-format-indicator",
                "1",
            ],
            None,
        );
        assert_eq!(count(&out, "received PUBACK"), 1, "{out:#?}");
        let got = messages(&s.wait_success(T));
        let want = format!("p5/{tag}/x|hello|C=text/plain|E=60|P=k:v|S=7|R=r/1|D=abc|F=1");
        // The expiry may have ticked down by a second on the way.
        let alt = want.replace("E=60", "E=59");
        assert!(got == [want.clone()] || got == [alt], "{got:#?}");
    }
}

/// Two `mosquitto_sub -V mqttv5` in one share group, on different shards: every message
/// reaches exactly one of them.
#[test]
fn mosquitto_v5_shared_subscription() {
    let b = Broker::start(2);
    let n = 20;
    let mut subs: Vec<Proc> = (0..2)
        .map(|shard| {
            let mut s = sub(
                &b,
                &b.id_on(shard, "m5g"),
                V5,
                &["-t", "$share/g/s5/#", "-q", "1", "-F", "%p", "-W", "3"],
            );
            wait_subscribed(&mut s);
            s
        })
        .collect();
    let payloads: Vec<String> = (0..n).map(|i| format!("job{i}")).collect();
    publish(
        &b,
        &b.id_on(1, "m5gp"),
        V5,
        &["-t", "s5/x", "-q", "1", "-l"],
        Some(&(payloads.join("\n") + "\n")),
    );
    let mut got: Vec<String> = Vec::new();
    for s in subs.iter_mut() {
        // `-W 3` ends each subscriber once the messages are in.
        let (_, lines) = s.wait_exit(T);
        let mine = messages(&lines);
        assert!(!mine.is_empty(), "each member gets a share: {lines:#?}");
        got.extend(mine);
    }
    got.sort();
    let mut want = payloads;
    want.sort();
    assert_eq!(got, want, "each message exactly once");
}

/// `-c -x 60`: a 5.0 session kept for a minute after the connection; queued messages
/// arrive when the client comes back. `-x 0` would end it with the connection.
#[test]
fn mosquitto_v5_session_expiry() {
    let b = Broker::start(2);
    for (shard, expiry, kept) in [(0, "60", true), (1, "60", true), (0, "0", false)] {
        let id = b.id_on(shard, &format!("m5x{expiry}"));
        let t = format!("x5/{shard}{expiry}");
        let mut s = sub(
            &b,
            &id,
            V5,
            &["-c", "-x", expiry, "-t", &t, "-q", "1", "-E"],
        );
        assert_eq!(wait_subscribed(&mut s), "1");
        s.wait_success(T);
        publish(
            &b,
            &b.id_on(1 - shard, "m5xp"),
            V5,
            &["-t", &t, "-q", "1", "-m", "queued"],
            None,
        );
        let mut s = sub(
            &b,
            &id,
            V5,
            &[
                "-c", "-x", expiry, "-t", &t, "-q", "1", "-C", "1", "-W", "2", "-F", "%p",
            ],
        );
        let (_, lines) = s.wait_exit(T);
        let got = messages(&lines);
        if kept {
            assert_eq!(got, ["queued"], "{lines:#?}");
        } else {
            assert!(got.is_empty(), "{lines:#?}");
        }
    }
}
