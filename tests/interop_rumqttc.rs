//! Interoperability with rumqttc 0.25 as a real client (its v4 `AsyncClient` + `EventLoop`,
//! MQTT 3.1.1) on a tokio runtime, against an in-process two-shard broker.
//!
//! Publisher and subscriber always live on different shards (`Broker::id_on`), so every
//! delivery crosses the mesh. Each client's event loop runs in its own tokio task that
//! forwards every incoming packet to the test over a channel and stops at the first
//! connection error (rumqttc would otherwise reconnect on the next poll). Aborting that task
//! drops the `EventLoop` and with it the socket: an abrupt disconnect without DISCONNECT.

mod common;

use std::time::Duration;

use common::{Broker, QUIET, WAIT};
use futures::channel::mpsc::{unbounded, UnboundedReceiver};
use futures::StreamExt;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, Event, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use tokio::task::JoinHandle;

/// What a client's event-loop task reports.
#[derive(Debug)]
enum Ev {
    /// A packet from the broker.
    In(Packet),
    /// The client wrote DISCONNECT.
    SentDisconnect,
    /// The connection ended (the task has stopped).
    Closed(String),
}

/// One rumqttc client with its event loop running in a task.
struct Client {
    id: String,
    client: AsyncClient,
    events: UnboundedReceiver<Ev>,
    task: JoinHandle<()>,
}

fn options(b: &Broker, id: &str, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, b.addr.ip().to_string(), b.addr.port());
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

impl Client {
    /// Connects with `opts` and returns the client and its CONNACK (asserted accepted).
    async fn connect(opts: MqttOptions) -> (Client, ConnAck) {
        let id = opts.client_id();
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, events) = unbounded();
        let task = tokio::spawn(async move {
            loop {
                let ev = match eventloop.poll().await {
                    Ok(Event::Incoming(p)) => Ev::In(p),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => Ev::SentDisconnect,
                    Ok(Event::Outgoing(_)) => continue,
                    Err(e) => {
                        let _ = tx.unbounded_send(Ev::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.unbounded_send(ev).is_err() {
                    return;
                }
            }
        });
        let mut c = Client {
            id,
            client,
            events,
            task,
        };
        let ack = match c.next().await {
            Packet::ConnAck(a) => a,
            other => panic!("{}: expected CONNACK, got {other:?}", c.id),
        };
        assert_eq!(
            ack.code,
            ConnectReturnCode::Success,
            "{}: CONNECT refused",
            c.id
        );
        (c, ack)
    }

    /// A clean-session client on the broker.
    async fn clean(b: &Broker, id: &str) -> Client {
        let (c, ack) = Client::connect(options(b, id, true)).await;
        assert!(
            !ack.session_present,
            "{id}: clean session with session_present=1"
        );
        c
    }

    /// The next event, or None after `wait`.
    async fn next_event_within(&mut self, wait: Duration) -> Option<Ev> {
        match tokio::time::timeout(wait, self.events.next()).await {
            Ok(Some(ev)) => Some(ev),
            Ok(None) => Some(Ev::Closed("event loop task gone".into())),
            Err(_) => None,
        }
    }

    /// The next packet from the broker (panics after [`WAIT`] or on a closed connection).
    async fn next(&mut self) -> Packet {
        loop {
            match self.next_event_within(WAIT).await {
                Some(Ev::In(p)) => return p,
                Some(Ev::SentDisconnect) => continue,
                Some(Ev::Closed(e)) => panic!("{}: connection closed: {e}", self.id),
                None => panic!("{}: nothing from the broker within {WAIT:?}", self.id),
            }
        }
    }

    /// The next PUBLISH; PUBREL (answered by rumqttc) and PINGRESP are skipped, anything
    /// else is an error.
    async fn next_publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Packet::Publish(p) => return p,
                Packet::PubRel(_) | Packet::PingResp => continue,
                other => panic!("{}: expected PUBLISH, got {other:?}", self.id),
            }
        }
    }

    /// Asserts no PUBLISH arrives for [`QUIET`] (and the connection stays up).
    async fn expect_no_publish(&mut self) {
        let deadline = tokio::time::Instant::now() + QUIET;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event_within(left).await {
                None => return,
                Some(Ev::In(Packet::PubRel(_) | Packet::PingResp)) => continue,
                Some(other) => panic!("{}: expected nothing, got {other:?}", self.id),
            }
        }
    }

    /// SUBSCRIBE one filter and return the SUBACK code.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        match self.next().await {
            Packet::SubAck(a) => {
                assert_eq!(a.return_codes.len(), 1, "{}: {a:?}", self.id);
                a.return_codes[0]
            }
            other => panic!("{}: expected SUBACK, got {other:?}", self.id),
        }
    }

    /// PUBLISH and wait for the QoS flow to complete (PUBACK, or PUBREC then PUBCOMP).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.next().await {
                Packet::PubAck(_) => {}
                other => panic!("{}: expected PUBACK, got {other:?}", self.id),
            },
            QoS::ExactlyOnce => {
                match self.next().await {
                    Packet::PubRec(_) => {}
                    other => panic!("{}: expected PUBREC, got {other:?}", self.id),
                }
                match self.next().await {
                    Packet::PubComp(_) => {}
                    other => panic!("{}: expected PUBCOMP, got {other:?}", self.id),
                }
            }
        }
    }

    /// Sends DISCONNECT and waits until the connection is closed.
    async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let mut sent = false;
        loop {
            match self.next_event_within(WAIT).await {
                Some(Ev::SentDisconnect) => sent = true,
                Some(Ev::Closed(_)) => break,
                Some(Ev::In(Packet::PubRel(_) | Packet::PingResp)) => {}
                Some(Ev::In(p)) => panic!("{}: unexpected {p:?} after DISCONNECT", self.id),
                None => panic!("{}: broker did not close after DISCONNECT", self.id),
            }
        }
        assert!(sent, "{}: DISCONNECT never written", self.id);
        let _ = self.task.await;
    }

    /// Drops the event loop (and its socket) without DISCONNECT.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// (topic, payload, qos, retain, dup) of a PUBLISH, for exact comparisons.
fn summary(p: &Publish) -> (String, String, QoS, bool, bool) {
    (
        p.topic.clone(),
        String::from_utf8(p.payload.to_vec()).unwrap(),
        p.qos,
        p.retain,
        p.dup,
    )
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

fn granted(q: QoS) -> SubscribeReasonCode {
    SubscribeReasonCode::Success(q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_pubsub_every_qos_across_shards() {
    let b = Broker::start(2);
    for (sub_shard, pub_shard) in [(0, 1), (1, 0)] {
        for qos in QOS {
            let tag = format!("{}{}", sub_shard, qos as u8);
            let mut sub = Client::clean(&b, &b.id_on(sub_shard, &format!("rs{tag}"))).await;
            let mut publ = Client::clean(&b, &b.id_on(pub_shard, &format!("rp{tag}"))).await;
            let filter = format!("x/{tag}/#");
            assert_eq!(
                sub.subscribe(&filter, QoS::ExactlyOnce).await,
                granted(QoS::ExactlyOnce)
            );
            let topic = format!("x/{tag}/t");
            for i in 0..20 {
                publ.publish(&topic, qos, false, format!("m{i}").as_bytes())
                    .await;
            }
            for i in 0..20 {
                let p = sub.next_publish().await;
                assert_eq!(
                    summary(&p),
                    (topic.clone(), format!("m{i}"), qos, false, false),
                    "message {i} from shard {pub_shard} to shard {sub_shard}"
                );
            }
            sub.expect_no_publish().await;
            publ.disconnect().await;
            sub.disconnect().await;
        }
    }
}

/// [MQTT-3.8.4-6]: a message is delivered at the minimum of its QoS and the granted QoS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_delivery_qos_is_capped_by_subscription() {
    let b = Broker::start(2);
    let mut publ = Client::clean(&b, &b.id_on(1, "cp")).await;
    for sub_qos in QOS {
        let mut sub = Client::clean(&b, &b.id_on(0, &format!("cs{}", sub_qos as u8))).await;
        let filter = format!("cap/{}", sub_qos as u8);
        assert_eq!(sub.subscribe(&filter, sub_qos).await, granted(sub_qos));
        for pub_qos in QOS {
            publ.publish(
                &filter,
                pub_qos,
                false,
                format!("q{}", pub_qos as u8).as_bytes(),
            )
            .await;
            let p = sub.next_publish().await;
            let want = std::cmp::min(sub_qos as u8, pub_qos as u8);
            assert_eq!(
                (p.qos as u8, &p.payload[..]),
                (want, format!("q{}", pub_qos as u8).as_bytes()),
                "published at {pub_qos:?}, subscribed at {sub_qos:?}"
            );
        }
        sub.expect_no_publish().await;
        sub.disconnect().await;
    }
    publ.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_retained_messages() {
    let b = Broker::start(2);
    let mut publ = Client::clean(&b, &b.id_on(1, "tp")).await;
    publ.publish("r/a", QoS::AtLeastOnce, true, b"first").await;
    // A later retained message replaces the earlier one.
    publ.publish("r/a", QoS::AtLeastOnce, true, b"hello").await;
    publ.publish("r/b", QoS::ExactlyOnce, true, b"two").await;
    publ.publish("r/c", QoS::AtMostOnce, true, b"zero").await;
    // A non-retained message is not stored.
    publ.publish("r/d", QoS::AtLeastOnce, false, b"live").await;

    // A new subscriber (other shard) gets every stored message with RETAIN set
    // [MQTT-3.3.1-8], at min(stored QoS, granted QoS).
    let mut sub = Client::clean(&b, &b.id_on(0, "ts")).await;
    assert_eq!(
        sub.subscribe("r/#", QoS::ExactlyOnce).await,
        granted(QoS::ExactlyOnce)
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(summary(&sub.next_publish().await));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("r/a".into(), "hello".into(), QoS::AtLeastOnce, true, false),
            ("r/b".into(), "two".into(), QoS::ExactlyOnce, true, false),
            ("r/c".into(), "zero".into(), QoS::AtMostOnce, true, false),
        ]
    );
    sub.expect_no_publish().await;

    // A retained PUBLISH matching an established subscription is forwarded with RETAIN 0
    // [MQTT-3.3.1-9].
    publ.publish("r/a", QoS::AtLeastOnce, true, b"newer").await;
    assert_eq!(
        summary(&sub.next_publish().await),
        ("r/a".into(), "newer".into(), QoS::AtLeastOnce, false, false)
    );

    // A further, overlapping subscription is a new subscription: the retained message of
    // its topic is sent again, at its granted QoS [MQTT-3.3.1-6].
    assert_eq!(
        sub.subscribe("r/b", QoS::AtMostOnce).await,
        granted(QoS::AtMostOnce)
    );
    assert_eq!(
        summary(&sub.next_publish().await),
        ("r/b".into(), "two".into(), QoS::AtMostOnce, true, false)
    );
    // Subscribing to an existing filter again replaces the subscription and re-sends the
    // matching retained messages [MQTT-3.8.4-3].
    assert_eq!(
        sub.subscribe("r/#", QoS::ExactlyOnce).await,
        granted(QoS::ExactlyOnce)
    );
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(summary(&sub.next_publish().await));
    }
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        again,
        vec![
            ("r/a".into(), "newer".into(), QoS::AtLeastOnce, true, false),
            ("r/b".into(), "two".into(), QoS::ExactlyOnce, true, false),
            ("r/c".into(), "zero".into(), QoS::AtMostOnce, true, false),
        ]
    );
    sub.expect_no_publish().await;

    // A subscriber with a lower granted QoS gets the retained message downgraded.
    let mut low = Client::clean(&b, &b.id_on(1, "tl")).await;
    assert_eq!(
        low.subscribe("r/b", QoS::AtMostOnce).await,
        granted(QoS::AtMostOnce)
    );
    assert_eq!(
        summary(&low.next_publish().await),
        ("r/b".into(), "two".into(), QoS::AtMostOnce, true, false)
    );
    low.disconnect().await;

    // An empty retained payload clears the topic [MQTT-3.3.1-10]; it is still forwarded to
    // the established subscription (as a normal message, RETAIN 0).
    for t in ["r/a", "r/b", "r/c"] {
        publ.publish(t, QoS::AtLeastOnce, true, b"").await;
        assert_eq!(
            summary(&sub.next_publish().await),
            (t.into(), String::new(), QoS::AtLeastOnce, false, false)
        );
    }
    let mut late = Client::clean(&b, &b.id_on(0, "tz")).await;
    assert_eq!(
        late.subscribe("r/#", QoS::AtLeastOnce).await,
        granted(QoS::AtLeastOnce)
    );
    late.expect_no_publish().await;
    late.disconnect().await;
    sub.disconnect().await;
    publ.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_will_on_abrupt_disconnect_only() {
    let b = Broker::start(2);
    let mut watcher = Client::clean(&b, &b.id_on(0, "ww")).await;
    assert_eq!(
        watcher.subscribe("w/#", QoS::ExactlyOnce).await,
        granted(QoS::ExactlyOnce)
    );

    // Abrupt close: the will is published [MQTT-3.1.2-8].
    let mut opts = options(&b, &b.id_on(1, "wa"), true);
    opts.set_last_will(LastWill::new("w/abrupt", "gone", QoS::AtLeastOnce, false));
    let (victim, _) = Client::connect(opts).await;
    victim.kill().await;
    assert_eq!(
        summary(&watcher.next_publish().await),
        (
            "w/abrupt".into(),
            "gone".into(),
            QoS::AtLeastOnce,
            false,
            false
        )
    );

    // QoS 2 will, retained: delivered live with RETAIN 0 and stored for later subscribers.
    let mut opts = options(&b, &b.id_on(1, "wr"), true);
    opts.set_last_will(LastWill::new("w/retained", "bye", QoS::ExactlyOnce, true));
    let (victim, _) = Client::connect(opts).await;
    victim.kill().await;
    assert_eq!(
        summary(&watcher.next_publish().await),
        (
            "w/retained".into(),
            "bye".into(),
            QoS::ExactlyOnce,
            false,
            false
        )
    );
    let mut late = Client::clean(&b, &b.id_on(0, "wl")).await;
    assert_eq!(
        late.subscribe("w/retained", QoS::ExactlyOnce).await,
        granted(QoS::ExactlyOnce)
    );
    assert_eq!(
        summary(&late.next_publish().await),
        (
            "w/retained".into(),
            "bye".into(),
            QoS::ExactlyOnce,
            true,
            false
        )
    );
    late.disconnect().await;

    // Clean DISCONNECT: the will is discarded, not published [MQTT-3.14.4-3].
    let mut opts = options(&b, &b.id_on(1, "wc"), true);
    opts.set_last_will(LastWill::new("w/clean", "never", QoS::AtLeastOnce, false));
    let (polite, _) = Client::connect(opts).await;
    polite.disconnect().await;
    watcher.expect_no_publish().await;
    watcher.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_persistent_session_queues_qos1_while_offline() {
    let b = Broker::start(2);
    let sub_id = b.id_on(0, "ps");
    let mut publ = Client::clean(&b, &b.id_on(1, "pp")).await;

    let (mut sub, ack) = Client::connect(options(&b, &sub_id, false)).await;
    assert!(!ack.session_present, "a new session must not be present");
    assert_eq!(
        sub.subscribe("p/#", QoS::AtLeastOnce).await,
        granted(QoS::AtLeastOnce)
    );
    sub.disconnect().await;

    for i in 0..5 {
        publ.publish("p/q", QoS::AtLeastOnce, false, format!("off{i}").as_bytes())
            .await;
    }
    // A QoS 2 message is queued too, downgraded to the granted QoS 1.
    publ.publish("p/q", QoS::ExactlyOnce, false, b"off5").await;

    // Reconnect without subscribing: the session, its subscription and the queued
    // messages are still there [MQTT-3.1.2-4], [MQTT-3.2.2-2].
    let (mut sub, ack) = Client::connect(options(&b, &sub_id, false)).await;
    assert!(ack.session_present, "resumed session must be present");
    for i in 0..6 {
        assert_eq!(
            summary(&sub.next_publish().await),
            (
                "p/q".into(),
                format!("off{i}"),
                QoS::AtLeastOnce,
                false,
                false
            ),
            "queued message {i}"
        );
    }
    sub.expect_no_publish().await;
    // The subscription is live again.
    publ.publish("p/q", QoS::AtLeastOnce, false, b"online")
        .await;
    assert_eq!(
        summary(&sub.next_publish().await),
        (
            "p/q".into(),
            "online".into(),
            QoS::AtLeastOnce,
            false,
            false
        )
    );
    sub.disconnect().await;

    // An abrupt drop keeps the session as well.
    let (sub, ack) = Client::connect(options(&b, &sub_id, false)).await;
    assert!(ack.session_present);
    sub.kill().await;
    publ.publish("p/q", QoS::AtLeastOnce, false, b"after-kill")
        .await;
    let (mut sub, ack) = Client::connect(options(&b, &sub_id, false)).await;
    assert!(ack.session_present);
    // DUP is not compared: if the broker wrote the message to the dead socket before it
    // saw the close, the resumed session must resend it with DUP 1 [MQTT-4.4.0-1];
    // otherwise it is a first delivery with DUP 0. Both are correct.
    let (topic, payload, qos, retain, _dup) = summary(&sub.next_publish().await);
    assert_eq!(
        (topic, payload, qos, retain),
        ("p/q".into(), "after-kill".into(), QoS::AtLeastOnce, false)
    );
    sub.expect_no_publish().await;
    sub.disconnect().await;

    // A clean-session connect discards the stored session [MQTT-3.1.2-6].
    let (c, ack) = Client::connect(options(&b, &sub_id, true)).await;
    assert!(!ack.session_present);
    c.disconnect().await;
    publ.publish("p/q", QoS::AtLeastOnce, false, b"nobody")
        .await;
    let (mut sub, ack) = Client::connect(options(&b, &sub_id, false)).await;
    assert!(
        !ack.session_present,
        "the clean session must have replaced it"
    );
    sub.expect_no_publish().await;
    sub.disconnect().await;
    publ.disconnect().await;
}
