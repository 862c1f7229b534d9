//! `handshakes`: connection set-ups per second. A few threads share a
//! bounded count of set-ups; each one connects, makes a full TLS handshake
//! when the target speaks TLS (no session resumption), runs the protocol's
//! greeting (corecast `HELLO`/`WELCOME`; NATS `INFO`, then TLS, then
//! `CONNECT` and a `PING`/`PONG`) and closes. The broker's CPU per set-up
//! comes from its pid.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread,
    time::Instant,
};

use super::{Meter, Target};
use crate::result::{HandshakeFigures, Params, RunResult};

/// Human name of the case.
pub fn case_name(count: u64, threads: usize) -> String {
    format!("handshakes {count} x{threads} threads")
}

/// The parameters a run records.
pub fn params(count: u64, threads: usize) -> Params {
    Params { conns: Some(count as usize), threads: Some(threads), ..Params::default() }
}

/// Runs `count` set-ups over `threads` threads, bounded by the target's
/// timeout.
pub fn run(target: &Target, count: u64, threads: usize) -> anyhow::Result<RunResult> {
    anyhow::ensure!(threads > 0, "at least one thread");
    let mut result = target.result("handshakes", case_name(count, threads), params(count, threads));
    let next = Arc::new(AtomicU64::new(0));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let session: Arc<Mutex<Option<String>>> = Arc::default();
    let deadline = Instant::now() + target.timeout;
    let meter = Meter::start(target);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (target, next) = (target.clone(), Arc::clone(&next));
            let (done, failed, first_error, session) = (
                Arc::clone(&done),
                Arc::clone(&failed),
                Arc::clone(&first_error),
                Arc::clone(&session),
            );
            thread::spawn(move || {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= count {
                        break;
                    }
                    match target.connect(&format!("hs-{t}-{i}"), 4096) {
                        Ok(conn) => {
                            if i == 0 {
                                *session.lock().unwrap_or_else(|p| p.into_inner()) =
                                    conn.tls_session();
                            }
                            drop(conn);
                            done.fetch_add(1, Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        if h.join().is_err() {
            result.errors.push("handshake thread panicked".into());
        }
    }
    result.seconds = meter.started().elapsed().as_secs_f64();
    meter.finish(&mut result);
    let (handshakes, failures) = (done.load(Relaxed), failed.load(Relaxed));
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        result.errors.push(format!("{failures} set-ups failed; the first: {e}"));
    }
    if handshakes + failures < count {
        result.errors.push(format!(
            "stopped at the run's deadline after {} of {count} set-ups",
            handshakes + failures
        ));
    }
    let broker_cpu_us = result
        .broker_usage
        .as_ref()
        .filter(|_| handshakes > 0)
        .map(|u| u.cpu_s * 1e6 / handshakes as f64);
    result.handshakes = Some(HandshakeFigures {
        handshakes,
        per_s: handshakes as f64 / result.seconds.max(1e-9),
        failures,
        tls: target.access.tls.is_some(),
        tls_session: session.lock().unwrap_or_else(|p| p.into_inner()).take(),
        broker_cpu_us,
    });
    Ok(result)
}

/// Merges the rounds of one broker: the round with the median set-ups/s
/// (the lower middle of an even count), with every round's errors and the
/// most failures of any round. `None` when there are no rounds.
pub fn merge_rounds(rounds: &[RunResult]) -> Option<RunResult> {
    let rate = |r: &RunResult| r.handshakes.as_ref().map_or(0.0, |h| h.per_s);
    let mut merged = super::median_round(rounds, rate)?;
    if let Some(h) = merged.handshakes.as_mut() {
        h.failures = rounds
            .iter()
            .filter_map(|r| r.handshakes.as_ref())
            .map(|h| h.failures)
            .max()
            .unwrap_or(0);
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ups_against_nothing_fail_and_say_so() {
        // Nothing listens on port 0 of the test target.
        let target = Target::for_tests(crate::driver::Kind::Corecast);
        let r = run(&target, 3, 2).expect("a result");
        let h = r.handshakes.as_ref().expect("figures");
        assert_eq!((h.handshakes, h.failures, h.tls), (0, 3, false));
        assert!(r.errors[0].starts_with("3 set-ups failed"), "{:?}", r.errors);
        assert!(r.case.starts_with(&r.workload));
    }

    #[test]
    fn rounds_merge_to_the_median() {
        let target = Target::for_tests(crate::driver::Kind::Nats);
        let round = |per_s: f64, failures: u64| {
            let mut r = target.result("handshakes", case_name(10, 1), params(10, 1));
            r.handshakes =
                Some(HandshakeFigures { handshakes: 10, per_s, failures, ..Default::default() });
            r
        };
        let m = merge_rounds(&[round(300.0, 0), round(100.0, 2), round(200.0, 0)]).expect("merged");
        let h = m.handshakes.expect("figures");
        assert_eq!((h.per_s, h.failures, m.params.rounds), (200.0, 2, Some(3)));
        assert!(merge_rounds(&[]).is_none());
    }
}
