//! The client library at MQTT 5.0 against real brokers: an in-process two-shard SurgeMQ
//! (clients on both shards) and mosquitto (a 5.0 broker we did not write). Reason codes in
//! results, properties both ways, subscription options and identifiers, shared
//! subscriptions, topic aliases from the broker resolved, session expiry, request /
//! response, the server's DISCONNECT reason, and what CONNACK said respected.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::time::Duration;

use bytestring::ByteString;
use client_env::{conn, next, run, within, Kind, Target};
use futures::StreamExt;
use surgemq::client::{glommio_connect, ClientError, ConnectOptions};
use surgemq::protocol::{Properties, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};

const LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);
const KINDS: [Kind; 2] = [Kind::SurgeMq, Kind::Mosquitto];
const V5: ProtocolVersion = ProtocolVersion::V5;

fn opts(id: &str) -> ConnectOptions {
    ConnectOptions::new(id).version(V5)
}

#[test]
fn publish_results_properties_and_identifiers() {
    for kind in KINDS {
        run(LIMIT, move || async move {
            let t = Target::start(kind);
            let (sub, mut msgs, _) = conn(t.addr(), opts(&t.id_on(0, "v5sub"))).await;
            let (publ, _m, _) = conn(t.addr(), opts(&t.id_on(1, "v5pub"))).await;
            // Nobody subscribed: QoS 1 says so with 0x10 (a success) on SurgeMQ; mosquitto
            // may say 0x00.
            let code = publ
                .publish_with("v5/none", "x", QoS::AtLeastOnce, false, Properties::new())
                .await
                .unwrap();
            match kind {
                Kind::SurgeMq => assert_eq!(code, ReasonCode::NO_MATCHING_SUBSCRIBERS),
                _ => assert!(code.is_success(), "{code:?}"),
            }
            let granted = sub
                .subscribe_opts(
                    &[("v5/t/#", SubscriptionOptions::new(QoS::AtLeastOnce))],
                    Some(42),
                )
                .await
                .unwrap();
            assert_eq!(granted, [Ok(QoS::AtLeastOnce)]);
            let mut p = Properties::new();
            p.get_mut().content_type = Some(ByteString::from("text/plain"));
            p.get_mut()
                .user_properties
                .push((ByteString::from("k"), ByteString::from("v")));
            p.get_mut().message_expiry_interval = Some(3600);
            let code = publ
                .publish_with("v5/t/a", "hello", QoS::AtLeastOnce, false, p)
                .await
                .unwrap();
            assert_eq!(code, ReasonCode::SUCCESS, "{kind:?}");
            let m = next(&mut msgs).await;
            assert_eq!((&*m.topic, &m.payload[..]), ("v5/t/a", &b"hello"[..]));
            assert_eq!(m.properties.subscription_identifiers, [42], "{kind:?}");
            assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
            assert_eq!(m.properties.user_properties[0].0, "k");
            assert!(m
                .properties
                .message_expiry_interval
                .is_some_and(|s| s <= 3600));
            // What the client does not let out: PUBLISH properties on 3.1.1 are refused
            // before anything is sent.
            let (old, _m, _) = conn(
                t.addr(),
                ConnectOptions::new(t.id_on(0, "v5old")).version(ProtocolVersion::V3_1_1),
            )
            .await;
            let mut p = Properties::new();
            p.get_mut().content_type = Some(ByteString::from("x"));
            assert!(matches!(
                old.publish_with("v5/t/b", "x", QoS::AtMostOnce, false, p)
                    .await,
                Err(ClientError::InvalidOptions(_))
            ));
        });
    }
}

#[test]
fn shared_subscriptions_split_messages_between_members() {
    for kind in KINDS {
        run(LIMIT, move || async move {
            let t = Target::start(kind);
            let (a, mut ma, _) = conn(t.addr(), opts(&t.id_on(0, "v5sa"))).await;
            let (b, mut mb, _) = conn(t.addr(), opts(&t.id_on(1, "v5sb"))).await;
            for c in [&a, &b] {
                c.subscribe("$share/g/v5/jobs", QoS::AtLeastOnce)
                    .await
                    .unwrap();
            }
            let (publ, _m, _) = conn(t.addr(), opts(&t.id_on(1, "v5sp"))).await;
            let n = 20u8;
            for i in 0..n {
                publ.publish("v5/jobs", vec![i], QoS::AtLeastOnce, false)
                    .await
                    .unwrap();
            }
            let mut got = Vec::new();
            while got.len() < usize::from(n) {
                let m = futures::future::select(ma.next(), mb.next()).await;
                let (m, _) = m.factor_first();
                got.push(m.expect("stream open").payload[0]);
            }
            got.sort();
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{kind:?}: each once");
            for m in [&mut ma, &mut mb] {
                assert!(within(Duration::from_millis(300), m.next()).await.is_none());
            }
        });
    }
}

#[test]
fn topic_aliases_from_the_broker_are_resolved() {
    run(LIMIT, || async {
        let t = Target::start(Kind::SurgeMq);
        let (sub, mut msgs, _) =
            conn(t.addr(), opts(&t.id_on(0, "v5al")).topic_alias_maximum(2)).await;
        sub.subscribe("v5al/#", QoS::AtMostOnce).await.unwrap();
        let (publ, _m, _) = conn(t.addr(), opts(&t.id_on(1, "v5alp"))).await;
        let topics = ["v5al/a", "v5al/b", "v5al/a", "v5al/c", "v5al/a", "v5al/b"];
        for (i, topic) in topics.iter().enumerate() {
            publ.publish(*topic, vec![i as u8], QoS::AtLeastOnce, false)
                .await
                .unwrap();
        }
        for (i, topic) in topics.iter().enumerate() {
            let m = next(&mut msgs).await;
            assert_eq!((&*m.topic, m.payload[0]), (*topic, i as u8));
            assert_eq!(m.properties.topic_alias, None, "resolved and removed");
        }
    });
}

/// Against SurgeMQ (Topic Alias Maximum 10 in CONNACK) the client publishes under aliases;
/// subscribers get the full topic every time.
#[test]
fn the_client_publishes_under_topic_aliases() {
    run(LIMIT, || async {
        let t = Target::start(Kind::SurgeMq);
        let (sub, mut msgs, _) = conn(t.addr(), opts(&t.id_on(0, "v5ca-s"))).await;
        sub.subscribe("v5ca/#", QoS::AtLeastOnce).await.unwrap();
        let (publ, _m, _) = conn(t.addr(), opts(&t.id_on(1, "v5ca-p"))).await;
        assert_eq!(publ.server_terms().topic_alias_maximum, 10);
        let topics = ["v5ca/a", "v5ca/a", "v5ca/b", "v5ca/a"];
        for (i, topic) in topics.iter().enumerate() {
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
            publ.publish(*topic, vec![i as u8], qos, false)
                .await
                .unwrap();
        }
        for (i, topic) in topics.iter().enumerate() {
            let m = next(&mut msgs).await;
            assert_eq!((&*m.topic, m.payload[0]), (*topic, i as u8));
        }
    });
}

#[test]
fn request_and_response() {
    for kind in KINDS {
        run(LIMIT, move || async move {
            let t = Target::start(kind);
            let (server, mut calls, _) = conn(t.addr(), opts(&t.id_on(0, "v5srv"))).await;
            server
                .subscribe("v5/svc/echo", QoS::AtLeastOnce)
                .await
                .unwrap();
            let (client, _m, _) = conn(t.addr(), opts(&t.id_on(1, "v5cli"))).await;
            let answer = glommio::spawn_local(async move {
                for _ in 0..2 {
                    let req = next(&mut calls).await;
                    let mut reply = b"echo:".to_vec();
                    reply.extend_from_slice(&req.payload);
                    assert!(server.respond(&req, reply, QoS::AtLeastOnce).await.unwrap());
                }
            })
            .detach();
            for body in ["one", "two"] {
                let resp = within(WAIT, client.request("v5/svc/echo", body, QoS::AtLeastOnce))
                    .await
                    .expect("a response in time")
                    .unwrap();
                assert_eq!(
                    &resp.payload[..],
                    format!("echo:{body}").as_bytes(),
                    "{kind:?}"
                );
            }
            answer.await;
        });
    }
}

#[test]
fn session_expiry_keeps_the_session_and_takeover_says_why() {
    for kind in KINDS {
        run(LIMIT, move || async move {
            let t = Target::start(kind);
            let id = t.id_on(0, "v5exp");
            let o = || opts(&id).clean_session(false).session_expiry(300);
            let (c, _m, _) = conn(t.addr(), o()).await;
            c.subscribe("v5/exp", QoS::AtLeastOnce).await.unwrap();
            // Taken over: SurgeMQ tells the first connection why (0x8E); the mosquitto
            // here just closes it.
            let (c2, mut m2, present) = conn(t.addr(), o()).await;
            assert!(present, "{kind:?}: the session was kept");
            let r = within(WAIT, async {
                loop {
                    match c.publish("v5/x", "x", QoS::AtMostOnce, false).await {
                        Err(e) => break e,
                        Ok(()) => glommio::timer::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
            .await
            .expect("the taken-over client ends");
            match kind {
                Kind::SurgeMq => assert!(
                    matches!(r, ClientError::Disconnected(ReasonCode::SESSION_TAKEN_OVER)),
                    "{r:?}"
                ),
                _ => assert!(
                    matches!(
                        r,
                        ClientError::Disconnected(ReasonCode::SESSION_TAKEN_OVER)
                            | ClientError::ConnectionClosed
                    ),
                    "{kind:?}: {r:?}"
                ),
            }
            // Gone for a while: the session (and its subscription) waits for it.
            c2.disconnect().await.unwrap();
            let (p, _pm, _) = conn(t.addr(), opts(&t.id_on(1, "v5exp-p"))).await;
            p.publish("v5/exp", "kept", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            drop(m2.next());
            let (_c3, mut m3, present) = conn(t.addr(), o()).await;
            assert!(present);
            assert_eq!(&next(&mut m3).await.payload[..], b"kept", "{kind:?}");
        });
    }
}

#[test]
fn connack_terms_are_respected() {
    run(LIMIT, || async {
        let t = Target::start(Kind::SurgeMq);
        let (c, _m, _) = conn(t.addr(), opts(&t.id_on(0, "v5terms"))).await;
        let terms = c.server_terms();
        // SurgeMQ's defaults: 1 MiB packets, QoS 2, retained messages.
        assert_eq!(terms.maximum_packet_size, 1 << 20);
        assert_eq!(terms.maximum_qos, QoS::ExactlyOnce);
        assert!(terms.retain_available);
        // A message beyond the server's Maximum Packet Size is not sent (0x95).
        let big = vec![0u8; (1 << 20) + 1];
        assert!(matches!(
            c.publish("v5/big", big, QoS::AtLeastOnce, false).await,
            Err(ClientError::PublishRefused(ReasonCode::PACKET_TOO_LARGE))
        ));
        // An assigned client identifier is readable from CONNACK.
        let (anon, _m, _) = conn(t.addr(), opts("")).await;
        let assigned = anon.connack_properties().assigned_client_identifier.clone();
        assert!(assigned.is_some_and(|id| !id.is_empty()));
    });
}

/// A hook with one method, "PLEASE": the broker asks "magic word?", the client must say
/// "please".
struct Please;

struct PleaseExchange;

impl surgemq::server::AuthExchange for PleaseExchange {
    fn step(&mut self, data: Option<&[u8]>) -> surgemq::server::AuthStep {
        use surgemq::server::AuthStep;
        match data {
            None | Some(b"") | Some(b"hi") => {
                AuthStep::Continue(Some(bytes::Bytes::from_static(b"magic word?")))
            }
            Some(b"please") => AuthStep::Success(None),
            _ => AuthStep::Fail(ReasonCode::NOT_AUTHORIZED),
        }
    }
}

impl surgemq::server::Authenticator for Please {
    fn authenticate(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<(), ReasonCode> {
        Ok(())
    }
    fn start_auth(
        &self,
        _: &str,
        _: Option<&str>,
        method: &str,
    ) -> Option<Box<dyn surgemq::server::AuthExchange>> {
        (method == "PLEASE")
            .then(|| Box::new(PleaseExchange) as Box<dyn surgemq::server::AuthExchange>)
    }
}

#[test]
fn enhanced_authentication_through_a_callback() {
    run(LIMIT, || async {
        let b = common::Broker::with_hooks(2, |_| {}, Please);
        let polite = |word: &'static str| {
            move |challenge: Option<&[u8]>| {
                assert_eq!(challenge, Some(&b"magic word?"[..]));
                Some(bytes::Bytes::from_static(word.as_bytes()))
            }
        };
        for shard in 0..2 {
            let o = opts(&b.id_on(shard, "v5auth")).authentication(
                "PLEASE",
                Some(bytes::Bytes::from_static(b"hi")),
                polite("please"),
            );
            let (c, mut m, _) = conn(b.addr, o).await;
            c.subscribe("v5auth/#", QoS::AtLeastOnce).await.unwrap();
            // Re-authentication: the same callback answers; the connection goes on.
            assert!(c.reauthenticate(None));
            c.publish("v5auth/x", "after", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            assert_eq!(&next(&mut m).await.payload[..], b"after");
            // The wrong word: refused in CONNACK.
            let o = opts(&b.id_on(shard, "v5rude")).authentication("PLEASE", None, polite("now"));
            match glommio_connect(&b.addr.to_string(), o).await {
                Err(ClientError::Refused(code)) => assert_eq!(code, ReasonCode::NOT_AUTHORIZED),
                other => panic!("{:?}", other.map(|_| ())),
            }
            // A method the broker does not know: 0x8C.
            let o = opts(&b.id_on(shard, "v5other")).authentication(
                "OTHER",
                None,
                |_: Option<&[u8]>| None,
            );
            match glommio_connect(&b.addr.to_string(), o).await {
                Err(ClientError::Refused(code)) => {
                    assert_eq!(code, ReasonCode::BAD_AUTHENTICATION_METHOD)
                }
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
    });
}
