//! MQTT over WebSockets (`[[listener]] protocol = "websockets"`), over real TCP with two
//! shards and round-robin accepting, so that WebSocket connections are accepted on one
//! shard and moved with their framing state to their session's home shard. A raw client
//! here builds the upgrade and the masked frames itself (to send fragmented, oversized,
//! text and control frames); Python's paho-mqtt is the client we did not write, over WS
//! and WSS. Bad input (an HTTP request that is not an upgrade, a text frame, an oversized
//! frame) gets a clear refusal or close, is counted, and nobody else notices.

#[path = "common/client_env.rs"]
mod client_env;
mod common;
#[path = "common/paho_round_trip.rs"]
mod paho_rt;
#[path = "common/test_ca.rs"]
mod test_ca;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use bytes::BytesMut;
use common::*;
use paho_rt::paho_round_trip;
use surgemq::config::{AcceptMode, Config, Listener, ListenerProtocol};
use surgemq::protocol::*;

/// A WebSocket MQTT client over a plain socket: the upgrade, masked frames out, frames in.
struct Ws {
    tcp: TcpStream,
    rbuf: Vec<u8>,
    version: ProtocolVersion,
    mqtt: BytesMut,
}

impl Ws {
    fn upgrade(addr: SocketAddr, path: &str, protocol: Option<&str>) -> (TcpStream, String) {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(p) = protocol {
            req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        (tcp, String::from_utf8_lossy(&head).into_owned())
    }

    fn open(addr: SocketAddr, version: ProtocolVersion) -> Ws {
        let (tcp, head) = Ws::upgrade(addr, "/mqtt", Some("mqtt"));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455's example key and its accept value.
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Protocol: mqtt"), "{head}");
        Ws {
            tcp,
            rbuf: Vec::new(),
            version,
            mqtt: BytesMut::new(),
        }
    }

    /// Sends one masked frame.
    fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x11, 0x22, 0x33, 0x44];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.tcp.write_all(&f).unwrap();
    }

    fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(self.version, &mut b).unwrap();
        self.frame(true, 2, &b);
    }

    /// The next server frame: (opcode, payload); None when the connection ends.
    fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.rbuf.len() >= 2 {
                let op = self.rbuf[0] & 0x0F;
                assert_eq!(self.rbuf[1] & 0x80, 0, "server frames are not masked");
                let (len, head) = match self.rbuf[1] & 0x7F {
                    126 if self.rbuf.len() >= 4 => {
                        (u16::from_be_bytes([self.rbuf[2], self.rbuf[3]]) as usize, 4)
                    }
                    127 if self.rbuf.len() >= 10 => {
                        let mut l = [0u8; 8];
                        l.copy_from_slice(&self.rbuf[2..10]);
                        (u64::from_be_bytes(l) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if head > 0 && self.rbuf.len() >= head + len {
                    let payload = self.rbuf[head..head + len].to_vec();
                    self.rbuf.drain(..head + len);
                    return Some((op, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            match self.tcp.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next MQTT packet, from however many binary frames it spans.
    fn recv(&mut self) -> Packet {
        loop {
            let opts = DecodeOptions::new(self.version);
            if let Some(p) = decode(&mut self.mqtt, &opts).unwrap() {
                return p;
            }
            let (op, payload) = self.next_frame().expect("connection open");
            assert!(op == 2 || op == 0, "a data frame that is not binary: {op}");
            self.mqtt.extend_from_slice(&payload);
        }
    }

    fn connect(&mut self, id: &str) {
        self.send(&Packet::Connect(Box::new(connect_packet(
            self.version,
            id,
            true,
            0,
            None,
        ))));
        assert!(matches!(self.recv(), Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS));
    }

    /// The close frame's code, once the server closes.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.next_frame()? {
                (8, p) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
                (8, _) => return Some(1005),
                _ => {}
            }
        }
    }
}

fn ws_listener() -> Listener {
    Listener {
        address: Some("127.0.0.1:0".parse().unwrap()),
        protocol: ListenerProtocol::Websockets,
        http_path: "/mqtt".into(),
        websockets_max_frame_size: 4096,
        ..Listener::default()
    }
}

fn start(listener: Listener) -> (Broker, SocketAddr) {
    let b = Broker::with(2, move |c: &mut Config| {
        c.accept_mode = AcceptMode::RoundRobin;
        c.listener = vec![listener];
    });
    let ws = b.handle.as_ref().unwrap().local_addrs()[1];
    (b, ws)
}

#[test]
fn websocket_clients_publish_and_subscribe_across_shards() {
    let (mut b, addr) = start(ws_listener());
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            let mut sub = Ws::open(addr, v);
            sub.connect(&b.id_on(shard, &format!("ws{tag}")));
            sub.send(&Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::new("w/#").unwrap(),
                    options: SubscriptionOptions::new(QoS::AtLeastOnce),
                }],
                properties: Properties::new(),
            }));
            assert!(matches!(sub.recv(), Packet::SubAck(_)));
            // A publisher whose CONNECT comes in two fragments, and whose PUBLISH shares
            // a frame with a PINGREQ.
            let mut publ = Ws::open(addr, v);
            let mut connect = BytesMut::new();
            Packet::Connect(Box::new(connect_packet(
                v,
                &b.id_on(1 - shard, &format!("wp{tag}")),
                true,
                0,
                None,
            )))
            .encode(v, &mut connect)
            .unwrap();
            let (a, c) = connect.split_at(5);
            publ.frame(false, 2, a);
            publ.frame(true, 0, c);
            assert!(matches!(publ.recv(), Packet::ConnAck(_)));
            let mut both = BytesMut::new();
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: TopicName::try_from("w/x").unwrap(),
                packet_id: None,
                properties: Properties::new(),
                payload: bytes::Bytes::from_static(b"over ws"),
            })
            .encode(v, &mut both)
            .unwrap();
            Packet::PingReq.encode(v, &mut both).unwrap();
            publ.frame(true, 2, &both);
            assert_eq!(publ.recv(), Packet::PingResp);
            match sub.recv() {
                Packet::Publish(p) => assert_eq!(&p.payload[..], b"over ws", "{tag}"),
                other => panic!("{tag}: {other:?}"),
            }
            // A ping frame is answered with a pong carrying its payload.
            sub.frame(true, 9, b"still there?");
            assert_eq!(sub.next_frame(), Some((10, b"still there?".to_vec())));
        }
    }
    let summary = b.handle.take().unwrap().shutdown();
    assert!(
        summary.connections_migrated >= 2,
        "no WebSocket connection moved: {summary:?}"
    );
}

#[test]
fn bad_upgrades_and_frames_are_refused_and_counted() {
    let (mut b, addr) = start(ws_listener());
    let mut bystander = Ws::open(addr, ProtocolVersion::V5);
    bystander.connect("bystander");
    // An HTTP request that is not an upgrade, and one for another path.
    for (path, upgrade) in [("/mqtt", false), ("/other", true)] {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let req = if upgrade {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 13\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        };
        tcp.write_all(req.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    // A text frame: closed with 1003 [MQTT-6.0.0-1].
    let mut text = Ws::open(addr, ProtocolVersion::V3_1_1);
    text.frame(true, 1, b"hello");
    assert_eq!(text.close_code(), Some(1003));
    // A frame over the listener's limit: closed with 1009.
    let mut big = Ws::open(addr, ProtocolVersion::V3_1_1);
    big.connect("big");
    big.frame(true, 2, &vec![0u8; 10_000]);
    assert_eq!(big.close_code(), Some(1009));
    // An unmasked frame: closed with 1002.
    let mut bare = Ws::open(addr, ProtocolVersion::V3_1_1);
    bare.tcp.write_all(&[0x82, 0x02, 0xC0, 0x00]).unwrap();
    assert_eq!(bare.close_code(), Some(1002));
    // The bystander noticed nothing.
    bystander.send(&Packet::PingReq);
    assert_eq!(bystander.recv(), Packet::PingResp);
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.websocket_errors >= 5, "{summary:?}");
}

fn paho(port: u16, proto: &str, ca: Option<&std::path::Path>) {
    let got = paho_round_trip(port, proto, true, ca, "hello over websockets");
    assert_eq!(got, "hello over websockets");
}

#[test]
fn paho_works_over_websockets_and_wss() {
    let (_b, addr) = start(ws_listener());
    for proto in ["311", "5"] {
        paho(addr.port(), proto, None);
    }
    // WSS: a CA and a server certificate for localhost.
    let dir = client_env::TempDir::new("wss");
    test_ca::write_localhost_ca(&dir.path, "WSS");
    let (_b, addr) = start(Listener {
        certfile: Some(dir.path.join("server.pem")),
        keyfile: Some(dir.path.join("server.key")),
        ..ws_listener()
    });
    for proto in ["311", "5"] {
        paho(addr.port(), proto, Some(&dir.path.join("ca.pem")));
    }
}

#[test]
fn an_upgrade_that_never_comes_is_closed_at_the_connect_timeout() {
    let b = Broker::with(2, |c: &mut Config| {
        c.limits.connect_timeout = 1;
        c.listener = vec![ws_listener()];
    });
    let addr = b.handle.as_ref().unwrap().local_addrs()[1];
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut trickle = TcpStream::connect(addr).unwrap();
    trickle.set_read_timeout(Some(WAIT)).unwrap();
    trickle.write_all(b"GET /mqtt HTTP/1.1\r\n").unwrap();
    let started = std::time::Instant::now();
    for (name, s) in [("silent", &mut silent), ("trickle", &mut trickle)] {
        let mut buf = [0u8; 256];
        // Closed (a 0-byte read or a reset), not left open until the read times out.
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(_) => {}
            Err(e) if !is_timeout(&e) => {}
            Err(e) => panic!("{name}: still open: {e}"),
        }
    }
    assert!(
        started.elapsed() < WAIT,
        "closed only after {:?}",
        started.elapsed()
    );
}

#[test]
fn frames_across_the_edges_of_the_protocol() {
    let (_b, addr) = start(Listener {
        websockets_max_frame_size: 200_000,
        ..ws_listener()
    });
    let v = ProtocolVersion::V5;
    // The CONNECT pipelined behind the upgrade request, in the same write.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        .to_vec();
    let mut connect = BytesMut::new();
    Packet::Connect(Box::new(connect_packet(v, "pipelined", true, 0, None)))
        .encode(v, &mut connect)
        .unwrap();
    let mask = [9u8, 8, 7, 6];
    bytes.extend_from_slice(&[0x82, 0x80 | connect.len() as u8]);
    bytes.extend_from_slice(&mask);
    bytes.extend(connect.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    tcp.write_all(&bytes).unwrap();
    let mut ws = Ws {
        tcp,
        rbuf: Vec::new(),
        version: v,
        mqtt: BytesMut::new(),
    };
    // Skip the 101 response, then the CONNACK arrives in a frame.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(matches!(ws.recv(), Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS));
    // A frame with a 64-bit length: a 70,000-byte PUBLISH to itself.
    ws.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new("big").unwrap(),
            options: SubscriptionOptions::new(QoS::AtMostOnce),
        }],
        properties: Properties::new(),
    }));
    assert!(matches!(ws.recv(), Packet::SubAck(_)));
    let payload = bytes::Bytes::from(vec![5u8; 70_000]);
    ws.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::try_from("big").unwrap(),
        packet_id: None,
        properties: Properties::new(),
        payload: payload.clone(),
    }));
    match ws.recv() {
        Packet::Publish(p) => assert_eq!(p.payload, payload),
        other => panic!("{other:?}"),
    }
    // A close from the client is answered with a close.
    ws.frame(true, 8, &1000u16.to_be_bytes());
    assert_eq!(ws.close_code(), Some(1000));
    // A continuation with no message started: closed with 1002.
    let mut stray = Ws::open(addr, v);
    stray.frame(true, 0, b"x");
    assert_eq!(stray.close_code(), Some(1002));
    // No MQTT subprotocol among those offered: refused.
    let (_tcp, head) = Ws::upgrade(addr, "/mqtt", Some("chat, superchat"));
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

#[test]
fn the_server_ends_websocket_connections_with_a_close_frame() {
    let (_b, addr) = start(ws_listener());
    let v = ProtocolVersion::V5;
    let mut c = Ws::open(addr, v);
    c.connect("ending");
    // A PUBLISH with QoS 3: malformed, so the server ends the connection (5.0: with a
    // DISCONNECT first), then closes the WebSocket properly.
    c.frame(true, 2, &[0x36, 0x03, 0x00, 0x01, b't']);
    assert!(matches!(c.recv(), Packet::Disconnect(_)));
    assert_eq!(c.close_code(), Some(1000));
}
