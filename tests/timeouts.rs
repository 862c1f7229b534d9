#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Heartbeats and timeouts: silent clients are pinged then closed as stale,
//! clients that answer stay, and clients that never say HELLO are closed at
//! the handshake timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corecast::Config;
use corecast_proto::ClientFrame;

const HANDSHAKE_MS: u64 = 300;
const PING_MS: u64 = 200;
const STALE_MS: u64 = 600;

fn timeout_config() -> Config {
    Config {
        handshake_timeout_ms: HANDSHAKE_MS,
        ping_interval_ms: PING_MS,
        stale_after_ms: STALE_MS,
        close_linger_ms: 100,
        ..test_config(2)
    }
}

/// The broker's sweeper ticks every quarter of the ping interval when idle
/// and every quarter of its shortest short deadline when busy, and stamps
/// activity with a clock it advances on those ticks, so a deadline may fire
/// up to about one tick of each kind early or late. This is that slack.
fn sweep_slack() -> Duration {
    Duration::from_millis(PING_MS / 4 + HANDSHAKE_MS.min(100) / 4 + 25)
}

#[test]
fn silent_client_is_pinged_then_closed_as_stale() {
    let broker = start(timeout_config());
    let addr = broker.local_addr();
    // Stamped before connecting, so that a stall between the broker's
    // WELCOME and this thread running again cannot make the PING or the
    // close look early: the lower bounds below only get safer.
    let started = Instant::now();
    let mut silent = Client::connect(addr);
    let mut pings = Vec::new();
    let end = loop {
        match silent.read_frame(Duration::from_secs(5)) {
            ReadEnd::Frame(Got::Ping(n)) => pings.push((n, started.elapsed())),
            other => break other,
        }
    };
    let closed_at = started.elapsed();
    match end {
        ReadEnd::Frame(Got::Err { code: 10, fatal: true, .. }) => {}
        other => panic!("expected ERR 10 after {pings:?}, got {other:?} at {closed_at:?}"),
    }
    assert_eq!(silent.read_frame(Duration::from_secs(5)), ReadEnd::Closed);
    // One PING after the ping interval, no second one while it is
    // unanswered, then the stale close after stale_after.
    assert_eq!(pings.len(), 1, "pings: {pings:?}");
    let slack = sweep_slack();
    let ping_at = pings[0].1;
    assert!(
        ping_at + slack >= Duration::from_millis(PING_MS)
            && ping_at < Duration::from_millis(STALE_MS),
        "PING at {ping_at:?}"
    );
    assert!(
        closed_at + slack >= Duration::from_millis(STALE_MS)
            && closed_at < Duration::from_millis(STALE_MS) + Duration::from_secs(1),
        "stale close at {closed_at:?}"
    );
    let c = wait_counters(&broker, "stale close counted", |c| c.stale_closes == 1);
    assert_eq!(c.handshake_timeouts, 0);
    drop(silent);
    finish(broker);
}

#[test]
fn client_answering_pings_stays_open_past_stale_after() {
    let broker = start(timeout_config());
    let addr = broker.local_addr();
    let mut alive = Client::connect(addr);
    alive.sub(1, "alive.t");
    alive.flush_empty();
    let started = Instant::now();
    let mut pings = 0;
    // Three stale periods, answering every server PING and sending nothing
    // else.
    while started.elapsed() < Duration::from_millis(3 * STALE_MS) {
        match alive.read_frame(Duration::from_millis(50)) {
            ReadEnd::Frame(Got::Ping(n)) => {
                pings += 1;
                alive.send(&ClientFrame::Pong { nonce: n });
            }
            ReadEnd::Timeout => {}
            other => panic!("after {:?}: {other:?}", started.elapsed()),
        }
    }
    // A PING every ping interval or so: 1800 ms / 200 ms, give or take the
    // sweeps.
    assert!((4..=12).contains(&pings), "{pings} server PINGs in {:?}", started.elapsed());
    // Still open and subscribed.
    let mut publ = Client::connect(addr);
    publ.publish("alive.t", b"still here");
    publ.flush_empty();
    assert_eq!(alive.flush(), vec![Got::msg(1, "alive.t", b"still here")]);
    let c = broker.counters().total;
    assert_eq!((c.stale_closes, c.connections_open), (0, 2));
    drop((alive, publ));
    finish(broker);
}

#[test]
fn client_that_only_publishes_is_not_stale() {
    // Any inbound frame counts as traffic: a client that keeps sending and
    // never answers PINGs is not closed.
    let broker = start(timeout_config());
    let addr = broker.local_addr();
    let mut talker = Client::connect(addr);
    let started = Instant::now();
    let mut ticks = 0;
    while started.elapsed() < Duration::from_millis(2 * STALE_MS) {
        talker.publish("talk.t", b"chatter");
        ticks += 1;
        match talker.read_frame(Duration::from_millis(50)) {
            ReadEnd::Frame(Got::Ping(_)) | ReadEnd::Timeout => {}
            other => panic!("after {:?}: {other:?}", started.elapsed()),
        }
    }
    talker.flush_empty();
    let c = broker.counters().total;
    assert_eq!((c.stale_closes, c.msgs_in), (0, ticks));
    drop(talker);
    finish(broker);
}

#[test]
fn client_without_hello_is_closed_at_handshake_timeout() {
    let broker = start(timeout_config());
    let addr = broker.local_addr();
    let started = Instant::now();
    let mut mute = Client::connect_raw(addr);
    // Half a HELLO does not count as one.
    let mut partial = Client::connect_raw(addr);
    let mut hello = Vec::new();
    ClientFrame::Hello(corecast_proto::Hello { version: 1, name: "slow", token: b"" })
        .encode(&mut hello);
    partial.send_raw(&hello[..5]);

    for c in [&mut mute, &mut partial] {
        match c.read_frame(Duration::from_secs(5)) {
            ReadEnd::Frame(Got::Err { code: 5, fatal: true, .. }) => {}
            other => panic!("expected ERR 5, got {other:?} after {:?}", started.elapsed()),
        }
        let at = started.elapsed();
        assert!(
            at + sweep_slack() >= Duration::from_millis(HANDSHAKE_MS)
                && at < Duration::from_millis(HANDSHAKE_MS) + Duration::from_secs(1),
            "handshake timeout at {at:?}"
        );
        assert_eq!(c.read_frame(Duration::from_secs(5)), ReadEnd::Closed);
    }
    let c = wait_counters(&broker, "handshake timeouts counted", |c| c.handshake_timeouts == 2);
    assert_eq!((c.stale_closes, c.connections_open), (0, 0));
    // A client that says HELLO in time is not affected.
    let mut prompt = Client::connect(addr);
    std::thread::sleep(Duration::from_millis(HANDSHAKE_MS + 100));
    prompt.flush_empty();
    assert_eq!(broker.counters().total.handshake_timeouts, 2);
    drop((mute, partial, prompt));
    finish(broker);
}
