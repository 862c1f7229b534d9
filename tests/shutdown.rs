#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real binary: it logs its address, drains every accepted message
//! before GOAWAY on SIGTERM, closes within the grace period, and exits 0.
//! And the embedded broker's shutdown of connections still in handshake.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{process::Proc, *};

/// The binary on an ephemeral port, 2 cores, with this shutdown grace.
fn spawn(grace_ms: u64) -> Proc {
    spawn_with(grace_ms, &[])
}

fn spawn_with(grace_ms: u64, extra: &[&str]) -> Proc {
    let grace = grace_ms.to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--cores", "2", "--shutdown-grace-ms", &grace];
    args.extend(["--max-frame", "65536"]);
    args.extend(extra);
    let broker = Proc::spawn(&args);
    assert_eq!(broker.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(broker.addr.port(), 0);
    broker
}

#[test]
fn sigterm_delivers_everything_accepted_then_goaway_then_exits_0() {
    const N: u64 = 2000;
    let mut broker = spawn(3000);
    let addr = broker.addr;
    let mut sub = Client::connect(addr);
    sub.sub(1, "drain.t");
    sub.flush_empty();
    let mut publ = connect_not_on(addr, sub.core_id());
    for i in 0..N {
        publ.publish("drain.t", &seq_payload(i, 16));
    }
    // The PONG: every message is accepted and routed.
    publ.flush_empty();
    let reader = thread::spawn(move || sub.read_to_close(Duration::from_secs(8)));

    broker.signal("TERM");
    let frames = reader.join().expect("reader");
    let (msgs, tail) = frames.split_at(frames.len().min(N as usize));
    for (i, f) in msgs.iter().enumerate() {
        assert_eq!(f, &Got::msg(1, "drain.t", &seq_payload(i as u64, 16)), "message {i}");
    }
    assert_eq!(tail, [Got::GoAway { reason: 1, grace_ms: 3000 }], "after the {N} messages");
    assert_eq!(
        publ.read_to_close(Duration::from_secs(8)),
        [Got::GoAway { reason: 1, grace_ms: 3000 }]
    );
    drop(publ);

    let (status, took) = broker.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let log = broker.log();
    assert!(log.iter().any(|l| l.contains("corecast stopped")), "log: {log:#?}");
}

#[test]
fn client_that_never_closes_does_not_hold_the_broker_past_the_grace() {
    let mut broker = spawn(1500);
    let mut stays = Client::connect(broker.addr);
    stays.sub(1, "stay.t");
    stays.flush_empty();
    let signalled = Instant::now();
    broker.signal("TERM");
    // Nothing was queued, so GOAWAY comes at once, then the broker's FIN.
    assert_eq!(
        stays.read_to_close(Duration::from_secs(5)),
        [Got::GoAway { reason: 1, grace_ms: 1500 }]
    );
    // The client keeps its side open: the broker does not wait for it
    // longer than the grace period (it may close sooner, all being sent).
    let (status, _) = broker.wait_exit(Duration::from_secs(5));
    let exited = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(exited < Duration::from_millis(1500 + 1000), "exit {exited:?} after SIGTERM");
    drop(stays);
}

#[test]
fn grace_period_bounds_the_drain_of_a_subscriber_that_does_not_read() {
    const N: u64 = 6000;
    // A max_pending larger than everything published, so the subscriber is
    // never a slow consumer: it is only too slow to drain within the grace.
    let mut broker = spawn_with(500, &["--max-pending", "16777216"]);
    let mut sub = Client::connect_small_rcvbuf(broker.addr, 4096);
    sub.sub(1, "grace.t");
    sub.flush_empty();
    let mut publ = Client::connect(broker.addr);
    for i in 0..N {
        publ.publish("grace.t", &seq_payload(i, 1000));
    }
    publ.flush_empty();
    let signalled = Instant::now();
    broker.signal("TERM");
    // The publisher is told at once; the subscriber's GOAWAY sits behind
    // megabytes it does not read.
    assert_eq!(
        publ.read_to_close(Duration::from_secs(5)),
        [Got::GoAway { reason: 1, grace_ms: 500 }]
    );
    let (status, _) = broker.wait_exit(Duration::from_secs(5));
    let exited = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exited >= Duration::from_millis(450) && exited < Duration::from_millis(500 + 1500),
        "exit {exited:?} after SIGTERM with a 500 ms grace"
    );
    // What reached the subscriber's socket before the close is an in-order
    // prefix; the rest (and so the GOAWAY behind it) was cut by the grace.
    let frames = sub.read_to_close(Duration::from_secs(8));
    let seqs: Vec<u64> = frames
        .iter()
        .map(|f| match f {
            Got::Msg { sid: 1, payload, .. } => seq_of(payload),
            other => panic!("after {} MSGs: {other:?}", frames.len()),
        })
        .collect();
    assert!(seqs.iter().copied().eq(0..seqs.len() as u64), "prefix in order");
    assert!((seqs.len() as u64) < N, "all {N} drained: the test did not fill the buffers");
}

#[test]
fn idle_broker_exits_0_promptly_on_sigint() {
    let mut broker = spawn(3000);
    // Both cores serve (each answered a HELLO), then nothing is connected.
    let first = Client::connect(broker.addr);
    let second = connect_not_on(broker.addr, first.core_id());
    drop((first, second));
    broker.signal("INT");
    let (status, took) = broker.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
}

#[test]
fn sigint_right_after_start_exits_0() {
    // A signal that arrives while the cores are still starting (the
    // "listening" line is logged before they run) must stop the broker too.
    // A shell waiting on its stdin sends it with builtins (no fork), within
    // a fraction of a millisecond of the line; rounds add 0 to 7.2 ms to
    // sweep the start-up window, with four cores joining their mesh.
    for round in 0..30u64 {
        let delay = Duration::from_micros(round % 10 * 800);
        let mut child = Command::new(env!("CARGO_BIN_EXE_corecast"))
            .args(["--listen", "127.0.0.1:0", "--cores", "4"])
            .env("RUST_LOG", "info")
            .env_remove("CORECAST_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the corecast binary");
        let mut killer = Command::new("sh")
            .args(["-c", &format!("read _ && kill -INT {}", child.id())])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start sh");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.contains("corecast listening") {
            line.clear();
            assert!(out.read_line(&mut line).expect("read stdout") > 0, "no listening line");
        }
        let line_seen = Instant::now();
        while line_seen.elapsed() < delay {
            std::hint::spin_loop();
        }
        killer.stdin.take().expect("sh stdin").write_all(b"go\n").expect("release sh");
        assert!(killer.wait().expect("sh").success(), "kill -INT failed");
        // Keep draining stdout so the broker never blocks on its log.
        thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(3) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "round {round} (SIGINT {delay:?} after the listening line): broker still \
                     running 3 s later"
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "round {round}: exit status {status:?}");
    }
}

#[test]
fn shutdown_refuses_connections_still_in_handshake_with_shutting_down() {
    let broker = start(corecast::Config { shutdown_grace_ms: 1000, ..test_config(2) });
    let addr = broker.local_addr();
    let mut raw = Client::connect_raw(addr);
    let mut open = Client::connect(addr);
    open.flush_empty();
    // Both are accepted: the raw one sits in its handshake.
    wait_counters(&broker, "both connections accepted", |c| c.slots_in_use == 2);
    broker.shutdown();
    // No session, so no GOAWAY: only ERR shutting down (11, fatal), then
    // the close.
    let frames = raw.read_to_close(Duration::from_secs(5));
    let codes: Vec<_> = frames.iter().map(Got::err_code).collect();
    assert_eq!(codes, [Some((11, true))], "handshake connection got {frames:?}");
    assert_eq!(
        open.read_to_close(Duration::from_secs(5)),
        [Got::GoAway { reason: 1, grace_ms: 1000 }]
    );
    drop((raw, open));
    broker.wait().expect("broker stops cleanly");
}
