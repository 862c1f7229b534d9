#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Input larger than the per-core read scratch (256 KiB): frames up to
//! max_frame go through intact, on one core and across cores, and give
//! their buffers back; before HELLO they are refused; and connections that
//! hold half-received large frames are bounded by the pending budget, the
//! ones holding the most closed with ERR 12 while others keep working.

mod common;

use std::{
    io::Write,
    thread,
    time::{Duration, Instant},
};

use common::*;
use corecast::{Config, Snapshot};

/// The broker's read scratch: frames longer than this (length prefix
/// included) get a buffer of their own.
const SCRATCH: usize = 256 << 10;
const MAX_FRAME: u32 = 1 << 20;

/// Payload bytes that differ between messages and positions.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(131).wrapping_add(seed * 7) % 251) as u8).collect()
}

/// Payload length for which a PUB to `topic` (no reply-to) is `total` bytes
/// on the wire, length prefix included.
fn payload_for_total(topic: &str, total: usize) -> usize {
    total - (4 + 2 + 1 + topic.len() + 1)
}

/// `got` must be a MSG for `sid` carrying exactly `want` (compared
/// without printing megabytes).
fn expect_payload(got: Got, sid: u32, want: &[u8]) {
    match got {
        Got::Msg { sid: s, payload, .. } if s == sid => {
            if let Some(at) = payload.iter().zip(want).position(|(a, b)| a != b) {
                panic!("payload of {} bytes differs at byte {at}", want.len());
            }
            assert_eq!(payload.len(), want.len(), "payload length");
        }
        Got::Msg { sid: s, payload, .. } => panic!("MSG for sid {s} ({} bytes)", payload.len()),
        other => panic!("expected a MSG, got {other:?}"),
    }
}

fn large_config(cores: usize) -> Config {
    Config {
        max_frame: MAX_FRAME,
        max_pending: Config::default().max_pending,
        ..test_config(cores)
    }
}

/// Publishes, in one write, small and large PUBs interleaved (large ones
/// around the scratch size and up to max_frame), and expects `sub` to get
/// every payload intact, in order.
fn round_trip(publ: &mut Client, sub: &mut Client, sid: u32, topic: &str) {
    let max_payload = MAX_FRAME as usize - 4 - topic.len();
    let mut sizes = Vec::new();
    for total in [SCRATCH - 1, SCRATCH, SCRATCH + 1, 300 << 10, 512 << 10] {
        sizes.push(payload_for_total(topic, total));
        sizes.push(10);
    }
    sizes.extend([max_payload, 0, max_payload - 1, max_payload]);
    let payloads: Vec<Vec<u8>> =
        sizes.iter().enumerate().map(|(i, &n)| pattern(n, i as u64)).collect();
    let mut bytes = Vec::new();
    for p in &payloads {
        bytes.extend_from_slice(&raw_pub(topic.as_bytes(), b"", p));
    }
    publ.stream.write_all(&bytes).expect("write");
    publ.flush_empty();
    for (i, want) in payloads.iter().enumerate() {
        match sub.recv() {
            Got::Msg { sid: s, topic: t, payload, .. } if s == sid && t == topic => {
                assert!(payload == *want, "message {i} ({} bytes) damaged", want.len());
            }
            Got::Msg { sid: s, topic: t, payload, .. } => {
                panic!("message {i}: MSG sid {s} topic {t} ({} bytes)", payload.len())
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    sub.flush_empty();
}

#[test]
fn frames_larger_than_the_scratch_round_trip_on_one_core_and_across() {
    let broker = start(large_config(2));
    let addr = broker.local_addr();
    // Same core.
    let mut publ = Client::connect(addr);
    let mut sub = connect_on(addr, publ.core_id());
    sub.sub(1, "large.same");
    sub.flush_empty();
    round_trip(&mut publ, &mut sub, 1, "large.same");
    // Across cores.
    let (mut xpubl, mut xsub) = cross_core_pair(addr, 2, "large.cross");
    round_trip(&mut xpubl, &mut xsub, 2, "large.cross");
    let c = broker.counters().total;
    assert_eq!((c.protocol_errors, c.slow_consumer_closes, c.input_budget_closes), (0, 0, 0));
    assert!(c.cross_core_received >= 14, "{c:#?}");
    // Nothing held once everything is delivered.
    wait_counters(&broker, "memory back", |c| {
        c.memory_used == 0 && c.buffers_out == 0 && c.pending_bytes == 0
    });
    drop((publ, sub, xpubl, xsub));
    finish(broker);
}

/// A large frame sent a piece at a time holds a buffer of its whole size
/// (charged to memory_used) until its last byte, then is delivered and the
/// buffer goes back.
#[test]
fn a_trickled_large_frame_holds_its_buffer_until_complete() {
    let broker = start(large_config(1));
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(1, "large.slow");
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    let payload = pattern(payload_for_total("large.slow", 700 << 10), 42);
    let bytes = raw_pub(b"large.slow", b"", &payload);
    let (head, last) = bytes.split_at(bytes.len() - 1);
    for piece in head.chunks(32 << 10) {
        publ.send_raw(piece);
        thread::sleep(Duration::from_millis(2));
    }
    let c = wait_counters(&broker, "a large buffer held", |c| c.memory_used >= bytes.len() as u64);
    assert_eq!(c.buffers_out, 1, "one buffer for the frame: {c:#?}");
    assert_eq!(c.msgs_in, 0);
    assert_eq!(sub.read_frame(Duration::from_millis(100)), ReadEnd::Timeout);
    publ.send_raw(last);
    publ.flush_empty();
    expect_payload(sub.recv(), 1, &payload);
    wait_counters(&broker, "buffer back", |c| c.memory_used == 0 && c.buffers_out == 0);
    drop((sub, publ));
    finish(broker);
}

/// Before HELLO a frame larger than the scratch is refused with ERR 4 as
/// soon as the scratch is full, whole or not, and no buffer is taken for
/// it.
#[test]
fn a_frame_larger_than_the_scratch_before_hello_is_refused() {
    let broker = start(large_config(1));
    let addr = broker.local_addr();
    let payload = pattern(300 << 10, 1);
    let whole = raw_pub(b"t", b"", &payload);
    // The whole frame.
    let mut c = Client::connect_raw(addr);
    c.send_raw(&whole);
    c.expect_only_fatal(4);
    // Only the first 260 KiB: the answer does not wait for the rest.
    let mut c2 = Client::connect_raw(addr);
    c2.send_raw(&whole[..260 << 10]);
    c2.expect_only_fatal(4);
    let c = wait_counters(&broker, "two refusals", |c| c.protocol_errors == 2);
    assert_eq!((c.input_budget_closes, c.connections_open), (0, 0));
    drop((c, c2));
    finish(broker);
}

/// 300 connections each send HELLO and then 300 KiB of a 1 MiB PUB, and
/// stop there. Each one holds a 1 MiB buffer, so an 8 MiB budget holds
/// seven: for every newcomer the broker closes one that holds the most
/// with ERR 12 (or the newcomer itself when it cannot make room), never
/// passing the budget, while a witness pair on the same core keeps
/// working, and makes room for a large message to the witness in the same
/// way. The closed ones get exactly ERR 12 and a clean end of stream.
#[test]
fn half_received_large_frames_are_bounded_by_the_budget() {
    const BUDGET: u64 = 8 << 20;
    const CONNS: usize = 300;
    let broker = start(Config {
        max_frame: MAX_FRAME,
        max_pending: 2 << 20,
        pending_budget: BUDGET as usize,
        ..test_config(1)
    });
    let addr = broker.local_addr();
    let mut witness = Witness::new(addr);
    witness.check();
    let header = {
        let payload_len = MAX_FRAME as usize - 4 - 1;
        let mut h = raw_pub(b"t", b"", &[]);
        h[..4].copy_from_slice(&(MAX_FRAME).to_le_bytes());
        assert_eq!(h.len() + payload_len, MAX_FRAME as usize + 4);
        h
    };
    let body = pattern(300 << 10, 3);
    // One large buffer per connection that holds a half frame.
    let buffer = ((MAX_FRAME as u64 + 4).div_ceil(CHUNK)) * CHUNK;
    let started = Instant::now();
    let (mut conns, peak) = with_peak_memory(&broker, || {
        let mut conns = Vec::with_capacity(CONNS);
        for i in 0..CONNS {
            let mut c = Client::connect(addr);
            c.send_raw(&header);
            c.send_raw(&body);
            conns.push(c);
            if i % 25 == 24 {
                witness.check();
            }
        }
        // Every connection is either closed or holds its buffer, and the
        // closed ones are gone.
        wait_counters(&broker, "every half frame held or refused", |c| {
            let open = c.connections_open.saturating_sub(2);
            open + c.input_budget_closes == CONNS as u64
                && c.slots_in_use == c.connections_open
                && c.memory_used == open * buffer
        });
        witness.check();
        // A large message for the witness needs more than the budget has
        // left: a half frame makes room for it.
        let before = broker.counters().total.input_budget_closes;
        let big = pattern(900 << 10, 9);
        witness.publ.publish(Witness::TOPIC, &big);
        witness.publ.flush_empty();
        let got = witness.sub.flush();
        assert_eq!(got.len(), 1, "the witness got {} frames", got.len());
        expect_payload(got.into_iter().next().expect("one"), Witness::SID, &big);
        let c = broker.counters().total;
        assert!(c.input_budget_closes > before, "no room made for the witness: {c:#?}");
        wait_counters(&broker, "the witness's buffers back", |c| {
            let open = c.connections_open - 2;
            c.slots_in_use == c.connections_open && c.memory_used == open * buffer
        });
        conns
    });
    let c = broker.counters().total;
    println!("{CONNS} half frames in {:?}; peak memory_used {peak:?}; {c:#?}", started.elapsed());
    assert!(peak[0] <= BUDGET, "peak memory_used {} passed the budget {BUDGET}", peak[0]);
    assert!(c.input_budget_closes > 0, "{c:#?}");
    assert_eq!(c.slow_consumer_closes + c.protocol_errors + c.task_panics, 0, "{c:#?}");
    // The survivors hold one buffer each; together nearly the budget.
    let open = c.connections_open - 2;
    assert_eq!(open + c.input_budget_closes, CONNS as u64);
    assert!(open >= 1 && open * (1 << 20) <= BUDGET, "{open} half frames held");
    // The closed ones read ERR 12 and a clean end; the others nothing yet.
    let mut closed = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        match c.next_frame(Duration::from_millis(50)) {
            Ok(Got::Err { code: 12, fatal: true, .. }) => {
                assert_eq!(c.read_to_end(Duration::from_secs(5)), (vec![], StreamEnd::Eof), "{i}");
                closed += 1;
            }
            Err(StreamEnd::Timeout) => {}
            other => panic!("connection {i}: {other:?}"),
        }
    }
    assert_eq!(closed, c.input_budget_closes);
    witness.check();
    drop(conns);
    wait_counters(&broker, "only the witness left", |c: &Snapshot| {
        c.slots_in_use == 2 && c.memory_used == 0
    });
    witness.check();
    drop(witness);
    finish(broker);
}
