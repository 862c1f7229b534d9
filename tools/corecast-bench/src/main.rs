//! `corecast-bench`: load generator for corecast, nats-server and
//! redis-server, and a one-command comparison of the three.
//!
//! The whole comparison, from the workspace root (installs nats-server and
//! redis-server with apt when missing, builds corecast in release mode when
//! `target/release/corecast` is missing, writes everything to
//! `bench-results/<timestamp>/`):
//!
//! ```sh
//! cargo run --release -p corecast-bench -- compare            # full matrix, ~15 min
//! cargo run --release -p corecast-bench -- compare --quick    # smoke test, ~1 min
//! cargo run --release -p corecast-bench -- compare --cores-mode one --brokers corecast,nats
//! cargo run --release -p corecast-bench -- compare --settings defaults --only stalled
//! cargo run --release -p corecast-bench -- compare --brokers corecast --settings defaults --only scraped
//! ```
//!
//! `compare` runs every broker at the settings it ships with (the main
//! tables and the targets), then a small matrix with its limits on slow
//! consumers raised (the "tuned" tables).
//!
//! Single workloads against a broker you started yourself (`--broker-pid`
//! adds its CPU and memory figures; `conns` and `churn` need it):
//!
//! ```sh
//! cargo run --release -p corecast-bench -- --broker corecast fanout --subs 10 --msgs 200000
//! cargo run --release -p corecast-bench -- --broker nats --server 127.0.0.1:4222 latency --rate 10000
//! cargo run --release -p corecast-bench -- --broker-pid $(pidof corecast) churn --secs 20
//! cargo run --release -p corecast-bench -- --http 127.0.0.1:7422 scraped --subs 1000 --msgs 40000
//! ```
//!
//! The routing cases (corecast speaks protocol 1.1 for them; Redis runs
//! `wildcard` and `topics` only):
//!
//! ```sh
//! cargo run --release -p corecast-bench -- wildcard --subs 10 --topics 1000
//! cargo run --release -p corecast-bench -- --broker nats --server 127.0.0.1:4222 queue --members 8
//! cargo run --release -p corecast-bench -- request --requesters 8 --responders 4
//! cargo run --release -p corecast-bench -- --broker-pid $(pidof corecast) topics --conns 100 --per-conn 1000
//! ```
//!
//! TLS (`--tls-ca`, and corecast's TLS port as `--server`), a token, and
//! the TLS and permissions comparisons:
//!
//! ```sh
//! cargo run --release -p corecast-bench -- --server 127.0.0.1:7443 --tls-ca ca.pem handshakes --count 2000
//! cargo run --release -p corecast-bench -- compare --settings tls --brokers corecast,nats
//! cargo run --release -p corecast-bench -- compare --settings perms --brokers corecast
//! ```
//!
//! Clusters: 1, 2 and 3 corecast nodes joined over a Redis the bench
//! starts, against a nats-server cluster of as many nodes (partitioned
//! topics, cross-node fan-out, the backplane's cost; ~2 min, `--quick`
//! ~15 s):
//!
//! ```sh
//! cargo run --release -p corecast-bench -- cluster
//! cargo run --release -p corecast-bench -- cluster --quick --only crossing
//! ```
//!
//! WebSocket: corecast's web port against nats-server's WebSocket port,
//! both as shipped (fan-out to 1000 and 10 000 subscribers, memory per
//! idle session, churn, Server-Sent Events; ~3.5 min, `--quick` ~30 s), or
//! one workload over WebSocket against a broker you started yourself:
//!
//! ```sh
//! cargo run --release -p corecast-bench -- web
//! cargo run --release -p corecast-bench -- --websocket --server 127.0.0.1:7480 fanout --subs 1000
//! ```
//!
//! Every run prints one JSON line (and appends it to `--results FILE`);
//! `report FILE` renders a results file as Markdown and PNG charts.
//! Loopback only; every run is bounded by `--timeout-secs`.

mod chart;
mod clock;
mod cluster;
mod compare;
mod driver;
mod hist;
mod payload;
mod pki;
mod report;
mod result;
mod servers;
mod sys;
mod web;
mod workload;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    driver::Kind,
    result::RunResult,
    workload::{
        churn, conns, flow, handshakes, latency,
        request::{self, RequestSpec},
        routing, scraped, Target,
    },
};

#[derive(Debug, Parser)]
#[command(about = "Load generator for corecast, nats-server and redis-server")]
struct Cli {
    /// Which broker protocol to speak.
    #[arg(long, default_value = "corecast", global = true)]
    broker: Kind,
    /// Broker address [default: 127.0.0.1 and the broker's usual port].
    #[arg(long, global = true)]
    server: Option<SocketAddr>,
    /// The broker's pid, for its CPU and memory figures.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// corecast's monitoring port, for `scraped` [default: 127.0.0.1:7422
    /// with corecast].
    #[arg(long, global = true)]
    http: Option<SocketAddr>,
    /// Give up on a run after this long.
    #[arg(long, default_value_t = 60, global = true)]
    timeout_secs: u64,
    /// Also append each JSON line to this file.
    #[arg(long, global = true)]
    results: Option<PathBuf>,
    /// Speak TLS, trusting the CA certificates in this PEM file (corecast:
    /// point --server at its TLS port; NATS: `INFO` in clear, then the
    /// handshake). Full handshakes: no session resumption.
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// corecast: send this in `HELLO`'s token field (an `auth_token`, or a
    /// user's bearer token).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Speak the protocol inside WebSocket messages: point --server at
    /// corecast's web port (`--web`) or nats-server's `websocket` port.
    #[arg(long, global = true)]
    websocket: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// P publishers, S subscribers, one topic, as fast as possible.
    Fanout {
        /// Publisher connections.
        #[arg(long, default_value_t = 1)]
        pubs: usize,
        /// Subscriber connections.
        #[arg(long, default_value_t = 10)]
        subs: usize,
        /// Messages per publisher.
        #[arg(long, default_value_t = 100_000)]
        msgs: u64,
        /// Payload bytes (at least 28: the stamp).
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// K publishers, each to its own topic with its own subscriber.
    Pairs {
        /// Pairs.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Messages per publisher.
        #[arg(long, default_value_t = 250_000)]
        msgs: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 256)]
        size: usize,
    },
    /// One publisher at a fixed rate; end-to-end latency percentiles.
    Latency {
        /// Messages per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Seconds.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// One publisher, R reading subscribers and N that never read, one
    /// topic (run it with `--stalled 0` too, for the ratio).
    Stalled {
        /// Subscribers that read.
        #[arg(long, default_value_t = 100)]
        readers: usize,
        /// Subscribers that subscribe and then never read.
        #[arg(long, default_value_t = 100)]
        stalled: usize,
        /// Messages.
        #[arg(long, default_value_t = 20_000)]
        msgs: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// One publisher, S subscribers, one topic, with a scraper GETting
    /// `/metrics` and `/connz?limit=1024` from corecast's monitoring port
    /// (`--http`) meanwhile (run it with `--interval-ms 0` too, for the
    /// ratio).
    Scraped {
        /// Subscriber connections.
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        /// Messages.
        #[arg(long, default_value_t = 40_000)]
        msgs: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Milliseconds from one scrape to the next; 0: no scraper.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// C idle subscribed connections; broker RSS per connection.
    Conns {
        /// Connections.
        #[arg(long, default_value_t = 18_000)]
        count: usize,
    },
    /// One publisher over many topics `bench.<i>.x`; subscribers
    /// alternately on the patterns `bench.*.x` and `bench.>` (Redis:
    /// PSUBSCRIBE globs). corecast speaks protocol 1.1.
    Wildcard {
        /// Subscriber connections, one pattern each.
        #[arg(long, default_value_t = 10)]
        subs: usize,
        /// Topics the publisher spreads its messages over, round-robin.
        #[arg(long, default_value_t = 1000)]
        topics: usize,
        /// Messages.
        #[arg(long, default_value_t = 1_000_000)]
        msgs: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// One publisher to one queue group: each message must reach exactly
    /// one member (not Redis, which has no queue groups).
    Queue {
        /// Members of the group, one connection each.
        #[arg(long, default_value_t = 8)]
        members: usize,
        /// Messages.
        #[arg(long, default_value_t = 1_000_000)]
        msgs: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Synchronous request/reply: requesters, each with one request
    /// outstanding, and responders in one queue group answering to the
    /// reply-to; round trips/s and their latency (not Redis).
    Request {
        /// Requester connections.
        #[arg(long, default_value_t = 8)]
        requesters: usize,
        /// Responder connections.
        #[arg(long, default_value_t = 4)]
        responders: usize,
        /// Round trips per requester.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Payload bytes of requests and replies.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Many topics with one subscription each, over a few connections; one
    /// publisher round-robin over them all; broker RSS per subscription
    /// (needs --broker-pid).
    Topics {
        /// Subscriber connections.
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// Subscriptions (topics) per connection; corecast allows 1024 per
        /// connection by default.
        #[arg(long, default_value_t = 1000)]
        per_conn: usize,
        /// Messages.
        #[arg(long, default_value_t = 1_000_000)]
        msgs: u64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Connection set-ups per second: connect, TLS handshake (with
    /// --tls-ca), the protocol's greeting and its answer, close; a bounded
    /// count shared by a few threads.
    Handshakes {
        /// Set-ups in all.
        #[arg(long, default_value_t = 2000)]
        count: u64,
        /// Threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Connect, subscribe, abort in a loop; broker back to idle after.
    Churn {
        /// Seconds.
        #[arg(long, default_value_t = 20.0)]
        secs: f64,
        /// Threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Start corecast, nats-server and redis-server and run the matrix.
    Compare(compare::CompareArgs),
    /// Start corecast nodes joined over Redis and a nats-server cluster (1,
    /// 2 and 3 nodes each) and measure partitioned topics, cross-node
    /// fan-out and the backplane's cost.
    Cluster(cluster::ClusterArgs),
    /// Start corecast with its web port and nats-server with its WebSocket
    /// port (both as shipped) and measure fan-out to WebSocket
    /// subscribers, memory per idle session, a connect-and-abort churn and
    /// Server-Sent Events (corecast).
    Web(web::WebArgs),
    /// Markdown table and charts from a results file.
    Report {
        /// A JSON-lines results file.
        file: PathBuf,
        /// Where to write report.md and the charts [default: beside the file].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The usual port of each broker.
fn default_addr(kind: Kind) -> SocketAddr {
    let port = match kind {
        Kind::Corecast => 7400,
        Kind::Nats => 4222,
        Kind::Redis => 6379,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An error if the target's broker lacks what `workload` needs.
fn refuse_unsupported(target: &Target, workload: &str) -> anyhow::Result<()> {
    match routing::unsupported(target.kind, workload) {
        Some(why) => anyhow::bail!("{}: {why}", target.kind),
        None => Ok(()),
    }
}

fn run_one(cli: &Cli) -> anyhow::Result<RunResult> {
    let target = Target {
        kind: cli.broker,
        addr: cli.server.unwrap_or_else(|| default_addr(cli.broker)),
        http: cli.http.or_else(|| {
            (cli.broker == Kind::Corecast).then(|| SocketAddr::from(([127, 0, 0, 1], 7422)))
        }),
        pid: cli.broker_pid,
        timeout: Duration::from_secs(cli.timeout_secs),
        mode: None,
        settings: None,
        settle: Duration::from_secs(5),
        access: driver::Access {
            tls: cli.tls_ca.as_deref().map(driver::tls::client_config).transpose()?,
            token: cli.token.as_deref().map(Into::into),
            websocket: cli.websocket,
        },
        others: Vec::new(),
    };
    match cli.command {
        Command::Fanout { pubs, subs, msgs, size } => {
            flow::run(&target, &flow::FlowSpec::fanout(pubs, subs, msgs, size))
        }
        Command::Pairs { k, msgs, size } => {
            flow::run(&target, &flow::FlowSpec::pairs(k, msgs, size))
        }
        Command::Stalled { readers, stalled, msgs, size } => {
            flow::run(&target, &flow::FlowSpec::stalled(readers, stalled, msgs, size))
        }
        Command::Scraped { subs, msgs, size, interval_ms } => {
            refuse_unsupported(&target, "scraped")?;
            let every = Duration::from_millis(interval_ms);
            let [without, with] = scraped::specs(subs, msgs, size, every);
            flow::run(&target, if interval_ms == 0 { &without } else { &with })
        }
        Command::Latency { rate, secs, size } => latency::run(&target, rate, secs, size),
        Command::Conns { count } => conns::run(&target, count),
        Command::Churn { secs, threads } => churn::run(&target, secs, threads),
        Command::Handshakes { count, threads } => handshakes::run(&target, count, threads),
        Command::Wildcard { subs, topics, msgs, size } => {
            flow::run(&target, &routing::wildcard(subs, topics, msgs, size))
        }
        Command::Queue { members, msgs, size } => {
            refuse_unsupported(&target, "queue")?;
            flow::run(&target, &routing::queue(members, msgs, size))
        }
        Command::Request { requesters, responders, requests, size } => {
            request::run(&target, &RequestSpec { requesters, responders, requests, size })
        }
        Command::Topics { conns, per_conn, msgs, size } => {
            flow::run(&target, &routing::topics(conns, per_conn, msgs, size))
        }
        Command::Compare(_) | Command::Cluster(_) | Command::Web(_) | Command::Report { .. } => {
            unreachable!("handled in main")
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Thousands of connections: as many open files as the hard limit allows.
    if let Err(e) = sys::raise_nofile_to_hard() {
        eprintln!("corecast-bench: {e:#}");
    }
    match &cli.command {
        Command::Compare(args) => compare::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Web(args) => web::run(args),
        Command::Report { file, out } => {
            let dir =
                out.clone().unwrap_or_else(|| file.parent().map(PathBuf::from).unwrap_or_default());
            let results = result::read_results(file)?;
            report::write_all(&results, &dir, &[])?;
            println!("wrote {}", dir.join("report.md").display());
            Ok(())
        }
        _ => run_one(&cli)?.emit(cli.results.as_deref()),
    }
}
