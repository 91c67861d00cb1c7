//! pingmq: the original SurgeMQ's demo, an uptime monitor over MQTT.
//!
//! A pinger checks a list of hosts on a schedule and publishes every result to
//! `pingmq/<host>/up` or `pingmq/<host>/down` (payload: round-trip time or the error). A
//! watcher subscribes to `pingmq/+/+` and prints a host once it has failed N times in a row,
//! and again when it recovers. Works against SurgeMQ, mosquitto or any MQTT 3.1.1 broker.
//!
//! Probes are ICMP echo where the process may open a raw socket (root or CAP_NET_RAW), and
//! a TCP connect to `--port` otherwise (`--tcp` forces it). A host may carry its own port,
//! `host:port`, which always means a TCP probe.
//!
//! ```text
//! cargo run --example pingmq -- ping  --broker 127.0.0.1:1883 --hosts 10.0.0.1,example.org --interval 5
//! cargo run --example pingmq -- watch --broker 127.0.0.1:1883 --failures 3
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::StreamExt;
use surgemq::client::{glommio_connect, Backoff, ConnectOptions};
use surgemq::protocol::QoS;

#[derive(Parser)]
#[command(about = "Uptime monitor over MQTT (the SurgeMQ pingmq demo)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Probe hosts on a schedule and publish each result.
    Ping {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Hosts to check, comma-separated (name, address, or host:port for a TCP probe).
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
        /// Seconds between rounds.
        #[arg(long, default_value_t = 5.0)]
        interval: f64,
        /// Rounds to run (0: forever).
        #[arg(long, default_value_t = 0)]
        rounds: u64,
        /// Probe timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        /// Port for TCP probes.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// Always probe with TCP connect, never ICMP.
        #[arg(long)]
        tcp: bool,
    },
    /// Print hosts that failed N times in a row (and when they recover).
    Watch {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Consecutive failures before a host is reported down.
        #[arg(long, default_value_t = 3)]
        failures: u32,
        /// Exit after this many reports (0: run forever).
        #[arg(long, default_value_t = 0)]
        reports: u64,
    },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            match cli.mode {
                Mode::Ping {
                    broker,
                    hosts,
                    interval,
                    rounds,
                    timeout_ms,
                    port,
                    tcp,
                } => {
                    ping(
                        &broker,
                        hosts,
                        interval,
                        rounds,
                        Duration::from_millis(timeout_ms),
                        port,
                        tcp,
                    )
                    .await
                }
                Mode::Watch {
                    broker,
                    failures,
                    reports,
                } => watch(&broker, failures, reports).await,
            }
        })?
        .join()?
        .map_err(|e| e.into())
}

type Res = Result<(), String>;

#[allow(clippy::too_many_arguments)]
async fn ping(
    broker: &str,
    hosts: Vec<String>,
    interval: f64,
    rounds: u64,
    timeout: Duration,
    port: u16,
    tcp: bool,
) -> Res {
    let options = ConnectOptions::new(format!("pingmq-pinger-{}", std::process::id()))
        .reconnect(Backoff::default());
    let (client, _messages, _) = glommio_connect(broker, options)
        .await
        .map_err(|e| e.to_string())?;
    let icmp = !tcp && icmp_allowed();
    eprintln!(
        "pingmq: probing {} hosts with {}",
        hosts.len(),
        if icmp { "ICMP echo" } else { "TCP connect" }
    );
    let mut round = 0u64;
    loop {
        let started = Instant::now();
        round += 1;
        for host in &hosts {
            let (h, p, use_icmp) = match host.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => {
                    (h.to_string(), p.parse().unwrap_or(port), false)
                }
                _ => (host.clone(), port, icmp),
            };
            let seq = round as u16;
            // Probes block (connect, recv); they run on glommio's blocking pool, not on the
            // executor thread that also drives the MQTT connection.
            let result = glommio::executor()
                .spawn_blocking(move || probe(&h, p, use_icmp, timeout, seq))
                .await;
            let (status, payload) = match result {
                Ok(rtt) => ("up", format!("{:.3} ms", rtt.as_secs_f64() * 1e3)),
                Err(e) => ("down", e),
            };
            let topic = format!("pingmq/{}/{status}", sanitize(host));
            client
                .publish(topic.as_str(), payload.clone(), QoS::AtLeastOnce, false)
                .await
                .map_err(|e| e.to_string())?;
            println!("{host} {status} {payload}");
        }
        if rounds != 0 && round >= rounds {
            break;
        }
        let next = started + Duration::from_secs_f64(interval);
        glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    client.disconnect().await.map_err(|e| e.to_string())
}

async fn watch(broker: &str, failures: u32, reports: u64) -> Res {
    let options = ConnectOptions::new(format!("pingmq-watcher-{}", std::process::id()))
        .reconnect(Backoff::default());
    let (client, mut messages, _) = glommio_connect(broker, options)
        .await
        .map_err(|e| e.to_string())?;
    client
        .subscribe("pingmq/+/+", QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    println!("watching pingmq/+/+ (down after {failures} failures in a row)");
    let mut streak: HashMap<String, u32> = HashMap::new();
    let mut reported = 0u64;
    while let Some(m) = messages.next().await {
        let mut levels = m.topic.split('/');
        let (Some(_), Some(host), Some(status)) = (levels.next(), levels.next(), levels.next())
        else {
            continue;
        };
        let n = streak.entry(host.to_string()).or_default();
        let line = match status {
            "down" => {
                *n += 1;
                (*n == failures).then(|| {
                    format!(
                        "DOWN {host}: failed {failures} times in a row ({})",
                        String::from_utf8_lossy(&m.payload)
                    )
                })
            }
            "up" => {
                let was_down = *n >= failures;
                *n = 0;
                was_down.then(|| format!("UP {host}: answering again"))
            }
            _ => None,
        };
        if let Some(line) = line {
            println!("{line}");
            reported += 1;
            if reports != 0 && reported >= reports {
                break;
            }
        }
    }
    client.disconnect().await.map_err(|e| e.to_string())
}

/// A topic level cannot hold `/`, `+` or `#`.
fn sanitize(host: &str) -> String {
    host.replace(['/', '+', '#'], "_")
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| "no IPv4 address".to_string())
}

fn probe(
    host: &str,
    port: u16,
    icmp: bool,
    timeout: Duration,
    seq: u16,
) -> Result<Duration, String> {
    let addr = resolve(host, port)?;
    let start = Instant::now();
    if icmp {
        icmp_echo(addr.ip(), timeout, seq)?;
    } else {
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("tcp {port}: {e}"))?;
    }
    Ok(start.elapsed())
}

fn icmp_socket() -> std::io::Result<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
}

fn icmp_allowed() -> bool {
    icmp_socket().is_ok()
}

/// One ICMP echo request and its reply on a raw socket (RFC 792).
fn icmp_echo(ip: IpAddr, timeout: Duration, seq: u16) -> Result<(), String> {
    let sock = icmp_socket().map_err(|e| format!("icmp socket: {e}"))?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"surgemq-pingmq");
    let sum = checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    sock.send_to(&pkt, &SocketAddr::new(ip, 0).into())
        .map_err(|e| format!("icmp send: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut sock = sock;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("icmp: timeout".into());
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("icmp: timeout".into())
            }
            Err(e) => return Err(format!("icmp recv: {e}")),
        };
        // A raw IPv4 socket delivers the IP header first; its length is IHL * 4.
        let Some(&vihl) = buf.first() else { continue };
        let ihl = usize::from(vihl & 0x0f) * 4;
        let Some(icmp) = buf.get(ihl..n) else {
            continue;
        };
        let src = buf
            .get(12..16)
            .map(|b| IpAddr::from([b[0], b[1], b[2], b[3]]));
        if icmp.len() >= 8
            && icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
            && src == Some(ip)
        {
            return Ok(());
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
