//! `conns`: C idle connections, each subscribed to its own topic and
//! confirmed; the broker's RSS growth divided by C is its memory per idle
//! connection.

use std::time::Duration;

use super::{Meter, Target};
use crate::{
    driver::{Driver, Kind},
    result::{ConnsFigures, Params, RunResult},
    sys,
};

/// Connections opened before their subscriptions are confirmed together.
const CHUNK: usize = 256;
/// Loopback source addresses the connections are spread over (127.0.0.1
/// up): Linux gives `connect` only every other ephemeral port while any are
/// left, about 14 000 of them per source address and destination, and
/// searches ever longer once they are taken.
const SOURCES: u8 = 4;
/// Longest time over which the settled, idle broker's CPU use is measured
/// (shorter when the target's settle time is: `compare --quick`).
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// The source address of connection `i` to `target`: spread over
/// [`SOURCES`] loopback addresses when the broker is on loopback. Not for
/// redis-server, whose protected mode (on by default) turns away clients
/// from any loopback address but 127.0.0.1 (and it takes 10 000 clients by
/// default, fewer than one address can open quickly).
fn source(target: &Target, i: usize) -> Option<std::net::Ipv4Addr> {
    match target.addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() && target.kind != Kind::Redis => {
            Some(std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES as usize) as u8))
        }
        _ => None,
    }
}

/// Opens `count` subscribed connections; stops at the first failure
/// (recorded in `errors`), keeping only the connections whose subscription
/// was confirmed (the chunks before the failed one).
fn open_all(target: &Target, count: usize, errors: &mut Vec<String>) -> Vec<Box<dyn Driver>> {
    let mut conns: Vec<Box<dyn Driver>> = Vec::with_capacity(count);
    while conns.len() < count {
        let first = conns.len();
        let chunk_end = (first + CHUNK).min(count);
        let opened = (first..chunk_end).try_for_each(|i| {
            let mut conn = target.connect_from(&format!("idle-{i}"), 4096, source(target, i))?;
            conn.subscribe(&format!("bench.conn.{i}"))?;
            conns.push(conn);
            anyhow::Ok(())
        });
        let confirmed =
            opened.and_then(|()| conns[first..].iter_mut().try_for_each(|c| c.confirm()));
        if let Err(e) = confirmed {
            errors.push(format!("after {first} confirmed connections: {e:#}"));
            conns.truncate(first);
            break;
        }
    }
    conns
}

/// The case name of a conns run, e.g. `conns 5000`.
pub fn case_name(count: usize) -> String {
    format!("conns {count}")
}

/// The parameters a conns run records.
pub fn params(count: usize) -> Params {
    Params { conns: Some(count), ..Params::default() }
}

/// Runs the idle-connection workload with `count` connections.
pub fn run(target: &Target, count: usize) -> anyhow::Result<RunResult> {
    let proc = target.require_proc("conns")?;
    let mut result = target.result("conns", case_name(count), params(count));
    let (nofile_before, nofile_during) = sys::raise_nofile(count as u64 + 1024)?;
    if nofile_during > nofile_before {
        eprintln!("corecast-bench: raised RLIMIT_NOFILE of the bench from {nofile_before} to {nofile_during}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_before_kib = proc.rss_kib()?;
    let meter = Meter::start(target);
    let conns = open_all(target, count, &mut result.errors);
    result.seconds = meter.started().elapsed().as_secs_f64();
    meter.finish(&mut result);
    let samples = super::settle_rss(proc, target.settle)?;
    let rss_after_kib = samples.last().copied().unwrap_or(0);
    let idle_cpu_cores = idle_cpu(proc, IDLE_WINDOW.min(target.settle))?;
    let opened = conns.len();
    target.totals_into(&mut result);
    drop(conns);
    let grown = rss_after_kib.saturating_sub(rss_before_kib) as f64 * 1024.0;
    result.conns = Some(ConnsFigures {
        opened,
        rss_before_kib,
        rss_after_kib,
        rss_per_conn_bytes: if opened > 0 { grown / opened as f64 } else { 0.0 },
        nofile_before,
        nofile_during,
        rss_samples_kib: samples,
        idle_cpu_cores: Some(idle_cpu_cores),
    });
    Ok(result)
}

/// The broker's CPU use, in cores, over `window` while every connection
/// sits idle.
fn idle_cpu(proc: sys::Proc, window: Duration) -> anyhow::Result<f64> {
    let before = proc.cpu_seconds()?;
    std::thread::sleep(window);
    Ok((proc.cpu_seconds()? - before) / window.as_secs_f64().max(1e-3))
}
