//! The connection state both clients share: send buffer, subscriptions
//! (and the `subscribe`s waiting for the broker's answer), flush waiters,
//! events and counters.
//!
//! Nothing here does I/O or waits. The blocking and the tokio client keep a
//! [`State`] behind a mutex, change it through these methods, and do the
//! reading, writing, sleeping and waking themselves.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use corecast_proto::{
    header::{HeaderBlock, Headers},
    topic::{self, TopicKind},
    ClientFrame, ClientFrame11, ErrorCode, HMsg, HPub, Msg, Pub, ServerFrame11, Sub, LEN_PREFIX,
};

use super::{
    decoder::Decoder, ClientError, DisconnectReason, DropSite, Event, Message, ServerError,
    ServerInfo, Stats, TopicProblem,
};

/// How long a closing client keeps trying to send what is buffered before
/// it drops the connection.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How often a writer whose socket takes nothing checks whether it should
/// give up (the client closed, or the session ended).
pub(crate) const WRITE_CHECK: Duration = Duration::from_millis(100);

/// Bytes of a `PING` frame.
fn ping_len() -> usize {
    ClientFrame::Ping { nonce: 0 }.encoded_len()
}

/// Where a reader hands things to the application without ever waiting:
/// a bounded queue's sending side.
pub(crate) trait Mailbox<T>: Send {
    /// Puts `item` in the queue if there is room.
    fn offer(&self, item: T) -> Offer;
}

/// What became of an offered item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// It is in the queue.
    Accepted,
    /// The queue is full; the item was dropped.
    Full,
    /// Nobody receives any more; the item was dropped.
    Gone,
}

impl<T: Send> Mailbox<T> for std::sync::mpsc::SyncSender<T> {
    fn offer(&self, item: T) -> Offer {
        match self.try_send(item) {
            Ok(()) => Offer::Accepted,
            Err(std::sync::mpsc::TrySendError::Full(_)) => Offer::Full,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Offer::Gone,
        }
    }
}

#[cfg(feature = "tokio")]
impl<T: Send> Mailbox<T> for ::tokio::sync::mpsc::Sender<T> {
    fn offer(&self, item: T) -> Offer {
        match self.try_send(item) {
            Ok(()) => Offer::Accepted,
            Err(::tokio::sync::mpsc::error::TrySendError::Full(_)) => Offer::Full,
            Err(::tokio::sync::mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
        }
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// The session is open: the writer sends.
    Up,
    /// `GOAWAY` arrived: nothing more is sent on this connection, which is
    /// read until the broker closes it.
    Draining,
    /// No connection; the reader is reconnecting.
    Down,
    /// The application let go of the client: what is buffered is sent, then
    /// the connection closes.
    Closing,
    /// For good.
    Closed,
}

/// Why a frame cannot be queued right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The client is closing or closed: it never will be.
    Closed,
    /// No session is open (reconnecting, or draining after `GOAWAY`).
    NotUp,
    /// The send buffer is full.
    Full,
}

impl Blocked {
    /// The error of a caller that waited `after` for this to change.
    pub(crate) fn timeout(self, after: Duration) -> ClientError {
        match self {
            Self::Closed => ClientError::Closed,
            Self::NotUp => {
                ClientError::Timeout { after, waiting_for: "the connection to come back" }
            }
            Self::Full => ClientError::Timeout { after, waiting_for: "room in the send buffer" },
        }
    }
}

/// How a flush ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushEnd {
    /// The `PONG` arrived.
    Pong,
    /// The connection was lost first.
    Lost,
    /// The client closed first.
    Closed,
}

impl FlushEnd {
    /// The outcome of `flush`.
    pub(crate) fn into_result(self) -> Result<(), ClientError> {
        match self {
            Self::Pong => Ok(()),
            Self::Lost => Err(ClientError::ConnectionLost),
            Self::Closed => Err(ClientError::Closed),
        }
    }
}

/// The outcome of a `subscribe` whose wait for the broker's answer to its
/// `SUB` got `answer`: `None` when the mailbox closed unanswered, which
/// only the client's closing does.
pub(crate) fn subscribed(answer: Option<SubAnswer>) -> Result<(), ClientError> {
    match answer {
        Some(Ok(())) => Ok(()),
        Some(Err(refusal)) => Err(ClientError::Server(refusal)),
        None => Err(ClientError::Closed),
    }
}

/// The error of a `subscribe` that waited `after` for the broker's answer
/// to its `SUB` in vain.
pub(crate) fn unanswered(after: Duration) -> ClientError {
    ClientError::Timeout { after, waiting_for: "the broker's answer to SUB" }
}

/// What the writer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriterStep {
    /// A batch was taken: write it.
    Write,
    /// Nothing to send yet: wait to be woken.
    Wait,
    /// The client is closing and everything is sent: close the connection.
    Finish,
    /// This writer's session is over: close its connection and stop.
    Stop,
}

/// A publication as the application asks for it; [`State`] makes the frame
/// the session can take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publication<'a> {
    /// Topic, reply-to and payload.
    pub publish: Pub<'a>,
    /// Headers to send with `HPUB` (protocol 1.1 only).
    pub headers: Option<Headers<'a>>,
    /// A request, to be answered with `NO_RESPONDERS` when nobody would
    /// receive it; in a version 1 session it is a plain publication.
    pub request: bool,
}

impl<'a> From<Pub<'a>> for Publication<'a> {
    fn from(publish: Pub<'a>) -> Self {
        Self { publish, headers: None, request: false }
    }
}

impl<'a> Publication<'a> {
    /// The frame of this publication in a session of protocol 1.1 if
    /// `v1_1`, else version 1.
    ///
    /// # Errors
    /// [`ClientError::Unsupported`] for headers in a version 1 session.
    fn frame(&self, v1_1: bool) -> Result<ClientFrame11<'a>, ClientError> {
        let Pub { topic, reply_to, payload } = self.publish;
        let request = self.request && v1_1;
        match self.headers {
            Some(_) if !v1_1 => Err(ClientError::Unsupported("headers")),
            Some(headers) => {
                Ok(ClientFrame11::HPub(HPub { topic, reply_to, headers, payload, request }))
            }
            None => Ok(ClientFrame11::Pub { publish: self.publish, request }),
        }
    }

    /// The publication a queued frame carries, if it is one.
    fn queued(frame: ClientFrame11<'a>) -> Option<Self> {
        match frame {
            ClientFrame11::Pub { publish, request } => {
                Some(Self { publish, headers: None, request })
            }
            ClientFrame11::HPub(h) => Some(Self {
                publish: Pub { topic: h.topic, reply_to: h.reply_to, payload: h.payload },
                headers: Some(h.headers),
                request: h.request,
            }),
            _ => None,
        }
    }
}

/// How the inbox of a request ended before its reply.
#[derive(Debug, Clone)]
enum InboxEnd {
    /// The broker refused its `SUB`.
    Refused(ServerError),
    /// The broker said that nobody would receive the request.
    NoResponders(String),
}

impl From<InboxEnd> for ClientError {
    fn from(end: InboxEnd) -> Self {
        match end {
            InboxEnd::Refused(e) => ClientError::Server(e),
            InboxEnd::NoResponders(topic) => ClientError::NoResponders { topic },
        }
    }
}

/// What the frames of one read asked of the reader.
#[derive(Debug, Default)]
pub(crate) struct ReadOutcome {
    /// Frames were queued (a `PONG`): wake the writer.
    pub wake_writer: bool,
    /// `GOAWAY` arrived, with its grace period in ms.
    pub goaway: Option<u32>,
    /// A fatal `ERR` arrived; the broker closes next.
    pub fatal: Option<ServerError>,
    /// The bytes were not valid frames; the connection must be dropped.
    pub protocol: Option<String>,
}

/// Drop counts of one subscription, shared with its handle.
#[derive(Debug, Default)]
pub(crate) struct SubCounters {
    by_client: AtomicU64,
    by_broker: AtomicU64,
}

impl SubCounters {
    /// Messages lost so far, by the client and by the broker.
    pub(crate) fn dropped(&self) -> u64 {
        self.by_client.load(Relaxed) + self.by_broker.load(Relaxed)
    }
}

/// The broker's answer to a `SUB`: accepted, or refused with this `ERR`.
pub(crate) type SubAnswer = Result<(), ServerError>;

/// What a subscription is for.
pub(crate) enum SubKind {
    /// Made by `subscribe`, which waits on this mailbox for the broker's
    /// answer to its `SUB`, across reconnections. A mailbox dropped
    /// unanswered means that the client closed.
    Subscription(Box<dyn Mailbox<SubAnswer>>),
    /// The inbox of one request: a refusal is kept for the request
    /// ([`State::take_refusal`]), and local drops are counted but not
    /// reported, since only the first answer matters.
    Inbox,
}

/// A subscription as the reader sees it.
struct SubEntry {
    topic: String,
    /// The queue group it is a member of, if any.
    queue_group: Option<String>,
    lossy: bool,
    /// The inbox of a request ([`SubKind::Inbox`]).
    inbox: bool,
    /// Where `subscribe` waits for the broker's answer to the `SUB`, until
    /// it is given.
    answer: Option<Box<dyn Mailbox<SubAnswer>>>,
    queue: Box<dyn Mailbox<Message>>,
    counters: Arc<SubCounters>,
    /// Local drops not yet reported in an event.
    unreported: u64,
}

/// A `SUB` whose refusal may still arrive: a refusal comes before the
/// `PONG` of any `PING` sent after the `SUB`, so the `PONG` of a `PING`
/// with a nonce of at least `settled_by` settles it.
#[derive(Debug, Clone, Copy)]
struct PendingSub {
    sid: u32,
    settled_by: u64,
}

/// Everything a connection keeps between reads and writes.
pub(crate) struct State {
    link: Link,
    /// Encoded client frames not yet handed to the writer.
    out: Vec<u8>,
    send_buffer: usize,
    subs: BTreeMap<u32, SubEntry>,
    /// `SUB`s of this session that the broker may still refuse, oldest
    /// first. The broker does not say which frame an `ERR` refuses, and it
    /// may answer a `PING` only after refusing frames sent after it (its
    /// `PONG` waits for every core), so a refusal is tied to a `SUB` only
    /// when a single one is pending.
    pending_subs: VecDeque<PendingSub>,
    /// Ends of inboxes whose request has yet to learn of them.
    refusals: HashMap<u32, InboxEnd>,
    /// Flushes waiting for their `PONG`, by nonce.
    pongs: HashMap<u64, Box<dyn Mailbox<FlushEnd>>>,
    /// `None` once the client is closed, so that the application's side
    /// sees the end of the events.
    events: Option<Box<dyn Mailbox<Event>>>,
    info: ServerInfo,
    session: u64,
    next_sid: u32,
    next_nonce: u64,
    inbox_prefix: String,
    next_inbox: u64,
    stats: Stats,
    /// When a closing client stops waiting for its buffer to be sent.
    close_deadline: Option<Instant>,
    /// The writer is waiting to be woken (and has not been yet).
    writer_idle: bool,
    /// Callers waiting for room or for the link (blocking client).
    #[cfg(feature = "blocking")]
    callers_waiting: usize,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("link", &self.link)
            .field("session", &self.session)
            .field("buffered", &self.out.len())
            .field("subscriptions", &self.subs.len())
            .field("flushes", &self.pongs.len())
            .finish_non_exhaustive()
    }
}

impl State {
    /// The state of a client whose first session just opened with `info`.
    pub(crate) fn new(
        info: ServerInfo,
        send_buffer: usize,
        events: Box<dyn Mailbox<Event>>,
    ) -> Self {
        Self {
            link: Link::Up,
            out: Vec::new(),
            send_buffer,
            subs: BTreeMap::new(),
            pending_subs: VecDeque::new(),
            refusals: HashMap::new(),
            pongs: HashMap::new(),
            events: Some(events),
            info,
            session: 1,
            next_sid: 1,
            next_nonce: 1,
            inbox_prefix: super::new_inbox_prefix(),
            next_inbox: 1,
            stats: Stats::default(),
            close_deadline: None,
            writer_idle: false,
            #[cfg(feature = "blocking")]
            callers_waiting: 0,
        }
    }

    /// Where the connection stands.
    pub(crate) fn link(&self) -> Link {
        self.link
    }

    /// The current session's number; it changes with every connection.
    pub(crate) fn session(&self) -> u64 {
        self.session
    }

    /// The latest `WELCOME`.
    pub(crate) fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The counters, with the current send buffer fill.
    pub(crate) fn stats(&self) -> Stats {
        Stats { buffered_bytes: self.out.len() as u64, ..self.stats }
    }

    /// Flushes waiting for their `PONG`.
    #[cfg(test)]
    pub(crate) fn pending_flushes(&self) -> usize {
        self.pongs.len()
    }

    /// Whether the writer waits and must be woken for what was just queued.
    /// Answers `true` once per wait, so that a burst of publications costs
    /// one wake-up, not one each.
    pub(crate) fn wake_writer(&mut self) -> bool {
        std::mem::take(&mut self.writer_idle)
    }

    /// Whether operations are refused because the client is closing.
    fn is_closed(&self) -> bool {
        matches!(self.link, Link::Closing | Link::Closed)
    }

    /// Whether the application may queue `len` more bytes: the send buffer
    /// takes frames up to its size, and any one frame when it is empty.
    fn has_room(&self, len: usize) -> bool {
        self.out.is_empty() || self.out.len() + len <= self.send_buffer
    }

    fn push(&mut self, frame: &ClientFrame<'_>) {
        frame.encode(&mut self.out);
    }

    fn push11(&mut self, frame: &ClientFrame11<'_>) {
        frame.encode(&mut self.out);
    }

    /// Queues a `SUB` and remembers it until the broker has had its say.
    fn push_sub(&mut self, sid: u32, topic: &str, queue_group: Option<&str>, lossy: bool) {
        let queue_group = queue_group.unwrap_or("");
        self.push(&ClientFrame::Sub(Sub { sid, topic, queue_group, lossy }));
        self.pending_subs.push_back(PendingSub { sid, settled_by: self.next_nonce });
    }

    // ---- what the application asks -------------------------------------

    /// Checks a publication before it is queued: its topic and reply-to,
    /// and that it fits one frame of the broker's `max_frame`.
    pub(crate) fn check_pub(&self, p: &Publication<'_>) -> Result<(), ClientError> {
        check_publish_target("topic", p.publish.topic)?;
        if !p.publish.reply_to.is_empty() {
            check_publish_target("reply-to", p.publish.reply_to)?;
        }
        self.check_size(p)
    }

    /// Checks that a publication fits one frame of the broker's
    /// `max_frame`, and that the session can carry it.
    fn check_size(&self, p: &Publication<'_>) -> Result<(), ClientError> {
        let max_frame = self.info.max_frame;
        let empty = Publication { publish: Pub { payload: &[], ..p.publish }, ..*p };
        let header = empty.frame(self.info.v1_1)?.encoded_len() - LEN_PREFIX;
        let max = (max_frame as usize).saturating_sub(header);
        let len = p.publish.payload.len();
        if len > max {
            return Err(ClientError::PayloadTooLarge { len, max, max_frame });
        }
        Ok(())
    }

    /// Queues a `PUB` or `HPUB` if the send buffer has room. It must have
    /// been checked ([`State::check_pub`]).
    pub(crate) fn try_queue_pub(&mut self, p: &Publication<'_>) -> Result<(), Blocked> {
        if self.is_closed() {
            return Err(Blocked::Closed);
        }
        // The session changed since the check, to one that cannot carry it.
        let Ok(frame) = p.frame(self.info.v1_1) else {
            self.drop_publication(p);
            return Ok(());
        };
        if !self.has_room(frame.encoded_len()) {
            return Err(Blocked::Full);
        }
        self.push11(&frame);
        self.stats.published += 1;
        Ok(())
    }

    /// Counts and reports a publication the session cannot take.
    fn drop_publication(&mut self, p: &Publication<'_>) {
        self.stats.dropped_publications += 1;
        let topic = p.publish.topic.to_owned();
        let (len, max_frame) = (p.publish.payload.len(), self.info.max_frame);
        self.emit(Event::PublicationDropped { topic, len, max_frame });
    }

    /// Registers a subscription (a member of `queue_group` if given) and
    /// queues its `SUB`, followed by a `PING` whose `PONG` tells that the
    /// broker accepted it (a refusal comes before), if the send buffer has
    /// room; returns its sid. The answer of a [`SubKind::Subscription`]
    /// goes to its mailbox.
    pub(crate) fn add_sub(
        &mut self,
        (topic, queue_group): (&str, Option<&str>),
        lossy: bool,
        kind: SubKind,
        queue: Box<dyn Mailbox<Message>>,
    ) -> Result<(u32, Arc<SubCounters>), Blocked> {
        if self.is_closed() {
            return Err(Blocked::Closed);
        }
        let sub =
            ClientFrame::Sub(Sub { sid: 0, topic, queue_group: queue_group.unwrap_or(""), lossy });
        if !self.has_room(sub.encoded_len() + ping_len()) {
            return Err(Blocked::Full);
        }
        let sid = self.fresh_sid();
        let counters = Arc::new(SubCounters::default());
        let (inbox, answer) = match kind {
            SubKind::Subscription(answer) => (false, Some(answer)),
            SubKind::Inbox => (true, None),
        };
        let entry = SubEntry {
            topic: topic.to_owned(),
            queue_group: queue_group.map(str::to_owned),
            lossy,
            inbox,
            answer,
            queue,
            counters: Arc::clone(&counters),
            unreported: 0,
        };
        self.subs.insert(sid, entry);
        self.push_sub(sid, topic, queue_group, lossy);
        // Without a session the `SUB` waits for the next one, which sends
        // it again with a `PING` of its own (`State::reconnected`).
        if self.link == Link::Up {
            self.queue_probe();
        }
        Ok((sid, counters))
    }

    fn fresh_sid(&mut self) -> u32 {
        loop {
            let sid = self.next_sid;
            self.next_sid = self.next_sid.wrapping_add(1).max(1);
            if !self.subs.contains_key(&sid) && !self.refusals.contains_key(&sid) {
                return sid;
            }
        }
    }

    /// Removes a subscription and queues its `UNSUB`. False if it was not
    /// there (already removed, refused, or the client closed).
    pub(crate) fn remove_sub(&mut self, sid: u32) -> bool {
        self.refusals.remove(&sid);
        if self.subs.remove(&sid).is_none() {
            return false;
        }
        if self.link != Link::Closed {
            self.push(&ClientFrame::Unsub { sid });
        }
        true
    }

    /// The broker's refusal of inbox `sid`, if it refused it.
    pub(crate) fn take_refusal(&mut self, sid: u32) -> Option<ClientError> {
        self.refusals.remove(&sid).map(ClientError::from)
    }

    /// Queues a `PING` whose `PONG` goes to `reply`; returns its nonce.
    /// Only while the session is open and the send buffer has room.
    pub(crate) fn queue_ping(&mut self, reply: Box<dyn Mailbox<FlushEnd>>) -> Result<u64, Blocked> {
        match self.link {
            Link::Up if self.has_room(ping_len()) => {}
            Link::Up => return Err(Blocked::Full),
            Link::Closing | Link::Closed => return Err(Blocked::Closed),
            Link::Draining | Link::Down => return Err(Blocked::NotUp),
        }
        let nonce = self.queue_probe();
        self.pongs.insert(nonce, reply);
        Ok(nonce)
    }

    /// Forgets the flush of `nonce`: its caller stopped waiting.
    pub(crate) fn cancel_ping(&mut self, nonce: u64) {
        self.pongs.remove(&nonce);
    }

    /// Queues a liveness probe if the link allows it (see
    /// [`State::owes_control`]); true if the writer must be woken for it.
    pub(crate) fn probe(&mut self) -> bool {
        if !self.owes_control() {
            return false;
        }
        self.queue_probe();
        self.wake_writer()
    }

    /// Whether the frames the client owes the broker (`PONG`, its liveness
    /// `PING`) are sent: while the session is open or closing.
    fn owes_control(&self) -> bool {
        matches!(self.link, Link::Up | Link::Closing)
    }

    /// Queues a `PING` nobody waits for; returns its nonce.
    fn queue_probe(&mut self) -> u64 {
        let nonce = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.push(&ClientFrame::Ping { nonce });
        nonce
    }

    /// A topic no other request of this client uses.
    pub(crate) fn next_inbox(&mut self) -> String {
        let n = self.next_inbox;
        self.next_inbox += 1;
        format!("{}.{n}", self.inbox_prefix)
    }

    // ---- the writer ------------------------------------------------------

    /// Decides the writer's next step; on [`WriterStep::Write`] the batch is
    /// in `batch` (which must be empty) and the send buffer is empty.
    pub(crate) fn writer_step(&mut self, session: u64, batch: &mut Vec<u8>) -> WriterStep {
        let step = self.next_writer_step(session, batch);
        self.writer_idle = step == WriterStep::Wait;
        step
    }

    fn next_writer_step(&mut self, session: u64, batch: &mut Vec<u8>) -> WriterStep {
        if session != self.session {
            return WriterStep::Stop;
        }
        match self.link {
            Link::Up | Link::Closing if !self.out.is_empty() => {
                std::mem::swap(&mut self.out, batch);
                self.stats.writes += 1;
                self.stats.bytes_written += batch.len() as u64;
                WriterStep::Write
            }
            Link::Closing => WriterStep::Finish,
            Link::Up | Link::Draining => WriterStep::Wait,
            Link::Down | Link::Closed => WriterStep::Stop,
        }
    }

    /// Whether the writer of `session`, whose socket took nothing for a
    /// while, should drop the connection: the session is over, or the
    /// client is closing and its linger has passed.
    pub(crate) fn writer_gives_up(&self, session: u64, now: Instant) -> bool {
        if session != self.session {
            return true;
        }
        match self.link {
            Link::Up | Link::Draining => false,
            Link::Closing => self.close_deadline.is_some_and(|deadline| now >= deadline),
            Link::Down | Link::Closed => true,
        }
    }

    // ---- the connection's life -------------------------------------------

    /// The application let go: close once the send buffer is written, or
    /// [`CLOSE_LINGER`] after `now` at the latest.
    pub(crate) fn begin_close(&mut self, now: Instant) {
        match self.link {
            Link::Up => {
                self.link = Link::Closing;
                self.close_deadline = Some(now + CLOSE_LINGER);
            }
            Link::Closing | Link::Closed => {}
            Link::Draining | Link::Down => self.finish_close(),
        }
    }

    /// Closed for good: subscriptions and events end, flushes fail, nothing
    /// is sent.
    pub(crate) fn finish_close(&mut self) {
        self.link = Link::Closed;
        self.subs.clear();
        self.pending_subs.clear();
        self.refusals.clear();
        self.out = Vec::new();
        for (_, waiter) in self.pongs.drain() {
            waiter.offer(FlushEnd::Closed);
        }
        self.events = None;
    }

    /// The client stops reconnecting, for `reason`.
    pub(crate) fn give_up(&mut self, reason: String) {
        if self.link != Link::Closed {
            self.emit(Event::Closed { reason });
        }
        self.finish_close();
    }

    /// The connection ended for `reason`.
    pub(crate) fn connection_lost(&mut self, reason: DisconnectReason) {
        match self.link {
            Link::Closed => {}
            Link::Closing => self.finish_close(),
            Link::Up | Link::Draining | Link::Down => {
                self.link = Link::Down;
                for (_, waiter) in self.pongs.drain() {
                    waiter.offer(FlushEnd::Lost);
                }
                self.emit(Event::Disconnected(reason));
            }
        }
    }

    /// A new session is open after `attempts` attempts. Queues the `SUB` of
    /// every subscription (and a `PING` to settle them), then the
    /// publications that were waiting. False when the client closed
    /// meanwhile.
    pub(crate) fn reconnected(&mut self, info: ServerInfo, attempts: u32) -> bool {
        if self.is_closed() {
            self.finish_close();
            return false;
        }
        self.link = Link::Up;
        self.session += 1;
        self.info = info.clone();
        self.stats.reconnects += 1;
        let waiting = std::mem::take(&mut self.out);
        self.resubscribe();
        self.emit(Event::Reconnected { attempts, info });
        self.requeue_publications(&waiting);
        true
    }

    fn resubscribe(&mut self) {
        self.pending_subs.clear();
        let subs: Vec<(u32, String, Option<String>, bool)> = self
            .subs
            .iter()
            .map(|(&sid, e)| (sid, e.topic.clone(), e.queue_group.clone(), e.lossy))
            .collect();
        for (sid, topic, queue_group, lossy) in &subs {
            self.push_sub(*sid, topic, queue_group.as_deref(), *lossy);
        }
        if !subs.is_empty() {
            self.queue_probe();
        }
    }

    /// Keeps the `PUB`s and `HPUB`s of frames queued for the previous
    /// session, as the new session takes them; its `SUB`s, `UNSUB`s,
    /// `PING`s and `PONG`s are stale. A publication too large for the new
    /// broker's `max_frame`, or with headers for a version 1 session, is
    /// dropped and reported.
    fn requeue_publications(&mut self, waiting: &[u8]) {
        let mut src = waiting;
        while let Ok(Some(frame)) = ClientFrame11::decode(&mut src, u32::MAX) {
            let Some(p) = Publication::queued(frame) else { continue };
            match p.frame(self.info.v1_1) {
                Ok(frame) if self.check_size(&p).is_ok() => self.push11(&frame),
                _ => self.drop_publication(&p),
            }
        }
    }

    // ---- the reader --------------------------------------------------------

    /// Applies every complete frame in `decoder`.
    pub(crate) fn read_frames(&mut self, decoder: &mut Decoder) -> ReadOutcome {
        let mut outcome = ReadOutcome::default();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => self.apply(frame, &mut outcome),
                Ok(None) => return outcome,
                Err(e) => {
                    outcome.protocol = Some(e.to_string());
                    return outcome;
                }
            }
            if outcome.protocol.is_some() {
                return outcome;
            }
        }
    }

    fn apply(&mut self, frame: ServerFrame11<'_>, outcome: &mut ReadOutcome) {
        match frame {
            ServerFrame11::Msg(m) => self.deliver(&without_headers(m)),
            ServerFrame11::HMsg(m) => self.deliver(&m),
            ServerFrame11::NoResponders { topic, reply_to } => {
                outcome.wake_writer |= self.no_responders(topic, reply_to) && self.wake_writer();
            }
            ServerFrame11::Ping { nonce } => {
                if self.owes_control() {
                    self.push(&ClientFrame::Pong { nonce });
                    outcome.wake_writer |= self.wake_writer();
                }
            }
            ServerFrame11::Pong { nonce } => self.pong(nonce),
            ServerFrame11::Dropped { sid, count } => self.broker_dropped(sid, count),
            ServerFrame11::Err(e) => {
                let err = ServerError { code: e.code, fatal: e.fatal, text: e.text.to_owned() };
                if err.fatal {
                    outcome.fatal = Some(err);
                } else {
                    let unsub = self.refused(err);
                    outcome.wake_writer |= unsub && self.wake_writer();
                }
            }
            ServerFrame11::GoAway { grace_ms, .. } => {
                if self.link == Link::Up {
                    self.link = Link::Draining;
                }
                outcome.goaway = Some(grace_ms);
                self.emit(Event::GoAway { grace_ms });
            }
            ServerFrame11::Welcome { .. } => {
                outcome.protocol = Some("WELCOME in an open session".into());
            }
            // This client never sends STATS; a reply it did not ask for is ignored.
            ServerFrame11::StatsReply { .. } => {}
            other => outcome.protocol = Some(format!("unexpected frame {other:?}")),
        }
    }

    fn deliver(&mut self, m: &HMsg<'_>) {
        let Some(entry) = self.subs.get_mut(&m.sid) else {
            return; // sent before our UNSUB took effect
        };
        let message = Message {
            topic: m.topic.to_owned(),
            reply_to: (!m.reply_to.is_empty()).then(|| m.reply_to.to_owned()),
            payload: Bytes::copy_from_slice(m.payload),
            headers: owned(m.headers),
        };
        match entry.queue.offer(message) {
            Offer::Accepted => self.stats.received += 1,
            Offer::Gone => {}
            Offer::Full => {
                self.stats.dropped_by_client += 1;
                entry.counters.by_client.fetch_add(1, Relaxed);
                if !entry.inbox {
                    entry.unreported += 1;
                    let event = Event::Dropped {
                        topic: entry.topic.clone(),
                        sid: m.sid,
                        count: entry.unreported,
                        site: DropSite::Client,
                    };
                    // A report that does not fit is carried into the next one.
                    if self.events.as_ref().is_some_and(|e| e.offer(event) == Offer::Accepted) {
                        entry.unreported = 0;
                    }
                }
            }
        }
    }

    fn pong(&mut self, nonce: u64) {
        while self.pending_subs.front().is_some_and(|p| p.settled_by <= nonce) {
            let Some(settled) = self.pending_subs.pop_front() else { break };
            // No refusal came before this `PONG`: the broker accepted it.
            let entry = self.subs.get_mut(&settled.sid);
            if let Some(answer) = entry.and_then(|e| e.answer.take()) {
                answer.offer(Ok(()));
            }
        }
        if let Some(waiter) = self.pongs.remove(&nonce) {
            waiter.offer(FlushEnd::Pong);
        }
    }

    fn broker_dropped(&mut self, sid: u32, count: u64) {
        self.stats.dropped_by_broker += count;
        let Some(entry) = self.subs.get(&sid) else {
            return;
        };
        entry.counters.by_broker.fetch_add(count, Relaxed);
        let topic = entry.topic.clone();
        self.emit(Event::Dropped { topic, sid, count, site: DropSite::Broker });
    }

    /// `NO_RESPONDERS` for the request whose reply-to is `reply_to`: its
    /// inbox ends (the request learns why from [`State::take_refusal`]) and
    /// is unsubscribed. One for a request that already ended is ignored.
    /// True if an `UNSUB` was queued.
    fn no_responders(&mut self, topic: &str, reply_to: &str) -> bool {
        let inbox = self.subs.iter().find(|(_, e)| e.inbox && e.topic == reply_to);
        let Some((&sid, _)) = inbox else {
            return false;
        };
        self.subs.remove(&sid);
        self.refusals.insert(sid, InboxEnd::NoResponders(topic.to_owned()));
        self.push(&ClientFrame::Unsub { sid });
        true
    }

    /// A non-fatal `ERR`; true if it queued an `UNSUB`.
    fn refused(&mut self, err: ServerError) -> bool {
        let unsub = if err.refuses_subscription() {
            self.sub_refused(&err)
        } else {
            if let Some(sid) = self.denied_sub(&err) {
                self.pending_subs.retain(|p| p.sid != sid);
                self.drop_refused(sid, &err, false);
            }
            false
        };
        self.emit(Event::ServerError(err));
        unsub
    }

    /// The pending `SUB` that a *permission denied* refuses. That code
    /// answers a `PUB` as well, so it is tied to a `SUB` by the topic the
    /// broker names (`permission denied: subscribe to TOPIC`): the oldest
    /// pending `SUB` to that topic.
    fn denied_sub(&self, err: &ServerError) -> Option<u32> {
        if err.error_code() != Some(ErrorCode::PermissionDenied) {
            return None;
        }
        let topic = err.text.strip_prefix("permission denied: subscribe to ")?;
        self.pending_subs
            .iter()
            .map(|p| p.sid)
            .find(|sid| self.subs.get(sid).is_some_and(|e| e.topic == topic))
    }

    /// Ties a refusal to the `SUB` it refuses. With a single `SUB` pending,
    /// it is that one. With several, any of them may be: a subscription
    /// whose `subscribe` still waits is given up, with an `UNSUB` in case
    /// the broker accepted it after all; the others are taken as accepted.
    /// True if an `UNSUB` was queued.
    fn sub_refused(&mut self, err: &ServerError) -> bool {
        if self.pending_subs.len() == 1 {
            if let Some(only) = self.pending_subs.pop_front() {
                self.drop_refused(only.sid, err, false);
            }
            return false;
        }
        let suspects: Vec<u32> = self
            .pending_subs
            .iter()
            .map(|p| p.sid)
            .filter(|sid| self.subs.get(sid).is_some_and(|e| e.answer.is_some()))
            .collect();
        for &sid in &suspects {
            self.drop_refused(sid, err, true);
        }
        !suspects.is_empty()
    }

    /// Ends subscription `sid` (its handle sees the end of its messages),
    /// and gives the refusal to whoever waits for it.
    fn drop_refused(&mut self, sid: u32, err: &ServerError, unsub: bool) {
        let Some(entry) = self.subs.remove(&sid) else {
            return;
        };
        if let Some(answer) = entry.answer {
            answer.offer(Err(err.clone()));
        }
        if entry.inbox {
            self.refusals.insert(sid, InboxEnd::Refused(err.clone()));
        }
        if unsub {
            self.push(&ClientFrame::Unsub { sid });
        }
    }

    fn emit(&mut self, event: Event) {
        let accepted = self.events.as_ref().is_some_and(|e| e.offer(event) == Offer::Accepted);
        if !accepted {
            self.stats.events_discarded += 1;
        }
    }
}

/// The blocking client's callers that wait on its condition variable: its
/// writer wakes them after a batch only when one waits.
#[cfg(feature = "blocking")]
impl State {
    /// A caller starts waiting for room or for the link.
    pub(crate) fn caller_waits(&mut self) {
        self.callers_waiting += 1;
    }

    /// A caller stopped waiting.
    pub(crate) fn caller_done(&mut self) {
        self.callers_waiting = self.callers_waiting.saturating_sub(1);
    }

    /// Whether some caller waits for room or for the link.
    pub(crate) fn callers_waiting(&self) -> bool {
        self.callers_waiting > 0
    }
}

/// A `MSG` as the `HMSG` without headers that it is.
fn without_headers(m: Msg<'_>) -> HMsg<'_> {
    let Msg { sid, topic, reply_to, payload } = m;
    HMsg { sid, topic, reply_to, headers: Headers::EMPTY, payload }
}

/// An owned copy of a received header block.
fn owned(headers: Headers<'_>) -> HeaderBlock {
    let mut block = HeaderBlock::new();
    for (key, value) in headers {
        // A received block was checked against the rules `push` applies.
        let _ = block.push(key, value);
    }
    block
}

/// Empties a written batch, and lets go of its memory after an unusually
/// large one so that a burst does not pin it for the connection's life.
pub(crate) fn recycle(batch: &mut Vec<u8>, send_buffer: usize) {
    batch.clear();
    if batch.capacity() > send_buffer.max(64 << 10) * 2 {
        *batch = Vec::new();
    }
}

/// Checks a topic or reply-to that is published to: a literal topic outside
/// the reserved `$` space.
pub(crate) fn check_publish_target(field: &'static str, value: &str) -> Result<(), ClientError> {
    let problem = match topic::validate(value) {
        Err(e) => TopicProblem::Rules(e),
        Ok(TopicKind::Wildcard) => TopicProblem::Wildcard,
        Ok(TopicKind::Literal) if topic::is_reserved(value) => TopicProblem::Reserved,
        Ok(TopicKind::Literal) => return Ok(()),
    };
    Err(ClientError::InvalidTopic { field, value: value.to_owned(), problem })
}

/// Checks a topic that is subscribed to. Wildcards pass: whether the broker
/// supports them is the broker's answer to give.
pub(crate) fn check_subscribe_topic(value: &str) -> Result<(), ClientError> {
    topic::validate(value).map(drop).map_err(|e| ClientError::InvalidTopic {
        field: "topic",
        value: value.to_owned(),
        problem: TopicProblem::Rules(e),
    })
}

/// Checks a queue group name: one literal token of 1-255 bytes.
pub(crate) fn check_queue_group(name: &str) -> Result<(), ClientError> {
    topic::validate_queue_group(name)
        .map_err(|problem| ClientError::InvalidQueueGroup { name: name.to_owned(), problem })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

    use corecast_proto::{frame::ErrFrame, ServerFrame};

    use super::*;
    use crate::{decoder::server_frame_limit, session::Watch};

    fn info(max_frame: u32) -> ServerInfo {
        ServerInfo {
            server_name: "test".into(),
            version: 1,
            max_frame,
            ping_interval_ms: 1000,
            core_id: 0,
            connection_id: 1,
            v1_1: false,
        }
    }

    fn state(send_buffer: usize) -> (State, Receiver<Event>) {
        let (tx, rx) = sync_channel(16);
        (State::new(info(1 << 20), send_buffer, Box::new(tx)), rx)
    }

    fn publication(payload: &[u8]) -> Publication<'_> {
        Pub { topic: "t", reply_to: "", payload }.into()
    }

    /// The frames in the send buffer, decoded and described.
    fn queued(st: &State) -> Vec<String> {
        let mut src = &st.out[..];
        let mut frames = Vec::new();
        while let Some(frame) = ClientFrame::decode(&mut src, u32::MAX).expect("valid") {
            frames.push(match frame {
                ClientFrame::Sub(s) if !s.queue_group.is_empty() => {
                    format!("SUB {} {} lossy={} queue={}", s.sid, s.topic, s.lossy, s.queue_group)
                }
                ClientFrame::Sub(s) => format!("SUB {} {} lossy={}", s.sid, s.topic, s.lossy),
                ClientFrame::Unsub { sid } => format!("UNSUB {sid}"),
                ClientFrame::Pub(p) => format!("PUB {} {:?}", p.topic, p.payload),
                ClientFrame::Ping { nonce } => format!("PING {nonce}"),
                ClientFrame::Pong { nonce } => format!("PONG {nonce}"),
                ClientFrame::Hello(_) => "HELLO".into(),
                ClientFrame::Stats { nonce } => format!("STATS {nonce}"),
            });
        }
        frames
    }

    fn server<'a>(st: &mut State, frame: impl Into<ServerFrame11<'a>>) -> ReadOutcome {
        let frame = frame.into();
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        raw(st, &bytes)
    }

    /// Reads `bytes` as the broker's, with the session's frame limit.
    fn raw(st: &mut State, bytes: &[u8]) -> ReadOutcome {
        let mut decoder = Decoder::new();
        decoder.set_limit(server_frame_limit(st.info().max_frame));
        decoder.spare()[..bytes.len()].copy_from_slice(bytes);
        decoder.filled(bytes.len());
        st.read_frames(&mut decoder)
    }

    #[test]
    fn the_send_buffer_is_bounded_but_takes_one_large_frame() {
        let (mut st, _events) = state(100);
        assert_eq!(st.try_queue_pub(&publication(&[0; 500])), Ok(()), "empty: taken");
        assert_eq!(st.try_queue_pub(&publication(b"x")), Err(Blocked::Full), "full");
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Write);
        assert_eq!(st.stats().buffered_bytes, 0);
        // A PUB of topic "t" and a 1-byte payload takes 10 bytes.
        for _ in 0..10 {
            assert_eq!(st.try_queue_pub(&publication(b"x")), Ok(()));
        }
        assert_eq!(st.try_queue_pub(&publication(b"x")), Err(Blocked::Full), "100 + 10 > 100");
    }

    #[test]
    fn a_reconnection_resubscribes_then_resends_only_publications() {
        let (mut st, events) = state(1 << 16);
        let (tx, _rx) = sync_channel(4);
        let mut answers = Vec::new();
        for (topic, lossy, group) in
            [("a", false, None), ("b", true, Some("g")), ("c", false, None)]
        {
            let (kind, answer) = subscription();
            st.add_sub((topic, group), lossy, kind, Box::new(tx.clone())).expect("open");
            answers.push(answer);
        }
        st.try_queue_pub(&publication(b"1")).expect("open");
        assert!(st.remove_sub(3));
        let (pong_tx, pong_rx) = sync_channel(1);
        st.queue_ping(Box::new(pong_tx)).expect("up");
        st.try_queue_pub(&publication(b"2")).expect("open");
        st.connection_lost(DisconnectReason::Closed);
        assert_eq!(pong_rx.try_recv(), Ok(FlushEnd::Lost));
        assert_eq!(st.link(), Link::Down);
        assert!(st.reconnected(info(4096), 3));
        assert_eq!(
            queued(&st),
            [
                "SUB 1 a lossy=false",
                "SUB 2 b lossy=true queue=g",
                "PING 5",
                "PUB t [49]",
                "PUB t [50]"
            ],
            "a queue group member is restored in its group"
        );
        assert_eq!(st.session(), 2);
        assert_eq!(st.info().max_frame, 4096);
        let events: Vec<Event> = events.try_iter().collect();
        assert_eq!(events[0], Event::Disconnected(DisconnectReason::Closed));
        assert!(matches!(events[1], Event::Reconnected { attempts: 3, .. }));
        // The subscribes of a and b waited across the reconnection.
        assert_eq!(answers[0].try_recv(), Err(TryRecvError::Empty));
        server(&mut st, ServerFrame::Pong { nonce: 5 });
        let answered: Vec<_> = answers.iter().map(Receiver::try_recv).collect();
        assert_eq!(answered, [Ok(Ok(())), Ok(Ok(())), Err(TryRecvError::Disconnected)]);
    }

    #[test]
    fn a_writer_of_an_old_session_stops() {
        let (mut st, _events) = state(1 << 16);
        st.try_queue_pub(&publication(b"x")).expect("open");
        st.connection_lost(DisconnectReason::Silent);
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Stop, "down");
        assert!(st.reconnected(info(1 << 20), 1));
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Stop, "old session");
        assert_eq!(st.writer_step(2, &mut batch), WriterStep::Write);
        assert!(!batch.is_empty());
    }

    #[test]
    fn goaway_holds_the_writer_and_closing_finishes_it() {
        let (mut st, events) = state(1 << 16);
        let outcome = server(&mut st, ServerFrame::GoAway { reason: 1, grace_ms: 300 });
        assert_eq!(outcome.goaway, Some(300));
        assert_eq!(events.try_recv(), Ok(Event::GoAway { grace_ms: 300 }));
        st.try_queue_pub(&publication(b"x")).expect("buffered while draining");
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Wait);
        assert!(st.wake_writer(), "a waiting writer is woken once");
        assert!(!st.wake_writer());
        st.begin_close(Instant::now());
        assert_eq!(st.link(), Link::Closed, "nothing can be sent while draining");
        assert!(matches!(st.try_queue_pub(&publication(b"x")), Err(Blocked::Closed)));
    }

    #[test]
    fn closing_sends_what_is_buffered_first() {
        let (mut st, _events) = state(1 << 16);
        st.try_queue_pub(&publication(b"x")).expect("open");
        st.begin_close(Instant::now());
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Write);
        batch.clear();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Finish);
    }

    #[test]
    fn server_pings_are_answered_and_flushes_end_with_their_pong() {
        let (mut st, events) = state(1 << 16);
        let (tx, rx) = sync_channel(1);
        let nonce = st.queue_ping(Box::new(tx)).expect("up");
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Write);
        batch.clear();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Wait);
        let outcome = server(&mut st, ServerFrame::Ping { nonce: 77 });
        assert!(outcome.wake_writer);
        assert_eq!(queued(&st), ["PONG 77"]);
        let refusal = ErrFrame { code: 103, fatal: false, text: "unknown sid" };
        server(&mut st, ServerFrame::Err(refusal));
        server(&mut st, ServerFrame::Pong { nonce });
        assert_eq!(rx.try_recv(), Ok(FlushEnd::Pong));
        let expected = ServerError { code: 103, fatal: false, text: "unknown sid".into() };
        assert_eq!(events.try_recv(), Ok(Event::ServerError(expected)));
        let fatal = ErrFrame { code: 9, fatal: true, text: "slow consumer" };
        assert_eq!(server(&mut st, ServerFrame::Err(fatal)).fatal.map(|e| e.code), Some(9));
    }

    /// A [`SubKind::Subscription`], and where the broker's answer arrives.
    fn subscription() -> (SubKind, Receiver<SubAnswer>) {
        let (tx, rx) = sync_channel(1);
        (SubKind::Subscription(Box::new(tx)), rx)
    }

    /// A subscription as `subscribe` makes it: its sid, its messages, and
    /// where the broker's answer arrives.
    fn subscribe(st: &mut State, topic: &str) -> (u32, Receiver<Message>, Receiver<SubAnswer>) {
        let (kind, answer) = subscription();
        let (tx, rx) = sync_channel(4);
        let (sid, _) = st.add_sub((topic, None), false, kind, Box::new(tx)).expect("room");
        (sid, rx, answer)
    }

    /// A request's inbox: its sid and its messages.
    fn inbox(st: &mut State, topic: &str) -> (u32, Receiver<Message>) {
        let (tx, rx) = sync_channel(4);
        let (sid, _) =
            st.add_sub((topic, None), false, SubKind::Inbox, Box::new(tx)).expect("room");
        (sid, rx)
    }

    const TOO_MANY: ErrFrame<'static> = ErrFrame { code: 101, fatal: false, text: "too many" };

    /// Whether `answer` got the refusal [`TOO_MANY`].
    fn refused_too_many(answer: &Receiver<SubAnswer>) -> bool {
        matches!(answer.try_recv(), Ok(Err(e)) if e.code == TOO_MANY.code)
    }

    #[test]
    fn every_sub_is_followed_by_a_ping_whose_pong_accepts_it() {
        let (mut st, _events) = state(1 << 16);
        let (sid, _rx, answer) = subscribe(&mut st, "t");
        let (inbox, _i) = inbox(&mut st, "_INBOX.x.1");
        assert_eq!(
            queued(&st),
            [
                format!("SUB {sid} t lossy=false"),
                "PING 1".into(),
                format!("SUB {inbox} _INBOX.x.1 lossy=false"),
                "PING 2".into()
            ]
        );
        assert_eq!(answer.try_recv(), Err(TryRecvError::Empty));
        server(&mut st, ServerFrame::Pong { nonce: 1 });
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        assert!(st.remove_sub(inbox));
        server(&mut st, ServerFrame::Pong { nonce: 2 });
        assert!(st.pending_subs.is_empty());
    }

    #[test]
    fn a_subscribe_without_a_session_is_answered_in_the_next_or_ends_with_the_client() {
        let (mut st, _events) = state(1 << 16);
        st.connection_lost(DisconnectReason::Closed);
        let (sid, _rx, answer) = subscribe(&mut st, "t");
        let sub = format!("SUB {sid} t lossy=false");
        assert_eq!(queued(&st), [&sub[..]], "no PING without a session");
        assert!(st.reconnected(info(1 << 20), 1));
        assert_eq!(queued(&st), [&sub[..], "PING 1"]);
        server(&mut st, ServerFrame::Pong { nonce: 1 });
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        let (_, _rx, unanswered) = subscribe(&mut st, "u");
        st.give_up("test".into());
        assert_eq!(unanswered.try_recv(), Err(TryRecvError::Disconnected), "the client closed");
    }

    #[test]
    fn a_refusal_with_one_sub_pending_is_that_subs() {
        let (mut st, _events) = state(1 << 16);
        let (a, _a, a_answer) = subscribe(&mut st, "a");
        server(&mut st, ServerFrame::Pong { nonce: 1 });
        assert_eq!(a_answer.try_recv(), Ok(Ok(())));
        // Settled by the PONG: a later refusal is the next SUB's.
        let (b, b_rx, b_answer) = subscribe(&mut st, "b");
        st.out.clear();
        server(&mut st, ServerFrame::Err(TOO_MANY));
        assert!(queued(&st).is_empty(), "no UNSUB for a SUB known refused");
        assert!(refused_too_many(&b_answer));
        assert!(st.subs.contains_key(&a) && !st.subs.contains_key(&b), "a stays");
        assert!(b_rx.recv().is_err(), "b's queue ended");
        // An inbox refused alone: the request learns why.
        let (i, _i_rx) = inbox(&mut st, "_INBOX.x.1");
        server(&mut st, ServerFrame::Err(TOO_MANY));
        assert!(matches!(st.take_refusal(i), Some(ClientError::Server(e)) if e.code == 101));
    }

    #[test]
    fn an_ambiguous_refusal_gives_up_the_waiting_sub_with_an_unsub() {
        let (mut st, _events) = state(1 << 16);
        let (mine, _m, answer) = subscribe(&mut st, "mine");
        let (inbox, _i) = inbox(&mut st, "_INBOX.x.1");
        st.out.clear();
        // The broker refused one of the two before answering the PINGs.
        server(&mut st, ServerFrame::Err(TOO_MANY));
        assert_eq!(queued(&st), [format!("UNSUB {mine}")]);
        assert!(refused_too_many(&answer));
        server(&mut st, ServerFrame::Pong { nonce: 2 });
        assert!(st.take_refusal(inbox).is_none(), "the inbox is taken as accepted");
        assert!(st.subs.contains_key(&inbox));
        assert!(st.pending_subs.is_empty());
    }

    #[test]
    fn a_permission_denied_naming_a_pending_subs_topic_is_that_subs() {
        let (mut st, events) = state(1 << 16);
        let (allowed, _a, allowed_answer) = subscribe(&mut st, "news.>");
        let (denied, denied_rx, denied_answer) = subscribe(&mut st, "secret.plans");
        st.out.clear();
        // A PUB's refusal names no SUB: both stay pending.
        let publish = ErrFrame { code: 104, fatal: false, text: "permission denied: publish to x" };
        server(&mut st, ServerFrame::Err(publish));
        assert_eq!(st.pending_subs.len(), 2);
        let text = "permission denied: subscribe to secret.plans";
        server(&mut st, ServerFrame::Err(ErrFrame { code: 104, fatal: false, text }));
        assert!(queued(&st).is_empty(), "no UNSUB for a SUB known refused");
        assert!(matches!(denied_answer.try_recv(), Ok(Err(e)) if e.code == 104 && e.text == text));
        assert!(!st.subs.contains_key(&denied) && denied_rx.recv().is_err(), "it ended");
        server(&mut st, ServerFrame::Pong { nonce: 2 });
        assert_eq!(allowed_answer.try_recv(), Ok(Ok(())), "the other one was accepted");
        assert!(st.subs.contains_key(&allowed) && st.pending_subs.is_empty());
        let codes: Vec<u16> = events
            .try_iter()
            .filter_map(|e| match e {
                Event::ServerError(e) => Some(e.code),
                _ => None,
            })
            .collect();
        assert_eq!(codes, [104, 104], "each refusal is still told as an event");
    }

    #[test]
    fn control_frames_of_the_application_respect_the_send_buffer() {
        let (mut st, _events) = state(100);
        st.try_queue_pub(&publication(&[0; 90])).expect("empty: taken");
        let (tx, _rx) = sync_channel(1);
        assert_eq!(st.queue_ping(Box::new(tx)).err(), Some(Blocked::Full));
        let (tx, _rx) = sync_channel(1);
        let (kind, _answer) = subscription();
        let full = st.add_sub(("t", None), false, kind, Box::new(tx));
        assert_eq!(full.err(), Some(Blocked::Full));
        assert_eq!(st.pending_flushes(), 0);
        assert!(st.subs.is_empty());
    }

    #[test]
    fn cancelled_flushes_are_forgotten() {
        let (mut st, events) = state(1 << 16);
        let (tx, rx) = sync_channel(1);
        let nonce = st.queue_ping(Box::new(tx)).expect("up");
        assert_eq!(st.pending_flushes(), 1);
        st.cancel_ping(nonce);
        assert_eq!(st.pending_flushes(), 0);
        let outcome = server(&mut st, ServerFrame::Pong { nonce });
        assert!(!outcome.wake_writer && outcome.protocol.is_none());
        assert_eq!(st.pending_flushes(), 0);
        assert_eq!(rx.try_recv(), Err(std::sync::mpsc::TryRecvError::Disconnected));
        assert_eq!(events.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty));
    }

    #[test]
    fn invalid_frames_are_protocol_errors_that_end_the_session() {
        let mut msg = Vec::new();
        ServerFrame::Msg(Msg { sid: 1, topic: "t", reply_to: "", payload: b"p" }).encode(&mut msg);
        // prefix, opcode, flags, sid, topic length: then the topic's byte.
        msg[4 + 2 + 4 + 1] = 0xff;
        let mut too_long = (server_frame_limit(1 << 20) + 1).to_le_bytes().to_vec();
        too_long.extend([0x05, 0]);
        let unknown_opcode = [2, 0, 0, 0, 0x7f, 0];
        for (what, bytes) in [
            ("unknown opcode", &unknown_opcode[..]),
            ("not valid UTF-8", &msg),
            ("exceeds max_frame", &too_long),
        ] {
            let (mut st, _events) = state(1 << 16);
            let outcome = raw(&mut st, bytes);
            assert!(outcome.protocol.as_deref().is_some_and(|e| e.contains(what)), "{outcome:?}");
            let reason = Watch::new(1000).on_read(&outcome, Instant::now());
            assert!(matches!(reason, Some(DisconnectReason::Protocol(_))), "{what}: {reason:?}");
        }
    }

    #[test]
    fn publications_too_large_for_the_new_broker_are_dropped_and_reported() {
        let (mut st, events) = state(1 << 16);
        // A PUB of topic "t" takes 5 bytes besides its payload.
        for len in [4091, 4092, 10] {
            st.try_queue_pub(&publication(&vec![1; len])).expect("open");
        }
        st.connection_lost(DisconnectReason::Closed);
        assert!(st.reconnected(info(4096), 1));
        let mut src = &st.out[..];
        let mut kept = Vec::new();
        while let Some(ClientFrame::Pub(p)) = ClientFrame::decode(&mut src, 4096).expect("fits") {
            kept.push(p.payload.len());
        }
        assert_eq!(kept, [4091, 10]);
        assert_eq!(st.stats().dropped_publications, 1);
        let events: Vec<Event> = events.try_iter().collect();
        let dropped = Event::PublicationDropped { topic: "t".into(), len: 4092, max_frame: 4096 };
        assert_eq!(events.last(), Some(&dropped), "{events:?}");
    }

    #[test]
    fn a_closing_writer_gives_up_after_the_linger() {
        let (mut st, _events) = state(1 << 16);
        let now = Instant::now();
        assert!(!st.writer_gives_up(1, now + CLOSE_LINGER * 10), "open: it waits");
        st.begin_close(now);
        assert!(!st.writer_gives_up(1, now));
        assert!(st.writer_gives_up(1, now + CLOSE_LINGER));
        assert!(st.writer_gives_up(0, now), "another session's writer");
    }

    #[test]
    fn closing_ends_the_events() {
        let (mut st, events) = state(1 << 16);
        st.give_up("test".into());
        assert_eq!(events.try_recv(), Ok(Event::Closed { reason: "test".into() }));
        assert_eq!(events.try_recv(), Err(std::sync::mpsc::TryRecvError::Disconnected));
    }

    #[test]
    fn drops_by_the_broker_and_by_a_full_queue_are_counted_and_reported() {
        let (mut st, events) = state(1 << 16);
        let (tx, rx) = sync_channel(1);
        let (sid, counters) =
            st.add_sub(("lossy.t", None), true, subscription().0, Box::new(tx)).expect("open");
        server(&mut st, ServerFrame::Dropped { sid, count: 5 });
        let msg = |p| ServerFrame::Msg(Msg { sid, topic: "lossy.t", reply_to: "r", payload: p });
        server(&mut st, msg(b"kept"));
        server(&mut st, msg(b"lost"));
        assert_eq!(counters.dropped(), 6);
        let stats = st.stats();
        assert_eq!((stats.dropped_by_broker, stats.dropped_by_client, stats.received), (5, 1, 1));
        let got = rx.try_recv().expect("queued");
        assert_eq!((got.reply_to.as_deref(), &got.payload[..]), (Some("r"), &b"kept"[..]));
        let reported: Vec<(u64, DropSite)> = events
            .try_iter()
            .filter_map(|e| match e {
                Event::Dropped { count, site, .. } => Some((count, site)),
                _ => None,
            })
            .collect();
        assert_eq!(reported, [(5, DropSite::Broker), (1, DropSite::Client)]);
        server(&mut st, ServerFrame::Msg(Msg { sid: 99, topic: "x", reply_to: "", payload: b"" }));
        assert_eq!(st.stats().received, 1, "messages for unknown sids are ignored");
    }

    #[test]
    fn a_welcome_in_an_open_session_is_a_protocol_error() {
        let (mut st, _events) = state(1 << 16);
        let welcome = corecast_proto::Welcome {
            version: 1,
            max_frame: 1,
            ping_interval_ms: 1,
            core_id: 0,
            connection_id: 0,
            server_name: "",
        };
        assert!(server(&mut st, ServerFrame::Welcome(welcome)).protocol.is_some());
    }

    #[test]
    fn payload_limits_follow_max_frame() {
        let (st, _events) = state(1 << 16);
        let max = (1 << 20) - 4 - 1 - 2;
        let payload = vec![0; max + 1];
        let publication = |len| Pub { topic: "t", reply_to: "ab", payload: &payload[..len] };
        assert!(st.check_pub(&publication(max).into()).is_ok());
        assert!(matches!(
            st.check_pub(&publication(max + 1).into()),
            Err(ClientError::PayloadTooLarge { max: m, .. }) if m == max
        ));
    }

    /// A client whose session speaks 1.1.
    fn state11() -> (State, Receiver<Event>) {
        let (tx, rx) = sync_channel(16);
        (State::new(ServerInfo { v1_1: true, ..info(1 << 20) }, 1 << 16, Box::new(tx)), rx)
    }

    /// The frames in the send buffer of a 1.1 session, described.
    fn queued11(st: &State) -> Vec<String> {
        let mut src = &st.out[..];
        let mut frames = Vec::new();
        while let Some(frame) = ClientFrame11::decode(&mut src, u32::MAX).expect("valid") {
            frames.push(match frame {
                ClientFrame11::Pub { publish, request } => {
                    format!("PUB {} {request}", publish.topic)
                }
                ClientFrame11::HPub(h) => format!("HPUB {} {:?} {}", h.topic, h.headers, h.request),
                other => format!("{other:?}"),
            });
        }
        frames
    }

    fn block(pairs: &[(&str, &str)]) -> HeaderBlock {
        let mut block = HeaderBlock::new();
        for (k, v) in pairs {
            block.push(k, v).expect("valid");
        }
        block
    }

    #[test]
    fn requests_and_headers_go_out_as_the_session_takes_them() {
        let headers = block(&[("k", "v")]);
        let request = Publication { request: true, ..publication(b"q") };
        let with_headers = Publication { headers: Some(headers.headers()), ..publication(b"h") };
        let (mut v11, _events) = state11();
        v11.try_queue_pub(&request).expect("open");
        v11.try_queue_pub(&with_headers).expect("open");
        assert_eq!(queued11(&v11), ["PUB t true", "HPUB t [(\"k\", \"v\")] false"]);
        let (mut v1, _events) = state(1 << 16);
        v1.try_queue_pub(&request).expect("open");
        assert_eq!(queued(&v1), ["PUB t [113]"], "a plain PUB in a version 1 session");
        let err = v1.check_pub(&with_headers).expect_err("no headers in version 1");
        assert!(matches!(err, ClientError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn no_responders_ends_its_request_and_unsubscribes_the_inbox() {
        let (mut st, _events) = state11();
        let (sid, replies) = inbox(&mut st, "_INBOX.a.1");
        server(&mut st, ServerFrame::Pong { nonce: 1 });
        st.out.clear();
        let stray = ServerFrame11::NoResponders { topic: "svc", reply_to: "_INBOX.a.9" };
        assert!(!server(&mut st, stray).wake_writer, "no such request: ignored");
        server(&mut st, ServerFrame11::NoResponders { topic: "svc", reply_to: "_INBOX.a.1" });
        assert_eq!(replies.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(queued(&st), [format!("UNSUB {sid}")]);
        let end = st.take_refusal(sid).expect("told why");
        assert!(matches!(&end, ClientError::NoResponders { topic } if topic == "svc"), "{end:?}");
        assert!(!st.remove_sub(sid), "already gone");
    }

    #[test]
    fn hmsg_delivers_headers_and_msg_none() {
        let (mut st, _events) = state11();
        let (sid, messages, _answer) = subscribe(&mut st, "t");
        let headers = block(&[("trace", "1"), ("trace", "2")]);
        let hmsg =
            HMsg { sid, topic: "t", reply_to: "", headers: headers.headers(), payload: b"p" };
        server(&mut st, ServerFrame11::HMsg(hmsg));
        server(&mut st, ServerFrame::Msg(Msg { sid, topic: "t", reply_to: "", payload: b"p" }));
        let first = messages.try_recv().expect("HMSG");
        assert_eq!((first.headers.len(), first.header("trace")), (2, Some("1")));
        assert!(messages.try_recv().expect("MSG").headers.is_empty());
    }

    #[test]
    fn a_version_1_session_refuses_1_1_frames() {
        let (mut st, _events) = state(1 << 16);
        let mut bytes = Vec::new();
        ServerFrame11::NoResponders { topic: "t", reply_to: "r" }.encode(&mut bytes);
        let mut decoder = Decoder::new();
        decoder.set_v1_1(false);
        decoder.spare()[..bytes.len()].copy_from_slice(&bytes);
        decoder.filled(bytes.len());
        assert!(st.read_frames(&mut decoder).protocol.is_some());
    }

    #[test]
    fn a_reconnection_to_a_version_1_broker_drops_headers_and_request_flags() {
        let (mut st, events) = state11();
        let headers = block(&[("k", "v")]);
        st.try_queue_pub(&Publication { request: true, ..publication(b"q") }).expect("open");
        let hpub = Publication { headers: Some(headers.headers()), ..publication(b"h") };
        st.try_queue_pub(&hpub).expect("open");
        st.connection_lost(DisconnectReason::Closed);
        assert!(st.reconnected(info(1 << 20), 1));
        assert_eq!(queued(&st), ["PUB t [113]"]);
        assert_eq!(st.stats().dropped_publications, 1);
        let dropped = events.try_iter().any(|e| matches!(e, Event::PublicationDropped { .. }));
        assert!(dropped);
    }
}
