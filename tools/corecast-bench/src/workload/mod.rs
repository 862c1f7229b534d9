//! The workloads, and what they share: the broker under test and the
//! meters around a measured section.

pub mod churn;
pub mod conns;
pub mod flow;
pub mod handshakes;
pub mod latency;
pub mod owed;
pub mod perms;
pub mod request;
pub mod routing;
pub mod scraped;
pub mod stalled;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    driver::{Access, ConnOpts, Driver, Kind},
    result::{BenchUsage, BrokerUsage, Params, ProcCpu, RunResult},
    sys::{self, Proc},
};

/// The broker under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its protocol.
    pub kind: Kind,
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// corecast's monitoring port, if known (`scraped` needs it).
    pub http: Option<SocketAddr>,
    /// Its process, for CPU and memory figures.
    pub pid: Option<u32>,
    /// Bound on every run.
    pub timeout: Duration,
    /// Core mode label for `compare` runs.
    pub mode: Option<String>,
    /// Broker settings label for `compare` runs (`defaults`, `tuned`).
    pub settings: Option<String>,
    /// Least time to watch the broker's RSS settle after a run (conns,
    /// churn).
    pub settle: Duration,
    /// TLS and credentials of every connection.
    pub access: Access,
    /// More processes of the system under test whose CPU time a measured
    /// section records, each on its own (the nodes of a cluster and its
    /// Redis: see `cluster`).
    pub others: Vec<u32>,
}

impl Target {
    /// A one-core, shipped-defaults target that nothing listens on, for
    /// building results in unit tests.
    #[cfg(test)]
    pub fn for_tests(kind: Kind) -> Self {
        Self {
            kind,
            addr: ([127, 0, 0, 1], 0).into(),
            http: None,
            pid: None,
            timeout: Duration::from_secs(1),
            mode: Some("one".into()),
            settings: Some("defaults".into()),
            settle: Duration::from_secs(1),
            access: Access::default(),
            others: Vec::new(),
        }
    }

    /// The same target at another address (another node of a cluster).
    pub fn at(&self, addr: SocketAddr) -> Self {
        Self { addr, ..self.clone() }
    }

    /// Connects with the given read buffer and the run's timeout.
    pub fn connect(&self, name: &str, read_buffer: usize) -> anyhow::Result<Box<dyn Driver>> {
        self.open(name, read_buffer, None, false)
    }

    /// [`Target::connect`] from local address `source`.
    pub fn connect_from(
        &self,
        name: &str,
        read_buffer: usize,
        source: Option<std::net::Ipv4Addr>,
    ) -> anyhow::Result<Box<dyn Driver>> {
        self.open(name, read_buffer, source, false)
    }

    /// [`Target::connect`], as a protocol 1.1 session when `v1_1` (corecast;
    /// see [`ConnOpts::v1_1`]).
    pub fn connect_as(
        &self,
        name: &str,
        read_buffer: usize,
        v1_1: bool,
    ) -> anyhow::Result<Box<dyn Driver>> {
        self.open(name, read_buffer, None, v1_1)
    }

    fn open(
        &self,
        name: &str,
        read_buffer: usize,
        source: Option<std::net::Ipv4Addr>,
        v1_1: bool,
    ) -> anyhow::Result<Box<dyn Driver>> {
        let access = self.access.clone();
        let opts = ConnOpts { read_buffer, timeout: self.timeout, source, v1_1, access };
        self.kind
            .connect(self.addr, name, opts)
            .with_context(|| format!("{} connection {name}", self.kind))
    }

    /// The broker process, if known.
    pub fn proc(&self) -> Option<Proc> {
        self.pid.map(|pid| Proc { pid })
    }

    /// The broker process, or an error saying the workload needs it.
    pub fn require_proc(&self, workload: &str) -> anyhow::Result<Proc> {
        self.proc().with_context(|| format!("{workload} measures broker memory: pass --broker-pid"))
    }

    /// An empty result for this target.
    pub fn result(&self, workload: &str, case: String, params: Params) -> RunResult {
        RunResult {
            broker: self.kind,
            workload: workload.to_owned(),
            case,
            mode: self.mode.clone(),
            settings: self.settings.clone(),
            params,
            seconds: 0.0,
            flow: None,
            stalled: None,
            scrape: None,
            latency: None,
            conns: None,
            churn: None,
            subs_memory: None,
            request: None,
            handshakes: None,
            broker_usage: None,
            others_usage: Vec::new(),
            bench_usage: BenchUsage::default(),
            counters_after: None,
            errors: Vec::new(),
        }
    }

    /// corecast's counters (`STATS` over a fresh connection): the whole
    /// reply. `None` for other brokers.
    pub fn stats(&self) -> anyhow::Result<Option<serde_json::Value>> {
        if self.kind != Kind::Corecast {
            return Ok(None);
        }
        let mut conn = self.connect("bench-stats", 64 << 10)?;
        let Some(json) = conn.stats()? else { return Ok(None) };
        let value: serde_json::Value =
            serde_json::from_str(&json).context("STATS_REPLY is not JSON")?;
        Ok(Some(value))
    }

    /// The `total` object of [`Target::stats`], errors recorded in `result`.
    pub fn totals_into(&self, result: &mut RunResult) {
        match self.stats() {
            Ok(v) => result.counters_after = v.and_then(|v| v.get("total").cloned()),
            Err(e) => result.errors.push(format!("STATS: {e:#}")),
        }
    }
}

/// CPU meters started at the beginning of a measured section.
#[derive(Debug)]
pub struct Meter {
    start: Instant,
    bench_cpu: f64,
    machine_busy: f64,
    broker: Option<(Proc, f64)>,
    /// [`Target::others`] and their CPU seconds at the start (NaN when
    /// unreadable).
    others: Vec<(Proc, f64)>,
}

impl Meter {
    /// Starts measuring now.
    pub fn start(target: &Target) -> Self {
        let broker = target.proc().and_then(|p| p.cpu_seconds().ok().map(|cpu| (p, cpu)));
        let machine_busy = sys::machine_busy_seconds().unwrap_or(f64::NAN);
        let others = target
            .others
            .iter()
            .map(|&pid| {
                let p = Proc { pid };
                (p, p.cpu_seconds().unwrap_or(f64::NAN))
            })
            .collect();
        Self {
            start: Instant::now(),
            bench_cpu: sys::self_cpu_seconds(),
            machine_busy,
            broker,
            others,
        }
    }

    /// When the section started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Stops measuring and fills in the usage fields of `result`. CPU
    /// seconds are turned into cores over `result.seconds`, the measured
    /// part (set it first; the time since [`Meter::start`] if it is 0).
    pub fn finish(self, result: &mut RunResult) {
        let secs = if result.seconds > 0.0 {
            result.seconds
        } else {
            self.start.elapsed().as_secs_f64().max(1e-9)
        };
        let cpus = sys::allowed_cpus();
        let cpu_s = sys::self_cpu_seconds() - self.bench_cpu;
        let busy = sys::machine_busy_seconds().unwrap_or(f64::NAN) - self.machine_busy;
        let mut others = busy - cpu_s;
        if let Some((proc, cpu0)) = self.broker {
            let broker_s = proc.cpu_seconds().map(|c| c - cpu0).unwrap_or(f64::NAN);
            others -= broker_s;
            result.broker_usage = Some(BrokerUsage {
                pid: proc.pid,
                cpu_s: broker_s,
                cpu_cores: broker_s / secs,
                peak_rss_kib: proc.peak_rss_kib().unwrap_or(0),
                rss_kib: proc.rss_kib().unwrap_or(0),
            });
        }
        for (proc, cpu0) in self.others {
            let cpu_s = proc.cpu_seconds().map(|c| c - cpu0).unwrap_or(f64::NAN);
            if !cpu_s.is_nan() {
                others -= cpu_s;
            }
            result.others_usage.push(ProcCpu { pid: proc.pid, cpu_s });
        }
        result.bench_usage = BenchUsage {
            cpu_s,
            cpus,
            utilization: cpu_s / (secs * cpus as f64),
            others_cores: (!others.is_nan()).then(|| (others / secs).max(0.0)),
        };
    }
}

/// Samples the broker's RSS every half second for at least `min` and until
/// the last 2 s of samples stay within 0.5% of each other, at most 15 s. A
/// broker may give an idle connection's pages back a moment after it went
/// quiet, so the figure is taken once it has settled.
pub fn settle_rss(proc: Proc, min: Duration) -> anyhow::Result<Vec<u64>> {
    let mut samples = vec![proc.rss_kib()?];
    let min_samples = (min.as_millis() / 500) as usize;
    for i in 1..=30 {
        std::thread::sleep(Duration::from_millis(500));
        samples.push(proc.rss_kib()?);
        let recent = &samples[samples.len().saturating_sub(5)..];
        let (lo, hi) = recent.iter().fold((u64::MAX, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        if i >= min_samples && recent.len() == 5 && (hi - lo) * 200 < hi.max(1) {
            break;
        }
    }
    Ok(samples)
}

/// Sleeps in short steps until `done` or `limit`; returns whether `done`.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The round of one broker and case with the median `rate` (the lower
/// middle of an even count), marked as standing for all `rounds`, with
/// every round's errors. `None` when there are no rounds.
pub fn median_round(rounds: &[RunResult], rate: impl Fn(&RunResult) -> f64) -> Option<RunResult> {
    let mut by_rate: Vec<&RunResult> = rounds.iter().collect();
    by_rate.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let mut merged = by_rate.get(rounds.len().checked_sub(1)? / 2).copied()?.clone();
    merged.params.rounds = Some(rounds.len() as u32);
    merged.params.round = None;
    merged.errors = round_errors(rounds.iter());
    Some(merged)
}

/// The errors of every round of one broker and case, in order, each
/// prefixed with its round (`round 2: ...`) when there are several.
pub fn round_errors<'a>(rounds: impl ExactSizeIterator<Item = &'a RunResult>) -> Vec<String> {
    let several = rounds.len() > 1;
    rounds
        .enumerate()
        .flat_map(|(i, r)| {
            r.errors
                .iter()
                .map(move |e| if several { format!("round {}: {e}", i + 1) } else { e.clone() })
        })
        .collect()
}
