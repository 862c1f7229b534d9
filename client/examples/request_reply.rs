//! Request/reply with the blocking client: a responder thread answers
//! requests on `svc.greet`, and the main thread asks it three times.
//!
//! Start a broker first (`cargo run --release` at the workspace root), then:
//!
//! ```sh
//! cargo run -p corecast-client --example request_reply
//! ```
//!
//! `CORECAST_SERVER` overrides the broker address (default
//! `127.0.0.1:7400`).

use std::{thread, time::Duration};

use corecast_client::{blocking::Client, ClientError, Options};

fn main() -> Result<(), ClientError> {
    let server = std::env::var("CORECAST_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());

    let responder = Client::connect_with(&server, Options::new().name("greeter"))?;
    let requests = responder.subscribe("svc.greet")?;
    let answering = thread::spawn(move || -> Result<(), ClientError> {
        for request in requests.iter().take(3) {
            let name = String::from_utf8_lossy(&request.payload);
            // Publishes to the request's reply-to (an inbox of the requester).
            responder.respond(&request, format!("hello, {name}!"))?;
        }
        responder.flush()
    });

    let requester = Client::connect_with(&server, Options::new().name("asker"))?;
    for name in ["Ada", "Grace", "Linus"] {
        let reply = requester.request("svc.greet", name, Duration::from_secs(2))?;
        println!("{}", String::from_utf8_lossy(&reply.payload));
    }
    answering.join().expect("the responder thread does not panic")
}
