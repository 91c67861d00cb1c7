//! The benchmark runner behind `surgemq-bench`: drives any MQTT 3.1.1 broker with
//! publishers and subscribers and reports what arrived, how fast and how late.
//!
//! **Owns:** the load shapes (one-to-one, fan-in, fan-out, mesh, custom, idle
//! connections), the runner threads (one glommio executor each, hosting many clients as
//! tasks), delivery verification (sequence numbers in every payload) and the report.
//!
//! **Must not touch:** the broker's internals: it speaks MQTT over TCP only, so the same
//! run can be pointed at mosquitto, rumqttd or SurgeMQ.
//!
//! Timing: every payload carries its publisher, a sequence number and the send time in
//! ns since a time base shared by all runner threads (one process, one clock). In open
//! loop (`rate`) the stamp is the *intended* send time, so a stalled broker shows up as
//! latency instead of silently lowering the offered load (coordinated omission).

pub mod accounting;
pub mod svg;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream as Tcp;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::notify::Notify;
use crate::protocol::{
    decode, encode_publish_header, Connect, DecodeOptions, Packet, PacketId, Properties,
    ProtocolVersion, QoS, Subscribe, Subscription, SubscriptionOptions, TopicFilter,
};
use accounting::{histogram, SeqTracker, Stamp, STAMP_LEN};

/// The load shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// One publisher, one subscriber.
    OneToOne,
    /// `pubs` publishers, one subscriber, one topic.
    FanIn,
    /// One publisher, `subs` subscribers, one topic.
    FanOut,
    /// `pubs` clients publishing to one topic that `pubs` subscribers all subscribe to:
    /// every message reaches every subscriber. (Publishing and subscribing use separate
    /// connections.)
    Mesh,
    /// `pubs` publishers over `topics` topics (publisher i on topic i mod topics), `subs`
    /// subscribers likewise.
    Custom,
    /// `connections` idle clients with keep alive; reports the connect rate and the
    /// broker's memory.
    Connections,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Broker address.
    pub addr: SocketAddr,
    /// Load shape.
    pub shape: Shape,
    /// Publishers (fan-in, mesh, custom).
    pub pubs: usize,
    /// Subscribers (fan-out, custom).
    pub subs: usize,
    /// Topics (custom).
    pub topics: usize,
    /// QoS of publications and subscriptions.
    pub qos: QoS,
    /// The protocol every client speaks (3.1.1 or 5.0; 5.0 clients send no properties, so
    /// the two measure the same work side by side).
    pub version: ProtocolVersion,
    /// Payload bytes (at least the 24-byte stamp).
    pub size: usize,
    /// Messages per publisher; None with `duration`.
    pub count: Option<u64>,
    /// Run length when `count` is None.
    pub duration: Duration,
    /// Open loop: messages per second per publisher. None: as fast as allowed.
    pub rate: Option<u64>,
    /// Unacknowledged QoS 1/2 messages a publisher keeps in flight (closed loop).
    pub inflight: usize,
    /// Runner threads.
    pub threads: usize,
    /// CPUs to pin runner threads to (glommio pins each executor to one).
    pub cpus: Option<Vec<usize>>,
    /// Idle connections (connections shape).
    pub connections: usize,
    /// Connection attempts in flight at once per runner thread (connections shape).
    pub connect_concurrency: usize,
    /// Broker pid, to report its CPU time and peak RSS.
    pub broker_pid: Option<u32>,
    /// Print a progress line every second.
    pub progress: bool,
    /// Prefix of client ids and topics (so concurrent runs do not meet).
    pub prefix: String,
    /// Every client connects with a persistent session (3.1.1 clean session 0; 5.0 Session
    /// Expiry Interval 0xFFFFFFFF), so a durable broker writes the run's messages down.
    pub persistent: bool,
    /// TLS: every client connects over TLS with this configuration, checking the
    /// broker's certificate for `tls_name`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name the broker's certificate must carry (with `tls`).
    pub tls_name: String,
}

impl RunSpec {
    /// A spec with the original SurgeMQ benchmark's defaults: 1 KiB payloads, 20 clients
    /// on the many side, QoS 0.
    pub fn new(addr: SocketAddr, shape: Shape) -> RunSpec {
        let (pubs, subs) = match shape {
            Shape::OneToOne => (1, 1),
            Shape::FanIn => (20, 1),
            Shape::FanOut => (1, 20),
            Shape::Mesh => (20, 20),
            Shape::Custom => (1, 1),
            Shape::Connections => (0, 0),
        };
        RunSpec {
            addr,
            shape,
            pubs,
            subs,
            topics: 1,
            qos: QoS::AtMostOnce,
            version: ProtocolVersion::V3_1_1,
            size: 1024,
            count: Some(100_000),
            duration: Duration::from_secs(10),
            rate: None,
            inflight: 64,
            threads: 1,
            cpus: None,
            connections: 10_000,
            connect_concurrency: 1000,
            broker_pid: None,
            progress: false,
            prefix: format!("sb{}", std::process::id()),
            persistent: false,
            tls: None,
            tls_name: "localhost".to_owned(),
        }
    }

    /// Normalises the client counts for the shape.
    fn layout(&self) -> (usize, usize, usize) {
        match self.shape {
            Shape::OneToOne => (1, 1, 1),
            Shape::FanIn => (self.pubs.max(1), 1, 1),
            Shape::FanOut => (1, self.subs.max(1), 1),
            Shape::Mesh => (self.pubs.max(1), self.pubs.max(1), 1),
            Shape::Custom => (self.pubs, self.subs, self.topics.max(1)),
            Shape::Connections => (0, 0, 1),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Shape name.
    pub shape: String,
    /// QoS.
    pub qos: u8,
    /// Protocol version ("3.1.1" or "5.0").
    pub protocol: String,
    /// Payload size.
    pub size: usize,
    /// Publishers and subscribers.
    pub pubs: usize,
    /// Subscribers.
    pub subs: usize,
    /// Messages published (completed flows for QoS 1/2).
    pub sent: u64,
    /// Deliveries received (including duplicates).
    pub received: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Expected messages never received.
    pub lost: u64,
    /// Duplicate deliveries.
    pub dups: u64,
    /// Deliveries out of publisher order.
    pub reordered: u64,
    /// From the first publish to the last delivery.
    pub elapsed_s: f64,
    /// Deliveries per second.
    pub msgs_per_s: f64,
    /// Payload megabytes per second delivered.
    pub mb_per_s: f64,
    /// Latency percentiles, µs.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Connections mode: connections per second during setup.
    pub connects_per_s: f64,
    /// Broker CPU seconds during the run (with a pid).
    pub broker_cpu_s: Option<f64>,
    /// Broker peak RSS in KiB during the run (with a pid).
    pub broker_rss_peak_kb: Option<u64>,
    /// The runner's own CPU seconds (all its threads, connection setup included): with
    /// `sent + received` it says how close the runner itself was to its limit.
    pub runner_cpu_s: Option<f64>,
    /// The latency distribution: (quantile, µs) from 0 to 99.999% and the maximum, for
    /// [`svg::latency_svg`]. Empty when nothing was received.
    pub latency_curve: Vec<(f64, u64)>,
}

impl Report {
    /// One JSON object on one line.
    pub fn json(&self) -> String {
        let opt_f = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
        let opt_u = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        format!(
            "{{\"shape\":\"{}\",\"protocol\":\"{}\",\"qos\":{},\"size\":{},\"pubs\":{},\"subs\":{},\"sent\":{},\"received\":{},\"expected\":{},\"lost\":{},\"dups\":{},\"reordered\":{},\"elapsed_s\":{:.3},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.2},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"connects_per_s\":{:.0},\"broker_cpu_s\":{},\"broker_rss_peak_kb\":{},\"runner_cpu_s\":{}}}",
            self.shape,
            self.protocol,
            self.qos,
            self.size,
            self.pubs,
            self.subs,
            self.sent,
            self.received,
            self.expected,
            self.lost,
            self.dups,
            self.reordered,
            self.elapsed_s,
            self.msgs_per_s,
            self.mb_per_s,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.connects_per_s,
            opt_f(self.broker_cpu_s),
            opt_u(self.broker_rss_peak_kb),
            opt_f(self.runner_cpu_s),
        )
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let row = |s: &mut String, k: &str, v: String| s.push_str(&format!("  {k:<18} {v}\n"));
        row(
            &mut s,
            "shape",
            format!(
                "{} (MQTT {}, qos {}, {} B, {} pub / {} sub)",
                self.shape, self.protocol, self.qos, self.size, self.pubs, self.subs
            ),
        );
        if self.shape == "connections" {
            row(&mut s, "connections", self.received.to_string());
            row(&mut s, "connects/s", format!("{:.0}", self.connects_per_s));
        } else {
            row(&mut s, "sent", self.sent.to_string());
            row(
                &mut s,
                "received",
                format!("{} of {} expected", self.received, self.expected),
            );
            row(
                &mut s,
                "lost / dups / reord",
                format!("{} / {} / {}", self.lost, self.dups, self.reordered),
            );
            row(&mut s, "elapsed", format!("{:.3} s", self.elapsed_s));
            row(
                &mut s,
                "msgs/s (received)",
                format!("{:.0}", self.msgs_per_s),
            );
            row(&mut s, "MB/s", format!("{:.2}", self.mb_per_s));
            row(
                &mut s,
                "latency p50/p99",
                format!("{} / {} µs", self.p50_us, self.p99_us),
            );
            row(
                &mut s,
                "latency p99.9/max",
                format!("{} / {} µs", self.p999_us, self.max_us),
            );
        }
        if let Some(c) = self.broker_cpu_s {
            row(&mut s, "broker cpu", format!("{c:.2} s"));
        }
        if let Some(r) = self.broker_rss_peak_kb {
            row(&mut s, "broker peak rss", format!("{} KiB", r));
        }
        if let Some(c) = self.runner_cpu_s {
            let per_s = if c > 0.0 {
                format!(
                    " ({:.0} msgs sent+received per runner CPU-second)",
                    (self.sent + self.received) as f64 / c
                )
            } else {
                String::new()
            };
            row(&mut s, "runner cpu", format!("{c:.2} s{per_s}"));
        }
        s
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Could not start a runner thread.
    #[error("runner thread: {0}")]
    Runtime(String),
    /// A client failed (connect refused, protocol error, broker closed the connection).
    #[error("client {client}: {reason}")]
    Client {
        /// Client id.
        client: String,
        /// What happened.
        reason: String,
    },
}

/// State shared by all runner threads.
#[derive(Debug)]
struct Shared {
    base: Instant,
    subs_ready: AtomicUsize,
    start: AtomicBool,
    pubs_done: AtomicUsize,
    pubs_total: usize,
    received: AtomicU64,
    sent: AtomicU64,
    stop: AtomicBool,
    errors: Mutex<Vec<BenchError>>,
    connected: AtomicUsize,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    fn fail(&self, client: &str, reason: impl Into<String>) {
        if let Ok(mut e) = self.errors.lock() {
            e.push(BenchError::Client {
                client: client.to_string(),
                reason: reason.into(),
            });
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct PubResult {
    index: usize,
    sent: u64,
    first_ns: u64,
}

#[derive(Debug)]
struct SubResult {
    tracker: SeqTracker,
    hist: Histogram<u64>,
    last_ns: u64,
    expected_topic: usize,
}

/// One client's role.
#[derive(Debug, Clone)]
enum Role {
    Pub {
        index: usize,
        topic: usize,
    },
    Sub {
        topic: usize,
    },
    /// Mesh: one connection that subscribes to `topic` and publishes to it.
    Peer {
        index: usize,
        topic: usize,
    },
    Idle,
}

/// Runs the benchmark described by `spec`.
pub fn run(spec: &RunSpec) -> Result<Report, BenchError> {
    let (pubs, subs, topics) = spec.layout();
    let mut roles: Vec<(String, Role)> = Vec::new();
    if spec.shape == Shape::Mesh {
        // N clients, each one connection that publishes to all and receives from all
        // (its own messages included), as the original SurgeMQ's mesh test.
        for i in 0..pubs {
            roles.push((
                format!("{}-m{i}", spec.prefix),
                Role::Peer { index: i, topic: 0 },
            ));
        }
    } else {
        for j in 0..subs {
            roles.push((
                format!("{}-s{j}", spec.prefix),
                Role::Sub { topic: j % topics },
            ));
        }
        for i in 0..pubs {
            roles.push((
                format!("{}-p{i}", spec.prefix),
                Role::Pub {
                    index: i,
                    topic: i % topics,
                },
            ));
        }
    }
    if spec.shape == Shape::Connections {
        for k in 0..spec.connections {
            roles.push((format!("{}-c{k}", spec.prefix), Role::Idle));
        }
    }
    let shared = Arc::new(Shared {
        base: Instant::now(),
        subs_ready: AtomicUsize::new(0),
        start: AtomicBool::new(false),
        pubs_done: AtomicUsize::new(0),
        pubs_total: pubs,
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        connected: AtomicUsize::new(0),
    });
    let threads = spec.threads.max(1);
    let mut per_thread: Vec<Vec<(String, Role)>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, r) in roles.into_iter().enumerate() {
        if let Some(v) = per_thread.get_mut(k % threads) {
            v.push(r);
        }
    }
    let monitor = BrokerMonitor::start(spec.broker_pid);
    let runner_cpu_start = proc_cpu_s(std::process::id());
    let mut handles = Vec::new();
    for (t, clients) in per_thread.into_iter().enumerate() {
        let spec = spec.clone();
        let shared = shared.clone();
        let placement = match spec.cpus.as_ref().and_then(|c| c.get(t)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(
                move || -> Result<(Vec<PubResult>, Vec<SubResult>), String> {
                    let ex = LocalExecutorBuilder::new(placement)
                        .io_memory(256 << 10)
                        .make()
                        .map_err(|e| e.to_string())?;
                    Ok(ex.run(run_thread(spec, clients, shared)))
                },
            )
            .map_err(|e| BenchError::Runtime(e.to_string()))?;
        handles.push(h);
    }

    // Start publishers once every subscriber is subscribed; report progress meanwhile.
    let connect_started = Instant::now();
    let mut connects_per_s = 0.0;
    if spec.shape == Shape::Connections {
        while shared.connected.load(Ordering::Relaxed) < spec.connections
            && !shared.stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        connects_per_s = spec.connections as f64 / connect_started.elapsed().as_secs_f64();
        std::thread::sleep(spec.duration.min(Duration::from_secs(3600)));
        shared.stop.store(true, Ordering::Relaxed);
    } else {
        while shared.subs_ready.load(Ordering::Relaxed) < subs
            && !shared.stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        shared.start.store(true, Ordering::Relaxed);
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut last = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if spec.progress && last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                let line = format!(
                    "sent {} received {} ({:.1} s)",
                    shared.sent.load(Ordering::Relaxed),
                    shared.received.load(Ordering::Relaxed),
                    shared.base.elapsed().as_secs_f64()
                );
                if tty {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
        }
        if spec.progress && tty {
            eprintln!();
        }
    }
    let mut pub_results = Vec::new();
    let mut sub_results = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok((p, s))) => {
                pub_results.extend(p);
                sub_results.extend(s);
            }
            Ok(Err(e)) => return Err(BenchError::Runtime(e)),
            Err(_) => return Err(BenchError::Runtime("runner thread panicked".into())),
        }
    }
    if let Some(e) = shared.errors.lock().ok().and_then(|mut e| e.pop()) {
        return Err(e);
    }
    let (broker_cpu_s, broker_rss_peak_kb) = monitor.finish();
    let runner_cpu_s = match (proc_cpu_s(std::process::id()), runner_cpu_start) {
        (Some(b), Some(a)) if b >= a => Some(b - a),
        _ => None,
    };

    // Expected deliveries: each subscriber gets every message of the publishers on its
    // topic.
    let mut sent = 0;
    let mut first_ns = u64::MAX;
    for p in &pub_results {
        sent += p.sent;
        first_ns = first_ns.min(p.first_ns);
    }
    let topic_of_pub: Vec<usize> = (0..pubs).map(|i| i % topics).collect();
    let mut merged = histogram();
    let mut received = 0;
    let mut expected = 0;
    let mut lost = 0;
    let mut dups = 0;
    let mut reordered = 0;
    let mut last_ns = 0;
    // Expected per subscriber: every message of every publisher on its topic. In count
    // mode each publisher sends `count`; in duration mode publishers stop at different
    // counts, so the per-publisher sent counts are summed per topic.
    let mut sent_on_topic = vec![0u64; topics];
    for p in &pub_results {
        if let Some(t) = sent_on_topic.get_mut(topic_of_pub.get(p.index).copied().unwrap_or(0)) {
            *t += p.sent;
        }
    }
    for s in &sub_results {
        let exp = sent_on_topic.get(s.expected_topic).copied().unwrap_or(0);
        expected += exp;
        received += s.tracker.received;
        lost += s.tracker.lost(exp);
        dups += s.tracker.duplicates;
        reordered += s.tracker.reordered;
        last_ns = last_ns.max(s.last_ns);
        let _ = merged.add(&s.hist);
    }
    let elapsed_s = if last_ns > first_ns && first_ns != u64::MAX {
        (last_ns - first_ns) as f64 / 1e9
    } else {
        0.0
    };
    let rate = |n: f64| if elapsed_s > 0.0 { n / elapsed_s } else { 0.0 };
    Ok(Report {
        shape: format!("{:?}", spec.shape)
            .to_lowercase()
            .replace("onetoone", "one-to-one")
            .replace("fanin", "fan-in")
            .replace("fanout", "fan-out"),
        qos: spec.qos as u8,
        protocol: if spec.version.is_v5() { "5.0" } else { "3.1.1" }.to_string(),
        size: spec.size,
        pubs,
        subs,
        sent,
        received: if spec.shape == Shape::Connections {
            shared.connected.load(Ordering::Relaxed) as u64
        } else {
            received
        },
        expected,
        lost,
        dups,
        reordered,
        elapsed_s,
        msgs_per_s: rate(received as f64),
        mb_per_s: rate(received as f64 * spec.size as f64) / 1e6,
        p50_us: merged.value_at_quantile(0.5),
        p99_us: merged.value_at_quantile(0.99),
        p999_us: merged.value_at_quantile(0.999),
        max_us: merged.max(),
        connects_per_s,
        broker_cpu_s,
        broker_rss_peak_kb,
        runner_cpu_s,
        latency_curve: if merged.is_empty() {
            Vec::new()
        } else {
            // Quantiles evenly spaced in "nines" (0, 90%, 99%, ...): where tails live.
            (0..=100)
                .map(|i| 1.0 - 10f64.powf(-(i as f64) * 0.05))
                .chain(std::iter::once(1.0))
                .map(|q| (q, merged.value_at_quantile(q)))
                .collect()
        },
    })
}

async fn run_thread(
    spec: RunSpec,
    clients: Vec<(String, Role)>,
    shared: Arc<Shared>,
) -> (Vec<PubResult>, Vec<SubResult>) {
    let pubs_out: Rc<RefCell<Vec<PubResult>>> = Rc::default();
    let subs_out: Rc<RefCell<Vec<SubResult>>> = Rc::default();
    let mut tasks = Vec::new();
    // Connection attempts in progress on this thread (connections shape).
    let connecting: Rc<Cell<usize>> = Rc::default();
    for (id, role) in clients {
        let connecting = connecting.clone();
        let spec = spec.clone();
        let shared = shared.clone();
        let pubs_out = pubs_out.clone();
        let subs_out = subs_out.clone();
        tasks.push(glommio::spawn_local(async move {
            match role {
                Role::Pub { index, topic } => {
                    let r = publisher(&spec, &id, index, topic, false, &shared).await;
                    shared.pubs_done.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok((r, _)) => pubs_out.borrow_mut().push(r),
                        Err(e) => shared.fail(&id, e),
                    }
                }
                Role::Peer { index, topic } => {
                    // Counts itself in `pubs_done` when its publishing part ends; its
                    // receiving part goes on until the whole mesh is done.
                    match publisher(&spec, &id, index, topic, true, &shared).await {
                        Ok((p, s)) => {
                            pubs_out.borrow_mut().push(p);
                            if let Some(s) = s {
                                subs_out.borrow_mut().push(s);
                            }
                        }
                        Err(e) => shared.fail(&id, e),
                    }
                }
                Role::Sub { topic } => match subscriber(&spec, &id, topic, &shared).await {
                    Ok(r) => subs_out.borrow_mut().push(r),
                    Err(e) => shared.fail(&id, e),
                },
                Role::Idle => {
                    if let Err(e) = idle(&spec, &id, &shared, &connecting).await {
                        shared.fail(&id, e);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let p = std::mem::take(&mut *pubs_out.borrow_mut());
    let s = std::mem::take(&mut *subs_out.borrow_mut());
    (p, s)
}

fn topic_name(spec: &RunSpec, topic: usize) -> String {
    format!("{}/t{topic}", spec.prefix)
}

/// Keep alive of publishing and subscribing clients, in seconds. Not 0 (no keep alive),
/// which MQTT allows but rumqttd refuses; long enough that a quiet QoS 0 subscriber, which
/// sends nothing, is not timed out during any realistic run (the broker allows 1.5x).
const RUN_KEEP_ALIVE: u16 = 600;

/// Writes all of `bytes` and flushes (a TLS stream sends its last records on flush).
async fn send<W: futures::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// A runner client's stream: plain TCP or TLS (rustls) over TCP.
enum BenchStream {
    Tcp(Tcp),
    Tls(Box<futures_rustls::client::TlsStream<Tcp>>),
}

impl futures::AsyncRead for BenchStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            BenchStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl futures::AsyncWrite for BenchStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            BenchStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            BenchStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(s) => std::pin::Pin::new(s).poll_close(cx),
            BenchStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// Connects and completes CONNECT / CONNACK.
async fn open(
    spec: &RunSpec,
    id: &str,
    keep_alive: u16,
) -> Result<(BenchStream, BytesMut), String> {
    open_with_terms(spec, id, keep_alive)
        .await
        .map(|(s, b, _)| (s, b))
}

/// [`open`], with the QoS 1/2 messages the broker takes at once from this client (its
/// 5.0 Receive Maximum; 65,535 when it says nothing, and on 3.1.1).
async fn open_with_terms(
    spec: &RunSpec,
    id: &str,
    keep_alive: u16,
) -> Result<(BenchStream, BytesMut, u16), String> {
    let tcp = Tcp::connect(spec.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = match &spec.tls {
        None => BenchStream::Tcp(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(spec.tls_name.clone())
                .map_err(|e| format!("TLS name {:?}: {e}", spec.tls_name))?;
            let tls = futures_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            BenchStream::Tls(Box::new(tls))
        }
    };
    let mut out = BytesMut::new();
    let mut properties = Properties::new();
    if spec.persistent && spec.version.is_v5() {
        properties.get_mut().session_expiry_interval = Some(u32::MAX);
    }
    Packet::Connect(Box::new(Connect {
        version: spec.version,
        clean_start: !spec.persistent,
        keep_alive,
        client_id: ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties,
    }))
    .encode(spec.version, &mut out)
    .map_err(|e| e.to_string())?;
    send(&mut stream, &out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = BytesMut::new();
    match read_packet(&mut stream, &mut buf, spec.version).await? {
        Packet::ConnAck(a) if a.reason.is_success() => {
            let rm = a.properties.receive_maximum.unwrap_or(u16::MAX);
            Ok((stream, buf, rm))
        }
        Packet::ConnAck(a) => Err(format!("CONNECT refused: {}", a.reason)),
        other => Err(format!("expected CONNACK, got {:?}", other.packet_type())),
    }
}

async fn read_more(stream: &mut BenchStream, buf: &mut BytesMut) -> Result<usize, String> {
    let len = buf.len();
    buf.resize(len + 64 * 1024, 0);
    let r = stream.read(&mut buf[len..]).await;
    match r {
        Ok(0) => {
            buf.truncate(len);
            Err("broker closed the connection".into())
        }
        Ok(n) => {
            buf.truncate(len + n);
            Ok(n)
        }
        Err(e) => {
            buf.truncate(len);
            Err(format!("read: {e}"))
        }
    }
}

async fn read_packet(
    stream: &mut BenchStream,
    buf: &mut BytesMut,
    version: ProtocolVersion,
) -> Result<Packet, String> {
    let opts = DecodeOptions::new(version);
    loop {
        if let Some(p) = decode(buf, &opts).map_err(|e| format!("bad packet from broker: {e}"))? {
            return Ok(p);
        }
        read_more(stream, buf).await?;
    }
}

async fn idle(
    spec: &RunSpec,
    id: &str,
    shared: &Shared,
    connecting: &Cell<usize>,
) -> Result<(), String> {
    // At most `connect_concurrency` attempts at once per runner thread: a burst of
    // thousands of SYNs overflows any listener's accept queue (somaxconn) and the dropped
    // ones retry only after a second, which would measure the kernel's retry timer rather
    // than the broker.
    while connecting.get() >= spec.connect_concurrency.max(1) {
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
    connecting.set(connecting.get() + 1);
    let opened = open(spec, id, 600).await;
    connecting.set(connecting.get() - 1);
    let (mut stream, _buf) = opened?;
    shared.connected.fetch_add(1, Ordering::Relaxed);
    while !shared.stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    let _ = send(&mut stream, &[0xE0, 0x00]).await;
    Ok(())
}

/// Counts a publisher in `Shared::pubs_done` exactly once: when its publishing ends, or
/// when it is dropped on an error path.
struct PubsDone<'a> {
    shared: &'a Shared,
    done: bool,
}

impl PubsDone<'_> {
    fn mark(&mut self) {
        if !self.done {
            self.done = true;
            self.shared.pubs_done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for PubsDone<'_> {
    fn drop(&mut self) {
        self.mark();
    }
}

/// The receiving half of a subscriber or mesh peer: sequence tracking, latency, acks for
/// what it receives, and the end-of-run rule.
struct Receiver {
    tracker: SeqTracker,
    hist: Histogram<u64>,
    last_ns: u64,
    topic: usize,
    quiet_since: Option<Instant>,
    opts: DecodeOptions,
}

/// Acks for our own publishes, seen by a peer's reader.
#[derive(Debug, Default)]
struct OwnAcks {
    /// PUBACK / PUBCOMP count.
    done: u64,
}

impl Receiver {
    fn new(shared: &Shared, topic: usize, version: ProtocolVersion) -> Receiver {
        Receiver {
            tracker: SeqTracker::new(shared.pubs_total),
            hist: histogram(),
            last_ns: 0,
            topic,
            quiet_since: None,
            opts: DecodeOptions::new(version),
        }
    }

    /// Decodes every complete packet in `buf`: PUBLISHes are recorded and acknowledged into
    /// `out`; acks of our own publishes are counted in `own` (PUBREC answered with PUBREL).
    fn consume(
        &mut self,
        buf: &mut BytesMut,
        out: &mut BytesMut,
        own: &mut OwnAcks,
        shared: &Shared,
    ) -> Result<u64, String> {
        let opts = self.opts;
        let mut got = 0u64;
        loop {
            match decode(buf, &opts) {
                Ok(Some(Packet::Publish(p))) => {
                    got += 1;
                    let now = shared.now_ns();
                    let stamp = Stamp::read(&p.payload);
                    if let Some(s) = stamp {
                        let _ = self
                            .hist
                            .record((now.saturating_sub(s.sent_ns) / 1000).max(1));
                    }
                    self.tracker.record(stamp);
                    self.last_ns = now;
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            let [hi, lo] = id.get().to_be_bytes();
                            out.put_slice(&[0x40, 0x02, hi, lo]);
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            let [hi, lo] = id.get().to_be_bytes();
                            out.put_slice(&[0x50, 0x02, hi, lo]);
                        }
                        _ => {}
                    }
                }
                Ok(Some(Packet::PubRel(a))) => {
                    let [hi, lo] = a.packet_id.get().to_be_bytes();
                    out.put_slice(&[0x70, 0x02, hi, lo]);
                }
                Ok(Some(Packet::PubAck(_))) | Ok(Some(Packet::PubComp(_))) => own.done += 1,
                Ok(Some(Packet::PubRec(a))) => {
                    let [hi, lo] = a.packet_id.get().to_be_bytes();
                    out.put_slice(&[0x62, 0x02, hi, lo]);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(format!("bad packet from broker: {e}")),
            }
        }
        if got > 0 {
            shared.received.fetch_add(got, Ordering::Relaxed);
            self.quiet_since = None;
        }
        Ok(got)
    }

    /// The run is over for this receiver: stopped, or every publisher finished and either
    /// everything expected arrived or nothing arrived for two seconds.
    fn finished(&mut self, spec: &RunSpec, shared: &Shared) -> bool {
        if shared.stop.load(Ordering::Relaxed) {
            return true;
        }
        if shared.pubs_done.load(Ordering::Relaxed) < shared.pubs_total {
            return false;
        }
        if let Some(count) = spec.count {
            let on_topic = (0..shared.pubs_total)
                .filter(|i| i % spec.layout().2 == self.topic)
                .count() as u64;
            if self.tracker.distinct >= on_topic * count {
                return true;
            }
        }
        match self.quiet_since {
            Some(t) => t.elapsed() >= Duration::from_secs(2),
            None => {
                self.quiet_since = Some(Instant::now());
                false
            }
        }
    }

    fn result(self) -> SubResult {
        SubResult {
            tracker: self.tracker,
            hist: self.hist,
            last_ns: self.last_ns,
            expected_topic: self.topic,
        }
    }
}

/// Writes the acks the reader queued, then waits for the reader's next notification or
/// 50 ms, whichever comes first (the caller re-checks its condition).
async fn flush_control_then_wait<W: futures::AsyncWrite + Unpin>(
    wr: &mut W,
    control: &RefCell<BytesMut>,
    acked: &Notify,
) -> Result<(), String> {
    let rel = std::mem::take(&mut *control.borrow_mut());
    if !rel.is_empty() {
        send(wr, &rel).await.map_err(|e| format!("write: {e}"))?;
    }
    let n = acked.notified();
    let t = glommio::timer::sleep(Duration::from_millis(50));
    futures::pin_mut!(n, t);
    futures::future::select(n, t).await;
    Ok(())
}

/// Sends SUBSCRIBE for `topic` and waits for a successful SUBACK.
async fn subscribe_to(
    spec: &RunSpec,
    stream: &mut BenchStream,
    buf: &mut BytesMut,
    topic: usize,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::MIN,
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(topic_name(spec, topic)).map_err(|e| e.to_string())?,
            options: SubscriptionOptions::new(spec.qos),
        }],
        properties: Properties::new(),
    })
    .encode(spec.version, &mut out)
    .map_err(|e| e.to_string())?;
    send(stream, &out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    match read_packet(stream, buf, spec.version).await? {
        Packet::SubAck(a) if a.codes.first().is_some_and(|c| c.is_success()) => Ok(()),
        other => Err(format!("SUBSCRIBE refused: {other:?}")),
    }
}

/// Reads into `buf` for at most 100 ms (so the end of a run is noticed); `Ok(false)` on a
/// quiet tick.
async fn read_tick<R: futures::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<bool, String> {
    let len = buf.len();
    buf.resize(len + 64 * 1024, 0);
    let r = {
        let read = rd.read(&mut buf[len..]);
        let tick = glommio::timer::sleep(Duration::from_millis(100));
        futures::pin_mut!(read, tick);
        match futures::future::select(read, tick).await {
            futures::future::Either::Left((r, _)) => Some(r),
            futures::future::Either::Right(_) => None,
        }
    };
    match r {
        Some(Ok(0)) => {
            buf.truncate(len);
            Err("broker closed the connection".into())
        }
        Some(Ok(n)) => {
            buf.truncate(len + n);
            Ok(true)
        }
        Some(Err(e)) => {
            buf.truncate(len);
            Err(format!("read: {e}"))
        }
        None => {
            buf.truncate(len);
            Ok(false)
        }
    }
}

/// A publisher; with `peer` also a subscriber to its own topic on the same connection
/// (the mesh shape), returning what it received.
async fn publisher(
    spec: &RunSpec,
    id: &str,
    index: usize,
    topic: usize,
    peer: bool,
    shared: &Arc<Shared>,
) -> Result<(PubResult, Option<SubResult>), String> {
    let mut pubs_done = peer.then_some(PubsDone {
        shared,
        done: false,
    });
    let (mut stream, mut buf, receive_maximum) = open_with_terms(spec, id, RUN_KEEP_ALIVE).await?;
    if peer {
        subscribe_to(spec, &mut stream, &mut buf, topic).await?;
        shared.subs_ready.fetch_add(1, Ordering::Relaxed);
    }
    while !shared.start.load(Ordering::Relaxed) {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok((
                PubResult {
                    index,
                    ..PubResult::default()
                },
                None,
            ));
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let topic_str = topic_name(spec, topic);
    let size = spec.size.max(STAMP_LEN);
    let mut payload = vec![0xA5u8; size];
    let deadline = Instant::now() + spec.duration;
    let limit = spec.count.unwrap_or(u64::MAX);
    let first_ns = shared.now_ns();
    let interval_ns = spec.rate.map(|r| 1_000_000_000 / r.max(1));
    let (mut rd, mut wr) = stream.split();
    // Within the broker's 5.0 Receive Maximum [MQTT-3.3.4-7].
    let window = if spec.qos == QoS::AtMostOnce {
        usize::MAX
    } else {
        spec.inflight.max(1).min(usize::from(receive_maximum))
    };
    // Acknowledged (QoS 1) or completed (QoS 2) count, maintained by the reader task.
    let done = Rc::new(Cell::new(0u64));
    let acked = Rc::new(Notify::default());
    // What the reader wants written: PUBREL, and a peer's PUBACK / PUBREC / PUBCOMP.
    let control: Rc<RefCell<BytesMut>> = Rc::default();
    let failed: Rc<RefCell<Option<String>>> = Rc::default();
    let reader_done = Rc::new(Cell::new(false));
    let reader = if spec.qos != QoS::AtMostOnce || peer {
        let done = done.clone();
        let acked = acked.clone();
        let control = control.clone();
        let failed = failed.clone();
        let reader_done = reader_done.clone();
        let spec = spec.clone();
        let shared = shared.clone();
        let mut recv = Receiver::new(&shared, topic, spec.version);
        Some(glommio::spawn_local(async move {
            let mut own = OwnAcks::default();
            let r: Result<(), String> = async {
                loop {
                    {
                        let mut out = control.borrow_mut();
                        recv.consume(&mut buf, &mut out, &mut own, &shared)?;
                    }
                    done.set(own.done);
                    acked.notify();
                    // A plain publisher's reader lives until it is dropped; a peer's ends
                    // with the run.
                    if peer && recv.finished(&spec, &shared) {
                        return Ok(());
                    }
                    read_tick(&mut rd, &mut buf).await?;
                }
            }
            .await;
            if let Err(e) = r {
                *failed.borrow_mut() = Some(e);
            }
            reader_done.set(true);
            acked.notify();
            recv
        }))
    } else {
        None
    };
    let take_control = || std::mem::take(&mut *control.borrow_mut());
    let mut sent = 0u64;
    let mut next_id: u16 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    while sent < limit && !shared.stop.load(Ordering::Relaxed) {
        if spec.count.is_none() && Instant::now() >= deadline {
            break;
        }
        if let Some(e) = failed.borrow_mut().take() {
            return Err(e);
        }
        // Room in the window?
        let in_flight = (sent - done.get()) as usize;
        if in_flight >= window {
            let rel = take_control();
            if !rel.is_empty() {
                send(&mut wr, &rel)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
            }
            acked.notified().await;
            continue;
        }
        // Open loop: wait for the message's slot; the stamp is the intended time.
        let sent_ns = match interval_ns {
            Some(iv) => {
                let due = first_ns + sent * iv;
                let now = shared.now_ns();
                if due > now {
                    glommio::timer::sleep(Duration::from_nanos(due - now)).await;
                }
                due
            }
            None => shared.now_ns(),
        };
        let batch_end = (sent + (window - in_flight).min(64) as u64).min(limit);
        let mut stamp_ns = sent_ns;
        while sent < batch_end && out.len() < 60 * 1024 {
            Stamp {
                publisher: index as u32,
                seq: sent,
                sent_ns: stamp_ns,
            }
            .write(&mut payload);
            let id = if spec.qos == QoS::AtMostOnce {
                None
            } else {
                next_id = next_id.wrapping_add(1);
                if next_id == 0 {
                    next_id = 1;
                }
                PacketId::new(next_id)
            };
            encode_publish_header(
                spec.version,
                false,
                spec.qos,
                false,
                &topic_str,
                id,
                &Properties::new(),
                size,
                &mut out,
            )
            .map_err(|e| e.to_string())?;
            out.put_slice(&payload);
            sent += 1;
            if interval_ns.is_some() {
                break;
            }
            stamp_ns = shared.now_ns();
        }
        {
            let rel = take_control();
            if !rel.is_empty() {
                out.put_slice(&rel);
            }
        }
        send(&mut wr, &out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        out.clear();
        glommio::yield_if_needed().await;
    }
    // Wait for the last acknowledgements.
    if spec.qos != QoS::AtMostOnce {
        let wait_until = Instant::now() + Duration::from_secs(30);
        while done.get() < sent && Instant::now() < wait_until {
            if let Some(e) = failed.borrow_mut().take() {
                return Err(e);
            }
            flush_control_then_wait(&mut wr, &control, &acked).await?;
        }
        sent = done.get();
    }
    shared.sent.fetch_add(sent, Ordering::Relaxed);
    if let Some(p) = pubs_done.as_mut() {
        p.mark();
    }
    // A peer keeps acknowledging what it receives until its reader has seen the end.
    let received = match reader {
        Some(reader) if peer => {
            while !reader_done.get() {
                flush_control_then_wait(&mut wr, &control, &acked).await?;
            }
            let recv = reader.await;
            if let Some(e) = failed.borrow_mut().take() {
                return Err(e);
            }
            Some(recv.result())
        }
        other => {
            drop(other);
            None
        }
    };
    let _ = send(&mut wr, &[0xE0, 0x00]).await;
    Ok((
        PubResult {
            index,
            sent,
            first_ns,
        },
        received,
    ))
}

async fn subscriber(
    spec: &RunSpec,
    id: &str,
    topic: usize,
    shared: &Shared,
) -> Result<SubResult, String> {
    let (mut stream, mut buf) = open(spec, id, RUN_KEEP_ALIVE).await?;
    subscribe_to(spec, &mut stream, &mut buf, topic).await?;
    shared.subs_ready.fetch_add(1, Ordering::Relaxed);
    let mut recv = Receiver::new(shared, topic, spec.version);
    let mut own = OwnAcks::default();
    let mut out = BytesMut::new();
    loop {
        recv.consume(&mut buf, &mut out, &mut own, shared)?;
        if !out.is_empty() {
            send(&mut stream, &out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            out.clear();
        }
        if recv.finished(spec, shared) {
            break;
        }
        read_tick(&mut stream, &mut buf).await?;
    }
    let _ = send(&mut stream, &[0xE0, 0x00]).await;
    Ok(recv.result())
}

/// Samples the broker's CPU time and RSS from /proc while a run lasts.
struct BrokerMonitor {
    pid: Option<u32>,
    cpu_start: Option<f64>,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BrokerMonitor {
    fn start(pid: Option<u32>) -> BrokerMonitor {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = pid.map(|pid| {
            let peak = peak.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = proc_rss_kb(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        BrokerMonitor {
            pid,
            cpu_start: pid.and_then(proc_cpu_s),
            peak,
            stop,
            thread,
        }
    }

    fn finish(mut self) -> (Option<f64>, Option<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let cpu = match (self.pid.and_then(proc_cpu_s), self.cpu_start) {
            (Some(end), Some(start)) => Some(end - start),
            _ => None,
        };
        let peak = self.peak.load(Ordering::Relaxed);
        (cpu, self.pid.map(|_| peak))
    }
}

/// User + system CPU seconds of a process.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    Some((utime + stime) / ticks)
}

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Resident set size of a process in KiB.
pub fn proc_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
