//! The routing cases in the report: one table side by side with ratios to
//! nats-server and the targets, the request/reply details, memory per
//! subscription, and their target verdicts.

use std::fmt::Write as _;

use super::{
    bench_col, broker_cols, errors_col, find, flow_cell, flow_side, mib, missing, server_name, si,
    Outcome, Side, Verdict,
};
use crate::{driver::Kind, result::RunResult, workload::routing};

/// The workloads of the routing cases, in report order.
const WORKLOADS: [&str; 4] = ["wildcard", "queue", "request", "topics"];

/// One line of the routing table: what is measured, each broker's cell,
/// the figure the ratio is taken of, and the target.
struct Metric {
    label: &'static str,
    cell: fn(&RunResult) -> String,
    value: fn(&RunResult) -> Option<f64>,
    target: &'static str,
}

fn delivered(r: &RunResult) -> Option<f64> {
    r.flow.as_ref().filter(|f| f.delivered > 0).map(|f| f.delivered_per_s)
}

fn per_sub(r: &RunResult) -> Option<f64> {
    r.subs_memory.as_ref().filter(|m| m.subscriptions > 0).map(|m| m.rss_per_sub_bytes)
}

fn per_sub_cell(r: &RunResult) -> String {
    per_sub(r).map_or_else(|| "failed".into(), |b| format!("{b:.0} B"))
}

fn round_trips(r: &RunResult) -> Option<f64> {
    r.request.as_ref().filter(|f| f.answered > 0).map(|f| f.round_trips_per_s)
}

/// Round trips/s, with the requests left without a reply.
fn round_trips_cell(r: &RunResult) -> String {
    let Some(f) = &r.request else { return "failed".into() };
    let mut cell = si(f.round_trips_per_s);
    let lost = f.timed_out + f.no_responders + f.unanswered;
    if lost > 0 {
        let _ = write!(cell, ", {lost} unanswered");
    }
    if lost == 0 && !r.errors.is_empty() {
        cell.push_str(", failed");
    }
    cell
}

fn p99(r: &RunResult) -> Option<f64> {
    r.request.as_ref().filter(|f| f.answered > 0).map(|f| f.round_trip.p99_us)
}

fn p99_cell(r: &RunResult) -> String {
    p99(r).map_or_else(|| "failed".into(), |us| format!("{us:.0} µs"))
}

/// The lines of the routing table for `workload`.
fn metrics(workload: &str) -> Vec<Metric> {
    let delivered_metric =
        |target| Metric { label: "delivered/s", cell: flow_cell, value: delivered, target };
    match workload {
        "wildcard" => vec![delivered_metric("≥ 2×")],
        "queue" => {
            vec![Metric { label: "delivered/s, each to one member", ..delivered_metric("≥ 2×") }]
        }
        "request" => vec![
            Metric {
                label: "round trips/s",
                cell: round_trips_cell,
                value: round_trips,
                target: "≥ 1.5×",
            },
            Metric { label: "p99 round trip", cell: p99_cell, value: p99, target: "-" },
        ],
        "topics" => vec![
            delivered_metric("-"),
            Metric {
                label: "broker RSS per subscription",
                cell: per_sub_cell,
                value: per_sub,
                target: "≤ 1×",
            },
        ],
        _ => Vec::new(),
    }
}

/// The routing runs of `runs`, in report order.
fn routing_runs<'a>(runs: &[&'a RunResult]) -> Vec<&'a RunResult> {
    WORKLOADS.iter().flat_map(|w| runs.iter().copied().filter(move |r| r.workload == *w)).collect()
}

/// The routing cases side by side: each broker's figure (or why it did not
/// run), corecast over nats-server, and the target for that ratio.
pub(super) fn table(runs: &[&RunResult]) -> String {
    let routed = routing_runs(runs);
    if routed.is_empty() {
        return String::new();
    }
    let brokers: Vec<Kind> =
        Kind::ALL.into_iter().filter(|k| runs.iter().any(|r| r.broker == *k)).collect();
    let mut md = String::from("\n### Routing: wildcards, queue groups, requests, many topics\n\nEach broker at its shipped defaults, started fresh for each case; corecast speaks protocol 1.1 where a case needs it. The ratio is corecast's figure over nats-server's in the same run; the target applies to it.\n\n| case | measure |");
    for k in &brokers {
        let _ = write!(md, " {} |", server_name(*k));
    }
    md.push_str(" corecast / nats | target |\n|---|---|");
    md.push_str(&"--:|".repeat(brokers.len() + 1));
    md.push_str("---|\n");
    for case in super::distinct(routed.iter().map(|r| (r.workload.clone(), r.case.clone()))) {
        let of = |k: Kind| routed.iter().copied().find(|r| r.broker == k && r.case == case.1);
        for m in metrics(&case.0) {
            let _ = write!(md, "| {} | {} |", case.1, m.label);
            for k in &brokers {
                let cell = match of(*k) {
                    Some(r) => (m.cell)(r),
                    None => routing::unsupported(*k, &case.0)
                        .map_or_else(|| "-".to_owned(), |why| format!("skipped: {why}")),
                };
                let _ = write!(md, " {cell} |");
            }
            let value = |k| of(k).and_then(m.value);
            let ratio = match (value(Kind::Corecast), value(Kind::Nats)) {
                (Some(c), Some(n)) if n > 0.0 => format!("{:.2}×", c / n),
                _ => "-".into(),
            };
            let _ = writeln!(md, " {ratio} | {} |", m.target);
        }
    }
    md
}

/// The request/reply runs in detail.
pub(super) fn request_table(runs: &[&RunResult]) -> String {
    let reqs: Vec<&RunResult> = runs.iter().copied().filter(|r| r.workload == "request").collect();
    if reqs.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n### Request/reply (µs; request sent to its reply read)\n\n| case | broker | round trips/s | p50 | p90 | p99 | p99.9 | max | answered / sent | timed out / no responders / outstanding | stray replies | per responder fewest–most | broker CPU s | broker peak RSS MiB | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for r in reqs {
        let Some(f) = &r.request else {
            let _ = writeln!(
                md,
                "| {} | {} | failed | - | - | - | - | - | - | - | - | - | {} | {} |",
                r.case,
                r.broker,
                broker_cols(r),
                errors_col(r)
            );
            continue;
        };
        let l = &f.round_trip;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} / {} | {} / {} / {} | {} | {}–{} | {} | {} |",
            r.case,
            r.broker,
            si(f.round_trips_per_s),
            l.p50_us,
            l.p90_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            f.answered,
            f.sent,
            f.timed_out,
            f.no_responders,
            f.unanswered,
            f.stray_replies,
            f.per_responder_min,
            f.per_responder_max,
            broker_cols(r),
            errors_col(r)
        );
    }
    md
}

/// Broker memory per subscription, from the `topics` runs.
pub(super) fn topics_table(runs: &[&RunResult]) -> String {
    let topics: Vec<&RunResult> = runs.iter().copied().filter(|r| r.workload == "topics").collect();
    if topics.is_empty() {
        return String::new();
    }
    let mut md = String::from("\n### Memory per subscription (topics)\n\nBroker RSS with every subscriber connection open and nothing subscribed, against RSS with every subscription confirmed, once settled (before any message is published).\n\n| case | broker | subscriptions | RSS before MiB | RSS after MiB (settled after s) | RSS per subscription | bench CPU | problems |\n|---|---|--:|--:|--:|--:|--:|---|\n");
    for r in topics {
        let figures = match &r.subs_memory {
            Some(m) => format!(
                "{} | {} | {} ({:.1}) | {:.0} B",
                m.subscriptions,
                mib(m.rss_before_kib),
                mib(m.rss_after_kib),
                m.rss_samples_kib.len().saturating_sub(1) as f64 * 0.5,
                m.rss_per_sub_bytes
            ),
            None => "failed | - | - | -".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {figures} | {} | {} |",
            r.case,
            r.broker,
            bench_col(r),
            errors_col(r)
        );
    }
    md
}

/// Notes on how the routing cases ran, when there are routing results.
pub(super) fn notes(results: &[RunResult]) -> Vec<String> {
    let ran = |k: Kind, w: &str| results.iter().any(|r| r.broker == k && r.workload == w);
    let mut notes = Vec::new();
    if ran(Kind::Redis, "wildcard") {
        notes.push(routing::REDIS_GLOB_NOTE.to_owned());
    }
    let any_redis = results.iter().any(|r| r.broker == Kind::Redis);
    let skipped: Vec<&str> = ["queue", "request"]
        .into_iter()
        .filter(|w| results.iter().any(|r| r.workload == *w) && !ran(Kind::Redis, w))
        .collect();
    if any_redis && !skipped.is_empty() {
        notes.push(format!(
            "redis-server does not run {}: Redis pub/sub has no queue groups (and no reply-to for requests)",
            skipped.join(" or ")
        ));
    }
    if WORKLOADS.iter().any(|w| results.iter().any(|r| r.workload == *w)) {
        notes.push(format!(
            "routing cases: corecast speaks protocol 1.1 in `wildcard`, `queue` and `request` (in `request` its requests carry the 1.1 request flag, as its own clients send them; nats-server gets `PUB subject reply`); `topics` uses literal topics only, in version 1 sessions; a `request` requester waits at most {} s for a reply before it counts the request as timed out and sends its next one",
            crate::workload::request::REQUEST_TIMEOUT.as_secs()
        ));
    }
    notes
}

/// Request/reply: round trips/s at least `factor` × nats-server's, every
/// request answered.
pub(super) fn request_target(runs: &[&RunResult], factor: f64) -> Verdict {
    let side = |k| {
        Side::of(find(runs, k, "request", |_| true), |r| {
            r.request
                .as_ref()
                .filter(|f| f.answered > 0)
                .map(|f| (f.round_trips_per_s, f.round_trip.p99_us))
        })
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let target =
        format!("request: round trips/s ≥ {factor}× nats-server's, every request answered");
    let fig = |(rate, p99): &(f64, f64)| format!("{}/s, p99 {p99:.0} µs", si(*rate));
    let (measure, outcome) = match (&c, &n) {
        (Side::Measured((c, _)), Side::Measured((n, _))) => {
            let ratio = c / n.max(1e-9);
            (format!("{ratio:.2}×"), Outcome::of(ratio >= factor))
        }
        _ => missing(&c, &n),
    };
    (target, c.show(fig), n.show(fig), measure, outcome)
}

/// Many topics: broker RSS per subscription at most nats-server's, and the
/// run clean.
pub(super) fn topics_target(runs: &[&RunResult]) -> Verdict {
    let side = |k| {
        let run = find(runs, k, "topics", |_| true);
        match flow_side(run) {
            Side::Measured(_) => run
                .and_then(per_sub)
                .map_or_else(|| Side::Failed("no memory figure".into()), Side::Measured),
            Side::Failed(why) => Side::Failed(why),
            Side::NotRun => Side::NotRun,
        }
    };
    let (c, n) = (side(Kind::Corecast), side(Kind::Nats));
    let target =
        "topics: broker RSS per subscription ≤ nats-server's, nothing lost, nobody cut".to_owned();
    let fig = |b: &f64| format!("{b:.0} B");
    let (measure, outcome) = match (&c, &n) {
        (Side::Measured(c), Side::Measured(n)) => {
            (format!("{:.2}×", c / n.max(1e-9)), Outcome::of(c <= n))
        }
        _ => missing(&c, &n),
    };
    (target, c.show(fig), n.show(fig), measure, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{Flow, Params, RequestFigures, SubsMemory};

    fn run(kind: Kind, workload: &str, case: &str) -> RunResult {
        let target = crate::workload::Target::for_tests(kind);
        target.result(workload, case.into(), Params::default())
    }

    fn flow(kind: Kind, workload: &str, per_s: f64) -> RunResult {
        let mut r = run(kind, workload, &format!("{workload} case"));
        r.flow =
            Some(Flow { delivered_per_s: per_s, delivered: 10, expected: 10, ..Flow::default() });
        r
    }

    fn request(kind: Kind, per_s: f64, p99_us: f64) -> RunResult {
        let mut r = run(kind, "request", "request 8->4 64B");
        let round_trip = crate::hist::Summary { count: 10, p99_us, ..Default::default() };
        r.request = Some(RequestFigures {
            sent: 10,
            answered: 10,
            round_trips_per_s: per_s,
            round_trip,
            ..RequestFigures::default()
        });
        r
    }

    fn topics(kind: Kind, per_sub: f64) -> RunResult {
        let mut r = flow(kind, "topics", 1e6);
        r.subs_memory = Some(SubsMemory {
            subscriptions: 100,
            rss_per_sub_bytes: per_sub,
            ..Default::default()
        });
        r
    }

    #[test]
    fn the_table_has_ratios_targets_and_skipped_brokers() {
        let results = [
            flow(Kind::Corecast, "queue", 3e6),
            flow(Kind::Nats, "queue", 1e6),
            request(Kind::Corecast, 90e3, 50.0),
            request(Kind::Nats, 40e3, 200.0),
            topics(Kind::Corecast, 100.0),
            topics(Kind::Nats, 400.0),
            topics(Kind::Redis, 150.0),
        ];
        let runs: Vec<&RunResult> = results.iter().collect();
        let md = table(&runs);
        assert!(
            md.contains("| queue case | delivered/s, each to one member | 3.00M | 1.00M | skipped: Redis pub/sub has no queue groups | 3.00× | ≥ 2× |"),
            "{md}"
        );
        assert!(md.contains("| request 8->4 64B | round trips/s | 90k | 40k | skipped: Redis pub/sub has no queue groups and no reply-to | 2.25× | ≥ 1.5× |"), "{md}");
        assert!(md.contains("| request 8->4 64B | p99 round trip | 50 µs | 200 µs |"), "{md}");
        assert!(md.contains("| topics case | broker RSS per subscription | 100 B | 400 B | 150 B | 0.25× | ≤ 1× |"), "{md}");
        assert!(request_table(&runs).contains("| request 8->4 64B | corecast | 90k |"));
        assert!(topics_table(&runs).contains("| topics case | corecast | 100 |"));
        let notes = notes(&results);
        assert!(notes[0].starts_with("redis-server does not run queue or request"), "{notes:?}");
    }

    #[test]
    fn routing_targets() {
        use Outcome::*;
        let verdict = |c: RunResult, n: RunResult| request_target(&[&c, &n], 1.5).4;
        assert_eq!(
            verdict(request(Kind::Corecast, 60e3, 1.0), request(Kind::Nats, 40e3, 1.0)),
            Pass
        );
        assert_eq!(
            verdict(request(Kind::Corecast, 50e3, 1.0), request(Kind::Nats, 40e3, 1.0)),
            Fail
        );
        let mut unanswered = request(Kind::Corecast, 90e3, 1.0);
        unanswered.errors.push("1 requests without a reply".into());
        assert_eq!(verdict(unanswered, request(Kind::Nats, 40e3, 1.0)), Fail);

        let verdict = |c: RunResult, n: RunResult| topics_target(&[&c, &n]).4;
        assert_eq!(verdict(topics(Kind::Corecast, 100.0), topics(Kind::Nats, 400.0)), Pass);
        assert_eq!(verdict(topics(Kind::Corecast, 500.0), topics(Kind::Nats, 400.0)), Fail);
        let mut lossy = topics(Kind::Corecast, 100.0);
        lossy.flow.as_mut().expect("flow").lost = 3;
        assert_eq!(verdict(lossy, topics(Kind::Nats, 400.0)), Fail);
        let mut no_memory = topics(Kind::Corecast, 100.0);
        no_memory.subs_memory = None;
        assert_eq!(verdict(no_memory, topics(Kind::Nats, 400.0)), Fail);
    }
}
