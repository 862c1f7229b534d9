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

/// A config for tests: ephemeral port, small buffers, `cores` executors.
pub fn test_config(cores: usize) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores,
        max_frame: 64 << 10,
        write_buffer: 256 << 10,
        max_connections: 1024,
        io_memory: 256 << 10,
        ..Config::default()
    }
}

pub fn start(config: Config) -> Broker {
    Broker::start(config).expect("broker starts")
}

/// An owned copy of a server frame, easy to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Welcome { core_id: u16, connection_id: u64, max_frame: u32, ping_interval_ms: u32 },
    Ping(u64),
    Pong(u64),
    Msg { sid: u32, topic: String, reply_to: String, payload: Vec<u8> },
    Dropped { sid: u32, count: u64 },
    Err { code: u16, fatal: bool, text: String },
    GoAway { reason: u16, grace_ms: u32 },
}

impl Got {
    fn from_frame(f: ServerFrame<'_>) -> Self {
        match f {
            ServerFrame::Welcome(w) => Got::Welcome {
                core_id: w.core_id,
                connection_id: w.connection_id,
                max_frame: w.max_frame,
                ping_interval_ms: w.ping_interval_ms,
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
        }
    }
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
    buf: Vec<u8>,
    pub next_nonce: u64,
}

impl Client {
    /// Connects without saying HELLO.
    pub fn connect_raw(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new(), next_nonce: 1 }
    }

    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr) -> Self {
        let mut c = Self::connect_raw(addr);
        c.hello("test", b"");
        match c.recv() {
            Got::Welcome { .. } => {}
            other => panic!("expected WELCOME, got {other:?}"),
        }
        c
    }

    pub fn hello(&mut self, name: &str, token: &[u8]) {
        self.send(&ClientFrame::Hello(Hello { version: VERSION, name, token }));
    }

    pub fn send(&mut self, frame: &ClientFrame<'_>) {
        let mut out = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut out);
        self.stream.write_all(&out).expect("write");
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

    pub fn unsub(&mut self, sid: u32) {
        self.send(&ClientFrame::Unsub { sid });
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.send(&ClientFrame::Pub(Pub { topic, reply_to: "", payload }));
    }

    /// PING and wait for its PONG, answering server PINGs on the way.
    /// Returns the frames (MSG etc.) that arrived before the PONG.
    pub fn flush(&mut self) -> Vec<Got> {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.send(&ClientFrame::Ping { nonce });
        let mut before = Vec::new();
        loop {
            match self.recv() {
                Got::Pong(n) if n == nonce => return before,
                Got::Ping(n) => self.send(&ClientFrame::Pong { nonce: n }),
                other => before.push(other),
            }
        }
    }

    /// Next frame within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> ReadEnd {
        let deadline = Instant::now() + timeout;
        loop {
            let mut src = &self.buf[..];
            let before = src.len();
            match ServerFrame::decode(&mut src, u32::MAX) {
                Ok(Some(f)) => {
                    let got = Got::from_frame(f);
                    let used = before - src.len();
                    self.buf.drain(..used);
                    return ReadEnd::Frame(got);
                }
                Ok(None) => {}
                Err(e) => panic!("server sent an undecodable frame: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return ReadEnd::Timeout;
            }
            self.stream.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return ReadEnd::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return ReadEnd::Timeout
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return ReadEnd::Closed,
            }
        }
    }

    /// Next frame, failing the test after 5 s.
    pub fn recv(&mut self) -> Got {
        match self.read_frame(Duration::from_secs(5)) {
            ReadEnd::Frame(g) => g,
            other => panic!("expected a frame, got {other:?}"),
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

/// Waits until slots, buffers, tasks, subscriptions and open connections
/// are all back to zero.
pub fn wait_idle(broker: &Broker) -> Snapshot {
    wait_counters(broker, "idle", |c| {
        c.slots_in_use == 0
            && c.buffers_out == 0
            && c.tasks_alive == 0
            && c.subscriptions == 0
            && c.connections_open == 0
    })
}
