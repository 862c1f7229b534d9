//! Listens to a topic pattern and prints each message with the topic it
//! was published to. Needs a broker that speaks protocol 1.1 (corecast
//! does).
//!
//! Start a broker first (`cargo run --release` at the workspace root), then:
//!
//! ```sh
//! cargo run -p corecast-client --example wildcard_listener -- 'orders.>'
//! ```
//!
//! `*` stands for exactly one token and `>` for one or more at the end:
//! `orders.*` hears `orders.eu` but not `orders.eu.42`, `orders.>` hears
//! both. Publish from another terminal, for instance with
//! `cargo run -p corecast-client --example publish -- orders.eu.42 paid 1`.
//! The example stops after 60 s without messages. `CORECAST_SERVER`
//! overrides the broker address (default `127.0.0.1:7400`).

use std::time::Duration;

use corecast_client::{blocking::Client, ClientError, Options};

fn main() -> Result<(), ClientError> {
    let pattern = std::env::args().nth(1).unwrap_or_else(|| "orders.>".into());
    let server = std::env::var("CORECAST_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());

    let client = Client::connect_with(&server, Options::new().name("wildcard-example"))?;
    let sub = client.subscribe(&pattern)?;
    println!("listening to {pattern}");
    while let Some(msg) = sub.recv_timeout(Duration::from_secs(60))? {
        // The message carries the topic it was published to, not the pattern.
        println!("[{}] {}", msg.topic, String::from_utf8_lossy(&msg.payload));
    }
    println!("no message for 60 s; bye");
    Ok(())
}
