#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The publish and fan-out path allocates nothing per message: a counting
//! allocator counts the heap allocations the broker's own code makes (the
//! connection polls, cross-core forwarding and delivery, marked by
//! `corecast::probe`) while 60 000 messages fan out to six subscribers, three
//! on the publisher's core and three across cores, after a warm-up that
//! sizes pools and staging.
//!
//! What remains is per wake-up or per 64 KiB, not per message (the
//! runtime's poll registration when a socket runs dry, a new staging chunk),
//! so the bound is one allocation per hundred messages published: any
//! allocation per message, or per delivery, fails it. The runtime's own
//! reactor bookkeeping between polls (timer and preemption sources) is not
//! counted: it happens per wake-up whatever the broker does.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read, Write},
    net::TcpStream,
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use common::*;

/// Counts allocations made while broker code runs.
struct Counting;

static BROKER_ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every operation to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if corecast::probe::in_broker_code() {
            BROKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if corecast::probe::in_broker_code() {
            BROKER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TOPIC: &str = "alloc.fanout";
const SUBSCRIBERS: usize = 6;
const WARMUP: usize = 20_000;
const MEASURED: usize = 60_000;
/// Messages per write from the publisher.
const BATCH: usize = 100;

fn payload() -> Vec<u8> {
    vec![0x42; 48]
}

/// Reads and discards until `bytes` more bytes arrived (bounded in time).
fn spawn_drain(mut stream: TcpStream, bytes: usize) -> thread::JoinHandle<TcpStream> {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        while got < bytes {
            assert!(Instant::now() < deadline, "subscriber got {got} of {bytes} bytes");
            match stream.read(&mut buf) {
                Ok(0) => panic!("broker closed a subscriber"),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("subscriber read: {e}"),
            }
        }
        assert_eq!(got, bytes, "more than the expected messages arrived");
        stream
    })
}

/// Publishes `count` messages in writes of `BATCH` and waits until every
/// subscriber has all of them.
fn fan_out(publ: &mut Client, subs: Vec<TcpStream>, count: usize) -> Vec<TcpStream> {
    let msg_len = Got::msg(1, TOPIC, &payload()).wire_len();
    let drains: Vec<_> = subs.into_iter().map(|s| spawn_drain(s, msg_len * count)).collect();
    let frame = raw_pub(TOPIC.as_bytes(), b"", &payload());
    let batch: Vec<u8> = frame.repeat(BATCH);
    for _ in 0..count / BATCH {
        publ.stream.write_all(&batch).unwrap();
    }
    drains.into_iter().map(|d| d.join().expect("subscriber drained")).collect()
}

#[test]
fn publish_and_fanout_allocate_nothing_per_message() {
    // The shipped max_pending: this test counts allocations, and with the
    // tests' small one a reader thread the machine leaves waiting could be
    // cut as a slow consumer by a publisher that runs ahead of it.
    let max_pending = corecast::Config::default().max_pending;
    let broker = start(corecast::Config { max_pending, ..test_config(2) });
    let addr = broker.local_addr();
    let mut publ = Client::connect(addr);
    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        // Half on the publisher's core, half on the other one.
        let mut c = if i % 2 == 0 {
            connect_on(addr, publ.core_id())
        } else {
            connect_not_on(addr, publ.core_id())
        };
        c.sub(1, TOPIC);
        c.flush_empty();
        subs.push(c);
    }
    publ.flush_empty();
    let streams: Vec<TcpStream> = subs.iter().map(|c| c.stream.try_clone().unwrap()).collect();

    let streams = fan_out(&mut publ, streams, WARMUP);
    let before = BROKER_ALLOCS.load(Ordering::Relaxed);
    let crossed_before = broker.counters().total.cross_core_sent;
    fan_out(&mut publ, streams, MEASURED);
    let allocs = BROKER_ALLOCS.load(Ordering::Relaxed) - before;
    let crossed = broker.counters().total.cross_core_sent - crossed_before;

    assert!(before > 0, "the counting allocator sees broker code");
    assert_eq!(crossed, MEASURED as u64, "every message crossed to the other core once");
    assert!(
        allocs * 100 <= MEASURED as u64,
        "{allocs} allocations by broker code for {MEASURED} messages \
         ({} deliveries)",
        MEASURED * SUBSCRIBERS
    );
    eprintln!("{allocs} allocations for {MEASURED} messages");
    drop(publ);
    drop(subs);
    finish(broker);
}
