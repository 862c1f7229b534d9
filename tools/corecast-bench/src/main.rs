//! `corecast-bench`: load generator for corecast, nats-server and
//! redis-server, and a one-command comparison of the three.
//!
//! The whole comparison, from the workspace root (installs nats-server and
//! redis-server with apt when missing, builds corecast in release mode when
//! `target/release/corecast` is missing, writes everything to
//! `bench-results/<timestamp>/`):
//!
//! ```sh
//! cargo run --release -p corecast-bench -- compare            # full matrix, ~10 min
//! cargo run --release -p corecast-bench -- compare --quick    # smoke test, ~1 min
//! cargo run --release -p corecast-bench -- compare --cores-mode one --brokers corecast,nats
//! cargo run --release -p corecast-bench -- compare --settings defaults --only stalled
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
//! ```
//!
//! Every run prints one JSON line (and appends it to `--results FILE`);
//! `report FILE` renders a results file as Markdown and PNG charts.
//! Loopback only; every run is bounded by `--timeout-secs`.

mod chart;
mod clock;
mod compare;
mod driver;
mod hist;
mod payload;
mod report;
mod result;
mod servers;
mod sys;
mod workload;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    driver::Kind,
    result::RunResult,
    workload::{churn, conns, flow, latency, Target},
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
    /// Give up on a run after this long.
    #[arg(long, default_value_t = 60, global = true)]
    timeout_secs: u64,
    /// Also append each JSON line to this file.
    #[arg(long, global = true)]
    results: Option<PathBuf>,
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
    /// C idle subscribed connections; broker RSS per connection.
    Conns {
        /// Connections.
        #[arg(long, default_value_t = 18_000)]
        count: usize,
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

fn run_one(cli: &Cli) -> anyhow::Result<RunResult> {
    let target = Target {
        kind: cli.broker,
        addr: cli.server.unwrap_or_else(|| default_addr(cli.broker)),
        pid: cli.broker_pid,
        timeout: Duration::from_secs(cli.timeout_secs),
        mode: None,
        settings: None,
        settle: Duration::from_secs(5),
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
        Command::Latency { rate, secs, size } => latency::run(&target, rate, secs, size),
        Command::Conns { count } => conns::run(&target, count),
        Command::Churn { secs, threads } => churn::run(&target, secs, threads),
        Command::Compare(_) | Command::Report { .. } => unreachable!("handled in main"),
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
