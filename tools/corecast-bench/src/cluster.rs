//! `cluster`: corecast nodes joined over Redis against a nats-server
//! cluster, on loopback, each system started fresh for every round.
//!
//! corecast: one `redis-server` (`--save ""`, everything else at its
//! default) and 1, 2 or 3 corecast processes, each with `--listen`,
//! `--http`, `--cores 1`, `--cluster-redis redis://127.0.0.1:PORT` and
//! `--cluster-node nodeN`, every other setting as shipped. nats-server:
//! 1, 2 or 3 processes, each with a config file of its own (`listen`,
//! `server_name`, `cluster { name, listen, routes }` with a route to every
//! other node) and `GOMAXPROCS=1`. Nothing is pinned: the nodes, Redis and
//! the load generator share the machine's CPUs, and one core's worth of
//! threads per node keeps three nodes on two cores from being told apart
//! by how many threads each runs.
//!
//! The cases (see [`cases`]): K publisher/subscriber pairs, each pair on
//! its own topic, on 1, 2 and 3 nodes, "local" (publisher and subscriber
//! of a pair on one node, pair j on node j mod n) and "crossing"
//! (publisher on node i, its subscriber on node i+1); and a fan-out from
//! one publisher on node 1 to 1000 subscribers spread evenly over the
//! nodes (and on one node, for reference). Before the publishers start,
//! a probe message from every publishing node has reached every other
//! node with subscribers ([`Nodes::await_interest`]).
//!
//! Every process's CPU time (utime + stime of `/proc/PID/stat`) is taken
//! over the measured part of each run (see [`crate::workload::Meter`]);
//! the backplane's counters (each corecast node's `/stats` `cluster`
//! object, Redis's `INFO stats` and `INFO commandstats`) around the whole
//! run. Each case runs [`ROUNDS`] rounds, interleaved across the brokers;
//! a broker's figure is its round with the median delivered/s, with the
//! CPU and counters of that same round (see [`merge`]).
//!
//! Because every process shares two CPUs, delivered/s here says little
//! about what three machines would do. The report estimates that from CPU
//! per message instead ([`Scaling`]): a node given one core of its own
//! delivers 1 / (its CPU seconds per message it carries) messages/s.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{
    driver::{Access, Kind},
    result::RunResult,
    servers::{self, Server},
    sys,
    workload::{
        flow::{self, FlowSpec, Nodes},
        Target,
    },
};

/// Rounds of every case per broker.
pub const ROUNDS: u32 = 3;
/// [`ROUNDS`] with `--quick`.
pub const QUICK_ROUNDS: u32 = 2;
/// Publisher/subscriber pairs of the partitioned cases: two per node on
/// three nodes.
pub const PAIRS: usize = 6;
/// Subscribers of the fan-out cases.
pub const FANOUT_SUBS: usize = 1000;
/// The nats-server cluster's name.
const NATS_CLUSTER: &str = "bench";
/// Gauges of corecast's `cluster` object: their differences over a run
/// mean nothing.
const GAUGES: &[&str] =
    &["connected", "peers", "remote_patterns", "out_window_bytes", "in_queue_bytes"];

/// Options of `cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Fewer messages and rounds: a smoke test of about a minute.
    #[arg(long)]
    pub quick: bool,
    /// Systems to measure (comma-separated): corecast (with Redis), nats.
    #[arg(long, value_delimiter = ',', default_value = "corecast,nats")]
    pub brokers: Vec<Kind>,
    /// Parent directory of the timestamped results directory.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// The corecast binary (built with `cargo build --release -p corecast`
    /// when missing).
    #[arg(long, default_value = "target/release/corecast")]
    pub corecast_bin: PathBuf,
    /// Rebuild corecast even if the binary exists.
    #[arg(long)]
    pub build: bool,
    /// Install a missing nats-server or redis-server with apt-get.
    #[arg(long)]
    pub install: bool,
    /// Bound on each run.
    #[arg(long, default_value_t = 60)]
    pub run_timeout_secs: u64,
    /// Rounds per case and broker [default: 3; 2 with --quick].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Only the cases whose name contains one of these (comma-separated),
    /// e.g. `crossing,fanout`.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Nice value for the bench and the processes it starts.
    #[arg(long, allow_hyphen_values = true)]
    pub nice: Option<i32>,
    /// Every node as shipped: corecast on every core (no `--cores 1`),
    /// nats-server with its own GOMAXPROCS. The nodes then compete for the
    /// machine's cores; without it each gets one core's worth of threads.
    #[arg(long)]
    pub defaults: bool,
    /// Run nothing: render DIR/report.md again from DIR's results.jsonl
    /// and rounds.jsonl (the notes are kept from the report there).
    #[arg(long, value_name = "DIR")]
    pub render: Option<PathBuf>,
}

impl ClusterArgs {
    /// The command line that reproduces this run.
    pub fn command_line(&self) -> String {
        let mut line = String::from("corecast-bench cluster");
        if self.quick {
            line.push_str(" --quick");
        }
        if self.defaults {
            line.push_str(" --defaults");
        }
        let brokers: Vec<&str> = self.brokers.iter().map(|k| k.name()).collect();
        if brokers != ["corecast", "nats"] {
            line.push_str(&format!(" --brokers {}", brokers.join(",")));
        }
        if let Some(r) = self.rounds {
            line.push_str(&format!(" --rounds {r}"));
        }
        if !self.only.is_empty() {
            line.push_str(&format!(" --only '{}'", self.only.join(",")));
        }
        if let Some(n) = self.nice {
            line.push_str(&format!(" --nice {n}"));
        }
        line
    }

    fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.quick { QUICK_ROUNDS } else { ROUNDS }).max(1)
    }
}

/// How a case places its publishers and subscribers on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Pair j's publisher and subscriber both on node j mod n.
    Local,
    /// Pair j's publisher on node i = j mod n, its subscriber on node
    /// i+1 (mod n).
    Crossing,
    /// One publisher on node 1, subscriber i on node i mod n.
    Fanout,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Local => "local",
            Shape::Crossing => "crossing",
            Shape::Fanout => "fanout",
        }
    }
}

/// One case: a shape on `nodes` nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Nodes of the system.
    pub nodes: usize,
    /// Placement.
    pub shape: Shape,
    /// Messages per publisher.
    pub msgs: u64,
    /// Payload bytes.
    pub size: usize,
}

impl Case {
    /// Its name in the report, e.g. `pairs K=6 crossing, 3 nodes`.
    pub fn name(&self) -> String {
        let nodes = if self.nodes == 1 { "1 node".into() } else { format!("{} nodes", self.nodes) };
        match self.shape {
            Shape::Fanout => format!("fanout 1->{FANOUT_SUBS} {}B, {nodes}", self.size),
            shape => format!("pairs K={PAIRS} {} {}B, {nodes}", shape.name(), self.size),
        }
    }

    /// The node of each publisher and of each subscriber.
    pub fn placement(&self) -> (Vec<usize>, Vec<usize>) {
        let n = self.nodes.max(1);
        match self.shape {
            Shape::Local => {
                ((0..PAIRS).map(|j| j % n).collect(), (0..PAIRS).map(|j| j % n).collect())
            }
            Shape::Crossing => {
                ((0..PAIRS).map(|j| j % n).collect(), (0..PAIRS).map(|j| (j % n + 1) % n).collect())
            }
            Shape::Fanout => (vec![0], (0..FANOUT_SUBS).map(|i| i % n).collect()),
        }
    }

    /// Copies of each published message that go over the backplane: one
    /// per other node with a subscriber of its topic, whatever the count
    /// of subscribers there.
    pub fn copies_per_msg(&self) -> f64 {
        let (pubs, subs) = self.placement();
        let spec = self.spec(&[]);
        let mut copies = 0usize;
        for (p, topics) in pubs.iter().zip(&spec.publishers) {
            let mut nodes: Vec<usize> = spec
                .subscribers
                .iter()
                .zip(&subs)
                .filter(|(s, _)| s.topics.iter().any(|t| topics.contains(t)))
                .map(|(_, &node)| node)
                .filter(|node| node != p)
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            copies += nodes.len();
        }
        copies as f64 / pubs.len().max(1) as f64
    }

    /// The flow of this case with its connections on the nodes at `addrs`.
    pub fn spec(&self, addrs: &[SocketAddr]) -> FlowSpec {
        let mut spec = match self.shape {
            Shape::Fanout => FlowSpec::fanout(1, FANOUT_SUBS, self.msgs, self.size),
            _ => FlowSpec::pairs(PAIRS, self.msgs, self.size),
        };
        spec.case = self.name();
        let (publishers, subscribers) = self.placement();
        spec.nodes = Some(Arc::new(Nodes { addrs: addrs.to_vec(), publishers, subscribers }));
        spec
    }
}

/// The cases, in the order they run.
pub fn cases(quick: bool) -> Vec<Case> {
    let (pair_msgs, fanout_msgs) = if quick { (20_000, 500) } else { (300_000, 10_000) };
    let pairs = |nodes, shape| Case { nodes, shape, msgs: pair_msgs, size: 256 };
    let fanout = |nodes| Case { nodes, shape: Shape::Fanout, msgs: fanout_msgs, size: 64 };
    vec![
        pairs(1, Shape::Local),
        pairs(2, Shape::Local),
        pairs(3, Shape::Local),
        pairs(2, Shape::Crossing),
        pairs(3, Shape::Crossing),
        fanout(1),
        fanout(3),
    ]
}

/// The arguments of corecast node `i` (0-based) of a cluster on Redis at
/// `redis`.
pub fn corecast_args(i: usize, port: u16, http: u16, redis: u16, defaults: bool) -> Vec<String> {
    let mut args = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--http".into(),
        format!("127.0.0.1:{http}"),
    ];
    if !defaults {
        args.extend(["--cores".into(), "1".into()]);
    }
    args.extend([
        "--cluster-redis".into(),
        format!("redis://127.0.0.1:{redis}"),
        "--cluster-node".into(),
        format!("node{}", i + 1),
    ]);
    args
}

/// The config file of nats-server node `i` (0-based) of a cluster whose
/// nodes listen for clients on `ports` and for routes on `routes`.
pub fn nats_config(i: usize, ports: &[u16], routes: &[u16]) -> String {
    let mut text = format!(
        "server_name: \"node{}\"\nlisten: \"127.0.0.1:{}\"\ncluster {{\n  name: \"{NATS_CLUSTER}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [\n",
        i + 1,
        ports[i],
        routes[i]
    );
    for (j, port) in routes.iter().enumerate() {
        if j != i {
            text.push_str(&format!("    \"nats-route://127.0.0.1:{port}\"\n"));
        }
    }
    text.push_str("  ]\n}\n");
    text
}

/// A running system: its nodes (and corecast's Redis), stopped on drop.
struct System {
    nodes: Vec<Server>,
    redis: Option<Server>,
}

impl System {
    fn start(kind: Kind, n: usize, setup: &Setup, label: &str) -> anyhow::Result<Self> {
        match kind {
            Kind::Corecast => Self::corecast(n, setup, label),
            Kind::Nats => Self::nats(n, setup, label),
            Kind::Redis => bail!("redis is corecast's backplane here, not a system of its own"),
        }
    }

    fn corecast(n: usize, setup: &Setup, label: &str) -> anyhow::Result<Self> {
        let ports = servers::free_ports(1 + 2 * n)?;
        let redis_port = ports[0];
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        let addr = SocketAddr::from(([127, 0, 0, 1], redis_port));
        let log = setup.dir.join("logs").join(format!("{label}-redis.log"));
        let redis = servers::launch(Kind::Redis, cmd, (addr, None), Access::default(), log)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let (port, http) = (ports[1 + 2 * i], ports[2 + 2 * i]);
            let mut cmd = Command::new(&setup.corecast_bin);
            cmd.args(corecast_args(i, port, http, redis_port, setup.defaults));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let http = Some(SocketAddr::from(([127, 0, 0, 1], http)));
            let log = setup.dir.join("logs").join(format!("{label}-node{}.log", i + 1));
            nodes.push(servers::launch(Kind::Corecast, cmd, (addr, http), Access::default(), log)?);
        }
        Ok(Self { nodes, redis: Some(redis) })
    }

    fn nats(n: usize, setup: &Setup, label: &str) -> anyhow::Result<Self> {
        let all = servers::free_ports(2 * n)?;
        let (ports, routes) = all.split_at(n);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let conf = servers::write_conf(
                &setup.dir,
                &format!("{label}-node{}.conf", i + 1),
                &nats_config(i, ports, routes),
            )?;
            let mut cmd = Command::new("nats-server");
            cmd.arg("-c").arg(conf);
            if !setup.defaults {
                cmd.env("GOMAXPROCS", "1");
            }
            let addr = SocketAddr::from(([127, 0, 0, 1], ports[i]));
            let log = setup.dir.join("logs").join(format!("{label}-node{}.log", i + 1));
            nodes.push(servers::launch(Kind::Nats, cmd, (addr, None), Access::default(), log)?);
        }
        Ok(Self { nodes, redis: None })
    }

    /// The nodes' pids, then Redis's.
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().chain(&self.redis).map(|s| s.pid).collect()
    }

    /// Problems of processes that are no longer running.
    fn dead(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in self.nodes.iter_mut().enumerate() {
            if !s.alive() {
                out.push(format!("{} node{} exited: {}", s.kind, i + 1, s.log_tail()));
            }
        }
        if let Some(r) = self.redis.as_mut() {
            if !r.alive() {
                out.push(format!("redis-server exited: {}", r.log_tail()));
            }
        }
        out
    }
}

/// Where things are.
#[derive(Debug, Clone)]
struct Setup {
    corecast_bin: PathBuf,
    dir: PathBuf,
    /// Nodes as shipped (`--defaults`).
    defaults: bool,
}

/// The backplane's counters at one moment: each corecast node's
/// `cluster` object (numbers only) and Redis's `INFO all`.
#[derive(Debug, Clone, Default)]
struct Counters {
    nodes: Vec<Option<BTreeMap<String, f64>>>,
    redis: BTreeMap<String, f64>,
}

/// GETs `path` of the HTTP server at `addr`: the body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of HTTP headers")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{path}: {}",
        head.lines().next().unwrap_or("")
    );
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// The body of a chunked HTTP response.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The numbers of a node's `/stats` `cluster` object; `None` when there
/// is none.
fn cluster_object(stats: &serde_json::Value) -> Option<BTreeMap<String, f64>> {
    let obj = stats.get("cluster")?.as_object()?;
    Some(obj.iter().filter_map(|(k, v)| v.as_f64().map(|v| (k.clone(), v))).collect())
}

/// `INFO all` of the Redis at `addr`, one RESP command on a fresh
/// connection.
fn redis_info(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")?;
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let len: usize = first
        .strip_prefix('$')
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("INFO: unexpected reply {first:?}"))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The numbers of an `INFO` reply: `field: value` lines, and
/// `cmdstat_X:calls=N,...` as `cmdstat_X.calls` (and its other fields).
pub fn parse_info(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        if let Ok(v) = value.parse::<f64>() {
            out.insert(key.to_owned(), v);
        } else if key.starts_with("cmdstat_") {
            for field in value.split(',') {
                if let Some((f, v)) = field.split_once('=') {
                    if let Ok(v) = v.parse::<f64>() {
                        out.insert(format!("{key}.{f}"), v);
                    }
                }
            }
        }
    }
    out
}

impl Counters {
    /// Reads every node's `/stats` and Redis's `INFO`; what cannot be
    /// read is left out and said in `errors`.
    fn read(system: &System, errors: &mut Vec<String>) -> Self {
        let nodes = system
            .nodes
            .iter()
            .map(|s| {
                let http = s.http?;
                match http_get(http, "/stats") {
                    Ok(body) => match serde_json::from_str::<serde_json::Value>(&body) {
                        Ok(v) => cluster_object(&v),
                        Err(e) => {
                            errors.push(format!("/stats of {http} is not JSON: {e}"));
                            None
                        }
                    },
                    Err(e) => {
                        errors.push(format!("/stats of {http}: {e:#}"));
                        None
                    }
                }
            })
            .collect();
        let redis = match system.redis.as_ref().map(|r| redis_info(r.addr)) {
            Some(Ok(text)) => parse_info(&text),
            Some(Err(e)) => {
                errors.push(format!("Redis INFO: {e:#}"));
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        Self { nodes, redis }
    }
}

/// What went over the backplane during one corecast run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Backplane {
    /// Whether every node's `/stats` had a `cluster` object, before and
    /// after the run.
    pub node_counters: bool,
    /// The `cluster` counters' increase over the run, summed over the
    /// nodes (gauges left out).
    pub nodes: BTreeMap<String, f64>,
    /// The same, node by node.
    pub per_node: Vec<BTreeMap<String, f64>>,
    /// `PUBLISH` calls Redis served (`cmdstat_publish`).
    pub redis_publish_calls: f64,
    /// Commands Redis served (`total_commands_processed`).
    pub redis_commands: f64,
    /// Bytes Redis read and wrote on its connections.
    pub redis_net_in_bytes: f64,
    pub redis_net_out_bytes: f64,
    /// Redis's own CPU seconds over the run (`used_cpu_user` +
    /// `used_cpu_sys` of `INFO`), beside the `/proc` figure.
    pub redis_cpu_s: f64,
    /// Redis's largest recent output buffer of a client at the end of the
    /// run (`client_recent_max_output_buffer`): a subscriber node that
    /// fell behind shows here.
    pub redis_max_output_buffer: f64,
    /// Every numeric `INFO` field that changed over the run, by how much.
    pub redis_changed: BTreeMap<String, f64>,
}

impl Backplane {
    fn between(before: &Counters, after: &Counters) -> Self {
        let mut per_node = Vec::new();
        let mut node_counters = !before.nodes.is_empty();
        for (b, a) in before.nodes.iter().zip(&after.nodes) {
            let (Some(b), Some(a)) = (b, a) else {
                node_counters = false;
                per_node.push(BTreeMap::new());
                continue;
            };
            let delta: BTreeMap<String, f64> = a
                .iter()
                .filter(|(k, _)| !GAUGES.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v - b.get(k).copied().unwrap_or(0.0)))
                .collect();
            per_node.push(delta);
        }
        let mut nodes = BTreeMap::new();
        for delta in &per_node {
            for (k, v) in delta {
                *nodes.entry(k.clone()).or_insert(0.0) += v;
            }
        }
        let d = |k: &str| {
            after.redis.get(k).copied().unwrap_or(0.0) - before.redis.get(k).copied().unwrap_or(0.0)
        };
        Self {
            node_counters,
            nodes,
            per_node,
            redis_publish_calls: d("cmdstat_publish.calls"),
            redis_commands: d("total_commands_processed"),
            redis_net_in_bytes: d("total_net_input_bytes"),
            redis_net_out_bytes: d("total_net_output_bytes"),
            redis_cpu_s: d("used_cpu_user") + d("used_cpu_sys"),
            redis_max_output_buffer: after
                .redis
                .get("client_recent_max_output_buffer")
                .copied()
                .unwrap_or(0.0),
            redis_changed: after
                .redis
                .keys()
                .map(|k| (k.clone(), d(k)))
                .filter(|(_, v)| *v != 0.0)
                .collect(),
        }
    }

    /// A node counter's increase, summed over the nodes.
    pub fn node(&self, key: &str) -> f64 {
        self.nodes.get(key).copied().unwrap_or(0.0)
    }
}

/// One run of one case on one system.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRun {
    /// The case's name.
    pub case: String,
    /// Nodes of the system.
    pub nodes: usize,
    /// Its placement.
    pub shape: Shape,
    /// Round, 1-based.
    pub round: u32,
    /// Rounds of the case.
    pub rounds: u32,
    /// Backplane copies expected per published message (see
    /// [`Case::copies_per_msg`]).
    pub expected_copies: f64,
    /// CPU seconds of each node over the measured part.
    pub node_cpu_s: Vec<f64>,
    /// CPU seconds of corecast's Redis over the measured part.
    pub redis_cpu_s: Option<f64>,
    /// The backplane (corecast).
    pub backplane: Option<Backplane>,
    /// The flow's result.
    pub result: RunResult,
}

impl ClusterRun {
    fn delivered(&self) -> f64 {
        self.result.flow.as_ref().map_or(0.0, |f| f.delivered as f64)
    }

    /// Delivered messages/s.
    pub fn rate(&self) -> f64 {
        self.result.flow.as_ref().map_or(0.0, |f| f.delivered_per_s)
    }

    /// Every node's CPU seconds per delivered message.
    pub fn node_cpu_per_msg(&self) -> f64 {
        self.node_cpu_s.iter().sum::<f64>() / self.delivered()
    }

    /// Redis's CPU seconds per delivered message.
    pub fn redis_cpu_per_msg(&self) -> Option<f64> {
        self.redis_cpu_s.map(|c| c / self.delivered())
    }

    /// Delivered messages/s when each node has one core of its own and
    /// the busiest one is saturated: delivered over the busiest node's
    /// CPU seconds.
    pub fn capacity(&self) -> f64 {
        let busiest = self.node_cpu_s.iter().copied().fold(0.0, f64::max);
        self.delivered() / busiest
    }

    /// Delivered messages/s at which Redis, on a core of its own, would
    /// be saturated.
    pub fn redis_capacity(&self) -> Option<f64> {
        self.redis_cpu_s.map(|c| self.delivered() / c)
    }

    fn problems(&self) -> String {
        let f = self.result.flow.as_ref();
        let mut p: Vec<String> = Vec::new();
        if let Some(f) = f {
            if f.lost > 0 || f.cut > 0 || f.duplicates > 0 || f.gaps > 0 {
                p.push(format!(
                    "lost {} cut {} dup {} gaps {}",
                    f.lost, f.cut, f.duplicates, f.gaps
                ));
            }
        }
        p.extend(self.result.errors.iter().cloned());
        p.join("; ")
    }
}

/// The round with the median delivered/s (the lower middle of an even
/// count), with its own CPU and counters, and the most any round lost,
/// cut, duplicated or skipped and every round's errors (see
/// [`flow::merge_rounds`]).
pub fn merge(rounds: &[ClusterRun]) -> Option<ClusterRun> {
    let results: Vec<RunResult> = rounds.iter().map(|r| r.result.clone()).collect();
    let merged = flow::merge_rounds(&results)?;
    let mut order: Vec<&ClusterRun> = rounds.iter().collect();
    order.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let mut median = order[(rounds.len() - 1) / 2].clone();
    median.result = merged;
    Some(median)
}

/// The target of a case's runs, before its system has started (no
/// address, no pids yet).
fn cluster_target(kind: Kind, case: &Case, timeout: Duration) -> Target {
    Target {
        kind,
        addr: ([127, 0, 0, 1], 0).into(),
        http: None,
        pid: None,
        timeout,
        mode: Some("cluster".into()),
        settings: Some(format!("{} nodes", case.nodes)),
        settle: Duration::from_secs(1),
        access: Access::default(),
        others: Vec::new(),
    }
}

/// Runs one case once on a fresh system.
fn run_once(
    case: &Case,
    kind: Kind,
    round: u32,
    rounds: u32,
    setup: &Setup,
    timeout: Duration,
) -> ClusterRun {
    let label = format!("{kind}-{}-{}n-round{round}", case.shape.name(), case.nodes);
    let mut run = ClusterRun {
        case: case.name(),
        nodes: case.nodes,
        shape: case.shape,
        round,
        rounds,
        expected_copies: case.copies_per_msg(),
        node_cpu_s: Vec::new(),
        redis_cpu_s: None,
        backplane: None,
        result: cluster_target(kind, case, timeout).result(
            if case.shape == Shape::Fanout { "fanout" } else { "pairs" },
            case.name(),
            case.spec(&[]).params(),
        ),
    };
    let mut system = match System::start(kind, case.nodes, setup, &label) {
        Ok(s) => s,
        Err(e) => {
            run.result.errors.push(format!("start: {e:#}"));
            return run;
        }
    };
    let addrs: Vec<SocketAddr> = system.nodes.iter().map(|s| s.addr).collect();
    let target = Target {
        addr: addrs[0],
        http: system.nodes[0].http,
        others: system.pids(),
        ..cluster_target(kind, case, timeout)
    };
    let mut notes = Vec::new();
    let before = (kind == Kind::Corecast).then(|| Counters::read(&system, &mut notes));
    let spec = case.spec(&addrs);
    match flow::run(&target, &spec) {
        Ok(result) => run.result = result,
        Err(e) => run.result.errors.push(format!("{e:#}")),
    }
    if let Some(before) = before {
        let after = Counters::read(&system, &mut notes);
        run.backplane = Some(Backplane::between(&before, &after));
    }
    notes.dedup();
    run.result.errors.extend(notes);
    run.result.errors.extend(system.dead());
    let cpu: Vec<f64> = run.result.others_usage.iter().map(|u| u.cpu_s).collect();
    if !cpu.is_empty() {
        run.node_cpu_s = cpu[..case.nodes.min(cpu.len())].to_vec();
        run.redis_cpu_s = cpu.get(case.nodes).copied();
    }
    drop(system);
    run
}

/// `cluster`: runs every case, writes `rounds.jsonl`, `results.jsonl` and
/// `report.md` into `<out>/<timestamp>/`.
pub fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.render {
        return render(dir);
    }
    let wall = Instant::now();
    let brokers: Vec<Kind> = args.brokers.iter().copied().filter(|k| *k != Kind::Redis).collect();
    anyhow::ensure!(!brokers.is_empty(), "--brokers: corecast and/or nats");
    let mut notes = vec![
        format!("command: `{}` on {} cpus", args.command_line(), sys::online_cpus()),
        format!("load average (1, 5, 15 min) before the runs: {}", sys::loadavg()),
    ];
    if args.defaults {
        notes.push(
            "--defaults: every node as shipped (corecast on every core, nats-server with its own \
             GOMAXPROCS), not the `--cores 1` / `GOMAXPROCS=1` of the settings below"
                .into(),
        );
    }
    let mut needed = brokers.clone();
    if brokers.contains(&Kind::Corecast) {
        needed.push(Kind::Redis);
    }
    notes.extend(servers::ensure_installed(&needed, args.install)?);
    if brokers.contains(&Kind::Corecast) {
        notes.extend(servers::ensure_corecast(&args.corecast_bin, args.build)?);
    }
    notes.push(format!("versions: {}", versions(&args.corecast_bin, &brokers)));
    let dir = args.out.join(format!("cluster-{}", crate::compare::timestamp(SystemTime::now())));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let setup = Setup {
        corecast_bin: args.corecast_bin.clone(),
        dir: dir.clone(),
        defaults: args.defaults,
    };
    if let Some(nice) = args.nice {
        sys::set_nice(nice)?;
        notes.push(format!("bench and the systems run at nice {nice}"));
    }
    let timeout = Duration::from_secs(args.run_timeout_secs);
    let rounds = args.rounds();
    let all = cases(args.quick);
    let selected: Vec<&Case> = all
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.name().contains(o.as_str())))
        .collect();
    let rounds_file = dir.join("rounds.jsonl");
    let mut merged = Vec::new();
    let mut all_rounds = Vec::new();
    for case in selected {
        let mut by_kind: Vec<Vec<ClusterRun>> = vec![Vec::new(); brokers.len()];
        for round in 1..=rounds {
            for (k, &kind) in brokers.iter().enumerate() {
                eprintln!(
                    "corecast-bench: [{:>5.0}s] cluster / {kind} / {} / round {round} of {rounds}",
                    wall.elapsed().as_secs_f64(),
                    case.name()
                );
                let run = run_once(case, kind, round, rounds, &setup, timeout);
                append_json(&rounds_file, &run)?;
                if !run.result.errors.is_empty() {
                    eprintln!("corecast-bench:   problems: {}", run.problems());
                }
                all_rounds.push(run.clone());
                by_kind[k].push(run);
            }
        }
        for runs in by_kind {
            if let Some(m) = merge(&runs) {
                append_json(&dir.join("results.jsonl"), &m)?;
                merged.push(m);
            }
        }
    }
    notes.push(format!("load average after the runs: {}", sys::loadavg()));
    notes.push(format!("wall time: {:.0} s", wall.elapsed().as_secs_f64()));
    let md = report(&merged, &all_rounds, rounds, &notes);
    std::fs::write(dir.join("report.md"), &md)?;
    println!("\n{md}");
    println!("results: {}", dir.display());
    Ok(())
}

/// Renders `dir/report.md` again from the results there.
fn render(dir: &Path) -> anyhow::Result<()> {
    let read = |name: &str| -> anyhow::Result<Vec<ClusterRun>> {
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("a line of {name}")))
            .collect()
    };
    let (merged, all_rounds) = (read("results.jsonl")?, read("rounds.jsonl")?);
    let old = std::fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    let notes = old_notes(&old);
    let rounds = merged.iter().map(|r| r.rounds).max().unwrap_or(1);
    let md = report(&merged, &all_rounds, rounds, &notes);
    std::fs::write(dir.join("report.md"), &md)?;
    println!("wrote {}", dir.join("report.md").display());
    Ok(())
}

/// The notes (the first list) of a report.
fn old_notes(report: &str) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("- "))
        .take_while(|l| l.starts_with("- "))
        .map(|l| l[2..].to_owned())
        .collect()
}

fn append_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{}", serde_json::to_string(value)?)?;
    Ok(())
}

/// The versions of the programs, as they say them.
fn versions(corecast: &Path, brokers: &[Kind]) -> String {
    let mut out = Vec::new();
    if brokers.contains(&Kind::Corecast) {
        out.push(servers::version(corecast.as_os_str()));
        out.push(servers::version("redis-server".as_ref()));
    }
    if brokers.contains(&Kind::Nats) {
        out.push(servers::version("nats-server".as_ref()));
    }
    out.join("; ")
}

/// `1.23M`, `456k`, `789`.
fn si(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Bytes as MiB.
fn mib(v: f64) -> String {
    format!("{:.1} MiB", v / (1 << 20) as f64)
}

/// CPU seconds per message as nanoseconds.
fn ns(v: f64) -> String {
    if v.is_finite() {
        format!("{:.0} ns", v * 1e9)
    } else {
        "-".into()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

/// The estimate of three separate machines from CPU per message, for one
/// placement and broker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// Delivered/s of one node with a core of its own (1-node local).
    pub one: f64,
    /// Delivered/s of the three nodes with a core each, the busiest one
    /// saturated.
    pub three: f64,
}

impl Scaling {
    /// `three / (3 × one)`: the target is at least 0.8.
    pub fn efficiency(self) -> f64 {
        self.three / (3.0 * self.one)
    }
}

/// The report.
pub fn report(
    runs: &[ClusterRun],
    all_rounds: &[ClusterRun],
    rounds: u32,
    notes: &[String],
) -> String {
    let find = |kind: Kind, shape: Shape, nodes: usize| {
        runs.iter().find(|r| r.result.broker == kind && r.shape == shape && r.nodes == nodes)
    };
    let kinds: Vec<Kind> = [Kind::Corecast, Kind::Nats]
        .into_iter()
        .filter(|k| runs.iter().any(|r| r.result.broker == *k))
        .collect();
    let mut md = String::from("# corecast-bench cluster\n\n");
    md.push_str(&format!(
        "corecast nodes joined over one Redis against a nats-server cluster, all on loopback on this machine. Every system is started fresh for each round; each case runs {rounds} rounds per system, interleaved (corecast, nats, corecast, ...), and the figures are the round with the median delivered/s, with that round's CPU and counters (the most any round lost or cut, and every round's problems). Ratios compare figures of the same run.\n\n"
    ));
    md.push_str("Settings: each corecast node runs the release binary with `--listen`, `--http` (free loopback ports), `--cores 1`, `--cluster-redis redis://127.0.0.1:PORT` and `--cluster-node nodeN`, every other setting as shipped; Redis is Debian's `redis-server` with `--port`, `--bind 127.0.0.1` and `--save \"\"`, everything else at its default. Each nats-server node has a config file with `server_name`, `listen` and `cluster { name, listen, routes }` (a route to every other node), everything else at its default, and runs with `GOMAXPROCS=1`. `--cores 1` and `GOMAXPROCS=1` give every node one core's worth of threads so that three nodes share the machine's 2 cores alike; nothing is pinned, and the load generator runs on the same 2 cores.\n\n");
    md.push_str("CPU: utime + stime of `/proc/PID/stat` of every node (summed) and of Redis (apart), over the measured part of each run (first publish to last delivery), divided by the messages delivered. Before the publishers start, a probe message published on every node with publishers has reached a probe subscriber on every other node with subscribers, subscribed after the run's own subscribers (so the publishing node knows of them).\n\n");
    for n in notes {
        md.push_str(&format!("- {n}\n"));
    }
    md.push_str("\n## 1. Partitioned topics\n\n");
    md.push_str(&format!("{PAIRS} publisher/subscriber pairs, each on a topic of its own; local: pair j's publisher and subscriber on node j mod n; crossing: its publisher on node i = j mod n and its subscriber on node i+1 (mod n).\n\n"));
    md.push_str("| case | corecast delivered/s | nats delivered/s | corecast / nats | corecast nodes CPU per msg | Redis CPU per msg | nats nodes CPU per msg | corecast lost, cut | nats lost, cut |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let lc = |r: Option<&ClusterRun>| {
        r.and_then(|r| r.result.flow.as_ref())
            .map_or("-".into(), |f| format!("{}, {}", f.lost, f.cut))
    };
    let rate = |r: Option<&ClusterRun>| r.map_or(f64::NAN, ClusterRun::rate);
    let cpu = |r: Option<&ClusterRun>| r.map_or(f64::NAN, ClusterRun::node_cpu_per_msg);
    for (shape, nodes) in [
        (Shape::Local, 1),
        (Shape::Local, 2),
        (Shape::Local, 3),
        (Shape::Crossing, 2),
        (Shape::Crossing, 3),
    ] {
        let (c, n) = (find(Kind::Corecast, shape, nodes), find(Kind::Nats, shape, nodes));
        let Some(name) = c.or(n).map(|r| r.case.clone()) else { continue };
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            si(rate(c)),
            si(rate(n)),
            ratio(rate(c), rate(n)),
            ns(cpu(c)),
            c.and_then(ClusterRun::redis_cpu_per_msg).map_or("-".into(), ns),
            ns(cpu(n)),
            lc(c),
            lc(n)
        ));
    }
    md.push_str("\n### Three machines, estimated from CPU per message\n\n");
    md.push_str("One node with a core of its own delivers (messages delivered) / (its CPU seconds) per second: the 1-node local case. Three nodes with a core each deliver (messages delivered) / (CPU seconds of the busiest node) per second, the busiest node saturated first. The target is three nodes ≥ 0.8 × 3 × one node's. Redis, on a machine of its own, caps the cluster at (messages delivered) / (Redis CPU seconds); the last columns apply that cap.\n\n");
    md.push_str("| placement | system | one node, msgs/s per core | 3 nodes, msgs/s (busiest node saturated) | 3 × one node | 3 nodes / (3 × one node) | target ≥ 0.8 | Redis cap, msgs/s | 3 nodes with the Redis cap / (3 × one node) |\n|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for shape in [Shape::Local, Shape::Crossing] {
        for &kind in &kinds {
            let (Some(one), Some(three)) = (find(kind, Shape::Local, 1), find(kind, shape, 3))
            else {
                continue;
            };
            let s = Scaling { one: one.capacity(), three: three.capacity() };
            let eff = s.efficiency();
            let cap = three.redis_capacity();
            let capped = cap.map(|c| Scaling { three: s.three.min(c), ..s }.efficiency());
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |\n",
                shape.name(),
                kind.name(),
                si(s.one),
                si(s.three),
                si(3.0 * s.one),
                eff,
                if eff >= 0.8 { "**PASS**" } else { "**FAIL**" },
                cap.map_or("-".into(), si),
                capped.map_or("-".into(), |e| format!("{e:.2}"))
            ));
        }
    }
    md.push_str("\nCPU seconds of each node over the measured part (median round):\n\n| case | system | node CPU s | Redis CPU s | bench CPU s | seconds |\n|---|---|---|--:|--:|--:|\n");
    for r in runs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.2} |\n",
            r.case,
            r.result.broker.name(),
            r.node_cpu_s.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(" / "),
            r.redis_cpu_s.map_or("-".into(), |c| format!("{c:.2}")),
            r.result.bench_usage.cpu_s,
            r.result.seconds
        ));
    }
    md.push_str(&format!("\n## 2. Cross-node fan-out\n\nOne publisher on node 1, {FANOUT_SUBS} subscribers of its topic, subscriber i on node i mod n (on 3 nodes: 334 on node 1, 333 on each other).\n\n"));
    md.push_str("| case | system | published/s | delivered/s | nodes CPU per delivery | Redis CPU per delivery | lost | cut | corecast / nats | target: corecast ≥ nats |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for nodes in [1, 3] {
        let (c, n) =
            (find(Kind::Corecast, Shape::Fanout, nodes), find(Kind::Nats, Shape::Fanout, nodes));
        for r in [c, n].into_iter().flatten() {
            let f = r.result.flow.clone().unwrap_or_default();
            let is_cc = r.result.broker == Kind::Corecast;
            let verdict = match (is_cc, nodes, n) {
                (true, 3, Some(n)) => {
                    let clean = f.lost == 0 && f.cut == 0;
                    if clean && r.rate() >= n.rate() {
                        "**PASS**"
                    } else {
                        "**FAIL**"
                    }
                }
                _ => "",
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.case,
                r.result.broker.name(),
                si(f.published_per_s),
                si(f.delivered_per_s),
                ns(r.node_cpu_per_msg()),
                r.redis_cpu_per_msg().map_or("-".into(), ns),
                f.lost,
                f.cut,
                if is_cc { ratio(r.rate(), rate(n)) } else { String::new() },
                verdict
            ));
        }
    }
    md.push_str("\n## 3. Backplane cost (corecast)\n\n");
    md.push_str("From each node's `/stats` `cluster` object (summed over the nodes; increase over the whole run, probe and interest traffic included) and Redis's `INFO commandstats` / `INFO stats`. A copy is one message sent to one other node (`out_msgs`); one Redis `PUBLISH` (`out_frames`) carries one or more copies. Expected: one copy per interested other node and published message, never one per subscriber, and fewer publishes than copies under load.\n\n");
    let have_counters = runs.iter().filter_map(|r| r.backplane.as_ref()).any(|b| b.node_counters);
    if !have_counters {
        md.push_str("**The nodes' `/stats` had no `cluster` object in this build**: the node columns are empty, and only Redis's own counters (`INFO`) are shown.\n\n");
    }
    md.push_str("| case | published | delivered | copies sent (out_msgs) | copies per published msg (expected) | Redis publishes by the nodes (out_frames) | copies per publish | Redis PUBLISH calls | Redis commands | Redis PUBLISH per delivered msg | Redis bytes in / out | Redis max client output buffer | copies received (in_msgs) | Redis messages dropped on arrival, queue full (in_dropped_full) | copies they carried (in_lost_msgs) | copies dropped by senders (out_dropped_*) | holds |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in runs.iter().filter(|r| r.result.broker == Kind::Corecast) {
        let Some(b) = &r.backplane else { continue };
        let f = r.result.flow.clone().unwrap_or_default();
        let published = f.published as f64;
        let copies = b.node("out_msgs");
        let frames = b.node("out_frames");
        let out_dropped: f64 =
            b.nodes.iter().filter(|(k, _)| k.starts_with("out_dropped")).map(|(_, v)| v).sum();
        let opt = |v: f64| if b.node_counters { si(v) } else { "-".into() };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} ({:.2}) | {} | {} | {} | {} | {:.4} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            r.case,
            si(published),
            si(f.delivered as f64),
            opt(copies),
            if b.node_counters { format!("{:.3}", copies / published) } else { "-".into() },
            r.expected_copies,
            opt(frames),
            if b.node_counters && frames > 0.0 { format!("{:.1}", copies / frames) } else { "-".into() },
            si(b.redis_publish_calls),
            si(b.redis_commands),
            b.redis_publish_calls / (f.delivered as f64).max(1.0),
            mib(b.redis_net_in_bytes),
            mib(b.redis_net_out_bytes),
            mib(b.redis_max_output_buffer),
            opt(b.node("in_msgs")),
            opt(b.node("in_dropped_full")),
            opt(b.node("in_lost_msgs")),
            opt(out_dropped),
            opt(b.node("holds")),
        ));
    }
    md.push_str("\nThe backplane's drops node by node (rounds with any):\n\n| case | round | node | in_msgs | in_frames | in_dropped_full | in_lost_frames | in_lost_msgs | out_dropped_* | holds |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in all_rounds.iter().filter(|r| r.result.broker == Kind::Corecast) {
        let Some(b) = &r.backplane else { continue };
        for (i, n) in b.per_node.iter().enumerate() {
            let get = |k: &str| n.get(k).copied().unwrap_or(0.0);
            let out: f64 =
                n.iter().filter(|(k, _)| k.starts_with("out_dropped")).map(|(_, v)| v).sum();
            if get("in_dropped_full") + get("in_lost_frames") + out == 0.0 {
                continue;
            }
            md.push_str(&format!(
                "| {} | {} | node{} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.case,
                r.round,
                i + 1,
                get("in_msgs"),
                get("in_frames"),
                get("in_dropped_full"),
                get("in_lost_frames"),
                get("in_lost_msgs"),
                out,
                get("holds")
            ));
        }
    }
    md.push_str("\nRedis bytes in / out: what Redis read from and wrote to all its clients over the run; with one subscriber node per copy, out ≈ in means Redis passed on every publish it took. Every `INFO` field that changed over each round is in `rounds.jsonl` (`backplane.redis_changed`).\n");
    let mut problems: Vec<String> = runs
        .iter()
        .filter(|r| !r.problems().is_empty())
        .map(|r| format!("- {} / {}: {}", r.case, r.result.broker.name(), r.problems()))
        .collect();
    problems.dedup();
    md.push_str("\n## Problems\n\n");
    if problems.is_empty() {
        md.push_str("None: no run lost, cut, duplicated or skipped a message, and every process was running at the end of every run.\n");
    } else {
        md.push_str(&problems.join("\n"));
        md.push('\n');
    }
    md
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ClusterArgs,
    }

    #[test]
    fn parses_its_arguments_and_says_its_command() {
        let cli = Cli::try_parse_from(["x"]).expect("defaults");
        assert_eq!(cli.args.brokers, [Kind::Corecast, Kind::Nats]);
        assert_eq!((cli.args.rounds(), cli.args.quick), (ROUNDS, false));
        assert_eq!(cli.args.command_line(), "corecast-bench cluster");
        let cli = Cli::try_parse_from([
            "x",
            "--quick",
            "--brokers",
            "corecast",
            "--only",
            "fanout,crossing",
        ])
        .expect("flags");
        assert_eq!(cli.args.rounds(), QUICK_ROUNDS);
        assert_eq!(
            cli.args.command_line(),
            "corecast-bench cluster --quick --brokers corecast --only 'fanout,crossing'"
        );
        assert!(Cli::try_parse_from(["x", "--brokers", "kafka"]).is_err());
    }

    #[test]
    fn keeps_the_notes_of_a_report_it_renders_again() {
        let md = report(&[], &[], 3, &["command: `x`".into(), "wall time: 5 s".into()]);
        assert_eq!(old_notes(&md), ["command: `x`", "wall time: 5 s"]);
        let cli = Cli::try_parse_from(["x", "--render", "d"]).expect("render");
        assert_eq!(cli.args.render, Some(PathBuf::from("d")));
    }

    #[test]
    fn renders_node_flags_and_nats_configs() {
        assert_eq!(
            corecast_args(1, 7400, 7422, 6379, false).join(" "),
            "--listen 127.0.0.1:7400 --http 127.0.0.1:7422 --cores 1 --cluster-redis redis://127.0.0.1:6379 --cluster-node node2"
        );
        assert!(!corecast_args(0, 1, 2, 3, true).contains(&"--cores".to_string()));
        let conf = nats_config(0, &[4222, 4223, 4224], &[6222, 6223, 6224]);
        assert_eq!(
            conf,
            "server_name: \"node1\"\nlisten: \"127.0.0.1:4222\"\ncluster {\n  name: \"bench\"\n  listen: \"127.0.0.1:6222\"\n  routes: [\n    \"nats-route://127.0.0.1:6223\"\n    \"nats-route://127.0.0.1:6224\"\n  ]\n}\n"
        );
        assert!(nats_config(0, &[4222], &[6222]).contains("routes: [\n  ]"));
    }

    #[test]
    fn places_pairs_and_subscribers_on_the_nodes() {
        let case = |nodes, shape| Case { nodes, shape, msgs: 10, size: 64 };
        assert_eq!(
            case(3, Shape::Local).placement(),
            (vec![0, 1, 2, 0, 1, 2], vec![0, 1, 2, 0, 1, 2])
        );
        assert_eq!(
            case(3, Shape::Crossing).placement(),
            (vec![0, 1, 2, 0, 1, 2], vec![1, 2, 0, 1, 2, 0])
        );
        assert_eq!(case(2, Shape::Crossing).placement().1, [1, 0, 1, 0, 1, 0]);
        let (pubs, subs) = case(3, Shape::Fanout).placement();
        assert_eq!(pubs, [0]);
        assert_eq!([0, 1, 2].map(|n| subs.iter().filter(|&&s| s == n).count()), [334, 333, 333]);
        // Copies over the backplane: one per other interested node.
        assert_eq!(case(3, Shape::Local).copies_per_msg(), 0.0);
        assert_eq!(case(3, Shape::Crossing).copies_per_msg(), 1.0);
        assert_eq!(case(3, Shape::Fanout).copies_per_msg(), 2.0);
        assert_eq!(case(1, Shape::Fanout).copies_per_msg(), 0.0);
        let addrs: Vec<SocketAddr> = (0..3).map(|i| ([127, 0, 0, 1], 4000 + i).into()).collect();
        let spec = case(3, Shape::Crossing).spec(&addrs);
        let nodes = spec.nodes.as_ref().expect("nodes");
        assert_eq!(nodes.crossings(&spec), [(0, 1), (1, 2), (2, 0)]);
        assert_eq!(spec.case, "pairs K=6 crossing 64B, 3 nodes");
        let local = case(3, Shape::Local).spec(&addrs);
        assert!(local.nodes.as_ref().expect("nodes").crossings(&local).is_empty());
        let fanout = case(3, Shape::Fanout).spec(&addrs);
        assert_eq!(fanout.nodes.as_ref().expect("nodes").crossings(&fanout), [(0, 1), (0, 2)]);
        // Every case has a quick version; every name is distinct.
        let (full, quick) = (cases(false), cases(true));
        assert_eq!(full.len(), quick.len());
        let names: std::collections::HashSet<String> = full.iter().map(Case::name).collect();
        assert_eq!(names.len(), full.len());
    }

    #[test]
    fn reads_redis_info_and_backplane_differences() {
        let info = "# Stats\r\ntotal_commands_processed:120\r\ntotal_net_input_bytes:5000\r\n# Commandstats\r\ncmdstat_publish:calls=100,usec=300,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n";
        let parsed = parse_info(info);
        assert_eq!(parsed["total_commands_processed"], 120.0);
        assert_eq!(parsed["cmdstat_publish.calls"], 100.0);
        let before = Counters {
            nodes: vec![Some(BTreeMap::from([("out_msgs".into(), 5.0), ("peers".into(), 2.0)]))],
            redis: parse_info("total_commands_processed:20\ncmdstat_publish:calls=10"),
        };
        let after = Counters {
            nodes: vec![Some(BTreeMap::from([("out_msgs".into(), 105.0), ("peers".into(), 2.0)]))],
            redis: parsed,
        };
        let b = Backplane::between(&before, &after);
        assert!(b.node_counters);
        assert_eq!((b.node("out_msgs"), b.nodes.get("peers")), (100.0, None));
        assert_eq!((b.redis_publish_calls, b.redis_commands), (90.0, 100.0));
        let none = Counters { nodes: vec![None], ..before.clone() };
        assert!(!Backplane::between(&none, &after).node_counters);
        let stats = serde_json::json!({"total": {}, "cluster": {"out_msgs": 3, "name": "x"}});
        assert_eq!(cluster_object(&stats), Some(BTreeMap::from([("out_msgs".into(), 3.0)])));
        assert_eq!(cluster_object(&serde_json::json!({"total": {}})), None);
        assert_eq!(dechunk("5\r\nhello\r\n3\r\n{}!\r\n0\r\n\r\n"), "hello{}!");
    }

    #[test]
    fn estimates_three_machines_from_cpu_per_message() {
        let s = Scaling { one: 1e6, three: 2.7e6 };
        assert!((s.efficiency() - 0.9).abs() < 1e-9);
        let target = Target::for_tests(Kind::Corecast);
        let mut result = target.result("pairs", "p".into(), Default::default());
        result.flow = Some(crate::result::Flow { delivered: 3_000_000, ..Default::default() });
        let run = ClusterRun {
            case: "p".into(),
            nodes: 3,
            shape: Shape::Local,
            round: 1,
            rounds: 1,
            expected_copies: 0.0,
            node_cpu_s: vec![1.0, 1.5, 0.5],
            redis_cpu_s: Some(0.3),
            backplane: None,
            result,
        };
        assert_eq!(run.capacity(), 2e6, "the busiest node saturates first");
        assert!((run.node_cpu_per_msg() - 1e-6).abs() < 1e-15);
        assert_eq!(run.redis_capacity(), Some(1e7));
    }
}
