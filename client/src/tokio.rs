//! The async client, on tokio (feature `tokio`).
//!
//! Each client runs a **driver** task that reads what the broker sends,
//! answers its `PING`s, hands messages to subscriptions, wakes flushes and
//! reconnects when the connection is lost, and a **writer** task per
//! connection that sends the send buffer, one `write_all` for everything
//! queued. Subscriptions are [`Stream`]s. It needs a tokio runtime with
//! the `net`, `time`, `sync` and `rt` features, current-thread or
//! multi-thread.
//!
//! ```no_run
//! use std::time::Duration;
//! use corecast_client::tokio::Client;
//!
//! # async fn run() -> Result<(), corecast_client::ClientError> {
//! let client = Client::connect("127.0.0.1:7400").await?;
//! let mut orders = client.subscribe("orders.eu").await?;
//! client.publish("orders.eu", "order 1").await?;
//! if let Some(msg) = orders.recv().await {
//!     println!("{}: {:?}", msg.topic, msg.payload);
//! }
//! # Ok(())
//! # }
//! ```

use std::{
    io,
    pin::{pin, Pin},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use ::tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot, Notify},
    time::{timeout, timeout_at, Instant},
};
use corecast_proto::Pub;
use futures_core::Stream;

use super::{
    decoder::Decoder,
    session::{Handshake, Retry, Silence, Watch},
    state::{
        self, Blocked, FlushEnd, Link, Publication, State, SubCounters, SubKind, WriterStep,
        CLOSE_LINGER, WRITE_CHECK,
    },
    tokio_stream::{ReadHalf, Stream as Connection, WriteHalf},
    ClientError, DisconnectReason, Event, HeaderBlock, Message, Options, ServerInfo, Stats,
    SubscribeOptions,
};

/// A connection to a corecast broker. Cloning it is cheap and gives another
/// handle on the same connection; the connection closes when the last
/// handle is dropped (what is buffered is still sent) or on
/// [`Client::close`].
///
/// The background tasks end with the connection: when the client is
/// closed or dropped they send what is buffered (while the runtime runs),
/// for 2 s at most, then close the connection and end. A program that is
/// about to exit awaits [`Client::close`] (or [`Client::flush`]) first, so
/// that nothing buffered is lost with the process.
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

/// What the application's tasks, the driver and the writer share.
#[derive(Debug)]
struct Shared {
    addr: String,
    options: Options,
    state: Mutex<State>,
    /// Wakes the writer (one at a time; a wake-up is never lost).
    to_writer: Notify,
    /// Wakes waiting callers: room in the send buffer, or the link changed.
    to_callers: Notify,
    events: ::tokio::sync::Mutex<mpsc::Receiver<Event>>,
    /// Subscribes one at a time, so that a refusal is tied to the right one.
    subscribe_serial: ::tokio::sync::Mutex<()>,
}

/// One open connection, handshake done.
#[derive(Debug)]
struct Conn {
    stream: Connection,
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
    pub async fn connect(addr: impl ToString) -> Result<Self, ClientError> {
        Self::connect_with(addr, Options::default()).await
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
    pub async fn connect_with(
        addr: impl ToString,
        mut options: Options,
    ) -> Result<Self, ClientError> {
        options.prepare()?;
        let addr = addr.to_string();
        let conn = open(&addr, &options).await?;
        let (events_tx, events_rx) = mpsc::channel(options.event_capacity);
        let state = State::new(conn.info.clone(), options.send_buffer, Box::new(events_tx));
        let shared = Arc::new(Shared {
            addr,
            options,
            state: Mutex::new(state),
            to_writer: Notify::new(),
            to_callers: Notify::new(),
            events: ::tokio::sync::Mutex::new(events_rx),
            subscribe_serial: ::tokio::sync::Mutex::new(()),
        });
        ::tokio::spawn(drive(Arc::clone(&shared), conn));
        Ok(Self { handle: Arc::new(Handle { shared }) })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Publishes `payload` to `topic`.
    ///
    /// Completes once the frame is in the send buffer; the writer sends it
    /// at once, together with whatever else is queued by then. Waits up to
    /// [`Options::send_timeout`] while the buffer is full.
    ///
    /// # Errors
    /// [`ClientError::InvalidTopic`] for a topic that breaks the rules, is a
    /// wildcard or starts with `$`; [`ClientError::PayloadTooLarge`];
    /// [`ClientError::Timeout`] when the buffer stayed full;
    /// [`ClientError::Closed`].
    pub async fn publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.shared().publish(&Pub { topic, reply_to: "", payload: payload.as_ref() }.into()).await
    }

    /// Publishes `payload` to `topic`, asking for answers on `reply_to`.
    ///
    /// # Errors
    /// As [`Client::publish`]; `reply_to` follows the same rules as `topic`.
    pub async fn publish_with_reply(
        &self,
        topic: &str,
        reply_to: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        self.shared().publish(&Pub { topic, reply_to, payload: payload.as_ref() }.into()).await
    }

    /// Publishes `payload` to `topic` with `headers` (`HPUB`). Subscribers
    /// in 1.1 sessions receive them in [`Message::headers`]; those in
    /// version 1 sessions receive the message without them.
    ///
    /// # Errors
    /// As [`Client::publish`]; [`ClientError::Unsupported`] when the
    /// session is a version 1 session ([`ServerInfo::v1_1`]).
    pub async fn publish_with_headers(
        &self,
        topic: &str,
        headers: &HeaderBlock,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        let publish = Pub { topic, reply_to: "", payload: payload.as_ref() };
        let p = Publication { publish, headers: Some(headers.headers()), request: false };
        self.shared().publish(&p).await
    }

    /// Publishes without waiting: fails with [`ClientError::SendBufferFull`]
    /// when the send buffer has no room.
    ///
    /// # Errors
    /// As [`Client::publish`], with [`ClientError::SendBufferFull`] instead
    /// of waiting.
    pub fn try_publish(&self, topic: &str, payload: impl AsRef<[u8]>) -> Result<(), ClientError> {
        self.shared().try_publish(&Pub { topic, reply_to: "", payload: payload.as_ref() }.into())
    }

    /// Answers `request` by publishing `payload` to its reply-to.
    ///
    /// # Errors
    /// [`ClientError::NoReplyTo`] when the request has none; otherwise as
    /// [`Client::publish`].
    pub async fn respond(
        &self,
        request: &Message,
        payload: impl AsRef<[u8]>,
    ) -> Result<(), ClientError> {
        let reply_to = request.reply_to.as_deref().ok_or(ClientError::NoReplyTo)?;
        self.publish(reply_to, payload).await
    }

    /// Subscribes to `topic` with the default [`SubscribeOptions`].
    ///
    /// Completes once the broker has registered the subscription on every
    /// core: any message published after that reaches it.
    ///
    /// # Errors
    /// [`ClientError::InvalidTopic`]; [`ClientError::Server`] when the broker
    /// refuses (a wildcard topic, too many subscriptions);
    /// [`ClientError::Timeout`] after [`Options::flush_timeout`];
    /// [`ClientError::Closed`].
    pub async fn subscribe(&self, topic: &str) -> Result<Subscription, ClientError> {
        self.subscribe_with(topic, SubscribeOptions::default()).await
    }

    /// Subscribes to `topic` as `options` say (lossy, queue capacity; a
    /// capacity of 0 is taken as 1).
    ///
    /// # Errors
    /// As [`Client::subscribe`]; [`ClientError::Timeout`] also when the send
    /// buffer stayed full for [`Options::send_timeout`].
    pub async fn subscribe_with(
        &self,
        topic: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        self.subscribe_as((topic, None), options).await
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
    pub async fn queue_subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Subscription, ClientError> {
        self.queue_subscribe_with(topic, group, SubscribeOptions::default()).await
    }

    /// [`Client::queue_subscribe`] with `options` (lossy, queue capacity).
    ///
    /// # Errors
    /// As [`Client::queue_subscribe`].
    pub async fn queue_subscribe_with(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        state::check_queue_group(group)?;
        self.subscribe_as((topic, Some(group)), options).await
    }

    /// Subscribes to `topic`, in queue group `queue_group` if given, and
    /// waits for the broker's answer.
    async fn subscribe_as(
        &self,
        (topic, queue_group): (&str, Option<&str>),
        options: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        state::check_subscribe_topic(topic)?;
        let shared = self.shared();
        let _serial = shared.subscribe_serial.lock().await;
        let capacity = options.capacity.unwrap_or(shared.options.subscription_capacity);
        let (answer_tx, mut answer) = mpsc::channel(1);
        let sub = shared
            .add_subscription((topic, queue_group), options.lossy, capacity, || {
                SubKind::Subscription(Box::new(answer_tx.clone()))
            })
            .await?;
        drop(answer_tx);
        let timeout = shared.options.flush_timeout;
        let answer = ::tokio::time::timeout(timeout, answer.recv()).await;
        state::subscribed(answer.map_err(|_| state::unanswered(timeout))?)?;
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
    pub async fn flush(&self) -> Result<(), ClientError> {
        self.flush_timeout(self.shared().options.flush_timeout).await
    }

    /// [`Client::flush`] with its own timeout.
    ///
    /// # Errors
    /// As [`Client::flush`].
    pub async fn flush_timeout(&self, timeout: Duration) -> Result<(), ClientError> {
        self.shared().ping(timeout).await?.into_result()
    }

    /// Sends `payload` to `topic` with a fresh inbox as reply-to and waits
    /// up to `timeout` for the first answer. The inbox is unsubscribed when
    /// this completes or is dropped.
    ///
    /// # Errors
    /// [`ClientError::NoResponders`] at once when the broker says that no
    /// subscription would receive the request (protocol 1.1 sessions; in a
    /// version 1 session the request times out instead);
    /// [`ClientError::Timeout`] when nobody answered in time;
    /// [`ClientError::Server`] when the broker refused the inbox
    /// subscription (too many subscriptions); otherwise as
    /// [`Client::publish`].
    pub async fn request(
        &self,
        topic: &str,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Message, ClientError> {
        let shared = self.shared();
        state::check_publish_target("topic", topic)?;
        let inbox = shared.lock().next_inbox();
        let mut replies =
            shared.add_subscription((&inbox, None), false, 1, || SubKind::Inbox).await?;
        shared
            .publish(&Publication {
                publish: Pub { topic, reply_to: &inbox, payload: payload.as_ref() },
                headers: None,
                request: true,
            })
            .await?;
        match ::tokio::time::timeout(timeout, replies.recv()).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(shared.refusal(replies.sid).unwrap_or(ClientError::Closed)),
            Err(_) => Err(ClientError::Timeout { after: timeout, waiting_for: "a reply" }),
        }
    }

    /// The next event; `None` once the client is closed and every event was
    /// taken.
    pub async fn next_event(&self) -> Option<Event> {
        self.shared().events.lock().await.recv().await
    }

    /// The next event if one is queued (`None` also while another task
    /// waits in [`Client::next_event`]).
    pub fn try_next_event(&self) -> Option<Event> {
        self.shared().events.try_lock().ok()?.try_recv().ok()
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
    pub async fn close(&self) -> Result<(), ClientError> {
        let shared = self.shared();
        let flushed = match self.flush().await {
            Err(ClientError::Closed) => Ok(()),
            other => other,
        };
        shared.begin_close();
        // The writer gives up at the linger; the driver then ends at once.
        let deadline = Instant::now() + CLOSE_LINGER + Duration::from_secs(1);
        let _ =
            shared.wait_until(deadline, |st| Ok((st.link() == Link::Closed).then_some(()))).await;
        flushed
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `check` on the state until it gives a value, waking at every
    /// change; `Ok(None)` once `deadline` passed.
    async fn wait_until<T>(
        &self,
        deadline: Instant,
        mut check: impl FnMut(&mut State) -> Result<Option<T>, ClientError>,
    ) -> Result<Option<T>, ClientError> {
        loop {
            let mut notified = pin!(self.to_callers.notified());
            notified.as_mut().enable();
            let ready = {
                let mut st = self.lock();
                check(&mut st)?
            };
            if ready.is_some() {
                return Ok(ready);
            }
            if timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Wakes the writer if it waits for what `st` just queued.
    fn wake_writer(&self, mut st: MutexGuard<'_, State>) {
        let wake = st.wake_writer();
        drop(st);
        if wake {
            self.to_writer.notify_one();
        }
    }

    fn wake_all(&self) {
        self.to_writer.notify_one();
        self.to_callers.notify_waiters();
    }

    /// Runs `attempt` on the state until it queues something, waiting for
    /// room or for the session up to `timeout`, then wakes the writer.
    async fn queue<T>(
        &self,
        timeout: Duration,
        mut attempt: impl FnMut(&mut State) -> Result<T, Blocked>,
    ) -> Result<T, ClientError> {
        let mut blocked = Blocked::Full;
        let queued = self
            .wait_until(Instant::now() + timeout, |st| match attempt(st) {
                Ok(queued) => Ok(Some((queued, st.wake_writer()))),
                Err(Blocked::Closed) => Err(ClientError::Closed),
                Err(why) => {
                    blocked = why;
                    Ok(None)
                }
            })
            .await?;
        let (queued, wake) = queued.ok_or_else(|| blocked.timeout(timeout))?;
        if wake {
            self.to_writer.notify_one();
        }
        Ok(queued)
    }

    async fn publish(&self, p: &Publication<'_>) -> Result<(), ClientError> {
        self.lock().check_pub(p)?;
        self.queue(self.options.send_timeout, |st| st.try_queue_pub(p)).await
    }

    fn try_publish(&self, p: &Publication<'_>) -> Result<(), ClientError> {
        let mut st = self.lock();
        st.check_pub(p)?;
        match st.try_queue_pub(p) {
            Ok(()) => {
                self.wake_writer(st);
                Ok(())
            }
            Err(Blocked::Closed) => Err(ClientError::Closed),
            // Publications are buffered whatever the link: the buffer is full.
            Err(_) => Err(ClientError::SendBufferFull),
        }
    }

    /// Registers a subscription of the kind `kind` makes (once per attempt,
    /// since a full send buffer may take several) and queues its `SUB`.
    async fn add_subscription(
        self: &Arc<Self>,
        (topic, queue_group): (&str, Option<&str>),
        lossy: bool,
        capacity: usize,
        kind: impl Fn() -> SubKind,
    ) -> Result<Subscription, ClientError> {
        let (tx, receiver) = mpsc::channel(capacity.max(1));
        let (sid, counters) = self
            .queue(self.options.send_timeout, |st| {
                st.add_sub((topic, queue_group), lossy, kind(), Box::new(tx.clone()))
            })
            .await?;
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
    /// room) and waits for its `PONG`. Dropping the future forgets the
    /// `PING`.
    async fn ping(&self, timeout: Duration) -> Result<FlushEnd, ClientError> {
        let deadline = Instant::now() + timeout;
        let (tx, mut rx) = mpsc::channel::<FlushEnd>(1);
        let nonce = self.queue(timeout, |st| st.queue_ping(Box::new(tx.clone()))).await?;
        drop(tx);
        let _forget = ForgetPing { shared: self, nonce };
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(end)) => Ok(end),
            Ok(None) => Ok(FlushEnd::Closed),
            Err(_) => {
                Err(ClientError::Timeout { after: timeout, waiting_for: "the broker's PONG" })
            }
        }
    }

    fn unsubscribe(&self, sid: u32) {
        let mut st = self.lock();
        if st.remove_sub(sid) {
            self.wake_writer(st);
        }
    }

    fn begin_close(&self) {
        self.lock().begin_close(std::time::Instant::now());
        self.wake_all();
    }

    /// Stops reconnecting; `None`, for the reconnection loop to return.
    fn give_up<T>(&self, reason: String) -> Option<T> {
        self.lock().give_up(reason);
        self.wake_all();
        None
    }

    // ---- the writer task -----------------------------------------------

    /// Waits until the writer of `session` has something to do.
    async fn next_batch(&self, session: u64, batch: &mut Vec<u8>) -> WriterStep {
        loop {
            let notified = self.to_writer.notified();
            let step = {
                let mut st = self.lock();
                let step = st.writer_step(session, batch);
                if step == WriterStep::Finish {
                    st.finish_close();
                }
                step
            };
            if step != WriterStep::Wait {
                self.to_callers.notify_waiters();
                return step;
            }
            notified.await;
        }
    }

    // ---- the driver task ---------------------------------------------------

    fn read_frames(&self, decoder: &mut Decoder) -> state::ReadOutcome {
        let outcome = self.lock().read_frames(decoder);
        if outcome.wake_writer {
            self.to_writer.notify_one();
        }
        if outcome.goaway.is_some() {
            self.to_callers.notify_waiters();
        }
        outcome
    }

    fn probe(&self) {
        if self.lock().probe() {
            self.to_writer.notify_one();
        }
    }

    fn connection_lost(&self, reason: DisconnectReason) {
        self.lock().connection_lost(reason);
        self.wake_all();
    }

    /// Sleeps for `delay` unless the client closes first; false if it did.
    async fn sleep_unless_closed(&self, delay: Duration) -> bool {
        let closed = self
            .wait_until(Instant::now() + delay, |st| Ok((st.link() == Link::Closed).then_some(())))
            .await;
        !matches!(closed, Ok(Some(())))
    }

    fn reconnected(&self, conn: Conn, attempts: u32) -> Option<Conn> {
        if !self.lock().reconnected(conn.info.clone(), attempts) {
            return None;
        }
        self.wake_all();
        Some(conn)
    }
}

/// Forgets a flush's `PING` when its caller stops waiting (a timeout, or
/// the future dropped), so that its waiter does not stay behind.
struct ForgetPing<'a> {
    shared: &'a Shared,
    nonce: u64,
}

impl Drop for ForgetPing<'_> {
    fn drop(&mut self) {
        self.shared.lock().cancel_ping(self.nonce);
    }
}

/// The driver task: one session after the other until the client closes.
async fn drive(shared: Arc<Shared>, mut conn: Conn) {
    loop {
        let session = shared.lock().session();
        let (reader, writer) = conn.stream.into_split();
        let (stop_reader, stopped) = oneshot::channel();
        let writer = ::tokio::spawn(write_loop(Arc::clone(&shared), writer, session, stop_reader));
        let ping_interval = conn.info.ping_interval_ms;
        let reason = read_session(&shared, reader, &mut conn.decoder, ping_interval, stopped).await;
        shared.connection_lost(reason);
        writer.abort();
        let _ = writer.await;
        match reconnect(&shared).await {
            Some(next) => conn = next,
            None => return,
        }
    }
}

/// The writer task of one session. Sending on `stop_reader` (or dropping
/// it) ends the session's reading, with the reason sent.
async fn write_loop(
    shared: Arc<Shared>,
    mut writer: WriteHalf,
    session: u64,
    stop_reader: oneshot::Sender<DisconnectReason>,
) {
    let mut batch = Vec::new();
    let reason = loop {
        match shared.next_batch(session, &mut batch).await {
            WriterStep::Write => {
                if let Err(reason) = write_batch(&shared, &mut writer, session, &batch).await {
                    break reason;
                }
                state::recycle(&mut batch, shared.options.send_buffer);
            }
            WriterStep::Finish => {
                let _ = writer.shutdown().await;
                break DisconnectReason::Closed;
            }
            // `next_batch` waits out `Wait` itself: this is `Stop`.
            _ => break DisconnectReason::Closed,
        }
    };
    let _ = stop_reader.send(reason);
}

/// Writes `batch`, checking every [`WRITE_CHECK`] that the socket takes
/// nothing whether to give up (see `State::writer_gives_up`).
async fn write_batch(
    shared: &Shared,
    writer: &mut WriteHalf,
    session: u64,
    batch: &[u8],
) -> Result<(), DisconnectReason> {
    let mut sent = 0;
    while sent < batch.len() {
        // `write` is cancel safe: when the timeout wins, nothing was written.
        match timeout(WRITE_CHECK, writer.write(&batch[sent..])).await {
            Ok(Ok(0)) => return Err(DisconnectReason::Closed),
            Ok(Ok(n)) => sent += n,
            Ok(Err(e)) => return Err(DisconnectReason::Io(e.to_string())),
            Err(_) => gives_up(shared, session)?,
        }
    }
    // TLS may still hold records of the batch; plain TCP holds nothing.
    if !writer.holds_bytes() {
        return Ok(());
    }
    loop {
        match timeout(WRITE_CHECK, writer.flush()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => return Err(DisconnectReason::Io(e.to_string())),
            Err(_) => gives_up(shared, session)?,
        }
    }
}

/// A write took nothing for [`WRITE_CHECK`]: whether to give up.
fn gives_up(shared: &Shared, session: u64) -> Result<(), DisconnectReason> {
    if shared.lock().writer_gives_up(session, std::time::Instant::now()) {
        return Err(DisconnectReason::Closed);
    }
    Ok(())
}

/// Reads one session until it ends; returns why it did.
async fn read_session(
    shared: &Shared,
    mut reader: ReadHalf,
    decoder: &mut Decoder,
    ping_interval_ms: u32,
    mut stopped: oneshot::Receiver<DisconnectReason>,
) -> DisconnectReason {
    let mut watch = Watch::new(ping_interval_ms);
    loop {
        let wait = watch.read_timeout(std::time::Instant::now());
        let read = ::tokio::select! {
            biased;
            reason = &mut stopped => return reason.unwrap_or(DisconnectReason::Closed),
            read = timeout(wait, reader.read(decoder.spare())) => read,
        };
        match read {
            Err(_elapsed) => match watch.on_silence(std::time::Instant::now()) {
                Silence::Wait => {}
                Silence::Probe => shared.probe(),
                Silence::End(reason) => return reason,
            },
            Ok(Ok(0)) => return watch.on_eof(),
            Ok(Ok(n)) => {
                decoder.filled(n);
                let outcome = shared.read_frames(decoder);
                if let Some(reason) = watch.on_read(&outcome, std::time::Instant::now()) {
                    return reason;
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return watch.on_error(&e),
        }
    }
}

/// Reconnects with backoff; `None` when the client closed or gave up.
async fn reconnect(shared: &Shared) -> Option<Conn> {
    if shared.lock().link() == Link::Closed {
        return None;
    }
    let mut retry = Retry::new(shared.options.reconnect);
    loop {
        let delay = match retry.next_delay() {
            Ok(delay) => delay,
            Err(reason) => return shared.give_up(reason),
        };
        if !shared.sleep_unless_closed(delay).await {
            return None;
        }
        match open(&shared.addr, &shared.options).await {
            Ok(conn) => return shared.reconnected(conn, retry.attempts()),
            Err(e) => {
                if let Err(reason) = Retry::failed(&e) {
                    return shared.give_up(reason);
                }
            }
        }
    }
}

/// Connects and completes the handshake within the connect timeout. Asks
/// for protocol 1.1 if `options` say so, and connects again as a version 1
/// client when a version 1 broker refuses that.
async fn open(addr: &str, options: &Options) -> Result<Conn, ClientError> {
    let mut handshake = Handshake::new(addr, options, std::time::Instant::now());
    loop {
        match open_once(&mut handshake, options).await {
            Err(e) if handshake.falls_back(&e, options) => continue,
            opened => return opened,
        }
    }
}

/// One connection and handshake, as `handshake` says.
async fn open_once(handshake: &mut Handshake<'_>, options: &Options) -> Result<Conn, ClientError> {
    let limit = handshake.time_left(std::time::Instant::now())?;
    let opened = timeout(limit, connect(handshake, options)).await;
    let (stream, info) = opened.map_err(|_| handshake.timed_out())??;
    Ok(Conn { stream, decoder: handshake.take_decoder(), info })
}

/// Connects (TCP, then TLS if `options` ask for it) and completes the
/// handshake, however long it takes.
async fn connect(
    handshake: &mut Handshake<'_>,
    options: &Options,
) -> Result<(Connection, ServerInfo), ClientError> {
    let connected = TcpStream::connect(handshake.addr()).await;
    let tcp = connected.map_err(|e| handshake.failed(e))?;
    tcp.set_nodelay(true)?;
    let mut stream = match &options.tls_loaded {
        None => Connection::Plain(tcp),
        Some(tls) => {
            let name = tls.server_name(handshake.addr())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
            let stream = connector.connect(name, tcp).await.map_err(|e| {
                crate::tls::handshake_error(handshake.addr(), &e)
                    .unwrap_or_else(|| handshake.failed(e))
            })?;
            Connection::Tls(Box::new(stream))
        }
    };
    let wrote = async {
        stream.write_all(handshake.hello()).await?;
        stream.flush().await
    };
    let wrote = wrote.await;
    handshake.hello_written(wrote);
    loop {
        let read = stream.read(handshake.spare()).await;
        // In TLS 1.3 a broker refuses the client's certificate after the
        // client finished its handshake: the refusal is the first read.
        if let Some(refused) =
            read.as_ref().err().and_then(|e| crate::tls::handshake_error(handshake.addr(), e))
        {
            return Err(refused);
        }
        if let Some(info) = handshake.on_read(read)? {
            return Ok((stream, info));
        }
    }
}

/// A subscription: a bounded queue of the messages published to its topic,
/// and a [`Stream`] of them.
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
    receiver: mpsc::Receiver<Message>,
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

    /// The next message; `None` once the client is closed and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Message> {
        self.receiver.try_recv().ok()
    }

    /// Unsubscribes now; the same as dropping the subscription.
    pub fn unsubscribe(self) {}
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.unsubscribe(self.sid);
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

    /// Whether every task let go of `shared`, checked off the runtime.
    async fn released_async(shared: std::sync::Weak<Shared>) -> bool {
        ::tokio::task::spawn_blocking(move || released(&shared)).await.unwrap()
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_client_ends_its_tasks() {
        let fake = FakeBroker::start(Behaviour::Answer);
        let client = Client::connect_with(fake.addr, options()).await.unwrap();
        let sub = client.subscribe("a.topic").await.unwrap();
        client.publish("a.topic", "x").await.unwrap();
        client.flush().await.unwrap();
        let shared = Arc::downgrade(client.shared());
        drop((client, sub));
        assert!(released_async(shared).await, "a task still holds the connection");
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_whose_broker_stopped_reading_ends_its_tasks_after_the_linger() {
        let fake = FakeBroker::start(Behaviour::Stuck);
        let client = Client::connect_with(fake.addr, options()).await.unwrap();
        // More than the socket buffers take: the writer stays in its write.
        client.publish("a.topic", vec![0u8; 32 << 20]).await.unwrap();
        let shared = Arc::downgrade(client.shared());
        let started = Instant::now();
        assert!(matches!(client.close().await, Err(ClientError::Timeout { .. })));
        drop(client);
        assert!(released_async(shared).await, "a task still holds the connection");
        let took = started.elapsed();
        assert!(took < CLOSE_LINGER + Duration::from_secs(2), "{took:?}");
    }

    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_that_time_out_or_are_cancelled_leave_no_waiter_behind() {
        let fake = FakeBroker::start(Behaviour::Stuck);
        let client = Client::connect_with(fake.addr, options()).await.unwrap();
        for _ in 0..20 {
            let err = client.flush_timeout(Duration::from_millis(1)).await.unwrap_err();
            assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
            let cancelled = timeout(Duration::from_millis(1), client.flush()).await;
            assert!(cancelled.is_err());
        }
        assert_eq!(client.shared().lock().pending_flushes(), 0);
    }
}
