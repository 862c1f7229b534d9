//! The WebSocket churn: a few threads open sessions (TCP connect, the
//! upgrade, `HELLO` and `WELCOME`) and abort them (`SO_LINGER` 0: a reset,
//! no close frame), a fixed count of cycles in all, bounded in time. A
//! warm-up of 10 000 cycles comes first, so that costs paid once (code
//! paged in, allocator arenas, pools sized: a fresh broker grows by a few
//! MiB over its first ~10 000 cycles, then stays flat) are not taken for
//! growth, while a leak still grows with the cycles measured (ten times
//! as many in the full run); RSS "before" is read after it, and RSS at
//! start is reported beside it.
//! Afterwards every gauge of `/stats` must read what it read on the fresh
//! broker, and RSS must be within 10% of "before".

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use socket2::SockRef;

use super::{counters, Sizes};
use crate::{
    servers::Server,
    sys::Proc,
    workload::{settle_rss, wait_until, Target},
};

/// The gauges that must come back to their idle values.
pub const GAUGES: [&str; 9] = [
    "connections_open",
    "slots_in_use",
    "web_connections",
    "tasks_alive",
    "memory_used",
    "buffers_out",
    "pending_bytes",
    "subscriptions",
    "tls_connections",
];
/// Counters whose increase over the measured churn is reported.
pub const COUNTED: [&str; 7] = [
    "ws_sessions",
    "connections_accepted",
    "web_refusals",
    "ws_protocol_closes",
    "handshake_timeouts",
    "protocol_errors",
    "task_panics",
];
/// Longest a churn may run, warm-up or measured.
const LIMIT: Duration = Duration::from_secs(180);
/// Longest wait for the gauges to come back after a churn.
const SETTLE: Duration = Duration::from_secs(10);

/// What the churn measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnRun {
    /// Cycles asked for, and cycles completed (warm-up not counted).
    pub target_cycles: u64,
    pub cycles: u64,
    /// Cycles that failed; the first failure.
    pub failures: u64,
    pub first_error: Option<String>,
    /// Concurrent loops.
    pub threads: usize,
    /// Cycles of the warm-up.
    pub warmup_cycles: u64,
    /// Wall seconds of the measured churn, and cycles per second.
    pub seconds: f64,
    pub cycles_per_s: f64,
    /// Broker CPU seconds per cycle, µs.
    pub broker_cpu_us_per_cycle: f64,
    /// RSS of the fresh broker, after the warm-up ("before") and once
    /// settled after the churn, KiB; after / before.
    pub rss_start_kib: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_ratio: f64,
    /// [`GAUGES`] on the fresh broker, and after the churn.
    pub gauges_idle: BTreeMap<String, u64>,
    pub gauges_after: BTreeMap<String, u64>,
    /// Whether every gauge read its idle value again, and how long after
    /// the last cycle it first did.
    pub back_to_idle: bool,
    pub settled_after_s: Option<f64>,
    /// [`COUNTED`]'s increase over the measured churn.
    pub counted: BTreeMap<String, u64>,
    /// `memory_cached` before and after (free chunks kept for reuse).
    pub memory_cached_before: u64,
    pub memory_cached_after: u64,
    /// Problems seen.
    pub errors: Vec<String>,
}

/// One cycle: open a session, then abort it.
fn cycle(target: &Target, name: &str) -> anyhow::Result<()> {
    let conn = target.connect(name, 4096)?;
    SockRef::from(conn.stream()).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

/// `threads` loops sharing `cycles` cycles, until done or `LIMIT`:
/// (completed, failed, first error).
fn churn(target: &Target, cycles: u64, threads: usize) -> (u64, u64, Option<String>) {
    let (next, ok, failed) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let first_error = Mutex::new(None);
    let end = Instant::now() + LIMIT;
    thread::scope(|s| {
        for t in 0..threads {
            let (next, ok, failed, first_error) = (&next, &ok, &failed, &first_error);
            s.spawn(move || {
                while next.fetch_add(1, Relaxed) < cycles && Instant::now() < end {
                    match cycle(target, &format!("churn-{t}")) {
                        Ok(()) => ok.fetch_add(1, Relaxed),
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert_with(|| format!("{e:#}"));
                            }
                            thread::sleep(Duration::from_millis(5));
                            failed.fetch_add(1, Relaxed)
                        }
                    };
                }
            });
        }
    });
    (ok.into_inner(), failed.into_inner(), first_error.into_inner().ok().flatten())
}

/// `names` out of `all`; each must be there.
fn pick(all: &BTreeMap<String, u64>, names: &[&str]) -> anyhow::Result<BTreeMap<String, u64>> {
    names
        .iter()
        .map(|n| {
            let v = all.get(*n).with_context(|| format!("/stats has no gauge {n}"))?;
            Ok((n.to_string(), *v))
        })
        .collect()
}

/// Longest wait for the start-up probe's connection to be gone.
const PROBE_GONE: Duration = Duration::from_secs(5);

/// Waits up to [`SETTLE`] for the gauges to read `idle`: the last
/// counters read, and how long it took (`None`: they never did).
fn settle(
    target: &Target,
    idle: &BTreeMap<String, u64>,
    errors: &mut Vec<String>,
) -> (BTreeMap<String, u64>, Option<f64>) {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    let done = wait_until(SETTLE, || match counters(target) {
        Ok(c) => {
            let done = pick(&c, &GAUGES).is_ok_and(|g| &g == idle);
            last = c;
            done
        }
        Err(_) => false,
    });
    if last.is_empty() {
        errors.push("/stats could not be read after the churn".into());
    }
    (last, done.then(|| start.elapsed().as_secs_f64()))
}

/// Runs the churn against `server`.
pub fn run(server: &Server, target: &Target, sizes: &Sizes) -> ChurnRun {
    let mut out = ChurnRun {
        target_cycles: sizes.churn_cycles,
        threads: sizes.churn_threads,
        ..ChurnRun::default()
    };
    if let Err(e) = measure(server, target, sizes, &mut out) {
        out.errors.push(format!("{e:#}"));
    }
    out
}

fn measure(
    server: &Server,
    target: &Target,
    sizes: &Sizes,
    out: &mut ChurnRun,
) -> anyhow::Result<()> {
    let proc = Proc { pid: server.pid };
    out.rss_start_kib = proc.rss_kib()?;
    // The idle gauges are read once the start-up probe's connection is gone.
    let gone = |c: &BTreeMap<String, u64>| {
        c.get("connections_open") == Some(&0) && c.get("web_connections") == Some(&0)
    };
    if !wait_until(PROBE_GONE, || counters(target).is_ok_and(|c| gone(&c))) {
        out.errors.push(format!(
            "connections_open and web_connections not both 0 within {} s of start",
            PROBE_GONE.as_secs()
        ));
    }
    out.gauges_idle = pick(&counters(target)?, &GAUGES)?;
    let (warm, _, _) = churn(target, sizes.churn_warmup, sizes.churn_threads);
    out.warmup_cycles = warm;
    let (_, settled) = settle(target, &out.gauges_idle, &mut out.errors);
    anyhow::ensure!(settled.is_some(), "the gauges were not back to idle after the warm-up");
    out.rss_before_kib = settle_rss(proc, Duration::from_secs(1))?.last().copied().unwrap_or(0);
    let before = counters(target)?;
    let (cpu, start) = (proc.cpu_seconds()?, Instant::now());
    (out.cycles, out.failures, out.first_error) =
        churn(target, sizes.churn_cycles, sizes.churn_threads);
    out.seconds = start.elapsed().as_secs_f64();
    out.cycles_per_s = out.cycles as f64 / out.seconds.max(1e-9);
    out.broker_cpu_us_per_cycle = (proc.cpu_seconds()? - cpu) * 1e6 / out.cycles.max(1) as f64;
    let (after, settled) = settle(target, &out.gauges_idle, &mut out.errors);
    (out.back_to_idle, out.settled_after_s) = (settled.is_some(), settled);
    out.gauges_after = pick(&after, &GAUGES)?;
    let delta = |n: &&str| Some((n.to_string(), after.get(*n)?.saturating_sub(*before.get(*n)?)));
    out.counted = COUNTED.iter().filter_map(delta).collect();
    out.memory_cached_before = before.get("memory_cached").copied().unwrap_or(0);
    out.memory_cached_after = after.get("memory_cached").copied().unwrap_or(0);
    out.rss_after_kib = settle_rss(proc, target.settle)?.last().copied().unwrap_or(0);
    out.rss_ratio = out.rss_after_kib as f64 / out.rss_before_kib.max(1) as f64;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gauge_must_be_in_the_stats() {
        let all: BTreeMap<String, u64> =
            GAUGES.iter().map(|g| (g.to_string(), 0)).chain([("other".into(), 5)]).collect();
        assert_eq!(pick(&all, &GAUGES).expect("all there").len(), GAUGES.len());
        let mut short = all.clone();
        short.remove("tasks_alive");
        let err = pick(&short, &GAUGES).expect_err("one missing");
        assert!(format!("{err:#}").contains("tasks_alive"), "{err:#}");
    }
}
