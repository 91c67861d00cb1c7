//! Tests of the sans-I/O client state machine ([`super::state::ClientState`]).
//!
//! Unit tests drive one flow at a time: requests in, bytes out (decoded with the real
//! codec), server packets in, events out. Property tests run the state against a simulated
//! lossy broker (packets delivered out of order, acks duplicated, connections dropped and
//! re-established with a present session) and check the session's guarantees: packet
//! identifiers are never shared, every QoS 1/2 message completes exactly once, QoS 2 is
//! delivered exactly once in both directions.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::prelude::*;
use proptest::sample::Index;

use super::state::{
    ClientState, Event, HandleError, Phase, PingTimeout, ProtocolViolation, PublishError, Refused,
    RequestsFull, StateOptions, Token,
};
use crate::protocol::{
    decode, Ack, Auth, ConnAck, Connect, DecodeOptions, Disconnect, Packet, PacketId, Properties,
    ProtocolVersion, Publish, QoS, ReasonCode, SubAck, Subscribe, Subscription,
    SubscriptionOptions, TopicFilter, TopicName, UnsubAck, Unsubscribe, Will,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

fn connect_packet(version: ProtocolVersion, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        version,
        clean_start: clean,
        keep_alive,
        client_id: ByteString::from("abc"),
        will: None,
        username: None,
        password: None,
        properties: Properties::new(),
    }
}

fn message(qos: QoS, payload: &str) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new("t/1").expect("valid topic"),
        packet_id: None,
        properties: Properties::new(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

/// What the client must write for `message(qos, payload)` with this id and DUP flag.
fn on_wire(qos: QoS, payload: &str, id: u16, dup: bool) -> Packet {
    let mut p = message(qos, payload);
    p.packet_id = Some(pid(id));
    p.dup = dup;
    Packet::Publish(p)
}

fn server_publish(qos: QoS, id: Option<u16>, dup: bool, payload: &str) -> Publish {
    let mut p = message(qos, payload);
    p.topic = TopicName::new("from/server").expect("valid topic");
    p.packet_id = id.map(pid);
    p.dup = dup;
    p
}

fn connack(session_present: bool) -> ConnAck {
    ConnAck {
        session_present,
        reason: ReasonCode::SUCCESS,
        properties: Properties::new(),
    }
}

fn refused(code: ReasonCode) -> ConnAck {
    ConnAck {
        session_present: false,
        reason: code,
        properties: Properties::new(),
    }
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).expect("valid filter")
}

fn sub(s: &str, qos: QoS) -> Subscription {
    Subscription {
        filter: filter(s),
        options: SubscriptionOptions::new(qos),
    }
}

fn puback(id: u16) -> Packet {
    Packet::PubAck(Ack::new(pid(id)))
}
fn pubrec(id: u16) -> Packet {
    Packet::PubRec(Ack::new(pid(id)))
}
fn pubrel(id: u16) -> Packet {
    Packet::PubRel(Ack::new(pid(id)))
}
fn pubcomp(id: u16) -> Packet {
    Packet::PubComp(Ack::new(pid(id)))
}
fn suback(id: u16, codes: &[u8]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(id),
        codes: codes.iter().map(|c| ReasonCode(*c)).collect(),
        properties: Properties::new(),
    })
}
fn unsuback(id: u16) -> Packet {
    Packet::UnsubAck(UnsubAck {
        packet_id: pid(id),
        codes: Vec::new(),
        properties: Properties::new(),
    })
}

fn done(token: Token) -> Event {
    Event::PublishDone {
        token,
        result: Ok(ReasonCode::SUCCESS),
    }
}

/// Decodes every packet in `buf`; the buffer must hold whole packets only.
fn decode_all(mut buf: BytesMut, version: ProtocolVersion) -> Vec<Packet> {
    let opts = DecodeOptions {
        version,
        max_packet_size: 1 << 20,
    };
    let mut packets = Vec::new();
    while let Some(p) = decode(&mut buf, &opts).expect("the client writes valid MQTT") {
        packets.push(p);
    }
    assert!(buf.is_empty(), "a partial packet was left: {buf:?}");
    packets
}

/// A client state plus a clock and the decoding of its output.
struct Harness {
    st: ClientState,
    version: ProtocolVersion,
    t0: Instant,
}

impl Harness {
    fn new(opts: StateOptions) -> Harness {
        Harness {
            version: opts.version,
            st: ClientState::new(opts),
            t0: Instant::now(),
        }
    }

    /// 3.1.1, keep alive 30 s, ping timeout 10 s.
    fn v311() -> Harness {
        Harness::new(StateOptions {
            version: ProtocolVersion::V3_1_1,
            keep_alive: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(10),
            ..StateOptions::default()
        })
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Takes and decodes everything the client wrote.
    fn written(&mut self) -> Vec<Packet> {
        let buf = self.st.output().split();
        decode_all(buf, self.version)
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.st.poll_event()).collect()
    }

    fn handle(&mut self, p: Packet) -> Result<(), HandleError> {
        self.st.handle(p, self.t0)
    }

    fn ok(&mut self, p: Packet) {
        let shown = format!("{p:?}");
        if let Err(e) = self.handle(p) {
            panic!("{shown} refused: {e}");
        }
    }

    /// Writes CONNECT (checked) and feeds a successful CONNACK at `t0`; returns what was
    /// written after CONNECT (the resends).
    fn connect(&mut self, clean: bool, session_present: bool) -> Vec<Packet> {
        self.st
            .start_connect(&connect_packet(self.version, clean, 30))
            .expect("CONNECT encodes");
        assert_eq!(self.st.phase(), Phase::AwaitConnAck);
        match &self.written()[..] {
            [Packet::Connect(c)] => assert_eq!(c.clean_start, clean),
            other => panic!("expected one CONNECT, got {other:?}"),
        }
        self.ok(Packet::ConnAck(connack(session_present)));
        assert_eq!(self.st.phase(), Phase::Connected);
        assert_eq!(
            self.events(),
            vec![Event::Connected(connack(session_present))]
        );
        self.written()
    }

    /// Publishes while connected; returns the token and the identifier written.
    fn publish(&mut self, qos: QoS, payload: &str) -> (Token, u16) {
        let token = self
            .st
            .publish(message(qos, payload))
            .expect("publish taken")
            .expect("QoS 1/2 has a token");
        match &self.written()[..] {
            [Packet::Publish(p)] => {
                assert_eq!(
                    (p.qos, &p.payload[..], p.dup),
                    (qos, payload.as_bytes(), false)
                );
                (token, p.packet_id.expect("QoS 1/2 has an id").get())
            }
            other => panic!("expected one PUBLISH, got {other:?}"),
        }
    }

    fn ids_in_use(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self.st.packet_ids_in_use().collect();
        ids.sort_unstable();
        ids
    }
}

// ---------------------------------------------------------------------------------------
// CONNECT / CONNACK
// ---------------------------------------------------------------------------------------

#[test]
fn connect_bytes_v311() {
    let mut st = ClientState::new(StateOptions::default());
    st.start_connect(&connect_packet(ProtocolVersion::V3_1_1, true, 30))
        .expect("encodes");
    assert_eq!(
        &st.output()[..],
        b"\x10\x0f\x00\x04MQTT\x04\x02\x00\x1e\x00\x03abc"
    );
    assert_eq!(st.phase(), Phase::AwaitConnAck);
    assert_eq!(st.poll_event(), None);
    assert_eq!(st.next_timeout(), None, "no keep alive before CONNACK");
}

#[test]
fn connect_bytes_v31() {
    let mut st = ClientState::new(StateOptions {
        version: ProtocolVersion::V3_1,
        ..StateOptions::default()
    });
    st.start_connect(&connect_packet(ProtocolVersion::V3_1, false, 60))
        .expect("encodes");
    assert_eq!(
        &st.output()[..],
        b"\x10\x11\x00\x06MQIsdp\x03\x00\x00\x3c\x00\x03abc"
    );
    assert_eq!(st.phase(), Phase::AwaitConnAck);
}

#[test]
fn connect_with_will_and_credentials_round_trips() {
    let mut h = Harness::v311();
    let mut c = connect_packet(ProtocolVersion::V3_1_1, true, 10);
    c.username = Some(ByteString::from("user"));
    c.password = Some(Bytes::from_static(b"secret"));
    c.will = Some(Will {
        topic: TopicName::new("last/will").expect("valid"),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties::new(),
    });
    h.st.start_connect(&c).expect("encodes");
    let raw = h.st.output().clone();
    // user name, password, will QoS 1, will flag, clean session.
    assert_eq!(raw[9], 0b1100_1110, "connect flags");
    assert_eq!(h.written(), vec![Packet::Connect(Box::new(c))]);
}

#[test]
fn start_connect_discards_previous_output() {
    let mut h = Harness::v311();
    h.connect(true, false);
    h.st.publish(message(QoS::AtMostOnce, "unwritten"))
        .expect("taken");
    assert!(!h.st.output().is_empty());
    h.st.start_connect(&connect_packet(h.version, false, 30))
        .expect("encodes");
    assert!(matches!(&h.written()[..], [Packet::Connect(_)]));
}

#[test]
fn connack_accepted_emits_connected() {
    let mut h = Harness::v311();
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    h.written();
    assert_eq!(h.events(), vec![]);
    h.ok(Packet::ConnAck(connack(false)));
    assert_eq!(h.st.phase(), Phase::Connected);
    assert_eq!(h.events(), vec![Event::Connected(connack(false))]);
    assert_eq!(h.written(), vec![], "nothing to resend on a fresh session");
}

#[test]
fn connack_refused_is_an_error_with_the_code() {
    for code in [
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        ReasonCode::SERVER_UNAVAILABLE,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ReasonCode::NOT_AUTHORIZED,
    ] {
        let mut h = Harness::v311();
        h.st.start_connect(&connect_packet(h.version, true, 30))
            .expect("encodes");
        h.written();
        assert_eq!(
            h.handle(Packet::ConnAck(refused(code))),
            Err(HandleError::Refused(Refused(code)))
        );
        assert_eq!(h.st.phase(), Phase::Disconnected);
        assert_eq!(h.events(), vec![], "no Connected event for {code:?}");
        assert_eq!(h.st.next_timeout(), None);
    }
}

#[test]
fn connack_refused_from_the_wire_v311() {
    // Return code 5 (not authorized) as a 3.1.1 broker sends it.
    let mut h = Harness::v311();
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    let ack = decode_all(BytesMut::from(&b"\x20\x02\x00\x05"[..]), h.version);
    let [ack] = <[Packet; 1]>::try_from(ack).expect("one packet");
    assert_eq!(
        h.handle(ack),
        Err(HandleError::Refused(Refused(ReasonCode::NOT_AUTHORIZED)))
    );
}

#[test]
fn session_present_on_a_clean_session_is_a_violation() {
    let mut h = Harness::v311();
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    h.written();
    assert_eq!(
        h.handle(Packet::ConnAck(connack(true))),
        Err(HandleError::Protocol(
            ProtocolViolation::SessionPresentOnClean
        ))
    );
    assert_ne!(h.st.phase(), Phase::Connected);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn session_present_on_a_persistent_session_is_fine() {
    let mut h = Harness::v311();
    assert_eq!(h.connect(false, true), vec![]);
}

#[test]
fn packet_before_connack_is_a_violation() {
    let early = [
        Packet::Publish(server_publish(QoS::AtMostOnce, None, false, "x")),
        Packet::Publish(server_publish(QoS::ExactlyOnce, Some(1), false, "x")),
        puback(1),
        pubrel(1),
        suback(1, &[0]),
        Packet::PingResp,
    ];
    for p in early {
        let mut h = Harness::v311();
        h.st.start_connect(&connect_packet(h.version, true, 30))
            .expect("encodes");
        h.written();
        let shown = format!("{p:?}");
        assert!(
            matches!(
                h.handle(p),
                Err(HandleError::Protocol(ProtocolViolation::Unexpected(_)))
            ),
            "{shown} before CONNACK"
        );
        assert_eq!(h.events(), vec![], "{shown} must not be acted on");
        assert_eq!(h.written(), vec![], "{shown} must not be answered");
        assert_ne!(h.st.phase(), Phase::Connected);
    }
}

#[test]
fn second_connack_is_a_violation() {
    let mut h = Harness::v311();
    h.connect(true, false);
    assert!(matches!(
        h.handle(Packet::ConnAck(connack(false))),
        Err(HandleError::Protocol(ProtocolViolation::Unexpected(_)))
    ));
}

#[test]
fn packets_only_a_client_sends_are_violations() {
    let topic_filter = filter("a/b");
    let bad = [
        Packet::Connect(Box::new(connect_packet(ProtocolVersion::V3_1_1, true, 30))),
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            subscriptions: vec![sub("a/b", QoS::AtMostOnce)],
            properties: Properties::new(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(1),
            filters: vec![topic_filter],
            properties: Properties::new(),
        }),
        Packet::PingReq,
        Packet::Auth(Auth::default()),
    ];
    for p in bad {
        let mut h = Harness::v311();
        h.connect(true, false);
        let shown = format!("{p:?}");
        assert!(
            matches!(
                h.handle(p),
                Err(HandleError::Protocol(
                    ProtocolViolation::Unexpected(_) | ProtocolViolation::Auth
                ))
            ),
            "{shown} from a server"
        );
        assert_eq!(h.written(), vec![], "{shown} must not be answered");
    }
}

#[test]
fn server_disconnect_is_accepted() {
    let mut h = Harness::v311();
    h.connect(true, false);
    h.ok(Packet::Disconnect(Disconnect::default()));
    assert_eq!(h.events(), vec![]);
}

#[test]
fn disconnect_writes_disconnect_only_when_connected() {
    let mut h = Harness::v311();
    h.st.disconnect();
    assert_eq!(h.written(), vec![]);
    h.connect(true, false);
    h.st.disconnect();
    assert_eq!(h.st.phase(), Phase::Disconnected);
    assert_eq!(h.written(), vec![Packet::Disconnect(Disconnect::default())]);
    assert_eq!(h.st.next_timeout(), None);
}

// ---------------------------------------------------------------------------------------
// Outgoing publishes
// ---------------------------------------------------------------------------------------

#[test]
fn qos0_publish_while_not_connected_is_handed_back() {
    let mut h = Harness::v311();
    let m = message(QoS::AtMostOnce, "lost?");
    assert_eq!(
        h.st.publish(m.clone()),
        Err(PublishError::NotConnected(m.clone()))
    );
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    h.written();
    assert_eq!(
        h.st.publish(m.clone()),
        Err(PublishError::NotConnected(m.clone())),
        "not connected until CONNACK"
    );
    assert_eq!(h.written(), vec![]);
    h.ok(Packet::ConnAck(connack(false)));
    h.events();
    h.st.connection_lost();
    assert_eq!(h.st.publish(m.clone()), Err(PublishError::NotConnected(m)));
    assert_eq!(h.written(), vec![]);
}

#[test]
fn qos0_publish_while_connected_is_written_without_id() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let mut m = message(QoS::AtMostOnce, "hi");
    // Whatever the caller put there, QoS 0 goes out without id and DUP.
    m.packet_id = Some(pid(9));
    m.dup = true;
    assert_eq!(h.st.publish(m), Ok(None));
    assert_eq!(
        h.written(),
        vec![Packet::Publish(message(QoS::AtMostOnce, "hi"))]
    );
    assert_eq!(h.st.inflight(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
}

#[test]
fn qos1_publish_completes_on_puback_and_frees_the_id() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let (token, id) = h.publish(QoS::AtLeastOnce, "one");
    assert_ne!(id, 0);
    assert_eq!(h.st.inflight(), 1);
    assert_eq!(h.ids_in_use(), vec![id]);
    assert_eq!(h.events(), vec![]);
    // Acks of the wrong kind or for another id complete nothing.
    h.ok(pubrec(id));
    h.ok(pubcomp(id));
    h.ok(puback(id.wrapping_add(1).max(1)));
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.written(), vec![], "no PUBREL for a QoS 1 flow");
    h.ok(puback(id));
    assert_eq!(h.events(), vec![done(token)]);
    assert_eq!(h.st.inflight(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
    // A duplicate PUBACK is ignored.
    h.ok(puback(id));
    assert_eq!(h.events(), vec![]);
}

#[test]
fn puback_with_a_failure_reason_completes_with_the_error() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let (token, id) = h.publish(QoS::AtLeastOnce, "one");
    h.ok(Packet::PubAck(Ack {
        packet_id: pid(id),
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: Properties::new(),
    }));
    assert_eq!(
        h.events(),
        vec![Event::PublishDone {
            token,
            result: Err(ReasonCode::NOT_AUTHORIZED)
        }]
    );
    assert_eq!(h.st.inflight(), 0);
}

#[test]
fn qos2_publish_pubrec_pubrel_pubcomp() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let (token, id) = h.publish(QoS::ExactlyOnce, "two");
    h.ok(puback(id));
    h.ok(pubcomp(id));
    assert_eq!(
        h.events(),
        vec![],
        "PUBACK/PUBCOMP before PUBREC complete nothing"
    );
    assert_eq!(h.written(), vec![]);
    h.ok(pubrec(id));
    assert_eq!(h.written(), vec![pubrel(id)]);
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.st.inflight(), 1);
    assert_eq!(h.ids_in_use(), vec![id], "id held until PUBCOMP");
    h.ok(pubcomp(id));
    assert_eq!(h.events(), vec![done(token)]);
    assert_eq!(h.st.inflight(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
    h.ok(pubcomp(id));
    h.ok(pubrec(id));
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.written(), vec![], "no PUBREL for a finished flow");
}

#[test]
fn pubrec_with_a_failure_reason_ends_the_flow() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let (token, id) = h.publish(QoS::ExactlyOnce, "two");
    h.ok(Packet::PubRec(Ack {
        packet_id: pid(id),
        reason: ReasonCode::QUOTA_EXCEEDED,
        properties: Properties::new(),
    }));
    assert_eq!(h.written(), vec![], "no PUBREL after a refusal");
    assert_eq!(
        h.events(),
        vec![Event::PublishDone {
            token,
            result: Err(ReasonCode::QUOTA_EXCEEDED)
        }]
    );
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
}

#[test]
fn duplicate_pubrec_resends_pubrel() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let (token, id) = h.publish(QoS::ExactlyOnce, "two");
    h.ok(pubrec(id));
    assert_eq!(h.written(), vec![pubrel(id)]);
    h.ok(pubrec(id));
    assert_eq!(h.written(), vec![pubrel(id)]);
    assert_eq!(h.events(), vec![]);
    h.ok(pubcomp(id));
    assert_eq!(h.events(), vec![done(token)]);
}

#[test]
fn window_full_hands_the_message_back_and_reopens_after_an_ack() {
    let mut h = Harness::new(StateOptions {
        max_inflight: 2,
        ..StateOptions::default()
    });
    h.connect(true, false);
    let (t1, id1) = h.publish(QoS::AtLeastOnce, "a");
    assert!(h.st.window_open());
    let (t2, id2) = h.publish(QoS::ExactlyOnce, "b");
    assert!(!h.st.window_open());
    let m = message(QoS::AtLeastOnce, "c");
    assert_eq!(h.st.publish(m.clone()), Err(PublishError::WindowFull(m)));
    let m = message(QoS::ExactlyOnce, "c");
    assert_eq!(h.st.publish(m.clone()), Err(PublishError::WindowFull(m)));
    assert_eq!(h.written(), vec![], "a refused publish writes nothing");
    assert_eq!(h.ids_in_use(), vec![id1, id2], "and takes no id");
    // QoS 0 does not need the window.
    assert_eq!(h.st.publish(message(QoS::AtMostOnce, "q0")), Ok(None));
    h.written();
    // A PUBREC does not open the window; PUBCOMP does.
    h.ok(pubrec(id2));
    h.written();
    assert!(!h.st.window_open());
    h.ok(pubcomp(id2));
    assert_eq!(h.events(), vec![done(t2)]);
    assert!(h.st.window_open());
    let (t3, id3) = h.publish(QoS::AtLeastOnce, "c");
    assert!(!h.st.window_open());
    h.ok(puback(id1));
    h.ok(puback(id3));
    assert_eq!(h.events(), vec![done(t1), done(t3)]);
    assert!(h.st.window_open());
}

#[test]
fn window_full_also_applies_while_disconnected() {
    let mut h = Harness::new(StateOptions {
        max_inflight: 1,
        ..StateOptions::default()
    });
    h.st.publish(message(QoS::AtLeastOnce, "a"))
        .expect("taken")
        .expect("token");
    let m = message(QoS::AtLeastOnce, "b");
    assert_eq!(h.st.publish(m.clone()), Err(PublishError::WindowFull(m)));
    assert_eq!(h.st.inflight(), 1);
}

#[test]
fn tokens_are_distinct_and_increasing() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let (a, _) = h.publish(QoS::AtLeastOnce, "a");
    let b =
        h.st.subscribe(vec![sub("x", QoS::AtMostOnce)])
            .expect("taken");
    h.written();
    let (c, _) = h.publish(QoS::ExactlyOnce, "c");
    let d = h.st.unsubscribe(vec![filter("x")]).expect("taken");
    assert!(a < b && b < c && c < d, "{a:?} {b:?} {c:?} {d:?}");
}

#[test]
fn packet_ids_skip_zero_and_ids_in_use_across_wrap_around() {
    let mut h = Harness::v311();
    h.connect(true, false);
    // Held across the wrap: a QoS 1 flow (1), a QoS 2 flow past PUBREC (2), a SUBSCRIBE (3).
    let (t1, id1) = h.publish(QoS::AtLeastOnce, "held-1");
    let (t2, id2) = h.publish(QoS::ExactlyOnce, "held-2");
    h.ok(pubrec(id2));
    assert_eq!(h.written(), vec![pubrel(id2)]);
    let ts =
        h.st.subscribe(vec![sub("s", QoS::AtLeastOnce)])
            .expect("taken");
    let id3 = match &h.written()[..] {
        [Packet::Subscribe(s)] => s.packet_id.get(),
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    };
    assert_eq!((id1, id2, id3), (1, 2, 3));
    let held = [1u16, 2, 3];
    let mut seen_after_wrap = Vec::new();
    let mut wrapped = false;
    let mut prev = 3u16;
    // Each of these is acked at once, so only `held` stay in use.
    for i in 0..65_540u32 {
        let (t, id) = h.publish(QoS::AtLeastOnce, "x");
        assert_ne!(id, 0, "publish #{i}");
        assert!(!held.contains(&id), "publish #{i} reused held id {id}");
        if id < prev {
            wrapped = true;
        }
        if wrapped {
            seen_after_wrap.push(id);
        } else {
            assert_eq!(id, prev + 1, "ids are handed out in sequence");
        }
        prev = id;
        h.ok(puback(id));
        assert_eq!(h.events(), vec![done(t)]);
    }
    assert!(wrapped, "the identifier space wrapped");
    assert_eq!(
        &seen_after_wrap[..4],
        &[4, 5, 6, 7],
        "after 65535 come the first free ids, skipping 0 and the held 1, 2, 3"
    );
    assert_eq!(h.ids_in_use(), vec![1, 2, 3]);
    // The held flows still complete normally.
    h.ok(puback(1));
    h.ok(pubcomp(2));
    h.ok(suback(3, &[1]));
    assert_eq!(
        h.events(),
        vec![
            done(t1),
            done(t2),
            Event::SubAck {
                token: ts,
                codes: vec![ReasonCode::GRANTED_QOS_1]
            }
        ]
    );
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
}

/// With `max_inflight` near the identifier space, publishes and SUBSCRIBEs together can
/// take every identifier while the window is still open; `publish` must then hand the
/// message back (or refuse it) instead of searching for a free identifier forever.
#[test]
fn publish_with_every_packet_id_taken_does_not_hang() {
    // The state runs on its own thread so that a hang fails the test instead of blocking
    // the test binary (the spinning thread is abandoned).
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut st = ClientState::new(StateOptions {
            max_inflight: u16::MAX,
            ..StateOptions::default()
        });
        // Disconnected: nothing is written, everything waits for a CONNACK.
        st.subscribe(vec![sub("a", QoS::AtMostOnce)])
            .expect("request taken");
        let mut taken = 0u32;
        // Publish until refused: the window must close before the identifiers run out.
        let refused = loop {
            match st.publish(message(QoS::AtLeastOnce, "x")) {
                Ok(_) => taken += 1,
                Err(e) => break e,
            }
            if taken > 65_535 {
                panic!("more publishes taken than identifiers exist");
            }
        };
        let in_use = st.packet_ids_in_use().count();
        let _ = tx.send((
            taken,
            in_use,
            matches!(refused, PublishError::WindowFull(_)),
            st.window_open(),
        ));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((taken, in_use, window_full, open)) => {
            assert!(
                window_full,
                "refused with WindowFull (the message handed back)"
            );
            assert!(!open, "window reported closed");
            assert!(
                in_use < 65_535,
                "an identifier stays free: {in_use} in use after {taken} publishes"
            );
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("publish did not return: alloc_pid searches the full id space forever")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the state thread panicked"),
    }
}

// ---------------------------------------------------------------------------------------
// Incoming publishes
// ---------------------------------------------------------------------------------------

#[test]
fn incoming_qos0_is_delivered_without_ack() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let p = server_publish(QoS::AtMostOnce, None, false, "q0");
    h.ok(Packet::Publish(p.clone()));
    assert_eq!(h.events(), vec![Event::Message(p)]);
    assert_eq!(h.written(), vec![]);
}

#[test]
fn incoming_qos1_is_delivered_and_acked() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let p = server_publish(QoS::AtLeastOnce, Some(17), false, "q1");
    h.ok(Packet::Publish(p.clone()));
    assert_eq!(h.events(), vec![Event::Message(p)]);
    assert_eq!(h.written(), vec![puback(17)]);
    // Incoming identifiers are the server's: they take nothing from the client's space.
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
}

#[test]
fn incoming_qos2_is_delivered_once() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let first = server_publish(QoS::ExactlyOnce, Some(7), false, "q2");
    h.ok(Packet::Publish(first.clone()));
    assert_eq!(h.events(), vec![Event::Message(first)]);
    assert_eq!(h.written(), vec![pubrec(7)]);
    assert_eq!(h.st.incoming_qos2(), 1);
    // Redelivered (PUBREC lost): acknowledged again, not delivered again.
    for _ in 0..3 {
        h.ok(Packet::Publish(server_publish(
            QoS::ExactlyOnce,
            Some(7),
            true,
            "q2",
        )));
        assert_eq!(
            h.events(),
            vec![],
            "redelivery before PUBREL is not delivered"
        );
        assert_eq!(h.written(), vec![pubrec(7)]);
    }
    // Another identifier is another message.
    let other = server_publish(QoS::ExactlyOnce, Some(8), false, "other");
    h.ok(Packet::Publish(other.clone()));
    assert_eq!(h.events(), vec![Event::Message(other)]);
    assert_eq!(h.written(), vec![pubrec(8)]);
    assert_eq!(h.st.incoming_qos2(), 2);
    h.ok(pubrel(7));
    assert_eq!(h.written(), vec![pubcomp(7)]);
    assert_eq!(h.st.incoming_qos2(), 1);
    assert_eq!(h.events(), vec![]);
    // After PUBREL the identifier is free: a new PUBLISH with it is a new message.
    let again = server_publish(QoS::ExactlyOnce, Some(7), false, "new");
    h.ok(Packet::Publish(again.clone()));
    assert_eq!(h.events(), vec![Event::Message(again)]);
    assert_eq!(h.written(), vec![pubrec(7)]);
}

#[test]
fn pubrel_for_an_unknown_id_still_gets_pubcomp() {
    let mut h = Harness::v311();
    h.connect(true, false);
    h.ok(pubrel(4242));
    assert_eq!(h.written(), vec![pubcomp(4242)]);
    assert_eq!(h.events(), vec![]);
    // Also twice for a known one (PUBCOMP lost, PUBREL resent).
    h.ok(Packet::Publish(server_publish(
        QoS::ExactlyOnce,
        Some(5),
        false,
        "m",
    )));
    h.events();
    h.written();
    h.ok(pubrel(5));
    h.ok(pubrel(5));
    assert_eq!(h.written(), vec![pubcomp(5), pubcomp(5)]);
    assert_eq!(h.events(), vec![]);
}

#[test]
fn incoming_qos2_ids_survive_a_reconnect_with_session_present() {
    let mut h = Harness::v311();
    h.connect(false, false);
    let p = server_publish(QoS::ExactlyOnce, Some(9), false, "m");
    h.ok(Packet::Publish(p.clone()));
    assert_eq!(h.events(), vec![Event::Message(p)]);
    h.written(); // PUBREC written, but the connection dies before it arrives
    h.st.connection_lost();
    assert_eq!(h.connect(false, true), vec![]);
    h.ok(Packet::Publish(server_publish(
        QoS::ExactlyOnce,
        Some(9),
        true,
        "m",
    )));
    assert_eq!(h.events(), vec![], "the redelivery is the same message");
    assert_eq!(h.written(), vec![pubrec(9)]);
    h.ok(pubrel(9));
    assert_eq!(h.written(), vec![pubcomp(9)]);
    assert_eq!(h.st.incoming_qos2(), 0);
}

#[test]
fn incoming_qos2_ids_are_forgotten_without_session_present() {
    let mut h = Harness::v311();
    h.connect(false, false);
    h.ok(Packet::Publish(server_publish(
        QoS::ExactlyOnce,
        Some(9),
        false,
        "old",
    )));
    h.events();
    h.written();
    h.st.connection_lost();
    assert_eq!(
        h.st.incoming_qos2(),
        1,
        "kept until the CONNACK says otherwise"
    );
    h.connect(false, false);
    assert_eq!(h.st.incoming_qos2(), 0);
    // The server lost its session: id 9 now carries a new message.
    let p = server_publish(QoS::ExactlyOnce, Some(9), false, "new");
    h.ok(Packet::Publish(p.clone()));
    assert_eq!(h.events(), vec![Event::Message(p)]);
}

#[test]
fn clean_start_forgets_incoming_qos2_ids() {
    let mut h = Harness::v311();
    h.connect(true, false);
    h.ok(Packet::Publish(server_publish(
        QoS::ExactlyOnce,
        Some(3),
        false,
        "m",
    )));
    assert_eq!(h.st.incoming_qos2(), 1);
    h.st.connection_lost();
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    assert_eq!(h.st.incoming_qos2(), 0);
}

/// MQTT 3.1 has no Session Present flag: the decoder reports `false` on every CONNACK. A
/// 3.1 client reconnecting with CleanSession = 0 keeps its session on the server, which
/// redelivers an unacknowledged QoS 2 PUBLISH (DUP) with the same identifier; the client
/// must recognise it. The state takes `session_present == false` as "the server forgot"
/// and clears the identifiers, so the message reaches the application twice.
#[test]
fn v31_reconnect_keeps_incoming_qos2_ids() {
    let mut h = Harness::new(StateOptions {
        version: ProtocolVersion::V3_1,
        ..StateOptions::default()
    });
    let v31_connack = || {
        let [p] = <[Packet; 1]>::try_from(decode_all(
            BytesMut::from(&b"\x20\x02\x00\x00"[..]),
            ProtocolVersion::V3_1,
        ))
        .expect("one CONNACK");
        p
    };
    h.st.start_connect(&connect_packet(ProtocolVersion::V3_1, false, 30))
        .expect("encodes");
    h.written();
    h.ok(v31_connack());
    h.events();
    let p = server_publish(QoS::ExactlyOnce, Some(9), false, "once");
    h.ok(Packet::Publish(p.clone()));
    assert_eq!(h.events(), vec![Event::Message(p)]);
    h.written(); // PUBREC lost with the connection
    h.st.connection_lost();
    h.st.start_connect(&connect_packet(ProtocolVersion::V3_1, false, 30))
        .expect("encodes");
    h.written();
    h.ok(v31_connack());
    h.events();
    h.ok(Packet::Publish(server_publish(
        QoS::ExactlyOnce,
        Some(9),
        true,
        "once",
    )));
    assert_eq!(h.events(), vec![], "the QoS 2 message was delivered twice");
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ---------------------------------------------------------------------------------------

#[test]
fn subscribe_completes_with_suback_codes() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let subs = vec![sub("a/+", QoS::AtLeastOnce), sub("b/#", QoS::ExactlyOnce)];
    let token = h.st.subscribe(subs.clone()).expect("taken");
    let id = match &h.written()[..] {
        [Packet::Subscribe(s)] => {
            assert_eq!(s.subscriptions, subs);
            s.packet_id.get()
        }
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    };
    assert_eq!(h.st.pending_requests(), 1);
    assert_eq!(h.ids_in_use(), vec![id]);
    // A SUBACK for another id or an UNSUBACK for this one completes nothing.
    h.ok(suback(id + 1, &[1, 2]));
    h.ok(unsuback(id));
    assert_eq!(h.events(), vec![]);
    assert_eq!(h.st.pending_requests(), 1);
    h.ok(suback(id, &[1, 0x80]));
    assert_eq!(
        h.events(),
        vec![Event::SubAck {
            token,
            codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR]
        }]
    );
    assert_eq!(h.st.pending_requests(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
    h.ok(suback(id, &[1, 0x80]));
    assert_eq!(h.events(), vec![], "duplicate SUBACK ignored");
}

#[test]
fn suback_with_the_wrong_code_count_is_a_violation() {
    let mut h = Harness::v311();
    h.connect(true, false);
    h.st.subscribe(vec![sub("a", QoS::AtMostOnce), sub("b", QoS::AtMostOnce)])
        .expect("taken");
    let id = match &h.written()[..] {
        [Packet::Subscribe(s)] => s.packet_id.get(),
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    };
    assert_eq!(
        h.handle(suback(id, &[0])),
        Err(HandleError::Protocol(ProtocolViolation::SubAckCount {
            want: 2,
            got: 1
        }))
    );
    assert_eq!(
        h.handle(suback(id, &[0, 0, 0])),
        Err(HandleError::Protocol(ProtocolViolation::SubAckCount {
            want: 2,
            got: 3
        }))
    );
    assert_eq!(h.events(), vec![]);
    assert_eq!(
        h.st.pending_requests(),
        1,
        "still pending: it is resent on reconnect"
    );
}

#[test]
fn unsubscribe_completes_with_unsuback() {
    let mut h = Harness::v311();
    h.connect(true, false);
    let filters = vec![filter("a/+"), filter("b")];
    let token = h.st.unsubscribe(filters.clone()).expect("taken");
    let id = match &h.written()[..] {
        [Packet::Unsubscribe(u)] => {
            assert_eq!(u.filters, filters);
            u.packet_id.get()
        }
        other => panic!("expected UNSUBSCRIBE, got {other:?}"),
    };
    h.ok(suback(id, &[0, 0]));
    assert_eq!(
        h.events(),
        vec![],
        "a SUBACK does not complete an UNSUBSCRIBE"
    );
    h.ok(unsuback(id));
    assert_eq!(
        h.events(),
        vec![Event::UnsubAck {
            token,
            codes: vec![]
        }]
    );
    assert_eq!(h.st.pending_requests(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
}

#[test]
fn requests_beyond_the_limit_are_refused() {
    let mut h = Harness::new(StateOptions {
        max_pending_requests: 2,
        ..StateOptions::default()
    });
    h.connect(true, false);
    h.st.subscribe(vec![sub("a", QoS::AtMostOnce)])
        .expect("taken");
    h.st.unsubscribe(vec![filter("a")]).expect("taken");
    assert!(!h.st.requests_open());
    assert_eq!(
        h.st.subscribe(vec![sub("b", QoS::AtMostOnce)]),
        Err(RequestsFull)
    );
    assert_eq!(h.st.unsubscribe(vec![filter("b")]), Err(RequestsFull));
    assert_eq!(h.written().len(), 2);
    assert_eq!(h.st.pending_requests(), 2);
}

#[test]
fn requests_while_disconnected_are_sent_after_connack() {
    let mut h = Harness::v311();
    let token =
        h.st.subscribe(vec![sub("a", QoS::AtLeastOnce)])
            .expect("taken");
    assert_eq!(h.written(), vec![]);
    let resent = h.connect(true, false);
    let id = match &resent[..] {
        [Packet::Subscribe(s)] => s.packet_id.get(),
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    };
    h.ok(suback(id, &[1]));
    assert_eq!(
        h.events(),
        vec![Event::SubAck {
            token,
            codes: vec![ReasonCode::GRANTED_QOS_1]
        }]
    );
}

// ---------------------------------------------------------------------------------------
// Reconnect
// ---------------------------------------------------------------------------------------

#[test]
fn reconnect_resends_everything_unfinished_in_order() {
    let mut h = Harness::v311();
    h.connect(false, false);
    let (ta, a) = h.publish(QoS::AtLeastOnce, "A");
    let (tb, b) = h.publish(QoS::ExactlyOnce, "B");
    let (tc, c) = h.publish(QoS::ExactlyOnce, "C");
    let (td, d) = h.publish(QoS::AtLeastOnce, "D");
    let subs = vec![sub("s/1", QoS::AtLeastOnce)];
    let ts = h.st.subscribe(subs.clone()).expect("taken");
    let tu = h.st.unsubscribe(vec![filter("u/1")]).expect("taken");
    let (s, u) = match &h.written()[..] {
        [Packet::Subscribe(s), Packet::Unsubscribe(u)] => (s.packet_id.get(), u.packet_id.get()),
        other => panic!("expected SUBSCRIBE, UNSUBSCRIBE, got {other:?}"),
    };
    h.ok(pubrec(c));
    assert_eq!(h.written(), vec![pubrel(c)]);
    h.ok(puback(d));
    assert_eq!(h.events(), vec![done(td)]);
    // Written to the old connection but never flushed: discarded with it.
    h.ok(Packet::PingResp);
    h.st.publish(message(QoS::AtMostOnce, "q0")).expect("taken");
    h.st.connection_lost();
    assert_eq!(h.st.phase(), Phase::Disconnected);
    assert!(
        h.st.output().is_empty(),
        "unwritten output dropped with the connection"
    );
    // Queued while disconnected: first sent after the CONNACK, without DUP.
    let te =
        h.st.publish(message(QoS::AtLeastOnce, "E"))
            .expect("taken")
            .expect("token");
    assert_eq!(h.written(), vec![]);
    assert_eq!(h.st.inflight(), 4);
    let resent = h.connect(false, true);
    let e = match resent.last() {
        Some(Packet::Publish(p)) => p.packet_id.expect("id").get(),
        other => panic!("expected E last, got {other:?}"),
    };
    assert_eq!(
        resent,
        vec![
            on_wire(QoS::AtLeastOnce, "A", a, true),
            on_wire(QoS::ExactlyOnce, "B", b, true),
            pubrel(c),
            Packet::Subscribe(Subscribe {
                packet_id: pid(s),
                subscriptions: subs,
                properties: Properties::new(),
            }),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(u),
                filters: vec![filter("u/1")],
                properties: Properties::new(),
            }),
            on_wire(QoS::AtLeastOnce, "E", e, false),
        ]
    );
    let ids: BTreeSet<u16> = [a, b, c, s, u, e].into_iter().collect();
    assert_eq!(ids.len(), 6, "all distinct: {a} {b} {c} {s} {u} {e}");
    // Everything then completes on the new connection.
    h.ok(puback(a));
    h.ok(pubrec(b));
    assert_eq!(h.written(), vec![pubrel(b)]);
    h.ok(pubcomp(b));
    h.ok(pubcomp(c));
    h.ok(suback(s, &[1]));
    h.ok(unsuback(u));
    h.ok(puback(e));
    assert_eq!(
        h.events(),
        vec![
            done(ta),
            done(tb),
            done(tc),
            Event::SubAck {
                token: ts,
                codes: vec![ReasonCode::GRANTED_QOS_1]
            },
            Event::UnsubAck {
                token: tu,
                codes: vec![]
            },
            done(te),
        ]
    );
    assert_eq!(h.st.inflight(), 0);
    assert_eq!(h.st.pending_requests(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
}

#[test]
fn a_second_reconnect_resends_again_with_dup() {
    let mut h = Harness::v311();
    h.connect(false, false);
    h.st.connection_lost();
    let token =
        h.st.publish(message(QoS::ExactlyOnce, "late"))
            .expect("taken")
            .expect("token");
    let first = h.connect(false, true);
    let id = match &first[..] {
        [Packet::Publish(p)] => {
            assert!(!p.dup, "first transmission");
            p.packet_id.expect("id").get()
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    h.st.connection_lost();
    assert_eq!(
        h.connect(false, true),
        vec![on_wire(QoS::ExactlyOnce, "late", id, true)]
    );
    h.ok(pubrec(id));
    h.written();
    h.st.connection_lost();
    assert_eq!(h.connect(false, true), vec![pubrel(id)]);
    h.ok(pubcomp(id));
    assert_eq!(h.events(), vec![done(token)]);
}

#[test]
fn publish_during_the_handshake_is_sent_after_connack() {
    let mut h = Harness::v311();
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    h.written();
    let token =
        h.st.publish(message(QoS::AtLeastOnce, "early"))
            .expect("taken")
            .expect("token");
    assert_eq!(h.written(), vec![], "nothing but CONNECT before CONNACK");
    h.ok(Packet::ConnAck(connack(false)));
    assert_eq!(h.events(), vec![Event::Connected(connack(false))]);
    let resent = h.written();
    assert_eq!(resent, vec![on_wire(QoS::AtLeastOnce, "early", 1, false)]);
    h.ok(puback(1));
    assert_eq!(h.events(), vec![done(token)]);
}

#[test]
fn refused_reconnect_keeps_the_flows() {
    let mut h = Harness::v311();
    h.connect(false, false);
    let (token, id) = h.publish(QoS::AtLeastOnce, "keep");
    h.st.connection_lost();
    h.st.start_connect(&connect_packet(h.version, false, 30))
        .expect("encodes");
    h.written();
    assert!(h
        .handle(Packet::ConnAck(refused(ReasonCode::SERVER_UNAVAILABLE)))
        .is_err());
    assert_eq!(
        h.written(),
        vec![],
        "nothing resent on a refused connection"
    );
    assert_eq!(h.st.inflight(), 1);
    assert_eq!(
        h.connect(false, true),
        vec![on_wire(QoS::AtLeastOnce, "keep", id, true)]
    );
    h.ok(puback(id));
    assert_eq!(h.events(), vec![done(token)]);
}

// ---------------------------------------------------------------------------------------
// Keep alive
// ---------------------------------------------------------------------------------------

#[test]
fn keepalive_pings_after_a_quiet_period_and_pingresp_clears() {
    let mut h = Harness::v311(); // keep alive 30 s, ping timeout 10 s
    h.st.start_connect(&connect_packet(h.version, true, 30))
        .expect("encodes");
    h.written();
    assert_eq!(h.st.next_timeout(), None, "not before CONNACK");
    h.st.handle(Packet::ConnAck(connack(false)), h.at(0))
        .expect("accepted");
    assert_eq!(h.st.next_timeout(), Some(h.at(30_000)));
    h.st.note_write(h.at(5_000));
    assert_eq!(
        h.st.next_timeout(),
        Some(h.at(30_000)),
        "nothing read since the CONNACK"
    );
    h.st.handle(Packet::PingResp, h.at(10_000))
        .expect("accepted");
    assert_eq!(
        h.st.next_timeout(),
        Some(h.at(35_000)),
        "the older of last write and last read counts"
    );
    h.st.handle_timeout(h.at(34_999)).expect("no timeout");
    assert_eq!(h.written(), vec![], "too early to ping");
    h.st.handle_timeout(h.at(35_000)).expect("no timeout");
    assert_eq!(h.written(), vec![Packet::PingReq]);
    h.st.note_write(h.at(35_000));
    assert_eq!(
        h.st.next_timeout(),
        Some(h.at(45_000)),
        "the PINGRESP deadline"
    );
    h.st.handle_timeout(h.at(40_000)).expect("still waiting");
    assert_eq!(h.written(), vec![], "one PINGREQ at a time");
    h.st.handle(Packet::PingResp, h.at(41_000))
        .expect("accepted");
    assert_eq!(h.st.next_timeout(), Some(h.at(65_000)));
    h.st.handle_timeout(h.at(50_000)).expect("no timeout");
    h.st.handle_timeout(h.at(64_000)).expect("no timeout");
    assert_eq!(h.written(), vec![]);
    h.st.handle_timeout(h.at(65_000)).expect("no timeout");
    assert_eq!(h.written(), vec![Packet::PingReq]);
}

#[test]
fn unanswered_ping_times_out() {
    let mut h = Harness::v311();
    h.connect(true, false); // CONNACK read at t0
    h.st.handle_timeout(h.at(30_000)).expect("ping only");
    assert_eq!(h.written(), vec![Packet::PingReq]);
    h.st.note_write(h.at(30_000));
    // Other traffic does not answer a PINGREQ.
    h.st.handle(puback(1), h.at(31_000)).expect("accepted");
    h.st.handle_timeout(h.at(39_999))
        .expect("within the ping timeout");
    assert_eq!(
        h.st.handle_timeout(h.at(40_000)),
        Err(PingTimeout(Duration::from_secs(10)))
    );
    // The driver then drops the connection: no timeouts until the next CONNACK.
    h.st.connection_lost();
    assert_eq!(h.st.next_timeout(), None);
    h.st.handle_timeout(h.at(100_000))
        .expect("nothing to time out");
    assert_eq!(h.written(), vec![]);
}

#[test]
fn reconnect_restarts_keepalive_timing() {
    // With and without `connection_lost` before the new `start_connect`.
    for lost_first in [true, false] {
        let mut h = Harness::v311();
        h.connect(false, false);
        h.st.handle_timeout(h.at(30_000)).expect("ping");
        assert_eq!(h.written(), vec![Packet::PingReq]);
        if lost_first {
            h.st.connection_lost();
        }
        h.st.start_connect(&connect_packet(h.version, false, 30))
            .expect("encodes");
        h.written();
        h.st.handle(Packet::ConnAck(connack(true)), h.at(100_000))
            .expect("accepted");
        assert_eq!(
            h.st.next_timeout(),
            Some(h.at(130_000)),
            "no stale PINGREQ deadline, timing from the new CONNACK (lost first: {lost_first})"
        );
        h.st.handle_timeout(h.at(129_000)).expect("no timeout");
        assert_eq!(h.written(), vec![]);
        h.st.handle_timeout(h.at(130_000)).expect("no timeout");
        assert_eq!(h.written(), vec![Packet::PingReq]);
    }
}

#[test]
fn keep_alive_zero_means_no_timeouts() {
    let mut h = Harness::new(StateOptions {
        keep_alive: Duration::ZERO,
        ..StateOptions::default()
    });
    h.connect(true, false);
    h.st.note_write(h.at(0));
    assert_eq!(h.st.next_timeout(), None);
    h.st.handle_timeout(h.at(10_000_000))
        .expect("never times out");
    assert_eq!(h.written(), vec![]);
}

// ---------------------------------------------------------------------------------------
// Ending the session
// ---------------------------------------------------------------------------------------

#[test]
fn drain_requests_returns_every_token() {
    let mut h = Harness::v311();
    h.connect(false, false);
    let (t1, _) = h.publish(QoS::AtLeastOnce, "a");
    let (t2, id2) = h.publish(QoS::ExactlyOnce, "b");
    h.ok(pubrec(id2));
    let t3 =
        h.st.subscribe(vec![sub("x", QoS::AtMostOnce)])
            .expect("taken");
    let t4 = h.st.unsubscribe(vec![filter("x")]).expect("taken");
    h.written();
    let (t5, id5) = h.publish(QoS::AtLeastOnce, "finished");
    h.ok(puback(id5));
    h.st.connection_lost();
    let t6 =
        h.st.publish(message(QoS::ExactlyOnce, "queued"))
            .expect("taken")
            .expect("token");
    assert_eq!(h.events(), vec![done(t5)]);
    assert_eq!(h.st.drain_requests(), vec![t1, t2, t3, t4, t6]);
    assert_eq!(h.st.inflight(), 0);
    assert_eq!(h.st.pending_requests(), 0);
    assert_eq!(h.ids_in_use(), Vec::<u16>::new());
    assert_eq!(h.st.drain_requests(), vec![]);
    assert_eq!(h.connect(false, true), vec![], "nothing left to resend");
}

// ---------------------------------------------------------------------------------------
// Property tests: a lossy broker
// ---------------------------------------------------------------------------------------

/// Who holds a packet identifier, as far as the test can tell from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    Message(u64),
    Request(u64),
}

#[derive(Debug, Clone)]
enum OutOp {
    /// Publish a new message (QoS 2 if true, else QoS 1).
    Publish(bool),
    Subscribe,
    Unsubscribe,
    /// The server reads the oldest packet the client wrote.
    ServerReadOldest,
    /// The server reads any packet the client wrote (servers may answer out of order).
    ServerReadAny(Index),
    /// The client reads the server's oldest packet.
    ClientRead,
    /// The client reads the server's oldest packet twice.
    ClientReadTwice,
    /// The connection breaks: both directions lose what is in transit.
    Drop,
    /// A new connection (dropping the current one if up) with the session kept; the
    /// number of publishes made between CONNECT and CONNACK.
    Reconnect(u8),
}

fn out_op() -> impl Strategy<Value = OutOp> {
    prop_oneof![
        6 => any::<bool>().prop_map(OutOp::Publish),
        1 => Just(OutOp::Subscribe),
        1 => Just(OutOp::Unsubscribe),
        5 => Just(OutOp::ServerReadOldest),
        3 => any::<Index>().prop_map(OutOp::ServerReadAny),
        6 => Just(OutOp::ClientRead),
        2 => Just(OutOp::ClientReadTwice),
        1 => Just(OutOp::Drop),
        1 => (0u8..3).prop_map(OutOp::Reconnect),
    ]
}

/// The client, the two directions of the connection and a broker with exactly-once
/// QoS 2 receive, plus everything the test knows about what should happen.
struct OutSim {
    st: ClientState,
    version: ProtocolVersion,
    now: Instant,
    max_inflight: usize,
    /// Client to server, in transit.
    c2s: VecDeque<Packet>,
    /// Server to client, in transit.
    s2c: VecDeque<Packet>,
    // --- the client side as the test sees it
    next_seq: u64,
    /// Accepted publishes: token -> (seq, qos).
    tokens: HashMap<Token, (u64, QoS)>,
    /// Tokens completed, with how often.
    completed: BTreeMap<Token, u32>,
    /// Request tokens -> request number (its filter is "r/<n>").
    requests: HashMap<Token, u64>,
    next_request: u64,
    /// Identifier each message / request was first written with.
    id_of: HashMap<Holder, u16>,
    /// Identifiers of flows written and not yet completed.
    holder_of: HashMap<u16, Holder>,
    /// Messages written at least once (a later write must carry DUP).
    written_once: BTreeSet<u64>,
    // --- the server
    /// QoS 2 identifiers received, awaiting PUBREL, with the message they carried.
    awaiting_rel: HashMap<u16, u64>,
    /// Deliveries to subscribers per message.
    delivered: BTreeMap<u64, u32>,
}

impl OutSim {
    fn new(max_inflight: u16) -> OutSim {
        OutSim {
            st: ClientState::new(StateOptions {
                version: ProtocolVersion::V3_1_1,
                keep_alive: Duration::ZERO,
                ping_timeout: Duration::from_secs(1),
                max_inflight,
                max_pending_requests: 4,
                auth: None,
            }),
            version: ProtocolVersion::V3_1_1,
            now: Instant::now(),
            max_inflight: usize::from(max_inflight),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            next_seq: 0,
            tokens: HashMap::new(),
            completed: BTreeMap::new(),
            requests: HashMap::new(),
            next_request: 0,
            id_of: HashMap::new(),
            holder_of: HashMap::new(),
            written_once: BTreeSet::new(),
            awaiting_rel: HashMap::new(),
            delivered: BTreeMap::new(),
        }
    }

    fn seq_of(p: &Publish) -> u64 {
        std::str::from_utf8(&p.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("payload is a sequence number")
    }

    fn request_of(f: &str) -> u64 {
        f.strip_prefix("r/")
            .and_then(|n| n.parse().ok())
            .expect("request filter")
    }

    /// Records that `holder` was written with `id`, checking identifier uniqueness.
    fn written_with(&mut self, holder: Holder, id: u16) -> Result<(), TestCaseError> {
        prop_assert_ne!(id, 0);
        if let Some(&first) = self.id_of.get(&holder) {
            prop_assert_eq!(first, id, "{:?} resent with another identifier", holder);
        }
        if let Some(&other) = self.holder_of.get(&id) {
            prop_assert_eq!(
                other,
                holder,
                "identifier {} written for {:?} while {:?} still holds it",
                id,
                holder,
                other
            );
        }
        self.id_of.insert(holder, id);
        self.holder_of.insert(id, holder);
        Ok(())
    }

    /// Takes the client's output into the client-to-server direction, checking it.
    fn pump(&mut self) -> Result<(), TestCaseError> {
        let buf = self.st.output().split();
        for p in decode_all(buf, self.version) {
            match &p {
                Packet::Publish(m) => {
                    let seq = Self::seq_of(m);
                    let id = m.packet_id.map(PacketId::get);
                    prop_assert!(id.is_some(), "QoS 1/2 PUBLISH without id");
                    self.written_with(Holder::Message(seq), id.unwrap_or(0))?;
                    let first = self.written_once.insert(seq);
                    prop_assert_eq!(
                        m.dup,
                        !first,
                        "DUP on message {} (first write: {})",
                        seq,
                        first
                    );
                }
                Packet::PubRel(a) => {
                    let holder = self.holder_of.get(&a.packet_id.get()).copied();
                    prop_assert!(
                        matches!(holder, Some(Holder::Message(s))
                            if self.tokens.values().any(|&(t, q)| t == s && q == QoS::ExactlyOnce)),
                        "PUBREL {} for {:?}, not a QoS 2 flow",
                        a.packet_id,
                        holder
                    );
                }
                Packet::Subscribe(s) => {
                    let n = Self::request_of(&s.subscriptions[0].filter);
                    self.written_with(Holder::Request(n), s.packet_id.get())?;
                }
                Packet::Unsubscribe(u) => {
                    let n = Self::request_of(&u.filters[0]);
                    self.written_with(Holder::Request(n), u.packet_id.get())?;
                }
                other => prop_assert!(false, "unexpected packet from the client: {:?}", other),
            }
            self.c2s.push_back(p);
        }
        self.check_ids()
    }

    fn check_ids(&self) -> Result<(), TestCaseError> {
        let ids: Vec<u16> = self.st.packet_ids_in_use().collect();
        let set: BTreeSet<u16> = ids.iter().copied().collect();
        prop_assert_eq!(ids.len(), set.len(), "duplicate ids in use: {:?}", ids);
        prop_assert!(!set.contains(&0));
        prop_assert_eq!(ids.len(), self.st.inflight() + self.st.pending_requests());
        prop_assert!(self.st.inflight() <= self.max_inflight);
        for id in self.holder_of.keys() {
            prop_assert!(
                set.contains(id),
                "identifier {} freed before its flow completed",
                id
            );
        }
        Ok(())
    }

    fn events(&mut self) -> Result<(), TestCaseError> {
        while let Some(e) = self.st.poll_event() {
            let token = match e {
                Event::Connected(_) => continue,
                Event::PublishDone { token, result } => {
                    prop_assert_eq!(result, Ok(ReasonCode::SUCCESS));
                    let seq = self.tokens.get(&token).map(|t| t.0);
                    prop_assert!(seq.is_some(), "PublishDone for unknown {:?}", token);
                    let holder = Holder::Message(seq.unwrap_or_default());
                    let id = self.id_of.get(&holder).copied();
                    prop_assert!(id.is_some(), "{:?} completed but never written", holder);
                    self.holder_of.remove(&id.unwrap_or_default());
                    token
                }
                Event::SubAck { token, .. } | Event::UnsubAck { token, .. } => {
                    let n = self.requests.get(&token).copied();
                    prop_assert!(n.is_some(), "ack for unknown request {:?}", token);
                    let id = self.id_of.get(&Holder::Request(n.unwrap_or_default()));
                    prop_assert!(id.is_some());
                    self.holder_of.remove(id.unwrap_or(&0));
                    token
                }
                Event::Message(m) => {
                    prop_assert!(false, "no message was published to the client: {:?}", m);
                    continue;
                }
            };
            let n = self.completed.entry(token).or_default();
            *n += 1;
            prop_assert_eq!(*n, 1, "{:?} completed twice", token);
        }
        Ok(())
    }

    fn publish(&mut self, qos2: bool) -> Result<(), TestCaseError> {
        let qos = if qos2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        self.next_seq += 1;
        let seq = self.next_seq;
        let m = message(qos, &seq.to_string());
        let full = self.st.inflight() >= self.max_inflight;
        match self.st.publish(m.clone()) {
            Ok(Some(token)) => {
                prop_assert!(!full, "taken beyond the window");
                prop_assert!(self.tokens.insert(token, (seq, qos)).is_none());
            }
            Err(PublishError::WindowFull(back)) => {
                prop_assert!(full, "refused with the window open");
                prop_assert_eq!(back, m);
            }
            other => prop_assert!(false, "publish: {:?}", other),
        }
        self.pump()
    }

    fn request(&mut self, subscribe: bool) -> Result<(), TestCaseError> {
        self.next_request += 1;
        let n = self.next_request;
        let f = format!("r/{n}");
        let r = if subscribe {
            self.st.subscribe(vec![sub(&f, QoS::AtLeastOnce)])
        } else {
            self.st.unsubscribe(vec![filter(&f)])
        };
        if let Ok(token) = r {
            self.requests.insert(token, n);
        }
        self.pump()
    }

    /// The broker handles one packet from the client.
    fn server_read(&mut self, p: Packet) -> Result<(), TestCaseError> {
        match p {
            Packet::Publish(m) => {
                let seq = Self::seq_of(&m);
                let id = m.packet_id.expect("checked in pump");
                match m.qos {
                    QoS::AtLeastOnce => {
                        *self.delivered.entry(seq).or_default() += 1;
                        self.s2c.push_back(Packet::PubAck(Ack::new(id)));
                    }
                    QoS::ExactlyOnce => {
                        match self.awaiting_rel.get(&id.get()) {
                            Some(&held) => prop_assert_eq!(
                                held,
                                seq,
                                "identifier {} reused for another message before PUBREL",
                                id
                            ),
                            None => {
                                *self.delivered.entry(seq).or_default() += 1;
                                self.awaiting_rel.insert(id.get(), seq);
                            }
                        }
                        self.s2c.push_back(Packet::PubRec(Ack::new(id)));
                    }
                    QoS::AtMostOnce => prop_assert!(false, "no QoS 0 is published"),
                }
            }
            Packet::PubRel(a) => {
                self.awaiting_rel.remove(&a.packet_id.get());
                self.s2c.push_back(Packet::PubComp(Ack::new(a.packet_id)));
            }
            Packet::Subscribe(s) => self.s2c.push_back(Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                codes: vec![ReasonCode::GRANTED_QOS_1; s.subscriptions.len()],
                properties: Properties::new(),
            })),
            Packet::Unsubscribe(u) => self.s2c.push_back(Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                codes: Vec::new(),
                properties: Properties::new(),
            })),
            other => prop_assert!(false, "server got {:?}", other),
        }
        Ok(())
    }

    fn client_read(&mut self, p: Packet) -> Result<(), TestCaseError> {
        let r = self.st.handle(p, self.now);
        prop_assert!(r.is_ok(), "client refused a valid packet: {:?}", r);
        self.events()?;
        self.pump()
    }

    fn drop_connection(&mut self) {
        self.st.connection_lost();
        self.c2s.clear();
        self.s2c.clear();
    }

    fn reconnect(&mut self, publishes_in_handshake: u8) -> Result<(), TestCaseError> {
        if self.st.phase() != Phase::Disconnected {
            self.drop_connection();
        }
        prop_assert!(self
            .st
            .start_connect(&connect_packet(self.version, false, 0))
            .is_ok());
        let hello = decode_all(self.st.output().split(), self.version);
        prop_assert!(
            matches!(&hello[..], [Packet::Connect(c)] if !c.clean_start),
            "{:?}",
            hello
        );
        for i in 0..publishes_in_handshake {
            self.publish(i % 2 == 0)?;
            prop_assert!(self.c2s.is_empty(), "written before CONNACK");
        }
        let r = self.st.handle(Packet::ConnAck(connack(true)), self.now);
        prop_assert!(r.is_ok(), "{:?}", r);
        self.events()?;
        self.pump()
    }

    fn step(&mut self, op: &OutOp) -> Result<(), TestCaseError> {
        match op {
            OutOp::Publish(qos2) => self.publish(*qos2)?,
            OutOp::Subscribe => self.request(true)?,
            OutOp::Unsubscribe => self.request(false)?,
            OutOp::ServerReadOldest => {
                if let Some(p) = self.c2s.pop_front() {
                    self.server_read(p)?;
                }
            }
            OutOp::ServerReadAny(i) => {
                if !self.c2s.is_empty() {
                    let p = self.c2s.remove(i.index(self.c2s.len()));
                    self.server_read(p.expect("in range"))?;
                }
            }
            OutOp::ClientRead => {
                if let Some(p) = self.s2c.pop_front() {
                    self.client_read(p)?;
                }
            }
            OutOp::ClientReadTwice => {
                if let Some(p) = self.s2c.pop_front() {
                    self.client_read(p.clone())?;
                    self.client_read(p)?;
                }
            }
            OutOp::Drop => self.drop_connection(),
            OutOp::Reconnect(n) => self.reconnect(*n)?,
        }
        self.check_ids()
    }

    /// A last reconnect, then a server that answers everything in order.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.reconnect(0)?;
        for _ in 0..100_000 {
            if let Some(p) = self.c2s.pop_front() {
                self.server_read(p)?;
            } else if let Some(p) = self.s2c.pop_front() {
                self.client_read(p)?;
            } else {
                break;
            }
        }
        prop_assert!(self.c2s.is_empty() && self.s2c.is_empty(), "did not settle");
        prop_assert_eq!(self.st.inflight(), 0);
        prop_assert_eq!(self.st.pending_requests(), 0);
        prop_assert_eq!(self.st.packet_ids_in_use().count(), 0);
        prop_assert!(self.awaiting_rel.is_empty(), "{:?}", self.awaiting_rel);
        for (token, &(seq, qos)) in &self.tokens {
            prop_assert_eq!(
                self.completed.get(token).copied(),
                Some(1),
                "message {} ({:?}) not completed once",
                seq,
                qos
            );
            let n = self.delivered.get(&seq).copied().unwrap_or(0);
            match qos {
                QoS::ExactlyOnce => {
                    prop_assert_eq!(n, 1, "QoS 2 message {} delivered {} times", seq, n)
                }
                _ => prop_assert!(n >= 1, "QoS 1 message {} never delivered", seq),
            }
        }
        for token in self.requests.keys() {
            prop_assert_eq!(self.completed.get(token).copied(), Some(1));
        }
        prop_assert_eq!(
            self.completed.len(),
            self.tokens.len() + self.requests.len()
        );
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum InOp {
    /// The server publishes a new QoS 2 message on this identifier if it is free.
    Publish(Index),
    /// The server resends what it awaits an answer to on this identifier: the PUBLISH with
    /// DUP before PUBREC, the PUBREL after.
    Resend(Index),
    ClientRead,
    ClientReadTwice,
    ServerRead,
    Drop,
    Reconnect,
}

fn in_op() -> impl Strategy<Value = InOp> {
    prop_oneof![
        4 => any::<Index>().prop_map(InOp::Publish),
        3 => any::<Index>().prop_map(InOp::Resend),
        6 => Just(InOp::ClientRead),
        1 => Just(InOp::ClientReadTwice),
        5 => Just(InOp::ServerRead),
        1 => Just(InOp::Drop),
        1 => Just(InOp::Reconnect),
    ]
}

/// Where the server's QoS 2 flow on one identifier stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out2 {
    Free,
    AwaitRec(u32),
    AwaitComp(u32),
}

const IN_IDS: [u16; 3] = [1, 2, 65_535];

/// The server side of QoS 2 flows towards the client.
struct InSim {
    st: ClientState,
    now: Instant,
    c2s: VecDeque<Packet>,
    s2c: VecDeque<Packet>,
    flows: [Out2; 3],
    generation: [u32; 3],
    /// Messages the application got, per (identifier, generation).
    got: BTreeMap<(u16, u32), u32>,
}

impl InSim {
    fn new() -> InSim {
        InSim {
            st: ClientState::new(StateOptions {
                keep_alive: Duration::ZERO,
                ..StateOptions::default()
            }),
            now: Instant::now(),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            flows: [Out2::Free; 3],
            generation: [0; 3],
            got: BTreeMap::new(),
        }
    }

    fn publish(slot: usize, generation: u32, dup: bool) -> Packet {
        Packet::Publish(server_publish(
            QoS::ExactlyOnce,
            Some(IN_IDS[slot]),
            dup,
            &format!("{}/{}", IN_IDS[slot], generation),
        ))
    }

    fn resend(&mut self, slot: usize) {
        match self.flows[slot] {
            Out2::Free => {}
            Out2::AwaitRec(g) => self.s2c.push_back(Self::publish(slot, g, true)),
            Out2::AwaitComp(_) => self.s2c.push_back(pubrel(IN_IDS[slot])),
        }
    }

    fn client_read(&mut self, p: Packet) -> Result<(), TestCaseError> {
        let r = self.st.handle(p, self.now);
        prop_assert!(r.is_ok(), "{:?}", r);
        while let Some(e) = self.st.poll_event() {
            match e {
                Event::Message(m) => {
                    prop_assert_eq!(m.qos, QoS::ExactlyOnce);
                    let text = std::str::from_utf8(&m.payload)
                        .unwrap_or_default()
                        .to_owned();
                    let (id, g) = text.split_once('/').unwrap_or_default();
                    let key: (u16, u32) = (id.parse().unwrap_or(0), g.parse().unwrap_or(0));
                    prop_assert_eq!(m.packet_id.map(PacketId::get), Some(key.0));
                    let n = self.got.entry(key).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "message {:?} delivered twice", key);
                }
                Event::Connected(_) => {}
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        self.pump()
    }

    fn pump(&mut self) -> Result<(), TestCaseError> {
        for p in decode_all(self.st.output().split(), ProtocolVersion::V3_1_1) {
            prop_assert!(
                matches!(p, Packet::PubRec(_) | Packet::PubComp(_)),
                "client wrote {:?}",
                p
            );
            self.c2s.push_back(p);
        }
        prop_assert_eq!(self.st.packet_ids_in_use().count(), 0);
        Ok(())
    }

    fn server_read(&mut self, p: Packet) -> Result<(), TestCaseError> {
        let (id, rec) = match &p {
            Packet::PubRec(a) => (a.packet_id.get(), true),
            Packet::PubComp(a) => (a.packet_id.get(), false),
            other => {
                prop_assert!(false, "server got {:?}", other);
                return Ok(());
            }
        };
        let slot = IN_IDS.iter().position(|&i| i == id);
        prop_assert!(slot.is_some(), "ack for an id never used: {}", id);
        let slot = slot.unwrap_or_default();
        match (self.flows[slot], rec) {
            (Out2::AwaitRec(g), true) => {
                self.flows[slot] = Out2::AwaitComp(g);
                self.s2c.push_back(pubrel(id));
            }
            (Out2::AwaitComp(_), true) => self.s2c.push_back(pubrel(id)),
            (Out2::AwaitComp(_), false) => self.flows[slot] = Out2::Free,
            // A PUBCOMP answering a resent PUBREL after the flow ended (possibly after the
            // identifier started a new flow).
            (Out2::Free | Out2::AwaitRec(_), false) => {}
            (state, _) => prop_assert!(false, "{:?} while {:?}", p, state),
        }
        Ok(())
    }

    fn reconnect(&mut self) -> Result<(), TestCaseError> {
        self.st.connection_lost();
        self.c2s.clear();
        self.s2c.clear();
        prop_assert!(self
            .st
            .start_connect(&connect_packet(ProtocolVersion::V3_1_1, false, 0))
            .is_ok());
        self.st.output().clear();
        self.client_read(Packet::ConnAck(connack(true)))?;
        // [MQTT-4.4.0-1]: the server resends unacknowledged PUBLISH and PUBREL.
        for slot in 0..IN_IDS.len() {
            self.resend(slot);
        }
        Ok(())
    }

    fn step(&mut self, op: &InOp) -> Result<(), TestCaseError> {
        match op {
            InOp::Publish(i) => {
                let slot = i.index(IN_IDS.len());
                if self.flows[slot] == Out2::Free {
                    self.generation[slot] += 1;
                    let g = self.generation[slot];
                    self.flows[slot] = Out2::AwaitRec(g);
                    self.s2c.push_back(Self::publish(slot, g, false));
                }
            }
            InOp::Resend(i) => self.resend(i.index(IN_IDS.len())),
            InOp::ClientRead => {
                if let Some(p) = self.s2c.pop_front() {
                    self.client_read(p)?;
                }
            }
            InOp::ClientReadTwice => {
                if let Some(p) = self.s2c.pop_front() {
                    self.client_read(p.clone())?;
                    self.client_read(p)?;
                }
            }
            InOp::ServerRead => {
                if let Some(p) = self.c2s.pop_front() {
                    self.server_read(p)?;
                }
            }
            InOp::Drop => {
                self.st.connection_lost();
                self.c2s.clear();
                self.s2c.clear();
            }
            InOp::Reconnect => self.reconnect()?,
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.reconnect()?;
        for _ in 0..10_000 {
            if let Some(p) = self.s2c.pop_front() {
                self.client_read(p)?;
            } else if let Some(p) = self.c2s.pop_front() {
                self.server_read(p)?;
            } else {
                break;
            }
        }
        prop_assert_eq!(self.flows, [Out2::Free; 3], "did not settle");
        prop_assert_eq!(self.st.incoming_qos2(), 0);
        for (slot, &id) in IN_IDS.iter().enumerate() {
            for g in 1..=self.generation[slot] {
                prop_assert_eq!(
                    self.got.get(&(id, g)).copied(),
                    Some(1),
                    "message {}/{} not delivered exactly once",
                    id,
                    g
                );
            }
        }
        let published: u32 = self.generation.iter().sum();
        prop_assert_eq!(self.got.len(), published as usize);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// Outgoing QoS 1/2 through a lossy connection: identifiers never shared, every
    /// message completes exactly once, the broker gets QoS 2 exactly once and QoS 1 at
    /// least once.
    #[test]
    fn outgoing_flows_survive_a_lossy_broker(
        max_inflight in 1u16..8,
        ops in prop::collection::vec(out_op(), 1..200),
    ) {
        let mut sim = OutSim::new(max_inflight);
        sim.reconnect(0)?;
        for op in &ops {
            sim.step(op)?;
        }
        sim.settle()?;
    }

    /// Incoming QoS 2 with redeliveries, duplicate packets and reconnects with a present
    /// session: the application gets every message exactly once.
    #[test]
    fn incoming_qos2_is_exactly_once(ops in prop::collection::vec(in_op(), 1..200)) {
        let mut sim = InSim::new();
        sim.reconnect()?;
        for op in &ops {
            sim.step(op)?;
        }
        sim.settle()?;
    }
}

// ---------------------------------------------------------------------------------------
// 5.0: what CONNACK says, topic aliases from the server, the server's DISCONNECT
// ---------------------------------------------------------------------------------------

/// A 5.0 state connected with `connect_props` and a CONNACK carrying `ack_props`.
fn v5_connected(connect_props: Properties, ack_props: Properties) -> Harness {
    let mut h = Harness::new(StateOptions {
        version: ProtocolVersion::V5,
        max_inflight: 8,
        ..StateOptions::default()
    });
    let mut c = connect_packet(ProtocolVersion::V5, true, 30);
    c.properties = connect_props;
    h.st.start_connect(&c).expect("CONNECT encodes");
    h.written();
    h.ok(Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::SUCCESS,
        properties: ack_props,
    }));
    h.events();
    h
}

#[test]
fn v5_connack_terms_bound_what_the_client_sends() {
    let mut ack = Properties::new();
    ack.get_mut().receive_maximum = Some(2);
    ack.get_mut().maximum_qos = Some(QoS::AtLeastOnce);
    ack.get_mut().retain_available = Some(false);
    ack.get_mut().maximum_packet_size = Some(30);
    ack.get_mut().server_keep_alive = Some(5);
    let mut h = v5_connected(Properties::new(), ack);
    // Receive Maximum 2 closes the window after two, whatever max_inflight says.
    h.publish(QoS::AtLeastOnce, "a");
    h.publish(QoS::AtLeastOnce, "b");
    assert!(!h.st.window_open());
    let refused = |h: &mut Harness, m: Publish| match h.st.publish(m) {
        Err(PublishError::NotAllowed(code, _)) => code,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(&mut h, message(QoS::ExactlyOnce, "q")),
        ReasonCode::QOS_NOT_SUPPORTED
    );
    let mut r = message(QoS::AtMostOnce, "r");
    r.retain = true;
    assert_eq!(refused(&mut h, r), ReasonCode::RETAIN_NOT_SUPPORTED);
    assert_eq!(
        refused(&mut h, message(QoS::AtMostOnce, &"x".repeat(40))),
        ReasonCode::PACKET_TOO_LARGE
    );
    assert!(h.written().is_empty(), "nothing refused was sent");
    // The server's keep alive replaces the client's 30 s.
    assert_eq!(h.st.next_timeout(), Some(h.at(5_000)));
}

#[test]
fn v5_topic_aliases_from_the_server_are_resolved_and_checked() {
    let mut props = Properties::new();
    props.get_mut().topic_alias_maximum = Some(2);
    let mut h = v5_connected(props, Properties::new());
    let aliased = |topic: &str, alias: u16| {
        let mut p = server_publish(QoS::AtMostOnce, None, false, "x");
        p.topic = if topic.is_empty() {
            TopicName::empty()
        } else {
            TopicName::new(topic).unwrap()
        };
        p.properties.get_mut().topic_alias = Some(alias);
        Packet::Publish(p)
    };
    h.ok(aliased("a/b", 1));
    h.ok(aliased("", 1));
    h.ok(aliased("c", 1));
    h.ok(aliased("", 1));
    let topics: Vec<(String, Option<u16>)> = h
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Message(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        topics,
        [("a/b", None), ("a/b", None), ("c", None), ("c", None)].map(|(t, a)| (t.to_string(), a))
    );
    // Above the maximum, 0, or never set: a protocol violation [MQTT-3.3.2-9].
    for bad in [aliased("t", 3), aliased("t", 0), aliased("", 2)] {
        assert!(matches!(
            h.handle(bad),
            Err(HandleError::Protocol(ProtocolViolation::TopicAlias(_)))
        ));
    }
    // A new connection forgets them [MQTT-3.3.2-7].
    let mut props = Properties::new();
    props.get_mut().topic_alias_maximum = Some(2);
    let mut c = connect_packet(ProtocolVersion::V5, true, 30);
    c.properties = props;
    h.st.start_connect(&c).unwrap();
    h.ok(Packet::ConnAck(connack(false)));
    assert!(h.handle(aliased("", 1)).is_err());
}

#[test]
fn v5_the_servers_disconnect_reason_is_kept_for_the_connection() {
    let mut h = v5_connected(Properties::new(), Properties::new());
    assert_eq!(h.st.disconnect_reason(), None);
    h.ok(Packet::Disconnect(Disconnect {
        reason: ReasonCode::SESSION_TAKEN_OVER,
        properties: Properties::new(),
    }));
    assert_eq!(
        h.st.disconnect_reason(),
        Some(ReasonCode::SESSION_TAKEN_OVER)
    );
    h.st.start_connect(&connect_packet(ProtocolVersion::V5, true, 30))
        .unwrap();
    assert_eq!(h.st.disconnect_reason(), None);
}

#[test]
fn v5_the_client_gives_the_server_topic_aliases_within_what_connack_allows() {
    let mut ack = Properties::new();
    ack.get_mut().topic_alias_maximum = Some(2);
    let mut h = v5_connected(Properties::new(), ack.clone());
    let topic = |t: &str| {
        let mut m = message(QoS::AtMostOnce, "x");
        m.topic = TopicName::new(t).unwrap();
        m
    };
    for t in ["a", "a", "b", "c", "a"] {
        h.st.publish(topic(t)).unwrap();
    }
    let sent: Vec<(String, Option<u16>)> = h
        .written()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("{other:?}"),
        })
        .collect();
    let want: Vec<(String, Option<u16>)> = [
        ("a", Some(1)),
        ("", Some(1)),
        ("b", Some(2)),
        // Both taken: "a" (used before "b") is the least recently used.
        ("c", Some(1)),
        ("a", Some(2)),
    ]
    .into_iter()
    .map(|(t, a)| (t.to_string(), a))
    .collect();
    assert_eq!(sent, want);
    // A new connection starts without aliases [MQTT-3.3.2-7]; none when CONNACK allows
    // none.
    h.st.start_connect(&connect_packet(ProtocolVersion::V5, true, 30))
        .unwrap();
    h.written();
    h.ok(Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::SUCCESS,
        properties: ack,
    }));
    h.events();
    h.st.publish(topic("a")).unwrap();
    h.st.start_connect(&connect_packet(ProtocolVersion::V5, true, 30))
        .unwrap();
    h.ok(Packet::ConnAck(connack(false)));
    h.st.publish(topic("a")).unwrap();
    let sent: Vec<(String, Option<u16>)> = h
        .written()
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.properties.topic_alias)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [("a".to_string(), None)]);
}

#[test]
fn v5_enhanced_authentication_answers_challenges_before_connack_and_on_reauthentication() {
    let mut h = Harness::new(StateOptions {
        version: ProtocolVersion::V5,
        auth: Some(super::state::Responder {
            method: ByteString::from("M"),
            respond: std::sync::Arc::new(|d: Option<&[u8]>| {
                Some(Bytes::from(format!(
                    "re:{}",
                    String::from_utf8_lossy(d.unwrap_or_default())
                )))
            }),
        }),
        ..StateOptions::default()
    });
    let auth = |reason: ReasonCode, method: &str, data: &'static [u8]| {
        let mut properties = Properties::new();
        properties.get_mut().authentication_method = Some(ByteString::from(method));
        properties.get_mut().authentication_data = Some(Bytes::from_static(data));
        Packet::Auth(Auth { reason, properties })
    };
    h.st.start_connect(&connect_packet(ProtocolVersion::V5, true, 30))
        .unwrap();
    h.written();
    // A challenge before CONNACK is answered with the responder's data.
    h.ok(auth(ReasonCode::CONTINUE_AUTHENTICATION, "M", b"x"));
    match &h.written()[..] {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(a.properties.authentication_method.as_deref(), Some("M"));
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"re:x"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    h.ok(Packet::ConnAck(connack(false)));
    h.events();
    // Re-authentication: AUTH 0x19, a challenge, then 0x00.
    assert!(h.st.reauthenticate(Some(Bytes::from_static(b"again"))));
    match &h.written()[..] {
        [Packet::Auth(a)] => assert_eq!(a.reason, ReasonCode::REAUTHENTICATE),
        other => panic!("{other:?}"),
    }
    h.ok(auth(ReasonCode::CONTINUE_AUTHENTICATION, "M", b"y"));
    assert_eq!(h.written().len(), 1);
    h.ok(auth(ReasonCode::SUCCESS, "M", b""));
    // Only the client starts a re-authentication: a challenge out of the blue, or one
    // with another method, is a violation.
    assert!(matches!(
        h.handle(auth(ReasonCode::CONTINUE_AUTHENTICATION, "M", b"z")),
        Err(HandleError::Protocol(ProtocolViolation::Auth))
    ));
    assert!(h.st.reauthenticate(None));
    assert!(matches!(
        h.handle(auth(ReasonCode::CONTINUE_AUTHENTICATION, "N", b"z")),
        Err(HandleError::Protocol(ProtocolViolation::Auth))
    ));
}

#[test]
fn v5_a_reconnect_resends_within_the_new_servers_terms() {
    let mut ack = Properties::new();
    ack.get_mut().receive_maximum = Some(4);
    let mut h = v5_connected(Properties::new(), ack);
    let ids: Vec<(Token, u16)> = (0..3)
        .map(|i| h.publish(QoS::AtLeastOnce, &format!("m{i}")))
        .collect();
    let (q2, _) = h.publish(QoS::ExactlyOnce, "two");
    h.st.connection_lost();
    // The new server takes 2 at once and QoS 1 at most.
    let mut c = connect_packet(ProtocolVersion::V5, false, 30);
    c.properties = Properties::new();
    h.st.start_connect(&c).unwrap();
    h.written();
    let mut props = Properties::new();
    props.get_mut().receive_maximum = Some(2);
    props.get_mut().maximum_qos = Some(QoS::AtLeastOnce);
    h.ok(Packet::ConnAck(ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: props,
    }));
    let resent: Vec<(u16, bool)> = h
        .written()
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.packet_id.unwrap().get(), p.dup),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        resent,
        [(ids[0].1, true), (ids[1].1, true)],
        "two, the window"
    );
    let events = h.events();
    assert!(
        events.contains(&Event::PublishDone {
            token: q2,
            result: Err(ReasonCode::QOS_NOT_SUPPORTED)
        }),
        "{events:?}"
    );
    // A stray ack for the flow still waiting changes nothing [it was not sent].
    h.ok(puback(ids[2].1));
    h.ok(pubrec(ids[2].1));
    assert!(h.written().is_empty());
    assert!(h.events().is_empty());
    // An ack makes room for the third.
    h.ok(puback(ids[0].1));
    match &h.written()[..] {
        [Packet::Publish(p)] => assert_eq!((p.packet_id.unwrap().get(), p.dup), (ids[2].1, true)),
        other => panic!("{other:?}"),
    }
}
