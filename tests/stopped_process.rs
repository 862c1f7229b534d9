#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A subscriber whose whole process is stopped (SIGSTOP) is cut by the
//! write deadline, and leaves nothing behind once it is killed.
//!
//! The stopped subscriber is this test binary itself, run again as a child
//! with only [`stopped_child`] selected and an environment variable that
//! tells that test it is the child: nothing but the Rust toolchain is
//! needed.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::*;
use corecast::Config;

/// Set in the child's environment to `<broker address> <topic>`.
const CHILD_ENV: &str = "CORECAST_TEST_STOPPED_CHILD";
const DEADLINE_MS: u64 = 1500;

/// The child's part: subscribe, say so on stdout, then stop the whole
/// process. Does nothing when run as an ordinary test.
#[test]
fn stopped_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (addr, topic) = spec.split_once(' ').expect("address and topic");
    let addr: SocketAddr = addr.parse().expect("address");
    let mut c = Client::connect_small_rcvbuf(addr, 4096);
    c.sub(1, topic);
    c.flush_empty();
    // On a line of its own: the harness may have begun one ("test … ").
    println!("\nSUBSCRIBED {}", c.core_id());
    // SAFETY: raise has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGSTOP) };
    // Continued by mistake: stay subscribed and silent until killed.
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

/// The child process; SIGKILLed (by its pid) and reaped on drop, so a
/// failing test leaves no stopped process behind.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn pid(&self) -> i32 {
        self.0.as_ref().expect("child").id() as i32
    }

    /// The process state letter from /proc (`T` = stopped).
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        after.chars().next().expect("state")
    }

    /// SIGKILL by pid, then reap; returns the signal that ended it.
    fn kill(&mut self) -> Option<i32> {
        let mut child = self.0.take()?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own unreaped child, so it cannot have been reused.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        child.wait().expect("wait").signal()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the child and waits until it has subscribed and stopped; returns
/// it and the core its connection landed on.
fn spawn_stopped_subscriber(addr: SocketAddr, topic: &str) -> (ChildGuard, u16) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "stopped_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{addr} {topic}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let guard = ChildGuard(Some(child));
    let mut core = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        if let Some((_, c)) = line.split_once("SUBSCRIBED ") {
            core = Some(c.trim().parse::<u16>().expect("core id"));
            break;
        }
    }
    let core = core.expect("the child ended before subscribing");
    let waiting = Instant::now();
    while guard.state() != 'T' {
        assert!(waiting.elapsed() < Duration::from_secs(5), "child never stopped");
        thread::sleep(Duration::from_millis(5));
    }
    (guard, core)
}

#[test]
fn stopped_subscriber_process_is_cut_by_the_write_deadline() {
    let broker = start(Config {
        max_frame: 4096,
        max_pending: 64 << 20,
        write_deadline_ms: DEADLINE_MS,
        ..test_config(2)
    });
    let addr = broker.local_addr();
    let topic = "stopped.proc";
    let (mut child, core) = spawn_stopped_subscriber(addr, topic);
    // The publisher is on the other core, so the child's core writes to
    // nobody else: its bytes_out moves only when the child's socket takes
    // bytes.
    let mut publ = connect_not_on(addr, core);
    let core = usize::from(core);
    wait_counters(&broker, "only the child and the publisher", |c| c.slots_in_use == 2);
    assert_eq!(broker.counters().per_core[core].subscriptions, 1);

    // Publishes at about 6 MB/s until the cut: megabytes fill the kernel's
    // buffers, then the output backs up in the broker (far below
    // max_pending in 1.5 s). Watches when the child's socket last took
    // bytes and how much was queued for it since.
    let started = Instant::now();
    let mut last_progress = (broker.counters().per_core[core].bytes_out, started);
    let mut queued_since_progress = 0;
    let mut seq = 0u64;
    let cut_seen = loop {
        let c = broker.counters();
        let now = Instant::now();
        if c.total.slow_consumer_closes > 0 {
            break now;
        }
        let s = &c.per_core[core];
        if s.bytes_out != last_progress.0 {
            last_progress = (s.bytes_out, now);
            queued_since_progress = 0;
        }
        queued_since_progress = queued_since_progress.max(s.pending_bytes);
        assert!(started.elapsed() < Duration::from_secs(20), "never cut: {:#?}", c.total);
        for _ in 0..32 {
            publ.publish(topic, &seq_payload(seq, 1000));
            seq += 1;
        }
        publ.flush_empty();
        thread::sleep(Duration::from_millis(5));
    };
    let c = broker.counters().total;
    assert_eq!(
        (c.closes_write_deadline, c.slow_consumer_closes, c.closes_max_pending, c.closes_budget),
        (1, 1, 0, 0),
        "{c:#?}"
    );
    // From the last time the child's socket took bytes, publications only
    // piled up in the broker: that is when they started to back up.
    let deadline = Duration::from_millis(DEADLINE_MS);
    let idle = cut_seen - last_progress.1;
    println!(
        "{seq} published; the child's socket last took bytes {:?} in; cut {idle:?} later with \
         {queued_since_progress} bytes queued",
        last_progress.1 - started
    );
    assert!(queued_since_progress > 0, "nothing backed up before the cut");
    assert!(
        idle + SAMPLING_SLACK >= deadline && idle <= deadline + Duration::from_secs(1),
        "cut {idle:?} after the output started to back up (deadline {deadline:?})"
    );

    // While the child is still stopped, its connection gives everything
    // back: the subscription at once, the slot and memory once the linger
    // for its ERR ends.
    let s = wait_counters(&broker, "the stopped child's slot is gone", |c| {
        c.slots_in_use == 1 && c.subscriptions == 0 && c.memory_used == 0 && c.buffers_out == 0
    });
    assert_eq!(s.pending_bytes, 0);
    assert_eq!(child.state(), 'T', "the child is still stopped");
    assert_eq!(child.kill(), Some(libc::SIGKILL));
    // The publisher is still served.
    publ.flush_empty();
    drop(publ);
    finish(broker);
}
