//! Markdown report and target verdicts from a set of results.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;

use crate::{chart, driver::Kind, result::RunResult};

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

/// How latency was measured, from the latency results' parameters.
fn churn_note(results: &[RunResult]) -> Option<String> {
    results.iter().any(|r| r.churn.is_some()).then(|| {
        "churn: a 1 s churn before each measured one is not counted, so costs paid once \
         (code paged in on first use, allocator arenas, pools) are not taken for growth; \
         RSS before is read after it, RSS after once settled"
            .to_owned()
    })
}

fn latency_note(results: &[RunResult]) -> Option<String> {
    let lats: Vec<&RunResult> = results.iter().filter(|r| r.latency.is_some()).collect();
    if lats.is_empty() {
        return None;
    }
    let mut brokers: Vec<Kind> = Vec::new();
    let mut shapes: Vec<String> = Vec::new();
    for r in &lats {
        if !brokers.contains(&r.broker) {
            brokers.push(r.broker);
        }
        let secs = r.params.duration_s.map_or("?".into(), |s| s.to_string());
        let shape = match r.params.rounds.unwrap_or(1) {
            1 => format!("1 run of {secs} s"),
            n => format!("{n} rounds of {secs} s"),
        };
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
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

fn modes(results: &[RunResult]) -> Vec<Option<String>> {
    let mut modes: Vec<Option<String>> = Vec::new();
    for r in results {
        if !modes.contains(&r.mode) {
            modes.push(r.mode.clone());
        }
    }
    modes
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
    format!("{:.0}% of {} (+{:.1})", u.utilization * 100.0, u.cpus, u.others_cores)
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

/// One target line: (target, corecast figure, reference figure, measure,
/// verdict).
type Verdict = (String, String, String, String, Option<bool>);

fn throughput_target(
    runs: &[&RunResult],
    name: &str,
    workload: &str,
    subs: Option<usize>,
    factor: f64,
) -> Verdict {
    let pick = |r: &RunResult| subs.is_none() || r.params.subscribers == subs;
    let rate = |k| {
        find(runs, k, workload, pick)
            .and_then(|r| r.flow.as_ref().map(|f| (f.delivered_per_s, f.lost)))
    };
    let target = format!("{name}: delivered/s ≥ {factor}× nats-server's, nothing lost");
    match (rate(Kind::Corecast), rate(Kind::Nats)) {
        (Some((c, lost)), Some((n, _))) => {
            let ratio = c / n.max(1e-9);
            let measure = if lost > 0 {
                format!("{ratio:.2}× (corecast lost {lost})")
            } else {
                format!("{ratio:.2}×")
            };
            (target, si(c), si(n), measure, Some(ratio >= factor && lost == 0))
        }
        (c, n) => {
            (target, opt(c.map(|x| si(x.0))), opt(n.map(|x| si(x.0))), "not measured".into(), None)
        }
    }
}

fn opt(s: Option<String>) -> String {
    s.unwrap_or_else(|| "-".into())
}

fn latency_targets(runs: &[&RunResult]) -> [Verdict; 2] {
    let lat = |k| {
        find(runs, k, "latency", |r| r.params.rate == Some(10_000))
            .and_then(|r| r.latency.as_ref())
            .map(|l| l.latency)
    };
    let (c, n) = (lat(Kind::Corecast), lat(Kind::Nats));
    let p99 = "latency 10k msg/s: p99 ≤ nats-server's p99".to_owned();
    let p999 = "latency 10k msg/s: p99.9 ≤ 2 × nats-server's p99".to_owned();
    match (c, n) {
        (Some(c), Some(n)) => [
            (
                p99,
                format!("{:.1} µs", c.p99_us),
                format!("{:.1} µs", n.p99_us),
                format!("{:.2}×", c.p99_us / n.p99_us),
                Some(c.p99_us <= n.p99_us),
            ),
            (
                p999,
                format!("p99.9 {:.1} µs", c.p999_us),
                format!("2 × p99 = {:.1} µs", 2.0 * n.p99_us),
                format!("{:.2}×", c.p999_us / (2.0 * n.p99_us)),
                Some(c.p999_us <= 2.0 * n.p99_us),
            ),
        ],
        _ => [
            (p99, "-".into(), "-".into(), "not measured".into(), None),
            (p999, "-".into(), "-".into(), "not measured".into(), None),
        ],
    }
}

fn conns_target(runs: &[&RunResult]) -> Verdict {
    let name = "conns: broker RSS per idle subscribed connection ≤ 8 KiB".to_owned();
    let per = |k| {
        find(runs, k, "conns", |_| true)
            .and_then(|r| r.conns.as_ref())
            .map(|c| (c.rss_per_conn_bytes, c.opened))
    };
    let nats = opt(per(Kind::Nats).map(|(b, _)| format!("{:.2} KiB", b / 1024.0)));
    match per(Kind::Corecast) {
        Some((bytes, opened)) => (
            name,
            format!("{:.2} KiB ({opened} open)", bytes / 1024.0),
            nats,
            format!("{:.2} KiB", bytes / 1024.0),
            Some(bytes <= 8192.0 && opened > 0),
        ),
        None => (name, "-".into(), nats, "not measured".into(), None),
    }
}

fn idle_target(runs: &[&RunResult]) -> Verdict {
    let name = "idle: broker CPU with every connection open and silent ≤ 1% of a core".to_owned();
    let idle = |k| {
        find(runs, k, "conns", |_| true)
            .and_then(|r| r.conns.as_ref())
            .and_then(|c| c.idle_cpu_cores.map(|x| (x, c.opened)))
    };
    let pct = |x: f64| format!("{:.2}% of a core", x * 100.0);
    let nats = opt(idle(Kind::Nats).map(|(x, _)| pct(x)));
    match idle(Kind::Corecast) {
        Some((cores, opened)) => (
            name,
            format!("{} ({opened} open)", pct(cores)),
            nats,
            pct(cores),
            Some(cores <= 0.01 && opened > 0),
        ),
        None => (name, "-".into(), nats, "not measured".into(), None),
    }
}

fn churn_target(runs: &[&RunResult]) -> Verdict {
    let name =
        "churn: slots, buffers, tasks, subscriptions back to idle; RSS within 10%".to_owned();
    let nats = opt(find(runs, Kind::Nats, "churn", |_| true)
        .and_then(|r| r.churn.as_ref())
        .map(|c| format!("RSS ×{:.2}", c.rss_ratio)));
    match find(runs, Kind::Corecast, "churn", |_| true).and_then(|r| r.churn.as_ref()) {
        Some(c) => {
            let idle = c.back_to_idle.unwrap_or(false);
            let rss_ok = (c.rss_ratio - 1.0).abs() <= 0.10;
            let fig = format!("idle: {}, RSS ×{:.2}", if idle { "yes" } else { "no" }, c.rss_ratio);
            (name, fig.clone(), nats, fig, Some(idle && rss_ok))
        }
        None => (name, "-".into(), nats, "not measured".into(), None),
    }
}

fn targets(runs: &[&RunResult]) -> String {
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
    let mut md = String::from("\n### Targets for corecast\n\n| target | corecast | nats-server | measured | result |\n|---|--:|--:|--:|---|\n");
    for (target, c, n, measure, verdict) in verdicts {
        let v = match verdict {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        let _ = writeln!(md, "| {target} | {c} | {n} | {measure} | **{v}** |");
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

    #[test]
    fn si_units() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(45_600.0), "46k");
        assert_eq!(si(4_560.0), "4.6k");
        assert_eq!(si(456.0), "456");
    }
}
