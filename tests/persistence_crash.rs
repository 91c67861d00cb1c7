//! The crash test: the `surgemq` binary with `persistence.mode = "sync"` under QoS 1 and 2
//! load (a persistent publisher, a persistent subscriber online, another offline the whole
//! time, retained updates) is killed with SIGKILL at random moments, many times in a row,
//! and restarted on the same directory. At the end every message acknowledged to the
//! publisher (PUBACK, or PUBREC for QoS 2) has reached both subscribers, QoS 2 exactly once,
//! and the retained value is one the publisher sent, no older than the last one
//! acknowledged.
//!
//! Rounds: `SURGEMQ_CRASH_ROUNDS` (default 4, the short form CI runs);
//! `scripts/crash-test.sh` runs it longer. The seed is printed (and taken from
//! `SURGEMQ_CRASH_SEED`) so a failure can be replayed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use surgemq::protocol::*;

/// A small deterministic generator (xorshift): the seed is printed for replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

struct BrokerProc {
    child: Child,
    addr: SocketAddr,
}

impl BrokerProc {
    fn start(config: &std::path::Path, addr: SocketAddr) -> BrokerProc {
        let child = Command::new(env!("CARGO_BIN_EXE_surgemq"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("surgemq starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the broker did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        BrokerProc { child, addr }
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown, no last commit.
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The kernel tears a dead process's io_uring down after the process is gone, and
        // its listening sockets with it: until then they still take connections (and
        // reset them when they close). The next broker starts once they are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(self.addr).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that treats a lost connection as an error to return, not a panic.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    fn connect(addr: SocketAddr, id: &str, version: ProtocolVersion) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            version,
        };
        let mut properties = Properties::new();
        if version.is_v5() {
            properties.get_mut().session_expiry_interval = Some(u32::MAX);
        }
        c.send(&Packet::Connect(Box::new(Connect {
            version,
            clean_start: false,
            keep_alive: 0,
            client_id: ByteString::from(id),
            will: None,
            username: None,
            password: None,
            properties,
        })))?;
        match c.recv(Duration::from_secs(10))? {
            Some(Packet::ConnAck(a)) if a.reason.is_success() => Ok(c),
            other => Err(std::io::Error::other(format!("CONNECT of {id}: {other:?}"))),
        }
    }

    fn send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut b = BytesMut::new();
        p.encode(self.version, &mut b)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&b)
    }

    /// The next packet, None after `wait`, an error when the connection is gone.
    fn recv(&mut self, wait: Duration) -> std::io::Result<Option<Packet>> {
        let opts = DecodeOptions::new(self.version);
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = decode(&mut self.buf, &opts).map_err(std::io::Error::other)? {
                return Ok(Some(p));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn publish(topic: &str, payload: String, qos: QoS, retain: bool, id: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos,
        retain,
        topic: TopicName::new(topic.to_owned()).unwrap(),
        packet_id: PacketId::new(id),
        properties: Properties::new(),
        payload: Bytes::from(payload),
    })
}

/// A message the publisher sent, by packet id, until its flow ends.
#[derive(Clone, Debug)]
struct Outgoing {
    topic: String,
    payload: String,
    qos: QoS,
    retain: bool,
    /// PUBREC received: PUBREL is what is owed now.
    released: bool,
}

/// What the publisher knows, kept across connections (its session is persistent).
#[derive(Default)]
struct PubState {
    next_seq: u64,
    next_id: u16,
    /// Flows in progress, in the order they were sent.
    open: BTreeMap<u64, (u16, Outgoing)>,
    /// Messages acknowledged (PUBACK / PUBREC): seq -> QoS.
    acked: BTreeMap<u64, QoS>,
    /// Every retained value sent, and the last one acknowledged.
    retained_sent: BTreeSet<String>,
    retained_acked: Option<u64>,
}

/// Runs the publisher until `stop` or the connection is lost.
fn run_publisher(addr: SocketAddr, state: &Mutex<PubState>, stop: &AtomicBool) {
    let mut c = match Client::connect(addr, "crash-pub", ProtocolVersion::V3_1_1) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("publisher: {e}");
            return;
        }
    };
    // What the previous connection left open goes again, in order [MQTT-4.4.0-1].
    let resend: Vec<(u16, Outgoing)> = state.lock().unwrap().open.values().cloned().collect();
    for (id, o) in resend {
        let p = if o.released {
            Packet::PubRel(Ack::new(PacketId::new(id).unwrap()))
        } else {
            publish(&o.topic, o.payload.clone(), o.qos, o.retain, id, true)
        };
        if c.send(&p).is_err() {
            return;
        }
    }
    loop {
        // Up to 16 flows open at once.
        while !stop.load(Ordering::Relaxed) && state.lock().unwrap().open.len() < 16 {
            let mut s = state.lock().unwrap();
            s.next_seq += 1;
            let seq = s.next_seq;
            s.next_id = s.next_id % 60_000 + 1;
            let id = s.next_id;
            let (topic, qos, retain) = match seq % 10 {
                0 => ("r/last".to_owned(), QoS::AtLeastOnce, true),
                n if n % 2 == 0 => ("c/2".to_owned(), QoS::ExactlyOnce, false),
                _ => ("c/1".to_owned(), QoS::AtLeastOnce, false),
            };
            let payload = seq.to_string();
            if retain {
                s.retained_sent.insert(payload.clone());
            }
            let o = Outgoing {
                topic: topic.clone(),
                payload: payload.clone(),
                qos,
                retain,
                released: false,
            };
            s.open.insert(seq, (id, o));
            drop(s);
            if c.send(&publish(&topic, payload, qos, retain, id, false))
                .is_err()
            {
                return;
            }
        }
        if stop.load(Ordering::Relaxed) && state.lock().unwrap().open.is_empty() {
            return;
        }
        let p = match c.recv(Duration::from_millis(200)) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(_) => return,
        };
        let mut s = state.lock().unwrap();
        let find = |s: &PubState, id: PacketId| {
            s.open
                .iter()
                .find(|(_, (i, _))| *i == id.get())
                .map(|(seq, _)| *seq)
        };
        match p {
            Packet::PubAck(a) => {
                if let Some(seq) = find(&s, a.packet_id) {
                    let (_, o) = s.open.remove(&seq).unwrap();
                    s.acked.insert(seq, o.qos);
                    if o.retain {
                        s.retained_acked = Some(s.retained_acked.map_or(seq, |r| r.max(seq)));
                    }
                }
            }
            Packet::PubRec(a) => {
                if let Some(seq) = find(&s, a.packet_id) {
                    s.acked.insert(seq, QoS::ExactlyOnce);
                    if let Some((_, o)) = s.open.get_mut(&seq) {
                        o.released = true;
                    }
                    drop(s);
                    if c.send(&Packet::PubRel(Ack::new(a.packet_id))).is_err() {
                        return;
                    }
                }
            }
            Packet::PubComp(a) => {
                if let Some(seq) = find(&s, a.packet_id) {
                    s.open.remove(&seq);
                }
            }
            other => panic!("publisher got {other:?}"),
        }
    }
}

/// What a subscriber received, kept across connections.
#[derive(Default)]
struct SubState {
    /// (topic, payload) -> times delivered as a new message.
    got: HashMap<(String, String), u32>,
    /// QoS 2 ids received (PUBREC sent) whose PUBREL has not come: a PUBLISH with one of
    /// them is the same message again and is not delivered twice (method B, §4.3.3).
    pending_qos2: BTreeSet<u16>,
}

/// Runs a subscriber until `stop` (and then until quiet for `quiet`) or the connection is
/// lost.
fn run_subscriber(
    addr: SocketAddr,
    id: &str,
    version: ProtocolVersion,
    state: &Mutex<SubState>,
    stop: &AtomicBool,
    quiet: Duration,
) {
    let mut c = match Client::connect(addr, id, version) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{id}: {e}");
            return;
        }
    };
    let mut last = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) && last.elapsed() >= quiet {
            return;
        }
        let p = match c.recv(Duration::from_millis(100)) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(_) => return,
        };
        last = Instant::now();
        let mut s = state.lock().unwrap();
        let reply = match p {
            Packet::Publish(p) => {
                let key = (
                    p.topic.to_string(),
                    String::from_utf8(p.payload.to_vec()).unwrap(),
                );
                match (p.qos, p.packet_id) {
                    (QoS::ExactlyOnce, Some(pid)) => {
                        if s.pending_qos2.insert(pid.get()) {
                            *s.got.entry(key).or_default() += 1;
                        }
                        Some(Packet::PubRec(Ack::new(pid)))
                    }
                    (QoS::AtLeastOnce, Some(pid)) => {
                        *s.got.entry(key).or_default() += 1;
                        Some(Packet::PubAck(Ack::new(pid)))
                    }
                    _ => {
                        *s.got.entry(key).or_default() += 1;
                        None
                    }
                }
            }
            Packet::PubRel(a) => {
                s.pending_qos2.remove(&a.packet_id.get());
                Some(Packet::PubComp(Ack::new(a.packet_id)))
            }
            Packet::SubAck(_) => None,
            other => panic!("{id} got {other:?}"),
        };
        drop(s);
        if let Some(r) = reply {
            if c.send(&r).is_err() {
                return;
            }
        }
    }
}

fn subscribe(addr: SocketAddr, id: &str, version: ProtocolVersion) {
    let mut c = Client::connect(addr, id, version).unwrap();
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new("c/#").unwrap(),
            options: SubscriptionOptions::new(QoS::ExactlyOnce),
        }],
        properties: Properties::new(),
    }))
    .unwrap();
    match c.recv(Duration::from_secs(10)).unwrap() {
        Some(Packet::SubAck(a)) => assert_eq!(a.codes, vec![ReasonCode(2)]),
        other => panic!("SUBACK expected, got {other:?}"),
    }
    c.send(&Packet::Disconnect(Disconnect::default())).unwrap();
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let rounds: u32 = std::env::var("SURGEMQ_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("SURGEMQ_CRASH_SEED")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test: {rounds} rounds, SURGEMQ_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("surgemq-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = client_env::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.join("surgemq.toml");
    std::fs::write(
        &config,
        format!(
            "listeners = [\"127.0.0.1:{port}\"]\nshards = 2\nlog_level = \"warn\"\n\
             [limits]\nmax_queued_messages = 1000000\nmax_queued_bytes = 1073741824\n\
             [persistence]\nmode = \"sync\"\ndir = \"{}\"\ncompact_bytes = 1048576\n",
            dir.join("data").display()
        ),
    )
    .unwrap();

    let publisher = Arc::new(Mutex::new(PubState::default()));
    let online = Arc::new(Mutex::new(SubState::default()));
    let offline = Arc::new(Mutex::new(SubState::default()));
    {
        let b = BrokerProc::start(&config, addr);
        subscribe(addr, "crash-online", ProtocolVersion::V3_1_1);
        subscribe(addr, "crash-offline", ProtocolVersion::V5);
        b.kill();
    }
    for round in 0..rounds {
        let b = BrokerProc::start(&config, addr);
        let stop = Arc::new(AtomicBool::new(false));
        let p = {
            let (state, stop) = (publisher.clone(), stop.clone());
            std::thread::spawn(move || run_publisher(addr, &state, &stop))
        };
        let s = {
            let (state, stop) = (online.clone(), stop.clone());
            std::thread::spawn(move || {
                run_subscriber(
                    addr,
                    "crash-online",
                    ProtocolVersion::V3_1_1,
                    &state,
                    &stop,
                    Duration::ZERO,
                )
            })
        };
        let run = Duration::from_millis(rng.between(150, 900));
        std::thread::sleep(run);
        b.kill();
        stop.store(true, Ordering::Relaxed);
        p.join().unwrap();
        s.join().unwrap();
        let acked = publisher.lock().unwrap().acked.len();
        eprintln!("round {round}: killed after {run:?}, {acked} messages acknowledged so far");
    }
    // The end: the publisher finishes its open flows, both subscribers drain.
    let b = BrokerProc::start(&config, addr);
    let stop = Arc::new(AtomicBool::new(true));
    {
        let (state, stop) = (publisher.clone(), stop.clone());
        std::thread::spawn(move || run_publisher(addr, &state, &stop))
            .join()
            .unwrap();
    }
    let subs: Vec<_> = [
        ("crash-online", ProtocolVersion::V3_1_1, online.clone()),
        ("crash-offline", ProtocolVersion::V5, offline.clone()),
    ]
    .into_iter()
    .map(|(id, v, state)| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            run_subscriber(addr, id, v, &state, &stop, Duration::from_secs(2))
        })
    })
    .collect();
    for s in subs {
        s.join().unwrap();
    }
    // The retained value.
    let retained = {
        let mut c = Client::connect(addr, "crash-retained", ProtocolVersion::V3_1_1).unwrap();
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::new("r/last").unwrap(),
                options: SubscriptionOptions::new(QoS::AtMostOnce),
            }],
            properties: Properties::new(),
        }))
        .unwrap();
        let mut value = None;
        while let Ok(Some(p)) = c.recv(Duration::from_secs(2)) {
            if let Packet::Publish(p) = p {
                value = Some(String::from_utf8(p.payload.to_vec()).unwrap());
                break;
            }
        }
        value
    };
    drop(b);

    let p = publisher.lock().unwrap();
    assert!(p.open.is_empty(), "publisher flows left open: {:?}", p.open);
    assert!(!p.acked.is_empty(), "nothing was acknowledged");
    for (name, state) in [("online", &online), ("offline", &offline)] {
        let s = state.lock().unwrap();
        let mut missing = Vec::new();
        let mut twice = Vec::new();
        for (seq, qos) in &p.acked {
            let topic = match seq % 10 {
                0 => continue,
                n if n % 2 == 0 => "c/2",
                _ => "c/1",
            };
            let n = s
                .got
                .get(&(topic.to_owned(), seq.to_string()))
                .copied()
                .unwrap_or(0);
            if n == 0 {
                missing.push(*seq);
            }
            if *qos == QoS::ExactlyOnce && n > 1 {
                twice.push(*seq);
            }
        }
        // QoS 2 exactly once holds for messages that were never acknowledged too.
        for ((topic, seq), n) in &s.got {
            if topic == "c/2" && *n > 1 && !twice.iter().any(|t| t.to_string() == *seq) {
                twice.push(seq.parse().unwrap());
            }
        }
        assert!(
            missing.is_empty(),
            "{name} subscriber: acknowledged messages never delivered: {missing:?} (seed {seed})"
        );
        assert!(
            twice.is_empty(),
            "{name} subscriber: QoS 2 messages delivered twice: {twice:?} (seed {seed})"
        );
        eprintln!(
            "{name} subscriber: {} distinct messages, every one of {} acknowledged",
            s.got.len(),
            p.acked.len()
        );
    }
    if let Some(last) = p.retained_acked {
        let value = retained.expect("a retained message");
        assert!(
            p.retained_sent.contains(&value),
            "retained value {value} was never sent"
        );
        assert!(
            value.parse::<u64>().unwrap() >= last,
            "retained value {value} is older than the last acknowledged {last} (seed {seed})"
        );
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
