//! The client library is executor-independent: here it runs on a multi-threaded tokio
//! runtime, over tokio's `TcpStream` through `tokio-util`'s compat layer, with the
//! `futures-timer` timer, against an in-process two-shard SurgeMQ broker and mosquitto.
//! The client handle is used from several tokio worker threads at once.

#[path = "common/client_env.rs"]
mod client_env;
mod common;

use std::time::Duration;

use client_env::{Kind, Proxy, Target};
use futures::StreamExt;
use surgemq::client::{connect, Backoff, ClientError, ConnectOptions, FuturesTimer};
use surgemq::protocol::QoS;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

fn connector(
    addr: std::net::SocketAddr,
) -> impl FnMut() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Compat<tokio::net::TcpStream>>> + Send>,
> {
    move || {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s.compat())
        })
    }
}

#[test]
fn tokio_runtime_qos_0_1_2_and_reconnect() {
    for kind in [Kind::SurgeMq, Kind::Mosquitto] {
        let t = Target::start(kind);
        let proxy = Proxy::start(t.addr());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sub_opts = ConnectOptions::new(t.id_on(0, "tsub")).reconnect(Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(200),
            });
            let sub = connect(connector(proxy.addr), FuturesTimer, sub_opts)
                .await
                .unwrap();
            let driver = tokio::spawn(sub.driver.run());
            let (client, mut msgs) = (sub.client, sub.messages);
            assert_eq!(
                client.subscribe("t/#", QoS::ExactlyOnce).await.unwrap(),
                QoS::ExactlyOnce
            );

            let publ = connect(
                connector(t.addr()),
                FuturesTimer,
                ConnectOptions::new(t.id_on(1, "tpub")),
            )
            .await
            .unwrap();
            tokio::spawn(publ.driver.run());
            let p = publ.client;
            // Publish from several worker threads concurrently.
            let mut tasks = Vec::new();
            for w in 0..3u8 {
                let p = p.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..50u8 {
                        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][w as usize];
                        p.publish(format!("t/{w}"), vec![w, i], qos, false)
                            .await
                            .unwrap();
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let mut next = [0u8; 3];
            for _ in 0..150 {
                let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
                    .await
                    .unwrap()
                    .unwrap();
                let (w, i) = (m.payload[0] as usize, m.payload[1]);
                assert_eq!(i, next[w], "{kind:?}: per-publisher order");
                next[w] += 1;
                assert_eq!(m.qos as usize, w);
            }

            // Forced disconnect: the subscriber reconnects by itself and keeps receiving.
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !client.is_connected() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(client.is_connected(), "{kind:?}: reconnected");
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.publish("t/after", "x", QoS::AtLeastOnce, false)
                .await
                .unwrap();
            let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&*m.topic, "t/after", "{kind:?}");

            client.disconnect().await.unwrap();
            assert!(driver.await.unwrap().is_ok());
            assert!(matches!(
                client.publish("t/x", "y", QoS::AtMostOnce, false).await,
                Err(ClientError::Closed)
            ));
            p.disconnect().await.unwrap();
        });
    }
}
