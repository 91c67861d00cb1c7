//! Client-side publish throughput: one SurgeMQ client against one rumqttc client, in the
//! same run, against the same brokers (mosquitto, and SurgeMQ with one shard).
//!
//! Each trial connects a fresh client and publishes `count` messages to a topic nobody
//! subscribes to, as fast as the client allows:
//! - QoS 1: both clients keep a window of 128 in flight (SurgeMQ: `Client::submit`;
//!   rumqttc: `set_inflight(128)`); the trial ends when the last PUBACK arrives.
//! - QoS 0: the trial ends when a QoS 1 publish sent after the last message is acked,
//!   so both clients are timed until the broker has read everything.
//!
//! The broker runs on CPU 0 and the client under test on CPU 1. Trials alternate between
//! the clients and the best of `--trials` is kept for each, so a noisy neighbour penalises
//! both alike. Prints a table and one JSON line.
//!
//! ```text
//! cargo bench --bench client -- [--count N] [--size B] [--trials T] [--broker mosquitto|surgemq|both]
//! ```

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use surgemq::client::{glommio_connect, ConnectOptions};
use surgemq::config::Config;
use surgemq::protocol::QoS;
use surgemq::server::{Server, ServerHandle};

struct Args {
    count: u64,
    size: usize,
    trials: usize,
    brokers: Vec<&'static str>,
}

fn args() -> Args {
    let mut a = Args {
        count: 200_000,
        size: 64,
        trials: 3,
        brokers: vec!["mosquitto", "surgemq"],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_default();
        match k.as_str() {
            "--count" => a.count = v().parse().expect("--count N"),
            "--size" => a.size = v().parse().expect("--size B"),
            "--trials" => a.trials = v().parse().expect("--trials T"),
            "--broker" => {
                a.brokers = match v().as_str() {
                    "mosquitto" => vec!["mosquitto"],
                    "surgemq" => vec!["surgemq"],
                    _ => vec!["mosquitto", "surgemq"],
                }
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

enum Broker {
    Mosquitto(Child),
    SurgeMq(Option<ServerHandle>),
}

fn start(kind: &str) -> (Broker, SocketAddr) {
    match kind {
        "mosquitto" => {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let conf = std::env::temp_dir().join(format!("surgemq-clientbench-{port}.conf"));
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n"),
            )
            .unwrap();
            let bin = if std::path::Path::new("/usr/sbin/mosquitto").is_file() {
                "/usr/sbin/mosquitto"
            } else {
                "mosquitto"
            };
            let child = Command::new("taskset")
                .args(["-c", &BROKER_CPU.to_string(), bin])
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto installed (apt-get install mosquitto)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(5);
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            (Broker::Mosquitto(child), addr)
        }
        _ => {
            let cfg = Config {
                listeners: vec!["127.0.0.1:0".parse().unwrap()],
                shards: 1,
                // The broker on CPU 0, the clients on CPU 1 (as scripts/compare.sh).
                cpus: Some(vec![BROKER_CPU]),
                log_level: "warn".into(),
                ..Config::default()
            };
            let h = Server::new(cfg).start().expect("broker starts");
            let addr = h.local_addrs()[0];
            (Broker::SurgeMq(Some(h)), addr)
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match self {
            Broker::Mosquitto(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Broker::SurgeMq(h) => {
                if let Some(h) = h.take() {
                    h.shutdown();
                }
            }
        }
    }
}

/// Where the broker runs; the client under test runs on `CLIENT_CPU`. Fixed placement
/// keeps trials comparable on a shared machine (an unpinned client may land on the
/// broker's CPU in one trial and not in the next).
const BROKER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

fn surgemq_trial(addr: SocketAddr, qos: QoS, count: u64, size: usize, n: usize) -> Duration {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(CLIENT_CPU))
        .spawn(move || async move {
            let o = ConnectOptions::new(format!("bench-surgemq-{n}")).max_inflight(128);
            let (c, _m, _) = glommio_connect(&addr.to_string(), o).await.unwrap();
            let topic = surgemq::protocol::TopicName::new("bench/client").unwrap();
            let payload = bytes::Bytes::from(vec![7u8; size]);
            let start = Instant::now();
            match qos {
                QoS::AtMostOnce => {
                    for _ in 0..count {
                        c.publish(&topic, payload.clone(), QoS::AtMostOnce, false)
                            .await
                            .unwrap();
                    }
                    c.publish(&topic, payload.clone(), QoS::AtLeastOnce, false)
                        .await
                        .unwrap();
                }
                _ => {
                    let mut window = VecDeque::with_capacity(256);
                    for _ in 0..count {
                        window.push_back(
                            c.submit(&topic, payload.clone(), qos, false).await.unwrap(),
                        );
                        if window.len() > 256 {
                            window.pop_front().unwrap().await.unwrap();
                        }
                    }
                    for d in window {
                        d.await.unwrap();
                    }
                }
            }
            let el = start.elapsed();
            c.disconnect().await.unwrap();
            el
        })
        .unwrap()
        .join()
        .unwrap()
}

fn rumqttc_trial(addr: SocketAddr, qos: QoS, count: u64, size: usize, n: usize) -> Duration {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = MqttOptions::new(
            format!("bench-rumqttc-{n}"),
            addr.ip().to_string(),
            addr.port(),
        );
        o.set_inflight(128);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 1024);
        // Acks expected before the trial is over.
        let want = if qos == QoS::AtMostOnce { 1 } else { count };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut acks = 0;
            let mut up = Some(up_tx);
            let mut tx = Some(tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(u) = up.take() {
                            let _ = u.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Incoming(Packet::PubComp(_))) => {
                        acks += 1;
                        if acks == want {
                            if let Some(t) = tx.take() {
                                let _ = t.send(Instant::now());
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        up_rx.await.unwrap();
        let payload = bytes::Bytes::from(vec![7u8; size]);
        let rq = match qos {
            QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
            QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
        };
        let start = Instant::now();
        for _ in 0..count {
            client
                .publish_bytes("bench/client", rq, false, payload.clone())
                .await
                .unwrap();
        }
        if qos == QoS::AtMostOnce {
            client
                .publish_bytes(
                    "bench/client",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.clone(),
                )
                .await
                .unwrap();
        }
        let end = rx.await.unwrap();
        let _ = client.disconnect().await;
        end - start
    })
}

fn main() {
    let a = args();
    println!(
        "client publish throughput: {} messages of {} B, best of {} trials per client",
        a.count, a.size, a.trials
    );
    println!(
        "{:<10} {:<4} {:>14} {:>14} {:>8}",
        "broker", "qos", "surgemq msg/s", "rumqttc msg/s", "ratio"
    );
    let mut json = Vec::new();
    let mut n = 0;
    for broker in &a.brokers {
        let (b, addr) = start(broker);
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let (mut ours, mut theirs) = (Duration::MAX, Duration::MAX);
            for t in 0..a.trials {
                n += 1;
                // Alternate which client goes first.
                if t % 2 == 0 {
                    ours = ours.min(surgemq_trial(addr, qos, a.count, a.size, n));
                    theirs = theirs.min(rumqttc_trial(addr, qos, a.count, a.size, n));
                } else {
                    theirs = theirs.min(rumqttc_trial(addr, qos, a.count, a.size, n));
                    ours = ours.min(surgemq_trial(addr, qos, a.count, a.size, n));
                }
            }
            let r = |d: Duration| a.count as f64 / d.as_secs_f64();
            let (o, t) = (r(ours), r(theirs));
            println!(
                "{:<10} {:<4} {:>14.0} {:>14.0} {:>8.2}",
                broker,
                qos as u8,
                o,
                t,
                o / t
            );
            json.push(format!(
                "{{\"broker\":\"{broker}\",\"qos\":{},\"surgemq_msgs_per_s\":{o:.0},\"rumqttc_msgs_per_s\":{t:.0},\"ratio\":{:.3}}}",
                qos as u8,
                o / t
            ));
        }
        drop(b);
    }
    println!(
        "{{\"bench\":\"client\",\"count\":{},\"size\":{},\"results\":[{}]}}",
        a.count,
        a.size,
        json.join(",")
    );
}
