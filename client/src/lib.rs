//! Clients for the corecast broker: a blocking one over `std::net` (feature
//! `blocking`, on by default), and an async one on tokio (feature `tokio`).
//!
//! Both speak the protocol of the `corecast-proto` crate through the same
//! connection core, which does no I/O: what a connection holds and what it
//! decides live in one place, and each client only reads, writes, waits and
//! wakes around it.
//!
//! - `blocking::Client` (feature `blocking`): a background reader thread
//!   and a background writer thread; every call blocks the calling thread
//!   only. For simple programs, tools and tests.
//! - `tokio::Client` (feature `tokio`): a reader task and a writer task;
//!   subscriptions are `futures_core::Stream`s. It depends on tokio alone
//!   (no glommio, nothing of the broker).
//!
//! # What a client does for you
//!
//! - **Handshake**: `HELLO` with a name and a credential, `WELCOME` within
//!   [`Options::connect_timeout`]; a refusal (auth failed, server full) is
//!   [`ClientError::Refused`] with the broker's text. The credential is a
//!   plain shared token ([`Options::auth_token`]) or a typed one
//!   ([`Options::credentials`]: a user and password, a bearer token or a
//!   JWT, PROTOCOL.md section 14), which needs protocol 1.1.
//! - **TLS** ([`Options::tls`]): rustls (ring provider) over the TCP
//!   connection, trusting the CA roots given in [`TlsOptions`], with a client
//!   certificate for mutual TLS if asked; a certificate that does not verify
//!   is [`ClientError::TlsHandshake`]. Without it the client speaks plain
//!   TCP, with nothing of TLS on its path.
//! - **Protocol 1.1** when the broker grants it ([`ServerInfo::v1_1`];
//!   asked for by default, [`Options::protocol_1_1`]): headers
//!   (`publish_with_headers`, [`Message::headers`]), requests that fail at
//!   once with [`ClientError::NoResponders`] when no subscription would
//!   receive them, [`Options::no_echo`], subscriptions to patterns (`*` for
//!   one token, `>` for the rest: `subscribe("orders.>")`), and queue
//!   groups (`queue_subscribe(topic, group)`: each message goes to one
//!   member of the group). A version 1 broker refuses the 1.1 `HELLO`; the
//!   client then connects again as a version 1 client, and that broker
//!   refuses patterns and queue groups ([`ClientError::Server`]).
//! - **Checks before sending**: topics and reply-tos follow the rules of
//!   [`corecast_proto::topic`] (publishing to a wildcard or a `$` topic is refused
//!   locally), queue group names are one token
//!   ([`ClientError::InvalidQueueGroup`]), and a payload must fit the
//!   broker's `max_frame`.
//! - **Batched writes**: publications go into a send buffer that a
//!   background writer empties with one write for everything queued, so a
//!   burst of small publications becomes few system calls, and a lone one is
//!   sent at once. `publish` returns once the frame is in the buffer; `flush`
//!   returns once the broker has applied everything sent before it.
//! - **Bounded memory**: the send buffer takes [`Options::send_buffer`]
//!   bytes of publications, subscriptions and flushes (any single frame
//!   when it is empty), while the writer holds at most one earlier batch in
//!   its socket write; only the frames the client owes the broker (`UNSUB`
//!   of a dropped subscription, `PONG`, its own liveness `PING`) go in
//!   beyond that, and there are never more of them than subscriptions plus
//!   a few. A publisher that outruns the socket waits up to
//!   [`Options::send_timeout`] and then gets [`ClientError::Timeout`], or gets
//!   [`ClientError::SendBufferFull`] at once from `try_publish`. Each
//!   subscription has a queue of [`Options::subscription_capacity`] messages;
//!   when the application does not drain it, new messages are **dropped and
//!   counted** ([`Event::Dropped`] with [`DropSite::Client`], and the
//!   subscription's `dropped()` count). Events have a bounded queue too;
//!   events that do not fit are counted in [`Stats::events_discarded`].
//! - **Heartbeats**: server `PING`s are answered at once; a broker silent for
//!   two ping intervals is considered gone.
//! - **Reconnection**: after `GOAWAY` (read to the end first, since messages
//!   may still follow it), a fatal `ERR` or a lost connection, the client
//!   reconnects with capped exponential backoff and jitter ([`Backoff`]),
//!   subscribes again under the same sids, and then sends the publications
//!   that were still in its send buffer. Delivery stays at most once:
//!   messages published while no subscription existed are not replayed.
//! - **Request/reply**: `request` subscribes a fresh inbox topic
//!   `_INBOX.<random>.<n>`, publishes with that reply-to, waits for the
//!   first answer, and unsubscribes the inbox whatever the outcome.
//!   In a 1.1 session it is sent as a request, so that the broker's
//!   `NO_RESPONDERS` ends it at once instead of the timeout.
//!   Version 1 has no wildcard subscriptions, so each request has its own
//!   inbox subscription; it costs no extra round trip, since a connection's
//!   frames take effect in order (PROTOCOL.md §6.3).
//! - **Refusals**: every `SUB` is followed by a `PING`; a refusal of the
//!   `SUB` comes before that `PING`'s `PONG`, so the `PONG` says that the
//!   broker accepted it, and `subscribe` waits for it (across
//!   reconnections). An `ERR` does not say which frame it refuses, though,
//!   and the broker may refuse a later frame before it answers an earlier
//!   `PING`. When a refusal of a `SUB` can only be one subscription's, that
//!   subscription fails with [`ClientError::Server`] (`subscribe`, or the
//!   `request` of an inbox) or ends (one restored after a reconnection).
//!   When it could be any of several, a `subscribe` still waiting for its
//!   answer fails and sends an `UNSUB` in case the broker accepted it, and
//!   the others are taken as accepted; every refusal is also an
//!   [`Event::ServerError`].
//! - **Closing**: `close` (or dropping the last handle of a client)
//!   sends what is buffered for 2 s at most, then closes the connection;
//!   the background threads or tasks end with it, even when the broker
//!   stopped reading.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use corecast_client::blocking::Client;
//!
//! let client = Client::connect("127.0.0.1:7400")?;
//! let sub = client.subscribe("chat.lobby")?;
//! client.publish("chat.lobby", "hello")?;
//! let msg = sub.recv_timeout(Duration::from_secs(1))?.expect("a message");
//! assert_eq!(&msg.payload[..], b"hello");
//! # Ok::<(), corecast_client::ClientError>(())
//! ```

// Without either client only the types and checks they share are of use;
// the connection core still compiles, with nobody to call it.
#![cfg_attr(not(any(feature = "blocking", feature = "tokio")), allow(dead_code))]

mod backoff;
#[cfg(feature = "blocking")]
pub mod blocking;
mod decoder;
mod error;
mod session;
mod state;
#[cfg(feature = "blocking")]
mod stream;
#[cfg(test)]
mod testing;
mod tls;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "tokio")]
mod tokio_stream;

use std::time::Duration;

pub use backoff::Backoff;
pub use bytes::Bytes;
pub use corecast_proto::header::{HeaderBlock, HeaderError, Headers};
pub use error::{ClientError, ServerError, TopicProblem};
pub use tls::{Credentials, Pem, TlsOptions};

/// How a client connects and how much it may buffer.
///
/// ```
/// use std::time::Duration;
/// use corecast_client::{Backoff, Options};
///
/// let options = Options::new()
///     .name("billing")
///     .auth_token("s3cret")
///     .connect_timeout(Duration::from_secs(2))
///     .reconnect(Backoff { max: Duration::from_secs(1), ..Backoff::default() });
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct Options {
    pub(crate) name: String,
    pub(crate) credentials: Credentials,
    pub(crate) tls: Option<TlsOptions>,
    /// `tls`, loaded when the client connects.
    pub(crate) tls_loaded: Option<tls::Tls>,
    pub(crate) connect_timeout: Duration,
    pub(crate) flush_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) send_buffer: usize,
    pub(crate) subscription_capacity: usize,
    pub(crate) event_capacity: usize,
    pub(crate) reconnect: Option<Backoff>,
    pub(crate) v1_1: bool,
    pub(crate) no_echo: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("name", &self.name)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("flush_timeout", &self.flush_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("send_buffer", &self.send_buffer)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("event_capacity", &self.event_capacity)
            .field("reconnect", &self.reconnect)
            .field("v1_1", &self.v1_1)
            .field("no_echo", &self.no_echo)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            name: "corecast-rs".into(),
            credentials: Credentials::None,
            tls: None,
            tls_loaded: None,
            connect_timeout: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            send_buffer: 64 << 10,
            subscription_capacity: 1024,
            event_capacity: 256,
            reconnect: Some(Backoff::default()),
            v1_1: true,
            no_echo: false,
        }
    }
}

impl Options {
    /// The defaults: name `corecast-rs`, no credential, plain TCP, 5 s to connect, 10 s for a
    /// flush and for room in the send buffer, a 64 KiB send buffer, 1024
    /// messages per subscription, 256 events, reconnection with
    /// [`Backoff::default`], protocol 1.1 asked for, echo on.
    pub fn new() -> Self {
        Self::default()
    }

    /// The client name sent in `HELLO`, for the broker's logs (at most 64
    /// bytes).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The auth token sent in `HELLO` (at most 65535 bytes): a plain shared
    /// token, as in protocol version 1; brokers without authentication
    /// ignore it. The same as `credentials(Credentials::token(token))`.
    pub fn auth_token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.credentials = Credentials::token(token);
        self
    }

    /// What the client authenticates with in `HELLO` (none by default).
    /// A typed credential (password, bearer token, JWT) is sent with the
    /// `HELLO` credential flag, which needs protocol 1.1: a broker that
    /// speaks version 1 only is then not fallen back to, and
    /// `protocol_1_1(false)` is refused.
    ///
    /// ```
    /// use corecast_client::{Credentials, Options};
    ///
    /// let password = std::env::var("CORECAST_PASSWORD").unwrap_or_default();
    /// let options = Options::new().credentials(Credentials::password("billing", password));
    /// # let _ = options;
    /// ```
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Connect with TLS, as `tls` says (plain TCP by default). The PEM
    /// files are read when the client connects.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self.tls_loaded = None;
        self
    }

    /// How long connecting and the handshake may take, for the first
    /// connection and for each reconnection attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `flush` and `subscribe` wait for the broker's answer (the
    /// `PONG` of the `PING` they send).
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How long `publish` waits for room in a full send buffer before it
    /// fails with [`ClientError::Timeout`].
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// Bytes of frames the send buffer holds before publishers wait (a
    /// single larger frame is still taken when the buffer is empty).
    pub fn send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes.max(1);
        self
    }

    /// Messages each subscription queues for the application; when the queue
    /// is full, new messages are dropped and counted.
    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.subscription_capacity = messages.max(1);
        self
    }

    /// Events queued for the application; more are discarded and counted.
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.event_capacity = events.max(1);
        self
    }

    /// Reconnect after a lost connection, waiting as `backoff` says.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = Some(backoff);
        self
    }

    /// Do not reconnect: a lost connection closes the client.
    pub fn no_reconnect(mut self) -> Self {
        self.reconnect = None;
        self
    }

    /// Whether to ask for protocol 1.1 (on by default). A 1.1 session gives
    /// headers and requests that fail at once without responders; a broker
    /// that speaks only version 1 refuses the request, and the client then
    /// connects again as a version 1 client (PROTOCOL.md §13.1), so asking
    /// costs nothing with an older broker. Turn it off to get a version 1
    /// session whatever the broker speaks.
    pub fn protocol_1_1(mut self, ask: bool) -> Self {
        self.v1_1 = ask;
        self
    }

    /// Never deliver this client's own publications to its subscriptions
    /// (off by default). The broker does this, so it works only in a 1.1
    /// session ([`ServerInfo::v1_1`]); a request then counts only other
    /// clients' subscriptions as responders.
    pub fn no_echo(mut self, on: bool) -> Self {
        self.no_echo = on;
        self
    }

    /// Checks the limits the protocol puts on the name and the token.
    pub(crate) fn check(&self) -> Result<(), ClientError> {
        if self.name.len() > corecast_proto::MAX_CLIENT_NAME {
            return Err(ClientError::InvalidOption(format!(
                "the client name is {} bytes, more than the {} allowed",
                self.name.len(),
                corecast_proto::MAX_CLIENT_NAME
            )));
        }
        self.credentials.check()?;
        if self.credentials.is_typed() && !self.v1_1 {
            return Err(ClientError::InvalidOption(
                "a typed credential (password, bearer, JWT) needs protocol 1.1".into(),
            ));
        }
        Ok(())
    }

    /// Checks the options and reads the TLS settings' PEM data, once, before
    /// the first connection.
    pub(crate) fn prepare(&mut self) -> Result<(), ClientError> {
        self.check()?;
        if let (Some(tls), None) = (&self.tls, &self.tls_loaded) {
            self.tls_loaded = Some(tls.load()?);
        }
        Ok(())
    }
}

/// How a subscription is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Ask the broker to drop and count this subscription's messages when the
    /// connection cannot keep up (reported as [`Event::Dropped`] with
    /// [`DropSite::Broker`]), instead of closing the connection as a slow
    /// consumer.
    pub lossy: bool,
    /// Messages queued for the application; `None` =
    /// [`Options::subscription_capacity`]. At least 1: `Some(0)` is taken
    /// as 1.
    pub capacity: Option<usize>,
}

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: String,
    /// Where the publisher wants answers, if anywhere.
    pub reply_to: Option<String>,
    /// The payload, unchanged.
    pub payload: Bytes,
    /// The publisher's headers, in order (protocol 1.1, `HMSG`); empty for
    /// a message without any.
    pub headers: HeaderBlock,
}

impl Message {
    /// The value of the first header named `key` (case-sensitive).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.headers().get(key)
    }
}

/// What the broker said about itself in `WELCOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The broker's name.
    pub server_name: String,
    /// The protocol version of the session.
    pub version: u16,
    /// The largest frame the client may send, length prefix excluded.
    pub max_frame: u32,
    /// Silence after which the broker pings the client, in milliseconds.
    pub ping_interval_ms: u32,
    /// The broker core that owns the connection.
    pub core_id: u16,
    /// The connection's id, unique within the broker's lifetime.
    pub connection_id: u64,
    /// Whether the session speaks protocol 1.1 (the broker granted it in
    /// `WELCOME`): headers, fail-fast requests and no echo need it.
    pub v1_1: bool,
}

/// Where messages of a subscription were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropSite {
    /// The broker dropped them on a lossy subscription (`DROPPED`).
    Broker,
    /// The client dropped them because the subscription's queue was full.
    Client,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The broker announced its shutdown with `GOAWAY`.
    GoAway,
    /// The broker closed the session with a fatal `ERR`.
    Server(ServerError),
    /// The broker closed the connection without a word.
    Closed,
    /// The broker stayed silent for two ping intervals.
    Silent,
    /// The broker sent something that is not a valid frame.
    Protocol(String),
    /// Reading or writing failed.
    Io(String),
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GoAway => f.write_str("the broker is shutting down (GOAWAY)"),
            Self::Server(e) => write!(f, "the broker closed the session: {e}"),
            Self::Closed => f.write_str("the broker closed the connection"),
            Self::Silent => f.write_str("the broker stopped answering"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

/// Something the application may want to know about, from
/// `next_event`. The events end (`next_event` gives `None`) once the client
/// is closed and every event was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Messages of a subscription were lost.
    Dropped {
        /// The subscription's topic.
        topic: String,
        /// The subscription's sid.
        sid: u32,
        /// Messages lost since the previous such event for this subscription
        /// and site.
        count: u64,
        /// Who dropped them.
        site: DropSite,
    },
    /// The broker refused a frame with a non-fatal `ERR`; the session goes
    /// on.
    ServerError(ServerError),
    /// The broker is shutting down; the client reads what is still on its
    /// way, then reconnects.
    GoAway {
        /// How long the broker keeps flushing before it closes, in ms.
        grace_ms: u32,
    },
    /// The connection ended; the client reconnects if allowed.
    Disconnected(DisconnectReason),
    /// A new connection is up and the subscriptions are restored.
    Reconnected {
        /// Attempts it took.
        attempts: u32,
        /// The new session's `WELCOME`.
        info: ServerInfo,
    },
    /// A publication buffered while the client reconnected does not fit
    /// the new broker's `max_frame`; it was not sent (and is counted in
    /// [`Stats::dropped_publications`]).
    PublicationDropped {
        /// Its topic.
        topic: String,
        /// Its payload's length.
        len: usize,
        /// The new broker's `max_frame`.
        max_frame: u32,
    },
    /// The client gave up reconnecting and closed.
    Closed {
        /// Why it gave up.
        reason: String,
    },
}

/// Counts of what a client did, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `PUB` frames queued for sending.
    pub published: u64,
    /// Batches handed to the socket, each in one write (a write that fails
    /// with its connection counts too).
    pub writes: u64,
    /// Bytes in those batches.
    pub bytes_written: u64,
    /// Messages handed to subscriptions.
    pub received: u64,
    /// Messages dropped because a subscription's queue was full.
    pub dropped_by_client: u64,
    /// Messages the broker reported dropped on lossy subscriptions.
    pub dropped_by_broker: u64,
    /// Buffered publications not sent after a reconnection because they do
    /// not fit the new broker's `max_frame` ([`Event::PublicationDropped`]).
    pub dropped_publications: u64,
    /// Successful reconnections.
    pub reconnects: u64,
    /// Events that did not fit the event queue.
    pub events_discarded: u64,
    /// Bytes waiting in the send buffer right now.
    pub buffered_bytes: u64,
}

/// Checks `topic` as `publish` does before sending: a literal topic that
/// follows the rules of [`corecast_proto::topic`] and does not start with `$`.
///
/// # Errors
/// [`ClientError::InvalidTopic`], saying which rule is broken.
pub fn validate_publish_topic(topic: &str) -> Result<(), ClientError> {
    state::check_publish_target("topic", topic)
}

/// Checks a reply-to as `publish_with_reply` does: the same rules as
/// [`validate_publish_topic`].
///
/// # Errors
/// [`ClientError::InvalidTopic`], saying which rule is broken.
pub fn validate_reply_to(reply_to: &str) -> Result<(), ClientError> {
    state::check_publish_target("reply-to", reply_to)
}

/// Checks `topic` as `subscribe` does before sending: the rules of
/// [`corecast_proto::topic`] (whether the broker supports wildcards is its own
/// answer).
///
/// # Errors
/// [`ClientError::InvalidTopic`], saying which rule is broken.
pub fn validate_subscribe_topic(topic: &str) -> Result<(), ClientError> {
    state::check_subscribe_topic(topic)
}

/// The inbox topic prefix of one client: `_INBOX.<16 random hex digits>`.
pub(crate) fn new_inbox_prefix() -> String {
    format!("_INBOX.{:016x}", fastrand::u64(..))
}
