//! The blocking client, over `std::net::TcpStream`, with TLS (rustls) when
//! [`Options::tls`] asks for it.
//!
//! Each client runs two background threads: a **reader** that decodes what
//! the broker sends, answers its `PING`s, hands messages to subscriptions,
//! wakes flushes, and reconnects when the connection is lost; and a
//! **writer** that sends the send buffer, one write for everything queued.
//! Calls block the calling thread only, for as long as their timeouts say.
//!
//! ```no_run
//! use std::time::Duration;
//! use corecast_client::{blocking::Client, Options};
//!
//! let client = Client::connect_with("127.0.0.1:7400", Options::new().name("example"))?;
//! let orders = client.subscribe("orders.eu")?;
//! client.publish("orders.eu", "order 1")?;
//! client.flush()?;
//! for msg in orders.iter().take(1) {
//!     println!("{}: {:?}", msg.topic, msg.payload);
//! }
//! # Ok::<(), corecast_client::ClientError>(())
//! ```

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError, TryRecvError},
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use corecast_proto::Pub;

use super::{
    decoder::Decoder,
    session::{Handshake, Retry, Silence, Watch},
    state::{
        self, Blocked, FlushEnd, Link, Publication, State, SubCounters, SubKind, WriterStep,
        CLOSE_LINGER, WRITE_CHECK,
    },
    stream::{Stream, TlsStream},
    ClientError, DisconnectReason, Event, HeaderBlock, Message, Options, ServerInfo, Stats,
    SubscribeOptions,
};

/// A connection to a corecast broker. Cloning it is cheap and gives another
/// handle on the same connection; the connection closes when the last
/// handle is dropped (what is buffered is still sent) or on
/// [`Client::close`].
///
/// The background threads end with the connection: when the client is
/// closed or dropped they send what is buffered, for 2 s at most, then
/// close the connection and end. A program that is about to exit calls
/// [`Client::close`] (or [`Client::flush`]) first, so that nothing buffered
/// is lost with the process.
#[derive(Debug, Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Closes the connection when the last [`Client`] goes.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.begin_close();
    }
}

/// What the application's threads, the reader and the writer share.
#[derive(Debug)]
struct Shared {
    addr: String,
    options: Options,
    state: Mutex<State>,
    /// Wakes the writer: frames were queued, or the link changed.
    to_writer: Condvar,
    /// Wakes waiting callers: room in the send buffer, or the link changed.
    to_callers: Condvar,
    events: Mutex<Receiver<Event>>,
    /// Subscribes one at a time, so that a refusal is tied to the right one.
    subscribe_serial: Mutex<()>,
}

/// One open connection, handshake done.
#[derive(Debug)]
struct Conn {
    stream: Arc<Stream>,
    decoder: Decoder,
    info: ServerInfo,
}

impl Client {
    /// Connects to the broker at `addr` (`host:port`) with the default
    /// [`Options`].
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::ConnectTimeout`] when the
    /// broker cannot be reached, [`ClientError::Refused`] when it refuses the
    /// handshake.
    pub fn connect(addr: impl ToString) -> Result<Self, ClientError> {
        Self::connect_with(addr, Options::default())
    }

    /// Connects to the broker at `addr` (`host:port`) with `options`.
    ///
    /// Returns once the broker has answered `HELLO` with `WELCOME`. Only
    /// later losses of the connection are retried; this first connection is
    /// not.
    ///
    /// # Errors
    /// As [`Client::connect`], [`ClientError::InvalidOption`] for a name or
    /// credential the protocol cannot carry, [`ClientError::TlsConfig`] for
    /// TLS settings that cannot be used, and [`ClientError::TlsHandshake`]
    /// when the TLS handshake fails (a broker certificate that does not
    /// verify, say).
    pub fn connect_with(addr: impl ToString, mut options: Options) -> Result<Self, ClientError> {
        options.prepare()?;
        let addr = addr.to_string();
        let conn = open(&addr, &options)?;
        let (events_tx, events_rx) = mpsc::sync_channel(options.event_capacity);
        let state = State::new(conn.info.clone(), options.send_buffer, Box::new(events_tx));
        let shared = Arc::new(Shared {
            addr,
            options,
            state: Mutex::new(state),
            to_writer: Condvar::new(),
            to_callers: Condvar::new(),
            events: Mutex::new(events_rx),
            subscribe_serial: Mutex::new(()),
        });
        let reader = Arc::clone(&shared);
        thread::Builder::new()
            .name("corecast-reader".into())
            .spawn(move || run_reader(&reader, conn))?;
        Ok(Self { handle: Arc::new(Handle { shared }) })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Publishes `payload` to `topic`.
    ///
    /// Returns once the frame is in the send buffer; the writer sends it at
    /// once, together with whatever else is queued by then. Waits up to
    /// [`Options::send_timeout`] while the buffer is full.
    ///
    /// # Errors
    /// [`ClientError::InvalidTopic`] for a topic that breaks the rules, is a
    /// wildcard or starts with `$`; [`ClientError::PayloadTooLarge`];
    /// [`ClientError::Timeout`] when the buffer stayed full;
    /// [`ClientError::Closed`].
    pub fn publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.shared().publish(&Pub { topic, reply_to: "", payload: payload.as_ref() }.into(), true)
    }

    /// Publishes `payload` to `topic`, asking for answers on `reply_to`.
    ///
    /// # Errors
    /// As [`Client::publish`]; `reply_to` follows the same rules as `topic`.
    pub fn publish_with_reply(
        &self,
        topic: &str,
        reply_to: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        self.shared().publish(&Pub { topic, reply_to, payload: payload.as_ref() }.into(), true)
    }

    /// Publishes `payload` to `topic` with `headers` (`HPUB`). Subscribers
    /// in 1.1 sessions receive them in [`Message::headers`]; those in
    /// version 1 sessions receive the message without them.
    ///
    /// # Errors
    /// As [`Client::publish`]; [`ClientError::Unsupported`] when the
    /// session is a version 1 session ([`ServerInfo::v1_1`]).
    pub fn publish_with_headers(
        &self,
        topic: &str,
        headers: &HeaderBlock,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        let publish = Pub { topic, reply_to: "", payload: payload.as_ref() };
        let p = Publication { publish, headers: Some(headers.headers()), request: false };
        self.shared().publish(&p, true)
    }

    /// Publishes without waiting: fails with [`ClientError::SendBufferFull`]
    /// when the send buffer has no room.
    ///
    /// # Errors
    /// As [`Client::publish`], with [`ClientError::SendBufferFull`] instead
    /// of waiting.
    pub fn try_publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.shared().publish(&Pub { topic, reply_to: "", payload: payload.as_ref() }.into(), false)
    }

    /// Answers `request` by publishing `payload` to its reply-to.
    ///
    /// # Errors
    /// [`ClientError::NoReplyTo`] when the request has none; otherwise as
    /// [`Client::publish`].
    pub fn respond(&self, request: &Message, payload: impl AsRef<[u8]>) -> Result<(), ClientError> {
        let reply_to = request.reply_to.as_deref().ok_or(ClientError::NoReplyTo)?;
        self.publish(reply_to, payload)
    }

    /// Subscribes to `topic` with the default [`SubscribeOptions`].
    ///
    /// Returns once the broker has registered the subscription on every
    /// core: any message published after that reaches it.
    ///
    /// # Errors
    /// [`ClientError::InvalidTopic`]; [`ClientError::Server`] when the broker
    /// refuses (a wildcard topic, too many subscriptions);
    /// [`ClientError::Timeout`] after [`Options::flush_timeout`];
    /// [`ClientError::Closed`].
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, ClientError> {
        self.subscribe_with(topic, SubscribeOptions::default())
    }

    /// Subscribes to `topic` as `options` say (lossy, queue capacity; a
    /// capacity of 0 is taken as 1).
    ///
    /// # Errors
    /// As [`Client::subscribe`]; [`ClientError::Timeout`] also when the send
    /// buffer stayed full for [`Options::send_timeout`].
    pub fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_as((topic, None), options)
    }

    /// Subscribes to `topic` as a member of queue group `group`, with the
    /// default [`SubscribeOptions`] (protocol 1.1).
    ///
    /// Each message published to the topic goes to one member of the
    /// group, wherever its members are connected (and, as usual, to every
    /// subscription without a group): members share the work. A group is
    /// named by its name alone, and each member keeps its own options.
    ///
    /// # Errors
    /// [`ClientError::InvalidQueueGroup`] when `group` is not one literal
    /// token of 1-255 bytes; [`ClientError::Server`] when the broker
    /// refuses, for instance because it speaks version 1 only
    /// (`unsupported`); otherwise as [`Client::subscribe`].
    pub fn queue_subscribe(&self, topic: &str, group: &str) -> Result<Subscription, ClientError> {
        self.queue_subscribe_with(topic, group, SubscribeOptions::default())
    }

    /// [`Client::queue_subscribe`] with `options` (lossy, queue capacity).
    ///
    /// # Errors
    /// As [`Client::queue_subscribe`].
    pub fn queue_subscribe_with(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        state::check_queue_group(group)?;
        self.subscribe_as((topic, Some(group)), options)
    }

    /// Subscribes to `topic`, in queue group `queue_group` if given, and
    /// waits for the broker's answer.
    fn subscribe_as(
        &self,
        (topic, queue_group): (&str, Option<&str>),
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        state::check_subscribe_topic(topic)?;
        let shared = &self.handle.shared;
        let _serial = shared.subscribe_serial.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = options.capacity.unwrap_or(shared.options.subscription_capacity);
        let (answer_tx, answer) = mpsc::sync_channel(1);
        let sub = shared.add_subscription((topic, queue_group), options.lossy, capacity, || {
            SubKind::Subscription(Box::new(answer_tx.clone()))
        })?;
        drop(answer_tx);
        let timeout = shared.options.flush_timeout;
        let answer = match answer.recv_timeout(timeout) {
            Ok(answer) => Some(answer),
            Err(RecvTimeoutError::Timeout) => return Err(state::unanswered(timeout)),
            Err(RecvTimeoutError::Disconnected) => None,
        };
        state::subscribed(answer)?;
        Ok(sub)
    }

    /// Waits until the broker has applied everything this client sent
    /// before: publications routed, subscriptions registered broker-wide.
    /// Waits up to [`Options::flush_timeout`].
    ///
    /// # Errors
    /// [`ClientError::Timeout`] (no `PONG`, or no session or no room in the
    /// send buffer for the `PING`), [`ClientError::ConnectionLost`] when
    /// the connection went down first, [`ClientError::Closed`].
    pub fn flush(&self) -> Result<(), ClientError> {
        self.flush_timeout(self.shared().options.flush_timeout)
    }

    /// [`Client::flush`] with its own timeout.
    ///
    /// # Errors
    /// As [`Client::flush`].
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), ClientError> {
        self.shared().ping(timeout)?.into_result()
    }

    /// Sends `payload` to `topic` with a fresh inbox as reply-to and waits
    /// up to `timeout` for the first answer. The inbox is unsubscribed when
    /// this returns, whatever the outcome.
    ///
    /// # Errors
    /// [`ClientError::NoResponders`] at once when the broker says that no
    /// subscription would receive the request (protocol 1.1 sessions; in a
    /// version 1 session the request times out instead);
    /// [`ClientError::Timeout`] when nobody answered in time;
    /// [`ClientError::Server`] when the broker refused the inbox
    /// subscription (too many subscriptions); otherwise as
    /// [`Client::publish`].
    pub fn request(
        &self,
        topic: &str,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let shared = self.shared();
        state::check_publish_target("topic", topic)?;
        let inbox = shared.lock().next_inbox();
        let replies = shared.add_subscription((&inbox, None), false, 1, || SubKind::Inbox)?;
        shared.publish(
            &Publication {
                publish: Pub { topic, reply_to: &inbox, payload: payload.as_ref() },
                headers: None,
                request: true,
            },
            true,
        )?;
        match replies.recv_timeout(timeout) {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(ClientError::Timeout { after: timeout, waiting_for: "a reply" }),
            Err(closed) => Err(shared.refusal(replies.sid).unwrap_or(closed)),
        }
    }

    /// The next event, waiting up to `timeout`; `None` at once when the
    /// client is closed and every event was taken.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.shared()
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv_timeout(timeout)
            .ok()
    }

    /// The next event if one is queued.
    pub fn try_next_event(&self) -> Option<Event> {
        self.shared().events.lock().unwrap_or_else(PoisonError::into_inner).try_recv().ok()
    }

    /// What the broker said in the latest `WELCOME`.
    pub fn server_info(&self) -> ServerInfo {
        self.shared().lock().info().clone()
    }

    /// Counts of what this client did.
    pub fn stats(&self) -> Stats {
        self.shared().lock().stats()
    }

    /// Whether the session is open right now (not reconnecting, not closed).
    pub fn is_connected(&self) -> bool {
        self.shared().lock().link() == Link::Up
    }

    /// Flushes, then closes the connection for every handle: what is still
    /// buffered is sent for 2 s at most. Subscriptions and events end;
    /// later calls fail with [`ClientError::Closed`].
    ///
    /// # Errors
    /// The flush's error, if it failed (the client is closed all the same).
    pub fn close(&self) -> Result<(), ClientError> {
        let shared = self.shared();
        let flushed = match self.flush() {
            Err(ClientError::Closed) => Ok(()),
            other => other,
        };
        shared.begin_close();
        // The writer gives up at the linger; the reader then ends at once.
        let deadline = Instant::now() + CLOSE_LINGER + Duration::from_secs(1);
        let mut st = shared.lock();
        while st.link() != Link::Closed {
            match shared.wait_until(st, deadline) {
                Some(next) => st = next,
                None => break,
            }
        }
        flushed
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a change of state until `deadline`; `None` once it passed.
    fn wait_until<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Instant,
    ) -> Option<MutexGuard<'a, State>> {
        let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
        let mut guard = guard;
        guard.caller_waits();
        let (mut guard, _) =
            self.to_callers.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner);
        guard.caller_done();
        Some(guard)
    }

    /// Wakes the writer if it waits for what `st` just queued.
    fn wake_writer(&self, mut st: MutexGuard<'_, State>) {
        let wake = st.wake_writer();
        drop(st);
        if wake {
            self.to_writer.notify_all();
        }
    }

    fn wake_all(&self) {
        self.to_writer.notify_all();
        self.to_callers.notify_all();
    }

    /// Runs `attempt` on the state until it queues something, waiting for
    /// room or for the session up to `timeout` (not at all unless `wait`),
    /// then wakes the writer.
    fn queue<T>(
        &self,
        timeout: Duration,
        wait: bool,
        mut attempt: impl FnMut(&mut State) -> Result<T, Blocked>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            match attempt(&mut st) {
                Ok(queued) => {
                    self.wake_writer(st);
                    return Ok(queued);
                }
                Err(Blocked::Closed) => return Err(ClientError::Closed),
                Err(Blocked::Full) if !wait => return Err(ClientError::SendBufferFull),
                Err(blocked) => {
                    st = self.wait_until(st, deadline).ok_or_else(|| blocked.timeout(timeout))?;
                }
            }
        }
    }

    fn publish(&self, p: &Publication<'_>, wait: bool) -> Result<(), ClientError> {
        self.lock().check_pub(p)?;
        self.queue(self.options.send_timeout, wait, |st| st.try_queue_pub(p))
    }

    /// Registers a subscription of the kind `kind` makes (once per attempt,
    /// since a full send buffer may take several) and queues its `SUB`.
    fn add_subscription(
        self: &Arc<Self>,
        (topic, queue_group): (&str, Option<&str>),
        lossy: bool,
        capacity: usize,
        kind: impl Fn() -> SubKind,
    ) -> Result<Subscription, ClientError> {
        let (tx, receiver) = mpsc::sync_channel(capacity.max(1));
        let (sid, counters) = self.queue(self.options.send_timeout, true, |st| {
            st.add_sub((topic, queue_group), lossy, kind(), Box::new(tx.clone()))
        })?;
        Ok(Subscription {
            sid,
            topic: topic.to_owned(),
            receiver,
            counters,
            shared: Arc::clone(self),
        })
    }

    /// Why inbox `sid` ended before its reply, if the broker said why.
    fn refusal(&self, sid: u32) -> Option<ClientError> {
        self.lock().take_refusal(sid)
    }

    /// Sends a `PING` (once the session is open and the send buffer has
    /// room) and waits for its `PONG`.
    fn ping(&self, timeout: Duration) -> Result<FlushEnd, ClientError> {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = mpsc::sync_channel::<FlushEnd>(1);
        let nonce = self.queue(timeout, true, |st| st.queue_ping(Box::new(tx.clone())))?;
        drop(tx);
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(end) => Ok(end),
            Err(RecvTimeoutError::Timeout) => {
                self.lock().cancel_ping(nonce);
                Err(ClientError::Timeout { after: timeout, waiting_for: "the broker's PONG" })
            }
            Err(RecvTimeoutError::Disconnected) => Ok(FlushEnd::Closed),
        }
    }

    fn unsubscribe(&self, sid: u32) {
        let mut st = self.lock();
        if st.remove_sub(sid) {
            self.wake_writer(st);
        }
    }

    fn begin_close(&self) {
        self.lock().begin_close(Instant::now());
        self.wake_all();
    }

    /// Stops reconnecting; `None`, for the reconnection loop to return.
    fn give_up<T>(&self, reason: String) -> Option<T> {
        self.lock().give_up(reason);
        self.wake_all();
        None
    }

    // ---- the writer thread ---------------------------------------------

    /// Blocks until the writer of `session` has something to do.
    fn next_batch(&self, session: u64, batch: &mut Vec<u8>) -> WriterStep {
        let mut st = self.lock();
        loop {
            match st.writer_step(session, batch) {
                WriterStep::Wait => {
                    st = self.to_writer.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                step => {
                    if step == WriterStep::Finish {
                        st.finish_close();
                    }
                    let waiting = st.callers_waiting() || step != WriterStep::Write;
                    drop(st);
                    if waiting {
                        self.to_callers.notify_all();
                    }
                    return step;
                }
            }
        }
    }

    // ---- the reader thread -------------------------------------------------

    fn read_frames(&self, decoder: &mut Decoder) -> state::ReadOutcome {
        let outcome = self.lock().read_frames(decoder);
        if outcome.wake_writer {
            self.to_writer.notify_all();
        }
        if outcome.goaway.is_some() {
            self.to_callers.notify_all();
        }
        outcome
    }

    fn probe(&self) {
        if self.lock().probe() {
            self.to_writer.notify_all();
        }
    }

    fn connection_lost(&self, reason: DisconnectReason) {
        self.lock().connection_lost(reason);
        self.wake_all();
    }

    /// Sleeps for `delay` unless the client closes first; false if it did.
    fn sleep_unless_closed(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut st = self.lock();
        while st.link() != Link::Closed {
            match self.wait_until(st, deadline) {
                Some(next) => st = next,
                None => return true,
            }
        }
        false
    }

    fn reconnected(&self, conn: Conn, attempts: u32) -> Option<Conn> {
        if !self.lock().reconnected(conn.info.clone(), attempts) {
            let _ = conn.stream.shutdown(Shutdown::Both);
            return None;
        }
        self.wake_all();
        Some(conn)
    }
}

/// The reader thread: one session after the other until the client closes.
fn run_reader(shared: &Arc<Shared>, mut conn: Conn) {
    loop {
        let session = shared.lock().session();
        let writer = spawn_writer(shared, &conn.stream, session);
        let reason = match writer {
            Ok(_) => read_session(shared, &mut conn),
            Err(ref e) => DisconnectReason::Io(format!("cannot start the writer thread: {e}")),
        };
        let _ = conn.stream.shutdown(Shutdown::Both);
        shared.connection_lost(reason);
        if let Ok(writer) = writer {
            let _ = writer.join();
        }
        match reconnect(shared) {
            Some(next) => conn = next,
            None => return,
        }
    }
}

fn spawn_writer(
    shared: &Arc<Shared>,
    stream: &Arc<Stream>,
    session: u64,
) -> io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let stream = Arc::clone(stream);
    thread::Builder::new()
        .name("corecast-writer".into())
        .spawn(move || write_loop(&shared, &stream, session))
}

/// The writer thread of one session. It closes the connection when it
/// stops, which ends the reader's session too.
fn write_loop(shared: &Shared, stream: &Stream, session: u64) {
    let mut batch = Vec::new();
    // The socket gives up a blocked write now and then, so that the writer
    // can tell whether to go on (see `State::writer_gives_up`).
    if stream.set_write_timeout(Some(WRITE_CHECK)).is_ok() {
        while shared.next_batch(session, &mut batch) == WriterStep::Write
            && write_batch(shared, stream, session, &batch)
        {
            state::recycle(&mut batch, shared.options.send_buffer);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Writes `batch`; false when the connection failed or was given up.
fn write_batch(shared: &Shared, mut stream: &Stream, session: u64, batch: &[u8]) -> bool {
    let mut sent = 0;
    while sent < batch.len() {
        match stream.write(&batch[sent..]) {
            Ok(0) => return false,
            Ok(n) => sent += n,
            Err(e) => {
                if !goes_on(shared, session, &e) {
                    return false;
                }
            }
        }
    }
    // TLS may still hold records of the batch; plain TCP holds nothing.
    loop {
        match stream.flush() {
            Ok(()) => return true,
            Err(e) => {
                if !goes_on(shared, session, &e) {
                    return false;
                }
            }
        }
    }
}

/// Whether the writer tries again after a write that failed with `e`.
fn goes_on(shared: &Shared, session: u64, e: &io::Error) -> bool {
    if is_timeout(e) {
        return !shared.lock().writer_gives_up(session, Instant::now());
    }
    e.kind() == io::ErrorKind::Interrupted
}

/// Reads one session until it ends; returns why it did.
fn read_session(shared: &Shared, conn: &mut Conn) -> DisconnectReason {
    let mut watch = Watch::new(conn.info.ping_interval_ms);
    loop {
        let timeout = watch.read_timeout(Instant::now());
        if let Err(e) = conn.stream.set_read_timeout(Some(timeout)) {
            return watch.on_error(&e);
        }
        match (&*conn.stream).read(conn.decoder.spare()) {
            Ok(0) => return watch.on_eof(),
            Ok(n) => {
                conn.decoder.filled(n);
                let outcome = shared.read_frames(&mut conn.decoder);
                if let Some(reason) = watch.on_read(&outcome, Instant::now()) {
                    return reason;
                }
            }
            Err(e) if is_timeout(&e) => match watch.on_silence(Instant::now()) {
                Silence::Wait => {}
                Silence::Probe => shared.probe(),
                Silence::End(reason) => return reason,
            },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return watch.on_error(&e),
        }
    }
}

/// Reconnects with backoff; `None` when the client closed or gave up.
fn reconnect(shared: &Shared) -> Option<Conn> {
    if shared.lock().link() == Link::Closed {
        return None;
    }
    let mut retry = Retry::new(shared.options.reconnect);
    loop {
        let delay = match retry.next_delay() {
            Ok(delay) => delay,
            Err(reason) => return shared.give_up(reason),
        };
        if !shared.sleep_unless_closed(delay) {
            return None;
        }
        match open(&shared.addr, &shared.options) {
            Ok(conn) => return shared.reconnected(conn, retry.attempts()),
            Err(e) => {
                if let Err(reason) = Retry::failed(&e) {
                    return shared.give_up(reason);
                }
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Connects and completes the handshake within the connect timeout.
/// Asks for protocol 1.1 if `options` say so, and connects again as a
/// version 1 client when a version 1 broker refuses that.
fn open(addr: &str, options: &Options) -> Result<Conn, ClientError> {
    let mut handshake = Handshake::new(addr, options, Instant::now());
    loop {
        match open_once(&mut handshake, options) {
            Err(e) if handshake.falls_back(&e, options) => continue,
            opened => return opened,
        }
    }
}

/// One connection and handshake, as `handshake` says: TCP, then TLS if
/// `options` ask for it, then `HELLO` and `WELCOME`.
fn open_once(handshake: &mut Handshake<'_>, options: &Options) -> Result<Conn, ClientError> {
    let tcp = connect_tcp(handshake)?;
    tcp.set_nodelay(true)?;
    let stream = match &options.tls_loaded {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let name = tls.server_name(handshake.addr())?;
            let conn = rustls::ClientConnection::new(Arc::clone(&tls.config), name)
                .map_err(|e| ClientError::TlsConfig(e.to_string()))?;
            let left = handshake.time_left(Instant::now())?;
            tcp.set_read_timeout(Some(left))?;
            tcp.set_write_timeout(Some(left))?;
            let stream = TlsStream::handshake(tcp, conn).map_err(|e| {
                crate::tls::handshake_error(handshake.addr(), &e).unwrap_or_else(|| {
                    if is_timeout(&e) {
                        handshake.timed_out()
                    } else {
                        handshake.failed(e)
                    }
                })
            })?;
            Stream::Tls(Box::new(stream))
        }
    };
    stream.set_write_timeout(Some(handshake.time_left(Instant::now())?))?;
    let mut writer = &stream;
    let wrote = writer.write_all(handshake.hello()).and_then(|()| writer.flush());
    handshake.hello_written(wrote);
    stream.set_write_timeout(None)?;
    loop {
        stream.set_read_timeout(Some(handshake.time_left(Instant::now())?))?;
        let read = (&stream).read(handshake.spare());
        // In TLS 1.3 a broker refuses the client's certificate after the
        // client finished its handshake: the refusal is the first read.
        if let Some(refused) =
            read.as_ref().err().and_then(|e| crate::tls::handshake_error(handshake.addr(), e))
        {
            return Err(refused);
        }
        if let Some(info) = handshake.on_read(read)? {
            let decoder = handshake.take_decoder();
            return Ok(Conn { stream: Arc::new(stream), decoder, info });
        }
    }
}

/// Connects to the first of the broker's addresses (what its `host:port`
/// resolves to) that answers within the time `handshake` has left.
fn connect_tcp(handshake: &Handshake<'_>) -> Result<TcpStream, ClientError> {
    let candidates: Vec<SocketAddr> =
        handshake.addr().to_socket_addrs().map_err(|e| handshake.failed(e))?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, handshake.time_left(Instant::now())?) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    match last.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Err(handshake.timed_out()),
        _ => Err(handshake.failed(last)),
    }
}

/// A subscription: a bounded queue of the messages published to its topic.
///
/// Dropping it unsubscribes. When the application does not take messages
/// as fast as they come, the queue fills up to its capacity
/// ([`Options::subscription_capacity`] or [`SubscribeOptions::capacity`])
/// and further messages are dropped and counted ([`Subscription::dropped`],
/// [`Event::Dropped`]); the connection itself is never held up.
///
/// Its messages end when the client closes, and also when the broker
/// refuses it again after a reconnection (a lower subscription limit, say;
/// reported as [`Event::ServerError`]).
#[derive(Debug)]
pub struct Subscription {
    sid: u32,
    topic: String,
    receiver: Receiver<Message>,
    counters: Arc<SubCounters>,
    shared: Arc<Shared>,
}

impl Subscription {
    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The subscription id on the wire.
    pub fn sid(&self) -> u32 {
        self.sid
    }

    /// Messages lost so far: dropped by this client because the queue was
    /// full, or by the broker on a lossy subscription.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped()
    }

    /// The next message, waiting as long as it takes.
    ///
    /// # Errors
    /// [`ClientError::Closed`] once the client is closed and the queue is
    /// empty.
    pub fn recv(&self) -> Result<Message, ClientError> {
        self.receiver.recv().map_err(|_| ClientError::Closed)
    }

    /// The next message, waiting up to `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    /// [`ClientError::Closed`] once the client is closed and the queue is
    /// empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        match self.receiver.recv_timeout(timeout) {
            Ok(msg) => Ok(Some(msg)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// The next message if one is queued.
    ///
    /// # Errors
    /// [`ClientError::Closed`] once the client is closed and the queue is
    /// empty.
    pub fn try_recv(&self) -> Result<Option<Message>, ClientError> {
        match self.receiver.try_recv() {
            Ok(msg) => Ok(Some(msg)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(ClientError::Closed),
        }
    }

    /// Messages as they come, until the client closes.
    pub fn iter(&self) -> Iter<'_> {
        Iter { sub: self }
    }

    /// Unsubscribes now; the same as dropping the subscription.
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.sid);
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = Message;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The messages of a [`Subscription`], blocking for each, until the client
/// closes.
#[derive(Debug)]
pub struct Iter<'a> {
    sub: &'a Subscription,
}

impl Iterator for Iter<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.sub.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::{released, Behaviour, FakeBroker};

    fn options() -> Options {
        Options::new().flush_timeout(Duration::from_millis(200))
    }

    #[test]
    fn dropping_the_client_ends_its_threads() {
        let fake = FakeBroker::start(Behaviour::Answer);
        let client = Client::connect_with(fake.addr, options()).unwrap();
        let sub = client.subscribe("a.topic").unwrap();
        client.publish("a.topic", "x").unwrap();
        client.flush().unwrap();
        let shared = Arc::downgrade(client.shared());
        drop((client, sub));
        assert!(released(&shared), "a thread still holds the connection");
    }

    #[test]
    fn a_client_whose_broker_stopped_reading_ends_its_threads_after_the_linger() {
        let fake = FakeBroker::start(Behaviour::Stuck);
        let client = Client::connect_with(fake.addr, options()).unwrap();
        // More than the socket buffers take: the writer stays in its write.
        client.publish("a.topic", vec![0u8; 32 << 20]).unwrap();
        let shared = Arc::downgrade(client.shared());
        let started = Instant::now();
        assert!(matches!(client.close(), Err(ClientError::Timeout { .. })));
        drop(client);
        assert!(released(&shared), "a thread still holds the connection");
        let took = started.elapsed();
        assert!(took < CLOSE_LINGER + Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn flushes_that_time_out_leave_no_waiter_behind() {
        let fake = FakeBroker::start(Behaviour::Stuck);
        let client = Client::connect_with(fake.addr, options()).unwrap();
        for _ in 0..50 {
            let err = client.flush_timeout(Duration::from_millis(1)).unwrap_err();
            assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        }
        assert_eq!(client.shared().lock().pending_flushes(), 0);
    }
}
