//! Helpers for the client tests: an embedded broker on 127.0.0.1, counters
//! to poll, client options with short timeouts, and a fake broker that
//! completes the handshake and then reads and writes only when the test says.
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub mod tls;

use corecast::{Broker, Config, Snapshot};
use corecast_client::{Backoff, Options};
use corecast_proto::{frame::Welcome, ClientFrame, ServerFrame};

/// A broker config for tests: 2 cores, little locked memory, quick shutdown.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: 2,
        max_connections: 64,
        max_frame: 64 << 10,
        shutdown_grace_ms: 500,
        ..Config::default()
    }
}

/// Starts a broker with `config`.
pub fn start(config: Config) -> Broker {
    Broker::start(config).expect("broker starts")
}

/// Starts a broker on a given address (to restart one on the same port).
pub fn start_on(addr: SocketAddr) -> Broker {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Broker::start(Config { listen: addr.into(), ..config() }) {
            Ok(broker) => return broker,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart on {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot restart the broker on {addr}: {e}"),
        }
    }
}

/// Stops a broker and waits for it.
pub fn stop(broker: Broker) {
    broker.shutdown();
    broker.wait().expect("broker stops cleanly");
}

/// Client options for tests: short timeouts and quick reconnection.
pub fn options(name: &str) -> Options {
    Options::new()
        .name(name)
        .connect_timeout(Duration::from_secs(2))
        .flush_timeout(Duration::from_secs(5))
        .send_timeout(Duration::from_secs(5))
        .reconnect(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: None,
        })
}

/// Polls the broker's summed counters until `cond` holds (5 s at most).
pub fn wait_counters(broker: &Broker, what: &str, cond: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = broker.counters().total;
        if cond(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "counters never reached {what}: {c:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` until it holds (5 s at most).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fake broker that accepts one connection, answers `HELLO` with
/// `WELCOME` (max_frame 32 MiB), and then reads only when the test does (a
/// socket that does not drain by itself).
pub struct StuckBroker {
    pub addr: SocketAddr,
    thread: Option<JoinHandle<TcpStream>>,
}

impl StuckBroker {
    pub const MAX_FRAME: u32 = 32 << 20;

    pub fn start() -> Self {
        Self::start_with(30_000)
    }

    /// A fake broker whose `WELCOME` announces `ping_interval_ms`.
    pub fn start_with(ping_interval_ms: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut hello = [0u8; 4];
            stream.read_exact(&mut hello).unwrap();
            let mut rest = vec![0u8; u32::from_le_bytes(hello) as usize];
            stream.read_exact(&mut rest).unwrap();
            let welcome = ServerFrame::Welcome(Welcome {
                version: 1,
                max_frame: Self::MAX_FRAME,
                ping_interval_ms,
                core_id: 0,
                connection_id: 1,
                server_name: "stuck",
            });
            let mut out = Vec::new();
            welcome.encode(&mut out);
            stream.write_all(&out).unwrap();
            stream
        });
        Self { addr, thread: Some(thread) }
    }

    /// The accepted connection, to keep it open (and unread) for a while.
    pub fn connection(&mut self) -> TcpStream {
        self.thread.take().expect("taken once").join().unwrap()
    }
}

/// Reads client frames from `stream` until `count` `PUB`s arrived (10 s at
/// most); returns their topics and payloads.
pub fn read_publications(stream: &mut TcpStream, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut reader = FrameReader::new(stream.try_clone().unwrap());
    let mut got = Vec::new();
    while got.len() < count {
        reader.next_frame(|frame| {
            if let ClientFrame::Pub(p) = frame {
                got.push((p.topic.to_owned(), p.payload.to_vec()));
            }
        });
    }
    got
}

/// The client frames of one connection, read as a fake broker reads them.
pub struct FrameReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Self { stream, buf: Vec::new() }
    }

    /// Hands the next client frame to `f` (10 s at most).
    pub fn next_frame<T>(&mut self, f: impl FnOnce(ClientFrame<'_>) -> T) -> T {
        loop {
            let mut src = &self.buf[..];
            if let Some(frame) = ClientFrame::decode(&mut src, u32::MAX).unwrap() {
                let used = self.buf.len() - src.len();
                let out = f(frame);
                self.buf.drain(..used);
                return out;
            }
            let mut chunk = vec![0u8; 1 << 20];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame, told as `PUB topic`, `SUB sid topic`, `UNSUB sid`,
    /// `PING nonce`, `PONG nonce`.
    pub fn next(&mut self) -> String {
        self.next_frame(|frame| describe(&frame))
    }

    /// Frames until one told as `what` (10 s at most); returns all of them.
    pub fn until(&mut self, what: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let frame = self.next();
            let done = what(&frame);
            seen.push(frame);
            if done {
                return seen;
            }
        }
    }

    /// Whether the client closed the connection (waits up to 10 s).
    pub fn closed_by_client(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// A client frame in a word or three, as [`FrameReader::next`] tells it.
pub fn describe(frame: &ClientFrame<'_>) -> String {
    match frame {
        ClientFrame::Pub(p) => format!("PUB {}", p.topic),
        ClientFrame::Sub(s) => format!("SUB {} {}", s.sid, s.topic),
        ClientFrame::Unsub { sid } => format!("UNSUB {sid}"),
        ClientFrame::Ping { nonce } => format!("PING {nonce}"),
        ClientFrame::Pong { nonce } => format!("PONG {nonce}"),
        ClientFrame::Hello(_) => "HELLO".into(),
        ClientFrame::Stats { nonce } => format!("STATS {nonce}"),
    }
}

/// Sends a server frame, as a fake broker.
pub fn send(stream: &mut TcpStream, frame: ServerFrame<'_>) {
    let mut out = Vec::new();
    frame.encode(&mut out);
    stream.write_all(&out).unwrap();
}

/// An address nothing listens on: bind a port, then let it go.
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
