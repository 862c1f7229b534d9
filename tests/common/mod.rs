//! A small blocking client over the proto codec, and helpers to start an
//! embedded broker on 127.0.0.1:0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use corecast::{Broker, Config, Snapshot};
use corecast_proto::{ClientFrame, Hello, Pub, ServerFrame, Sub, VERSION};

pub mod process;
pub mod redis;
pub mod v11;

/// A config for tests: ephemeral port, small buffers, `cores` executors.
pub fn test_config(cores: usize) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores,
        max_frame: 64 << 10,
        max_pending: 256 << 10,
        max_connections: 1024,
        http: corecast::address::HttpAddr::Off,
        ..Config::default()
    }
}

/// A config with small frames and write buffers, so that slow consumers are
/// found after little traffic: max_frame 4096, write_buffer 32 KiB.
pub fn small_config(cores: usize) -> Config {
    Config { max_frame: 4096, max_pending: 32 << 10, close_linger_ms: 100, ..test_config(cores) }
}

pub fn start(config: Config) -> Broker {
    Broker::start(config).expect("broker starts")
}

/// An owned copy of a server frame, easy to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Welcome {
        core_id: u16,
        connection_id: u64,
        max_frame: u32,
        ping_interval_ms: u32,
        server_name: String,
    },
    Ping(u64),
    Pong(u64),
    Msg {
        sid: u32,
        topic: String,
        reply_to: String,
        payload: Vec<u8>,
    },
    Dropped {
        sid: u32,
        count: u64,
    },
    Err {
        code: u16,
        fatal: bool,
        text: String,
    },
    GoAway {
        reason: u16,
        grace_ms: u32,
    },
    Stats {
        nonce: u64,
        json: String,
    },
}

impl Got {
    pub fn from_frame(f: ServerFrame<'_>) -> Self {
        match f {
            ServerFrame::Welcome(w) => Got::Welcome {
                core_id: w.core_id,
                connection_id: w.connection_id,
                max_frame: w.max_frame,
                ping_interval_ms: w.ping_interval_ms,
                server_name: w.server_name.into(),
            },
            ServerFrame::Ping { nonce } => Got::Ping(nonce),
            ServerFrame::Pong { nonce } => Got::Pong(nonce),
            ServerFrame::Msg(m) => Got::Msg {
                sid: m.sid,
                topic: m.topic.into(),
                reply_to: m.reply_to.into(),
                payload: m.payload.to_vec(),
            },
            ServerFrame::Dropped { sid, count } => Got::Dropped { sid, count },
            ServerFrame::Err(e) => Got::Err { code: e.code, fatal: e.fatal, text: e.text.into() },
            ServerFrame::GoAway { reason, grace_ms } => Got::GoAway { reason, grace_ms },
            ServerFrame::StatsReply { nonce, json } => Got::Stats { nonce, json: json.into() },
        }
    }

    /// A MSG without reply-to, for comparisons.
    pub fn msg(sid: u32, topic: &str, payload: &[u8]) -> Got {
        Got::Msg { sid, topic: topic.into(), reply_to: String::new(), payload: payload.to_vec() }
    }

    /// Bytes this frame takes on the wire (MSG only).
    pub fn wire_len(&self) -> usize {
        match self {
            Got::Msg { topic, reply_to, payload, .. } => {
                4 + 2 + 4 + 1 + topic.len() + 1 + reply_to.len() + payload.len()
            }
            other => panic!("wire_len of {other:?}"),
        }
    }

    /// The code of an ERR frame, if this is one.
    pub fn err_code(&self) -> Option<(u16, bool)> {
        match self {
            Got::Err { code, fatal, .. } => Some((*code, *fatal)),
            _ => None,
        }
    }
}

/// How a stream ended, for [`Client::next_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The server closed cleanly (FIN) after whole frames.
    Eof,
    /// The read failed: a reset, typically (`ConnectionReset`).
    Failed(ErrorKind),
    /// The server closed cleanly, but inside a frame: this many bytes of
    /// it had arrived.
    Truncated(usize),
    /// Nothing within the time allowed.
    Timeout,
}

/// What reading from the broker ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    Frame(Got),
    Closed,
    Timeout,
}

pub struct Client {
    pub stream: TcpStream,
    /// Received bytes; `buf[start..]` is not decoded yet.
    buf: Vec<u8>,
    start: usize,
    pub next_nonce: u64,
    /// The WELCOME this connection got, once it has.
    pub welcome: Option<Got>,
}

impl Client {
    fn from_stream(stream: TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new(), start: 0, next_nonce: 1, welcome: None }
    }

    /// Connects without saying HELLO.
    pub fn connect_raw(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Connects without saying HELLO, with a small kernel receive buffer
    /// (set before connecting, so the advertised window stays small too).
    /// Connects without saying HELLO, with a receive buffer of `rcvbuf`
    /// bytes. Below 64 KiB the MSS is made small too: the kernel sizes the
    /// broker's MSS for this connection to half the largest window it saw,
    /// and a window that stays just under that MSS (a 4 KiB buffer
    /// announces about 1.9 KiB against an MSS of 2 KiB) leaves the broker's
    /// kernel sending only zero-window probes on a backing-off timer, so a
    /// client that reads a backlog late would wait minutes for it.
    pub fn connect_raw_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_recv_buffer_size(rcvbuf).unwrap();
        if rcvbuf < 64 << 10 {
            s.set_mss(536).unwrap();
        }
        s.connect(&addr.into()).expect("connect");
        Self::from_stream(s.into())
    }

    /// Connects without saying HELLO, made to hold as little as possible
    /// of what the broker sends while it does not read: a 4 KiB receive
    /// buffer, and a small MSS, which keeps the broker's kernel send buffer
    /// for this connection small too (on loopback it is sized from the MSS
    /// and would otherwise take megabytes before the broker queues a byte).
    pub fn connect_raw_tight(addr: SocketAddr) -> Self {
        Self::connect_raw_small_rcvbuf(addr, 4096)
    }

    /// [`Self::connect_raw_tight`], then the handshake.
    pub fn connect_tight(addr: SocketAddr) -> Self {
        let mut c = Self::connect_raw_tight(addr);
        c.handshake();
        c
    }

    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr) -> Self {
        let mut c = Self::connect_raw(addr);
        c.handshake();
        c
    }

    /// Connects with a small receive buffer and completes the handshake.
    pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> Self {
        let mut c = Self::connect_raw_small_rcvbuf(addr, rcvbuf);
        c.handshake();
        c
    }

    /// Sends HELLO (no token) and expects WELCOME.
    pub fn handshake(&mut self) {
        self.hello("test", b"");
        self.expect_welcome();
    }

    /// Reads the next frame and expects it to be WELCOME.
    pub fn expect_welcome(&mut self) {
        match self.recv() {
            w @ Got::Welcome { .. } => self.welcome = Some(w),
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// The core that owns this connection, from its WELCOME.
    pub fn core_id(&self) -> u16 {
        match &self.welcome {
            Some(Got::Welcome { core_id, .. }) => *core_id,
            _ => panic!("no WELCOME yet"),
        }
    }

    pub fn hello(&mut self, name: &str, token: &[u8]) {
        self.send(&ClientFrame::Hello(Hello { version: VERSION, name, token }));
    }

    pub fn send(&mut self, frame: &ClientFrame<'_>) {
        let mut out = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut out);
        self.stream.write_all(&out).expect("write");
    }

    /// The broker's `STATS` reply to `nonce`, as JSON (answering any
    /// server `PING` on the way).
    pub fn stats(&mut self, nonce: u64) -> serde_json::Value {
        self.send(&ClientFrame::Stats { nonce });
        loop {
            match self.recv() {
                Got::Stats { nonce: n, json } if n == nonce => {
                    return serde_json::from_str(&json).unwrap()
                }
                Got::Ping(n) => self.send(&ClientFrame::Pong { nonce: n }),
                other => panic!("expected STATS_REPLY, got {other:?}"),
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn sub(&mut self, sid: u32, topic: &str) {
        self.send(&ClientFrame::Sub(Sub { sid, topic, queue_group: "", lossy: false }));
    }

    pub fn sub_lossy(&mut self, sid: u32, topic: &str) {
        self.send(&ClientFrame::Sub(Sub { sid, topic, queue_group: "", lossy: true }));
    }

    pub fn sub_group(&mut self, sid: u32, topic: &str, queue_group: &str) {
        self.send(&ClientFrame::Sub(Sub { sid, topic, queue_group, lossy: false }));
    }

    pub fn unsub(&mut self, sid: u32) {
        self.send(&ClientFrame::Unsub { sid });
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.send(&ClientFrame::Pub(Pub { topic, reply_to: "", payload }));
    }

    pub fn publish_reply(&mut self, topic: &str, reply_to: &str, payload: &[u8]) {
        self.send(&ClientFrame::Pub(Pub { topic, reply_to, payload }));
    }

    /// Sends a PING without waiting; returns its nonce.
    pub fn ping(&mut self) -> u64 {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.send(&ClientFrame::Ping { nonce });
        nonce
    }

    /// PING and wait for its PONG, answering server PINGs on the way.
    /// Returns the frames (MSG etc.) that arrived before the PONG.
    pub fn flush(&mut self) -> Vec<Got> {
        let nonce = self.ping();
        self.until_pong(nonce)
    }

    /// Reads until the PONG for `nonce`, answering server PINGs; returns the
    /// frames before it.
    pub fn until_pong(&mut self, nonce: u64) -> Vec<Got> {
        // Server PINGs keep a silent connection busy: without a bound, a
        // PONG that never comes would hang the test instead of failing it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut before = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no PONG {nonce} within 30 s; {} frames before, the last {:?}",
                before.len(),
                before.last()
            );
            match self.recv() {
                Got::Pong(n) if n == nonce => return before,
                Got::Ping(n) => self.send(&ClientFrame::Pong { nonce: n }),
                other => before.push(other),
            }
        }
    }

    /// A flush that must find nothing before its PONG.
    pub fn flush_empty(&mut self) {
        let before = self.flush();
        assert!(before.is_empty(), "expected nothing before PONG, got {before:?}");
    }

    /// A flush whose frames before the PONG are exactly non-fatal ERRs with
    /// these codes, in this order.
    pub fn flush_expect_errs(&mut self, codes: &[u16]) {
        let got = self.flush();
        let want: Vec<_> = codes.iter().map(|&c| Some((c, false))).collect();
        assert_eq!(got.iter().map(Got::err_code).collect::<Vec<_>>(), want, "{got:?}");
    }

    /// Next frame within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> ReadEnd {
        match self.next_frame(timeout) {
            Ok(got) => ReadEnd::Frame(got),
            Err(StreamEnd::Timeout) => ReadEnd::Timeout,
            Err(_) => ReadEnd::Closed,
        }
    }

    /// Next frame within `timeout`, or how the stream ended: unlike
    /// [`Self::read_frame`], tells a clean end of stream from a reset.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Got, StreamEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut src = &self.buf[self.start..];
            let before = src.len();
            match ServerFrame::decode(&mut src, u32::MAX) {
                Ok(Some(f)) => {
                    let got = Got::from_frame(f);
                    self.start += before - src.len();
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(got);
                }
                Ok(None) => {}
                Err(e) => panic!("server sent an undecodable frame: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StreamEnd::Timeout);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) if self.buf.is_empty() => return Err(StreamEnd::Eof),
                Ok(0) => return Err(StreamEnd::Truncated(self.buf.len())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(StreamEnd::Timeout)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamEnd::Failed(e.kind())),
            }
        }
    }

    /// Every frame until the stream ends, and how it ended (a clean end of
    /// stream, a reset, or `timeout` in all).
    pub fn read_to_end(&mut self, timeout: Duration) -> (Vec<Got>, StreamEnd) {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left.max(Duration::from_millis(1))) {
                Ok(g) => all.push(g),
                Err(end) => return (all, end),
            }
        }
    }

    /// Next frame, failing the test after 5 s.
    pub fn recv(&mut self) -> Got {
        match self.next_frame(Duration::from_secs(5)) {
            Ok(g) => g,
            Err(end) => panic!("expected a frame, got {end:?}"),
        }
    }

    /// Next frame, which must be a MSG: (sid, topic, payload).
    pub fn recv_msg(&mut self) -> (u32, String, Vec<u8>) {
        match self.recv() {
            Got::Msg { sid, topic, payload, .. } => (sid, topic, payload),
            other => panic!("expected MSG, got {other:?}"),
        }
    }

    /// Reads until a fatal ERR, returning its code; then expects the close.
    pub fn expect_fatal(&mut self) -> u16 {
        loop {
            match self.read_frame(Duration::from_secs(5)) {
                ReadEnd::Frame(Got::Err { code, fatal: true, .. }) => {
                    assert_eq!(
                        self.read_frame(Duration::from_secs(5)),
                        ReadEnd::Closed,
                        "close after fatal ERR"
                    );
                    return code;
                }
                ReadEnd::Frame(_) => {}
                other => panic!("expected a fatal ERR, got {other:?}"),
            }
        }
    }

    /// The next frame must be exactly this fatal ERR code, then the close.
    pub fn expect_only_fatal(&mut self, code: u16) {
        match self.recv() {
            Got::Err { code: c, fatal: true, .. } if c == code => {}
            other => panic!("expected fatal ERR {code}, got {other:?}"),
        }
        assert_eq!(self.read_frame(Duration::from_secs(5)), ReadEnd::Closed, "close after ERR");
    }

    /// The next frame must be this non-fatal ERR code.
    pub fn expect_err(&mut self, code: u16) {
        match self.recv() {
            Got::Err { code: c, fatal: false, .. } if c == code => {}
            other => panic!("expected non-fatal ERR {code}, got {other:?}"),
        }
    }

    /// Every frame until the server closes, within `timeout` in all.
    pub fn read_to_close(&mut self, timeout: Duration) -> Vec<Got> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left.max(Duration::from_millis(1))) {
                ReadEnd::Frame(g) => all.push(g),
                ReadEnd::Closed => return all,
                ReadEnd::Timeout => {
                    let tail: Vec<_> = all.iter().rev().take(3).collect();
                    panic!("no close within {timeout:?}; {} frames, last {tail:?}", all.len())
                }
            }
        }
    }

    /// Aborts the connection with a RST (SO_LINGER 0, then close).
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO)).unwrap();
        drop(self);
    }
}

/// Connects clients until one lands on a core other than `core` (the
/// listeners share the port with SO_REUSEPORT, so the kernel spreads them).
pub fn connect_not_on(addr: SocketAddr, core: u16) -> Client {
    for _ in 0..64 {
        let c = Client::connect(addr);
        if c.core_id() != core {
            return c;
        }
    }
    panic!("64 connections all landed on core {core}");
}

/// A publisher and a subscriber on another core, the subscriber's `sid`
/// subscribed to `topic` and flushed (so it is live on every core).
pub fn cross_core_pair(addr: SocketAddr, sid: u32, topic: &str) -> (Client, Client) {
    let publ = Client::connect(addr);
    let mut sub = connect_not_on(addr, publ.core_id());
    sub.sub(sid, topic);
    sub.flush_empty();
    (publ, sub)
}

/// Connects clients until one lands on `core`.
pub fn connect_on(addr: SocketAddr, core: u16) -> Client {
    for _ in 0..64 {
        let c = Client::connect(addr);
        if c.core_id() == core {
            return c;
        }
    }
    panic!("64 connections all missed core {core}");
}

/// A whole client frame from its parts: length prefix, opcode, flags, body.
pub fn frame(opcode: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + body.len());
    v.extend_from_slice(&(2 + body.len() as u32).to_le_bytes());
    v.push(opcode);
    v.push(flags);
    v.extend_from_slice(body);
    v
}

/// A PUB frame with raw topic and reply-to bytes (which may be bad UTF-8).
pub fn raw_pub(topic: &[u8], reply_to: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![topic.len() as u8];
    body.extend_from_slice(topic);
    body.push(reply_to.len() as u8);
    body.extend_from_slice(reply_to);
    body.extend_from_slice(payload);
    frame(corecast_proto::opcode::PUB, 0, &body)
}

/// An 8-byte sequence-number payload, with `pad` filler bytes after it.
pub fn seq_payload(seq: u64, pad: usize) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.resize(8 + pad, 0xab);
    v
}

/// The sequence number at the front of a payload made by [`seq_payload`].
pub fn seq_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().expect("payload holds a sequence number"))
}

/// Polls the broker's summed counters until `cond` holds or 10 s pass.
pub fn wait_counters(broker: &Broker, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = broker.counters().total;
        if cond(&c) {
            return c;
        }
        if Instant::now() > deadline {
            panic!("counters never reached {what}: {c:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until slots, memory (held, queued and cached), tasks,
/// subscriptions and open connections are all back to zero.
pub fn wait_idle(broker: &Broker) -> Snapshot {
    wait_counters(broker, "idle", |c| {
        c.slots_in_use == 0
            && c.buffers_out == 0
            && c.pending_bytes == 0
            && c.memory_used == 0
            && c.memory_cached == 0
            && c.tasks_alive == 0
            && c.subscriptions == 0
            && c.connections_open == 0
    })
}

/// Ends a test's broker: no task panicked, everything went back to idle
/// once the clients closed (memory included: every chunk back in the pool
/// and the pool's pages back with the kernel), and the broker stops cleanly.
pub fn finish(broker: Broker) {
    let c = wait_idle(&broker);
    assert_eq!(c.task_panics, 0, "task panics: {c:#?}");
    broker.shutdown();
    broker.wait().expect("broker stops cleanly");
}

/// A subscriber and a publisher that prove a broker still delivers: each
/// [`Witness::check`] publishes one message and expects it at once.
pub struct Witness {
    pub sub: Client,
    pub publ: Client,
    seq: u64,
}

impl Witness {
    pub const TOPIC: &'static str = "witness.topic";
    pub const SID: u32 = 4242;

    pub fn new(addr: SocketAddr) -> Self {
        let mut sub = Client::connect(addr);
        sub.sub(Self::SID, Self::TOPIC);
        sub.flush_empty();
        let publ = Client::connect(addr);
        Witness { sub, publ, seq: 0 }
    }

    /// Publishes one message and asserts that the subscriber gets exactly it.
    pub fn check(&mut self) {
        self.seq += 1;
        let payload = seq_payload(self.seq, 0);
        self.publ.publish(Self::TOPIC, &payload);
        self.publ.flush_empty();
        let got = self.sub.flush();
        assert_eq!(got, vec![Got::msg(Self::SID, Self::TOPIC, &payload)], "witness delivery");
    }
}

/// How late a thread that samples counters every millisecond may see a
/// change, when the machine is busy: the slack on "not before" bounds.
pub const SAMPLING_SLACK: Duration = Duration::from_millis(100);

/// Bytes in one chunk of the broker's per-core pool: what a final `ERR`
/// may take past the pending budget (from the reserve).
pub const CHUNK: u64 = 4096;

/// Sets a flag when dropped: a scoped sampler thread stops even when the
/// code beside it panics (else the scope would wait for it forever).
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Runs `traffic` while a scoped thread samples each core's `memory_used`;
/// returns what `traffic` returned and the per-core peaks.
pub fn with_peak_memory<R>(broker: &Broker, traffic: impl FnOnce() -> R) -> (R, Vec<u64>) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_peak_memory(broker, &done));
        let r = {
            let _stop = SetOnDrop(&done);
            traffic()
        };
        (r, sampler.join().expect("sampler"))
    })
}

/// Samples every core's `memory_used` about every 200 µs until `done` is
/// set, and returns each core's peak. Run it on a scoped thread beside the
/// traffic.
pub fn sample_peak_memory(broker: &Broker, done: &std::sync::atomic::AtomicBool) -> Vec<u64> {
    use std::sync::atomic::Ordering;
    let mut peak = vec![0u64; broker.counters().per_core.len()];
    loop {
        let stop = done.load(Ordering::Acquire);
        for (p, s) in peak.iter_mut().zip(broker.counters().per_core) {
            *p = (*p).max(s.memory_used);
        }
        if stop {
            return peak;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
