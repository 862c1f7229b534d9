#![allow(clippy::unwrap_used, clippy::expect_used)]
//! An idle broker does not poll: with subscribed connections open and no
//! traffic, its core threads sleep. Their CPU time is read from
//! `/proc/self/task/*/stat` over two idle seconds; a busy-polling core
//! would spend the whole two seconds, a sleeping one a few milliseconds on
//! its once-a-second sweep.

mod common;

use std::{thread, time::Duration};

use common::*;

/// How many of this process's threads are named `corecast-<core>…`, and
/// their CPU ticks (user + system).
fn core_thread_ticks() -> (usize, u64) {
    let (mut threads, mut ticks) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // pid (comm) state ... : comm may hold spaces, so split after ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let is_core = comm
            .strip_prefix("corecast-")
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if !is_core {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the comm: state is field 0, utime 11, stime 12.
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        threads += 1;
    }
    (threads, ticks)
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

#[test]
fn idle_broker_sleeps() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut clients: Vec<Client> = (0..40)
        .map(|i| {
            let mut c = Client::connect(addr);
            c.sub(1, &format!("idle.{i}"));
            c
        })
        .collect();
    for c in &mut clients {
        c.flush_empty();
    }
    assert!(core_thread_ticks().0 >= 2, "both core threads are found by name");
    // Let idle buffers be trimmed and the sweeper settle on its idle tick.
    thread::sleep(Duration::from_millis(1500));
    let (_, before) = core_thread_ticks();
    thread::sleep(Duration::from_secs(2));
    let spent = core_thread_ticks().1 - before;
    let hz = ticks_per_second();
    // 10% of one core over two seconds; busy polling would be 200% (two
    // cores) and an idle broker measures 0-1 ticks.
    assert!(spent * 10 <= 2 * hz, "idle cores used {spent} ticks ({hz}/s) in 2 s");
    drop(clients);
    finish(broker);
}
