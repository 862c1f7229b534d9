//! Broker drivers: one [`Codec`] per broker protocol, all used through the
//! same [`Driver`] trait.
//!
//! A codec only turns requests into bytes and bytes into [`Event`]s; the
//! generic [`Conn`] owns the socket and its read buffer and builds the
//! operations the workloads need on top (subscribe and confirm, batched
//! publish, flush, receive). Adding a broker is one file with a `Codec` and
//! one line in [`Kind`].

mod corecast;
mod nats;
mod redis;
pub mod tls;
mod ws;

use std::{
    fmt,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// The brokers the bench can drive.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Kind {
    /// corecast, over its binary protocol.
    Corecast,
    /// nats-server, over the NATS core text protocol.
    Nats,
    /// redis-server, over RESP pub/sub.
    Redis,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 3] = [Kind::Corecast, Kind::Nats, Kind::Redis];

    /// Opens a connection, performs the handshake, and returns it.
    pub fn connect(
        self,
        addr: SocketAddr,
        name: &str,
        opts: ConnOpts,
    ) -> anyhow::Result<Box<dyn Driver>> {
        let token = opts.access.token.clone();
        let mut wire = Wire::connect(addr, &opts)?;
        if opts.access.websocket {
            if opts.access.tls.is_some() || self == Kind::Redis {
                bail!("the bench speaks WebSocket only in clear, to corecast and nats");
            }
            wire.start_websocket(opts.read_buffer)?;
        }
        Ok(match self {
            Kind::Corecast => {
                // corecast's TLS port: TLS first, then `HELLO`.
                wire.start_tls()?;
                let codec = corecast::Corecast::new(opts.v1_1).with_token(token);
                Box::new(Conn::open(wire, codec, name)?)
            }
            // NATS: `INFO` in clear, then TLS (the codec starts it).
            Kind::Nats => Box::new(Conn::open(wire, nats::Nats::default(), name)?),
            Kind::Redis if opts.access.tls.is_some() => bail!("the bench has no TLS for redis"),
            Kind::Redis => Box::new(Conn::open(wire, redis::Redis, name)?),
        })
    }

    /// Lower-case name, as used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Corecast => "corecast",
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The read buffer never grows past this: a frame that does not fit is a
/// garbage length or a missing newline, not something to wait for.
pub const MAX_READ_BUFFER: usize = 64 << 20;

/// How a connection reaches the broker, proves itself and protects its
/// bytes: TLS (trusting a CA) or WebSocket, and a token for corecast's
/// `HELLO`. The default is none of them.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Speak TLS with this configuration (corecast: from the first byte, on
    /// its TLS port; NATS: after the server's `INFO`, as nats-server
    /// expects by default).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// corecast: the token field of `HELLO` (untyped: the broker matches it
    /// against the users' bearer tokens too).
    pub token: Option<Arc<str>>,
    /// Upgrade with `GET /` and speak the protocol inside WebSocket binary
    /// messages (corecast's web port, nats-server's `websocket` port).
    pub websocket: bool,
}

/// How a connection is set up.
#[derive(Debug, Clone)]
pub struct ConnOpts {
    /// Initial read buffer; it grows if a frame does not fit.
    pub read_buffer: usize,
    /// Bound on every blocking read, write and round trip.
    pub timeout: Duration,
    /// Local address to connect from (the port is still picked at
    /// connect time), e.g. another loopback address: one source address
    /// has too few ephemeral ports for tens of thousands of connections.
    pub source: Option<std::net::Ipv4Addr>,
    /// Ask corecast for a protocol 1.1 session (wildcards, queue groups,
    /// requests); other brokers have one protocol and ignore it. Off for
    /// the workloads that need nothing of 1.1, so their figures stay those
    /// of a version 1 session.
    pub v1_1: bool,
    /// TLS and credentials.
    pub access: Access,
}

/// One subscription a connection asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription<'a> {
    /// A literal topic, or a pattern in the syntax of NATS and corecast 1.1
    /// (`*` one token, `>` every token that follows); the Redis codec turns
    /// a pattern into a glob.
    pub topic: &'a str,
    /// The queue group it joins, if any.
    pub group: Option<&'a str>,
}

impl<'a> Subscription<'a> {
    /// A subscription to `topic` outside any queue group.
    pub fn plain(topic: &'a str) -> Self {
        Self { topic, group: None }
    }

    /// Whether the topic has a wildcard token (`*` or `>`).
    pub fn is_pattern(&self) -> bool {
        self.topic.split('.').any(|t| t == "*" || t == ">")
    }
}

/// A delivered message, as far as the bench cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// Where the publisher wants answers; empty for none.
    pub reply_to: &'a str,
    /// Its payload.
    pub payload: &'a [u8],
}

/// One decoded frame, as far as the bench cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole delivered message.
    Msg(Delivery<'a>),
    /// The answer to our ping: everything sent before has taken effect.
    Pong,
    /// A subscription confirmation (brokers that send one).
    Subscribed,
    /// The broker asks for a pong (carrying this nonce where it has one).
    Ping(u64),
    /// Messages the broker says it dropped for us.
    Dropped(u64),
    /// corecast `STATS_REPLY` JSON.
    Stats(&'a str),
    /// corecast 1.1 `NO_RESPONDERS`: nobody would have received a request.
    NoResponders,
    /// Anything else (greetings, publish acknowledgements, `+OK`).
    Other,
}

/// A broker protocol: requests to bytes, bytes to events. No I/O except
/// the handshake, which goes through the [`Wire`] it is given.
pub trait Codec: Send + 'static {
    /// Runs the protocol's greeting on a fresh connection.
    fn handshake(&mut self, wire: &mut Wire, name: &str) -> anyhow::Result<()>;
    /// Appends a subscription request; an error if the broker has no such
    /// subscription (a queue group in Redis).
    fn encode_sub(&mut self, sub: Subscription<'_>, out: &mut Vec<u8>) -> anyhow::Result<()>;
    /// Appends one publication.
    fn encode_pub(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>);
    /// Appends one request: a publication with a reply-to. Brokers
    /// without reply-tos refuse.
    fn encode_request(
        &self,
        _topic: &str,
        _reply_to: &str,
        _payload: &[u8],
        _out: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        bail!("this broker has no reply-to")
    }
    /// Appends a ping whose [`Event::Pong`] answer proves earlier requests
    /// took effect.
    fn encode_ping(&self, out: &mut Vec<u8>);
    /// Appends the answer to a broker ping.
    fn encode_pong(&self, nonce: u64, out: &mut Vec<u8>);
    /// Whether every subscription is confirmed by an [`Event::Subscribed`]
    /// (otherwise a ping round trip confirms them).
    fn acks_subscriptions(&self) -> bool {
        false
    }
    /// Appends a counters request, if the broker has one.
    fn encode_stats(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// Decodes the frame at the front of `buf`: `None` until it has wholly
    /// arrived, else the event and the bytes it took. Broker errors are
    /// `Err`.
    fn parse<'a>(&self, buf: &'a [u8]) -> anyhow::Result<Option<(Event<'a>, usize)>>;
}

/// What one [`Driver::receive`] call saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recv {
    /// Read some bytes; the whole messages among them were handed over.
    Data,
    /// Nothing to read now (non-blocking socket, or read timeout).
    Idle,
    /// The broker closed the connection.
    Closed,
}

/// A connection to a broker, whatever its protocol.
pub trait Driver: Send {
    /// Sends a subscription request (confirm it with [`Driver::confirm`]).
    fn subscribe(&mut self, topic: &str) -> anyhow::Result<()> {
        self.subscribe_all(&[Subscription::plain(topic)])
    }
    /// Sends every request of `subs` in one write (confirm them with
    /// [`Driver::confirm`]).
    fn subscribe_all(&mut self, subs: &[Subscription<'_>]) -> anyhow::Result<()>;
    /// Waits until every subscription sent so far is live.
    fn confirm(&mut self) -> anyhow::Result<()>;
    /// Appends one publication to a batch (see [`Driver::publish_batch`]).
    fn encode_publish(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>);
    /// Writes a batch of encoded publications at once; every 64 KiB
    /// published it also reads (without blocking) whatever the broker
    /// answered, so replies never pile up.
    fn publish_batch(&mut self, batch: &[u8]) -> anyhow::Result<()>;
    /// Writes encoded publications now and reads nothing: for a
    /// connection that also receives, whose messages
    /// [`Driver::publish_batch`] would read and throw away.
    fn send(&mut self, encoded: &[u8]) -> anyhow::Result<()>;
    /// Sends one request (a publication with a reply-to) now.
    fn request(&mut self, topic: &str, reply_to: &str, payload: &[u8]) -> anyhow::Result<()>;
    /// Round trip proving every earlier publication reached the broker.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// One read, then every whole message in the buffer goes to `on_msg`.
    /// Broker pings are answered here.
    fn receive(&mut self, on_msg: &mut dyn FnMut(Delivery<'_>)) -> anyhow::Result<Recv>;
    /// Messages the broker reported as dropped for this connection.
    fn dropped(&self) -> u64;
    /// Requests the broker answered with `NO_RESPONDERS` (corecast 1.1).
    fn no_responders(&self) -> u64;
    /// The broker's counters as JSON (corecast `STATS`), `None` if the
    /// protocol has no such request.
    fn stats(&mut self) -> anyhow::Result<Option<String>>;
    /// The socket, for polling and socket options.
    fn stream(&self) -> &TcpStream;
    /// The TLS version and cipher suite, when the connection speaks TLS.
    fn tls_session(&self) -> Option<String>;
}

/// A socket with a read buffer.
#[derive(Debug)]
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Duration,
    /// The peer, whose IP address the server certificate must name.
    addr: SocketAddr,
    /// TLS to start with [`Wire::start_tls`].
    tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The TLS session, once started.
    tls: Option<Box<tls::Session>>,
    /// The WebSocket session, once upgraded.
    ws: Option<Box<ws::Session>>,
}

impl Wire {
    /// Connects (from `opts.source`, if given) with `TCP_NODELAY` and the
    /// timeouts of `opts`.
    pub fn connect(addr: SocketAddr, opts: &ConnOpts) -> anyhow::Result<Self> {
        let stream = match opts.source {
            None => TcpStream::connect_timeout(&addr, opts.timeout),
            Some(ip) => connect_from(ip, addr, opts.timeout),
        }
        .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(opts.timeout))?;
        stream.set_write_timeout(Some(opts.timeout))?;
        Ok(Self {
            stream,
            buf: vec![0; opts.read_buffer.max(512)],
            start: 0,
            end: 0,
            timeout: opts.timeout,
            addr,
            tls_config: opts.access.tls.clone(),
            tls: None,
            ws: None,
        })
    }

    /// Upgrades the connection to a WebSocket session; whatever arrives
    /// with the `101` is the session's first bytes.
    pub fn start_websocket(&mut self, read_buffer: usize) -> anyhow::Result<()> {
        let (request, key) = ws::request(self.addr)?;
        self.send(&request)?;
        let deadline = self.deadline();
        let used = loop {
            if let Some(used) = ws::response(self.data(), &key)? {
                break used;
            }
            self.read_more("the WebSocket upgrade's answer", deadline)?;
        };
        self.consume(used);
        let early = self.data().to_vec();
        self.consume(early.len());
        self.ws = Some(Box::new(ws::Session::new(early, read_buffer)));
        Ok(())
    }

    /// Runs the TLS handshake if the connection is to speak TLS; nothing
    /// otherwise. Bytes already read in clear must all have been consumed.
    pub fn start_tls(&mut self) -> anyhow::Result<()> {
        let Some(config) = self.tls_config.take() else { return Ok(()) };
        if !self.data().is_empty() {
            bail!("{} bytes in clear after the point TLS starts", self.data().len());
        }
        // What followed the handshake is left at the front of the buffer.
        let session = tls::Session::handshake(config, self.addr, &mut self.stream, &mut self.buf)?;
        (self.start, self.end) = (0, 0);
        self.tls = Some(Box::new(session));
        Ok(())
    }

    /// Bytes read and not consumed yet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks `n` bytes of [`Wire::data`] as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        // Not when TLS ciphertext follows: it stays where it is.
        if self.start == self.end && self.tls.as_ref().is_none_or(|t| t.pending() == 0) {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One `read` into the free end of the buffer (compacting or growing it
    /// first when needed). `Ok(0)` is end of stream; an `InvalidData` error
    /// when [`MAX_READ_BUFFER`] bytes hold no whole frame. With TLS the
    /// ciphertext is read there too, after the plaintext (and the part of a
    /// record left from before), and decrypted where it lies; the buffer
    /// keeps room for a whole record after the plaintext.
    pub fn fill(&mut self) -> io::Result<usize> {
        let (room, pending) = match &self.tls {
            Some(tls) => (tls::ROOM, tls.pending()),
            None => (1, 0),
        };
        while self.buf.len() - self.end < room {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end + pending, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() >= MAX_READ_BUFFER {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "no whole frame in {} MiB from the broker (garbage length or missing newline)",
                        MAX_READ_BUFFER >> 20
                    ),
                ));
            } else {
                self.buf.resize((self.buf.len() * 2).min(MAX_READ_BUFFER), 0);
            }
        }
        let n = match (self.tls.as_mut(), self.ws.as_mut()) {
            (Some(tls), _) => tls.read(&mut self.stream, &mut self.buf, self.end)?,
            (None, Some(ws)) => ws.read(&mut self.stream, &mut self.buf[self.end..])?,
            (None, None) => self.stream.read(&mut self.buf[self.end..])?,
        };
        self.end += n;
        Ok(n)
    }

    /// Writes all of `bytes`, bounded by the write timeout. On a
    /// non-blocking socket (one a poller reads) a full send buffer is
    /// waited out with `poll(2)` rather than taken for an error.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let deadline = self.deadline();
        if let Some(tls) = self.tls.as_mut() {
            return tls.write_all(&mut self.stream, bytes, deadline, wait_writable);
        }
        if let Some(ws) = self.ws.as_mut() {
            return ws.write_all(&mut self.stream, bytes, deadline, wait_writable);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.stream.write(rest) {
                Ok(0) => bail!("write to broker: the connection takes no more bytes"),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(&self.stream, deadline)?
                }
                Err(e) => return Err(e).context("write to broker"),
            }
        }
        Ok(())
    }

    /// Blocking reads until `codec` decodes an event that `want` accepts;
    /// bounded by the connection timeout. Pings met on the way are answered.
    pub fn wait_for<C: Codec + ?Sized>(
        &mut self,
        codec: &C,
        what: &str,
        mut want: impl FnMut(&Event<'_>) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = self.deadline();
        loop {
            while let Some((event, used)) = codec.parse(self.data())? {
                let done = want(&event);
                let ping = if let Event::Ping(nonce) = event { Some(nonce) } else { None };
                self.consume(used);
                if let Some(nonce) = ping {
                    let mut out = Vec::new();
                    codec.encode_pong(nonce, &mut out);
                    self.send(&out)?;
                }
                if done {
                    return Ok(());
                }
            }
            self.read_more(what, deadline)?;
        }
    }

    /// The deadline of a blocking exchange that starts now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// One blocking read for an exchange that must end by `deadline`.
    pub fn read_more(&mut self, what: &str, deadline: Instant) -> anyhow::Result<()> {
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        match self.fill() {
            Ok(0) => bail!("broker closed the connection while waiting for {what}"),
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("read while waiting for {what}")),
        }
    }
}

/// Connects to `addr` from local address `ip`. The port is left to
/// connect time (`IP_BIND_ADDRESS_NO_PORT`), so it only has to be unique
/// for this destination, not among every socket bound to `ip`.
fn connect_from(
    ip: std::net::Ipv4Addr,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    setsockopt(&socket, IpBindAddressNoPort, &true)?;
    socket.bind(&SocketAddr::from((ip, 0)).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// Waits until `stream` can take more bytes, or fails at `deadline`.
fn wait_writable(stream: &TcpStream, deadline: Instant) -> anyhow::Result<()> {
    use nix::{
        errno::Errno,
        poll::{poll, PollFd, PollFlags, PollTimeout},
    };
    use std::os::fd::AsFd;
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("write to broker: timed out");
    }
    // At least 1 ms: under a millisecond left is no reason to spin.
    let timeout = PollTimeout::try_from(left.as_millis().max(1)).unwrap_or(PollTimeout::MAX);
    match poll(&mut [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)], timeout) {
        Err(e) if e != Errno::EINTR => Err(io::Error::from(e)).context("poll for room to write"),
        _ => Ok(()),
    }
}

/// Would-block, timeout and interrupt: try again.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A publisher reads what the broker sent it (Redis answers every
/// `PUBLISH`) after this many bytes of publications.
const DRAIN_EVERY: usize = 64 << 10;

/// The one [`Driver`] implementation: a [`Wire`] and a protocol [`Codec`].
#[derive(Debug)]
pub struct Conn<C> {
    wire: Wire,
    codec: C,
    out: Vec<u8>,
    pending_subs: usize,
    dropped: u64,
    no_responders: u64,
    stats: Option<String>,
    /// Bytes published since the socket was last drained.
    undrained: usize,
}

impl<C: Codec> Conn<C> {
    /// Wraps a connected socket and runs the handshake.
    pub fn open(mut wire: Wire, mut codec: C, name: &str) -> anyhow::Result<Self> {
        codec.handshake(&mut wire, name)?;
        Ok(Self {
            wire,
            codec,
            out: Vec::new(),
            pending_subs: 0,
            dropped: 0,
            no_responders: 0,
            stats: None,
            undrained: 0,
        })
    }

    fn send_out(&mut self) -> anyhow::Result<()> {
        let result = self.wire.send(&self.out);
        self.out.clear();
        result
    }

    fn ping_round_trip(&mut self, what: &str) -> anyhow::Result<()> {
        self.codec.encode_ping(&mut self.out);
        self.send_out()?;
        let (codec, dropped) = (&self.codec, &mut self.dropped);
        self.wire.wait_for(codec, what, |e| {
            if let Event::Dropped(n) = e {
                *dropped += n;
            }
            matches!(e, Event::Pong)
        })
    }

    /// Hands every whole frame in the buffer to `on_msg`.
    fn drain_buffer(&mut self, on_msg: &mut dyn FnMut(Delivery<'_>)) -> anyhow::Result<()> {
        let mut pongs = Vec::new();
        let mut consumed = 0;
        {
            let data = self.wire.data();
            while let Some((event, used)) = self.codec.parse(&data[consumed..])? {
                consumed += used;
                match event {
                    Event::Msg(delivery) => on_msg(delivery),
                    Event::Ping(nonce) => pongs.push(nonce),
                    Event::Dropped(n) => self.dropped += n,
                    Event::Subscribed => self.pending_subs = self.pending_subs.saturating_sub(1),
                    Event::Stats(json) => self.stats = Some(json.to_owned()),
                    Event::NoResponders => self.no_responders += 1,
                    Event::Pong | Event::Other => {}
                }
            }
        }
        self.wire.consume(consumed);
        for nonce in pongs {
            self.codec.encode_pong(nonce, &mut self.out);
        }
        if !self.out.is_empty() {
            self.send_out()?;
        }
        Ok(())
    }
}

impl<C: Codec> Driver for Conn<C> {
    fn subscribe_all(&mut self, subs: &[Subscription<'_>]) -> anyhow::Result<()> {
        for sub in subs {
            if let Err(e) = self.codec.encode_sub(*sub, &mut self.out) {
                self.out.clear();
                return Err(e);
            }
        }
        if self.codec.acks_subscriptions() {
            self.pending_subs += subs.len();
        }
        self.send_out()
    }

    fn confirm(&mut self) -> anyhow::Result<()> {
        if !self.codec.acks_subscriptions() {
            return self.ping_round_trip("subscription confirmation (PONG)");
        }
        while self.pending_subs > 0 {
            let pending = &mut self.pending_subs;
            self.wire.wait_for(&self.codec, "subscription confirmation", |e| {
                if matches!(e, Event::Subscribed) {
                    *pending -= 1;
                    return true;
                }
                false
            })?;
        }
        Ok(())
    }

    fn encode_publish(&self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        self.codec.encode_pub(topic, payload, out);
    }

    fn publish_batch(&mut self, batch: &[u8]) -> anyhow::Result<()> {
        self.wire.send(batch)?;
        self.undrained += batch.len();
        if self.undrained < DRAIN_EVERY {
            return Ok(());
        }
        self.undrained = 0;
        self.wire.stream.set_nonblocking(true)?;
        let drained = self.drain_nonblocking();
        self.wire.stream.set_nonblocking(false)?;
        drained
    }

    fn send(&mut self, encoded: &[u8]) -> anyhow::Result<()> {
        self.wire.send(encoded)
    }

    fn request(&mut self, topic: &str, reply_to: &str, payload: &[u8]) -> anyhow::Result<()> {
        if let Err(e) = self.codec.encode_request(topic, reply_to, payload, &mut self.out) {
            self.out.clear();
            return Err(e);
        }
        self.send_out()
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.ping_round_trip("flush (PONG)")
    }

    fn receive(&mut self, on_msg: &mut dyn FnMut(Delivery<'_>)) -> anyhow::Result<Recv> {
        match self.wire.fill() {
            Ok(0) => Ok(Recv::Closed),
            Ok(_) => {
                self.drain_buffer(on_msg)?;
                Ok(Recv::Data)
            }
            Err(e) if is_transient(&e) => Ok(Recv::Idle),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(Recv::Closed),
            Err(e) => Err(e).context("read from broker"),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }

    fn no_responders(&self) -> u64 {
        self.no_responders
    }

    fn stats(&mut self) -> anyhow::Result<Option<String>> {
        if !self.codec.encode_stats(&mut self.out) {
            return Ok(None);
        }
        self.send_out()?;
        let slot = &mut self.stats;
        self.wire.wait_for(&self.codec, "STATS_REPLY", |e| match e {
            Event::Stats(json) => {
                *slot = Some((*json).to_owned());
                true
            }
            _ => false,
        })?;
        Ok(self.stats.take())
    }

    fn stream(&self) -> &TcpStream {
        &self.wire.stream
    }

    fn tls_session(&self) -> Option<String> {
        self.wire.tls.as_ref().map(|t| t.describe())
    }
}

impl<C: Codec> Conn<C> {
    /// Reads until the socket has nothing more, discarding messages.
    fn drain_nonblocking(&mut self) -> anyhow::Result<()> {
        for _ in 0..1024 {
            match self.receive(&mut |_| {})? {
                Recv::Data => continue,
                Recv::Idle => return Ok(()),
                Recv::Closed => bail!("broker closed the publisher connection"),
            }
        }
        Ok(())
    }
}

/// Appends the decimal digits of `n`.
pub fn put_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Parses ASCII decimal digits (no sign); `None` if empty or not digits.
pub fn parse_decimal(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    bytes.iter().try_fold(0usize, |acc, &b| match b {
        b'0'..=b'9' => Some(acc * 10 + (b - b'0') as usize),
        _ => None,
    })
}

/// Feeds `stream` to `codec` in pieces of every size from 1 byte up, like a
/// socket may deliver it, and checks each time that it decodes to exactly
/// `expected` (events in `Debug` form) with no bytes left over.
#[cfg(test)]
fn assert_parses_in_pieces(codec: &impl Codec, stream: &[u8], expected: &[&str]) {
    for cut in 1..stream.len() {
        let mut buf = Vec::new();
        let mut events = Vec::new();
        for chunk in stream.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some((event, used)) = codec.parse(&buf).expect("valid stream") {
                events.push(format!("{event:?}"));
                buf.drain(..used);
            }
        }
        assert!(buf.is_empty(), "cut {cut}: bytes left over");
        assert_eq!(events, expected, "cut at {cut}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip() {
        for n in [0usize, 7, 10, 65_536, 1 << 40] {
            let mut out = Vec::new();
            put_decimal(&mut out, n);
            assert_eq!(parse_decimal(&out), Some(n));
        }
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1x"), None);
    }

    #[test]
    fn patterns_are_told_from_topics() {
        for (topic, pattern) in [
            ("bench.*.x", true),
            ("bench.>", true),
            (">", true),
            ("bench.a*", false),
            ("a.b", false),
        ] {
            assert_eq!(Subscription::plain(topic).is_pattern(), pattern, "{topic}");
        }
    }

    /// Each kind parses from the name results and reports use, and `--help`
    /// lists exactly those names.
    #[test]
    fn kinds_parse_from_their_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_str(k.name(), false).expect("known kind"), k);
        }
        assert!(Kind::from_str("kafka", false).is_err());
        let listed: Vec<String> = Kind::value_variants()
            .iter()
            .filter_map(|k| k.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(listed, Kind::ALL.map(|k| k.name().to_owned()));
    }
}
