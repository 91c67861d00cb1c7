//! MQTT over TLS (`[[listener]]` with certfile / keyfile), and mutual TLS (cafile,
//! require_certificate, use_identity_as_username): over real TCP with two shards and
//! round-robin accepting, so that TLS connections are accepted on one shard and moved,
//! with their TLS state, to their session's home shard. Certificates are made at test time
//! (rcgen). Interop with mosquitto_pub / mosquitto_sub over TLS. Bad input: a plain MQTT
//! client and garbage on a TLS port, and a client without a certificate where one is
//! required, are closed and counted, and nobody else notices.

#[path = "common/client_env.rs"]
mod client_env;
mod common;
#[path = "common/paho_round_trip.rs"]
mod paho;

use std::process::Command;
use std::sync::Arc;

use common::*;
use paho::paho_round_trip;
use surgemq::config::{AcceptMode, Config, Listener, TlsVersion};
use surgemq::protocol::*;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// A CA, a server certificate for localhost / 127.0.0.1 and a client certificate for
/// "alice", as PEM files in a temporary directory.
struct Pki {
    dir: client_env::TempDir,
    ca: rcgen::Certificate,
    client_cert: rcgen::Certificate,
    client_key: rcgen::KeyPair,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = client_env::TempDir::new(tag);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("SurgeMQ test CA {tag}"));
        let ca = ca.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &ca, &ca_key)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let client_cert = client.signed_by(&client_key, &ca, &ca_key).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path.join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        write("client.pem", client_cert.pem());
        write("client.key", client_key.serialize_pem());
        Pki {
            dir,
            ca,
            client_cert,
            client_key,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path.join(name)
    }

    /// A TLS listener on a free port with this PKI's server certificate.
    fn listener(&self) -> Listener {
        Listener {
            address: Some("127.0.0.1:0".parse().unwrap()),
            certfile: Some(self.path("server.pem")),
            keyfile: Some(self.path("server.key")),
            ..Listener::default()
        }
    }

    /// A client configuration trusting this CA, with alice's certificate when `cert`.
    fn client(&self, cert: bool) -> Arc<rustls::ClientConfig> {
        if cert {
            return client_from(self, self);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A broker with a plain listener (its `addr`) and `listener`; returns it and the TLS
/// listener's address.
fn start(listener: Listener, tweak: impl FnOnce(&mut Config)) -> (Broker, std::net::SocketAddr) {
    let b = Broker::with(2, move |c: &mut Config| {
        c.accept_mode = AcceptMode::RoundRobin;
        c.listener = vec![listener];
        tweak(c);
    });
    let tls = b.handle.as_ref().unwrap().local_addrs()[1];
    (b, tls)
}

fn connect_tls(
    addr: std::net::SocketAddr,
    v: ProtocolVersion,
    config: &Arc<rustls::ClientConfig>,
    id: &str,
) -> Raw {
    let mut c = Raw::open_tls(addr, v, config.clone());
    let ack = c.connect(id, true, 0, None);
    assert_eq!(ack.reason, ReasonCode::SUCCESS, "TLS CONNECT of {id}");
    c
}

#[test]
fn tls_clients_publish_and_subscribe_across_shards() {
    let pki = Pki::new("tls");
    let (mut b, tls) = start(pki.listener(), |_| {});
    let config = pki.client(false);
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            // Several connections each, so that round-robin accepting puts some on the
            // other shard first: they move home with their TLS state.
            // CONNECT and SUBSCRIBE in one write: what was decrypted behind the CONNECT
            // moves home with the connection.
            let mut sub = Raw::open_tls(tls, v, config.clone());
            let mut bytes = bytes::BytesMut::new();
            let connect = connect_packet(v, &b.id_on(shard, &format!("s{tag}")), true, 0, None);
            Packet::Connect(Box::new(connect))
                .encode(v, &mut bytes)
                .unwrap();
            Packet::Subscribe(Subscribe {
                packet_id: pid(1),
                subscriptions: vec![Subscription {
                    filter: TopicFilter::new("tls/#").unwrap(),
                    options: SubscriptionOptions::new(QoS::AtLeastOnce),
                }],
                properties: Properties::new(),
            })
            .encode(v, &mut bytes)
            .unwrap();
            sub.send_bytes(&bytes);
            assert!(matches!(sub.recv(), Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS));
            assert!(matches!(sub.recv(), Packet::SubAck(_)), "{tag}");
            let mut tls_pub = connect_tls(tls, v, &config, &b.id_on(1 - shard, &format!("p{tag}")));
            let mut plain_pub = b.client(v, &b.id_on(shard, &format!("q{tag}")), true);
            tls_pub.publish_acked("tls/a", b"over tls", QoS::AtLeastOnce, false, 1);
            plain_pub.publish_acked("tls/b", b"over tcp", QoS::AtLeastOnce, false, 1);
            // A large one: many TLS records each way.
            let big = vec![7u8; 200_000];
            tls_pub.publish_acked("tls/big", &big, QoS::AtLeastOnce, false, 2);
            let mut got = Vec::new();
            for _ in 0..3 {
                let p = sub.recv_publish();
                sub.send(&Packet::PubAck(Ack::new(p.packet_id.unwrap())));
                got.push(p.payload.len());
            }
            got.sort_unstable();
            assert_eq!(got, [8, 8, 200_000], "{tag}");
            sub.expect_nothing();
        }
    }
    // Round robin per listener: the TLS listener's second connection of each round goes to
    // shard 1, so for shard 1 both TLS clients start on the other shard and move (two per
    // version); the plain publishers always start at home.
    let summary = b.handle.take().unwrap().shutdown();
    assert!(
        summary.connections_migrated >= 6,
        "TLS connections did not move: {summary:?}"
    );
}

#[test]
fn mutual_tls_names_the_user_and_refuses_clients_without_a_certificate() {
    let pki = Pki::new("mtls");
    let acl = pki.path("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let listener = Listener {
        cafile: Some(pki.path("ca.pem")),
        require_certificate: true,
        use_identity_as_username: true,
        allow_anonymous: Some(false),
        tls_version: TlsVersion::Tls13,
        ..pki.listener()
    };
    let (mut b, tls) = start(listener, move |c| c.acl_file = Some(acl));
    let with_cert = pki.client(true);
    for v in VERSIONS {
        for shard in 0..2 {
            let tag = format!("{}{shard}", v.level());
            // The CONNECT says mallory; the certificate's CN is the user name, and the ACL
            // file applies to alice.
            let mut a = Raw::open_tls(tls, v, with_cert.clone());
            let mut c = connect_packet(v, &b.id_on(shard, &format!("m{tag}")), true, 0, None);
            c.username = Some("mallory".into());
            c.password = Some(bytes::Bytes::from_static(b"whatever"));
            assert_eq!(a.connect_with(c).reason, ReasonCode::SUCCESS, "{tag}");
            assert_eq!(
                a.subscribe(1, &[("alice/#", QoS::AtLeastOnce)]),
                [ReasonCode(1)]
            );
            let denied = if v.is_v5() {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::UNSPECIFIED_ERROR
            };
            assert_eq!(a.subscribe(2, &[("bob/#", QoS::AtLeastOnce)]), [denied]);
            a.publish_acked("alice/x", b"mine", QoS::AtLeastOnce, false, 3);
            let p = a.recv_publish();
            assert_eq!(&p.payload[..], b"mine", "{tag}");
        }
    }
    // Without a certificate: the handshake fails, the connection closes, the broker goes on.
    let mut bare = Raw::open_tls(tls, ProtocolVersion::V3_1_1, pki.client(false));
    let mut c = connect_packet(ProtocolVersion::V3_1_1, "nocert", true, 0, None);
    c.username = Some("alice".into());
    // TLS 1.3: the client learns of the refusal on its first read.
    let _ = bare.try_send(&Packet::Connect(Box::new(c)));
    assert!(
        bare.closed_within(WAIT).is_some(),
        "a client without a certificate was served"
    );
    let mut again = connect_tls(tls, ProtocolVersion::V5, &with_cert, "after");
    again.ping();
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.tls_handshake_failed >= 1, "{summary:?}");
}

#[test]
fn a_plain_client_or_garbage_on_a_tls_port_is_closed_and_counted() {
    let pki = Pki::new("tlsbad");
    let (mut b, tls) = start(pki.listener(), |_| {});
    let config = pki.client(false);
    let mut ok = connect_tls(tls, ProtocolVersion::V5, &config, "bystander");
    ok.subscribe(1, &[("t", QoS::AtMostOnce)]);
    // An MQTT CONNECT where a ClientHello belongs.
    let mut plain = Raw::open(tls, ProtocolVersion::V3_1_1);
    plain.send(&Packet::Connect(Box::new(connect_packet(
        ProtocolVersion::V3_1_1,
        "plain",
        true,
        0,
        None,
    ))));
    let answer = plain.bytes_until_closed();
    // At most a TLS alert record (content type 21), never an MQTT CONNACK.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:02x?}");
    // A garbage "ClientHello".
    let mut garbage = Raw::open(tls, ProtocolVersion::V3_1_1);
    garbage.send_bytes(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8]);
    garbage.bytes_until_closed();
    // The bystander noticed nothing.
    let mut p = connect_tls(tls, ProtocolVersion::V5, &config, "pub");
    p.publish("t", b"still here", QoS::AtMostOnce, false, None);
    assert_eq!(&ok.recv_publish().payload[..], b"still here");
    let summary = b.handle.take().unwrap().shutdown();
    assert!(summary.tls_handshake_failed >= 2, "{summary:?}");
}

#[test]
fn mosquitto_clients_work_over_tls_and_mutual_tls() {
    let pki = Pki::new("tlsmosq");
    let listener = Listener {
        cafile: Some(pki.path("ca.pem")),
        require_certificate: true,
        ..pki.listener()
    };
    let (_b, tls) = start(listener, |_| {});
    let port = tls.port().to_string();
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let tls_args = |cmd: &mut Command| {
        cmd.args(["-h", "localhost", "-p", &port, "--cafile"])
            .arg(&ca)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key);
    };
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        let mut sub = Command::new("mosquitto_sub");
        tls_args(&mut sub);
        sub.args(["-V", v, "-t", "m/#", "-C", "1", "-W", "10", "-q", "1"]);
        let sub = sub
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is required: apt-get install mosquitto-clients");
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut publish = Command::new("mosquitto_pub");
        tls_args(&mut publish);
        let ok = publish
            .args(["-V", v, "-t", "m/x", "-m", "hello tls", "-q", "1"])
            .status()
            .unwrap();
        assert!(ok.success(), "mosquitto_pub {v}");
        let out = sub.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hello tls",
            "{v}"
        );
    }
    // Without a client certificate, mosquitto_pub is refused.
    let refused = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&ca)
        .args(["-t", "m/x", "-m", "x"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
}

#[test]
fn a_reload_serves_the_new_certificate_and_keeps_connections() {
    let old = Pki::new("tlsold");
    let (b, tls) = start(old.listener(), |_| {});
    let mut kept = connect_tls(tls, ProtocolVersion::V3_1_1, &old.client(false), "kept");
    // A certificate from another CA replaces the files.
    let new = Pki::new("tlsnew");
    for f in ["server.pem", "server.key"] {
        std::fs::copy(new.path(f), old.path(f)).unwrap();
    }
    b.handle.as_ref().unwrap().reload_security().unwrap();
    let mut fresh = connect_tls(tls, ProtocolVersion::V3_1_1, &new.client(false), "fresh");
    fresh.ping();
    kept.ping();
    // A client that trusts only the old CA is now refused.
    let mut stale = Raw::open_tls(tls, ProtocolVersion::V3_1_1, old.client(false));
    let connect = connect_packet(ProtocolVersion::V3_1_1, "stale", true, 0, None);
    assert!(
        !stale.try_send(&Packet::Connect(Box::new(connect))),
        "the old CA still verifies"
    );
    // A broken key file is refused and the certificate in force stays.
    std::fs::write(old.path("server.key"), "not a key").unwrap();
    assert!(b.handle.as_ref().unwrap().reload_security().is_err());
    connect_tls(tls, ProtocolVersion::V5, &new.client(false), "after").ping();
}

#[test]
fn listener_settings_are_validated_before_start() {
    let pki = Pki::new("tlscfg");
    let cases: Vec<(Listener, &str)> = vec![
        (
            Listener {
                keyfile: None,
                ..pki.listener()
            },
            "certfile and keyfile",
        ),
        (
            Listener {
                require_certificate: true,
                ..pki.listener()
            },
            "needs cafile",
        ),
        (
            Listener {
                address: None,
                ..pki.listener()
            },
            "required",
        ),
    ];
    for (l, want) in cases {
        let cfg = Config {
            listeners: vec![],
            listener: vec![l],
            shards: 1,
            ..Config::default()
        };
        let e = surgemq::server::Server::new(cfg)
            .start()
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    // A key that is not one: refused with the file's name.
    std::fs::write(pki.path("bad.key"), "junk").unwrap();
    let cfg = Config {
        listeners: vec![],
        listener: vec![Listener {
            keyfile: Some(pki.path("bad.key")),
            ..pki.listener()
        }],
        shards: 1,
        ..Config::default()
    };
    let e = surgemq::server::Server::new(cfg)
        .start()
        .unwrap_err()
        .to_string();
    assert!(e.contains("server.pem") && e.contains("key"), "{e}");
    // `[[listener]]` without `listeners`: only the table is bound.
    let c = Config::from_toml_str(
        "[[listener]]\naddress = \"127.0.0.1:8883\"\ncertfile = \"c\"\nkeyfile = \"k\"\n",
    )
    .unwrap();
    assert!(c.listeners.is_empty());
    assert_eq!(c.listener.len(), 1);
    let c = Config::from_toml_str(
        "listeners = [\"127.0.0.1:1883\"]\n[[listener]]\naddress = \"127.0.0.1:8883\"\n",
    )
    .unwrap();
    assert_eq!(c.listeners.len(), 1);
}

#[test]
fn a_taken_over_tls_client_sees_a_clean_close() {
    let pki = Pki::new("tlstake");
    let (b, tls) = start(pki.listener(), |_| {});
    let config = pki.client(false);
    for shard in 0..2 {
        let id = b.id_on(shard, "take");
        let mut old = connect_tls(tls, ProtocolVersion::V5, &config, &id);
        old.ping();
        let mut new = connect_tls(tls, ProtocolVersion::V5, &config, &id);
        new.ping();
        // Whatever arrives must still be TLS: garbage would be a decode error.
        old.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match std::io::Read::read(&mut old.stream, &mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    assert_ne!(
                        e.kind(),
                        std::io::ErrorKind::InvalidData,
                        "shard {shard}: {e}"
                    );
                    break;
                }
            }
        }
    }
}

#[test]
fn a_cafile_alone_checks_certificates_that_are_presented() {
    let pki = Pki::new("tlsopt");
    let listener = Listener {
        cafile: Some(pki.path("ca.pem")),
        ..pki.listener()
    };
    let (_b, tls) = start(listener, |_| {});
    connect_tls(tls, ProtocolVersion::V5, &pki.client(false), "nocert").ping();
    connect_tls(tls, ProtocolVersion::V5, &pki.client(true), "cert").ping();
    // A certificate from another CA is refused.
    let other = Pki::new("tlsother");
    assert!(refused(tls, client_from(&pki, &other), "foreign"));
}

/// A client that trusts `server`'s CA and presents `client`'s certificate.
fn client_from(server: &Pki, client: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.ca.der().clone()).unwrap();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(client.client_key.serialize_der()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.client_cert.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

/// Whether a client with `config` is refused (its handshake fails and it is closed).
fn refused(tls: std::net::SocketAddr, config: Arc<rustls::ClientConfig>, id: &str) -> bool {
    let mut c = Raw::open_tls(tls, ProtocolVersion::V5, config);
    let connect = connect_packet(ProtocolVersion::V5, id, true, 0, None);
    let _ = c.try_send(&Packet::Connect(Box::new(connect)));
    c.closed_within(WAIT).is_some()
}

#[test]
fn a_reload_reads_the_cafile_again() {
    let pki = Pki::new("tlsca");
    let listener = Listener {
        cafile: Some(pki.path("ca.pem")),
        require_certificate: true,
        ..pki.listener()
    };
    let (b, tls) = start(listener, |_| {});
    let other = Pki::new("tlsca2");
    let v = ProtocolVersion::V5;
    connect_tls(tls, v, &pki.client(true), "first").ping();
    assert!(refused(tls, client_from(&pki, &other), "foreign"));
    // The CA file now names the other CA: its clients are served, the first CA's are not.
    std::fs::copy(other.path("ca.pem"), pki.path("ca.pem")).unwrap();
    b.handle.as_ref().unwrap().reload_security().unwrap();
    connect_tls(tls, v, &client_from(&pki, &other), "welcome").ping();
    assert!(refused(tls, pki.client(true), "revoked"));
    // A CA file that does not parse is refused; the one in force stays.
    std::fs::write(pki.path("ca.pem"), "not a certificate").unwrap();
    assert!(b.handle.as_ref().unwrap().reload_security().is_err());
    connect_tls(tls, v, &client_from(&pki, &other), "still").ping();
}

#[test]
fn the_surgemq_client_works_over_tls() {
    let pki = Pki::new("tlsclient");
    let (b, tls) = start(pki.listener(), |_| {});
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    let config = Arc::new(surgemq::security::tls::client_config(&ca).unwrap());
    let (id0, id1) = (b.id_on(0, "cl"), b.id_on(1, "cl"));
    client_env::run(WAIT * 4, move || async move {
        use futures::StreamExt;
        use surgemq::client::{glommio_connect_tls, ConnectOptions};
        for v in VERSIONS {
            let addr = tls.to_string();
            let opts = |id: &str| ConnectOptions::new(format!("{id}{}", v.level())).version(v);
            let (sub, mut msgs, _) =
                glommio_connect_tls(&addr, "localhost", config.clone(), opts(&id0))
                    .await
                    .unwrap();
            sub.subscribe("c/#", QoS::ExactlyOnce).await.unwrap();
            let (publ, _m, _) = glommio_connect_tls(&addr, "localhost", config.clone(), opts(&id1))
                .await
                .unwrap();
            publ.publish("c/x", "over tls", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            let m = msgs.next().await.expect("a message");
            assert_eq!(&m.payload[..], b"over tls", "{v:?}");
        }
    });
}

#[test]
fn paho_works_over_tls() {
    let pki = Pki::new("tlspaho");
    let (_b, tls) = start(pki.listener(), |_| {});
    for proto in ["311", "5"] {
        let got = paho_round_trip(
            tls.port(),
            proto,
            false,
            Some(&pki.path("ca.pem")),
            "hello from paho",
        );
        assert_eq!(got, "hello from paho");
    }
}

#[test]
fn the_server_ends_tls_connections_with_close_notify() {
    let pki = Pki::new("tlsend");
    let (_b, tls) = start(pki.listener(), |_| {});
    let config = pki.client(false);
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut c = connect_tls(tls, v, &config, &format!("end{}", v.level()));
        c.send(&Packet::Disconnect(Disconnect::default()));
        c.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 64];
        // A clean TLS end reads as 0 bytes; a cut without close_notify is UnexpectedEof.
        loop {
            match std::io::Read::read(&mut c.stream, &mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => panic!("{v:?}: {e}"),
            }
        }
    }
}
