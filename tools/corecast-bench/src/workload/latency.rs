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
    result::{LatencyFigures, Params, RunResult},
};

const TOPIC: &str = "bench.latency";

/// The three histograms a subscriber fills.
#[derive(Debug, Default)]
struct Histos {
    received: u64,
    latency: Latency,
    from_intended: Latency,
    lateness: Latency,
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
) -> anyhow::Result<Histos> {
    conn.stream().set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut h = Histos::default();
    let mut stamps = Vec::new();
    while !stop.load(Relaxed) && Instant::now() < deadline {
        if !publishing.load(Relaxed) && h.received >= sent.load(Relaxed) {
            break;
        }
        let outcome = conn.receive(&mut |_, payload| stamps.extend(Stamp::read(payload)))?;
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
/// with its own intended time. Returns messages sent.
fn publisher(conn: &mut dyn Driver, rate: u64, total: u64, size: usize) -> anyhow::Result<u64> {
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
    }
    conn.flush()?;
    Ok(total)
}

/// Runs the latency workload at `rate` messages/s for `secs` seconds.
pub fn run(target: &Target, rate: u64, secs: f64, size: usize) -> anyhow::Result<RunResult> {
    anyhow::ensure!(size >= HEADER, "payload size must be at least {HEADER} bytes");
    anyhow::ensure!(rate > 0 && secs > 0.0, "rate and duration must be positive");
    let params =
        Params { rate: Some(rate), duration_s: Some(secs), size: Some(size), ..Params::default() };
    let mut result =
        target.result("latency", format!("latency {}k/s {size}B", rate as f64 / 1000.0), params);
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
    let published = publisher(publisher_conn.as_mut(), rate, warmup + measured, size);
    let pub_secs = meter.started().elapsed().as_secs_f64();
    let total = match &published {
        Ok(n) => *n,
        Err(e) => {
            result.errors.push(format!("publisher: {e:#}"));
            0
        }
    };
    sent.store(total, Relaxed);
    publishing.store(false, Relaxed);
    let done = super::wait_until(Duration::from_secs(3), || reader.is_finished());
    stop.store(true, Relaxed);
    let histos = match reader.join() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            result.errors.push(format!("subscriber: {e:#}"));
            Histos::default()
        }
        Err(_) => anyhow::bail!("subscriber thread panicked"),
    };
    meter.finish(&mut result);
    if !done || histos.received < total {
        result.errors.push(format!(
            "{} of {total} messages not received",
            total.saturating_sub(histos.received)
        ));
    }
    result.seconds = pub_secs;
    result.latency = Some(LatencyFigures {
        sent: total.saturating_sub(warmup),
        received: histos.received.saturating_sub(warmup),
        achieved_rate: total as f64 / pub_secs.max(1e-9),
        latency: histos.latency.summary(),
        from_intended: histos.from_intended.summary(),
        publisher_lateness: histos.lateness.summary(),
    });
    target.totals_into(&mut result);
    Ok(result)
}
