//! A worker in a queue group: start several and each job goes to one of
//! them, wherever they are connected. Needs a broker that speaks protocol
//! 1.1 (corecast does).
//!
//! Start a broker first (`cargo run --release` at the workspace root), then
//! in two or more terminals:
//!
//! ```sh
//! cargo run -p corecast-client --example queue_worker -- jobs.new workers
//! ```
//!
//! and publish jobs from another one, for instance with
//! `cargo run -p corecast-client --example publish -- jobs.new job 10`:
//! the workers share the ten. A job sent as a request (`corecast-cli req
//! jobs.new task`) gets the worker's answer. The example stops after 60 s
//! without jobs. `CORECAST_SERVER` overrides the broker address (default
//! `127.0.0.1:7400`).

use std::time::Duration;

use corecast_client::{blocking::Client, ClientError, Options};

fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "jobs.new".into());
    let group = args.next().unwrap_or_else(|| "workers".into());
    let server = std::env::var("CORECAST_SERVER").unwrap_or_else(|_| "127.0.0.1:7400".into());

    let client = Client::connect_with(&server, Options::new().name("queue-worker-example"))?;
    // Every worker joins the same group; each job goes to one of them.
    let jobs = client.queue_subscribe(&topic, &group)?;
    println!("worker in group {group} on {topic}; waiting for jobs");
    let mut done = 0u64;
    while let Some(job) = jobs.recv_timeout(Duration::from_secs(60))? {
        done += 1;
        println!("job {done}: {}", String::from_utf8_lossy(&job.payload));
        if job.reply_to.is_some() {
            client.respond(&job, format!("done by worker {}", std::process::id()))?;
        }
    }
    println!("no job for 60 s; {done} done; bye");
    Ok(())
}
