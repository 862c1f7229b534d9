//! The async client on tokio: a subscription as a stream, publications, and
//! a request answered by a responder task.
//!
//! Start a broker first (`cargo run --release` at the workspace root), then:
//!
//! ```sh
//! cargo run -p corecast-client --features tokio --example tokio_pubsub
//! ```
//!
//! `CORECAST_SERVER` overrides the broker address (default
//! `127.0.0.1:7400`).

use std::time::Duration;

use corecast_client::{tokio::Client, ClientError, Options};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let server = std::env::var("CORECAST_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());
    let client = Client::connect_with(&server, Options::new().name("tokio-example")).await?;

    // Publish and subscribe. `subscribe` completes once the subscription is
    // live, so nothing published after it is missed.
    let mut ticks = client.subscribe("demo.ticks").await?;
    for i in 0..3 {
        client.publish("demo.ticks", format!("tick {i}")).await?;
    }
    for _ in 0..3 {
        // `Subscription` is also a `futures_core::Stream` of messages.
        let Some(msg) = ticks.recv().await else { break };
        println!("[{}] {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }

    // Request/reply: a responder task doubles numbers.
    let mut requests = client.subscribe("svc.double").await?;
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            let n: i64 = String::from_utf8_lossy(&request.payload).parse().unwrap_or(0);
            if responder.respond(&request, (2 * n).to_string()).await.is_err() {
                break;
            }
        }
    });
    let reply = client.request("svc.double", "21", Duration::from_secs(2)).await?;
    println!("21 doubled is {}", String::from_utf8_lossy(&reply.payload));

    client.close().await
}
