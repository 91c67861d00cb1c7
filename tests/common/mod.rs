//! Shared harness for the broker integration tests: an in-process broker on an ephemeral
//! port with at least two shards, client ids chosen to land on a given shard, and a
//! raw-bytes MQTT client over blocking `std::net::TcpStream` with timeouts.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use surgemq::config::Config;
use surgemq::protocol::*;
use surgemq::server::{home_shard, Server, ServerHandle};

/// How long a test waits for an expected packet.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure nothing arrives.
pub const QUIET: Duration = Duration::from_millis(300);

/// A broker running in this process.
pub struct Broker {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub shards: usize,
}

impl Broker {
    /// A broker with `shards` shards and default limits.
    pub fn start(shards: usize) -> Broker {
        Self::with(shards, |_| {})
    }

    /// A broker with `shards` shards, `tweak`ed, and `auth` as its hooks (authentication
    /// and authorization).
    pub fn with_hooks(
        shards: usize,
        tweak: impl FnOnce(&mut Config),
        auth: impl surgemq::server::Authenticator,
    ) -> Broker {
        let mut cfg = Config {
            listeners: vec!["127.0.0.1:0".parse().unwrap()],
            shards,
            log_level: "warn".into(),
            ..Config::default()
        };
        tweak(&mut cfg);
        let handle = Server::new(cfg)
            .with_authenticator(auth)
            .start()
            .expect("broker starts");
        let addr = handle.local_addrs()[0];
        Broker {
            handle: Some(handle),
            addr,
            shards,
        }
    }

    /// A broker with `shards` shards after `tweak` adjusts the configuration.
    pub fn with(shards: usize, tweak: impl FnOnce(&mut Config)) -> Broker {
        Self::with_hooks(shards, tweak, surgemq::server::AllowAll)
    }

    /// A client id with `prefix` whose session lives on `shard`.
    pub fn id_on(&self, shard: usize, prefix: &str) -> String {
        id_on(shard, self.shards, prefix)
    }

    /// A raw client connected (TCP only, no CONNECT yet).
    pub fn raw(&self, version: ProtocolVersion) -> Raw {
        Raw::open(self.addr, version)
    }

    /// A raw client that sent CONNECT and got CONNACK; asserts it was accepted.
    pub fn client(&self, version: ProtocolVersion, client_id: &str, clean: bool) -> Raw {
        let mut c = self.raw(version);
        let ack = c.connect(client_id, clean, 0, None);
        assert_eq!(
            ack.reason,
            ReasonCode::SUCCESS,
            "CONNECT of {client_id} refused"
        );
        c
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

/// Sets `c` to keep sessions and retained messages in `dir`, each change on disk before it
/// is acknowledged (`persistence.mode = "sync"`).
pub fn persist_sync(c: &mut Config, dir: &std::path::Path) {
    c.persistence.mode = surgemq::config::PersistMode::Sync;
    c.persistence.dir = dir.to_owned();
}

/// A client id starting with `prefix` that hashes to `shard` of `shards`.
pub fn id_on(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| home_shard(id, shards) == shard)
        .unwrap()
}

pub fn pid(n: u16) -> PacketId {
    NonZeroU16::new(n).unwrap()
}

/// The byte stream of a [`Raw`] client: plain TCP, or TLS (rustls) over TCP.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_write_timeout(t)
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        self.tcp().shutdown(how)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A minimal MQTT client speaking raw packets.
pub struct Raw {
    pub stream: Stream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
    /// Answer PUBREL with PUBCOMP inside `recv` instead of returning it (default on), so
    /// that QoS 2 deliveries interleaved with other packets are easy to consume.
    pub auto_pubcomp: bool,
}

impl Raw {
    /// Reads exactly `n` raw bytes (waiting up to [`WAIT`]); what follows stays in `buf`.
    pub fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "wanted {n} bytes, got {:02x?}",
                &self.buf[..]
            );
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed after {:02x?}, wanted {n} bytes",
                    &self.buf[..]
                ),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => panic!("read error after {:02x?}: {e}", &self.buf[..]),
            }
        }
        self.buf.split_to(n).to_vec()
    }

    /// Every byte the broker sends until it closes the connection (EOF or reset); panics
    /// if the connection is still open after [`WAIT`].
    pub fn bytes_until_closed(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut got = self.buf.split().to_vec();
        loop {
            let now = Instant::now();
            assert!(now < deadline, "connection still open; got {got:02x?}");
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return got,
                Ok(k) => got.extend_from_slice(&chunk[..k]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return got,
            }
        }
    }

    pub fn open(addr: SocketAddr, version: ProtocolVersion) -> Raw {
        let stream = TcpStream::connect(addr).expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream: Stream::Tcp(stream),
            buf: BytesMut::new(),
            version,
            auto_pubcomp: true,
        }
    }

    /// A client over TLS with `config` (no CONNECT yet); the handshake runs with the first
    /// write.
    pub fn open_tls(
        addr: SocketAddr,
        version: ProtocolVersion,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Raw {
        let tcp = TcpStream::connect(addr).expect("tcp connect");
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
        Raw {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
            buf: BytesMut::new(),
            version,
            auto_pubcomp: true,
        }
    }

    pub fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("write");
        self.stream.flush().expect("flush");
    }

    /// Sends bytes, tolerating a connection the broker already closed.
    pub fn try_send_bytes(&mut self, b: &[u8]) -> bool {
        self.stream.write_all(b).is_ok() && self.stream.flush().is_ok()
    }

    /// Sends a packet, tolerating a connection the broker already closed (or refused at
    /// its TLS handshake); false if it did not go out.
    pub fn try_send(&mut self, p: &Packet) -> bool {
        let mut b = BytesMut::new();
        p.encode(self.version, &mut b).expect("encode");
        self.try_send_bytes(&b)
    }

    pub fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(self.version, &mut b).expect("encode");
        self.send_bytes(&b);
    }

    /// Sends CONNECT and returns the CONNACK.
    pub fn connect(
        &mut self,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
        will: Option<Will>,
    ) -> ConnAck {
        self.connect_with(Connect {
            version: self.version,
            clean_start: clean,
            keep_alive,
            client_id: ByteString::from(client_id),
            will,
            username: None,
            password: None,
            properties: Properties::new(),
        })
    }

    pub fn connect_with(&mut self, c: Connect) -> ConnAck {
        self.send(&Packet::Connect(Box::new(c)));
        match self.recv() {
            Packet::ConnAck(a) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet, or None if none arrives within `wait` (panics on a closed
    /// connection or a decode error).
    pub fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        let opts = DecodeOptions::new(self.version);
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = decode(&mut self.buf, &opts).expect("broker sent a valid packet") {
                if let (true, Packet::PubRel(a)) = (self.auto_pubcomp, &p) {
                    let comp = Packet::PubComp(Ack::new(a.packet_id));
                    self.send(&comp);
                    continue;
                }
                return Some(p);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed while waiting for a packet"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("read error: {e}"),
            }
        }
    }

    /// The next packet (panics after [`WAIT`]).
    pub fn recv(&mut self) -> Packet {
        self.recv_within(WAIT)
            .expect("no packet within the wait time")
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub fn expect_nothing(&mut self) {
        if let Some(p) = self.recv_within(QUIET) {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Waits until the broker closes the connection (EOF or reset). Returns the packets
    /// received before the close.
    pub fn expect_closed(&mut self) -> Vec<Packet> {
        match self.closed_within(WAIT) {
            Some(got) => got,
            None => panic!("connection still open; buffered {:?}", &self.buf[..]),
        }
    }

    /// SUBSCRIBE and wait for SUBACK; returns the codes.
    pub fn subscribe(&mut self, id: u16, filters: &[(&str, QoS)]) -> Vec<ReasonCode> {
        let with: Vec<_> = filters
            .iter()
            .map(|(f, q)| (*f, SubscriptionOptions::new(*q)))
            .collect();
        self.subscribe_with(id, &with)
    }

    /// SUBSCRIBE with every option chosen, and wait for SUBACK; returns the codes.
    pub fn subscribe_with(
        &mut self,
        id: u16,
        filters: &[(&str, SubscriptionOptions)],
    ) -> Vec<ReasonCode> {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            subscriptions: filters
                .iter()
                .map(|(f, o)| Subscription {
                    filter: TopicFilter::new(*f).unwrap(),
                    options: *o,
                })
                .collect(),
            properties: Properties::new(),
        }));
        match self.recv() {
            Packet::SubAck(a) => {
                assert_eq!(a.packet_id, pid(id));
                a.codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// PUBLISH (QoS 0 needs `id` None).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        id: Option<u16>,
    ) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: TopicName::new(topic).unwrap(),
            packet_id: id.map(pid),
            properties: Properties::new(),
            payload: Bytes::copy_from_slice(payload),
        }));
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP). A 5.0
    /// ack may say 0x10 (no matching subscribers), a success like 0x00.
    pub fn publish_acked(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) {
        let v5 = self.version.is_v5();
        let ok = |a: &Ack| {
            a.packet_id == pid(id)
                && (a.reason == ReasonCode::SUCCESS
                    || a.reason == ReasonCode::NO_MATCHING_SUBSCRIBERS && v5)
        };
        match qos {
            QoS::AtMostOnce => self.publish(topic, payload, qos, retain, None),
            QoS::AtLeastOnce => {
                self.publish(topic, payload, qos, retain, Some(id));
                let got = self.recv();
                assert!(matches!(&got, Packet::PubAck(a) if ok(a)), "{got:?}");
            }
            QoS::ExactlyOnce => {
                self.publish(topic, payload, qos, retain, Some(id));
                let got = self.recv();
                assert!(matches!(&got, Packet::PubRec(a) if ok(a)), "{got:?}");
                // PUBREL is ours to send here; the broker's PUBCOMP answers it.
                self.send(&Packet::PubRel(Ack::new(pid(id))));
                assert_eq!(self.recv(), Packet::PubComp(Ack::new(pid(id))));
            }
        }
    }

    /// Receives one PUBLISH and acknowledges it as its QoS requires.
    pub fn recv_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(p) => {
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => self.send(&Packet::PubAck(Ack::new(id))),
                    // PUBREL comes later and is answered by `recv` (auto_pubcomp).
                    (QoS::ExactlyOnce, Some(id)) => self.send(&Packet::PubRec(Ack::new(id))),
                    _ => {}
                }
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::default()));
    }

    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        assert_eq!(self.recv(), Packet::PingResp);
    }
}

/// A read that timed out (blocking sockets report either kind).
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

pub const V31: ProtocolVersion = ProtocolVersion::V3_1;
pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
/// The 3.x versions every 3.x behaviour is tested in.
pub const V3: [ProtocolVersion; 2] = [V31, V311];

// ---------------------------------------------------------------------------------------
// Helpers for the session, will, keepalive, takeover, malformed-input and limits tests.

/// A will message for CONNECT.
pub fn will_msg(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
        properties: Properties::new(),
    }
}

/// A CONNECT packet with the usual fields.
pub fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<Will>,
) -> Connect {
    Connect {
        version,
        clean_start: clean,
        keep_alive,
        client_id: ByteString::from(client_id),
        will,
        username: None,
        password: None,
        properties: Properties::new(),
    }
}

/// Appends `n` as a variable byte integer (a remaining length).
pub fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends `s` as a length-prefixed string.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A topic `{prefix}{i}` (the first `i` that fits) whose retained message lives on `shard`
/// of `shards`.
pub fn topic_on(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|t| home_shard(t, shards) == shard)
        .expect("some topic hashes there")
}

/// One frame: `header`, the remaining length as a variable byte integer, `body`.
pub fn raw_frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A two-byte length followed by `s` (MQTT string / binary data).
pub fn raw_str(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

impl Broker {
    /// A raw client that sent this CONNECT and got CONNACK; asserts it was accepted.
    pub fn client_with(
        &self,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
        will: Option<Will>,
    ) -> Raw {
        let mut c = self.raw(version);
        let ack = c.connect(client_id, clean, keep_alive, will);
        assert_eq!(
            ack.reason,
            ReasonCode::SUCCESS,
            "CONNECT of {client_id} refused"
        );
        c
    }
}

impl Raw {
    /// Sends `c` and returns the raw CONNACK bytes (always 4 bytes in 3.x), so that the
    /// session-present byte can be checked exactly, also on 3.1 where the decoder ignores
    /// it. Bytes after the CONNACK stay buffered for `recv`.
    pub fn connect_raw_ack(&mut self, c: Connect) -> [u8; 4] {
        self.send(&Packet::Connect(Box::new(c)));
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < 4 {
            let now = Instant::now();
            assert!(now < deadline, "no CONNACK within the wait time");
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed while waiting for CONNACK"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("read error: {e}"),
            }
        }
        let ack = self.buf.split_to(4);
        [ack[0], ack[1], ack[2], ack[3]]
    }

    /// Waits up to `wait` for the broker to close the connection (EOF or reset). Returns
    /// the packets received before the close, or None if the connection is still open at
    /// the deadline (received bytes then stay buffered).
    pub fn closed_within(&mut self, wait: Duration) -> Option<Vec<Packet>> {
        let deadline = Instant::now() + wait.max(Duration::from_millis(1));
        let closed = loop {
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break true,
            }
        };
        if !closed {
            return None;
        }
        let opts = DecodeOptions::new(self.version);
        let mut got = Vec::new();
        while let Ok(Some(p)) = decode(&mut self.buf, &opts) {
            got.push(p);
        }
        Some(got)
    }

    /// True if the connection is still open (nothing is read beyond what arrives in 1 ms).
    pub fn is_open(&mut self) -> bool {
        self.closed_within(Duration::from_millis(1)).is_none()
    }

    /// Receives one PUBLISH without acknowledging it.
    pub fn recv_publish_noack(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends DISCONNECT and waits until the broker closed the connection (so the session
    /// is detached, or gone, by the time this returns). Returns the packets that were
    /// still unread.
    pub fn disconnect_and_wait(mut self) -> Vec<Packet> {
        self.send(&Packet::Disconnect(Disconnect::default()));
        self.expect_closed()
    }

    /// Sends a PUBLISH with every header flag chosen by the caller.
    pub fn publish_flags(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        dup: bool,
        id: Option<u16>,
    ) {
        self.send(&Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic: TopicName::new(topic).unwrap(),
            packet_id: id.map(pid),
            properties: Properties::new(),
            payload: Bytes::copy_from_slice(payload),
        }));
    }
}

/// The exact CONNACK bytes of an accepted 3.x CONNECT: session present only exists in
/// 3.1.1; in 3.1 the byte is reserved and 0.
pub fn connack(v: ProtocolVersion, present: bool) -> [u8; 4] {
    [0x20, 0x02, u8::from(present && v == V311), 0x00]
}

/// Connects `id` with `clean` and asserts the exact CONNACK (session present `present`).
pub fn connect_expect(b: &Broker, v: ProtocolVersion, id: &str, clean: bool, present: bool) -> Raw {
    let mut c = b.raw(v);
    let ack = c.connect_raw_ack(connect_packet(v, id, clean, 0, None));
    assert_eq!(
        ack,
        connack(v, present),
        "CONNACK of {id} ({v:?}, clean {clean})"
    );
    c
}
