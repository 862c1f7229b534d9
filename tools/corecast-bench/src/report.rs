//! Markdown report and target verdicts from a set of results.

mod routing;

use std::{fmt::Write as _, path::Path};

use anyhow::Context;

use crate::{
    chart,
    driver::Kind,
    hist::Summary,
    result::{ChurnFigures, ConnsFigures, Flow, RunResult},
    workload::{scraped, stalled},
};

/// Writes `report.md` and the charts for `results` into `dir`; `notes` go
/// under the title. Returns the Markdown.
pub fn write_all(results: &[RunResult], dir: &Path, notes: &[String]) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut md = String::from("# corecast-bench comparison\n\n");
    md.push_str("Each broker runs first at the settings it ships with (\"shipped defaults\": the main tables, and the targets), then, in sections labelled \"tuned\", on a small matrix with its limits on slow consumers raised (settings in the notes). \"lost\" counts deliveries owed to reading subscribers that never arrived; \"cut\" counts reading subscribers whose connection the broker ended (error frame, end of stream or reset). A run that lost messages or cut a subscriber cannot pass a target.\n\n");
    md.push_str("\"bench CPU\" is the load generator's CPU use as a share of the CPUs it may use (near 100% = the generator, not the broker, was the limit), then in parentheses the cores used meanwhile by other processes on the machine (noise).\n\n");
    let generated = throughput_note(results)
        .into_iter()
        .chain(latency_note(results))
        .chain(churn_note(results));
    for note in notes.iter().cloned().chain(generated).chain(routing::notes(results)) {
        let _ = writeln!(md, "- {note}");
    }
    let results = with_baselines(results);
    for (mode, settings) in sections(&results) {
        let runs: Vec<&RunResult> =
            results.iter().filter(|r| r.mode == mode && r.settings == settings).collect();
        let mut name = mode.as_deref().unwrap_or("standalone").to_owned();
        if let Some(s) = settings.as_deref().filter(|s| *s != "defaults") {
            let _ = write!(name, "-{s}");
        }
        let _ = writeln!(md, "\n## {}\n", section_title(mode.as_deref(), settings.as_deref()));
        md.push_str(&summary_table(&runs));
        md.push_str(&tables(&runs));
        if matches!(settings.as_deref(), None | Some("defaults")) {
            md.push_str(&targets(&runs));
        }
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

/// `results`, each stalled run with the figures of its run without stalled
/// subscribers attached, and each scraped run with those of its run
/// without the scraper (results files written before they were attached
/// get them here).
fn with_baselines(results: &[RunResult]) -> Vec<RunResult> {
    let mut out = results.to_vec();
    for r in out.iter_mut().filter(|r| r.stalled.as_ref().is_none_or(|s| s.ratio.is_none())) {
        stalled::attach_baseline(r, results);
    }
    for r in out.iter_mut().filter(|r| r.scrape.as_ref().is_none_or(|s| s.ratio.is_none())) {
        scraped::attach_baseline(r, results);
    }
    out
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

/// How the throughput cases that ran in rounds were measured, from the
/// throughput results' parameters; `None` when every one ran once.
fn throughput_note(results: &[RunResult]) -> Option<String> {
    let flows: Vec<&RunResult> = results.iter().filter(|r| is_flow(r)).collect();
    let rounds = |r: &RunResult| r.params.rounds.unwrap_or(1);
    let counts = distinct(flows.iter().map(|r| rounds(r)).filter(|&n| n > 1));
    if counts.is_empty() {
        return None;
    }
    let shapes = counts
        .iter()
        .map(|&n| {
            let cases = distinct(flows.iter().filter(|r| rounds(r) == n).map(|r| r.case.as_str()));
            format!("{} ({n} rounds)", cases.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    if flows.iter().all(|r| r.params.round.is_some()) {
        return Some(format!(
            "throughput: one line per round of {shapes}, interleaved across the brokers, each round against a freshly started broker"
        ));
    }
    let brokers = distinct(flows.iter().map(|r| r.broker));
    let order = if brokers.len() > 1 {
        let names: Vec<&str> = brokers.iter().map(|k| k.name()).collect();
        format!(", interleaved ({}, {}, ...)", names.join(", "), names[0])
    } else {
        String::new()
    };
    let mut stalled = if flows.iter().any(|r| r.workload == "stalled" && rounds(r) > 1) {
        "; the stalled case and its run without stalled subscribers go in pairs, one right after the other against the same broker, and the stalled ratio is the median of the pairs' ratios".to_owned()
    } else {
        String::new()
    };
    if flows.iter().any(|r| r.workload == "scraped" && rounds(r) > 1) {
        stalled.push_str("; the scraped case and its run without the scraper go in pairs too, taking turns at running first, and its ratio is the median of the pairs' ratios");
    }
    let once = if flows.iter().any(|r| rounds(r) == 1) {
        "; the other throughput cases ran once per broker"
    } else {
        ""
    };
    Some(format!(
        "throughput: the figures of {shapes} are the median of their rounds per broker{order}, each round against a freshly started broker: the round with the median delivered/s (of an even count, the lower middle one), with the most any round lost, cut or duplicated, every round's problems, and the largest broker peak RSS of any round, so that a loss in any round fails its target and no memory figure comes from the leanest round{stalled}; every round's own line is in rounds.jsonl{once}"
    ))
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

/// The (core mode, settings) sections, in order of first appearance.
fn sections(results: &[RunResult]) -> Vec<(Option<String>, Option<String>)> {
    distinct(results.iter().map(|r| (r.mode.clone(), r.settings.clone())))
}

fn section_title(mode: Option<&str>, settings: Option<&str>) -> String {
    let place = match mode {
        Some("one") => "One core".to_owned(),
        Some("all") => "All cores".to_owned(),
        Some(other) => format!("Mode {other}"),
        None => "Standalone runs".to_owned(),
    };
    let how = match mode {
        Some("one") => ": broker pinned to CPU 0, load generator pinned to CPU 1",
        Some("all") => ": broker and load generator unpinned, sharing every CPU",
        _ => "",
    };
    let settings = match settings {
        Some("defaults") => ", shipped defaults".to_owned(),
        Some("tuned") => ", tuned (limits on slow consumers raised; not the defaults)".to_owned(),
        Some(other) => format!(", settings {other}"),
        None => String::new(),
    };
    format!("{place}{settings}{how}")
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
    if u.cpus == 0 {
        return "-".into();
    }
    let others = u.others_cores.map_or("-".into(), |x| format!("{x:.1}"));
    format!("{:.0}% of {} (+{others})", u.utilization * 100.0, u.cpus)
}

fn errors_col(r: &RunResult) -> String {
    match r.errors.first() {
        None => String::new(),
        Some(first) => {
            let mut e: String = first.chars().take(160).collect();
            if r.errors.len() > 1 {
                let _ = write!(e, " (+{} more)", r.errors.len() - 1);
            }
            e.replace('|', "/")
        }
    }
}

/// Whether a run belongs in the throughput tables.
fn is_flow(r: &RunResult) -> bool {
    matches!(
        r.workload.as_str(),
        "fanout" | "pairs" | "stalled" | "scraped" | "wildcard" | "queue" | "topics"
    )
}

/// Whether a throughput run compares the brokers (the scraped case, which
/// only corecast runs, has a table of its own).
fn compares_brokers(r: &RunResult) -> bool {
    is_flow(r) && r.workload != "scraped"
}

/// Delivered/s of a throughput run, with what it lost and whom the broker
/// cut, e.g. `2.10M` or `1.05M, lost 3.2M, 37 cut`.
fn flow_cell(r: &RunResult) -> String {
    let Some(f) = &r.flow else { return "failed".into() };
    let mut cell = si(f.delivered_per_s);
    if f.lost > 0 {
        let _ = write!(cell, ", lost {}", si(f.lost as f64));
    }
    if f.cut > 0 {
        let _ = write!(cell, ", {} cut", f.cut);
    }
    if f.duplicates > 0 {
        let _ = write!(cell, ", {} dup", si(f.duplicates as f64));
    }
    if let Some(s) = r.stalled.as_ref().filter(|s| s.stalled > 0) {
        let _ = write!(cell, "; {} of {} stalled cut", s.stalled_cut, s.stalled);
    }
    if f.lost == 0 && f.cut == 0 && f.duplicates == 0 && !r.errors.is_empty() {
        cell.push_str(", failed");
    }
    cell
}

/// One line per throughput case: delivered/s of every broker with its loss
/// and cut subscribers, and corecast over nats-server.
fn summary_table(runs: &[&RunResult]) -> String {
    let flows: Vec<&RunResult> = runs.iter().copied().filter(|r| compares_brokers(r)).collect();
    if flows.is_empty() {
        return String::new();
    }
    let brokers: Vec<Kind> =
        Kind::ALL.into_iter().filter(|k| flows.iter().any(|r| r.broker == *k)).collect();
    let mut md = String::from("### Delivered messages/s, lost, cut\n\n| case |");
    for k in &brokers {
        let _ = write!(md, " {} |", server_name(*k));
    }
    md.push_str(" corecast / nats |\n|---|");
    md.push_str(&"--:|".repeat(brokers.len() + 1));
    md.push('\n');
    for case in distinct(flows.iter().map(|r| r.case.clone())) {
        let of = |k: Kind| flows.iter().copied().find(|r| r.broker == k && r.case == case);
        let _ = write!(md, "| {case} |");
        for k in &brokers {
            let _ = write!(md, " {} |", of(*k).map_or("-".into(), flow_cell));
        }
        let rate = |k| of(k).and_then(|r| r.flow.as_ref()).map(|f| f.delivered_per_s);
        let ratio = match (rate(Kind::Corecast), rate(Kind::Nats)) {
            (Some(c), Some(n)) if n > 0.0 => format!("{:.2}×", c / n),
            _ => "-".into(),
        };
        let _ = writeln!(md, " {ratio} |");
    }
    md
}

fn server_name(k: Kind) -> &'static str {
    match k {
        Kind::Corecast => "corecast",
        Kind::Nats => "nats-server",
        Kind::Redis => "redis-server",
    }
}

fn tables(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let flows: Vec<_> =
        runs.iter().filter(|r| compares_brokers(r) && r.workload != "stalled").collect();
    if !flows.is_empty() {
        md.push_str("\n### Throughput\n\n| case | broker | published/s | delivered/s | lost | cut | dup | gaps | broker CPU s | broker peak RSS MiB | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
        for r in flows {
            let f = r.flow.clone().unwrap_or_default();
            let figures = if r.flow.is_some() {
                format!(
                    "{} | {} | {} | {} | {} | {}",
                    si(f.published_per_s),
                    si(f.delivered_per_s),
                    f.lost,
                    f.cut,
                    f.duplicates,
                    f.gaps
                )
            } else {
                "- | failed | - | - | - | -".into()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {figures} | {} | {} |",
                r.case,
                r.broker,
                broker_cols(r),
                errors_col(r)
            );
        }
    }
    md.push_str(&stalled_table(runs));
    md.push_str(&scraped_table(runs));
    md.push_str(&latency_table(runs));
    md.push_str(&conns_table(runs));
    md.push_str(&churn_table(runs));
    md.push_str(&handshakes_table(runs));
    md.push_str(&routing::table(runs));
    md.push_str(&routing::request_table(runs));
    md.push_str(&routing::topics_table(runs));
    md
}

/// The handshake-rate runs, one line per broker, with corecast's rate over
/// nats-server's.
fn handshakes_table(runs: &[&RunResult]) -> String {
    let runs: Vec<_> = runs.iter().filter(|r| r.handshakes.is_some()).collect();
    if runs.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n### Connection set-ups (connect, TLS handshake when TLS is on, greeting, close)\n\n| case | broker | TLS | set-ups/s | failures | broker CPU per set-up | corecast / nats | bench CPU | problems |\n|---|---|---|--:|--:|--:|--:|--:|---|\n");
    let rate = |kind: Kind, case: &str| {
        runs.iter()
            .find(|r| r.broker == kind && r.case == case)
            .and_then(|r| r.handshakes.as_ref())
            .map(|h| h.per_s)
    };
    for r in &runs {
        let Some(h) = &r.handshakes else { continue };
        let ratio = match (r.broker, rate(Kind::Corecast, &r.case), rate(Kind::Nats, &r.case)) {
            (Kind::Corecast, Some(c), Some(n)) if n > 0.0 => format!("{:.2}×", c / n),
            _ => "-".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {ratio} | {:.0}% | {} |",
            r.case,
            r.broker,
            h.tls_session.as_deref().unwrap_or(if h.tls { "yes" } else { "no" }),
            si(h.per_s),
            h.failures,
            h.broker_cpu_us.map_or("-".into(), |us| format!("{us:.0} µs")),
            r.bench_usage.utilization * 100.0,
            errors_col(r)
        );
    }
    md
}

/// The stalled runs (with their baselines attached: see
/// [`with_baselines`]), one line per broker.
fn stalled_table(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let stalled: Vec<_> = runs
        .iter()
        .filter(|r| r.workload == "stalled" && r.params.stalled.unwrap_or(0) > 0)
        .collect();
    if stalled.is_empty() {
        return md;
    }
    md.push_str("\n### Stalled subscribers: one publisher, readers, and subscribers that never read\n\nThe readers' delivered/s with the stalled subscribers over their delivered/s in the same configuration without them (a run of its own against a fresh broker; in rounds the two run in pairs, one right after the other, and the ratio is the median of the pairs' ratios, which need not equal the ratio of the two medians shown). \"stalled cut\": stalled subscribers whose connection the broker had closed by the end of the run (expected, not a loss); \"lost\" and \"cut\" are the readers'.\n\n| case | broker | readers delivered/s without → with | ratio | readers lost | readers cut | stalled cut | broker peak RSS MiB without → with | broker CPU s | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in stalled {
        let s = r.stalled.clone().unwrap_or_default();
        let f: Flow = r.flow.clone().unwrap_or_default();
        let with = if r.flow.is_some() { si(f.delivered_per_s) } else { "failed".into() };
        let without = s.baseline_delivered_per_s.map_or("-".into(), si);
        let ratio = s.ratio.map_or("-".into(), |x| format!("{x:.2}"));
        let peak = r.broker_usage.as_ref().map_or("-".into(), |u| mib(u.peak_rss_kib));
        let base_peak = s.baseline_peak_rss_kib.map_or("-".into(), mib);
        let cpu = r.broker_usage.as_ref().map_or("-".into(), |u| format!("{:.2}", u.cpu_s));
        let mut problems = errors_col(r);
        if s.baseline_failed {
            let base = runs.iter().find(|b| {
                b.workload == "stalled"
                    && b.params.stalled == Some(0)
                    && b.broker == r.broker
                    && b.params.subscribers == r.params.subscribers
            });
            let why = base.map_or(String::new(), |b| errors_col(b));
            let _ = write!(
                problems,
                "{}without stalled: {why}",
                if problems.is_empty() { "" } else { "; " }
            );
        }
        let _ = writeln!(
            md,
            "| {} | {} | {without} → {with} | {ratio} | {} | {} | {} of {} | {base_peak} → {peak} | {cpu} | {} | {problems} |",
            r.case,
            r.broker,
            f.lost,
            f.cut,
            s.stalled_cut,
            s.stalled,
            bench_col(r),
        );
    }
    md
}

/// The run without a scraper of the scraped run `r`, if there is one.
fn scraped_baseline<'a>(runs: &[&'a RunResult], r: &RunResult) -> Option<&'a RunResult> {
    runs.iter().copied().find(|b| {
        b.workload == "scraped"
            && b.broker == r.broker
            && b.params.scrape_ms == Some(0)
            && (b.params.subscribers, b.params.msgs) == (r.params.subscribers, r.params.msgs)
    })
}

/// The scraped runs (with their baselines attached: see
/// [`with_baselines`]), one line per broker.
fn scraped_table(runs: &[&RunResult]) -> String {
    let mut md = String::new();
    let scraped: Vec<&RunResult> = runs
        .iter()
        .copied()
        .filter(|r| r.workload == "scraped" && r.params.scrape_ms.unwrap_or(0) > 0)
        .collect();
    if scraped.is_empty() {
        return md;
    }
    md.push_str("\n### Monitoring port scraped during a fan-out (corecast)\n\nDelivered/s with a scraper in the bench GETting `/metrics` and `/connz?limit=1024` from corecast's monitoring port at the interval given, over delivered/s of the same fan-out without it (a run of its own against a fresh broker; in rounds the two run in pairs, taking turns at running first, and the ratio is the median of the pairs' ratios, which need not equal the ratio of the two medians shown). Each path is GET from a thread of its own, on its own schedule; \"scrapes\" counts the GETs of the path that had the fewest, and \"late\" the GETs sent late because the one before took longer than the interval. Scrapes and GETs add up over the rounds; \"not 200\" counts GETs answered otherwise or not at all; \"/connz listed\" is what its first answer listed, of the open connections it counted. Broker CPU per delivery (every thread of the broker, its monitoring port's included) is the median round's, and its ratio, in parentheses, is taken like delivered/s': what serving the scrapes cost the broker, whether or not that slowed delivery.\n\n| case | broker | delivered/s without → with | ratio | scrapes (GETs late) | GETs not 200 | /connz listed | GET mean / max ms, /metrics | GET mean / max ms, /connz | lost | cut | broker CPU ns per delivery without → with | scraper CPU per scrape | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in scraped {
        let s = r.scrape.clone().unwrap_or_default();
        let f: Flow = r.flow.clone().unwrap_or_default();
        let with = if r.flow.is_some() { si(f.delivered_per_s) } else { "failed".into() };
        let without = s.baseline_delivered_per_s.map_or("-".into(), si);
        let ratio = s.ratio.map_or("-".into(), |x| format!("{x:.3}"));
        let listed = match (s.connz_listed, s.connz_total) {
            (Some(l), Some(t)) => format!("{l} of {t}"),
            _ => "-".into(),
        };
        let get = |prefix: &str| {
            s.paths.iter().find(|p| p.path.starts_with(prefix)).map_or("-".into(), |p| {
                format!("{:.1} / {:.1}", p.total_ms / p.gets.max(1) as f64, p.max_ms)
            })
        };
        let per_delivery = |run: Option<&RunResult>| {
            run.and_then(|r| Some((r.broker_usage.as_ref()?.cpu_s, r.flow.as_ref()?.delivered)))
                .filter(|(_, d)| *d > 0)
                .map_or("-".into(), |(cpu, d)| format!("{:.1}", cpu * 1e9 / d as f64))
        };
        let base = scraped_baseline(runs, r);
        let mut problems = errors_col(r);
        if s.baseline_failed {
            let why = base.map_or(String::new(), errors_col);
            let sep = if problems.is_empty() { "" } else { "; " };
            let _ = write!(problems, "{sep}without the scraper: {why}");
        }
        let _ = writeln!(
            md,
            "| {} | {} | {without} → {with} | {ratio} | {} ({}) | {} | {listed} | {} | {} | {} | {} | {} → {} ({}) | {:.2} ms | {} | {problems} |",
            r.case,
            r.broker,
            s.scrapes,
            s.paths.iter().map(|p| p.late).sum::<u64>(),
            s.non_200 + s.failed,
            get("/metrics"),
            get("/connz"),
            f.lost,
            f.cut,
            per_delivery(base),
            per_delivery(Some(r)),
            s.broker_cpu_ratio.map_or("-".into(), |x| format!("×{x:.2}")),
            s.scraper_cpu_s * 1e3 / s.scrapes.max(1) as f64,
            bench_col(r),
        );
    }
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
    let conns: Vec<_> = runs.iter().filter(|r| r.workload == "conns").collect();
    if conns.is_empty() {
        return md;
    }
    md.push_str("\n### Idle subscribed connections\n\n| case | broker | opened of asked | RSS before MiB | RSS just opened MiB | RSS settled MiB (after s) | RSS per connection (settled) | broker CPU while idle | open time s | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in conns {
        let Some(c) = &r.conns else {
            let _ = writeln!(
                md,
                "| {} | {} | failed | - | - | - | - | - | - | {} |",
                r.case,
                r.broker,
                errors_col(r)
            );
            continue;
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} of {} | {} | {} | {} ({:.1}) | {:.2} KiB | {} | {:.2} | {} |",
            r.case,
            r.broker,
            c.opened,
            r.params.conns.map_or("?".into(), |n| n.to_string()),
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
            Some(r) if !r.errors.is_empty() => Side::Failed(failed_because(r)),
            Some(r) => {
                figure(r).map_or_else(|| Side::Failed("has no samples".into()), Side::Measured)
            }
        }
    }

    fn show(&self, f: impl FnOnce(&T) -> String) -> String {
        match self {
            Side::NotRun => "-".into(),
            Side::Failed(why) => why.clone(),
            Side::Measured(v) => f(v),
        }
    }
}

/// `failed: ` and the first error of `r`, shortened (and how many more).
fn failed_because(r: &RunResult) -> String {
    let first = r.errors.first().map_or("", String::as_str);
    let mut why: String = first.chars().take(100).collect();
    if first.chars().count() > 100 {
        why.push('…');
    }
    if r.errors.len() > 1 {
        let _ = write!(why, " (+{} more)", r.errors.len() - 1);
    }
    format!("failed: {}", why.replace('|', "/"))
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

/// The side of a throughput run: its delivered/s and the broker's peak RSS
/// (KiB) if it ran cleanly (nothing lost, nobody cut, no errors); else
/// why not, with its figures when it has them.
fn flow_side(run: Option<&RunResult>) -> Side<(f64, u64)> {
    let unclean = |r: &RunResult, f: &Flow| !r.errors.is_empty() || f.lost > 0 || f.cut > 0;
    match run {
        Some(r) if r.flow.as_ref().is_some_and(|f| f.delivered > 0 && unclean(r, f)) => {
            Side::Failed(flow_cell(r))
        }
        _ => Side::of(run, |r| {
            let peak = r.broker_usage.as_ref().map_or(0, |u| u.peak_rss_kib);
            r.flow.as_ref().filter(|f| f.delivered > 0).map(|f| (f.delivered_per_s, peak))
        }),
    }
}

/// The run of `k` for a throughput case: `workload` with `subs` reading
/// subscribers (any number if `None`).
fn flow_run<'a>(
    runs: &[&'a RunResult],
    k: Kind,
    workload: &str,
    subs: Option<usize>,
) -> Option<&'a RunResult> {
    find(runs, k, workload, |r| subs.is_none() || r.params.subscribers == subs)
}

fn throughput_target(
    runs: &[&RunResult],
    name: &str,
    workload: &str,
    subs: Option<usize>,
    factor: f64,
) -> Verdict {
    let side = |k| flow_side(flow_run(runs, k, workload, subs));
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let target = format!("{name}: delivered/s ≥ {factor}× nats-server's, nothing lost, nobody cut");
    let (measure, outcome) = match (&c, &n) {
        (Side::Measured((c, _)), Side::Measured((n, _))) => {
            let ratio = c / n.max(1e-9);
            (format!("{ratio:.2}×"), Outcome::of(ratio >= factor))
        }
        _ => missing(&c, &n),
    };
    (target, c.show(|x| si(x.0)), n.show(|x| si(x.0)), measure, outcome)
}

/// Fan-out to many subscribers: delivered/s against nats-server's, and the
/// broker's peak RSS at most `rss_share` of nats-server's.
fn wide_fanout_target(runs: &[&RunResult], subs: usize, factor: f64, rss_share: f64) -> Verdict {
    let side = |k| flow_side(flow_run(runs, k, "fanout", Some(subs)));
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let target = format!(
        "fanout 1→{subs}: delivered/s ≥ {factor}× nats-server's and broker peak RSS ≤ {rss_share} × nats-server's, nothing lost, nobody cut"
    );
    let fig = |x: &(f64, u64)| format!("{}, {} MiB peak", si(x.0), mib(x.1));
    let (measure, outcome) = match (&c, &n) {
        (Side::Measured((c, c_rss)), Side::Measured((n, n_rss))) => {
            let ratio = c / n.max(1e-9);
            let rss = *c_rss as f64 / (*n_rss).max(1) as f64;
            (
                format!("{ratio:.2}×, RSS {rss:.2} ×"),
                Outcome::of(ratio >= factor && *c_rss > 0 && rss <= rss_share),
            )
        }
        _ => missing(&c, &n),
    };
    (target, c.show(fig), n.show(fig), measure, outcome)
}

/// The readers of the stalled case against their rate without the stalled
/// subscribers: at least `least`, and both runs clean.
fn stalled_target(runs: &[&RunResult], least: f64) -> Verdict {
    let side = |k| {
        let run = find(runs, k, "stalled", |r| r.params.stalled.unwrap_or(0) > 0);
        match run {
            Some(r) if r.stalled.as_ref().is_some_and(|s| s.baseline_failed) => {
                Side::Failed("failed without the stalled subscribers".into())
            }
            _ => match flow_side(run) {
                Side::Measured(_) => {
                    let s = run.and_then(|r| r.stalled.clone()).unwrap_or_default();
                    s.ratio.map_or_else(
                        || Side::Failed("no run without stalled subscribers".into()),
                        |ratio| Side::Measured((ratio, s.stalled_cut, s.stalled)),
                    )
                }
                Side::Failed(why) => Side::Failed(why),
                Side::NotRun => Side::NotRun,
            },
        }
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let target = format!(
        "stalled: readers' delivered/s with stalled subscribers ≥ {least} × without, readers lose nothing, no reader cut"
    );
    let fig =
        |(ratio, cut, of): &(f64, usize, usize)| format!("{ratio:.2} ({cut} of {of} stalled cut)");
    let (measure, outcome) = match &c {
        Side::Measured((ratio, ..)) => (format!("{ratio:.2}"), Outcome::of(*ratio >= least)),
        _ => missing(&c, &n),
    };
    (target, c.show(fig), n.show(fig), measure, outcome)
}

/// The fan-out with the monitoring port scraped against the same fan-out
/// without: at least `least`, every GET answered 200, and both runs clean
/// (corecast only).
fn scraped_target(runs: &[&RunResult], least: f64) -> Verdict {
    let side = |k| {
        let run = find(runs, k, "scraped", |r| r.params.scrape_ms.unwrap_or(0) > 0);
        match run {
            Some(r) if r.scrape.as_ref().is_some_and(|s| s.baseline_failed) => {
                Side::Failed("failed without the scraper".into())
            }
            _ => match flow_side(run) {
                Side::Measured(_) => {
                    let s = run.and_then(|r| r.scrape.clone()).unwrap_or_default();
                    match s.ratio {
                        None => Side::Failed("no run without the scraper".into()),
                        Some(_) if s.scrapes == 0 => Side::Failed("no scrape done".into()),
                        Some(ratio) => Side::Measured((
                            ratio,
                            s.scrapes,
                            s.non_200 + s.failed,
                            s.broker_cpu_ratio,
                        )),
                    }
                }
                Side::Failed(why) => Side::Failed(why),
                Side::NotRun => Side::NotRun,
            },
        }
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let (subs, interval) =
        find(runs, Kind::Corecast, "scraped", |r| r.params.scrape_ms.unwrap_or(0) > 0).map_or(
            ("1000".into(), "100".into()),
            |r| {
                (
                    r.params.subscribers.map_or("?".into(), |s| s.to_string()),
                    r.params.scrape_ms.map_or("?".into(), |s| s.to_string()),
                )
            },
        );
    let target = format!(
        "scraped: fan-out 1→{subs} delivered/s with `/metrics` and `/connz` scraped every {interval} ms ≥ {least} × without, every GET answered 200, nothing lost, nobody cut"
    );
    let fig = |(ratio, scrapes, bad, cpu): &(f64, u64, u64, Option<f64>)| {
        let cpu = cpu.map_or(String::new(), |c| format!("; broker CPU per delivery ×{c:.2}"));
        format!("{ratio:.3} ({scrapes} scrapes, {bad} GETs not 200{cpu})")
    };
    let (measure, outcome) = match &c {
        Side::Measured((ratio, _, bad, _)) => {
            (format!("{ratio:.3}"), Outcome::of(*ratio >= least && *bad == 0))
        }
        _ => missing(&c, &n),
    };
    (target, c.show(fig), n.show(fig), measure, outcome)
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
        throughput_target(runs, "fanout 1→10", "fanout", Some(10), 3.0),
        throughput_target(runs, "fanout 1→1000", "fanout", Some(1000), 3.0),
        wide_fanout_target(runs, 5000, 3.0, 0.5),
        throughput_target(runs, "fanout 1→1", "fanout", Some(1), 2.0),
        throughput_target(runs, "pairs", "pairs", None, 2.0),
        stalled_target(runs, 0.9),
        scraped_target(runs, 0.97),
    ];
    verdicts.extend(latency_targets(runs));
    verdicts.push(conns_target(runs));
    verdicts.push(idle_target(runs));
    verdicts.push(churn_target(runs));
    verdicts.push(throughput_target(runs, "wildcard", "wildcard", None, 2.0));
    verdicts.push(throughput_target(runs, "queue (one member each)", "queue", None, 2.0));
    verdicts.push(routing::request_target(runs, 1.5));
    verdicts.push(routing::topics_target(runs));
    verdicts
}

fn targets(runs: &[&RunResult]) -> String {
    let mut md = String::from("\n### Targets for corecast at its shipped defaults\n\n| target | corecast | nats-server | measured | result |\n|---|--:|--:|--:|---|\n");
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
            http: None,
            pid: None,
            timeout: std::time::Duration::from_secs(1),
            mode: Some("one".into()),
            settings: Some("defaults".into()),
            settle: std::time::Duration::from_secs(1),
            access: Default::default(),
            others: Vec::new(),
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
        let target = crate::workload::Target::for_tests(kind);
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

    /// A fan-out result of `kind` to `subs` subscribers.
    fn fanout_run(kind: Kind, subs: usize, per_s: f64, peak_kib: u64) -> RunResult {
        let params = crate::result::Params { subscribers: Some(subs), ..Default::default() };
        let mut r = run_of(kind, "fanout", params);
        r.case = format!("fanout 1->{subs} 64B");
        r.flow = Some(crate::result::Flow {
            delivered_per_s: per_s,
            delivered: 100,
            expected: 100,
            ..Default::default()
        });
        r.broker_usage =
            Some(crate::result::BrokerUsage { peak_rss_kib: peak_kib, ..Default::default() });
        r
    }

    /// Marks a flow result as having lost `lost` and had `cut` subscribers
    /// cut, as the workload records it.
    fn lossy(mut r: RunResult, lost: u64, cut: usize) -> RunResult {
        let f = r.flow.as_mut().expect("flow");
        (f.lost, f.cut) = (lost, cut);
        f.delivered -= lost;
        r.errors.push(format!("{cut} subscriber(s) cut by the broker"));
        r
    }

    #[test]
    fn loss_and_cuts_fail_targets_and_show_in_the_tables() {
        use Outcome::*;
        let (c, n) = (Kind::Corecast, Kind::Nats);
        let target = |c: &RunResult, n: &RunResult| {
            throughput_target(&[c, n], "fanout 1→10", "fanout", Some(10), 3.0)
        };
        let nats = fanout_run(n, 10, 1e6, 100);
        assert_eq!(target(&fanout_run(c, 10, 4e6, 50), &nats).4, Pass);
        assert_eq!(target(&fanout_run(c, 10, 2e6, 50), &nats).4, Fail);
        let cut = lossy(fanout_run(c, 10, 4e6, 50), 30, 2);
        let verdict = target(&cut, &nats);
        assert_eq!(verdict.4, Fail);
        assert_eq!(verdict.1, "4.00M, lost 30, 2 cut");
        // Even without a recorded error, a loss or a cut is not a pass.
        let mut quiet = lossy(fanout_run(c, 10, 4e6, 50), 0, 1);
        quiet.errors.clear();
        assert_eq!(target(&quiet, &nats).4, Fail);
        // A lossy nats-server leaves nothing to compare with.
        assert_eq!(target(&fanout_run(c, 10, 4e6, 50), &lossy(nats, 5, 0)).4, NatsFailed);

        let rows = summary_table(&[&cut, &fanout_run(n, 10, 1e6, 100)]);
        assert!(
            rows.contains("| fanout 1->10 64B | 4.00M, lost 30, 2 cut | 1.00M | 4.00× |"),
            "{rows}"
        );
        let table = tables(&[&cut]);
        assert!(table.contains("| 4.00M | 30 | 2 | 0 | 0 |"), "{table}");
        // A run that failed before it measured anything still has its line.
        let mut failed = run_of(c, "fanout", Default::default());
        failed.errors.push("corecast refused HELLO: ERR 8: connection limit reached".into());
        assert!(tables(&[&failed]).contains("| - | failed | - | - | - | - |"));
        assert!(summary_table(&[&failed]).contains("| failed |"));
    }

    #[test]
    fn a_loss_in_any_round_fails_the_target() {
        use crate::workload::flow::merge_rounds;
        use Outcome::*;
        let (c, n) = (Kind::Corecast, Kind::Nats);
        let target = |c: &RunResult, n: &RunResult| {
            throughput_target(&[c, n], "fanout 1→10", "fanout", Some(10), 3.0)
        };
        let round = |per_s, lost, cut| {
            let r = fanout_run(c, 10, per_s, 50);
            if lost > 0 || cut > 0 {
                lossy(r, lost, cut)
            } else {
                r
            }
        };
        let nats = merge_rounds(&[fanout_run(n, 10, 1e6, 100)]).expect("one round");
        let clean = merge_rounds(&[round(4e6, 0, 0), round(5e6, 0, 0), round(3.5e6, 0, 0)])
            .expect("three rounds");
        assert_eq!(target(&clean, &nats).4, Pass);
        // The median round (4M) was clean; the fastest lost and cut.
        let merged = merge_rounds(&[round(4e6, 0, 0), round(5e6, 30, 2), round(3.5e6, 0, 0)])
            .expect("three rounds");
        let verdict = target(&merged, &nats);
        assert_eq!(verdict.4, Fail);
        assert_eq!(verdict.1, "4.00M, lost 30, 2 cut");
        assert!(summary_table(&[&merged, &nats]).contains("| 4.00M, lost 30, 2 cut |"));
        assert!(tables(&[&merged]).contains("| 4.00M | 30 | 2 | 0 | 0 |"));
        assert!(tables(&[&merged]).contains("round 2: 2 subscriber(s) cut"));
        // A cut no round recorded as an error fails all the same.
        let mut quiet = lossy(fanout_run(c, 10, 3e6, 50), 0, 1);
        quiet.errors.clear();
        let merged = merge_rounds(&[round(4e6, 0, 0), round(5e6, 0, 0), quiet]).expect("three");
        assert!(merged.errors.is_empty());
        assert_eq!(target(&merged, &nats).4, Fail);
        // A lossy round of nats-server leaves nothing to compare with.
        let lossy_nats = merge_rounds(&[
            fanout_run(n, 10, 1e6, 100),
            lossy(fanout_run(n, 10, 2e6, 100), 5, 0),
            fanout_run(n, 10, 0.9e6, 100),
        ])
        .expect("three rounds");
        assert_eq!(target(&clean, &lossy_nats).4, NatsFailed);
        // The wide fan-out's memory figure is the largest of any round.
        let wide = |per_s, peak| fanout_run(c, 5000, per_s, peak);
        let merged = merge_rounds(&[wide(3e6, 400), wide(3.1e6, 600), wide(2.9e6, 450)])
            .expect("three rounds");
        let nats = fanout_run(n, 5000, 1e6, 1000);
        let verdict = wide_fanout_target(&[&merged, &nats], 5000, 3.0, 0.5);
        assert_eq!((verdict.1.as_str(), verdict.4), ("3.00M, 0.6 MiB peak", Fail));
    }

    #[test]
    fn throughput_note_says_which_cases_ran_in_rounds() {
        let mut results = Vec::new();
        for kind in [Kind::Corecast, Kind::Nats, Kind::Redis] {
            for (subs, rounds) in [(10, Some(3)), (5000, None)] {
                let mut r = fanout_run(kind, subs, 1e6, 10);
                r.params.rounds = rounds;
                results.push(r);
            }
        }
        let note = throughput_note(&results).expect("a note");
        assert!(
            note.starts_with("throughput: the figures of fanout 1->10 64B (3 rounds) are the median of their rounds per broker, interleaved (corecast, nats, redis, corecast, ...), each round against a freshly started broker: the round with the median delivered/s"),
            "{note}"
        );
        assert!(note.ends_with("; the other throughput cases ran once per broker"), "{note}");
        assert!(!note.contains("stalled"), "{note}");
        let mut stalled = fanout_run(Kind::Corecast, 100, 1e6, 10);
        (stalled.workload, stalled.case) = ("stalled".into(), "stalled 1->100 +0 stalled".into());
        stalled.params.rounds = Some(3);
        let with_stalled = [results.clone(), vec![stalled]].concat();
        let note = throughput_note(&with_stalled).expect("a note");
        assert!(note.contains("fanout 1->10 64B, stalled 1->100 +0 stalled (3 rounds)"), "{note}");
        assert!(note.contains("the stalled ratio is the median of the pairs' ratios"), "{note}");
        results.retain(|r| r.params.rounds.is_some());
        results.iter_mut().for_each(|r| r.params.round = Some(2));
        assert!(throughput_note(&results).expect("a note").starts_with(
            "throughput: one line per round of fanout 1->10 64B (3 rounds), interleaved"
        ));
        results.iter_mut().for_each(|r| r.params.rounds = Some(1));
        assert!(throughput_note(&results).is_none());
    }

    #[test]
    fn wide_fanout_needs_the_rate_and_half_the_memory() {
        use Outcome::*;
        let (c, n) = (Kind::Corecast, Kind::Nats);
        let verdict = |c: RunResult, n: RunResult| wide_fanout_target(&[&c, &n], 5000, 3.0, 0.5).4;
        let nats = || fanout_run(n, 5000, 1e6, 1000);
        assert_eq!(verdict(fanout_run(c, 5000, 3e6, 500), nats()), Pass);
        assert_eq!(verdict(fanout_run(c, 5000, 3e6, 501), nats()), Fail);
        assert_eq!(verdict(fanout_run(c, 5000, 2e6, 100), nats()), Fail);
        assert_eq!(verdict(lossy(fanout_run(c, 5000, 3e6, 100), 1, 0), nats()), Fail);
        // Other subscriber counts are other cases.
        assert_eq!(verdict(fanout_run(c, 1000, 3e6, 100), nats()), NotMeasured);
    }

    #[test]
    fn stalled_readers_against_their_own_rate() {
        use crate::result::StalledFigures;
        use Outcome::*;
        let stalled_run = |kind, ratio: Option<f64>, baseline_failed| {
            let params = crate::result::Params {
                subscribers: Some(100),
                stalled: Some(100),
                ..Default::default()
            };
            let mut r = run_of(kind, "stalled", params);
            r.flow = Some(crate::result::Flow {
                delivered_per_s: 1e6,
                delivered: 100,
                expected: 100,
                ..Default::default()
            });
            r.stalled = Some(StalledFigures {
                stalled: 100,
                stalled_cut: 100,
                ratio,
                baseline_failed,
                ..Default::default()
            });
            r
        };
        let verdict = |c: RunResult| {
            let n = stalled_run(Kind::Nats, Some(0.5), false);
            stalled_target(&[&c, &n], 0.9)
        };
        let pass = verdict(stalled_run(Kind::Corecast, Some(0.95), false));
        assert_eq!(pass.4, Pass);
        assert_eq!(pass.1, "0.95 (100 of 100 stalled cut)");
        assert_eq!(pass.2, "0.50 (100 of 100 stalled cut)");
        assert_eq!(verdict(stalled_run(Kind::Corecast, Some(0.85), false)).4, Fail);
        assert_eq!(verdict(stalled_run(Kind::Corecast, Some(0.95), true)).4, Fail);
        assert_eq!(verdict(stalled_run(Kind::Corecast, None, false)).4, Fail);
        let cut_reader = lossy(stalled_run(Kind::Corecast, Some(0.95), false), 10, 1);
        assert_eq!(verdict(cut_reader).4, Fail);
    }

    #[test]
    fn scraped_fanout_against_its_own_rate() {
        use crate::{
            result::{BrokerUsage, ScrapeFigures},
            workload::scraped,
        };
        use Outcome::*;
        let [base, with] = scraped::specs(1000, 40_000, 64, scraped::INTERVAL);
        let flow_of = |spec: &crate::workload::flow::FlowSpec, per_s: f64| {
            let mut r = run_of(Kind::Corecast, spec.workload, spec.params());
            r.case = spec.case.clone();
            r.flow = Some(Flow { delivered_per_s: per_s, delivered: 1000, ..Flow::default() });
            r.broker_usage = Some(BrokerUsage { cpu_s: 2e-5, ..BrokerUsage::default() });
            r
        };
        let scraped_run = |ratio: Option<f64>, non_200| {
            let mut r = flow_of(&with, 9.8e6);
            let paths = scraped::PATHS.iter().map(|p| crate::result::PathFigures {
                path: (*p).into(),
                gets: 30,
                total_ms: 60.0,
                max_ms: 9.5,
                ..Default::default()
            });
            r.scrape = Some(ScrapeFigures {
                interval_ms: 100,
                scrapes: 30,
                paths: paths.collect(),
                non_200,
                connz_total: Some(1001),
                connz_listed: Some(1001),
                scraper_cpu_s: 0.03,
                ratio,
                ..ScrapeFigures::default()
            });
            if non_200 > 0 {
                r.errors.push("1 of 60 GETs of the monitoring port not answered 200".into());
            }
            r
        };
        let baseline = flow_of(&base, 1e7);
        let verdict = |r: RunResult| scraped_target(&[&baseline, &r], 0.97);
        let pass = verdict(scraped_run(Some(0.98), 0));
        assert_eq!(
            (pass.1.as_str(), pass.2.as_str(), pass.4),
            ("0.980 (30 scrapes, 0 GETs not 200)", "-", Pass)
        );
        assert!(pass.0.contains("1→1000") && pass.0.contains("every 100 ms ≥ 0.97"), "{}", pass.0);
        assert_eq!(verdict(scraped_run(Some(0.96), 0)).4, Fail);
        assert_eq!(verdict(scraped_run(Some(0.99), 1)).4, Fail, "a GET not answered 200");
        assert_eq!(verdict(scraped_run(None, 0)).4, Fail, "no run without the scraper");
        assert_eq!(verdict(lossy(scraped_run(Some(0.99), 0), 10, 1)).4, Fail);
        assert_eq!(scraped_target(&[&baseline], 0.97).4, NotMeasured);

        // Its own table, with the baseline attached from the results; not
        // in the tables that compare brokers.
        let results = with_baselines(&[baseline.clone(), scraped_run(None, 0)]);
        let s = results[1].scrape.as_ref().expect("figures");
        assert_eq!(s.baseline_delivered_per_s, Some(1e7));
        assert!((s.ratio.expect("ratio") - 0.98).abs() < 1e-9);
        let runs: Vec<&RunResult> = results.iter().collect();
        let table = scraped_table(&runs);
        assert!(
            table.contains("| 10.00M → 9.80M | 0.980 | 30 (0) | 0 | 1001 of 1001 | 2.0 / 9.5 | 2.0 / 9.5 | 0 | 0 | 20.0 → 20.0 (×1.00) | 1.00 ms |"),
            "{table}"
        );
        assert!(summary_table(&runs).is_empty() && !tables(&runs).contains("### Throughput"));
    }

    #[test]
    fn sections_keep_defaults_and_tuned_apart() {
        let mut tuned = fanout_run(Kind::Corecast, 10, 1e6, 1);
        tuned.settings = Some("tuned".into());
        let results = [fanout_run(Kind::Corecast, 10, 2e6, 1), tuned];
        assert_eq!(
            sections(&results),
            [
                (Some("one".into()), Some("defaults".into())),
                (Some("one".into()), Some("tuned".into()))
            ]
        );
        let dir =
            std::env::temp_dir().join(format!("corecast-bench-report-{}", std::process::id()));
        let md = write_all(&results, &dir, &[]).expect("report");
        let _ = std::fs::remove_dir_all(&dir);
        let tuned_at = md.find(", tuned (").expect("a tuned section");
        let targets_at = md.find("### Targets").expect("targets");
        assert!(targets_at < tuned_at, "targets only for the shipped defaults");
        assert_eq!(md.matches("### Targets").count(), 1);
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
