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
//!
//! The same holds for a topic that wildcard patterns and a queue group
//! reach: the merged lookup comes from the cache, and the draw reuses its
//! scratch.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use common::{v11::connect11_on, *};

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

/// Two cores at the shipped max_pending: these tests count allocations,
/// and with the tests' small one a reader thread the machine leaves waiting
/// could be cut as a slow consumer by a publisher that runs ahead of it.
fn roomy_config() -> corecast::Config {
    let max_pending = corecast::Config::default().max_pending;
    corecast::Config { max_pending, ..test_config(2) }
}

/// The tests share the counting allocator, so they take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Reads and discards until `bytes` bytes arrived on this stream and the
/// streams that share `got` together (bounded in time).
fn spawn_drain(
    mut stream: TcpStream,
    got: Arc<AtomicUsize>,
    bytes: usize,
) -> thread::JoinHandle<TcpStream> {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 64 << 10];
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while got.load(Ordering::Relaxed) < bytes {
            let now = got.load(Ordering::Relaxed);
            assert!(Instant::now() < deadline, "subscribers got {now} of {bytes} bytes");
            match stream.read(&mut buf) {
                Ok(0) => panic!("broker closed a subscriber"),
                Ok(n) => _ = got.fetch_add(n, Ordering::Relaxed),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("subscriber read: {e}"),
            }
        }
        assert_eq!(got.load(Ordering::Relaxed), bytes, "more than the expected messages arrived");
        stream
    })
}

/// Publishes `count` messages to `topic` in writes of `BATCH` and waits
/// until every subscriber in `each` has all of them, and the subscribers in
/// `shared` all of them together.
fn fan_out(
    publ: &mut Client,
    topic: &str,
    (each, shared): (Vec<TcpStream>, Vec<TcpStream>),
    count: usize,
) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let bytes = Got::msg(1, topic, &payload()).wire_len() * count;
    let drains: Vec<_> = each.into_iter().map(|s| spawn_drain(s, Arc::default(), bytes)).collect();
    let together = Arc::new(AtomicUsize::new(0));
    let shared_drains: Vec<_> =
        shared.into_iter().map(|s| spawn_drain(s, Arc::clone(&together), bytes)).collect();
    let frame = raw_pub(topic.as_bytes(), b"", &payload());
    let batch: Vec<u8> = frame.repeat(BATCH);
    for _ in 0..count / BATCH {
        publ.stream.write_all(&batch).unwrap();
    }
    let join = |d: thread::JoinHandle<TcpStream>| d.join().expect("subscriber drained");
    (drains.into_iter().map(join).collect(), shared_drains.into_iter().map(join).collect())
}

/// Warms up, then counts the broker's allocations while `MEASURED`
/// messages fan out; returns them and the publish records sent across.
fn measure(
    broker: &corecast::Broker,
    publ: &mut Client,
    topic: &str,
    streams: (Vec<TcpStream>, Vec<TcpStream>),
) -> (u64, u64) {
    let streams = fan_out(publ, topic, streams, WARMUP);
    let before = BROKER_ALLOCS.load(Ordering::Relaxed);
    let crossed_before = broker.counters().total.cross_core_sent;
    fan_out(publ, topic, streams, MEASURED);
    let allocs = BROKER_ALLOCS.load(Ordering::Relaxed) - before;
    assert!(before > 0, "the counting allocator sees broker code");
    (allocs, broker.counters().total.cross_core_sent - crossed_before)
}

#[test]
fn patterns_and_a_queue_group_allocate_nothing_per_message() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    let mut publ = Client::connect(addr);
    let (mut each, mut shared) = (Vec::new(), Vec::new());
    for core in [0, 1] {
        let mut plain = connect11_on(addr, core);
        plain.sub(1, "alloc.*.x");
        plain.flush_empty();
        let mut member = connect11_on(addr, core);
        member.sub_group(1, "alloc.>", "w");
        member.flush_empty();
        each.push(plain);
        shared.push(member);
    }
    publ.flush_empty();
    let clone = |c: &common::v11::Client11| c.stream.try_clone().unwrap();
    let streams = (each.iter().map(clone).collect(), shared.iter().map(clone).collect());
    let (allocs, crossed) = measure(&broker, &mut publ, "alloc.jobs.x", streams);
    assert_eq!(crossed, MEASURED as u64, "one record to the other core per message");
    assert!(
        allocs * 100 <= MEASURED as u64,
        "{allocs} allocations by broker code for {MEASURED} messages through patterns and a group"
    );
    eprintln!("{allocs} allocations for {MEASURED} messages");
    drop((publ, each, shared));
    finish(broker);
}

#[test]
fn publish_and_fanout_allocate_nothing_per_message() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let broker = start(roomy_config());
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

    let (allocs, crossed) = measure(&broker, &mut publ, TOPIC, (streams, Vec::new()));
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
