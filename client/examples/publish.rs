//! Publishes messages with the blocking client.
//!
//! Start a broker first (`cargo run --release` at the workspace root), then:
//!
//! ```sh
//! cargo run -p corecast-client --example publish -- chat.lobby "hello" 3
//! ```
//!
//! Arguments: topic (default `chat.lobby`), message (default `hello`),
//! count (default 1). `CORECAST_SERVER` overrides the broker address
//! (default `127.0.0.1:7400`).

use corecast_client::{blocking::Client, ClientError, Options};

fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "chat.lobby".into());
    let message = args.next().unwrap_or_else(|| "hello".into());
    let count: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let server = std::env::var("CORECAST_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());

    let client = Client::connect_with(&server, Options::new().name("publish-example"))?;
    for _ in 0..count {
        // Queued in the send buffer; the writer thread sends at once.
        client.publish(&topic, &message)?;
    }
    // Returns once the broker has routed every message above.
    client.flush()?;
    let stats = client.stats();
    println!("published {} messages to {topic} in {} writes", stats.published, stats.writes);
    Ok(())
}
