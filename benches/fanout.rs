//! In-process fan-out benchmark on one core.
//!
//! Starts an embedded broker with one executor on 127.0.0.1 (ephemeral
//! port, small buffers), connects S subscribers (S = 1, 10, 100) to one topic
//! and one publisher, all over loopback TCP with raw `corecast-proto` frames.
//! Each iteration publishes a batch of 1000 messages of 64 B in one write and
//! waits until every subscriber has decoded all of them, so the figure
//! reported (`Throughput::Elements`) is delivered messages per second: broker
//! fan-out plus the kernel's loopback path plus one decoder thread per
//! subscriber, on whatever CPUs the machine has.
//!
//! Run: `cargo bench --bench fanout`. CI only compiles it
//! (`cargo bench --no-run`).

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicU64, Ordering::SeqCst},
        Arc, Condvar, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corecast::{Broker, Config};
use corecast_proto::{ClientFrame, Hello, Pub, ServerFrame, Sub, VERSION};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Messages per published batch (one write).
const BATCH: usize = 1000;
/// Payload bytes per message.
const PAYLOAD: usize = 64;
const TOPIC: &str = "bench.fanout";
/// Every wait in the benchmark gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest server frame the subscribers accept.
const MAX_FRAME: u32 = 64 << 10;

/// One core, ephemeral port, small buffers (as the integration tests'
/// `test_config`). A batch of MSGs to one subscriber is about 88 KB, well
/// inside its 256 KiB write buffer. Heartbeats are pushed out of the way:
/// the benchmark's sockets never answer `PING`.
fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        cores: 1,
        max_frame: MAX_FRAME,
        max_pending: 256 << 10,
        max_connections: 256,
        ping_interval_ms: 600_000,
        shutdown_grace_ms: 1_000,
        ..Config::default()
    }
}

/// Messages received by all subscribers, and the count the benchmark waits
/// for. The reader that crosses the target wakes the waiter.
#[derive(Debug, Default)]
struct Tally {
    received: AtomicU64,
    target: AtomicU64,
    lock: Mutex<()>,
    reached: Condvar,
}

impl Tally {
    fn add(&self, n: u64) {
        let before = self.received.fetch_add(n, SeqCst);
        let target = self.target.load(SeqCst);
        if before < target && before + n >= target {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.reached.notify_all();
        }
    }

    /// Waits until `received` reaches `target`; panics after [`TIMEOUT`].
    fn wait_for(&self, target: u64, broker: &Broker) {
        let deadline = Instant::now() + TIMEOUT;
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let received = self.received.load(SeqCst);
            if received >= target {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "subscribers received {received} of {target} messages within {TIMEOUT:?}; \
                     broker counters: {:#?}",
                    broker.counters().total
                );
            }
            guard =
                self.reached.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

fn encode(frames: &[ClientFrame<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Reads from `stream` into `buf` until `done` finds what it wants in the
/// decoded frames; panics after [`TIMEOUT`], on EOF or on a fatal frame.
fn read_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    what: &str,
    mut done: impl FnMut(&ServerFrame<'_>) -> bool,
) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut src = &buf[..];
        let mut found = false;
        while let Some(frame) = ServerFrame::decode(&mut src, MAX_FRAME).expect("server frame") {
            if let ServerFrame::Err(e) = frame {
                panic!("waiting for {what}: broker sent ERR {} {}", e.code, e.text);
            }
            if done(&frame) {
                found = true;
                break;
            }
        }
        let used = buf.len() - src.len();
        buf.drain(..used);
        if found {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("no {what} within {TIMEOUT:?}");
        }
        stream.set_read_timeout(Some(left)).expect("set read timeout");
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("broker closed the connection while waiting for {what}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read while waiting for {what}: {e}"),
        }
    }
}

/// Connects, says HELLO, sends `then`, and a PING whose PONG proves the
/// broker applied everything before it. Returns the stream and what was read
/// after the PONG.
fn connect(addr: SocketAddr, name: &str, then: &[ClientFrame<'_>]) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the broker");
    stream.set_nodelay(true).expect("nodelay");
    let mut frames = vec![ClientFrame::Hello(Hello { version: VERSION, name, token: b"" })];
    frames.extend_from_slice(then);
    frames.push(ClientFrame::Ping { nonce: 1 });
    stream.write_all(&encode(&frames)).expect("write handshake");
    let mut buf = Vec::new();
    let mut welcomed = false;
    read_until(&mut stream, &mut buf, "WELCOME then PONG", |f| match f {
        ServerFrame::Welcome(_) => {
            welcomed = true;
            false
        }
        ServerFrame::Pong { nonce: 1 } => {
            assert!(welcomed, "PONG before WELCOME");
            true
        }
        _ => false,
    });
    (stream, buf)
}

/// A subscriber's decoder thread: counts MSG frames into `tally` until the
/// connection ends.
fn spawn_reader(mut stream: TcpStream, mut buf: Vec<u8>, tally: Arc<Tally>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        stream.set_read_timeout(None).expect("clear read timeout");
        let mut start = 0;
        buf.reserve(128 << 10);
        loop {
            let mut src = &buf[start..];
            let before = src.len();
            let mut msgs = 0;
            loop {
                match ServerFrame::decode(&mut src, MAX_FRAME) {
                    Ok(Some(ServerFrame::Msg(m))) => {
                        std::hint::black_box(m);
                        msgs += 1;
                    }
                    Ok(Some(ServerFrame::Err(e))) => {
                        eprintln!("fanout bench: subscriber got ERR {} {}", e.code, e.text);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => panic!("undecodable server frame: {e}"),
                }
            }
            start += before - src.len();
            if msgs > 0 {
                tally.add(msgs);
            }
            if start == buf.len() {
                buf.clear();
                start = 0;
            } else if start > buf.capacity() / 2 {
                buf.drain(..start);
                start = 0;
            }
            let len = buf.len();
            buf.resize(len + (64 << 10), 0);
            match stream.read(&mut buf[len..]) {
                Ok(0) => return,
                Ok(n) => buf.truncate(len + n),
                Err(e) if e.kind() == ErrorKind::Interrupted => buf.truncate(len),
                Err(_) => return,
            }
        }
    })
}

fn fanout(c: &mut Criterion) {
    let payload = [7u8; PAYLOAD];
    let batch =
        encode(&vec![
            ClientFrame::Pub(Pub { topic: TOPIC, reply_to: "", payload: &payload });
            BATCH
        ]);

    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for subscribers in [1usize, 10, 100] {
        let broker = Broker::start(config()).expect("broker starts");
        let addr = broker.local_addr();
        let tally = Arc::new(Tally::default());
        let mut closers = Vec::with_capacity(subscribers);
        let mut readers = Vec::with_capacity(subscribers);
        for i in 0..subscribers {
            let sub = ClientFrame::Sub(Sub { sid: 1, topic: TOPIC, queue_group: "", lossy: false });
            let (stream, rest) = connect(addr, &format!("sub-{i}"), &[sub]);
            closers.push(stream.try_clone().expect("clone subscriber socket"));
            readers.push(spawn_reader(stream, rest, Arc::clone(&tally)));
        }
        let (mut publisher, _) = connect(addr, "publisher", &[]);
        let subscriptions = broker.counters().total.subscriptions;
        assert_eq!(subscriptions, subscribers as u64, "subscriptions in the broker");

        let per_batch = (BATCH * subscribers) as u64;
        let mut expected = 0u64;
        group.throughput(Throughput::Elements(per_batch));
        group.bench_function(BenchmarkId::new("pub_64B_x1000_to_subscribers", subscribers), |b| {
            b.iter(|| {
                expected += per_batch;
                tally.target.store(expected, SeqCst);
                publisher.write_all(&batch).expect("publish the batch");
                tally.wait_for(expected, &broker);
            })
        });

        let counters = broker.counters().total;
        assert_eq!(counters.slow_consumer_closes, 0, "slow consumers: {counters:#?}");
        assert_eq!(counters.msgs_dropped, 0, "dropped messages: {counters:#?}");
        drop(publisher);
        for s in &closers {
            let _ = s.shutdown(Shutdown::Both);
        }
        for r in readers {
            r.join().expect("subscriber thread ends");
        }
        broker.shutdown();
        broker.wait().expect("broker stops cleanly");
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
