//! `compare`: corecast against nats-server and redis-server on the same
//! matrix, each broker started fresh for every case (so its peak RSS is
//! that case's), results in `bench-results/<timestamp>/`.
//!
//! Every broker first runs the whole matrix at the settings it ships with
//! (only its address, and the core count in the one-core mode, are given),
//! then a small matrix with its limits on slow consumers raised ("tuned",
//! see the `*_TUNED_*` constants in `servers`). The matrix at the shipped
//! defaults ends with the routing cases (`wildcard`, `queue`, `request`,
//! `topics`; see `workload::routing`), for which corecast speaks protocol
//! 1.1 where it needs to; Redis skips `queue` and `request`, which it has
//! no means for.
//!
//! Latency cases, and the throughput cases of the main matrix at the
//! shipped defaults (fan-out 1->10, 1->1000, 1->1, pairs, the stalled
//! case with and without its stalled subscribers, and the scraped case
//! with and without its scraper), run in rounds
//! ([`THROUGHPUT_ROUNDS`]; [`QUICK_THROUGHPUT_ROUNDS`] with `--quick`),
//! interleaved across the brokers (round 1: corecast, nats, redis; round 2:
//! corecast, nats, redis; ...), each round against a freshly started
//! broker, so that noise on a shared machine and where the kernel places
//! the connections hit every broker alike. The rounds of one broker are
//! merged into one result, which goes to `results.jsonl`; the per-round
//! lines go to `rounds.jsonl`. Latency: percentiles over all rounds'
//! samples together ([`latency::merge_rounds`]). Throughput: the round with
//! the median delivered/s, with the most any round lost or cut, every
//! round's errors and the largest peak RSS of any round
//! ([`flow::merge_rounds`]), so that a loss in any round fails the case and
//! no memory figure comes from the leanest round. The stalled case and its
//! baseline run in [`PAIRED_ROUNDS`] pairs, each broker running one right
//! after the other, and its ratio is the median of the pairs' ratios
//! ([`stalled::paired_ratio`]). So do the scraped case (corecast only: a
//! fan-out with a scraper polling its monitoring port, see
//! [`scraped`]) and its run without the scraper, except that which of the
//! two runs first alternates from pair to pair.
//! Fan-out 1->5000 (whose point is the broker's memory, and whose
//! connection setup is long), the routing cases and the tuned matrix run
//! once per broker.
//!
//! Two more settings run matrices of their own: `--settings tls` (see
//! [`tls_matrix`]: corecast and nats-server at their defaults plus TLS,
//! with one certificate made for the run, see [`crate::pki`]) and
//! `--settings perms` (corecast alone without and with users and rules,
//! interleaved: see [`Perms`] and [`perms`]).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::ValueEnum;

use crate::{
    driver::Kind,
    report,
    result::{Params, RunResult},
    servers::{self, Placement, Settings, Setup},
    sys,
    workload::{
        churn, conns, flow,
        flow::FlowSpec,
        handshakes,
        latency::{self, Histograms, Round},
        perms,
        request::{self, RequestSpec},
        routing, scraped, stalled, Target,
    },
};

/// Which core placements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CoresMode {
    /// Broker on CPU 0 with one core's worth of threads, bench on CPU 1.
    One,
    /// Broker and bench unpinned.
    All,
    /// Both, one after the other.
    Both,
}

/// Which broker settings to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SettingsMode {
    /// Every broker as shipped: the whole matrix.
    Defaults,
    /// Limits on slow consumers raised: the small tuned matrix.
    Tuned,
    /// The whole matrix at defaults, then the tuned one.
    Both,
    /// The shipped defaults plus TLS (corecast on its TLS port, nats-server
    /// with a `tls` block, the same certificate): fan-out 1->10 and 1->1000
    /// and the handshake rate, corecast and nats-server only.
    Tls,
    /// corecast alone: fan-out 1->1000 without users against with users
    /// that each have 10 publish and 10 subscribe rules, the arms
    /// interleaved (A B A B ...), subscribers on the literal topic and on
    /// a wildcard that overlaps deny rules.
    Perms,
}

/// Options of `compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Core placements to measure [default: both; one with --quick].
    #[arg(long, value_enum)]
    cores_mode: Option<CoresMode>,
    /// Broker settings: the whole matrix at shipped defaults, and/or the
    /// small matrix with limits on slow consumers raised.
    #[arg(long, value_enum, default_value = "both")]
    settings: SettingsMode,
    /// A much smaller matrix (a small version of every case), one core
    /// mode unless --cores-mode says otherwise, to smoke-test the tool in
    /// about a minute.
    #[arg(long)]
    quick: bool,
    /// Brokers to compare (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "corecast,nats,redis")]
    brokers: Vec<Kind>,
    /// Parent directory of the timestamped results directory.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// The corecast binary (built with `cargo build --release -p corecast`
    /// when missing).
    #[arg(long, default_value = "target/release/corecast")]
    corecast_bin: PathBuf,
    /// Rebuild corecast even if the binary exists.
    #[arg(long)]
    build: bool,
    /// Install a missing nats-server or redis-server with apt-get (without
    /// it, compare stops and says what to install).
    #[arg(long)]
    install: bool,
    /// Bound on each run.
    #[arg(long, default_value_t = 60)]
    run_timeout_secs: u64,
    /// Only the cases whose name contains one of these (comma-separated),
    /// e.g. `fanout,latency 10k`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Nice value for the bench and the brokers it starts (inherited), e.g.
    /// -10 to be scheduled ahead of other work on a busy machine.
    #[arg(long, allow_hyphen_values = true)]
    nice: Option<i32>,
}

/// Rounds of each throughput case of the main matrix at the shipped
/// defaults (fan-out 1->5000 aside), per broker.
const THROUGHPUT_ROUNDS: u32 = 3;
/// [`THROUGHPUT_ROUNDS`] with `--quick`: enough to go through the merge.
const QUICK_THROUGHPUT_ROUNDS: u32 = 2;
/// Rounds of the stalled and scraped cases and their baselines, which run
/// in pairs: their figure is a ratio of two runs, each as noisy as any
/// throughput run.
const PAIRED_ROUNDS: u32 = 5;
/// Runs of each arm of the permissions case (`--settings perms`), A B A B;
/// each delivers 40 million messages (about 3 s at corecast's one-core
/// fan-out 1->1000 rate).
const PERMS_ROUNDS: u32 = 7;
/// TLS handshakes per round of the handshake-rate case, and its threads.
const HANDSHAKES: (u64, usize) = (2000, 4);

/// One cell of the matrix. A latency case runs `rounds` rounds of `secs`
/// each per broker, a throughput case `rounds` runs, interleaved across the
/// brokers, merged per broker.
#[derive(Debug, Clone)]
enum Case {
    Flow { spec: FlowSpec, rounds: u32 },
    Latency { rate: u64, secs: f64, size: usize, rounds: u32 },
    Conns(usize),
    Churn { secs: f64, threads: usize },
    Request(RequestSpec),
    Handshakes { count: u64, threads: usize, rounds: u32 },
}

impl Case {
    fn workload(&self) -> &'static str {
        match self {
            Case::Flow { spec, .. } => spec.workload,
            Case::Latency { .. } => "latency",
            Case::Conns(_) => "conns",
            Case::Churn { .. } => "churn",
            Case::Request(_) => "request",
            Case::Handshakes { .. } => "handshakes",
        }
    }

    fn name(&self) -> String {
        match self {
            Case::Flow { spec, .. } => spec.case.clone(),
            Case::Latency { rate, size, .. } => latency::case_name(*rate, *size),
            Case::Conns(n) => conns::case_name(*n),
            Case::Churn { secs, threads } => churn::case_name(*secs, *threads),
            Case::Request(spec) => spec.case(),
            Case::Handshakes { count, threads, .. } => handshakes::case_name(*count, *threads),
        }
    }

    /// The parameters a run of the case records (for results of runs that
    /// failed before the workload filled them in, and merged rounds).
    fn params(&self) -> Params {
        match self {
            Case::Flow { spec, .. } => spec.params(),
            Case::Latency { rate, secs, size, .. } => latency::params(*rate, *secs, *size),
            Case::Conns(n) => conns::params(*n),
            Case::Churn { secs, threads } => churn::params(*secs, *threads),
            Case::Request(spec) => spec.params(),
            Case::Handshakes { count, threads, .. } => handshakes::params(*count, *threads),
        }
    }

    /// Runs the case once; latency also returns its histograms.
    fn run(&self, target: &Target) -> anyhow::Result<(RunResult, Option<Histograms>)> {
        let alone = |r: RunResult| (r, None);
        match self {
            Case::Flow { spec, .. } => flow::run(target, spec).map(alone),
            Case::Latency { rate, secs, size, .. } => {
                latency::run_with_histograms(target, *rate, *secs, *size).map(|(r, h)| (r, Some(h)))
            }
            Case::Conns(n) => conns::run(target, *n).map(alone),
            Case::Churn { secs, threads } => churn::run(target, *secs, *threads).map(alone),
            Case::Request(spec) => request::run(target, spec).map(alone),
            Case::Handshakes { count, threads, .. } => {
                handshakes::run(target, *count, *threads).map(alone)
            }
        }
    }

    /// Runs per broker (1 for the cases that do not run in rounds).
    fn rounds(&self) -> u32 {
        match self {
            Case::Latency { rounds, .. }
            | Case::Flow { rounds, .. }
            | Case::Handshakes { rounds, .. } => (*rounds).max(1),
            _ => 1,
        }
    }

    /// Whether the case runs through [`run_rounds`]: latency always (its
    /// results record their rounds), other cases when they have several.
    fn in_rounds(&self) -> bool {
        matches!(self, Case::Latency { .. }) || self.rounds() > 1
    }

    /// Whether `with` is this stalled baseline's stalled case, or this
    /// scraped case's run with the scraper: the two run in pairs.
    fn pairs_with(&self, with: &Case) -> bool {
        match (self, with) {
            (Case::Flow { spec: base, rounds: a }, Case::Flow { spec: with, rounds: b }) => {
                a == b && (stalled::pairs_with(base, with) || scraped::pairs_with(base, with))
            }
            _ => false,
        }
    }

    /// Whether the two runs of its pair take turns at running first (the
    /// scraped case), rather than the baseline always first (stalled).
    fn alternates(&self) -> bool {
        matches!(self, Case::Flow { spec, .. } if spec.workload == "scraped")
    }

    /// Merges the rounds of one broker (see [`latency::merge_rounds`] and
    /// [`flow::merge_rounds`]).
    fn merge(&self, rounds: &[Round]) -> Option<RunResult> {
        match self {
            Case::Latency { .. } => latency::merge_rounds(rounds),
            Case::Handshakes { .. } => {
                handshakes::merge_rounds(&rounds.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>())
            }
            _ => flow::merge_rounds(&rounds.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>()),
        }
    }
}

/// A throughput case run once per broker.
fn once(spec: FlowSpec) -> Case {
    Case::Flow { spec, rounds: 1 }
}

/// The routing cases (protocol 1.1 features), or their `--quick`
/// versions: the same shapes with fewer messages, round trips and topics.
fn routing_cases(quick: bool) -> Vec<Case> {
    let (msgs, requests, per_conn) =
        if quick { (20_000, 1_000, 100) } else { (1_000_000, 20_000, 1000) };
    vec![
        once(routing::wildcard(10, 1000, msgs, 64)),
        once(routing::queue(8, msgs, 64)),
        Case::Request(RequestSpec { requesters: 8, responders: 4, requests, size: 64 }),
        once(routing::topics(100, per_conn, msgs, 64)),
    ]
}

/// The matrix every broker runs at its shipped defaults, or the `--quick`
/// one. A stalled case comes right after its run without stalled
/// subscribers, which it is measured against. The throughput cases run in
/// [`THROUGHPUT_ROUNDS`] (or [`QUICK_THROUGHPUT_ROUNDS`]) rounds, but for
/// fan-out 1->5000: its point is the broker's memory, its 5000
/// connections take long to set up.
fn matrix(quick: bool) -> Vec<Case> {
    let mut cases = base_matrix(quick);
    cases.extend(routing_cases(quick));
    cases
}

/// [`matrix`] without the routing cases.
fn base_matrix(quick: bool) -> Vec<Case> {
    let rounds = if quick { QUICK_THROUGHPUT_ROUNDS } else { THROUGHPUT_ROUNDS };
    let flow = |spec| Case::Flow { spec, rounds };
    if quick {
        let [unstalled, stalled] = stalled::specs(100, 100, 5_000, 1024);
        let [unscraped, scraped] = scraped::specs(1000, 3_000, 64, scraped::INTERVAL);
        return vec![
            flow(FlowSpec::fanout(1, 10, 20_000, 64)),
            flow(FlowSpec::fanout(1, 1000, 200, 64)),
            once(FlowSpec::fanout(1, 5000, 40, 64)),
            flow(FlowSpec::fanout(1, 1, 50_000, 64)),
            flow(FlowSpec::pairs(4, 10_000, 256)),
            flow(unstalled),
            flow(stalled),
            flow(unscraped),
            flow(scraped),
            Case::Latency { rate: 10_000, secs: 1.0, size: 64, rounds: 1 },
            Case::Conns(2000),
            Case::Churn { secs: 1.0, threads: 4 },
        ];
    }
    let [unstalled, stalled] = stalled::specs(100, 100, 20_000, 1024);
    // About 3 s of deliveries a round at corecast's fan-out 1->1000 rate.
    let [unscraped, scraped] = scraped::specs(1000, 40_000, 64, scraped::INTERVAL);
    let paired = |spec| Case::Flow { spec, rounds: PAIRED_ROUNDS };
    vec![
        flow(FlowSpec::fanout(1, 10, 1_000_000, 64)),
        flow(FlowSpec::fanout(1, 1000, 10_000, 64)),
        once(FlowSpec::fanout(1, 5000, 2_000, 64)),
        flow(FlowSpec::fanout(1, 1, 1_000_000, 64)),
        flow(FlowSpec::pairs(4, 250_000, 256)),
        paired(unstalled),
        paired(stalled),
        paired(unscraped),
        paired(scraped),
        Case::Latency { rate: 10_000, secs: 3.0, size: 64, rounds: 3 },
        Case::Latency { rate: 50_000, secs: 3.0, size: 64, rounds: 3 },
        Case::Conns(18_000),
        Case::Churn { secs: 20.0, threads: 4 },
    ]
}

/// The small matrix every broker runs tuned, or its `--quick` version.
fn tuned_matrix(quick: bool) -> Vec<Case> {
    if quick {
        return vec![
            once(FlowSpec::fanout(1, 10, 20_000, 64)),
            once(FlowSpec::fanout(1, 1000, 200, 64)),
            once(FlowSpec::pairs(4, 10_000, 256)),
        ];
    }
    vec![
        once(FlowSpec::fanout(1, 10, 1_000_000, 64)),
        once(FlowSpec::fanout(1, 1000, 10_000, 64)),
        once(FlowSpec::pairs(4, 250_000, 256)),
    ]
}

/// The TLS matrix (`--settings tls`), or its `--quick` version: fan-out
/// 1->10 and 1->1000 as in the main matrix, and the handshake rate, each in
/// rounds interleaved across the brokers.
fn tls_matrix(quick: bool) -> Vec<Case> {
    let rounds = if quick { QUICK_THROUGHPUT_ROUNDS } else { THROUGHPUT_ROUNDS };
    let flow = |spec| Case::Flow { spec, rounds };
    let (count, threads) = HANDSHAKES;
    if quick {
        return vec![
            flow(FlowSpec::fanout(1, 10, 20_000, 64)),
            flow(FlowSpec::fanout(1, 1000, 200, 64)),
            Case::Handshakes { count: 200, threads, rounds },
        ];
    }
    vec![
        flow(FlowSpec::fanout(1, 10, 1_000_000, 64)),
        flow(FlowSpec::fanout(1, 1000, 10_000, 64)),
        Case::Handshakes { count, threads, rounds },
    ]
}

fn settings_list(mode: SettingsMode) -> Vec<Settings> {
    match mode {
        SettingsMode::Defaults => vec![Settings::Defaults],
        SettingsMode::Tuned => vec![Settings::Tuned],
        SettingsMode::Both => vec![Settings::Defaults, Settings::Tuned],
        SettingsMode::Tls => vec![Settings::Tls],
        SettingsMode::Perms => vec![Settings::Users],
    }
}

/// `YYYYmmdd-HHMMSS` in UTC.
pub(crate) fn timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn placements(mode: CoresMode) -> Vec<Placement> {
    match mode {
        CoresMode::One => vec![Placement::OneCore],
        CoresMode::All => vec![Placement::AllCores],
        CoresMode::Both => vec![Placement::OneCore, Placement::AllCores],
    }
}

fn mode_name(p: Placement) -> &'static str {
    match p {
        Placement::OneCore => "one",
        Placement::AllCores => "all",
    }
}

/// Pins the bench (this thread and the threads it starts from now on).
fn place_bench(p: Placement) -> anyhow::Result<String> {
    match p {
        Placement::OneCore if sys::online_cpus() >= 2 => {
            sys::pin_current_thread(Some(&[1]))?;
            Ok("load generator pinned to CPU 1 (sched_setaffinity)".into())
        }
        Placement::OneCore => {
            sys::pin_current_thread(None)?;
            Ok("only one CPU online: load generator shares CPU 0 with the broker".into())
        }
        Placement::AllCores => {
            sys::pin_current_thread(None)?;
            Ok(format!("load generator unpinned ({} CPUs)", sys::online_cpus()))
        }
    }
}

/// Bounds of each run.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    settle: Duration,
}

/// Where and how a case runs: core placement and broker settings.
#[derive(Debug, Clone, Copy)]
struct Config {
    placement: Placement,
    settings: Settings,
}

/// Runs one case (one round of it, `round` of [`Case::rounds`]) against one
/// freshly started broker.
fn run_case(
    case: &Case,
    round: u32,
    kind: Kind,
    config: Config,
    setup: &Setup,
    limits: Limits,
) -> Round {
    let Limits { timeout, settle } = limits;
    let Config { placement, settings } = config;
    let mode = mode_name(placement);
    let tuned = match settings {
        Settings::Defaults => String::new(),
        other => format!("{}-", other.name()),
    };
    let mut label =
        format!("{mode}-{tuned}{kind}-{}", case.name().replace([' ', '>', '/', '+'], "_"));
    if case.rounds() > 1 {
        label.push_str(&format!("-round{round}"));
    }
    let outcome =
        servers::start(kind, placement, settings, setup, &label).and_then(|mut server| {
            let target = Target {
                kind,
                addr: server.addr,
                http: server.http,
                pid: Some(server.pid),
                timeout,
                mode: Some(mode.into()),
                settings: Some(settings.name().into()),
                settle,
                access: server.access.clone(),
                others: Vec::new(),
            };
            let result = case.run(&target);
            let alive = server.alive();
            let tail = server.log_tail();
            server.stop();
            let (mut result, histograms) = result?;
            if !alive {
                result.errors.push(format!("{kind} was not running at the end of the run: {tail}"));
            }
            Ok((result, histograms))
        });
    outcome.unwrap_or_else(|e| {
        let target = Target {
            kind,
            addr: ([127, 0, 0, 1], 0).into(),
            http: None,
            pid: None,
            timeout,
            mode: Some(mode.into()),
            settings: Some(settings.name().into()),
            settle,
            access: Default::default(),
            others: Vec::new(),
        };
        let mut r = target.result(case.workload(), case.name(), case.params());
        r.errors.push(format!("{e:#}"));
        (r, None)
    })
}

/// Runs every round of `cases` (one case, or a baseline and the case
/// measured against it, which pair up: see [`Case::pairs_with`]) against
/// every broker, rounds outermost (corecast, nats, redis, corecast, ...;
/// in a pair, each broker runs the baseline and then the other case, or,
/// for a pair that [`Case::alternates`], the other case first in even
/// rounds), and merges the rounds of each case and broker into one result:
/// every broker's for the first case, then for the second. The second
/// case's ratios are those of its paired rounds ([`stalled::paired_ratio`],
/// [`scraped::set_paired`]).
/// Per-round lines go to `rounds_file`.
fn run_rounds(
    cases: &[&Case],
    brokers: &[Kind],
    config: Config,
    setup: &Setup,
    limits: Limits,
    rounds_file: &Path,
    progress: impl Fn(&Case, Kind, u32),
) -> anyhow::Result<Vec<RunResult>> {
    let total = cases.iter().map(|c| c.rounds()).max().unwrap_or(1);
    let mut per_case: Vec<Vec<Vec<Round>>> = vec![vec![Vec::new(); brokers.len()]; cases.len()];
    let alternate = cases.len() == 2 && cases.iter().all(|c| c.alternates());
    for round in 1..=total {
        for (i, &kind) in brokers.iter().enumerate() {
            for c in run_order(cases.len(), alternate, round) {
                let (case, rounds) = (cases[c], &mut per_case[c]);
                progress(case, kind, round);
                let (mut result, histograms) = run_case(case, round, kind, config, setup, limits);
                result.params.rounds = Some(total);
                result.params.round = Some(round);
                result.emit(Some(rounds_file))?;
                rounds[i].push((result, histograms));
            }
        }
    }
    let mut merged = Vec::new();
    for (c, case) in cases.iter().enumerate() {
        for (i, rounds) in per_case[c].iter().enumerate() {
            let Some(mut result) = case.merge(rounds) else { continue };
            result.params = Params { rounds: Some(total), ..case.params() };
            if let Some(base) = c.checked_sub(1) {
                let runs =
                    |rounds: &[Round]| rounds.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
                let (base, with) = (runs(&per_case[base][i]), runs(rounds));
                if let Some(figures) = result.stalled.as_mut() {
                    figures.ratio = stalled::paired_ratio(&base, &with);
                }
                scraped::set_paired(&mut result, &base, &with);
            }
            merged.push(result);
        }
    }
    Ok(merged)
}

/// The brokers of `wanted` that run at `mode` at all.
fn brokers_for(mode: SettingsMode, wanted: &[Kind]) -> Vec<Kind> {
    let runs = |kind: &&Kind| match mode {
        SettingsMode::Tls => **kind != Kind::Redis,
        SettingsMode::Perms => **kind == Kind::Corecast,
        _ => true,
    };
    wanted.iter().filter(runs).copied().collect()
}

/// Why `kind` skips `workload` at `settings`, if it does.
fn unsupported(kind: Kind, settings: Settings, workload: &str) -> Option<&'static str> {
    match (kind, settings) {
        (Kind::Redis, Settings::Tls) => Some("the bench has no TLS for redis"),
        (Kind::Nats | Kind::Redis, Settings::Users) => Some("the permissions case is corecast's"),
        _ => routing::unsupported(kind, workload),
    }
}

/// The permissions A/B (`--settings perms`): corecast at its shipped
/// defaults (arm A, "no users") against corecast with [`perms::USERS`]
/// users and their rules (arm B, "users"), fan-out 1->1000 with the
/// subscribers on the literal topic, then on a wildcard that overlaps deny
/// rules; each shape in [`PERMS_ROUNDS`] rounds of A then B, every run
/// against a freshly started broker.
struct Perms {
    quick: bool,
    placement: Placement,
    limits: Limits,
    wall: Instant,
}

impl Perms {
    /// Runs both shapes; returns the merged result of each arm (arm A's
    /// labelled with settings `no-users`) and adds the medians and their
    /// ratios to `notes`.
    fn run(
        &self,
        setup: &Setup,
        rounds_file: &Path,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Vec<RunResult>> {
        let (rounds, msgs) =
            if self.quick { (QUICK_THROUGHPUT_ROUNDS, 200) } else { (PERMS_ROUNDS, 40_000) };
        let mode = mode_name(self.placement);
        let mut merged = Vec::new();
        for spec in perms::specs(1000, msgs, 64) {
            let case = Case::Flow { spec, rounds };
            let mut arms: [Vec<RunResult>; 2] = [Vec::new(), Vec::new()];
            for round in 1..=rounds {
                for (arm, settings) in [Settings::Defaults, Settings::Users].into_iter().enumerate()
                {
                    eprintln!(
                        "corecast-bench: [{:>5.0}s] {mode} / perms {} / corecast / {} / round {round} of {rounds}",
                        self.wall.elapsed().as_secs_f64(),
                        perms_label(arm),
                        case.name(),
                    );
                    let config = Config { placement: self.placement, settings };
                    let (mut result, _) =
                        run_case(&case, round, Kind::Corecast, config, setup, self.limits);
                    result.settings = Some(perms_label(arm).into());
                    result.params.rounds = Some(rounds);
                    result.params.round = Some(round);
                    result.emit(Some(rounds_file))?;
                    arms[arm].push(result);
                }
            }
            if let Some(summary) = perms::summary(&arms[0], &arms[1]) {
                notes.push(format!("perms, {mode}, {}: {summary}", case.name()));
            }
            for (arm, runs) in arms.iter().enumerate() {
                if let Some(mut result) = flow::merge_rounds(runs) {
                    result.params = Params { rounds: Some(rounds), ..case.params() };
                    result.settings = Some(perms_label(arm).into());
                    merged.push(result);
                }
            }
        }
        Ok(merged)
    }
}

/// The settings label of each arm of the permissions case.
fn perms_label(arm: usize) -> &'static str {
    if arm == 0 {
        "no-users"
    } else {
        "users"
    }
}

/// The order in which the `n` cases of a group run in `round` (1-based):
/// as given, or for a pair that alternates, the second first in even
/// rounds.
fn run_order(n: usize, alternate: bool, round: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if alternate && round.is_multiple_of(2) {
        order.reverse();
    }
    order
}

/// Runs the comparison.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let wall = Instant::now();
    let cores_mode =
        args.cores_mode.unwrap_or(if args.quick { CoresMode::One } else { CoresMode::Both });
    let mut notes = vec![format!(
        "command: `corecast-bench compare --cores-mode {:?} --settings {:?} --brokers {}{}` on {} CPUs",
        cores_mode,
        args.settings,
        args.brokers.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        if args.quick { " --quick" } else { "" },
        sys::online_cpus()
    )
    .to_lowercase()];
    notes.push(format!("load average (1, 5, 15 min) before the runs: {}", sys::loadavg()));
    let (nofile_before, nofile) = sys::raise_nofile_to_hard()?;
    notes.push(format!(
        "open-file limit of the bench: {nofile} (soft limit raised from {nofile_before} to the hard limit)"
    ));
    // The TLS matrix has no redis, the permissions case is corecast's
    // alone: brokers they leave out need not be installed.
    let brokers = brokers_for(args.settings, &args.brokers);
    for kind in args.brokers.iter().filter(|k| !brokers.contains(k)) {
        let mode = format!("{:?}", args.settings).to_lowercase();
        eprintln!("corecast-bench: {kind}: skipped at --settings {mode}");
    }
    notes.extend(servers::ensure_installed(&brokers, args.install)?);
    if brokers.contains(&Kind::Corecast) {
        notes.extend(servers::ensure_corecast(&args.corecast_bin, args.build)?);
    }
    let dir = args.out.join(timestamp(SystemTime::now()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let pki = match args.settings {
        SettingsMode::Tls => {
            let pki = crate::pki::Pki::generate(&dir.join("tls"))?;
            notes.push(format!(
                "TLS: a CA and a server certificate for 127.0.0.1 and localhost (ECDSA P-256) made with rcgen for this run, in `{}`; both brokers serve the same certificate and key; the bench (rustls, ring provider, as in corecast; TLS 1.3, its records then opened and sealed in place with ring's AEAD under the negotiated keys) trusts the CA and makes a full handshake on every connection (no session resumption); the handshake table gives the version and cipher suite negotiated",
                pki.ca.parent().map_or(String::new(), |d| d.display().to_string())
            ));
            Some(pki)
        }
        _ => None,
    };
    let setup = Setup { corecast_bin: args.corecast_bin.clone(), dir: dir.clone(), pki };
    let results_file = dir.join("results.jsonl");
    let rounds_file = dir.join("rounds.jsonl");
    let limits = Limits {
        timeout: Duration::from_secs(args.run_timeout_secs),
        settle: Duration::from_secs(if args.quick { 1 } else { 5 }),
    };
    let wanted =
        |c: &Case| args.only.is_empty() || args.only.iter().any(|o| c.name().contains(o.as_str()));
    if let Some(nice) = args.nice {
        sys::set_nice(nice)?;
        notes.push(format!("bench and brokers run at nice {nice}"));
    }
    let mut results: Vec<RunResult> = Vec::new();
    for placement in placements(cores_mode) {
        let mode = mode_name(placement);
        notes.push(format!("cores {mode}: {}", place_bench(placement)?));
        for settings in settings_list(args.settings) {
            for kind in &brokers {
                notes.push(format!(
                    "cores {mode}, {}: {}",
                    settings.name(),
                    servers::describe(*kind, placement, settings)
                ));
            }
            let config = Config { placement, settings };
            if settings == Settings::Users {
                let ab = Perms { quick: args.quick, placement, limits, wall };
                let merged = ab.run(&setup, &rounds_file, &mut notes)?;
                for result in merged {
                    result.emit(Some(&results_file))?;
                    results.push(result);
                }
                continue;
            }
            let cases = match settings {
                Settings::Defaults => matrix(args.quick),
                Settings::Tuned => tuned_matrix(args.quick),
                Settings::Tls => tls_matrix(args.quick),
                Settings::Users => unreachable!("run above"),
            };
            let selected: Vec<&Case> = cases.iter().filter(|c| wanted(c)).collect();
            let mut next = 0;
            while let Some(&case) = selected.get(next) {
                // A stalled or scraped case runs round by round with its
                // baseline, in pairs.
                let group: Vec<&Case> = match selected.get(next + 1) {
                    Some(&with) if case.in_rounds() && case.pairs_with(with) => vec![case, with],
                    _ => vec![case],
                };
                next += group.len();
                let progress = |case: &Case, kind: Kind, round: u32| {
                    let rounds = case.rounds();
                    eprintln!(
                        "corecast-bench: [{:>5.0}s] {mode} / {} / {kind} / {}{}",
                        wall.elapsed().as_secs_f64(),
                        settings.name(),
                        case.name(),
                        if rounds > 1 {
                            format!(" / round {round} of {rounds}")
                        } else {
                            String::new()
                        }
                    );
                };
                let brokers: Vec<Kind> = brokers
                    .iter()
                    .copied()
                    .filter(|&kind| match unsupported(kind, settings, case.workload()) {
                        Some(why) => {
                            eprintln!(
                                "corecast-bench: {mode} / {kind} / {}: skipped: {why}",
                                case.name()
                            );
                            false
                        }
                        None => true,
                    })
                    .collect();
                // A stalled or scraped case's baseline (merged, when in
                // rounds) is among the results already.
                let mut record = |mut result: RunResult| {
                    stalled::attach_baseline(&mut result, &results);
                    scraped::attach_baseline(&mut result, &results);
                    result.emit(Some(&results_file))?;
                    results.push(result);
                    anyhow::Ok(())
                };
                if case.in_rounds() {
                    let merged = run_rounds(
                        &group,
                        &brokers,
                        config,
                        &setup,
                        limits,
                        &rounds_file,
                        progress,
                    )?;
                    merged.into_iter().try_for_each(record)?;
                } else {
                    for &kind in &brokers {
                        progress(case, kind, 1);
                        record(run_case(case, 1, kind, config, &setup, limits).0)?;
                    }
                }
            }
        }
    }
    sys::pin_current_thread(None)?;
    notes.push("every broker is started fresh for each case (for each round of a case run in rounds) and stopped (SIGTERM, then SIGKILL after 5 s) right after it".into());
    notes.push(format!("load average after the runs: {}", sys::loadavg()));
    notes.push(format!("wall time of the whole comparison: {:.0} s", wall.elapsed().as_secs_f64()));
    let md = report::write_all(&results, &dir, &notes)?;
    println!("\n{md}");
    println!("results: {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_has_its_workloads_name_and_params() {
        let all = [matrix(false), matrix(true), tuned_matrix(false), tuned_matrix(true)];
        for case in all.iter().flatten() {
            let params = serde_json::to_string(&case.params()).expect("json");
            assert_ne!(params, "{}", "{}", case.name());
            assert!(case.name().starts_with(case.workload()), "{}", case.name());
        }
        let Case::Flow { spec, .. } = &matrix(false)[1] else { panic!("a flow case") };
        assert_eq!(once(spec.clone()).params().subscribers, Some(1000));
    }

    #[test]
    fn quick_has_a_small_version_of_every_case() {
        let shape = |c: &Case| match c {
            Case::Flow { spec, .. } => {
                (spec.workload, spec.params().subscribers, spec.params().stalled)
            }
            other => (other.workload(), None, None),
        };
        for full in [matrix, tuned_matrix] {
            let quick: Vec<_> = full(true).iter().map(shape).collect();
            for case in full(false) {
                let wanted = match shape(&case) {
                    // The quick matrix opens fewer idle connections.
                    ("conns", ..) => ("conns", None, None),
                    s => s,
                };
                assert!(quick.contains(&wanted), "{} has no quick version", case.name());
            }
        }
        // Every stalled case comes right after its run without stalled
        // subscribers.
        for m in [matrix(false), matrix(true)] {
            for (i, case) in m.iter().enumerate() {
                if let Case::Flow { spec, .. } = case {
                    if spec.workload == "stalled" && spec.stalled > 0 {
                        let Case::Flow { spec: base, .. } = &m[i - 1] else {
                            panic!("a flow case")
                        };
                        assert_eq!((base.workload, base.stalled), ("stalled", 0));
                    }
                }
            }
            // And every scraped case with a scraper right after the same
            // fan-out without one, in pairs.
            let with: Vec<usize> =
                (0..m.len()).filter(|&i| m[i].params().scrape_ms.unwrap_or(0) > 0).collect();
            assert_eq!(with.len(), 1);
            assert!(m[with[0] - 1].pairs_with(&m[with[0]]) && m[with[0]].in_rounds());
        }
    }

    #[test]
    fn routing_cases_run_at_the_shipped_defaults() {
        let routing = ["wildcard", "queue", "request", "topics"];
        for quick in [false, true] {
            let names: Vec<&str> = matrix(quick).iter().map(Case::workload).collect();
            assert!(routing.iter().all(|w| names.contains(w)), "{names:?}");
            assert!(tuned_matrix(quick).iter().all(|c| !routing.contains(&c.workload())));
        }
        let Some(Case::Flow { spec: topics, .. }) = matrix(false).into_iter().last() else {
            panic!("topics last")
        };
        assert_eq!(topics.params().subscriptions, Some(100_000));
    }

    #[test]
    fn throughput_cases_at_the_shipped_defaults_run_in_rounds() {
        let rounds_of = |cases: Vec<Case>| -> Vec<(String, u32, bool)> {
            cases
                .iter()
                .filter(|c| matches!(c, Case::Flow { .. }))
                .map(|c| (c.name(), c.rounds(), c.in_rounds()))
                .collect()
        };
        for (quick, n) in [(false, THROUGHPUT_ROUNDS), (true, QUICK_THROUGHPUT_ROUNDS)] {
            for (name, rounds, in_rounds) in rounds_of(matrix(quick)) {
                let routing = ["wildcard", "queue", "topics"].iter().any(|w| name.starts_with(w));
                let wanted = match name {
                    _ if routing || name.starts_with("fanout 1->5000") => 1,
                    _ if ["stalled", "scraped"].iter().any(|w| name.starts_with(w)) && !quick => {
                        PAIRED_ROUNDS
                    }
                    _ => n,
                };
                assert_eq!(rounds, wanted, "{name}");
                assert_eq!(in_rounds, wanted > 1, "{name}");
            }
            assert!(rounds_of(tuned_matrix(quick)).iter().all(|(_, r, _)| *r == 1));
        }
        assert_eq!(THROUGHPUT_ROUNDS, 3);
        let names: Vec<String> = rounds_of(matrix(false))
            .into_iter()
            .filter(|(_, r, _)| *r == 3)
            .map(|(name, ..)| name)
            .collect();
        assert_eq!(names.len(), 4, "fanout 1->10, 1->1000, 1->1, pairs: {names:?}");
        // The stalled and scraped cases and their baselines pair up, round
        // by round; only the scraped pair takes turns at running first.
        let m = matrix(false);
        for workload in ["stalled", "scraped"] {
            let pair: Vec<usize> = (0..m.len()).filter(|&i| m[i].workload() == workload).collect();
            assert_eq!(pair.len(), 2);
            assert!(m[pair[0]].pairs_with(&m[pair[1]]) && pair[1] == pair[0] + 1);
            assert!(!m[pair[1]].pairs_with(&m[pair[0]]));
            assert!(m[pair[0]].in_rounds() && m[pair[0]].rounds() == PAIRED_ROUNDS);
            assert_eq!(m[pair[0]].alternates(), workload == "scraped");
        }
        assert!(!m[0].pairs_with(&m[1]), "two fan-outs do not pair");
        // Latency goes through the rounds in every matrix, also with one.
        assert!(matrix(true).iter().any(|c| matches!(c, Case::Latency { .. }) && c.in_rounds()));
        assert!(!matrix(false).iter().any(|c| matches!(c, Case::Conns(_)) && c.in_rounds()));
    }

    #[test]
    fn an_alternating_pair_takes_turns_at_running_first() {
        let orders: Vec<Vec<usize>> = (1..=5).map(|round| run_order(2, true, round)).collect();
        assert_eq!(orders, [vec![0, 1], vec![1, 0], vec![0, 1], vec![1, 0], vec![0, 1]]);
        assert!((1..=5).all(|round| run_order(2, false, round) == [0, 1]));
        assert_eq!(run_order(1, false, 2), [0]);
        // The scraped case runs on corecast at its shipped defaults, with
        // about 3 s of deliveries per round.
        let Some(Case::Flow { spec, .. }) =
            matrix(false).into_iter().find(|c| c.params().scrape_ms.unwrap_or(0) > 0)
        else {
            panic!("a scraped case")
        };
        assert_eq!(spec.scrape, Some(scraped::INTERVAL));
        assert_eq!((spec.params().subscribers, spec.msgs), (Some(1000), 40_000));
        assert!(tuned_matrix(false).iter().all(|c| c.workload() != "scraped"));
        assert!(routing::unsupported(Kind::Nats, "scraped").is_some());
        assert!(routing::unsupported(Kind::Corecast, "scraped").is_none());
    }

    #[test]
    fn the_tls_matrix_has_fan_outs_and_handshakes_in_rounds() {
        for quick in [false, true] {
            let m = tls_matrix(quick);
            let names: Vec<String> = m.iter().map(Case::name).collect();
            assert_eq!(m.len(), 3, "{names:?}");
            assert!(
                names[0].starts_with("fanout 1->10 ") && names[1].starts_with("fanout 1->1000 ")
            );
            assert_eq!(m[2].workload(), "handshakes");
            assert!(m.iter().all(|c| c.in_rounds() && c.name().starts_with(c.workload())));
            let Case::Handshakes { count, .. } = m[2] else { panic!("handshakes") };
            assert_eq!(count, if quick { 200 } else { HANDSHAKES.0 });
        }
        assert!(unsupported(Kind::Redis, Settings::Tls, "fanout").is_some());
        assert!(unsupported(Kind::Nats, Settings::Tls, "handshakes").is_none());
        assert!(unsupported(Kind::Nats, Settings::Users, "fanout").is_some());
        assert!(unsupported(Kind::Corecast, Settings::Users, "fanout").is_none());
        assert_eq!(settings_list(SettingsMode::Perms), [Settings::Users]);
        let all = Kind::ALL;
        assert_eq!(brokers_for(SettingsMode::Tls, &all), [Kind::Corecast, Kind::Nats]);
        assert_eq!(brokers_for(SettingsMode::Perms, &all), [Kind::Corecast]);
        assert_eq!(brokers_for(SettingsMode::Both, &all), all);
        assert_eq!((perms_label(0), perms_label(1)), ("no-users", "users"));
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(t), "20231114-221320");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101-000000");
    }
}
