#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Thousands of connections that end every which way (RST, half a frame,
//! no HELLO, graceful close, slow consumer) leave nothing behind: slots,
//! buffers, tasks and subscriptions all return to zero, and buffers come
//! from the pools instead of being allocated per connection.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use corecast::Broker;

/// Cycles over all worker threads.
const CYCLES: u64 = 3000;
/// Threads running the quick cycles (a)–(d).
const WORKERS: u64 = 3;
const TOPICS: [&str; 5] = ["leak.a", "leak.b", "leak.c.d", "leak.e", "leak.f"];

/// xorshift64*: enough randomness for picking cycles, and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn topic(&mut self) -> &'static str {
        TOPICS[(self.next() % TOPICS.len() as u64) as usize]
    }
}

#[derive(Debug, Default)]
struct Tally {
    connections: AtomicU64,
    cycles: [AtomicU64; 5],
}

impl Tally {
    fn count(&self, kind: usize) {
        self.cycles[kind].fetch_add(1, Ordering::Relaxed);
    }

    fn connected(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }
}

/// One quick cycle: connect, HELLO, SUB, then end in one of four ways.
fn quick_cycle(addr: SocketAddr, rng: &mut Rng, tally: &Tally) {
    let kind = (rng.next() % 4) as usize;
    tally.connected();
    if kind == 2 {
        // (c) connect and close without HELLO; sometimes with half of one.
        let mut c = Client::connect_raw(addr);
        if rng.next().is_multiple_of(2) {
            c.send_raw(&frame(corecast_proto::opcode::HELLO, 0, &[1, 0, 4])[..5]);
        }
        drop(c);
        tally.count(kind);
        return;
    }
    let mut c = Client::connect(addr);
    c.sub(1, rng.topic());
    if rng.next().is_multiple_of(2) {
        c.sub(2, rng.topic());
    }
    if rng.next().is_multiple_of(2) {
        // Other threads publish to these topics, so MSGs may come first.
        c.flush();
    }
    match kind {
        // (a) abort with RST.
        0 => c.reset(),
        // (b) half a PUB frame, then close.
        1 => {
            let whole = raw_pub(rng.topic().as_bytes(), b"", &[7; 64]);
            let cut = 1 + (rng.next() as usize % (whole.len() - 1));
            c.send_raw(&whole[..cut]);
            drop(c);
        }
        // (d) publish something, then a graceful close.
        _ => {
            c.publish(rng.topic(), b"hello from a short-lived connection");
            if rng.next().is_multiple_of(2) {
                c.flush();
            }
            drop(c);
        }
    }
    tally.count(kind);
}

/// (e): a subscriber that stops reading while a publisher floods it, until
/// the broker cuts it off.
fn flood_cycle(broker: &Broker, publ: &mut Client, n: u64, tally: &Tally) {
    let addr = broker.local_addr();
    let topic = format!("leak.flood.{n}");
    tally.connected();
    let mut lag = Client::connect_small_rcvbuf(addr, 4096);
    lag.sub(1, &topic);
    lag.flush_empty();
    let before = broker.counters().total.slow_consumer_closes;
    let started = Instant::now();
    let payload = vec![0x5a; 4000];
    while broker.counters().total.slow_consumer_closes == before {
        assert!(started.elapsed() < Duration::from_secs(5), "flood {n} never cut off");
        for _ in 0..16 {
            publ.publish(&topic, &payload);
        }
        publ.flush_empty();
    }
    if n.is_multiple_of(2) {
        let frames = lag.read_to_close(Duration::from_secs(5));
        let last = frames.last().expect("frames");
        assert_eq!(last.err_code(), Some((9, true)), "flood {n} last frame {last:?}");
    } else {
        // Leave with everything unread: the client's close becomes a RST.
        lag.reset();
    }
    tally.count(4);
}

#[test]
fn thousands_of_connections_leave_nothing_behind() {
    let broker = Arc::new(start(small_config(2)));
    let addr = broker.local_addr();
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(9);
    let done = Arc::new(AtomicBool::new(false));

    // Samples the per-core memory held by connections, to check the storm
    // used some and gave all of it back.
    let sampler = {
        let (broker, done) = (Arc::clone(&broker), Arc::clone(&done));
        thread::spawn(move || {
            let mut peak = vec![0u64; 2];
            while !done.load(Ordering::Relaxed) {
                for (p, s) in peak.iter_mut().zip(broker.counters().per_core) {
                    *p = (*p).max(s.memory_used);
                }
                thread::sleep(Duration::from_millis(1));
            }
            peak
        })
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tally = Arc::clone(&tally);
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
                for _ in 0..CYCLES / WORKERS {
                    if Instant::now() > deadline {
                        break;
                    }
                    quick_cycle(addr, &mut rng, &tally);
                }
            })
        })
        .collect();
    let flooder = {
        let (broker, tally, done) = (Arc::clone(&broker), Arc::clone(&tally), Arc::clone(&done));
        thread::spawn(move || {
            tally.connected();
            let mut publ = Client::connect(broker.local_addr());
            let mut n = 0;
            // At least four floods, then more while the workers run.
            while n < 4 || (n < 40 && !done.load(Ordering::Relaxed) && Instant::now() < deadline) {
                flood_cycle(&broker, &mut publ, n, &tally);
                n += 1;
            }
            n
        })
    };
    for w in workers {
        w.join().expect("worker");
    }
    done.store(true, Ordering::Relaxed);
    let floods = flooder.join().expect("flooder");
    let peak = sampler.join().expect("sampler");

    let cycles: Vec<u64> = tally.cycles.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let quick: u64 = cycles[..4].iter().sum();
    let connections = tally.connections.load(Ordering::Relaxed);
    let c = wait_idle(&broker);
    println!(
        "cycles by kind {cycles:?}, connections {connections}, sampled peak memory used per \
         core {peak:?}"
    );
    assert!(quick >= 1000, "only {quick} quick cycles ran: {cycles:?}");
    assert!(cycles[..4].iter().all(|&n| n > 0), "every kind ran: {cycles:?}");
    assert_eq!(cycles[4], floods);

    assert_eq!(c.slots_in_use, 0);
    assert_eq!(c.buffers_out, 0);
    assert_eq!(c.tasks_alive, 0);
    assert_eq!(c.subscriptions, 0);
    assert_eq!(c.connections_open, 0);
    assert_eq!(c.task_panics, 0);
    assert_eq!(c.connections_refused, 0);
    assert_eq!(c.connections_accepted, connections, "every connection was accepted once");
    assert_eq!(c.slow_consumer_closes, floods, "exactly the flooded subscribers were cut off");
    assert_eq!((c.pending_bytes, c.memory_used), (0, 0), "every chunk went back: {c:#?}");
    let sampled: u64 = peak.iter().sum();
    assert!(sampled > 0, "the sampler saw memory in use");
    let broker = Arc::into_inner(broker).expect("no other broker handles");
    finish(broker);
}
