//! A blocking client that speaks protocol 1.1, for the tests of 1.1
//! features: wildcards, queue groups, headers, no echo, requests.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use corecast_proto::{
    ClientFrame11, HPub, HeaderBlock, Headers, Hello, Pub, ServerFrame11, Sub, VERSION,
};

/// An owned copy of a 1.1 server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got11 {
    Welcome { v1_1: bool, core_id: u16 },
    Pong(u64),
    Msg { sid: u32, topic: String, reply_to: String, payload: Vec<u8> },
    HMsg { sid: u32, topic: String, reply_to: String, headers: Vec<u8>, payload: Vec<u8> },
    NoResponders { topic: String, reply_to: String },
    Err { code: u16, fatal: bool },
    Other(String),
}

impl Got11 {
    pub fn from_frame(f: ServerFrame11<'_>) -> Self {
        match f {
            ServerFrame11::Welcome { welcome, v1_1 } => {
                Got11::Welcome { v1_1, core_id: welcome.core_id }
            }
            ServerFrame11::Pong { nonce } => Got11::Pong(nonce),
            ServerFrame11::Msg(m) => Got11::Msg {
                sid: m.sid,
                topic: m.topic.into(),
                reply_to: m.reply_to.into(),
                payload: m.payload.to_vec(),
            },
            ServerFrame11::HMsg(m) => Got11::HMsg {
                sid: m.sid,
                topic: m.topic.into(),
                reply_to: m.reply_to.into(),
                headers: m.headers.as_bytes().to_vec(),
                payload: m.payload.to_vec(),
            },
            ServerFrame11::NoResponders { topic, reply_to } => {
                Got11::NoResponders { topic: topic.into(), reply_to: reply_to.into() }
            }
            ServerFrame11::Err(e) => Got11::Err { code: e.code, fatal: e.fatal },
            other => Got11::Other(format!("{other:?}")),
        }
    }
}

/// A blocking client that asks for 1.1 in its `HELLO` and decodes with the
/// 1.1 decoder.
pub struct Client11 {
    pub stream: TcpStream,
    buf: Vec<u8>,
    nonce: u64,
    pub core_id: u16,
}

impl Client11 {
    pub fn connect(addr: SocketAddr, no_echo: bool) -> Self {
        Self::handshake(TcpStream::connect(addr).unwrap(), no_echo)
    }

    /// Connects made to hold as little as possible of what the broker
    /// sends while it does not read (see `Client::connect_raw_tight`).
    pub fn connect_tight(addr: SocketAddr) -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.set_mss(536).unwrap();
        s.connect(&addr.into()).expect("connect");
        Self::handshake(s.into(), false)
    }

    /// Says `HELLO` asking for 1.1 and expects it granted.
    fn handshake(stream: TcpStream, no_echo: bool) -> Self {
        stream.set_nodelay(true).unwrap();
        let mut c = Client11 { stream, buf: Vec::new(), nonce: 1, core_id: 0 };
        let hello = Hello { version: VERSION, name: "v11", token: b"" };
        c.send(&ClientFrame11::Hello { hello, v1_1: true, no_echo, credential: false });
        match c.recv() {
            Got11::Welcome { v1_1: true, core_id } => c.core_id = core_id,
            other => panic!("expected WELCOME granting 1.1, got {other:?}"),
        }
        c
    }

    /// Aborts the connection with a RST (SO_LINGER 0, then close).
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO)).unwrap();
        drop(self);
    }

    pub fn send(&mut self, frame: &ClientFrame11<'_>) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        self.stream.write_all(&out).unwrap();
    }

    pub fn sub(&mut self, sid: u32, topic: &str) {
        self.send(&ClientFrame11::Sub(Sub { sid, topic, queue_group: "", lossy: false }));
    }

    /// `SUB` as a member of `queue_group`.
    pub fn sub_group(&mut self, sid: u32, topic: &str, queue_group: &str) {
        self.send(&ClientFrame11::Sub(Sub { sid, topic, queue_group, lossy: false }));
    }

    pub fn unsub(&mut self, sid: u32) {
        self.send(&ClientFrame11::Unsub { sid });
    }

    /// `PING`, then `PONG` with nothing before it.
    pub fn flush_empty(&mut self) {
        let got = self.flush();
        assert!(got.is_empty(), "expected nothing before PONG, got {got:?}");
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8]) {
        let publish = Pub { topic, reply_to: "", payload };
        self.send(&ClientFrame11::Pub { publish, request: false });
    }

    pub fn request(&mut self, topic: &str, reply_to: &str, payload: &[u8]) {
        let publish = Pub { topic, reply_to, payload };
        self.send(&ClientFrame11::Pub { publish, request: true });
    }

    pub fn hpub(&mut self, topic: &str, headers: Headers<'_>, payload: &[u8], request: bool) {
        let reply_to = if request { "_INBOX.h" } else { "" };
        self.send(&ClientFrame11::HPub(HPub { topic, reply_to, headers, payload, request }));
    }

    pub fn next(&mut self, timeout: Duration) -> Option<Got11> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut src = &self.buf[..];
            if let Some(f) = ServerFrame11::decode(&mut src, u32::MAX).expect("decodable") {
                let got = Got11::from_frame(f);
                let used = self.buf.len() - src.len();
                self.buf.drain(..used);
                return Some(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    pub fn recv(&mut self) -> Got11 {
        self.next(Duration::from_secs(5)).expect("a frame within 5 s")
    }

    /// PING, then every frame before its PONG.
    pub fn flush(&mut self) -> Vec<Got11> {
        let nonce = self.nonce;
        self.nonce += 1;
        self.send(&ClientFrame11::Ping { nonce });
        let mut before = Vec::new();
        loop {
            match self.recv() {
                Got11::Pong(n) if n == nonce => return before,
                other => before.push(other),
            }
        }
    }

    /// The next frame is this fatal `ERR`, then the close.
    pub fn expect_fatal(&mut self, code: u16) {
        assert_eq!(self.recv(), Got11::Err { code, fatal: true });
        assert_eq!(self.next(Duration::from_secs(5)), None, "close after the fatal ERR");
    }
}

/// A header block with a trace id, as a client would build it.
pub fn trace_block() -> HeaderBlock {
    let mut block = HeaderBlock::new();
    block.push("trace-id", "7f3a").unwrap();
    block.push("content-type", "text/plain; charset=utf-8").unwrap();
    block
}

pub fn hmsg(sid: u32, topic: &str, headers: &[u8], payload: &[u8]) -> Got11 {
    Got11::HMsg {
        sid,
        topic: topic.into(),
        reply_to: String::new(),
        headers: headers.to_vec(),
        payload: payload.to_vec(),
    }
}

pub fn msg11(sid: u32, topic: &str, payload: &[u8]) -> Got11 {
    Got11::Msg { sid, topic: topic.into(), reply_to: String::new(), payload: payload.to_vec() }
}

pub fn no_responders(topic: &str, reply_to: &str) -> Got11 {
    Got11::NoResponders { topic: topic.into(), reply_to: reply_to.into() }
}

/// A 1.1 client on core `core`.
pub fn connect11_on(addr: SocketAddr, core: u16) -> Client11 {
    for _ in 0..64 {
        let c = Client11::connect(addr, false);
        if c.core_id == core {
            return c;
        }
    }
    panic!("64 connections all missed core {core}");
}

/// A 1.1 client on a core other than `core`.
pub fn connect11_not_on(addr: SocketAddr, core: u16, no_echo: bool) -> Client11 {
    for _ in 0..64 {
        let c = Client11::connect(addr, no_echo);
        if c.core_id != core {
            return c;
        }
    }
    panic!("64 connections all landed on core {core}");
}
