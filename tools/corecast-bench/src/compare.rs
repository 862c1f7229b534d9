//! `compare`: corecast against nats-server and redis-server on the same
//! matrix, each broker started fresh for every case (so its peak RSS is
//! that case's), results in `bench-results/<timestamp>/`.
//!
//! Latency cases run in rounds, interleaved across the brokers (round 1:
//! corecast, nats, redis; round 2: corecast, nats, redis; ...), each round
//! against a freshly started broker, so that noise on a shared machine and
//! where the kernel places the connections hit every broker alike. The
//! rounds of one broker are merged into one result (percentiles over all
//! samples together); the per-round lines go to `rounds.jsonl`.

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
    servers::{self, Placement, Setup},
    sys,
    workload::{
        churn, conns, flow,
        flow::FlowSpec,
        latency::{self, Histograms, Round},
        Target,
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

/// Options of `compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Core placements to measure.
    #[arg(long, value_enum, default_value = "both")]
    cores_mode: CoresMode,
    /// A much smaller matrix, to smoke-test the tool in under a minute.
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

/// One cell of the matrix. A latency case runs `rounds` rounds of `secs`
/// each per broker, interleaved across the brokers, merged per broker.
#[derive(Debug, Clone)]
enum Case {
    Flow(FlowSpec),
    Latency { rate: u64, secs: f64, size: usize, rounds: u32 },
    Conns(usize),
    Churn { secs: f64, threads: usize },
}

impl Case {
    fn workload(&self) -> &'static str {
        match self {
            Case::Flow(spec) => spec.workload,
            Case::Latency { .. } => "latency",
            Case::Conns(_) => "conns",
            Case::Churn { .. } => "churn",
        }
    }

    fn name(&self) -> String {
        match self {
            Case::Flow(spec) => spec.case.clone(),
            Case::Latency { rate, size, .. } => latency::case_name(*rate, *size),
            Case::Conns(n) => conns::case_name(*n),
            Case::Churn { secs, threads } => churn::case_name(*secs, *threads),
        }
    }

    /// The parameters a run of the case records (for results of runs that
    /// failed before the workload filled them in, and merged rounds).
    fn params(&self) -> Params {
        match self {
            Case::Flow(spec) => spec.params(),
            Case::Latency { rate, secs, size, .. } => latency::params(*rate, *secs, *size),
            Case::Conns(n) => conns::params(*n),
            Case::Churn { secs, threads } => churn::params(*secs, *threads),
        }
    }

    /// Runs the case once; latency also returns its histograms.
    fn run(&self, target: &Target) -> anyhow::Result<(RunResult, Option<Histograms>)> {
        let alone = |r: RunResult| (r, None);
        match self {
            Case::Flow(spec) => flow::run(target, spec).map(alone),
            Case::Latency { rate, secs, size, .. } => {
                latency::run_with_histograms(target, *rate, *secs, *size).map(|(r, h)| (r, Some(h)))
            }
            Case::Conns(n) => conns::run(target, *n).map(alone),
            Case::Churn { secs, threads } => churn::run(target, *secs, *threads).map(alone),
        }
    }

    /// Runs per broker (latency rounds; 1 for the other cases).
    fn rounds(&self) -> u32 {
        match self {
            Case::Latency { rounds, .. } => (*rounds).max(1),
            _ => 1,
        }
    }
}

/// The matrix of the issue, or the `--quick` one.
fn matrix(quick: bool) -> Vec<Case> {
    if quick {
        return vec![
            Case::Flow(FlowSpec::fanout(1, 10, 20_000, 64)),
            Case::Flow(FlowSpec::fanout(1, 100, 1_000, 64)),
            Case::Flow(FlowSpec::fanout(1, 1, 50_000, 64)),
            Case::Flow(FlowSpec::pairs(4, 10_000, 256)),
            Case::Latency { rate: 10_000, secs: 1.0, size: 64, rounds: 1 },
            Case::Conns(300),
            Case::Churn { secs: 1.0, threads: 4 },
        ];
    }
    vec![
        Case::Flow(FlowSpec::fanout(1, 10, 1_000_000, 64)),
        Case::Flow(FlowSpec::fanout(1, 1000, 10_000, 64)),
        Case::Flow(FlowSpec::fanout(1, 1, 1_000_000, 64)),
        Case::Flow(FlowSpec::pairs(4, 250_000, 256)),
        Case::Latency { rate: 10_000, secs: 3.0, size: 64, rounds: 3 },
        Case::Latency { rate: 50_000, secs: 3.0, size: 64, rounds: 3 },
        Case::Conns(5000),
        Case::Churn { secs: 20.0, threads: 4 },
    ]
}

/// `YYYYmmdd-HHMMSS` in UTC.
fn timestamp(now: SystemTime) -> String {
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

/// Runs one case (one round of it, `round` of [`Case::rounds`]) against one
/// freshly started broker.
fn run_case(
    case: &Case,
    round: u32,
    kind: Kind,
    placement: Placement,
    setup: &Setup,
    limits: Limits,
) -> Round {
    let Limits { timeout, settle } = limits;
    let mode = mode_name(placement);
    let mut label = format!("{mode}-{kind}-{}", case.name().replace([' ', '>', '/'], "_"));
    if case.rounds() > 1 {
        label.push_str(&format!("-round{round}"));
    }
    let outcome = servers::start(kind, placement, setup, &label).and_then(|mut server| {
        let target = Target {
            kind,
            addr: server.addr,
            pid: Some(server.pid),
            timeout,
            mode: Some(mode.into()),
            settle,
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
            pid: None,
            timeout,
            mode: Some(mode.into()),
            settle,
        };
        let mut r = target.result(case.workload(), case.name(), case.params());
        r.errors.push(format!("{e:#}"));
        (r, None)
    })
}

/// Runs every round of `case` against every broker, rounds outermost
/// (corecast, nats, redis, corecast, ...), and merges the rounds of each
/// broker into one result. Per-round lines go to `rounds_file`.
fn run_rounds(
    case: &Case,
    brokers: &[Kind],
    placement: Placement,
    setup: &Setup,
    limits: Limits,
    rounds_file: &Path,
    progress: impl Fn(Kind, u32),
) -> anyhow::Result<Vec<RunResult>> {
    let total = case.rounds();
    let mut per_broker: Vec<Vec<Round>> = vec![Vec::new(); brokers.len()];
    for round in 1..=total {
        for (i, &kind) in brokers.iter().enumerate() {
            progress(kind, round);
            let (mut result, histograms) = run_case(case, round, kind, placement, setup, limits);
            result.params.rounds = Some(total);
            result.params.round = Some(round);
            result.emit(Some(rounds_file))?;
            per_broker[i].push((result, histograms));
        }
    }
    Ok(per_broker
        .iter()
        .filter_map(|rounds| latency::merge_rounds(rounds))
        .map(|mut merged| {
            merged.params = Params { rounds: Some(total), ..case.params() };
            merged
        })
        .collect())
}

/// Runs the comparison.
pub fn run(args: &CompareArgs) -> anyhow::Result<()> {
    let wall = Instant::now();
    let mut notes = vec![format!(
        "command: `corecast-bench compare --cores-mode {:?} --brokers {}{}` on {} CPUs",
        args.cores_mode,
        args.brokers.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        if args.quick { " --quick" } else { "" },
        sys::online_cpus()
    )
    .to_lowercase()];
    notes.push(format!("load average (1, 5, 15 min) before the runs: {}", sys::loadavg()));
    notes.extend(servers::ensure_installed(&args.brokers)?);
    if args.brokers.contains(&Kind::Corecast) {
        notes.extend(servers::ensure_corecast(&args.corecast_bin, args.build)?);
    }
    let dir = args.out.join(timestamp(SystemTime::now()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let setup = Setup { corecast_bin: args.corecast_bin.clone(), dir: dir.clone() };
    let results_file = dir.join("results.jsonl");
    let rounds_file = dir.join("rounds.jsonl");
    let limits = Limits {
        timeout: Duration::from_secs(args.run_timeout_secs),
        settle: Duration::from_secs(if args.quick { 1 } else { 5 }),
    };
    let cases: Vec<Case> = matrix(args.quick)
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| c.name().contains(o.as_str())))
        .collect();
    if let Some(nice) = args.nice {
        sys::set_nice(nice)?;
        notes.push(format!("bench and brokers run at nice {nice}"));
    }
    let mut results = Vec::new();
    for placement in placements(args.cores_mode) {
        notes.push(format!("cores {}: {}", mode_name(placement), place_bench(placement)?));
        for kind in &args.brokers {
            notes.push(format!(
                "cores {}: {}",
                mode_name(placement),
                servers::describe(*kind, placement)
            ));
        }
        for case in &cases {
            let progress = |kind: Kind, round: u32| {
                let rounds = case.rounds();
                eprintln!(
                    "corecast-bench: [{:>5.0}s] {} / {kind} / {}{}",
                    wall.elapsed().as_secs_f64(),
                    mode_name(placement),
                    case.name(),
                    if rounds > 1 {
                        format!(" / round {round} of {rounds}")
                    } else {
                        String::new()
                    }
                );
            };
            if let Case::Latency { .. } = case {
                let merged = run_rounds(
                    case,
                    &args.brokers,
                    placement,
                    &setup,
                    limits,
                    &rounds_file,
                    progress,
                )?;
                for result in merged {
                    result.emit(Some(&results_file))?;
                    results.push(result);
                }
                continue;
            }
            for &kind in &args.brokers {
                progress(kind, 1);
                let (result, _) = run_case(case, 1, kind, placement, &setup, limits);
                result.emit(Some(&results_file))?;
                results.push(result);
            }
        }
    }
    sys::pin_current_thread(None)?;
    notes.push("every broker is started fresh for each case (for each round of a latency case) and stopped (SIGTERM, then SIGKILL after 5 s) right after it".into());
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
        for case in matrix(false).iter().chain(&matrix(true)) {
            let params = serde_json::to_string(&case.params()).expect("json");
            assert_ne!(params, "{}", "{}", case.name());
            assert!(case.name().starts_with(case.workload()), "{}", case.name());
        }
        let Case::Flow(spec) = &matrix(false)[1] else { panic!("a flow case") };
        assert_eq!(Case::Flow(spec.clone()).params().subscribers, Some(1000));
    }

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(t), "20231114-221320");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101-000000");
    }
}
