//! `surgemq-bench`: drives any MQTT 3.1.1 or 5.0 broker and reports throughput, latency and
//! delivery correctness. See `surgemq::bench` for what each shape does.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use surgemq::bench::{run, svg, RunSpec, Shape};
use surgemq::protocol::QoS;

/// Benchmark an MQTT broker: one-to-one, fan-in, fan-out, mesh, custom, connections.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Load shape.
    #[arg(value_enum)]
    shape: Shape,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Publishers (fan-in, mesh, custom; default 20 for fan-in and mesh).
    #[arg(long)]
    pubs: Option<usize>,
    /// Subscribers (fan-out, custom; default 20 for fan-out).
    #[arg(long)]
    subs: Option<usize>,
    /// Topics (custom).
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// QoS 0, 1 or 2.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// MQTT version every client speaks: 3.1.1 (or 4) or 5 (or 5.0).
    #[arg(long, default_value = "3.1.1")]
    protocol: String,
    /// Payload bytes (at least 24: the stamp).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages per publisher (default 100000 unless --duration is given).
    #[arg(long)]
    count: Option<u64>,
    /// Run for this many seconds instead of a count.
    #[arg(long)]
    duration: Option<f64>,
    /// Open loop: messages per second per publisher (default: as fast as allowed).
    #[arg(long)]
    rate: Option<u64>,
    /// QoS 1/2 messages in flight per publisher (closed loop).
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Runner threads (one executor each).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin runner threads to, e.g. "1" or "2,3".
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// Idle connections (connections shape).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connection attempts in flight at once per runner thread (connections shape).
    #[arg(long, default_value_t = 1000)]
    connect_concurrency: usize,
    /// Broker pid: report its CPU time and peak RSS during the run.
    #[arg(long)]
    pid: Option<u32>,
    /// Progress line every second.
    #[arg(long)]
    progress: bool,
    /// Every client with a persistent session (3.1.1 clean session 0, 5.0 session expiry
    /// "never"), so that a durable broker writes the messages down.
    #[arg(long)]
    persistent: bool,
    /// Write the latency distribution of the run as an SVG chart to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
    /// Connect over TLS, trusting the certificate authorities in this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the broker's certificate must carry (with --tls-ca).
    #[arg(long, default_value = "localhost")]
    tls_name: String,
}

/// `surgemq-bench chart RESULTS.jsonl OUT.svg`: a bar chart of msgs/s per shape per broker
/// from `scripts/compare.sh`'s results.
fn chart(args: &[String]) -> ExitCode {
    let [input, output] = args else {
        eprintln!("usage: surgemq-bench chart RESULTS.jsonl OUT.svg");
        return ExitCode::from(2);
    };
    let r = svg::bars_from_results(std::path::Path::new(input)).and_then(|bars| {
        svg::throughput_chart(
            std::path::Path::new(output),
            "messages/s received, per shape and QoS (1 KiB payloads)",
            &bars,
        )
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("surgemq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("chart") {
        return chart(argv.get(2..).unwrap_or_default());
    }
    let a = Args::parse();
    let Some(addr) = (a.host.as_str(), a.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut i| i.next())
    else {
        eprintln!("surgemq-bench: cannot resolve {}:{}", a.host, a.port);
        return ExitCode::from(2);
    };
    let Some(qos) = QoS::from_u8(a.qos) else {
        eprintln!("surgemq-bench: --qos must be 0, 1 or 2");
        return ExitCode::from(2);
    };
    let version = match a.protocol.as_str() {
        "3.1.1" | "4" => surgemq::protocol::ProtocolVersion::V3_1_1,
        "5" | "5.0" => surgemq::protocol::ProtocolVersion::V5,
        other => {
            eprintln!("surgemq-bench: --protocol must be 3.1.1 or 5, not {other}");
            return ExitCode::from(2);
        }
    };
    let mut spec = RunSpec::new(addr, a.shape);
    spec.version = version;
    if let Some(p) = a.pubs {
        spec.pubs = p;
    }
    if let Some(s) = a.subs {
        spec.subs = s;
    }
    spec.topics = a.topics;
    spec.qos = qos;
    spec.size = a.size.max(24);
    match (a.count, a.duration) {
        (_, Some(d)) => {
            spec.count = a.count;
            spec.duration = Duration::from_secs_f64(d);
        }
        (Some(c), None) => spec.count = Some(c),
        (None, None) => {}
    }
    spec.rate = a.rate;
    spec.inflight = a.inflight;
    spec.threads = a.threads;
    spec.cpus = a.cpus;
    spec.connections = a.connections;
    spec.connect_concurrency = a.connect_concurrency;
    spec.broker_pid = a.pid;
    spec.progress = a.progress;
    spec.persistent = a.persistent;
    if let Some(ca) = &a.tls_ca {
        let config = std::fs::read(ca)
            .map_err(|e| e.to_string())
            .and_then(|pem| surgemq::security::tls::client_config(&pem).map_err(|e| e.to_string()));
        match config {
            Ok(c) => spec.tls = Some(std::sync::Arc::new(c)),
            Err(e) => {
                eprintln!("surgemq-bench: --tls-ca {}: {e}", ca.display());
                return ExitCode::from(2);
            }
        }
        spec.tls_name = a.tls_name.clone();
    }
    match run(&spec) {
        Ok(r) => {
            print!("{}", r.table());
            println!("{}", r.json());
            if let Some(path) = &a.svg {
                let title = format!(
                    "{} QoS {} {} B: latency (p50 {} µs, p99 {} µs, max {} µs)",
                    r.shape, r.qos, r.size, r.p50_us, r.p99_us, r.max_us
                );
                match svg::latency_svg(path, &title, &r.latency_curve) {
                    Ok(()) => eprintln!("surgemq-bench: wrote {}", path.display()),
                    Err(e) => eprintln!("surgemq-bench: {e}"),
                }
            }
            if qos != QoS::AtMostOnce && r.lost > 0 {
                eprintln!("surgemq-bench: {} QoS {} messages lost", r.lost, a.qos);
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("surgemq-bench: {e}");
            ExitCode::from(1)
        }
    }
}
