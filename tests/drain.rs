#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The last frame must arrive: a subscriber cut as a slow consumer that
//! sends something and only then starts reading (within the linger) gets
//! what reached its socket, then ERR 9 as the last frame, then a clean end
//! of stream. The broker keeps reading and discarding its input while it
//! drains, so that input left unread cannot turn the close into a reset
//! that would destroy what was queued.

mod common;

use std::{
    io::Write,
    thread,
    time::{Duration, Instant},
};

use common::*;
use corecast::Config;

const LINGER_MS: u64 = 2000;

/// A frame for a failure message: MSGs by sequence number, not payload.
fn describe(f: Option<&Got>) -> String {
    match f {
        Some(Got::Msg { sid, payload, .. }) => {
            format!("MSG sid {sid} seq {} ({} bytes)", seq_of(payload), payload.len())
        }
        other => format!("{other:?}"),
    }
}
/// The sequence numbers of `frames`, which must all be MSGs for sid 1 with
/// payloads of `payload_len` bytes.
fn seqs_of(frames: &[Got], payload_len: usize) -> Vec<u64> {
    frames
        .iter()
        .map(|f| match f {
            Got::Msg { sid: 1, payload, .. } if payload.len() == payload_len => seq_of(payload),
            other => panic!("{} among the messages", describe(Some(other))),
        })
        .collect()
}

const MESSAGES: u64 = 1000;
const PAYLOAD: usize = 16 << 10;

#[test]
fn late_reader_gets_its_messages_then_err_then_a_clean_end() {
    // max_pending 256 KiB, max_frame 64 KiB.
    let broker = start(Config { close_linger_ms: LINGER_MS, ..test_config(1) });
    let addr = broker.local_addr();
    let topic = "drain.late";
    for round in 1..=8u64 {
        let mut sub = Client::connect_small_rcvbuf(addr, 4096);
        sub.sub(1, topic);
        sub.flush_empty();
        let mut publ = Client::connect(addr);
        for seq in 0..MESSAGES {
            publ.publish(topic, &seq_payload(seq, PAYLOAD - 8));
        }
        publ.flush_empty();
        let c = wait_counters(&broker, "the cut", |c| c.closes_max_pending == round);
        let cut_seen = Instant::now();
        assert_eq!(c.slow_consumer_closes, round, "{c:#?}");
        // Input the broker has not read when it closes, then the reading.
        sub.ping();
        let (frames, end) = sub.read_to_end(Duration::from_secs(10));
        let read_in = cut_seen.elapsed();
        assert!(
            read_in < Duration::from_millis(LINGER_MS),
            "round {round}: reading took {read_in:?}, past the linger"
        );
        assert_eq!(
            end,
            StreamEnd::Eof,
            "round {round}: the stream ended with {end:?} after {} frames (last {})",
            frames.len(),
            describe(frames.last())
        );
        let (last, msgs) = frames.split_last().expect("frames");
        assert_eq!(last.err_code(), Some((9, true)), "round {round}: last frame {last:?}");
        let seqs = seqs_of(msgs, PAYLOAD);
        assert!(
            !seqs.is_empty() && (seqs.len() as u64) < MESSAGES,
            "round {round}: {} MSGs",
            seqs.len()
        );
        assert!(seqs.iter().copied().eq(0..seqs.len() as u64), "round {round}: not a prefix");
        drop((sub, publ));
        wait_idle(&broker);
    }
    finish(broker);
}

/// A subscriber that never reads, cut by max_pending once the kernel's
/// buffers are full, so that its final ERR (usually) waits behind them. Returns it,
/// the publisher, and when the cut was seen.
fn cut_with_err_waiting(broker: &corecast::Broker, topic: &str) -> (Client, Client, Instant) {
    let addr = broker.local_addr();
    let mut sub = Client::connect_small_rcvbuf(addr, 4096);
    sub.sub(1, topic);
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    // A few at a time, so that the kernel's buffers fill before the queue
    // reaches max_pending.
    let mut seq = 0;
    while broker.counters().total.closes_max_pending == 0 {
        assert!(seq < MESSAGES, "no cut after {seq} messages");
        for _ in 0..16 {
            publ.publish(topic, &seq_payload(seq, PAYLOAD - 8));
            seq += 1;
        }
        publ.flush_empty();
        thread::sleep(Duration::from_millis(2));
    }
    // Usually the final ERR now waits behind the full kernel buffers; when
    // the socket took it at once the rest of the test still holds.
    (sub, publ, Instant::now())
}

/// Reads a cut subscriber's stream to its end: an in-order prefix of the
/// messages, then ERR 9 if it is `required` (else only if it got out in
/// time), then the end: `Eof`, or `Truncated` when the ERR did not get out.
fn expect_prefix_err_end(sub: &mut Client, require_err: bool) {
    let (mut frames, end) = sub.read_to_end(Duration::from_secs(10));
    let had_err = frames.last().is_some_and(|f| f.err_code() == Some((9, true)));
    match end {
        StreamEnd::Eof => {}
        StreamEnd::Truncated(_) if !had_err && !require_err => {}
        other => panic!(
            "the stream ended with {other:?} after {} frames (last {})",
            frames.len(),
            describe(frames.last())
        ),
    }
    assert!(had_err || !require_err, "no ERR 9 at the end: last {}", describe(frames.last()));
    if had_err {
        frames.pop();
    }
    let seqs = seqs_of(&frames, PAYLOAD);
    assert!(!seqs.is_empty() && seqs.iter().copied().eq(0..seqs.len() as u64), "not a prefix");
}

/// The cut subscriber first writes 16 MiB (PINGs) and only then reads:
/// more than the kernel's buffers hold, so its write completes only because
/// the broker reads and discards its input while draining. Then it gets its
/// messages, ERR 9 and a clean end.
#[test]
fn late_reader_that_writes_megabytes_first_still_gets_everything() {
    let broker = start(Config { close_linger_ms: LINGER_MS, ..test_config(1) });
    let (mut sub, publ, cut_seen) = cut_with_err_waiting(&broker, "drain.writer");
    let mut pings = Vec::with_capacity(16 << 20);
    let mut nonce = 0u64;
    while pings.len() < 16 << 20 {
        pings.extend_from_slice(&frame(corecast_proto::opcode::PING, 0, &nonce.to_le_bytes()));
        nonce += 1;
    }
    sub.stream.set_write_timeout(Some(Duration::from_millis(LINGER_MS))).unwrap();
    sub.stream
        .write_all(&pings)
        .unwrap_or_else(|e| panic!("writing 16 MiB to a draining connection: {e}"));
    expect_prefix_err_end(&mut sub, true);
    let read_in = cut_seen.elapsed();
    assert!(read_in < Duration::from_millis(LINGER_MS), "took {read_in:?}, past the linger");
    drop((sub, publ));
    finish(broker);
}

/// The cut subscriber keeps sending during the first half of the linger
/// and reads only after the broker has closed: the close is still clean (a
/// FIN after what was written, not a reset that would destroy it), because
/// the broker read and discarded everything it was sent.
#[test]
fn subscriber_that_sends_but_reads_only_after_the_linger_gets_a_clean_end() {
    let broker = start(Config { close_linger_ms: LINGER_MS, ..test_config(1) });
    let (mut sub, publ, cut_seen) = cut_with_err_waiting(&broker, "drain.after");
    while cut_seen.elapsed() < Duration::from_millis(LINGER_MS / 2) {
        sub.ping();
        thread::sleep(Duration::from_millis(20));
    }
    // The broker gives the slot up when the linger ends.
    wait_counters(&broker, "the drain ended", |c| c.slots_in_use == 1);
    assert!(cut_seen.elapsed() >= Duration::from_millis(LINGER_MS / 2));
    expect_prefix_err_end(&mut sub, false);
    drop((sub, publ));
    finish(broker);
}

/// A protocol error is not about memory: everything queued before it still
/// goes out, then the ERR, then a clean end of stream.
#[test]
fn a_protocol_error_keeps_what_was_queued_before_it() {
    let cfg = Config { close_linger_ms: LINGER_MS, max_pending: 32 << 20, ..test_config(1) };
    let broker = start(cfg);
    let addr = broker.local_addr();
    let topic = "drain.protocol";
    let mut sub = Client::connect_tight(addr);
    sub.sub(1, topic);
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    // About 12 MiB: far more than the kernel's socket buffers take
    // (tcp_wmem allows 4 MiB), less than max_pending.
    const SENT: u64 = 12_000;
    for seq in 0..SENT {
        publ.publish(topic, &seq_payload(seq, 1000));
    }
    publ.flush_empty();
    wait_counters(&broker, "messages queued in the broker", |c| c.pending_bytes > 4 << 20);
    sub.send_raw(&frame(0x7f, 0, &[]));
    let (frames, end) = sub.read_to_end(Duration::from_secs(10));
    let (last, msgs) = frames.split_last().expect("frames");
    assert_eq!(last.err_code(), Some((2, true)), "last frame {}", describe(Some(last)));
    let seqs = seqs_of(msgs, 1008);
    assert_eq!(seqs.len() as u64, SENT, "every queued message arrives before the ERR");
    assert!(seqs.iter().copied().eq(0..SENT), "in order");
    assert!(matches!(end, StreamEnd::Eof), "{end:?}");
    drop((sub, publ));
    finish(broker);
}
