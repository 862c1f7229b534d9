//! `latency`: one publisher at a fixed rate for a fixed time, one
//! subscriber, end-to-end latency in HDR histograms.
//!
//! Each payload carries its intended (scheduled) send time and its actual
//! send time. The headline latency is receive time minus actual send time;
//! receive time minus intended send time and the publisher's lateness
//! (actual minus intended) are reported apart, so a late publisher shows up
//! as lateness rather than as broker latency. The first half second is a
//! warm-up at the same rate and is not recorded.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use super::{Meter, Target};
use crate::{
    clock,
    driver::{Driver, Recv},
    hist::Latency,
    payload::{Stamp, HEADER},
    result::{BenchUsage, BrokerUsage, LatencyFigures, Params, RunResult},
};

const TOPIC: &str = "bench.latency";

/// The three histograms a subscriber fills (nanoseconds, warm-up left
/// out), kept apart from the summaries so that several rounds can be
/// merged into one distribution.
#[derive(Debug, Clone, Default)]
pub struct Histograms {
    /// Messages received, warm-up included.
    pub received: u64,
    /// Receive time minus actual send time.
    pub latency: Latency,
    /// Receive time minus intended send time.
    pub from_intended: Latency,
    /// Actual minus intended send time.
    pub lateness: Latency,
}

impl Histograms {
    /// Adds the samples of `other`.
    pub fn merge(&mut self, other: &Histograms) {
        self.received += other.received;
        self.latency.merge(&other.latency);
        self.from_intended.merge(&other.from_intended);
        self.lateness.merge(&other.lateness);
    }
}

/// Subscriber loop: reads until it has `sent` (known once the publisher
/// is done) messages, `stop` is set, or `deadline`. Messages below
/// sequence `warmup` are counted but not recorded.
fn subscriber(
    mut conn: Box<dyn Driver>,
    warmup: u64,
    sent: &AtomicU64,
    publishing: &AtomicBool,
    stop: &AtomicBool,
    deadline: Instant,
) -> anyhow::Result<Histograms> {
    conn.stream().set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut h = Histograms::default();
    let mut stamps = Vec::new();
    while !stop.load(Relaxed) && Instant::now() < deadline {
        if !publishing.load(Relaxed) && h.received >= sent.load(Relaxed) {
            break;
        }
        let outcome = conn.receive(&mut |m| stamps.extend(Stamp::read(m.payload)))?;
        let now = clock::now_ns();
        for s in stamps.drain(..) {
            h.received += 1;
            if s.seq < warmup {
                continue;
            }
            h.latency.record(now.saturating_sub(s.sent_ns));
            h.from_intended.record(now.saturating_sub(s.intended_ns));
            h.lateness.record(s.sent_ns.saturating_sub(s.intended_ns));
        }
        if outcome == Recv::Closed {
            anyhow::bail!("broker closed the subscriber connection");
        }
    }
    Ok(h)
}

/// Publisher loop: message `i` is due at `start + i / rate`. Messages that
/// are due together (the publisher woke late) go out in one write, each
/// with its own intended time. `sent` counts the messages of every write
/// that went out, also when a later one fails.
fn publisher(
    conn: &mut dyn Driver,
    rate: u64,
    total: u64,
    size: usize,
    sent: &mut u64,
) -> anyhow::Result<()> {
    clock::tight_timer_slack();
    let interval = 1e9 / rate as f64;
    let start = clock::now_ns() + 5_000_000;
    let due = |i: u64| start + (i as f64 * interval) as u64;
    let mut payload = vec![0x5a; size];
    let mut batch = Vec::with_capacity(64 << 10);
    let mut i = 0;
    while i < total {
        clock::sleep_until(due(i));
        let now = clock::now_ns();
        while i < total && due(i) <= now && batch.len() < (60 << 10) {
            Stamp { publisher: 0, seq: i, sent_ns: now, intended_ns: due(i) }.write(&mut payload);
            conn.encode_publish(TOPIC, &payload, &mut batch);
            i += 1;
        }
        conn.publish_batch(&batch)?;
        batch.clear();
        *sent = i;
    }
    conn.flush()
}

/// The case name of a latency run, e.g. `latency 10k/s 64B`.
pub fn case_name(rate: u64, size: usize) -> String {
    format!("latency {}k/s {size}B", rate as f64 / 1000.0)
}

/// The parameters a latency run records.
pub fn params(rate: u64, secs: f64, size: usize) -> Params {
    Params { rate: Some(rate), duration_s: Some(secs), size: Some(size), ..Params::default() }
}

/// Runs the latency workload at `rate` messages/s for `secs` seconds.
pub fn run(target: &Target, rate: u64, secs: f64, size: usize) -> anyhow::Result<RunResult> {
    run_with_histograms(target, rate, secs, size).map(|(result, _)| result)
}

/// [`run`], also returning the histograms behind the result's summaries
/// (for [`merge_rounds`]).
pub fn run_with_histograms(
    target: &Target,
    rate: u64,
    secs: f64,
    size: usize,
) -> anyhow::Result<(RunResult, Histograms)> {
    anyhow::ensure!(size >= HEADER, "payload size must be at least {HEADER} bytes");
    anyhow::ensure!(rate > 0 && secs > 0.0, "rate and duration must be positive");
    let mut result = target.result("latency", case_name(rate, size), params(rate, secs, size));
    let mut sub = target.connect("lat-sub", 1 << 20)?;
    sub.subscribe(TOPIC)?;
    sub.confirm()?;
    let mut publisher_conn = target.connect("lat-pub", 64 << 10)?;
    let sent = Arc::new(AtomicU64::new(0));
    let publishing = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + target.timeout;
    let warmup = (rate / 2).max(1);
    let reader = {
        let (sent, publishing, stop) =
            (Arc::clone(&sent), Arc::clone(&publishing), Arc::clone(&stop));
        thread::spawn(move || subscriber(sub, warmup, &sent, &publishing, &stop, deadline))
    };
    let meter = Meter::start(target);
    let measured = (rate as f64 * secs).round() as u64;
    let mut total = 0;
    let published = publisher(publisher_conn.as_mut(), rate, warmup + measured, size, &mut total);
    let pub_secs = meter.started().elapsed().as_secs_f64();
    if let Err(e) = published {
        result.errors.push(format!("publisher after {total} messages: {e:#}"));
    }
    sent.store(total, Relaxed);
    publishing.store(false, Relaxed);
    let done = super::wait_until(Duration::from_secs(3), || reader.is_finished());
    stop.store(true, Relaxed);
    let histos = match reader.join() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            result.errors.push(format!("subscriber: {e:#}"));
            Histograms::default()
        }
        Err(_) => anyhow::bail!("subscriber thread panicked"),
    };
    result.seconds = pub_secs;
    meter.finish(&mut result);
    if !done || histos.received < total {
        result.errors.push(format!(
            "{} of {total} messages not received",
            total.saturating_sub(histos.received)
        ));
    }
    result.latency = Some(LatencyFigures {
        sent: total.saturating_sub(warmup),
        received: histos.received.saturating_sub(warmup),
        achieved_rate: total as f64 / pub_secs.max(1e-9),
        latency: histos.latency.summary(),
        from_intended: histos.from_intended.summary(),
        publisher_lateness: histos.lateness.summary(),
    });
    target.totals_into(&mut result);
    Ok((result, histos))
}

/// One round of a multi-round latency case: its result and, when the
/// workload ran, its histograms.
pub type Round = (RunResult, Option<Histograms>);

/// Merges the rounds of one broker and case into one result: percentiles
/// over the union of all rounds' samples; sent, received, `seconds` and CPU
/// seconds summed; achieved rate, broker cores, the bench's utilization and
/// other processes' cores (where known) averaged over the rounds that ran;
/// peak RSS the largest, RSS and corecast's counters the last round's;
/// errors prefixed with their round.
/// `None` when there are no rounds.
pub fn merge_rounds(rounds: &[Round]) -> Option<RunResult> {
    let measured: Vec<&RunResult> =
        rounds.iter().map(|(r, _)| r).filter(|r| r.latency.is_some()).collect();
    let mut merged = measured.first().copied().or(rounds.first().map(|(r, _)| r))?.clone();
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    merged.params.rounds = Some(rounds.len() as u32);
    merged.params.round = None;
    merged.seconds = rounds.iter().map(|(r, _)| r.seconds).sum();
    merged.errors = super::round_errors(rounds.iter().map(|(r, _)| r));
    merged.counters_after = rounds.iter().rev().find_map(|(r, _)| r.counters_after.clone());

    let figures: Vec<&LatencyFigures> =
        measured.iter().filter_map(|r| r.latency.as_ref()).collect();
    merged.latency = (!figures.is_empty()).then(|| {
        let mut all = Histograms::default();
        rounds.iter().filter_map(|(_, h)| h.as_ref()).for_each(|h| all.merge(h));
        LatencyFigures {
            sent: figures.iter().map(|f| f.sent).sum(),
            received: figures.iter().map(|f| f.received).sum(),
            achieved_rate: mean(&figures.iter().map(|f| f.achieved_rate).collect::<Vec<_>>()),
            latency: all.latency.summary(),
            from_intended: all.from_intended.summary(),
            publisher_lateness: all.lateness.summary(),
        }
    });

    let usages: Vec<&BrokerUsage> =
        rounds.iter().filter_map(|(r, _)| r.broker_usage.as_ref()).collect();
    merged.broker_usage = usages.last().map(|last| BrokerUsage {
        pid: last.pid,
        cpu_s: usages.iter().map(|u| u.cpu_s).sum(),
        cpu_cores: mean(&usages.iter().map(|u| u.cpu_cores).collect::<Vec<_>>()),
        peak_rss_kib: usages.iter().map(|u| u.peak_rss_kib).max().unwrap_or(0),
        rss_kib: last.rss_kib,
    });

    let bench: Vec<&BenchUsage> = measured.iter().map(|r| &r.bench_usage).collect();
    merged.bench_usage = BenchUsage {
        cpu_s: bench.iter().map(|b| b.cpu_s).sum(),
        cpus: bench.iter().map(|b| b.cpus).max().unwrap_or(0),
        utilization: mean(&bench.iter().map(|b| b.utilization).collect::<Vec<_>>()),
        others_cores: {
            let others: Vec<f64> = bench.iter().filter_map(|b| b.others_cores).collect();
            (!others.is_empty()).then(|| mean(&others))
        },
    };
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Kind;

    /// A finished round: `values` (µs) recorded in every histogram.
    fn round(values: &[u64], usage: (f64, f64, u64, u64), errors: &[&str]) -> Round {
        let target = Target {
            kind: Kind::Nats,
            addr: ([127, 0, 0, 1], 4222).into(),
            http: None,
            pid: None,
            timeout: Duration::from_secs(1),
            mode: Some("one".into()),
            settings: Some("defaults".into()),
            settle: Duration::from_secs(1),
            access: Default::default(),
            others: Vec::new(),
        };
        let params = Params { rate: Some(10_000), duration_s: Some(3.0), ..Params::default() };
        let mut r = target.result("latency", "latency 10k/s 64B".into(), params);
        let mut h = Histograms { received: values.len() as u64 + 10, ..Histograms::default() };
        for &v in values {
            h.latency.record(v * 1000);
            h.from_intended.record(v * 2000);
            h.lateness.record(v * 10);
        }
        let (cpu_s, cpu_cores, peak, rss) = usage;
        r.seconds = 3.5;
        r.latency = Some(LatencyFigures {
            sent: values.len() as u64,
            received: values.len() as u64,
            achieved_rate: 9_000.0 + cpu_s * 1000.0,
            latency: h.latency.summary(),
            from_intended: h.from_intended.summary(),
            publisher_lateness: h.lateness.summary(),
        });
        r.broker_usage = Some(BrokerUsage {
            pid: peak as u32,
            cpu_s,
            cpu_cores,
            peak_rss_kib: peak,
            rss_kib: rss,
        });
        r.bench_usage = BenchUsage {
            cpu_s: cpu_s / 2.0,
            cpus: 1,
            utilization: cpu_cores,
            others_cores: Some(0.1),
        };
        r.counters_after = Some(serde_json::json!({ "published": peak }));
        r.errors = errors.iter().map(|e| e.to_string()).collect();
        (r, Some(h))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn rounds_merge_into_one_result() {
        let a: Vec<u64> = (1..=1000).collect();
        let b: Vec<u64> = (1..=1000).map(|v| v * 3).collect();
        let c: Vec<u64> = vec![50; 500];
        let rounds = vec![
            round(&a, (1.0, 0.2, 3000, 2800), &[]),
            round(&b, (2.0, 0.4, 5000, 4000), &["1 of 1000 messages not received"]),
            round(&c, (3.0, 0.9, 4000, 3900), &["x", "y"]),
        ];
        let m = merge_rounds(&rounds).expect("three rounds");
        assert_eq!(m.params.rounds, Some(3));
        assert_eq!(m.params.rate, Some(10_000));
        assert!(close(m.seconds, 10.5), "{}", m.seconds);

        // Percentiles over every sample of every round.
        let mut all = Latency::new();
        a.iter().chain(&b).chain(&c).for_each(|&v| all.record(v * 1000));
        let l = m.latency.as_ref().expect("latency figures");
        assert_eq!(l.latency, all.summary());
        assert_eq!(l.latency.count, 2500);
        assert!(l.latency.max_us >= 2990.0 && l.latency.max_us <= 3010.0, "{:?}", l.latency);
        assert_eq!(l.from_intended.count, 2500);
        assert_eq!(l.publisher_lateness.count, 2500);
        assert_eq!((l.sent, l.received), (2500, 2500));
        assert!(close(l.achieved_rate, 11_000.0), "{}", l.achieved_rate);

        let u = m.broker_usage.as_ref().expect("broker usage");
        assert!(close(u.cpu_s, 6.0));
        assert!(close(u.cpu_cores, 0.5));
        assert_eq!(u.peak_rss_kib, 5000);
        assert_eq!(u.rss_kib, 3900);
        assert_eq!(u.pid, 4000);

        assert!(close(m.bench_usage.cpu_s, 3.0));
        assert!(close(m.bench_usage.utilization, 0.5));
        assert!(m.bench_usage.others_cores.is_some_and(|x| close(x, 0.1)));
        assert_eq!(m.bench_usage.cpus, 1);

        assert_eq!(m.counters_after, Some(serde_json::json!({ "published": 4000 })));
        assert_eq!(
            m.errors,
            ["round 2: 1 of 1000 messages not received", "round 3: x", "round 3: y"]
        );
    }

    #[test]
    fn failed_rounds_add_errors_but_no_samples() {
        let a: Vec<u64> = (1..=100).collect();
        let ok = round(&a, (1.0, 0.2, 3000, 2800), &[]);
        let mut failed = ok.0.clone();
        failed.latency = None;
        failed.broker_usage = None;
        failed.counters_after = None;
        failed.seconds = 0.0;
        failed.bench_usage = BenchUsage::default();
        failed.errors = vec!["nats-server exited at start-up".into()];
        let m = merge_rounds(&[ok.clone(), (failed, None)]).expect("two rounds");
        assert_eq!(m.params.rounds, Some(2));
        assert_eq!(m.latency.as_ref().map(|l| l.latency), ok.0.latency.as_ref().map(|l| l.latency));
        assert!(close(m.bench_usage.utilization, 0.2));
        assert_eq!(m.counters_after, ok.0.counters_after);
        assert_eq!(m.errors, ["round 2: nats-server exited at start-up"]);

        // A single round is its own result.
        let one = merge_rounds(std::slice::from_ref(&ok)).expect("one round");
        assert_eq!(
            one.to_line().expect("json").replace(",\"rounds\":1", ""),
            ok.0.to_line().expect("json")
        );
        assert!(merge_rounds(&[]).is_none());
    }
}
