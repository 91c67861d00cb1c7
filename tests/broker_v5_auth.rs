//! 5.0 enhanced authentication (§4.12) and Response Information over TCP with 2 shards
//! (clients whose sessions live on either shard, so the exchange also runs before a
//! connection moves home): the AUTH exchange at CONNECT through the hook, an unsupported
//! method (0x8C), failures and protocol errors during the exchange, re-authentication.

mod common;

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use surgemq::config::Config;
use surgemq::protocol::*;
use surgemq::server::{AuthExchange, AuthStep, Authenticator};

const V5: ProtocolVersion = ProtocolVersion::V5;
const METHOD: &str = "TOY-CHALLENGE";

/// Supports one method: the client says "hello", the server asks "challenge?", the client
/// must answer "answer"; success says "welcome".
struct Toy;

struct ToyExchange {
    asked: bool,
}

impl AuthExchange for ToyExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        match (self.asked, data) {
            (false, Some(b"hello")) => {
                self.asked = true;
                AuthStep::Continue(Some(Bytes::from_static(b"challenge?")))
            }
            (true, Some(b"answer")) => AuthStep::Success(Some(Bytes::from_static(b"welcome"))),
            _ => AuthStep::Fail(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }
}

impl Authenticator for Toy {
    fn authenticate(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<(), ReasonCode> {
        Ok(())
    }

    fn start_auth(&self, _: &str, _: Option<&str>, method: &str) -> Option<Box<dyn AuthExchange>> {
        (method == METHOD).then(|| Box::new(ToyExchange { asked: false }) as Box<dyn AuthExchange>)
    }
}

fn start(tweak: impl FnOnce(&mut Config)) -> Broker {
    Broker::with_hooks(2, tweak, Toy)
}

fn auth_props(method: &str, data: &'static [u8]) -> Properties {
    let mut p = Properties::new();
    p.get_mut().authentication_method = Some(ByteString::from(method));
    p.get_mut().authentication_data = Some(Bytes::from_static(data));
    p
}

fn auth(reason: ReasonCode, method: &str, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: auth_props(method, data),
    })
}

/// Sends a CONNECT for `id` with `method` and first `data`.
fn connect_auth(b: &Broker, id: &str, method: &str, data: &'static [u8]) -> Raw {
    let mut c = b.raw(V5);
    let mut connect = connect_packet(V5, id, true, 0, None);
    connect.properties = auth_props(method, data);
    c.send(&Packet::Connect(Box::new(connect)));
    c
}

/// Expects AUTH `reason` with the toy method and `data`.
fn expect_auth(c: &mut Raw, reason: ReasonCode, data: &[u8]) {
    match c.recv() {
        Packet::Auth(a) => {
            assert_eq!(a.reason, reason);
            assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
            assert_eq!(a.properties.authentication_data.as_deref(), Some(data));
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
}

/// Expects CONNACK refusing with `reason`, then the close.
fn expect_refused(c: &mut Raw, reason: ReasonCode) {
    let got = c.expect_closed();
    assert!(
        matches!(got.as_slice(), [Packet::ConnAck(a)] if a.reason == reason),
        "{got:?}"
    );
}

#[test]
fn the_exchange_runs_through_the_hook_before_connack() {
    let b = start(|_| {});
    for shard in 0..2 {
        let id = b.id_on(shard, "ea-ok");
        let mut c = connect_auth(&b, &id, METHOD, b"hello");
        expect_auth(&mut c, ReasonCode::CONTINUE_AUTHENTICATION, b"challenge?");
        c.send(&auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            METHOD,
            b"answer",
        ));
        match c.recv() {
            Packet::ConnAck(a) => {
                assert_eq!(a.reason, ReasonCode::SUCCESS);
                assert_eq!(a.properties.authentication_method.as_deref(), Some(METHOD));
                assert_eq!(
                    a.properties.authentication_data.as_deref(),
                    Some(&b"welcome"[..])
                );
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        // An authenticated connection works like any other.
        c.subscribe(1, &[("ea/t", QoS::AtLeastOnce)]);
        c.publish_acked("ea/t", b"x", QoS::AtLeastOnce, false, 2);
        assert_eq!(&c.recv_publish().payload[..], b"x");
    }
}

#[test]
fn unsupported_methods_failures_and_protocol_errors_are_refused_in_connack() {
    let b = start(|_| {});
    for shard in 0..2 {
        // A method the hook does not know: 0x8C.
        let mut c = connect_auth(&b, &b.id_on(shard, "ea-m"), "SCRAM-SHA-1", b"hello");
        expect_refused(&mut c, ReasonCode::BAD_AUTHENTICATION_METHOD);
        // The hook says no at once, or after a wrong answer.
        let mut c = connect_auth(&b, &b.id_on(shard, "ea-f"), METHOD, b"nope");
        expect_refused(&mut c, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        let mut c = connect_auth(&b, &b.id_on(shard, "ea-w"), METHOD, b"hello");
        expect_auth(&mut c, ReasonCode::CONTINUE_AUTHENTICATION, b"challenge?");
        c.send(&auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"wrong"));
        expect_refused(&mut c, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        // Anything but AUTH 0x18 with the same method while the exchange runs.
        for bad in [
            Packet::PingReq,
            auth(ReasonCode::CONTINUE_AUTHENTICATION, "OTHER", b"answer"),
            auth(ReasonCode::REAUTHENTICATE, METHOD, b"answer"),
        ] {
            let mut c = connect_auth(&b, &b.id_on(shard, "ea-p"), METHOD, b"hello");
            expect_auth(&mut c, ReasonCode::CONTINUE_AUTHENTICATION, b"challenge?");
            c.send(&bad);
            expect_refused(&mut c, ReasonCode::PROTOCOL_ERROR);
        }
    }
}

#[test]
fn the_default_hook_supports_no_method() {
    let b = Broker::start(2);
    let mut c = connect_auth(&b, "ea-default", METHOD, b"hello");
    expect_refused(&mut c, ReasonCode::BAD_AUTHENTICATION_METHOD);
}

/// A connection authenticated with the toy method.
fn authenticated(b: &Broker, id: &str) -> Raw {
    let mut c = connect_auth(b, id, METHOD, b"hello");
    expect_auth(&mut c, ReasonCode::CONTINUE_AUTHENTICATION, b"challenge?");
    c.send(&auth(
        ReasonCode::CONTINUE_AUTHENTICATION,
        METHOD,
        b"answer",
    ));
    assert!(matches!(c.recv(), Packet::ConnAck(a) if a.reason == ReasonCode::SUCCESS));
    c
}

fn expect_disconnect(c: &mut Raw, reason: ReasonCode) {
    let got = c.expect_closed();
    assert!(
        matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason == reason),
        "{got:?}"
    );
}

#[test]
fn re_authentication_runs_beside_the_connection() {
    let b = start(|_| {});
    for shard in 0..2 {
        let mut c = authenticated(&b, &b.id_on(shard, "ra"));
        c.subscribe(1, &[("ra/t", QoS::AtLeastOnce)]);
        c.send(&auth(ReasonCode::REAUTHENTICATE, METHOD, b"hello"));
        expect_auth(&mut c, ReasonCode::CONTINUE_AUTHENTICATION, b"challenge?");
        // The connection goes on during the exchange.
        c.publish_acked("ra/t", b"during", QoS::AtLeastOnce, false, 2);
        assert_eq!(&c.recv_publish().payload[..], b"during");
        c.send(&auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            METHOD,
            b"answer",
        ));
        expect_auth(&mut c, ReasonCode::SUCCESS, b"welcome");
        c.ping();
        // Failed: DISCONNECT [MQTT-4.12.1-2], with the hook's code where DISCONNECT
        // allows it; 0x86 is not a DISCONNECT code, so Not authorized.
        c.send(&auth(ReasonCode::REAUTHENTICATE, METHOD, b"bad"));
        expect_disconnect(&mut c, ReasonCode::NOT_AUTHORIZED);
        // Another method [MQTT-4.12.1-1], a continue with nothing under way: 0x82.
        for bad in [
            auth(ReasonCode::REAUTHENTICATE, "OTHER", b"hello"),
            auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"answer"),
            auth(ReasonCode::SUCCESS, METHOD, b"answer"),
        ] {
            let mut c = authenticated(&b, &b.id_on(shard, "ra-bad"));
            c.send(&bad);
            expect_disconnect(&mut c, ReasonCode::PROTOCOL_ERROR);
        }
        // AUTH from a client that connected without a method.
        let mut c = b.client(V5, &b.id_on(shard, "ra-none"), true);
        c.send(&auth(ReasonCode::REAUTHENTICATE, METHOD, b"hello"));
        expect_disconnect(&mut c, ReasonCode::PROTOCOL_ERROR);
    }
}

#[test]
fn response_information_is_given_to_clients_that_ask() {
    let b = start(|c| c.response_information = "reply/%c".into());
    for shard in 0..2 {
        let id = b.id_on(shard, "ri");
        for ask in [None, Some(false), Some(true)] {
            let mut c = b.raw(V5);
            let mut connect = connect_packet(V5, &id, true, 0, None);
            connect.properties.get_mut().request_response_information = ask;
            let ack = c.connect_with(connect);
            let want = (ask == Some(true)).then(|| ByteString::from(format!("reply/{id}")));
            assert_eq!(ack.properties.response_information, want);
        }
    }
    // Not configured: none, even when asked (the server may send none, §3.1.2.11.7).
    let b = start(|_| {});
    let mut c = b.raw(V5);
    let mut connect = connect_packet(V5, "ri-off", true, 0, None);
    connect.properties.get_mut().request_response_information = Some(true);
    assert_eq!(
        c.connect_with(connect).properties.response_information,
        None
    );
}
