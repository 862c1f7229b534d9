#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Slow consumers: a subscriber that does not read is cut off (ERR 9) while
//! one that reads loses nothing; a lossy subscriber is never cut off and
//! every loss is reported with DROPPED before the next PONG; buffers are
//! pooled and everything returns to idle.

mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use corecast::{Broker, Config};

/// Payload filler: with the sequence number, messages are about 1 KiB.
const PAD: usize = 1000;
/// Sequence number of the message that tells a reader to stop.
const END: u64 = u64::MAX;
/// Messages the publisher may be ahead of the reading subscriber. 24 MSGs of
/// ~1 KiB stay below the 32 KiB write buffer (minus its 512-byte reserve), so
/// the reader can never be cut off, however the threads are scheduled.
const WINDOW: u64 = 24;

fn slow_config(cores: usize) -> Config {
    // A long linger: the cut-off subscriber only reads once publishing ends,
    // and must still find its ERR 9.
    Config { close_linger_ms: 5000, ..small_config(cores) }
}

/// Reads MSGs for `sid` on `topic` until the END message, counting progress;
/// returns the sequence numbers received.
fn spawn_reader(
    mut c: Client,
    sid: u32,
    topic: &'static str,
    progress: Arc<AtomicU64>,
) -> thread::JoinHandle<(Client, Vec<u64>)> {
    thread::spawn(move || {
        let mut seqs = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "reader never saw END");
            let (s, t, payload) = c.recv_msg();
            assert_eq!((s, t.as_str()), (sid, topic));
            let seq = seq_of(&payload);
            if seq == END {
                return (c, seqs);
            }
            seqs.push(seq);
            progress.store(seqs.len() as u64, Ordering::Release);
        }
    })
}

/// One round: a subscriber that never reads and one that does, on the same
/// topic. Publishes until the first is cut off, then 200 more.
fn slow_round(broker: &Broker, topic: &'static str) {
    let addr = broker.local_addr();
    let before = broker.counters().total;
    let mut lagging = Client::connect_small_rcvbuf(addr, 4096);
    lagging.sub(1, topic);
    lagging.flush_empty();
    let mut reader = Client::connect(addr);
    reader.sub(2, topic);
    reader.flush_empty();
    let progress = Arc::new(AtomicU64::new(0));
    let reader = spawn_reader(reader, 2, topic, Arc::clone(&progress));

    let mut publ = Client::connect(addr);
    // The first message: wait until it sits in the lagging client's kernel
    // buffer, where the broker cannot take it back, so the lagging client
    // sees at least one MSG before its ERR 9 however the cut is timed.
    publ.publish(topic, &seq_payload(0, PAD));
    let msg_len = Got::msg(1, topic, &seq_payload(0, PAD)).wire_len();
    lagging.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut peeked = vec![0u8; msg_len];
    let waiting = Instant::now();
    while lagging.stream.peek(&mut peeked).expect("peek") < msg_len {
        assert!(waiting.elapsed() < Duration::from_secs(5), "first MSG never reached the socket");
        thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let mut seq = 1u64;
    let mut stop_at = None;
    while stop_at.is_none_or(|n| seq < n) {
        assert!(started.elapsed() < Duration::from_secs(8), "no slow consumer after {seq}");
        while seq - progress.load(Ordering::Acquire) >= WINDOW {
            assert!(started.elapsed() < Duration::from_secs(8), "reader stuck at {seq}");
            thread::sleep(Duration::from_micros(100));
        }
        publ.publish(topic, &seq_payload(seq, PAD));
        seq += 1;
        if stop_at.is_none()
            && seq.is_multiple_of(16)
            && broker.counters().total.slow_consumer_closes > before.slow_consumer_closes
        {
            stop_at = Some(seq + 200);
        }
    }
    publ.publish(topic, &seq_payload(END, 0));
    publ.flush_empty();
    let published = seq;

    let (reader, got) = reader.join().expect("reader thread");
    assert_eq!(got.len() as u64, published, "the reading subscriber lost messages");
    assert!(got.iter().copied().eq(0..published), "reader out of order");

    // The lagging subscriber finally reads: a prefix of the messages, in
    // order, then ERR 9 as the last frame, then the close.
    let frames = lagging.read_to_close(Duration::from_secs(8));
    let (last, msgs) = frames.split_last().expect("frames");
    assert_eq!(last.err_code(), Some((9, true)), "last frame {last:?}");
    let seqs: Vec<u64> = msgs
        .iter()
        .map(|f| match f {
            Got::Msg { sid: 1, topic: t, payload, .. } if t == topic => seq_of(payload),
            other => panic!("lagging subscriber got {other:?}"),
        })
        .collect();
    assert!(!seqs.is_empty() && (seqs.len() as u64) < published, "{} of {published}", seqs.len());
    if let Some(i) = seqs.iter().enumerate().position(|(i, &s)| s != i as u64) {
        let around = &seqs[i.saturating_sub(3)..(i + 4).min(seqs.len())];
        panic!(
            "the cut-off subscriber's MSGs are not an in-order prefix: position {i} holds \
             seq {} (around it: {around:?}; {} MSGs before ERR 9, {published} published)",
            seqs[i],
            seqs.len()
        );
    }

    let c = broker.counters().total;
    assert_eq!(c.slow_consumer_closes - before.slow_consumer_closes, 1);
    assert_eq!(c.msgs_dropped, 0);
    assert_eq!(c.msgs_in - before.msgs_in, published + 1);
    drop((lagging, reader, publ));
    wait_idle(broker);
}

#[test]
fn non_reader_is_cut_off_while_reader_gets_everything_one_core() {
    let broker = start(slow_config(1));
    for _ in 0..3 {
        slow_round(&broker, "slow.one");
    }
    // Three rounds of three connections on one core, each round back to no
    // memory held, queued or cached.
    let c = wait_idle(&broker);
    assert_eq!(c.connections_accepted, 9);
    finish(broker);
}

#[test]
fn non_reader_is_cut_off_while_reader_gets_everything_two_cores() {
    let broker = start(slow_config(2));
    slow_round(&broker, "slow.two");
    finish(broker);
}

#[test]
fn lossy_subscriber_stays_and_reports_every_drop_before_pong() {
    let broker = start(slow_config(2));
    let addr = broker.local_addr();
    let topic = "lossy.t";
    let mut lossy = Client::connect_small_rcvbuf(addr, 4096);
    lossy.sub_lossy(1, topic);
    lossy.flush_empty();
    let mut publ = Client::connect(addr);
    let started = Instant::now();
    let mut published = 0u64;
    let mut extra = None;
    while extra.is_none_or(|n| published < n) {
        assert!(started.elapsed() < Duration::from_secs(8), "no drops after {published}");
        for _ in 0..64 {
            publ.publish(topic, &seq_payload(published, PAD));
            published += 1;
        }
        publ.flush_empty();
        if extra.is_none() && broker.counters().total.msgs_dropped > 0 {
            extra = Some(published + 500);
        }
    }
    // Every publication is now routed: queued for the lossy subscriber or
    // counted as dropped. Its PING must be answered only after DROPPED.
    let nonce = lossy.ping();
    // Give the broker a moment to take the PING while the buffer is still
    // full (the assertions hold either way; this makes the case likely).
    thread::sleep(Duration::from_millis(20));
    let before_pong = lossy.until_pong(nonce);

    let (mut seqs, mut dropped, mut notices) = (Vec::new(), 0u64, 0);
    for f in &before_pong {
        match f {
            Got::Msg { sid: 1, topic: t, payload, .. } if t == topic => seqs.push(seq_of(payload)),
            Got::Dropped { sid: 1, count } => {
                assert!(*count > 0, "DROPPED with count 0");
                dropped += count;
                notices += 1;
            }
            other => panic!("lossy subscriber got {other:?}"),
        }
    }
    assert!(notices >= 1, "no DROPPED before the PONG");
    assert!(dropped > 0);
    assert_eq!(seqs.len() as u64 + dropped, published, "delivered + dropped = published");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "MSGs out of order");

    let c = broker.counters().total;
    assert_eq!(c.slow_consumer_closes, 0, "a lossy subscriber is never cut off");
    assert_eq!(c.msgs_dropped, dropped);
    assert_eq!(c.msgs_out, seqs.len() as u64);
    assert_eq!(c.connections_open, 2);

    // Still subscribed, and nothing more to report.
    lossy.flush_empty();
    publ.publish(topic, &seq_payload(END, 0));
    publ.flush_empty();
    assert_eq!(lossy.flush(), vec![Got::msg(1, topic, &seq_payload(END, 0))]);
    drop((lossy, publ));
    finish(broker);
}

#[test]
fn unsub_of_a_lossy_subscription_reports_its_drops() {
    // MSGs of 13 bytes (topic "u", empty payload) are smaller than a
    // DROPPED (18 bytes): once a MSG no longer fits, a DROPPED does not
    // either, so the drops are still unreported when UNSUB arrives.
    let broker = start(slow_config(1));
    let addr = broker.local_addr();
    let mut lossy = Client::connect_small_rcvbuf(addr, 4096);
    lossy.sub_lossy(1, "u");
    lossy.flush_empty();
    let mut publ = Client::connect(addr);
    let started = Instant::now();
    let mut published = 0u64;
    // Publish until one whole batch was dropped: the write buffer stayed
    // full all along, so none of those drops can have been reported yet.
    loop {
        assert!(started.elapsed() < Duration::from_secs(8), "never stuck after {published}");
        let before = broker.counters().total.msgs_dropped;
        for _ in 0..4096 {
            publ.publish("u", b"");
            published += 1;
        }
        publ.flush_empty();
        if broker.counters().total.msgs_dropped - before == 4096 {
            break;
        }
    }
    // Unsubscribe while drops are unreported, then read everything up to
    // the PONG, which promises that every loss before it was reported.
    lossy.unsub(1);
    let frames = lossy.flush();
    let (mut delivered, mut dropped) = (0u64, 0u64);
    for f in &frames {
        match f {
            Got::Msg { sid: 1, .. } => delivered += 1,
            Got::Dropped { sid: 1, count } => dropped += count,
            other => panic!("unexpected {other:?}"),
        }
    }
    let counted = broker.counters().total.msgs_dropped;
    assert_eq!(
        (delivered + dropped, dropped),
        (published, counted),
        "published {published}, delivered {delivered}, reported dropped {dropped}, \
         msgs_dropped counter {counted}: loss must never be silent, even across UNSUB"
    );
    drop((lossy, publ));
    finish(broker);
}

#[test]
fn unsub_in_the_same_read_as_drops_reports_them() {
    // The lossy connection publishes to its own lossy subscription and
    // never reads, so its write buffer fills and the rest is dropped. Its
    // last write carries 6000 more PUBs (~78 KB of MSGs, more than the whole
    // write buffer) then UNSUB and PING, all within one read buffer: the
    // final drops, the UNSUB and the PING are applied with no flush in
    // between that could report the drops first.
    use std::io::Write;
    let max_frame = 64 << 10;
    let broker = start(Config {
        max_frame,
        max_pending: max_frame as usize + 8 + 512,
        close_linger_ms: 5000,
        ..test_config(1)
    });
    let addr = broker.local_addr();
    let mut c = Client::connect_small_rcvbuf(addr, 4096);
    c.sub_lossy(1, "u");
    c.flush_empty();
    let mut batch = Vec::new();
    for _ in 0..4096 {
        batch.extend_from_slice(&raw_pub(b"u", b"", b""));
    }
    let started = Instant::now();
    let mut published = 0u64;
    loop {
        assert!(started.elapsed() < Duration::from_secs(8), "never stuck after {published}");
        let before = broker.counters().total.msgs_dropped;
        c.stream.write_all(&batch).unwrap();
        published += 4096;
        let s = wait_counters(&broker, "batch routed", |s| s.msgs_in == published);
        if s.msgs_dropped - before == 4096 {
            break;
        }
    }
    let mut last = Vec::new();
    for _ in 0..6000 {
        last.extend_from_slice(&raw_pub(b"u", b"", b""));
    }
    published += 6000;
    last.extend_from_slice(&frame(corecast_proto::opcode::UNSUB, 0, &1u32.to_le_bytes()));
    let nonce = c.next_nonce;
    c.next_nonce += 1;
    last.extend_from_slice(&frame(corecast_proto::opcode::PING, 0, &nonce.to_le_bytes()));
    c.stream.write_all(&last).unwrap();
    let (mut delivered, mut dropped) = (0u64, 0u64);
    let end = loop {
        match c.read_frame(Duration::from_secs(5)) {
            ReadEnd::Frame(Got::Pong(n)) if n == nonce => break None,
            ReadEnd::Frame(Got::Msg { sid: 1, .. }) => delivered += 1,
            ReadEnd::Frame(Got::Dropped { sid: 1, count }) => dropped += count,
            other => break Some(other),
        }
    };
    let counted = broker.counters().total;
    assert_eq!(
        end, None,
        "a connection whose only subscription was lossy got {end:?} instead of its PONG \
         (published {published}, delivered {delivered}, reported dropped {dropped}, \
         msgs_dropped {}, slow_consumer_closes {})",
        counted.msgs_dropped, counted.slow_consumer_closes
    );
    assert_eq!(
        (delivered + dropped, dropped),
        (published, counted.msgs_dropped),
        "published {published}, delivered {delivered}, reported dropped {dropped}: \
         the PONG came with drops never reported"
    );
    assert_eq!(counted.slow_consumer_closes, 0);
    drop(c);
    finish(broker);
}

#[test]
fn fast_subscriber_is_not_cut_off_by_one_burst() {
    // The smallest write buffer the configuration accepts (max_frame + 520)
    // and a publisher that sends 63 kB of tiny PUBs in one write: each 9-byte
    // PUB becomes a 13-byte MSG, so the burst is 91 kB of MSGs for a
    // subscriber that reads as fast as it can.
    use std::io::Write;
    const N: u64 = 7000;
    let max_frame = 64 << 10;
    let broker =
        start(Config { max_frame, max_pending: max_frame as usize + 8 + 512, ..test_config(1) });
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(1, "b");
    sub.flush_empty();
    let reader = thread::spawn(move || {
        let mut got = 0u64;
        while got < N {
            match sub.read_frame(Duration::from_secs(5)) {
                ReadEnd::Frame(Got::Msg { sid: 1, .. }) => got += 1,
                other => return (got, Some(other)),
            }
        }
        (got, None)
    });
    let mut publ = Client::connect(addr);
    let mut burst = Vec::new();
    for _ in 0..N {
        burst.extend_from_slice(&raw_pub(b"b", b"", b""));
    }
    publ.stream.write_all(&burst).unwrap();
    publ.flush_empty();
    let (got, end) = reader.join().expect("reader");
    let c = broker.counters().total;
    assert_eq!(
        (got, end),
        (N, None),
        "a subscriber reading as fast as it can was cut off by one {} kB write of PUBs \
         (slow_consumer_closes {})",
        burst.len() >> 10,
        c.slow_consumer_closes
    );
    assert_eq!(c.slow_consumer_closes, 0);
    drop(publ);
    finish(broker);
}
