//! `churn`: several threads connect, subscribe, confirm and abort (RST via
//! `SO_LINGER` 0) in a loop for a fixed time. Afterwards the broker's
//! memory, and for corecast its gauges (via `STATS`), must be back to idle.
//! A one-second churn before the measured one is not counted, so costs paid
//! once (code paged in on first use, allocator arenas, pools sized) are not
//! mistaken for growth; a leak still grows with the measured cycles.

use std::{
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use socket2::SockRef;

use super::{wait_until, Meter, Target};
use crate::result::{ChurnFigures, Params, RunResult};

/// The corecast gauges that must return to their idle values.
pub const GAUGES: [&str; 4] = ["slots_in_use", "buffers_out", "tasks_alive", "subscriptions"];

/// The unmeasured churn before the measured one.
const WARMUP: Duration = Duration::from_secs(1);

/// One cycle: connect, subscribe, confirm, abort.
fn cycle(target: &Target, thread: usize, i: u64) -> anyhow::Result<()> {
    let mut conn = target.connect(&format!("churn-{thread}-{i}"), 4096)?;
    conn.subscribe(&format!("bench.churn.{thread}.{i}"))?;
    conn.confirm()?;
    SockRef::from(conn.stream()).set_linger(Some(Duration::ZERO))?;
    Ok(())
}

/// One thread's loop until `end`: (cycles, failures).
fn churner(
    target: &Target,
    thread: usize,
    end: Instant,
    first_error: &Mutex<Option<String>>,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        match cycle(target, thread, i) {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert_with(|| format!("{e:#}"));
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    (ok, failed)
}

/// Runs `threads` churners until `end`: (cycles, failures).
fn churn_all(
    target: &Target,
    threads: usize,
    end: Instant,
    first_error: &Mutex<Option<String>>,
) -> (u64, u64) {
    thread::scope(|s| {
        let handles: Vec<_> =
            (0..threads).map(|t| s.spawn(move || churner(target, t, end, first_error))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 1)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

/// The idle gauges from a `STATS` reply's totals.
fn gauges(stats: &serde_json::Value) -> serde_json::Value {
    let total = stats.get("total");
    GAUGES
        .iter()
        .map(|g| {
            (
                g.to_string(),
                total.and_then(|t| t.get(*g)).cloned().unwrap_or(serde_json::Value::Null),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Waits up to 5 s for corecast's gauges to read `want`: the last gauges
/// read, and whether they did; `Err` with the `STATS` error if they never
/// did and the last `STATS` failed. Other brokers have no gauges:
/// `(None, Ok(true))`.
fn settle_gauges(
    target: &Target,
    want: Option<&serde_json::Value>,
) -> (Option<serde_json::Value>, Result<bool, String>) {
    let (mut last, mut error) = (None, None);
    let settled = wait_until(Duration::from_secs(5), || match target.stats() {
        Ok(Some(s)) => {
            error = None;
            last = Some(gauges(&s));
            last.as_ref() == want
        }
        Ok(None) => true,
        Err(e) => {
            error = Some(format!("STATS: {e:#}"));
            false
        }
    });
    let settled = match error {
        Some(e) if !settled => Err(e),
        _ => Ok(settled),
    };
    (last, settled)
}

/// The case name of a churn run, e.g. `churn 20s x4`.
pub fn case_name(secs: f64, threads: usize) -> String {
    format!("churn {secs}s x{threads}")
}

/// The parameters a churn run records.
pub fn params(secs: f64, threads: usize) -> Params {
    Params { duration_s: Some(secs), threads: Some(threads), ..Params::default() }
}

/// Runs `threads` churn loops for `secs` seconds.
pub fn run(target: &Target, secs: f64, threads: usize) -> anyhow::Result<RunResult> {
    let proc = target.require_proc("churn")?;
    let mut result = target.result("churn", case_name(secs, threads), params(secs, threads));
    let idle = target.stats()?.map(|s| gauges(&s));
    churn_all(target, threads, Instant::now() + WARMUP, &Mutex::new(None));
    if let (_, Err(e)) = settle_gauges(target, idle.as_ref()) {
        result.errors.push(format!("after the warm-up: {e}"));
    }
    thread::sleep(Duration::from_millis(500));
    let before = target.stats()?.map(|s| gauges(&s));
    let rss_before_kib = proc.rss_kib()?;
    let first_error = &Mutex::new(None);
    let meter = Meter::start(target);
    let end = meter.started() + Duration::from_secs_f64(secs);
    let (cycles, failures) = churn_all(target, threads, end, first_error);
    result.seconds = meter.started().elapsed().as_secs_f64();
    meter.finish(&mut result);
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        result.errors.push(format!("{failures} failed cycles, first: {e}"));
    }
    let (after, settled) = settle_gauges(target, before.as_ref());
    match settled {
        Ok(true) => {}
        Ok(false) => {
            result.errors.push("corecast gauges not back to idle 5 s after the run".into())
        }
        Err(e) => result.errors.push(format!("after the run: {e}")),
    }
    let rss_after_kib = super::settle_rss(proc, target.settle)?.last().copied().unwrap_or(0);
    target.totals_into(&mut result);
    result.churn = Some(ChurnFigures {
        cycles,
        connects_per_s: cycles as f64 / result.seconds.max(1e-9),
        failures,
        rss_before_kib,
        rss_after_kib,
        rss_ratio: rss_after_kib as f64 / rss_before_kib.max(1) as f64,
        back_to_idle: before.as_ref().map(|b| Some(b) == after.as_ref()),
        gauges_before: before,
        gauges_after: after,
    });
    Ok(result)
}
