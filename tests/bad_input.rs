#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every kind of bad input gets its error code (and the close when fatal),
//! while a subscribed connection on the same broker keeps working.

mod common;

use std::{
    io::{ErrorKind, Write},
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::*;
use corecast::{Broker, Config};
use corecast_proto::opcode;

/// Starts a broker with a witness pair, runs `body`, checks that the witness
/// still works and that nothing panicked, then tears everything down.
fn with_broker(cfg: Config, body: impl FnOnce(&Broker, SocketAddr, &mut Witness)) {
    let broker = start(cfg);
    let addr = broker.local_addr();
    let mut witness = Witness::new(addr);
    witness.check();
    body(&broker, addr, &mut witness);
    witness.check();
    assert_eq!(broker.counters().total.task_panics, 0);
    drop(witness);
    finish(broker);
}

/// Sends `bytes` on a fresh connection (after the handshake when `hello`)
/// and expects exactly the fatal ERR `code`, then the close, and the
/// broker's protocol_errors counter to move by one.
fn expect_fatal_for(broker: &Broker, hello: bool, bytes: &[u8], code: u16) {
    let before = broker.counters().total.protocol_errors;
    let mut c = if hello {
        Client::connect(broker.local_addr())
    } else {
        Client::connect_raw(broker.local_addr())
    };
    c.send_raw(bytes);
    c.expect_only_fatal(code);
    wait_counters(broker, "one more protocol error", |s| s.protocol_errors == before + 1);
}

fn ping_frame(nonce: u64) -> Vec<u8> {
    frame(opcode::PING, 0, &nonce.to_le_bytes())
}

fn hello_body(version: u16, name: &[u8], token: &[u8]) -> Vec<u8> {
    let mut b = version.to_le_bytes().to_vec();
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.extend_from_slice(&(token.len() as u16).to_le_bytes());
    b.extend_from_slice(token);
    b
}

fn sub_body(sid: u32, topic: &[u8], group: &[u8]) -> Vec<u8> {
    let mut b = sid.to_le_bytes().to_vec();
    b.push(topic.len() as u8);
    b.extend_from_slice(topic);
    b.push(group.len() as u8);
    b.extend_from_slice(group);
    b
}

#[test]
fn oversized_length_prefix_is_refused_as_soon_as_it_arrives() {
    let cfg = test_config(2);
    let too_big = cfg.max_frame + 1;
    with_broker(cfg, |broker, _, _| {
        // Only the 4 prefix bytes are sent: the answer must not wait for more.
        expect_fatal_for(broker, true, &too_big.to_le_bytes(), 3);
        expect_fatal_for(broker, false, &too_big.to_le_bytes(), 3);
        expect_fatal_for(broker, true, &u32::MAX.to_le_bytes(), 3);
    });
}

#[test]
fn length_prefix_below_two_is_malformed() {
    with_broker(test_config(2), |broker, _, _| {
        expect_fatal_for(broker, true, &0u32.to_le_bytes(), 1);
        expect_fatal_for(broker, true, &[1, 0, 0, 0, opcode::PING], 1);
        expect_fatal_for(broker, false, &1u32.to_le_bytes(), 1);
    });
}

#[test]
fn unknown_opcodes_are_refused() {
    with_broker(test_config(2), |broker, _, _| {
        expect_fatal_for(broker, true, &frame(0x7f, 0, &[]), 2);
        expect_fatal_for(broker, true, &frame(opcode::MSG, 0, &[0; 8]), 2);
        expect_fatal_for(broker, true, &frame(opcode::WELCOME, 0, &[]), 2);
        expect_fatal_for(broker, true, &frame(0x04, 0, &[]), 2);
        // Server opcodes from a client, even with well-formed bodies.
        expect_fatal_for(broker, true, &frame(opcode::ERR, 0, &[9, 0, 1, 0, 0]), 2);
        expect_fatal_for(broker, true, &frame(opcode::GOAWAY, 0, &[1, 0, 0, 0, 0, 0]), 2);
        expect_fatal_for(broker, true, &frame(opcode::STATS_REPLY, 0, &[0; 12]), 2);
        // Framing errors come before session rules, even before HELLO.
        expect_fatal_for(broker, false, &frame(0xff, 0, &[]), 2);
        // The opcode is checked before the flags.
        expect_fatal_for(broker, false, &frame(0x21, 0xff, &[]), 2);
    });
}

#[test]
fn truncated_bodies_and_trailing_bytes_are_malformed() {
    with_broker(test_config(2), |broker, _, _| {
        expect_fatal_for(broker, true, &frame(opcode::PING, 0, &[1, 2, 3, 4]), 1);
        expect_fatal_for(broker, true, &frame(opcode::PING, 0, &[0; 10]), 1);
        expect_fatal_for(broker, true, &frame(opcode::PONG, 0, &[]), 1);
        expect_fatal_for(broker, true, &frame(opcode::UNSUB, 0, &[1, 0, 0, 0, 0]), 1);
        // SUB whose topic length runs past the end of the frame.
        expect_fatal_for(broker, true, &frame(opcode::SUB, 0, &[1, 0, 0, 0, 10, b'a', b'b']), 1);
        // SUB with a byte after the queue group.
        let mut body = sub_body(1, b"t", b"");
        body.push(0);
        expect_fatal_for(broker, true, &frame(opcode::SUB, 0, &body), 1);
        // PUB whose reply-to length runs past the end, and one whose topic does.
        expect_fatal_for(broker, true, &frame(opcode::PUB, 0, &[1, b't', 9, b'r']), 1);
        expect_fatal_for(broker, true, &frame(opcode::PUB, 0, &[9, b't']), 1);
        // STATS with a nonce one byte short.
        expect_fatal_for(broker, true, &frame(opcode::STATS, 0, &[0; 7]), 1);
        // HELLO cut short, and HELLO with trailing bytes, before the handshake.
        expect_fatal_for(broker, false, &frame(opcode::HELLO, 0, &[1, 0, 4, b'a']), 1);
        let mut body = hello_body(1, b"n", b"");
        body.push(7);
        expect_fatal_for(broker, false, &frame(opcode::HELLO, 0, &body), 1);
    });
}

#[test]
fn undefined_flag_bits_are_malformed() {
    with_broker(test_config(2), |broker, _, _| {
        expect_fatal_for(broker, true, &frame(opcode::PING, 0x01, &[0; 8]), 1);
        expect_fatal_for(broker, true, &frame(opcode::SUB, 0x02, &sub_body(1, b"t", b"")), 1);
        expect_fatal_for(broker, true, &frame(opcode::SUB, 0x81, &sub_body(1, b"t", b"")), 1);
        expect_fatal_for(broker, true, &frame(opcode::PUB, 0x80, &[1, b't', 0]), 1);
        expect_fatal_for(broker, true, &frame(opcode::UNSUB, 0x10, &[0; 4]), 1);
        expect_fatal_for(broker, true, &frame(opcode::STATS, 0x01, &[0; 8]), 1);
        expect_fatal_for(broker, false, &frame(opcode::HELLO, 0x01, &hello_body(1, b"", b"")), 1);
    });
}

#[test]
fn bad_utf8_in_topics_is_refused_without_closing() {
    with_broker(test_config(2), |broker, addr, _| {
        let mut sub = Client::connect(addr);
        sub.sub(1, "ok.t");
        sub.flush_empty();
        let mut c = Client::connect(addr);
        let before = broker.counters().total.protocol_errors;
        c.send_raw(&raw_pub(&[0xff, 0xfe], b"", b"payload"));
        c.send_raw(&raw_pub(b"ok.t", &[b'r', 0xc0, 0x80], b"overlong NUL in reply-to"));
        c.send_raw(&raw_pub(&[0xed, 0xa0, 0x80], b"", b"surrogate"));
        // SUB with a bad UTF-8 topic: refused, the sid stays free.
        c.send_raw(&frame(opcode::SUB, 0, &sub_body(5, &[b'a', 0xff], b"")));
        c.unsub(5);
        // The topic's bad UTF-8 is found before the queue group running
        // past the end (PROTOCOL.md 2.6): bad topic, and the session goes on.
        c.send_raw(&frame(opcode::SUB, 0, &[6, 0, 0, 0, 2, b'a', 0xff, 9, b'g']));
        c.publish("ok.t", b"after");
        c.flush_expect_errs(&[100, 100, 100, 100, 103, 100]);
        // None of the refused PUBs was delivered; the good one was.
        assert_eq!(sub.recv(), Got::msg(1, "ok.t", b"after"));
        sub.flush_empty();
        assert_eq!(broker.counters().total.protocol_errors, before + 6);
        assert_eq!(broker.counters().total.msgs_in, 2, "witness + the good PUB");
    });
}

#[test]
fn bad_utf8_in_names_and_groups_is_malformed() {
    with_broker(test_config(2), |broker, _, _| {
        let bad_name = hello_body(1, &[b'x', 0xff], b"");
        expect_fatal_for(broker, false, &frame(opcode::HELLO, 0, &bad_name), 1);
        let long_name = hello_body(1, &[b'n'; 65], b"");
        expect_fatal_for(broker, false, &frame(opcode::HELLO, 0, &long_name), 1);
        let bad_group = sub_body(1, b"t", &[0xff]);
        expect_fatal_for(broker, true, &frame(opcode::SUB, 0, &bad_group), 1);
        // A 64-byte name is fine.
        let mut c = Client::connect_raw(broker.local_addr());
        c.send_raw(&frame(opcode::HELLO, 0, &hello_body(1, &[b'n'; 64], b"")));
        c.expect_welcome();
        c.flush_empty();
    });
}

#[test]
fn frames_before_hello_and_second_hello_are_refused() {
    with_broker(test_config(2), |broker, _, _| {
        expect_fatal_for(broker, false, &ping_frame(1), 4);
        expect_fatal_for(broker, false, &frame(opcode::SUB, 0, &sub_body(1, b"t", b"")), 4);
        expect_fatal_for(broker, false, &raw_pub(b"t", b"", b"x"), 4);
        expect_fatal_for(broker, false, &frame(opcode::PONG, 0, &[0; 8]), 4);
        expect_fatal_for(broker, false, &frame(opcode::UNSUB, 0, &[1, 0, 0, 0]), 4);
        let hello = frame(opcode::HELLO, 0, &hello_body(1, b"again", b""));
        expect_fatal_for(broker, true, &hello, 4);
    });
}

#[test]
fn frames_after_a_fatal_error_in_the_same_write_are_discarded() {
    with_broker(test_config(2), |broker, _, witness| {
        let msgs_in = broker.counters().total.msgs_in;
        let stray = raw_pub(Witness::TOPIC.as_bytes(), b"", b"after the fatal error");
        // Open session: a malformed PING, then a PUB the witness would get
        // and a PING that would be answered.
        let mut bytes = frame(opcode::PING, 0x01, &[0; 8]);
        bytes.extend_from_slice(&stray);
        bytes.extend_from_slice(&ping_frame(2));
        expect_fatal_for(broker, true, &bytes, 1);
        // Before HELLO: the PING is refused, so the HELLO after it is not
        // answered with WELCOME and the PUB is not applied either.
        let mut bytes = ping_frame(1);
        bytes.extend_from_slice(&frame(opcode::HELLO, 0, &hello_body(1, b"late", b"")));
        bytes.extend_from_slice(&stray);
        expect_fatal_for(broker, false, &bytes, 4);
        // Neither PUB was applied (they would be counted before the close),
        // and the witness gets only its own message.
        assert_eq!(broker.counters().total.msgs_in, msgs_in, "a PUB after the fatal ERR");
        witness.check();
    });
}

#[test]
fn unsupported_versions_are_refused() {
    with_broker(test_config(2), |broker, _, _| {
        for version in [0u16, 2, u16::MAX] {
            let hello = frame(opcode::HELLO, 0, &hello_body(version, b"v", b""));
            expect_fatal_for(broker, false, &hello, 6);
        }
    });
}

#[test]
fn auth_token_is_checked_when_configured() {
    let broker = start(Config { auth_token: Some("s3cret".into()), ..test_config(2) });
    let addr = broker.local_addr();
    let hello_with = |token: &[u8]| frame(opcode::HELLO, 0, &hello_body(1, b"auth", token));
    // Four: a fifth failure from this address would throttle the next
    // login (tests/auth.rs covers the throttle).
    for token in [&b""[..], b"wrong!", b"s3cre", b"S3CRET"] {
        expect_fatal_for(&broker, false, &hello_with(token), 7);
    }
    let mut sub = Client::connect_raw(addr);
    sub.send_raw(&hello_with(b"s3cret"));
    sub.expect_welcome();
    sub.sub(1, "auth.t");
    sub.flush_empty();
    let mut publ = Client::connect_raw(addr);
    publ.send_raw(&hello_with(b"s3cret"));
    publ.expect_welcome();
    publ.publish("auth.t", b"authorised");
    publ.flush_empty();
    assert_eq!(sub.recv(), Got::msg(1, "auth.t", b"authorised"));
    assert_eq!(broker.counters().total.protocol_errors, 4);
    drop((sub, publ));
    finish(broker);
}

#[test]
fn token_is_ignored_without_auth() {
    with_broker(test_config(2), |_, addr, _| {
        let mut c = Client::connect_raw(addr);
        c.hello("tok", b"anything at all \x00\xff");
        c.expect_welcome();
        c.flush_empty();
    });
}

#[test]
fn bad_pub_topics_and_reply_tos_are_refused_without_closing() {
    with_broker(test_config(2), |broker, addr, _| {
        let mut sub = Client::connect(addr);
        sub.sub(1, "$SYS.x"); // reserved topics may be subscribed to
        sub.sub(2, "good.t");
        sub.flush_empty();
        let long = "a".repeat(256);
        let mut c = Client::connect(addr);
        let cases: [(&[u8], &[u8], u16); 14] = [
            (b"a b", b"", 100),
            (b"a..b", b"", 100),
            (b".a", b"", 100),
            (b"a.", b"", 100),
            (b"", b"", 100),
            (b"a\tb", b"", 100),
            ("é\u{a0}x".as_bytes(), b"", 100),
            (b"a*b", b"", 100),
            (b"a.*", b"", 100),
            (b">", b"", 100),
            (b"$SYS.x", b"", 104),
            (b"good.t", b"a b", 100),
            (b"good.t", b"$r", 104),
            (b"good.t", b"r.>", 100),
        ];
        for (topic, reply, _) in cases {
            c.send_raw(&raw_pub(topic, reply, b"refused"));
        }
        // A 256-byte topic cannot be written with a u8 length; the longest
        // is 255 and valid.
        c.publish(&long[..255], b"nobody listens");
        c.publish("good.t", b"marker");
        let codes: Vec<u16> = cases.iter().map(|&(_, _, code)| code).collect();
        c.flush_expect_errs(&codes);
        // Nothing refused was delivered: the marker is the first MSG.
        assert_eq!(sub.recv(), Got::msg(2, "good.t", b"marker"));
        sub.flush_empty();
        assert_eq!(broker.counters().total.protocol_errors, cases.len() as u64);
    });
}

#[test]
fn bad_subs_and_unsubs_are_refused_without_closing() {
    let cfg = Config { max_subscriptions: 2, ..test_config(2) };
    with_broker(cfg, |broker, addr, _| {
        let mut c = Client::connect(addr);
        c.sub(10, "a.*");
        c.sub(11, ">");
        c.sub_group(12, "grp.t", "workers");
        c.sub(13, "a b");
        c.sub(14, "a..b");
        c.sub(15, "");
        c.flush_expect_errs(&[105, 105, 105, 100, 100, 100]);
        // None of those subscriptions exists.
        for sid in 10..16 {
            c.unsub(sid);
            c.expect_err(103);
        }
        c.sub(1, "s.one");
        c.flush_empty();
        c.sub(1, "s.other");
        c.expect_err(102);
        c.sub(2, "s.two");
        c.flush_empty();
        c.sub(3, "s.three");
        c.expect_err(101);
        assert_eq!(broker.counters().total.subscriptions, 2 + 1, "two here plus the witness");
        c.unsub(99);
        c.expect_err(103);
        c.unsub(1);
        c.flush_empty();
        c.sub(3, "s.three");
        c.flush_empty();
        // sid 1 was refused as a duplicate, then removed: "s.other" never
        // got a subscriber, "s.three" did.
        let mut p = Client::connect(addr);
        p.publish("s.other", b"no");
        p.publish("s.one", b"no");
        p.publish("s.three", b"yes");
        p.flush_empty();
        assert_eq!(c.flush(), vec![Got::msg(3, "s.three", b"yes")]);
        assert_eq!(broker.counters().total.protocol_errors, 6 + 6 + 3);
    });
}

#[test]
fn half_written_frames_then_close_leave_nothing_behind() {
    with_broker(test_config(2), |broker, addr, witness| {
        let base = broker.counters().total;
        let cases: [(bool, Vec<u8>); 5] = [
            (true, raw_pub(b"half.t", b"", &[7; 100])[..30].to_vec()),
            (true, vec![200, 0]),
            (true, 60_000u32.to_le_bytes().to_vec()),
            (false, frame(opcode::HELLO, 0, &hello_body(1, b"half", b""))[..7].to_vec()),
            (false, vec![]),
        ];
        for (hello, bytes) in &cases {
            let mut c = if *hello { Client::connect(addr) } else { Client::connect_raw(addr) };
            if *hello {
                c.sub(1, "half.t");
            }
            c.send_raw(bytes);
            drop(c);
        }
        // Half a frame followed by a reset, too.
        let mut c = Client::connect(addr);
        c.send_raw(&raw_pub(b"half.t", b"", &[7; 100])[..50]);
        c.reset();
        // Only the witness pair is left.
        let c = wait_counters(broker, "back to the witness pair", |c| {
            c.slots_in_use == 2 && c.tasks_alive == 2 && c.buffers_out == 0
        });
        assert_eq!(c.subscriptions, 1);
        assert_eq!(c.connections_open, 2);
        assert_eq!(c.task_panics, 0);
        assert_eq!(c.msgs_in, base.msgs_in, "no half frame was applied");
        witness.check();
    });
}

/// A client that floods `frame_of(i)` and never reads is cut off as a slow
/// consumer; when it finally reads, `each` holds for every frame before the
/// ERR 9, which is the last frame before the close.
fn flood_until_slow_consumer(frame_of: impl Fn(u64) -> Vec<u8>, each: impl Fn(u64, &Got)) {
    // A long linger, so the ERR waits for the client to come and read it.
    let cfg = Config { close_linger_ms: 5000, ..small_config(2) };
    with_broker(cfg, |broker, addr, witness| {
        let mut c = Client::connect_small_rcvbuf(addr, 4096);
        c.stream.set_write_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut out: Vec<u8> = Vec::new();
        let mut next = 0u64;
        let started = Instant::now();
        let mut rounds = 0u64;
        while broker.counters().total.slow_consumer_closes == 0 {
            assert!(started.elapsed() < Duration::from_secs(8), "flood never cut off");
            while out.len() < 64 << 10 {
                out.extend_from_slice(&frame_of(next));
                next += 1;
            }
            // Partial writes keep the rest, so the stream stays whole.
            match c.stream.write(&out) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("flood write failed: {e}"),
            }
            rounds += 1;
            if rounds.is_multiple_of(16) {
                witness.check();
            }
        }
        witness.check();
        let frames = c.read_to_close(Duration::from_secs(8));
        let (last, rest) = frames.split_last().expect("frames before the close");
        assert_eq!(last.err_code(), Some((9, true)), "last frame: {last:?}");
        assert!(!rest.is_empty(), "answers before the cut");
        for (i, f) in rest.iter().enumerate() {
            each(i as u64, f);
        }
        assert_eq!(broker.counters().total.slow_consumer_closes, 1);
        drop(c);
        wait_counters(broker, "flooder gone", |c| c.slots_in_use == 2);
    });
}

#[test]
fn ping_flood_without_reading_is_cut_off_as_slow_consumer() {
    flood_until_slow_consumer(ping_frame, |i, f| assert_eq!(f, &Got::Pong(i), "answer {i}"));
}

#[test]
fn bad_topic_flood_without_reading_is_cut_off_as_slow_consumer() {
    flood_until_slow_consumer(
        |_| raw_pub(b"bad topic", b"", b""),
        |i, f| assert_eq!(f.err_code(), Some((100, false)), "answer {i}: {f:?}"),
    );
}

#[test]
fn write_of_whole_frames_then_reset_mid_stream() {
    // A client that resets while the broker still has frames queued for it
    // must not disturb anyone else.
    let cfg = Config { close_linger_ms: 100, ..small_config(2) };
    with_broker(cfg, |broker, addr, witness| {
        let mut c = Client::connect_small_rcvbuf(addr, 4096);
        let mut batch = Vec::new();
        for i in 0..2000 {
            batch.extend_from_slice(&ping_frame(i));
        }
        let bytes_in = broker.counters().total.bytes_in;
        c.stream.write_all(&batch).unwrap();
        c.stream.flush().unwrap();
        // The broker has read the whole batch (and so queued its PONGs,
        // which the client never reads) before the reset hits.
        wait_counters(broker, "the whole batch read", |s| {
            s.bytes_in >= bytes_in + batch.len() as u64
        });
        c.reset();
        witness.check();
        wait_counters(broker, "reset client gone", |c| c.slots_in_use == 2);
    });
}
