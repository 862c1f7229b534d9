//! Markdown report and target verdicts from a set of results.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;

use crate::{
    chart,
    driver::Kind,
    hist::Summary,
    result::{ChurnFigures, ConnsFigures, RunResult},
};

/// Writes `report.md` and the charts for `results` into `dir`; `notes` go
/// under the title. Returns the Markdown.
pub fn write_all(results: &[RunResult], dir: &Path, notes: &[String]) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut md = String::from("# corecast-bench comparison\n\n");
    md.push_str("\"bench CPU\" is the load generator's CPU use as a share of the CPUs it may use (near 100% = the generator, not the broker, was the limit), then in parentheses the cores used meanwhile by other processes on the machine (noise).\n\n");
    for note in notes.iter().cloned().chain(latency_note(results)).chain(churn_note(results)) {
        let _ = writeln!(md, "- {note}");
    }
    for mode in modes(results) {
        let runs: Vec<&RunResult> = results.iter().filter(|r| r.mode == mode).collect();
        let name = mode.as_deref().unwrap_or("standalone");
        let _ = writeln!(md, "\n## {}\n", mode_title(mode.as_deref()));
        md.push_str(&tables(&runs));
        md.push_str(&targets(&runs));
        let charts = [
            (
                format!("throughput-{name}.png"),
                chart::throughput(&runs, &dir.join(format!("throughput-{name}.png"))),
            ),
            (
                format!("latency-{name}.png"),
                chart::latency(&runs, &dir.join(format!("latency-{name}.png"))),
            ),
        ];
        for (file, drawn) in charts {
            match drawn {
                Ok(true) => {
                    let _ = writeln!(md, "\n![{file}]({file})");
                }
                Ok(false) => {}
                Err(e) => {
                    let _ = writeln!(md, "\n(chart {file} failed: {e:#})");
                }
            }
        }
    }
    std::fs::write(dir.join("report.md"), &md).context("write report.md")?;
    Ok(md)
}

/// How churn was measured, when there are churn results.
fn churn_note(results: &[RunResult]) -> Option<String> {
    results.iter().any(|r| r.churn.is_some()).then(|| {
        "churn: a 1 s churn before each measured one is not counted, so costs paid once \
         (code paged in on first use, allocator arenas, pools) are not taken for growth; \
         RSS before is read after it, RSS after once settled"
            .to_owned()
    })
}

/// How latency was measured, from the latency results' parameters.
fn latency_note(results: &[RunResult]) -> Option<String> {
    let lats: Vec<&RunResult> = results.iter().filter(|r| r.latency.is_some()).collect();
    if lats.is_empty() {
        return None;
    }
    let brokers = distinct(lats.iter().map(|r| r.broker));
    let shapes = distinct(lats.iter().map(|r| {
        let secs = r.params.duration_s.map_or("?".into(), |s| s.to_string());
        match r.params.rounds.unwrap_or(1) {
            1 => format!("1 run of {secs} s"),
            n => format!("{n} rounds of {secs} s"),
        }
    }));
    let warmup = "each run starts with a 0.5 s warm-up at the same rate that is not recorded";
    let shapes = shapes.join(" / ");
    if lats.iter().all(|r| r.params.round.is_some()) {
        return Some(format!(
            "latency: one line per round ({shapes} per broker, interleaved, each round against a freshly started broker), percentiles of that round alone; {warmup}"
        ));
    }
    if lats.iter().all(|r| r.params.rounds.unwrap_or(1) <= 1) {
        return Some(format!("latency: {shapes} per broker; {warmup}"));
    }
    let order = if brokers.len() > 1 {
        let names: Vec<&str> = brokers.iter().map(|k| k.name()).collect();
        format!(", interleaved ({}, {}, ...)", names.join(", "), names[0])
    } else {
        String::new()
    };
    Some(format!(
        "latency: {shapes} per broker{order}, each round against a freshly started broker; percentiles over all rounds' samples together; {warmup}"
    ))
}

/// Rounds and seconds of a latency result, e.g. `3 × 3 s`, or which round
/// a per-round result is, e.g. `round 2 of 3, 3 s`.
fn runs_col(r: &RunResult) -> String {
    let secs = r.params.duration_s.map_or("?".into(), |s| s.to_string());
    let rounds = r.params.rounds.unwrap_or(1);
    match r.params.round {
        Some(round) => format!("round {round} of {rounds}, {secs} s"),
        None => format!("{rounds} × {secs} s"),
    }
}

/// `items` without repeats, in order of first appearance.
pub fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn modes(results: &[RunResult]) -> Vec<Option<String>> {
    distinct(results.iter().map(|r| r.mode.clone()))
}

fn mode_title(mode: Option<&str>) -> String {
    match mode {
        Some("one") => "One core: broker pinned to CPU 0, load generator pinned to CPU 1".into(),
        Some("all") => "All cores: broker and load generator unpinned, sharing every CPU".into(),
        Some(other) => format!("Mode {other}"),
        None => "Standalone runs".into(),
    }
}

/// Human number: 1.23M, 456k, 789.
pub fn si(v: f64) -> String {
    match v.abs() {
        x if x >= 1e6 => format!("{:.2}M", v / 1e6),
        x if x >= 1e4 => format!("{:.0}k", v / 1e3),
        x if x >= 1e3 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn broker_cols(r: &RunResult) -> String {
    let bench = bench_col(r);
    match &r.broker_usage {
        Some(u) => {
            format!("{:.2} ({:.2} cores) | {} | {bench}", u.cpu_s, u.cpu_cores, mib(u.peak_rss_kib))
        }
        None => format!("- | - | {bench}"),
    }
}

/// The bench's CPU use, and other processes' (noise), e.g. `38% of 1 (+0.2)`.
fn bench_col(r: &RunResult) -> String {
    let u = &r.bench_usage;
    let others = u.others_cores.map_or("-".into(), |x| format!("{x:.1}"));
    format!("{:.0}% of {} (+{others})", u.utilization * 100.0, u.cpus)
}

fn errors_col(r: &RunResult) -> String {
    match r.errors.first() {
        None => String::new(),
        Some(first) => {
            let mut e: String = first.chars().take(90).collect();
            if r.errors.len() > 1 {
                let _ = write!(e, " (+{} more)", r.errors.len() - 1);
            }
            e.replace('|', "/")
        }
    }
}

fn tables(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let flows: Vec<_> = runs.iter().filter(|r| r.flow.is_some()).collect();
    if !flows.is_empty() {
        md.push_str("### Throughput\n\n| case | broker | published/s | delivered/s | lost | dup | gaps | broker CPU s | broker peak RSS MiB | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
        for r in flows {
            let Some(f) = &r.flow else { continue };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.case,
                r.broker,
                si(f.published_per_s),
                si(f.delivered_per_s),
                f.lost,
                f.duplicates,
                f.gaps,
                broker_cols(r),
                errors_col(r)
            );
        }
    }
    md.push_str(&latency_table(runs));
    md.push_str(&conns_table(runs));
    md.push_str(&churn_table(runs));
    md
}

fn latency_table(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let lats: Vec<_> = runs.iter().filter(|r| r.latency.is_some()).collect();
    if lats.is_empty() {
        return md;
    }
    md.push_str("\n### Latency (µs; headline = receive time − actual send time)\n\n| case | broker | rounds × s | p50 | p90 | p99 | p99.9 | max | from intended p99 / p99.9 | publisher lateness p99 / max | received / sent | broker CPU s | broker peak RSS MiB | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in lats {
        let Some(l) = &r.latency else { continue };
        let (s, i, p) = (&l.latency, &l.from_intended, &l.publisher_lateness);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} / {:.1} | {:.1} / {:.0} | {} / {} | {} | {} |",
            r.case,
            r.broker,
            runs_col(r),
            s.p50_us,
            s.p90_us,
            s.p99_us,
            s.p999_us,
            s.max_us,
            i.p99_us,
            i.p999_us,
            p.p99_us,
            p.max_us,
            l.received,
            l.sent,
            broker_cols(r),
            errors_col(r)
        );
    }
    md
}

fn conns_table(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let conns: Vec<_> = runs.iter().filter(|r| r.conns.is_some()).collect();
    if conns.is_empty() {
        return md;
    }
    md.push_str("\n### Idle subscribed connections\n\n| case | broker | opened | RSS before MiB | RSS just opened MiB | RSS settled MiB (after s) | RSS per connection (settled) | broker CPU while idle | open time s | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in conns {
        let Some(c) = &r.conns else { continue };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} ({:.1}) | {:.2} KiB | {} | {:.2} | {} |",
            r.case,
            r.broker,
            c.opened,
            mib(c.rss_before_kib),
            mib(c.rss_samples_kib.first().copied().unwrap_or(c.rss_after_kib)),
            mib(c.rss_after_kib),
            c.rss_samples_kib.len().saturating_sub(1) as f64 * 0.5,
            c.rss_per_conn_bytes / 1024.0,
            c.idle_cpu_cores.map_or("-".into(), |x| format!("{:.1}% of a core", x * 100.0)),
            r.seconds,
            errors_col(r)
        );
    }
    md
}

fn churn_table(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let churns: Vec<_> = runs.iter().filter(|r| r.churn.is_some()).collect();
    if churns.is_empty() {
        return md;
    }
    md.push_str("\n### Connect / subscribe / abort churn\n\n| case | broker | cycles/s | failures | RSS before → after MiB | ratio | corecast gauges after (slots, buffers, tasks, subs) | back to idle | bench CPU | problems |\n|---|---|--:|--:|--:|--:|---|---|--:|---|\n");
    for r in churns {
        let Some(c) = &r.churn else { continue };
        let gauges = c.gauges_after.as_ref().map_or("-".into(), |g| {
            crate::workload::churn::GAUGES
                .iter()
                .map(|k| g.get(*k).map_or("?".into(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} → {} | {:.2} | {} | {} | {} | {} |",
            r.case,
            r.broker,
            si(c.connects_per_s),
            c.failures,
            mib(c.rss_before_kib),
            mib(c.rss_after_kib),
            c.rss_ratio,
            gauges,
            c.back_to_idle.map_or("-".into(), |b| if b {
                "yes".to_string()
            } else {
                "NO".to_string()
            }),
            bench_col(r),
            errors_col(r)
        );
    }
    md
}

/// Finds the run of `broker` for a workload whose parameters satisfy `pick`.
fn find<'a>(
    runs: &[&'a RunResult],
    broker: Kind,
    workload: &str,
    pick: impl Fn(&RunResult) -> bool,
) -> Option<&'a RunResult> {
    runs.iter().copied().find(|r| r.broker == broker && r.workload == workload && pick(r))
}

/// How a target came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    /// corecast (or the reference) was not run for it.
    NotMeasured,
    /// nats-server's run failed: nothing to compare with.
    NatsFailed,
}

impl Outcome {
    fn of(pass: bool) -> Self {
        if pass {
            Outcome::Pass
        } else {
            Outcome::Fail
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::NotMeasured => "n/a",
            Outcome::NatsFailed => "n/a (nats failed)",
        }
    }
}

/// One target line: (target, corecast figure, reference figure, measure,
/// outcome).
type Verdict = (String, String, String, String, Outcome);

/// One broker's figure for a target.
#[derive(Debug)]
enum Side<T> {
    /// The broker was not run for it.
    NotRun,
    /// It ran but recorded errors or has no samples: why.
    Failed(String),
    /// It ran cleanly; its figure.
    Measured(T),
}

impl<T> Side<T> {
    /// The side of `run`: measured only if it has no errors and `figure`
    /// finds samples in it.
    fn of(run: Option<&RunResult>, figure: impl FnOnce(&RunResult) -> Option<T>) -> Self {
        match run {
            None => Side::NotRun,
            Some(r) if !r.errors.is_empty() => {
                Side::Failed(format!("failed ({} errors)", r.errors.len()))
            }
            Some(r) => {
                figure(r).map_or_else(|| Side::Failed("has no samples".into()), Side::Measured)
            }
        }
    }

    fn show(&self, f: impl FnOnce(&T) -> String) -> String {
        match self {
            Side::NotRun => "-".into(),
            Side::Failed(_) => "failed".into(),
            Side::Measured(v) => f(v),
        }
    }
}

/// The measure and outcome when a side has no figure: corecast not run is
/// not measured, corecast failed is a FAIL, nats-server failed leaves
/// nothing to compare with.
fn missing<T, U>(c: &Side<T>, n: &Side<U>) -> (String, Outcome) {
    match (c, n) {
        (Side::Failed(why), _) => (format!("corecast {why}"), Outcome::Fail),
        (Side::Measured(_), Side::Failed(why)) => (format!("nats {why}"), Outcome::NatsFailed),
        _ => ("not measured".into(), Outcome::NotMeasured),
    }
}

fn throughput_target(
    runs: &[&RunResult],
    name: &str,
    workload: &str,
    subs: Option<usize>,
    factor: f64,
) -> Verdict {
    let pick = |r: &RunResult| subs.is_none() || r.params.subscribers == subs;
    let side = |k| {
        Side::of(find(runs, k, workload, pick), |r| {
            r.flow.as_ref().filter(|f| f.delivered > 0).map(|f| (f.delivered_per_s, f.lost))
        })
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let target = format!("{name}: delivered/s ≥ {factor}× nats-server's, nothing lost");
    let (measure, outcome) = match (&c, &n) {
        (Side::Measured((c, lost)), Side::Measured((n, _))) => {
            let ratio = c / n.max(1e-9);
            let measure = if *lost > 0 {
                format!("{ratio:.2}× (corecast lost {lost})")
            } else {
                format!("{ratio:.2}×")
            };
            (measure, Outcome::of(ratio >= factor && *lost == 0))
        }
        _ => missing(&c, &n),
    };
    (target, c.show(|x| si(x.0)), n.show(|x| si(x.0)), measure, outcome)
}

fn latency_targets(runs: &[&RunResult]) -> [Verdict; 2] {
    let side = |k| {
        Side::of(find(runs, k, "latency", |r| r.params.rate == Some(10_000)), |r| {
            r.latency.as_ref().map(|l| l.latency).filter(|s| s.count > 0)
        })
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let p99 = "latency 10k msg/s: p99 ≤ nats-server's p99".to_owned();
    let p999 = "latency 10k msg/s: p99.9 ≤ 2 × nats-server's p99".to_owned();
    match (&c, &n) {
        (Side::Measured(c), Side::Measured(n)) => [
            (
                p99,
                format!("{:.1} µs", c.p99_us),
                format!("{:.1} µs", n.p99_us),
                format!("{:.2}×", c.p99_us / n.p99_us),
                Outcome::of(c.p99_us <= n.p99_us),
            ),
            (
                p999,
                format!("p99.9 {:.1} µs", c.p999_us),
                format!("2 × p99 = {:.1} µs", 2.0 * n.p99_us),
                format!("{:.2}×", c.p999_us / (2.0 * n.p99_us)),
                Outcome::of(c.p999_us <= 2.0 * n.p99_us),
            ),
        ],
        _ => {
            let (measure, outcome) = missing(&c, &n);
            let p99_fig = |s: &Side<Summary>| s.show(|s| format!("{:.1} µs", s.p99_us));
            let (cf, nf) = (p99_fig(&c), p99_fig(&n));
            [
                (p99, cf.clone(), nf.clone(), measure.clone(), outcome),
                (p999, cf, nf, measure, outcome),
            ]
        }
    }
}

/// The conns figures of a run that opened every connection it was asked
/// for (and no errors: see [`Side::of`]).
fn conns_side(runs: &[&RunResult], k: Kind) -> Side<ConnsFigures> {
    Side::of(find(runs, k, "conns", |_| true), |r| {
        r.conns.clone().filter(|c| c.opened > 0 && Some(c.opened) == r.params.conns)
    })
}

fn conns_target(runs: &[&RunResult]) -> Verdict {
    let name = "conns: broker RSS per idle subscribed connection ≤ 8 KiB".to_owned();
    let (c, n) = (conns_side(runs, Kind::Corecast), conns_side(runs, Kind::Nats));
    let kib = |c: &ConnsFigures| format!("{:.2} KiB", c.rss_per_conn_bytes / 1024.0);
    let (measure, outcome) = match &c {
        Side::Measured(c) => (kib(c), Outcome::of(c.rss_per_conn_bytes <= 8192.0)),
        _ => missing(&c, &n),
    };
    let fig = c.show(|c| format!("{} ({} open)", kib(c), c.opened));
    (name, fig, n.show(kib), measure, outcome)
}

fn idle_target(runs: &[&RunResult]) -> Verdict {
    let name = "idle: broker CPU with every connection open and silent ≤ 1% of a core".to_owned();
    let idle = |k| match conns_side(runs, k) {
        Side::Measured(c) => match c.idle_cpu_cores {
            Some(cores) => Side::Measured((cores, c.opened)),
            None => Side::Failed("has no idle CPU figure".into()),
        },
        Side::Failed(why) => Side::Failed(why),
        Side::NotRun => Side::NotRun,
    };
    let (c, n) = (idle(Kind::Corecast), idle(Kind::Nats));
    let pct = |x: f64| format!("{:.2}% of a core", x * 100.0);
    let (measure, outcome) = match &c {
        Side::Measured((cores, _)) => (pct(*cores), Outcome::of(*cores <= 0.01)),
        _ => missing(&c, &n),
    };
    let fig = c.show(|(cores, opened)| format!("{} ({opened} open)", pct(*cores)));
    (name, fig, n.show(|x| pct(x.0)), measure, outcome)
}

fn churn_target(runs: &[&RunResult]) -> Verdict {
    let name =
        "churn: slots, buffers, tasks, subscriptions back to idle; RSS within 10%".to_owned();
    let side = |k| {
        Side::of(find(runs, k, "churn", |_| true), |r| r.churn.clone().filter(|c| c.cycles > 0))
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let fig = |c: &ChurnFigures| {
        let idle = c.back_to_idle.unwrap_or(false);
        format!("idle: {}, RSS ×{:.2}", if idle { "yes" } else { "no" }, c.rss_ratio)
    };
    let (measure, outcome) = match &c {
        Side::Measured(c) => {
            let idle = c.back_to_idle.unwrap_or(false);
            let rss_ok = (c.rss_ratio - 1.0).abs() <= 0.10;
            (fig(c), Outcome::of(idle && rss_ok))
        }
        _ => missing(&c, &n),
    };
    (name, c.show(fig), n.show(|c| format!("RSS ×{:.2}", c.rss_ratio)), measure, outcome)
}

fn target_verdicts(runs: &[&RunResult]) -> Vec<Verdict> {
    let mut verdicts = vec![
        throughput_target(runs, "fanout 1→10", "fanout", Some(10), 2.0),
        throughput_target(runs, "fanout 1→1000", "fanout", Some(1000), 2.0),
        throughput_target(runs, "fanout 1→1", "fanout", Some(1), 1.5),
        throughput_target(runs, "pairs", "pairs", None, 1.5),
    ];
    verdicts.extend(latency_targets(runs));
    verdicts.push(conns_target(runs));
    verdicts.push(idle_target(runs));
    verdicts.push(churn_target(runs));
    verdicts
}

fn targets(runs: &[&RunResult]) -> String {
    let mut md = String::from("\n### Targets for corecast\n\n| target | corecast | nats-server | measured | result |\n|---|--:|--:|--:|---|\n");
    for (target, c, n, measure, outcome) in target_verdicts(runs) {
        let _ = writeln!(md, "| {target} | {c} | {n} | {measure} | **{}** |", outcome.label());
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_note_says_how_latency_was_measured() {
        let target = crate::workload::Target {
            kind: Kind::Corecast,
            addr: ([127, 0, 0, 1], 0).into(),
            pid: None,
            timeout: std::time::Duration::from_secs(1),
            mode: Some("one".into()),
            settings: Some("defaults".into()),
            settle: std::time::Duration::from_secs(1),
        };
        let params = crate::result::Params {
            rate: Some(10_000),
            duration_s: Some(3.0),
            rounds: Some(3),
            ..Default::default()
        };
        let mut results = Vec::new();
        for kind in [Kind::Corecast, Kind::Nats, Kind::Redis] {
            let mut r = crate::workload::Target { kind, ..target.clone() }.result(
                "latency",
                "latency 10k/s 64B".into(),
                params.clone(),
            );
            r.latency = Some(Default::default());
            results.push(r);
        }
        let note = latency_note(&results).expect("a note");
        assert!(
            note.starts_with("latency: 3 rounds of 3 s per broker, interleaved (corecast, nats, redis, corecast, ...), each round against a freshly started broker; percentiles over all rounds' samples together"),
            "{note}"
        );
        fn runs_of(rs: &[RunResult]) -> Vec<&RunResult> {
            rs.iter().collect()
        }
        assert!(latency_table(&runs_of(&results))
            .contains("| latency 10k/s 64B | corecast | 3 × 3 s |"));
        results[0].params.round = Some(2);
        assert!(latency_table(&runs_of(&results)).contains("| corecast | round 2 of 3, 3 s |"));
        results.iter_mut().for_each(|r| r.params.round = Some(1));
        assert!(latency_note(&results).expect("a note").starts_with("latency: one line per round"));
        results.iter_mut().for_each(|r| (r.params.rounds, r.params.round) = (None, None));
        assert!(latency_note(&results)
            .expect("a note")
            .starts_with("latency: 1 run of 3 s per broker;"));
        assert!(latency_note(&[]).is_none());
    }

    /// A result of `kind` for `workload` with `params`, nothing measured.
    fn run_of(kind: Kind, workload: &str, params: crate::result::Params) -> RunResult {
        let target = crate::workload::Target {
            kind,
            addr: ([127, 0, 0, 1], 0).into(),
            pid: None,
            timeout: std::time::Duration::from_secs(1),
            mode: Some("one".into()),
            settings: Some("defaults".into()),
            settle: std::time::Duration::from_secs(1),
        };
        target.result(workload, workload.into(), params)
    }

    /// A 10k msg/s latency result with `count` samples and this p99.
    fn latency_run(kind: Kind, p99_us: f64, count: u64) -> RunResult {
        let params = crate::result::Params { rate: Some(10_000), ..Default::default() };
        let mut r = run_of(kind, "latency", params);
        let latency = Summary { count, p99_us, p999_us: p99_us * 1.5, ..Default::default() };
        r.latency = Some(crate::result::LatencyFigures { latency, ..Default::default() });
        r
    }

    /// A pairs result delivering `delivered` messages at `per_s`.
    fn pairs_run(kind: Kind, per_s: f64, delivered: u64) -> RunResult {
        let params = crate::result::Params { subscribers: Some(4), ..Default::default() };
        let mut r = run_of(kind, "pairs", params);
        let flow = crate::result::Flow {
            delivered_per_s: per_s,
            delivered,
            expected: delivered,
            ..Default::default()
        };
        r.flow = Some(flow);
        r
    }

    fn outcomes<const N: usize>(verdicts: [Verdict; N]) -> [Outcome; N] {
        verdicts.map(|v| v.4)
    }

    fn latency_outcomes(c: Option<RunResult>, n: Option<RunResult>) -> [Outcome; 2] {
        let runs: Vec<RunResult> = c.into_iter().chain(n).collect();
        outcomes(latency_targets(&runs.iter().collect::<Vec<_>>()))
    }

    fn pairs_outcome(c: RunResult, n: RunResult) -> Outcome {
        throughput_target(&[&c, &n], "pairs", "pairs", None, 1.5).4
    }

    fn errored(mut r: RunResult) -> RunResult {
        r.errors.push("subscriber: broker closed the subscriber connection".into());
        r
    }

    #[test]
    fn latency_targets_pass_or_fail_on_clean_runs() {
        let nats = || Some(latency_run(Kind::Nats, 20.0, 1000));
        use Outcome::*;
        assert_eq!(
            latency_outcomes(Some(latency_run(Kind::Corecast, 10.0, 1000)), nats()),
            [Pass, Pass]
        );
        assert_eq!(
            latency_outcomes(Some(latency_run(Kind::Corecast, 25.0, 1000)), nats()),
            [Fail, Pass]
        );
    }

    #[test]
    fn failed_latency_runs_never_pass() {
        use Outcome::*;
        let good = |k| Some(latency_run(k, 10.0, 1000));
        // corecast with errors, or without samples: FAIL.
        let c = errored(latency_run(Kind::Corecast, 10.0, 1000));
        assert_eq!(latency_outcomes(Some(c), good(Kind::Nats)), [Fail, Fail]);
        let c = latency_run(Kind::Corecast, 0.0, 0);
        assert_eq!(latency_outcomes(Some(c), good(Kind::Nats)), [Fail, Fail]);
        // A failed nats-server leaves nothing to compare with.
        let n = errored(latency_run(Kind::Nats, 10.0, 1000));
        assert_eq!(latency_outcomes(good(Kind::Corecast), Some(n)), [NatsFailed, NatsFailed]);
        let n = latency_run(Kind::Nats, 0.0, 0);
        assert_eq!(latency_outcomes(good(Kind::Corecast), Some(n)), [NatsFailed, NatsFailed]);
        // Not run at all.
        assert_eq!(latency_outcomes(None, good(Kind::Nats)), [NotMeasured, NotMeasured]);
        assert_eq!(latency_outcomes(good(Kind::Corecast), None), [NotMeasured, NotMeasured]);
    }

    #[test]
    fn throughput_targets() {
        use Outcome::*;
        let (c, n) = (Kind::Corecast, Kind::Nats);
        assert_eq!(pairs_outcome(pairs_run(c, 3e6, 100), pairs_run(n, 1e6, 100)), Pass);
        assert_eq!(pairs_outcome(pairs_run(c, 1e6, 100), pairs_run(n, 1e6, 100)), Fail);
        // nats-server delivered nothing, or failed: no pass against it.
        assert_eq!(pairs_outcome(pairs_run(c, 3e6, 100), pairs_run(n, 0.0, 0)), NatsFailed);
        let failed_nats = errored(pairs_run(n, 1e3, 100));
        assert_eq!(pairs_outcome(pairs_run(c, 3e6, 100), failed_nats), NatsFailed);
        // corecast failed or lost messages: FAIL.
        assert_eq!(pairs_outcome(errored(pairs_run(c, 3e6, 100)), pairs_run(n, 1e6, 100)), Fail);
        assert_eq!(pairs_outcome(pairs_run(c, 0.0, 0), pairs_run(n, 1e6, 100)), Fail);
        let mut lossy = pairs_run(c, 3e6, 100);
        lossy.flow.as_mut().expect("flow").lost = 1;
        assert_eq!(pairs_outcome(lossy, pairs_run(n, 1e6, 100)), Fail);
    }

    #[test]
    fn conns_targets_need_every_connection() {
        let conns = |opened, per_conn, idle| {
            let params = crate::result::Params { conns: Some(100), ..Default::default() };
            let mut r = run_of(Kind::Corecast, "conns", params);
            r.conns = Some(ConnsFigures {
                opened,
                rss_per_conn_bytes: per_conn,
                idle_cpu_cores: Some(idle),
                ..Default::default()
            });
            r
        };
        let verdicts = |r: &RunResult| [conns_target(&[r]).4, idle_target(&[r]).4];
        assert_eq!(verdicts(&conns(100, 4096.0, 0.0)), [Outcome::Pass, Outcome::Pass]);
        assert_eq!(verdicts(&conns(100, 9000.0, 0.5)), [Outcome::Fail, Outcome::Fail]);
        assert_eq!(verdicts(&conns(60, 4096.0, 0.0)), [Outcome::Fail, Outcome::Fail]);
        assert_eq!(verdicts(&errored(conns(100, 4096.0, 0.0))), [Outcome::Fail, Outcome::Fail]);
        assert_eq!(conns_target(&[]).4, Outcome::NotMeasured);
    }

    #[test]
    fn si_units() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(45_600.0), "46k");
        assert_eq!(si(4_560.0), "4.6k");
        assert_eq!(si(456.0), "456");
    }
}
