//! Subscribes with the blocking client and prints what arrives.
//!
//! Start a broker first (`cargo run --release` at the workspace root), then:
//!
//! ```sh
//! cargo run -p corecast-client --example subscribe -- chat.lobby
//! ```
//!
//! and publish from another terminal, for instance with
//! `cargo run -p corecast-client --example publish -- chat.lobby hi 5`.
//! The example stops after 60 s without messages. `CORECAST_SERVER`
//! overrides the broker address (default `127.0.0.1:7400`).

use std::time::Duration;

use corecast_client::{blocking::Client, ClientError, Event, Options};

fn main() -> Result<(), ClientError> {
    let topic = std::env::args().nth(1).unwrap_or_else(|| "chat.lobby".into());
    let server = std::env::var("CORECAST_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());

    let client = Client::connect_with(&server, Options::new().name("subscribe-example"))?;
    // Returns once the subscription is live on every core of the broker.
    let sub = client.subscribe(&topic)?;
    println!("subscribed to {topic}; publish something");
    while let Some(msg) = sub.recv_timeout(Duration::from_secs(60))? {
        println!("[{}] {}", msg.topic, String::from_utf8_lossy(&msg.payload));
        // Drops, broker errors, reconnections: the client reports them here.
        while let Some(event) = client.try_next_event() {
            match event {
                Event::Dropped { count, .. } => println!("({count} messages dropped)"),
                other => println!("({other:?})"),
            }
        }
    }
    println!("no message for 60 s; bye");
    Ok(())
}
