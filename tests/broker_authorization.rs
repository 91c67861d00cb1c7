//! The authorization hook (`Authenticator::authorize_publish` / `authorize_subscribe`)
//! over TCP with 2 shards, for 3.1.1 and 5.0: a denied PUBLISH is not routed (5.0:
//! PUBACK / PUBREC 0x87, the QoS 2 flow ended; 3.x: acknowledged as usual), a denied
//! filter gets SUBACK 0x87 (3.x 0x80) while the others are granted, and a will the client
//! may not publish refuses its CONNECT.

mod common;

use common::*;
use surgemq::protocol::*;
use surgemq::server::{Authenticator, ClientInfo};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Denies publishing under `secret/` (except to user "admin") and subscribing under
/// `forbidden/`.
struct Acl;

impl Authenticator for Acl {
    fn authenticate(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<(), ReasonCode> {
        Ok(())
    }
    fn authorize_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        !topic.starts_with("secret/") || client.username == Some("admin")
    }
    fn authorize_subscribe(&self, _: &ClientInfo<'_>, filter: &str) -> bool {
        // The hook sees the full text: a share group's filter part is after the group.
        let f = filter
            .strip_prefix("$share/")
            .and_then(|r| r.split_once('/'))
            .map_or(filter, |(_, f)| f);
        !f.starts_with("forbidden/")
    }
}

fn start() -> Broker {
    Broker::with_hooks(2, |_| {}, Acl)
}

fn expect_ack(c: &mut Raw, want: Packet) {
    let got = c.recv();
    assert_eq!(got, want);
}

fn ack(id: u16, reason: ReasonCode) -> Ack {
    let mut a = Ack::new(pid(id));
    a.reason = reason;
    a
}

#[test]
fn denied_publishes_are_not_routed_and_5_0_says_why() {
    let b = start();
    for (shard, v) in [(0, V5), (1, V5), (0, V311), (1, V311)] {
        let tag = format!("{shard}{}", v.level());
        let mut sub = b.client(v, &b.id_on(1 - shard, &format!("az-s{tag}")), true);
        sub.subscribe(
            1,
            &[("secret/#", QoS::ExactlyOnce), ("open/#", QoS::ExactlyOnce)],
        );
        let mut p = b.client(v, &b.id_on(shard, &format!("az-p{tag}")), true);
        let refused = if v.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        p.publish("secret/a", b"q0", QoS::AtMostOnce, false, None);
        p.publish("secret/a", b"q1", QoS::AtLeastOnce, false, Some(1));
        expect_ack(&mut p, Packet::PubAck(ack(1, refused)));
        p.publish("secret/a", b"q2", QoS::ExactlyOnce, false, Some(2));
        expect_ack(&mut p, Packet::PubRec(ack(2, refused)));
        if !v.is_v5() {
            // 3.x: the flow completes as usual.
            p.send(&Packet::PubRel(Ack::new(pid(2))));
            expect_ack(&mut p, Packet::PubComp(Ack::new(pid(2))));
        }
        // 5.0: PUBREC 0x87 ended the flow, so id 2 is free for a new message.
        p.publish_acked("open/a", b"ok", QoS::ExactlyOnce, false, 2);
        assert_eq!(&sub.recv_publish().payload[..], b"ok", "{tag}");
        sub.expect_nothing();
    }
    // A user the hook allows.
    let mut sub = b.client(V5, &b.id_on(0, "az-admin-s"), true);
    sub.subscribe(1, &[("secret/#", QoS::AtLeastOnce)]);
    let mut admin = b.raw(V5);
    let mut c = connect_packet(V5, &b.id_on(1, "az-admin"), true, 60, None);
    c.username = Some("admin".into());
    admin.connect_with(c);
    admin.publish_acked("secret/b", b"allowed", QoS::AtLeastOnce, false, 1);
    assert_eq!(&sub.recv_publish().payload[..], b"allowed");
}

#[test]
fn denied_filters_are_refused_in_suback_and_the_rest_granted() {
    let b = start();
    for (shard, v, denied) in [
        (0, V5, ReasonCode::NOT_AUTHORIZED),
        (1, V5, ReasonCode::NOT_AUTHORIZED),
        (0, V311, ReasonCode::UNSPECIFIED_ERROR),
        (1, V311, ReasonCode::UNSPECIFIED_ERROR),
    ] {
        let mut c = b.client(v, &b.id_on(shard, "az-sub"), true);
        let codes = c.subscribe(
            1,
            &[
                ("forbidden/#", QoS::AtLeastOnce),
                ("fine/#", QoS::AtLeastOnce),
                ("$share/g/forbidden/x", QoS::AtLeastOnce),
            ],
        );
        assert_eq!(codes, [denied, ReasonCode(1), denied], "{v:?}");
        // Nothing published under the denied filter reaches it.
        let mut p = b.client(v, &b.id_on(1 - shard, "az-subp"), true);
        p.publish_acked("forbidden/x", b"no", QoS::AtLeastOnce, false, 1);
        p.publish_acked("fine/x", b"yes", QoS::AtLeastOnce, false, 2);
        assert_eq!(&c.recv_publish().payload[..], b"yes");
        c.expect_nothing();
    }
}

#[test]
fn a_will_the_client_may_not_publish_refuses_the_connect() {
    let b = start();
    for (shard, v, code) in [
        (0, V5, ReasonCode::NOT_AUTHORIZED),
        (1, V311, ReasonCode::NOT_AUTHORIZED),
    ] {
        let mut c = b.raw(v);
        let will = will_msg("secret/will", b"bye", QoS::AtLeastOnce, false);
        let ack = c.connect_with(connect_packet(
            v,
            &b.id_on(shard, "az-will"),
            true,
            60,
            Some(will),
        ));
        assert_eq!(ack.reason, code, "{v:?}");
        let mut ok = b.raw(v);
        let will = will_msg("open/will", b"bye", QoS::AtLeastOnce, false);
        let ack = ok.connect_with(connect_packet(
            v,
            &b.id_on(shard, "az-will2"),
            true,
            60,
            Some(will),
        ));
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
    }
}
