//! The client library against real brokers: an in-process two-shard SurgeMQ (publisher and
//! subscriber on different shards) and mosquitto, for MQTT 3.1 and 3.1.1. QoS 0/1/2 both
//! ways, retained, will, persistent sessions resumed after a forced disconnect with
//! in-flight messages resent, keep alive and dead-broker detection, refused connections,
//! automatic reconnect, callbacks and back-pressure.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use client_env::{conn, next, run, within, Kind, Proxy, Target};
use futures::StreamExt;
use surgemq::client::{glommio_connect, Backoff, ClientError, ConnectOptions, Messages};
use surgemq::protocol::{ProtocolVersion, QoS, ReasonCode};

const LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);
const KINDS: [Kind; 2] = [Kind::SurgeMq, Kind::Mosquitto];
const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1];
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn opts(id: &str, v: ProtocolVersion) -> ConnectOptions {
    ConnectOptions::new(id).version(v)
}

async fn nothing(m: &mut Messages, d: Duration) {
    if let Some(Some(msg)) = within(d, m.next()).await {
        panic!("unexpected message {msg:?}");
    }
}

/// Every publish QoS delivered through every subscription QoS, both versions, both
/// brokers: the subscriber gets min(pub, sub) QoS and each message once (QoS 1/2 here run
/// over a clean local network, so there is no reason for a duplicate).
#[test]
fn qos_matrix_both_ways() {
    for kind in KINDS {
        for v in VERSIONS {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let (sub, mut msgs, _) = conn(t.addr(), opts(&t.id_on(0, "sub"), v)).await;
                let (publ, _pm, _) = conn(t.addr(), opts(&t.id_on(1, "pub"), v)).await;
                for sq in QOS {
                    let filter = format!("m/{}/#", sq as u8);
                    assert_eq!(
                        sub.subscribe(&filter, sq).await.unwrap(),
                        sq,
                        "{kind:?} {v:?} granted"
                    );
                    for pq in QOS {
                        let topic = format!("m/{}/{}", sq as u8, pq as u8);
                        for i in 0..5u8 {
                            publ.publish(topic.as_str(), vec![i], pq, false)
                                .await
                                .unwrap();
                        }
                        for i in 0..5u8 {
                            let m = next(&mut msgs).await;
                            assert_eq!(
                                (&*m.topic, &m.payload[..]),
                                (topic.as_str(), &[i][..]),
                                "{kind:?} {v:?}"
                            );
                            assert_eq!(m.qos, pq.min(sq), "{kind:?} {v:?} delivered QoS");
                            assert!(!m.retain);
                        }
                    }
                }
                nothing(&mut msgs, Duration::from_millis(200)).await;
                assert_eq!(publ.inflight(), 0);
                publ.disconnect().await.unwrap();
                sub.disconnect().await.unwrap();
                drop(t);
            });
        }
    }
}

/// A QoS 1/2 publish completes only when the broker acknowledged it: after it returns, a
/// new subscriber to the retained topic sees exactly that message.
#[test]
fn retained_set_and_cleared() {
    for kind in KINDS {
        for v in VERSIONS {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let (publ, _pm, _) = conn(t.addr(), opts(&t.id_on(0, "rp"), v)).await;
                publ.publish("r/a", "first", QoS::AtLeastOnce, true)
                    .await
                    .unwrap();
                publ.publish("r/a", "second", QoS::ExactlyOnce, true)
                    .await
                    .unwrap();
                let (sub, mut msgs, _) = conn(t.addr(), opts(&t.id_on(1, "rs"), v)).await;
                sub.subscribe("r/#", QoS::ExactlyOnce).await.unwrap();
                let m = next(&mut msgs).await;
                assert_eq!(&m.payload[..], b"second", "{kind:?} {v:?}");
                assert!(m.retain, "retained copy carries RETAIN");
                assert_eq!(m.qos, QoS::ExactlyOnce);
                // A live delivery of a retained publish to an existing subscriber has
                // RETAIN clear on 3.1.1 [MQTT-3.3.1-9]; empty payload clears the store.
                publ.publish("r/a", Bytes::new(), QoS::AtLeastOnce, true)
                    .await
                    .unwrap();
                let m = next(&mut msgs).await;
                assert!(m.payload.is_empty());
                let (late, mut late_msgs, _) = conn(t.addr(), opts(&t.id_on(0, "rl"), v)).await;
                late.subscribe("r/#", QoS::AtLeastOnce).await.unwrap();
                nothing(&mut late_msgs, Duration::from_millis(300)).await;
                drop(t);
            });
        }
    }
}

/// The will is published when the connection dies without DISCONNECT (cut by the proxy),
/// and not after a clean `disconnect()`.
#[test]
fn will_on_forced_disconnect_only() {
    for kind in KINDS {
        for v in VERSIONS {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let proxy = Proxy::start(t.addr());
                let (watch, mut msgs, _) = conn(t.addr(), opts(&t.id_on(0, "ww"), v)).await;
                watch.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();

                let o =
                    opts(&t.id_on(1, "wc"), v).will("will/gone", "bye", QoS::AtLeastOnce, false);
                let (clean, _m, _) = conn(proxy.addr, o.clone()).await;
                clean.disconnect().await.unwrap();
                nothing(&mut msgs, Duration::from_millis(500)).await;

                let (dying, _m2, _) = conn(proxy.addr, o).await;
                dying
                    .publish("x", "y", QoS::AtLeastOnce, false)
                    .await
                    .unwrap();
                proxy.cut();
                let m = next(&mut msgs).await;
                assert_eq!(
                    (&*m.topic, &m.payload[..]),
                    ("will/gone", &b"bye"[..]),
                    "{kind:?} {v:?}"
                );
                drop(t);
            });
        }
    }
}

/// A persistent session: messages published while the client is away are delivered when
/// it comes back (Session Present set), for both brokers.
#[test]
fn persistent_session_receives_offline_messages() {
    for kind in KINDS {
        for v in VERSIONS {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let id = t.id_on(0, "ps");
                let o = opts(&id, v).clean_session(false);
                let (c, _m, _) = conn(t.addr(), o.clone()).await;
                c.subscribe("p/#", QoS::ExactlyOnce).await.unwrap();
                c.disconnect().await.unwrap();

                let (publ, _pm, _) = conn(t.addr(), opts(&t.id_on(1, "pp"), v)).await;
                for i in 0..10u8 {
                    let q = if i % 2 == 0 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::ExactlyOnce
                    };
                    publ.publish("p/x", vec![i], q, false).await.unwrap();
                }
                let (c, mut msgs, present) = conn(t.addr(), o).await;
                if v == ProtocolVersion::V3_1_1 {
                    assert!(present, "{kind:?}: Session Present on resume");
                }
                for i in 0..10u8 {
                    let m = next(&mut msgs).await;
                    assert_eq!(&m.payload[..], &[i], "{kind:?} {v:?} order");
                }
                nothing(&mut msgs, Duration::from_millis(300)).await;
                c.disconnect().await.unwrap();
                drop(t);
            });
        }
    }
}

/// In-flight QoS 1/2 publishes whose acks were lost are resent with DUP after an automatic
/// reconnect and complete; the subscriber gets every QoS 2 message exactly once and every
/// QoS 1 message at least once.
#[test]
fn inflight_resent_after_forced_disconnect() {
    for kind in KINDS {
        for v in VERSIONS {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let proxy = Proxy::start(t.addr());
                let (sub, mut msgs, _) = conn(t.addr(), opts(&t.id_on(0, "rs"), v)).await;
                sub.subscribe("q/#", QoS::ExactlyOnce).await.unwrap();

                let o = opts(&t.id_on(1, "rp"), v)
                    .clean_session(false)
                    .reconnect(Backoff {
                        initial: Duration::from_millis(50),
                        max: Duration::from_millis(200),
                    });
                let (publ, _pm, _) = conn(proxy.addr, o).await;
                // Acks from the broker are lost from here on.
                proxy.drop_downstream(true);
                let mut tasks = Vec::new();
                for i in 0..20u8 {
                    let p = publ.clone();
                    let q = if i < 10 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::ExactlyOnce
                    };
                    tasks.push(glommio::spawn_local(async move {
                        p.publish(format!("q/{}", q as u8), vec![i], q, false).await
                    }));
                }
                glommio::timer::sleep(Duration::from_millis(300)).await;
                assert_eq!(
                    publ.inflight(),
                    20,
                    "{kind:?} {v:?}: nothing can complete without acks"
                );
                proxy.drop_downstream(false);
                proxy.cut();
                for task in tasks {
                    within(WAIT, task)
                        .await
                        .expect("publish completes after reconnect")
                        .unwrap();
                }
                assert!(publ.is_connected());
                let mut q1 = [0u32; 10];
                let mut q2 = [0u32; 10];
                while let Some(Some(m)) = within(Duration::from_millis(500), msgs.next()).await {
                    let i = m.payload[0] as usize;
                    if i < 10 {
                        q1[i] += 1;
                    } else {
                        q2[i - 10] += 1;
                    }
                }
                assert!(
                    q1.iter().all(|&n| n >= 1),
                    "{kind:?} {v:?}: QoS 1 at least once: {q1:?}"
                );
                assert!(
                    q2.iter().all(|&n| n == 1),
                    "{kind:?} {v:?}: QoS 2 exactly once: {q2:?}"
                );
                publ.disconnect().await.unwrap();
                drop(t);
            });
        }
    }
}

/// Keep alive: an idle client stays connected (its pings are answered); a client whose
/// broker stops answering notices within keep alive + ping timeout, and what is pending
/// fails with a timeout.
#[test]
fn keepalive_and_dead_broker_detection() {
    for kind in KINDS {
        for v in VERSIONS {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let proxy = Proxy::start(t.addr());
                let o = opts(&t.id_on(0, "ka"), v).keep_alive(Duration::from_secs(1));
                let (c, _m, _) = conn(proxy.addr, o).await;
                glommio::timer::sleep(Duration::from_millis(2500)).await;
                assert!(c.is_connected(), "{kind:?} {v:?}: idle client kept alive");
                c.publish("k", "alive", QoS::AtLeastOnce, false)
                    .await
                    .unwrap();

                proxy.blackhole(true);
                let start = std::time::Instant::now();
                let r = within(WAIT, c.publish("k", "lost", QoS::AtLeastOnce, false)).await;
                let elapsed = start.elapsed();
                match r {
                    Some(Err(ClientError::Timeout(what))) => assert_eq!(what, "PINGRESP"),
                    other => panic!("{kind:?} {v:?}: expected a ping timeout, got {other:?}"),
                }
                assert!(
                    elapsed < Duration::from_secs(4),
                    "detected after {elapsed:?}"
                );
                assert!(!c.is_connected());
                drop(t);
            });
        }
    }
}

/// Refused connections carry the broker's return code: SurgeMQ rejects a 3.1 client id
/// longer than 23 characters ("identifier rejected", 3.1 §3.1); mosquitto without
/// anonymous access rejects a client without credentials ("not authorized").
#[test]
fn refused_connection_reports_return_code() {
    for v in VERSIONS {
        run(LIMIT, move || async move {
            let t = Target::start(Kind::SurgeMq);
            let long = "x".repeat(30);
            let r =
                glommio_connect(&t.addr().to_string(), opts(&long, ProtocolVersion::V3_1)).await;
            match r {
                Err(ClientError::Refused(code)) => {
                    assert_eq!(code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
                }
                other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
            }
            let m = client_env::Mosquitto::start_with("allow_anonymous false\n");
            let r = glommio_connect(&m.addr.to_string(), opts("anon", v)).await;
            match r {
                Err(ClientError::Refused(code)) => {
                    assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{v:?}")
                }
                other => panic!("{v:?}: expected a refusal, got {:?}", other.map(|_| ())),
            }
            drop(t);
        });
    }
}

/// No broker listening: connect fails with an I/O error; a black-holed broker: connect
/// fails with a CONNACK timeout.
#[test]
fn connect_failures_are_typed() {
    run(LIMIT, || async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        match glommio_connect(&port.to_string(), ConnectOptions::new("nobody")).await {
            Err(ClientError::Io(_)) => {}
            other => panic!("expected an I/O error, got {:?}", other.map(|_| ())),
        }
        let t = Target::start(Kind::SurgeMq);
        let proxy = Proxy::start(t.addr());
        proxy.blackhole(true);
        let o = ConnectOptions::new("slow").connect_timeout(Duration::from_millis(300));
        match glommio_connect(&proxy.addr.to_string(), o).await {
            Err(ClientError::Timeout("CONNACK")) => {}
            other => panic!("expected a CONNACK timeout, got {:?}", other.map(|_| ())),
        }
    });
}

/// Automatic reconnect with a clean session renews the subscriptions the broker forgot;
/// with a persistent session the broker still has them. Either way messages keep flowing.
#[test]
fn reconnect_renews_or_resumes_subscriptions() {
    for kind in KINDS {
        for clean in [true, false] {
            run(LIMIT, move || async move {
                let t = Target::start(kind);
                let proxy = Proxy::start(t.addr());
                let o = opts(&t.id_on(0, "rr"), ProtocolVersion::V3_1_1)
                    .clean_session(clean)
                    .reconnect(Backoff {
                        initial: Duration::from_millis(50),
                        max: Duration::from_millis(100),
                    });
                let (sub, mut msgs, _) = conn(proxy.addr, o).await;
                sub.subscribe("rr/#", QoS::AtLeastOnce).await.unwrap();
                let (publ, _pm, _) =
                    conn(t.addr(), opts(&t.id_on(1, "rp"), ProtocolVersion::V3_1_1)).await;
                publ.publish("rr/1", "before", QoS::AtLeastOnce, false)
                    .await
                    .unwrap();
                assert_eq!(&next(&mut msgs).await.payload[..], b"before");

                proxy.refuse(true);
                proxy.cut();
                glommio::timer::sleep(Duration::from_millis(300)).await;
                assert!(
                    !sub.is_connected(),
                    "{kind:?} clean={clean}: connection down"
                );
                proxy.refuse(false);
                let deadline = std::time::Instant::now() + WAIT;
                while !sub.is_connected() && std::time::Instant::now() < deadline {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
                assert!(sub.is_connected(), "{kind:?} clean={clean}: reconnected");
                // Let a renewed SUBSCRIBE reach the broker before publishing.
                glommio::timer::sleep(Duration::from_millis(200)).await;
                publ.publish("rr/2", "after", QoS::AtLeastOnce, false)
                    .await
                    .unwrap();
                // "before" may come again: its PUBACK can be lost in the cut (at least once).
                let mut m = next(&mut msgs).await;
                while &m.payload[..] == b"before" {
                    m = next(&mut msgs).await;
                }
                assert_eq!(&m.payload[..], b"after", "{kind:?} clean={clean}");
                sub.disconnect().await.unwrap();
                drop(t);
            });
        }
    }
}

/// The callback form: messages matching a callback's filter go to it, others to the
/// stream; unsubscribe stops both the broker's deliveries and the callback.
#[test]
fn callbacks_and_unsubscribe() {
    for kind in KINDS {
        run(LIMIT, move || async move {
            let t = Target::start(kind);
            let (c, mut msgs, _) =
                conn(t.addr(), opts(&t.id_on(0, "cb"), ProtocolVersion::V3_1_1)).await;
            let got: Arc<Mutex<Vec<String>>> = Arc::default();
            let g = got.clone();
            c.subscribe_with("cb/#", QoS::AtLeastOnce, move |m| {
                g.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&m.payload).into_owned())
            })
            .await
            .unwrap();
            c.subscribe("other/#", QoS::AtMostOnce).await.unwrap();
            let (p, _pm, _) =
                conn(t.addr(), opts(&t.id_on(1, "cbp"), ProtocolVersion::V3_1_1)).await;
            p.publish("cb/1", "one", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            p.publish("other/1", "stream", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            p.publish("cb/2", "two", QoS::ExactlyOnce, false)
                .await
                .unwrap();
            assert_eq!(&next(&mut msgs).await.payload[..], b"stream");
            glommio::timer::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                *got.lock().unwrap(),
                vec!["one".to_string(), "two".to_string()],
                "{kind:?}"
            );
            c.unsubscribe(&["cb/#"]).await.unwrap();
            p.publish("cb/3", "three", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            nothing(&mut msgs, Duration::from_millis(300)).await;
            assert_eq!(got.lock().unwrap().len(), 2);
            drop(t);
        });
    }
}

/// Back-pressure instead of growth: a subscriber with a tiny incoming buffer that reads
/// slowly still gets all 2,000 QoS 1 messages in order, and a publisher with a window of 4
/// never has more than 4 in flight.
#[test]
fn bounded_buffers_push_back() {
    for kind in KINDS {
        run(LIMIT, move || async move {
            let t = Target::start(kind);
            let so = opts(&t.id_on(0, "bs"), ProtocolVersion::V3_1_1).incoming_capacity(8);
            let (sub, mut msgs, _) = conn(t.addr(), so).await;
            sub.subscribe("bp/#", QoS::AtLeastOnce).await.unwrap();
            let po = opts(&t.id_on(1, "bpp"), ProtocolVersion::V3_1_1)
                .max_inflight(4)
                .max_buffered_bytes(4096);
            let (publ, _pm, _) = conn(t.addr(), po).await;
            let p2 = publ.clone();
            let n = 2000u32;
            let producer = glommio::spawn_local(async move {
                let mut max_seen = 0;
                for i in 0..n {
                    p2.publish("bp/x", i.to_be_bytes().to_vec(), QoS::AtLeastOnce, false)
                        .await
                        .unwrap();
                    max_seen = max_seen.max(p2.inflight());
                }
                max_seen
            });
            for i in 0..n {
                let m = next(&mut msgs).await;
                assert_eq!(
                    u32::from_be_bytes(m.payload[..4].try_into().unwrap()),
                    i,
                    "{kind:?} order"
                );
                if i % 200 == 0 {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                }
            }
            let max_inflight = producer.await;
            assert!(max_inflight <= 4, "window respected: {max_inflight}");
            drop(t);
        });
    }
}

/// After `disconnect` every operation fails with `Closed` and the stream ends.
#[test]
fn operations_after_disconnect_fail_closed() {
    run(LIMIT, || async {
        let t = Target::start(Kind::SurgeMq);
        let (c, mut msgs, _) = conn(t.addr(), ConnectOptions::new("closer")).await;
        c.disconnect().await.unwrap();
        assert!(matches!(
            c.publish("a", "b", QoS::AtLeastOnce, false).await,
            Err(ClientError::Closed)
        ));
        assert!(matches!(
            c.subscribe("a", QoS::AtLeastOnce).await,
            Err(ClientError::Closed)
        ));
        assert!(within(WAIT, msgs.next())
            .await
            .expect("stream ends")
            .is_none());
        assert!(matches!(
            c.publish("bad/#", "b", QoS::AtMostOnce, false).await,
            Err(ClientError::InvalidTopic(_))
        ));
    });
}

/// A client that drops its message stream keeps working: unmatched messages are discarded
/// instead of filling the queue and stopping the driver from reading acks.
#[test]
fn dropped_message_stream_does_not_stall_the_client() {
    run(LIMIT, || async {
        let t = Target::start(Kind::SurgeMq);
        let o = opts(&t.id_on(0, "drop"), ProtocolVersion::V3_1_1).incoming_capacity(4);
        let (c, msgs, _) = conn(t.addr(), o).await;
        drop(msgs);
        c.subscribe("d/#", QoS::AtLeastOnce).await.unwrap();
        for i in 0..200u32 {
            // Each publish comes back to us (unread) and must still be acknowledged.
            within(
                WAIT,
                c.publish("d/x", i.to_be_bytes().to_vec(), QoS::AtLeastOnce, false),
            )
            .await
            .expect("publish completes")
            .unwrap();
        }
        c.disconnect().await.unwrap();
    });
}
