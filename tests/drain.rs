#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The last frame must arrive: a subscriber cut as a slow consumer that
//! sends something and only then starts reading (within the linger) gets
//! what reached its socket, then ERR 9 as the last frame, then a clean end
//! of stream. The broker keeps reading and discarding its input while it
//! drains, so that input left unread cannot turn the close into a reset
//! that would destroy what was queued.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corecast::Config;

const LINGER_MS: u64 = 2000;
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
            "round {round}: the stream ended with {end:?} after {} frames (last {:?})",
            frames.len(),
            frames.last()
        );
        let (last, msgs) = frames.split_last().expect("frames");
        assert_eq!(last.err_code(), Some((9, true)), "round {round}: last frame {last:?}");
        let seqs: Vec<u64> = msgs
            .iter()
            .map(|f| match f {
                Got::Msg { sid: 1, payload, .. } if payload.len() == PAYLOAD => seq_of(payload),
                other => panic!("round {round}: {other:?} before the ERR"),
            })
            .collect();
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
