//! Harness for the client library tests: the two brokers a client must work against (an
//! in-process two-shard SurgeMQ and a `mosquitto` subprocess on its own port), a TCP proxy
//! that can cut or black-hole connections (for forced disconnects and dead brokers), and a
//! glommio executor per test.
//!
//! Included with `#[path = "common/client_env.rs"] mod client_env;` next to `mod common;`.
#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::Broker;

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SurgeMq,
    Mosquitto,
}

/// A running broker of either kind.
pub enum Target {
    SurgeMq(Broker),
    Mosquitto(Mosquitto),
}

impl Target {
    pub fn start(kind: Kind) -> Target {
        match kind {
            Kind::SurgeMq => Target::SurgeMq(Broker::start(2)),
            Kind::Mosquitto => Target::Mosquitto(Mosquitto::start()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            Target::SurgeMq(b) => b.addr,
            Target::Mosquitto(m) => m.addr,
        }
    }

    /// A client id whose session lives on `shard` of a SurgeMQ broker (any id for
    /// mosquitto), so tests put publisher and subscriber on different cores.
    pub fn id_on(&self, shard: usize, prefix: &str) -> String {
        match self {
            Target::SurgeMq(b) => b.id_on(shard, prefix),
            Target::Mosquitto(_) => format!("{prefix}-{shard}"),
        }
    }
}

const MOSQUITTO_HINT: &str = "the mosquitto broker is required: install the Debian/Ubuntu \
                              package mosquitto (`apt-get install mosquitto`)";

/// `mosquitto` on an ephemeral loopback port with queue limits lifted; killed on drop.
pub struct Mosquitto {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with("allow_anonymous true\n")
    }

    /// With extra configuration lines (e.g. `allow_anonymous false`).
    pub fn start_with(extra: &str) -> Mosquitto {
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("mosq");
            let conf = dir.path.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\n{extra}persistence false\n\
                     max_queued_messages 10000\nlog_type error\n"
                ),
            )
            .unwrap();
            let child = match Command::new(mosquitto_bin())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
            {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{MOSQUITTO_HINT}"),
                Err(e) => panic!("cannot start mosquitto: {e}"),
            };
            let mut m = Mosquitto {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect(m.addr).is_ok() {
                    return m;
                }
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = m.child.kill();
        }
        panic!("mosquitto did not start listening");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto` from PATH, else where Debian installs it (/usr/sbin is not on every PATH).
fn mosquitto_bin() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("mosquitto").is_file()))
        .unwrap_or(false);
    if on_path {
        "mosquitto".into()
    } else {
        "/usr/sbin/mosquitto".into()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "surgemq-{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A TCP proxy in front of a broker. `cut()` closes every connection through it (a forced
/// disconnect, as a network failure looks to both ends); `blackhole(true)` keeps them open
/// but silently discards what flows either way (a dead broker or path); `drop_downstream`
/// discards only broker-to-client bytes (acks lost in flight).
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
}

struct ProxyState {
    conns: Mutex<Vec<TcpStream>>,
    blackhole: AtomicBool,
    drop_down: AtomicBool,
    refuse: AtomicBool,
    stop: AtomicBool,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            conns: Mutex::new(Vec::new()),
            blackhole: AtomicBool::new(false),
            drop_down: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(down) = conn else { continue };
                if st.refuse.load(Ordering::Relaxed) {
                    drop(down);
                    continue;
                }
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = up.set_nodelay(true);
                let _ = down.set_nodelay(true);
                {
                    let mut c = st.conns.lock().unwrap();
                    c.push(down.try_clone().unwrap());
                    c.push(up.try_clone().unwrap());
                }
                pump(
                    down.try_clone().unwrap(),
                    up.try_clone().unwrap(),
                    st.clone(),
                    false,
                );
                pump(up, down, st.clone(), true);
            }
        });
        Proxy { addr, state }
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        for c in self.state.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn blackhole(&self, on: bool) {
        self.state.blackhole.store(on, Ordering::SeqCst);
    }

    pub fn drop_downstream(&self, on: bool) {
        self.state.drop_down.store(on, Ordering::SeqCst);
    }

    /// New connections are accepted and closed at once (broker unreachable).
    pub fn refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
        let _ = TcpStream::connect(self.addr);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, st: Arc<ProxyState>, downstream: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if st.blackhole.load(Ordering::SeqCst)
                || (downstream && st.drop_down.load(Ordering::SeqCst))
            {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        // A black hole does not pass a close on either: the other end must find out itself.
        if !st.blackhole.load(Ordering::SeqCst) {
            let _ = to.shutdown(Shutdown::Write);
        }
    });
}

/// Runs `f` on a fresh glommio executor thread and returns its output; a test fails if it
/// takes longer than `limit`.
pub fn run<F, Fut, T>(limit: Duration, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let out = f().await;
            let _ = tx.send(out);
        })
        .expect("glommio executor starts");
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        // The sender is gone: the task panicked; join says why.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(e) => panic!("test task failed: {e:?}"),
            Ok(()) => panic!("test task ended without a result"),
        },
        // A hang: fail now; the executor thread is left behind.
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("test task did not finish within {limit:?}")
        }
    }
}

/// Awaits `fut` for at most `d` (glommio timer).
pub async fn within<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    use futures::future::{select, Either};
    let sleep = glommio::timer::sleep(d);
    futures::pin_mut!(fut);
    futures::pin_mut!(sleep);
    match select(fut, sleep).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Connects a glommio client (asserting it connects): handle, message stream, session
/// present.
pub async fn conn(
    addr: SocketAddr,
    o: surgemq::client::ConnectOptions,
) -> (surgemq::client::Client, surgemq::client::Messages, bool) {
    surgemq::client::glommio_connect(&addr.to_string(), o)
        .await
        .expect("client connects")
}

/// The next message, within 10 s (asserting it comes).
pub async fn next(m: &mut surgemq::client::Messages) -> surgemq::client::Message {
    use futures::StreamExt;
    within(Duration::from_secs(10), m.next())
        .await
        .expect("a message within the wait")
        .expect("stream open")
}
