//! `report.md` of a `web` run.

use std::fmt::Write;

use super::{churn::GAUGES, ChurnRun, Outcome, Sizes, SseRun};
use crate::{driver::Kind, report::si, result::RunResult};

/// corecast's fan-out delivered/s must be at least this many times
/// nats-server's.
const FANOUT_FACTOR: f64 = 2.0;
/// The churn's RSS after / before must stay under this.
const CHURN_RSS: f64 = 1.10;

fn find<'a>(runs: &'a [RunResult], kind: Kind, case: &str) -> Option<&'a RunResult> {
    runs.iter().find(|r| r.broker == kind && r.case == case)
}

fn rate(r: Option<&RunResult>) -> f64 {
    r.and_then(|r| r.flow.as_ref()).map_or(f64::NAN, |f| f.delivered_per_s)
}

fn per_conn(r: Option<&RunResult>) -> f64 {
    r.and_then(|r| r.conns.as_ref()).map_or(f64::NAN, |c| c.rss_per_conn_bytes)
}

/// Why a fan-out run is no clean figure (not run, no deliveries, errors,
/// anything lost, cut, duplicated or skipped), or `None` when it is one.
fn flow_fault(r: Option<&RunResult>) -> Option<String> {
    let Some(r) = r else { return Some("not run".into()) };
    let Some(f) = r.flow.as_ref() else { return Some("no figures".into()) };
    let mut why = Vec::new();
    if f.delivered == 0 {
        why.push("nothing delivered".to_owned());
    }
    for (n, what) in
        [(f.lost, "lost"), (f.cut as u64, "cut"), (f.duplicates, "duplicates"), (f.gaps, "gaps")]
    {
        if n > 0 {
            why.push(format!("{what} {n}"));
        }
    }
    if !r.errors.is_empty() {
        why.push(format!("{} error(s)", r.errors.len()));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Why an idle run is no clean figure (not run, fewer sessions opened than
/// asked for, errors), or `None` when it is one.
fn conns_fault(r: Option<&RunResult>) -> Option<String> {
    let Some(r) = r else { return Some("not run".into()) };
    let Some(c) = r.conns.as_ref() else { return Some("no figures".into()) };
    let mut why = Vec::new();
    if c.opened == 0 || Some(c.opened) != r.params.conns {
        why.push(format!("opened {} of {:?}", c.opened, r.params.conns.unwrap_or(0)));
    }
    if !r.errors.is_empty() {
        why.push(format!("{} error(s)", r.errors.len()));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// The verdict of a comparison of corecast's run with nats-server's:
/// corecast unclean is a FAIL; nats-server unclean leaves nothing to
/// compare with (not a win); else `better`.
fn compared(c: Option<String>, n: Option<String>, better: bool) -> &'static str {
    match (c, n) {
        (Some(_), _) => verdict(false),
        (None, Some(_)) => "n/a (nats failed)",
        (None, None) => verdict(better),
    }
}

/// A figure, or why the run gives none.
fn shown(figure: String, fault: Option<String>) -> String {
    match fault {
        Some(why) => format!("{figure} (failed: {why})"),
        None => figure,
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

fn kib(bytes: f64) -> String {
    if bytes.is_finite() {
        format!("{:.2} KiB", bytes / 1024.0)
    } else {
        "-".into()
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "**PASS**"
    } else {
        "**FAIL**"
    }
}

/// The report.
pub fn render(out: &Outcome, rounds: u32, sizes: &Sizes, notes: &[String]) -> String {
    let mut md = String::from("# corecast-bench web\n\n");
    md.push_str(&intro(rounds));
    for n in notes {
        let _ = writeln!(md, "- {n}");
    }
    md.push_str(&targets(out));
    md.push_str(&fanout(out));
    md.push_str(&idle(out));
    md.push_str(&churn(out.churn.as_ref(), sizes));
    md.push_str(&sse(out.sse.as_ref()));
    md.push_str(&problems(out));
    md
}

fn intro(rounds: u32) -> String {
    format!(
        "WebSocket (and Server-Sent Events) at shipped defaults: corecast's web port against nats-server's WebSocket port, on loopback on this machine, the load generator sharing its CPUs.\n\n\
Settings: corecast runs the release binary with `--listen`, `--http` (its monitoring port, read for `/stats`) and `--web` on free loopback ports and nothing else: every other setting as shipped (every online core). nats-server runs with a config file holding `listen` and `websocket {{ host, port, no_tls: true }}` and nothing else. Every bench connection upgrades with `GET /` and speaks the broker's own protocol inside binary WebSocket messages (corecast frames; the NATS text protocol), tungstenite framing and masking what the client sends and unframing what it reads. Each broker is started fresh for every round; the fan-out and idle cases run {rounds} round(s) per broker, interleaved (corecast, nats, corecast, ...), and a figure is the round with the median (delivered/s; RSS per session), with the most any round lost or cut and every round's problems. Ratios compare figures of the same run.\n\n"
    )
}

fn targets(out: &Outcome) -> String {
    let mut md = String::from(
        "\n## Targets\n\n| target | corecast | nats-server | corecast / nats | |\n|---|--:|--:|--:|--:|\n",
    );
    for case in fanout_cases(&out.merged) {
        let (c, n) =
            (find(&out.merged, Kind::Corecast, &case), find(&out.merged, Kind::Nats, &case));
        let better = rate(c) >= FANOUT_FACTOR * rate(n);
        let _ = writeln!(
            md,
            "| {case}: delivered/s ≥ {FANOUT_FACTOR}× nats-server's, nothing lost, cut, duplicated or skipped, no errors, on both | {} | {} | {} | {} |",
            shown(si(rate(c)), flow_fault(c)),
            shown(si(rate(n)), flow_fault(n)),
            ratio(rate(c), rate(n)),
            compared(flow_fault(c), flow_fault(n), better)
        );
    }
    if let Some(case) = idle_case(&out.merged) {
        let (c, n) =
            (find(&out.merged, Kind::Corecast, &case), find(&out.merged, Kind::Nats, &case));
        let better = per_conn(c) < per_conn(n);
        let _ = writeln!(
            md,
            "| RSS per idle WebSocket session ({case}) lower than nats-server's, every session opened and no errors on both | {} | {} | {} | {} |",
            shown(kib(per_conn(c)), conns_fault(c)),
            shown(kib(per_conn(n)), conns_fault(n)),
            ratio(per_conn(c), per_conn(n)),
            compared(conns_fault(c), conns_fault(n), better)
        );
    }
    if let Some(c) = &out.churn {
        let pass = churn_pass(c);
        let _ = writeln!(
            md,
            "| churn: {} of {} WebSocket connect + abort cycles, none failed, no errors, every gauge back to idle, RSS within 10% | {}, RSS ×{:.2}, {:.0} cycles/s | - | - | {} |",
            c.cycles,
            c.target_cycles,
            if c.back_to_idle { "idle" } else { "**not idle**" },
            c.rss_ratio,
            c.cycles_per_s,
            verdict(pass)
        );
    }
    md
}

/// Every cycle done, none failed, no errors, every gauge back to idle, RSS
/// within [`CHURN_RSS`].
fn churn_pass(c: &ChurnRun) -> bool {
    c.cycles == c.target_cycles
        && c.target_cycles > 0
        && c.failures == 0
        && c.errors.is_empty()
        && c.back_to_idle
        && c.rss_ratio <= CHURN_RSS
}

fn fanout_cases(runs: &[RunResult]) -> Vec<String> {
    crate::report::distinct(runs.iter().filter(|r| r.flow.is_some()).map(|r| r.case.clone()))
}

fn idle_case(runs: &[RunResult]) -> Option<String> {
    runs.iter().find(|r| r.conns.is_some()).map(|r| r.case.clone())
}

fn fanout(out: &Outcome) -> String {
    let mut md = String::from("\n## 1. Fan-out over WebSocket\n\nOne publisher, every subscriber on its one topic, 64-byte payloads; every delivery is checked (sequence numbers per subscriber). delivered/s: deliveries over first publish to last delivery. Broker CPU over the same time.\n\n| case | broker | published/s | delivered/s | corecast / nats | lost | cut | broker CPU | broker peak RSS | bench CPU | seconds |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for case in fanout_cases(&out.merged) {
        let n = find(&out.merged, Kind::Nats, &case);
        for r in
            [Kind::Corecast, Kind::Nats].map(|k| find(&out.merged, k, &case)).into_iter().flatten()
        {
            let f = r.flow.clone().unwrap_or_default();
            let u = r.broker_usage.clone().unwrap_or_default();
            let vs = if r.broker == Kind::Corecast {
                ratio(f.delivered_per_s, rate(n))
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {case} | {} | {} | {} | {vs} | {} | {} | {:.2} cores | {} | {:.2} cores | {:.2} |",
                r.broker,
                si(f.published_per_s),
                si(f.delivered_per_s),
                f.lost,
                f.cut,
                u.cpu_cores,
                mib(u.peak_rss_kib),
                r.bench_usage.cpu_s / r.seconds.max(1e-9),
                r.seconds
            );
        }
    }
    md.push_str(&rounds_table(&out.rounds));
    md
}

/// Every round's delivered/s.
fn rounds_table(rounds: &[RunResult]) -> String {
    let mut md =
        String::from("\nEvery round (delivered/s):\n\n| case | broker | rounds |\n|---|---|---|\n");
    for case in fanout_cases(rounds) {
        for kind in [Kind::Corecast, Kind::Nats] {
            let each: Vec<String> = rounds
                .iter()
                .filter(|r| r.broker == kind && r.case == case)
                .map(|r| si(rate(Some(r))))
                .collect();
            let _ = writeln!(md, "| {case} | {kind} | {} |", each.join(", "));
        }
    }
    md
}

fn idle(out: &Outcome) -> String {
    let Some(case) = idle_case(&out.merged) else { return String::new() };
    let mut md = String::from("\n## 2. Memory per idle WebSocket session\n\nN sessions opened (spread over 4 loopback source addresses), each subscribed to a topic of its own and confirmed, then left silent; the broker's RSS once settled minus its RSS before the first, over N.\n\n| case | broker | opened | RSS before | RSS after | per session | corecast / nats | every round |\n|---|---|--:|--:|--:|--:|--:|---|\n");
    let n = find(&out.merged, Kind::Nats, &case);
    for r in [Kind::Corecast, Kind::Nats].map(|k| find(&out.merged, k, &case)).into_iter().flatten()
    {
        let c = r.conns.clone().unwrap_or_default();
        let vs = if r.broker == Kind::Corecast {
            ratio(c.rss_per_conn_bytes, per_conn(n))
        } else {
            String::new()
        };
        let each: Vec<String> = out
            .rounds
            .iter()
            .filter(|x| x.broker == r.broker && x.case == case)
            .map(|x| kib(per_conn(Some(x))))
            .collect();
        let _ = writeln!(
            md,
            "| {case} | {} | {} | {} | {} | {} | {vs} | {} |",
            r.broker,
            c.opened,
            mib(c.rss_before_kib),
            mib(c.rss_after_kib),
            kib(c.rss_per_conn_bytes),
            each.join(", ")
        );
    }
    md
}

fn churn(c: Option<&ChurnRun>, sizes: &Sizes) -> String {
    let Some(c) = c else { return String::new() };
    let mut md = format!("\n## 3. Connect-and-abort churn (corecast)\n\n{} loops, {} cycles in all: TCP connect, the WebSocket upgrade, `HELLO`/`WELCOME`, then a reset (`SO_LINGER` 0, no close frame). A warm-up of {} cycles first; RSS \"before\" is read after it, settled. Afterwards `/stats` is polled until every gauge reads its value on the fresh broker (at most 10 s), then RSS is read once settled.\n\n", c.threads, sizes.churn_cycles, c.warmup_cycles);
    let settled = c.settled_after_s.map_or("never (10 s)".into(), |s| format!("{:.2} s", s));
    let _ = writeln!(md, "| cycles | failures | cycles/s | broker CPU per cycle | RSS fresh | RSS before | RSS after | after / before | gauges back to idle after |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n| {} | {} | {:.0} | {:.0} µs | {} | {} | {} | {:.3} | {settled} |", c.cycles, c.failures, c.cycles_per_s, c.broker_cpu_us_per_cycle, mib(c.rss_start_kib), mib(c.rss_before_kib), mib(c.rss_after_kib), c.rss_ratio);
    md.push_str("\n| gauge | fresh broker | after the churn |\n|---|--:|--:|\n");
    for g in GAUGES {
        let v = |m: &std::collections::BTreeMap<String, u64>| {
            m.get(g).map_or("-".into(), u64::to_string)
        };
        let _ = writeln!(md, "| {g} | {} | {} |", v(&c.gauges_idle), v(&c.gauges_after));
    }
    let _ = writeln!(
        md,
        "| memory_cached (free chunks kept for reuse; not a gauge that must return) | {} | {} |",
        c.memory_cached_before, c.memory_cached_after
    );
    md.push_str("\nCounters over the measured churn: ");
    let counted: Vec<String> = c.counted.iter().map(|(k, v)| format!("`{k}` +{v}")).collect();
    md.push_str(&counted.join(", "));
    md.push_str(".\n");
    md
}

fn sse(s: Option<&SseRun>) -> String {
    let Some(s) = s else { return String::new() };
    let mut md = String::from("\n## 4. Server-Sent Events (corecast)\n\n");
    if let Some(why) = &s.skipped {
        let _ = writeln!(md, "Skipped: {why}. The case opens {} streams of `GET /sse?topic=bench.sse` (plain HTTP/1.1 on TCP), measures RSS per stream, checks that a message published over WebSocket reaches every stream, then closes them in batches and times each slot's release through `/stats`.", s.streams);
        return md;
    }
    let _ = writeln!(md, "{} streams of `GET /sse?topic=bench.sse` (plain HTTP/1.1 on TCP, head parsed by httparse). RSS per stream: RSS with every stream open, settled, minus RSS before the first, over the streams. One message published over WebSocket, then every stream read until it carries the payload. Then batches closed at once (a FIN, after reading what the stream had sent); \"closing took\" is the bench closing the batch's sockets, first close to last; from the last close `/stats` is read every millisecond, and a slot counts as free at the first read that shows `slots_in_use` and `web_connections` both down by that many. \"last close to slot free\" is the time from the batch's last close to that read (so it includes the `/stats` round trip and up to 1 ms of polling pause, and a socket closed early in the batch may have been freed before its last close): the batch's median slot and its last slot; overall, the median of the batches' medians and the largest maximum.\n", s.streams);
    let _ = writeln!(md, "| opened | web_connections | RSS before | RSS after | per stream | event reached | publish to last stream | last close to slot free, median of batches | max |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n| {} | {} | {} | {} | {} | {} of {} | {:.2} s | {} | {} |", s.opened, s.web_connections, mib(s.rss_before_kib), mib(s.rss_after_kib), kib(s.rss_per_stream_bytes), s.event_reached, s.opened, s.event_s, ms(s.free_median_ms), ms(s.free_max_ms));
    md.push_str("\n| batch | closed | freed | closing took (bench) | last close to slot free, median | last close to slot free, max | /stats reads |\n|--:|--:|--:|--:|--:|--:|--:|\n");
    for (i, b) in s.batches.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} ms | {} | {} | {} |",
            i + 1,
            b.closed,
            b.freed,
            b.closing_ms,
            ms(b.median_ms),
            ms(b.max_ms),
            b.polls
        );
    }
    md
}

fn ms(v: Option<f64>) -> String {
    v.map_or("- (not all freed)".into(), |v| format!("{v:.1} ms"))
}

fn problems(out: &Outcome) -> String {
    let mut lines: Vec<String> = Vec::new();
    for r in &out.merged {
        if let Some(f) =
            r.flow.as_ref().filter(|f| f.lost + f.cut as u64 + f.duplicates + f.gaps > 0)
        {
            lines.push(format!(
                "- {} / {}: lost {}, cut {}, duplicates {}, gaps {}",
                r.case, r.broker, f.lost, f.cut, f.duplicates, f.gaps
            ));
        }
        lines.extend(r.errors.iter().map(|e| format!("- {} / {}: {e}", r.case, r.broker)));
    }
    let corecast_only = [
        ("churn", out.churn.as_ref().map(|c| &c.errors)),
        ("sse", out.sse.as_ref().map(|s| &s.errors)),
    ];
    for (name, errors) in corecast_only {
        lines.extend(errors.into_iter().flatten().map(|e| format!("- {name} / corecast: {e}")));
    }
    if let Some(e) = out.churn.as_ref().and_then(|c| c.first_error.as_ref()) {
        lines.push(format!("- churn / corecast: first failed cycle: {e}"));
    }
    let mut md = String::from("\n## Problems\n\n");
    if lines.is_empty() {
        md.push_str("None: no run lost, cut, duplicated or skipped a message, no cycle failed, and every broker was running at the end of every run.\n");
    } else {
        md.push_str(&lines.join("\n"));
        md.push('\n');
    }
    md
}
