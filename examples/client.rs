//! The client library's tour, as the original SurgeMQ's client example: connect,
//! subscribe (stream and callback forms), publish at every QoS, receive, disconnect.
//!
//! ```text
//! cargo run --example server &                       # or any MQTT broker
//! cargo run --example client -- 127.0.0.1:1883
//! ```

use std::time::Duration;

use futures::StreamExt;
use surgemq::client::{glommio_connect, ConnectOptions};
use surgemq::protocol::QoS;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".into());
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { tour(&broker).await })?
        .join()?
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    Ok(())
}

async fn tour(broker: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let options = ConnectOptions::new("surgemq-example")
        .keep_alive(Duration::from_secs(30))
        .will("example/status", "gone", QoS::AtLeastOnce, true);
    let (client, mut messages, session_present) = glommio_connect(broker, options).await?;
    println!("connected (session present: {session_present})");

    // Stream form: whatever no callback claims arrives on `messages`.
    let granted = client
        .subscribe("example/stream/#", QoS::ExactlyOnce)
        .await?;
    println!("subscribed to example/stream/# with QoS {}", granted as u8);

    // Callback form, like the original's Subscribe(msg, onComplete, onPublish).
    client
        .subscribe_with("example/callback/#", QoS::AtLeastOnce, |m| {
            println!(
                "callback: {} = {}",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            );
        })
        .await?;

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        // Completes on PUBACK (QoS 1) or PUBCOMP (QoS 2).
        client
            .publish(
                "example/stream/hello",
                format!("hello at QoS {}", qos as u8),
                qos,
                false,
            )
            .await?;
    }
    client
        .publish(
            "example/callback/one",
            "handled by the callback",
            QoS::AtLeastOnce,
            false,
        )
        .await?;

    for _ in 0..3 {
        let Some(m) = messages.next().await else {
            break;
        };
        println!(
            "stream: {} = {} (QoS {})",
            m.topic,
            String::from_utf8_lossy(&m.payload),
            m.qos as u8
        );
    }
    glommio::timer::sleep(Duration::from_millis(100)).await;
    client
        .publish("example/status", "", QoS::AtLeastOnce, true)
        .await?;
    client.disconnect().await?;
    println!("disconnected");
    Ok(())
}
