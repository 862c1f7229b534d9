//! The connection state both clients share: send buffer, subscriptions,
//! flush waiters, events and counters.
//!
//! Nothing here does I/O or waits. The blocking and the tokio client keep a
//! [`State`] behind a mutex, change it through these methods, and do the
//! reading, writing, sleeping and waking themselves.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use bytes::Bytes;

use super::{
    decoder::Decoder, ClientError, DisconnectReason, DropSite, Event, Message, ServerError,
    ServerInfo, Stats, TopicProblem,
};
use crate::{
    topic::{self, TopicKind},
    ClientFrame, Msg, Pub, ServerFrame, Sub,
};

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

/// How a flush ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlushEnd {
    /// The `PONG` arrived; with the first non-fatal `ERR` received while
    /// waiting for it, if any.
    Pong(Option<ServerError>),
    /// The connection was lost first.
    Lost,
    /// The client closed first.
    Closed,
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
    /// This writer's session is over: stop.
    Stop,
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

/// A subscription as the reader sees it.
struct SubEntry {
    topic: String,
    lossy: bool,
    queue: Box<dyn Mailbox<Message>>,
    counters: Arc<SubCounters>,
    /// Local drops are counted but not reported as events (request inboxes,
    /// where only the first answer matters).
    quiet: bool,
    /// Local drops not yet reported in an event.
    unreported: u64,
}

struct PongWaiter {
    reply: Box<dyn Mailbox<FlushEnd>>,
    first_error: Option<ServerError>,
}

/// Everything a connection keeps between reads and writes.
pub(crate) struct State {
    link: Link,
    /// Encoded client frames not yet handed to the writer.
    out: Vec<u8>,
    send_buffer: usize,
    subs: BTreeMap<u32, SubEntry>,
    pongs: HashMap<u64, PongWaiter>,
    events: Box<dyn Mailbox<Event>>,
    info: ServerInfo,
    session: u64,
    next_sid: u32,
    next_nonce: u64,
    inbox_prefix: String,
    next_inbox: u64,
    stats: Stats,
    /// The writer is waiting to be woken (and has not been yet).
    writer_idle: bool,
    /// Callers waiting for room or for the link (blocking client).
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
            pongs: HashMap::new(),
            events,
            info,
            session: 1,
            next_sid: 1,
            next_nonce: 1,
            inbox_prefix: super::new_inbox_prefix(),
            next_inbox: 1,
            stats: Stats::default(),
            writer_idle: false,
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

    /// Whether the writer waits and must be woken for what was just queued.
    /// Answers `true` once per wait, so that a burst of publications costs
    /// one wake-up, not one each.
    pub(crate) fn wake_writer(&mut self) -> bool {
        std::mem::take(&mut self.writer_idle)
    }

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

    /// Whether operations are refused because the client is closing.
    fn is_closed(&self) -> bool {
        matches!(self.link, Link::Closing | Link::Closed)
    }

    fn push(&mut self, frame: &ClientFrame<'_>) {
        frame.encode(&mut self.out);
    }

    // ---- what the application asks -------------------------------------

    /// Checks that a payload fits one frame with this topic and reply-to.
    pub(crate) fn check_size(
        &self,
        topic: &str,
        reply_to: &str,
        len: usize,
    ) -> Result<(), ClientError> {
        let max_frame = self.info.max_frame;
        let max = (max_frame as usize).saturating_sub(4 + topic.len() + reply_to.len());
        if len > max {
            return Err(ClientError::PayloadTooLarge { len, max, max_frame });
        }
        Ok(())
    }

    /// Queues a `PUB` if the send buffer has room: `Ok(false)` when it is
    /// full. Topics must have been checked.
    pub(crate) fn try_queue_pub(&mut self, p: &Pub<'_>) -> Result<bool, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let frame = ClientFrame::Pub(*p);
        if !self.out.is_empty() && self.out.len() + frame.encoded_len() > self.send_buffer {
            return Ok(false);
        }
        self.push(&frame);
        self.stats.published += 1;
        Ok(true)
    }

    /// Registers a subscription and queues its `SUB`; returns its sid.
    pub(crate) fn add_sub(
        &mut self,
        topic: &str,
        lossy: bool,
        quiet: bool,
        queue: Box<dyn Mailbox<Message>>,
    ) -> Result<(u32, Arc<SubCounters>), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let sid = self.fresh_sid();
        let counters = Arc::new(SubCounters::default());
        let entry = SubEntry {
            topic: topic.to_owned(),
            lossy,
            queue,
            counters: Arc::clone(&counters),
            quiet,
            unreported: 0,
        };
        self.subs.insert(sid, entry);
        self.push(&ClientFrame::Sub(Sub { sid, topic, queue_group: "", lossy }));
        Ok((sid, counters))
    }

    fn fresh_sid(&mut self) -> u32 {
        loop {
            let sid = self.next_sid;
            self.next_sid = self.next_sid.wrapping_add(1).max(1);
            if !self.subs.contains_key(&sid) {
                return sid;
            }
        }
    }

    /// Removes a subscription and queues its `UNSUB`. False if it was not
    /// there (already removed, or the client closed).
    pub(crate) fn remove_sub(&mut self, sid: u32) -> bool {
        if self.subs.remove(&sid).is_none() {
            return false;
        }
        if self.link != Link::Closed {
            self.push(&ClientFrame::Unsub { sid });
        }
        true
    }

    /// Forgets a subscription the broker refused, without an `UNSUB`.
    pub(crate) fn forget_sub(&mut self, sid: u32) {
        self.subs.remove(&sid);
    }

    /// Queues a `PING` whose `PONG` goes to `reply`. Only while the session
    /// is open: otherwise returns the link, for the caller to wait or fail.
    pub(crate) fn queue_ping(&mut self, reply: Box<dyn Mailbox<FlushEnd>>) -> Result<u64, Link> {
        if self.link != Link::Up {
            return Err(self.link);
        }
        let nonce = self.queue_probe();
        self.pongs.insert(nonce, PongWaiter { reply, first_error: None });
        Ok(nonce)
    }

    /// Queues a `PING` nobody waits for (a liveness probe); returns its nonce.
    pub(crate) fn queue_probe(&mut self) -> u64 {
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

    // ---- the connection's life -------------------------------------------

    /// The application let go: close once the send buffer is written.
    pub(crate) fn begin_close(&mut self) {
        match self.link {
            Link::Up => self.link = Link::Closing,
            Link::Closing | Link::Closed => {}
            Link::Draining | Link::Down => self.finish_close(),
        }
    }

    /// Closed for good: subscriptions end, flushes fail, nothing is sent.
    pub(crate) fn finish_close(&mut self) {
        self.link = Link::Closed;
        self.subs.clear();
        self.out = Vec::new();
        for (_, waiter) in self.pongs.drain() {
            waiter.reply.offer(FlushEnd::Closed);
        }
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
                    waiter.reply.offer(FlushEnd::Lost);
                }
                self.emit(Event::Disconnected(reason));
            }
        }
    }

    /// A new session is open after `attempts` attempts. Queues the `SUB` of
    /// every subscription, then the publications that were waiting. False
    /// when the client closed meanwhile.
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
        self.requeue_publications(&waiting);
        self.emit(Event::Reconnected { attempts, info });
        true
    }

    fn resubscribe(&mut self) {
        let subs: Vec<(u32, String, bool)> =
            self.subs.iter().map(|(&sid, e)| (sid, e.topic.clone(), e.lossy)).collect();
        for (sid, topic, lossy) in subs {
            self.push(&ClientFrame::Sub(Sub { sid, topic: &topic, queue_group: "", lossy }));
        }
    }

    /// Keeps the `PUB`s of frames queued for the previous session; its
    /// `SUB`s, `UNSUB`s, `PING`s and `PONG`s are stale.
    fn requeue_publications(&mut self, waiting: &[u8]) {
        let mut src = waiting;
        while let Ok(Some(frame)) = ClientFrame::decode(&mut src, u32::MAX) {
            if let ClientFrame::Pub(_) = frame {
                self.push(&frame);
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

    fn apply(&mut self, frame: ServerFrame<'_>, outcome: &mut ReadOutcome) {
        match frame {
            ServerFrame::Msg(m) => self.deliver(&m),
            ServerFrame::Ping { nonce } => {
                if matches!(self.link, Link::Up | Link::Closing) {
                    self.push(&ClientFrame::Pong { nonce });
                    outcome.wake_writer |= self.wake_writer();
                }
            }
            ServerFrame::Pong { nonce } => self.pong(nonce),
            ServerFrame::Dropped { sid, count } => self.broker_dropped(sid, count),
            ServerFrame::Err(e) => {
                let err = ServerError { code: e.code, fatal: e.fatal, text: e.text.to_owned() };
                if err.fatal {
                    outcome.fatal = Some(err);
                } else {
                    self.refused(err);
                }
            }
            ServerFrame::GoAway { grace_ms, .. } => {
                if self.link == Link::Up {
                    self.link = Link::Draining;
                }
                outcome.goaway = Some(grace_ms);
                self.emit(Event::GoAway { grace_ms });
            }
            ServerFrame::Welcome(_) => {
                outcome.protocol = Some("WELCOME in an open session".into());
            }
            // This client never sends STATS; a reply it did not ask for is ignored.
            ServerFrame::StatsReply { .. } => {}
        }
    }

    fn deliver(&mut self, m: &Msg<'_>) {
        let Some(entry) = self.subs.get_mut(&m.sid) else {
            return; // sent before our UNSUB took effect
        };
        let message = Message {
            topic: m.topic.to_owned(),
            reply_to: (!m.reply_to.is_empty()).then(|| m.reply_to.to_owned()),
            payload: Bytes::copy_from_slice(m.payload),
        };
        match entry.queue.offer(message) {
            Offer::Accepted => self.stats.received += 1,
            Offer::Gone => {}
            Offer::Full => {
                self.stats.dropped_by_client += 1;
                entry.counters.by_client.fetch_add(1, Relaxed);
                if !entry.quiet {
                    entry.unreported += 1;
                    let event = Event::Dropped {
                        topic: entry.topic.clone(),
                        sid: m.sid,
                        count: entry.unreported,
                        site: DropSite::Client,
                    };
                    // A report that does not fit is carried into the next one.
                    if self.events.offer(event) == Offer::Accepted {
                        entry.unreported = 0;
                    }
                }
            }
        }
    }

    fn pong(&mut self, nonce: u64) {
        if let Some(waiter) = self.pongs.remove(&nonce) {
            waiter.reply.offer(FlushEnd::Pong(waiter.first_error));
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

    fn refused(&mut self, err: ServerError) {
        for waiter in self.pongs.values_mut() {
            waiter.first_error.get_or_insert_with(|| err.clone());
        }
        self.emit(Event::ServerError(err));
    }

    fn emit(&mut self, event: Event) {
        if self.events.offer(event) != Offer::Accepted {
            self.stats.events_discarded += 1;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{sync_channel, Receiver};

    use super::*;
    use crate::frame::ErrFrame;

    fn info(max_frame: u32) -> ServerInfo {
        ServerInfo {
            server_name: "test".into(),
            version: 1,
            max_frame,
            ping_interval_ms: 1000,
            core_id: 0,
            connection_id: 1,
        }
    }

    fn state(send_buffer: usize) -> (State, Receiver<Event>) {
        let (tx, rx) = sync_channel(16);
        (State::new(info(1 << 20), send_buffer, Box::new(tx)), rx)
    }

    fn publication(payload: &[u8]) -> Pub<'_> {
        Pub { topic: "t", reply_to: "", payload }
    }

    /// The frames in the send buffer, decoded and described.
    fn queued(st: &State) -> Vec<String> {
        let mut src = &st.out[..];
        let mut frames = Vec::new();
        while let Some(frame) = ClientFrame::decode(&mut src, u32::MAX).expect("valid") {
            frames.push(match frame {
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

    fn server(st: &mut State, frame: ServerFrame<'_>) -> ReadOutcome {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        let mut decoder = Decoder::new();
        decoder.spare()[..bytes.len()].copy_from_slice(&bytes);
        decoder.filled(bytes.len());
        st.read_frames(&mut decoder)
    }

    #[test]
    fn the_send_buffer_is_bounded_but_takes_one_large_frame() {
        let (mut st, _events) = state(100);
        assert_eq!(st.try_queue_pub(&publication(&[0; 500])).ok(), Some(true), "empty: taken");
        assert_eq!(st.try_queue_pub(&publication(b"x")).ok(), Some(false), "full");
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Write);
        assert_eq!(st.stats().buffered_bytes, 0);
        // A PUB of topic "t" and a 1-byte payload takes 10 bytes.
        for _ in 0..10 {
            assert_eq!(st.try_queue_pub(&publication(b"x")).ok(), Some(true));
        }
        assert_eq!(st.try_queue_pub(&publication(b"x")).ok(), Some(false), "100 + 10 > 100");
    }

    #[test]
    fn a_reconnection_resubscribes_then_resends_only_publications() {
        let (mut st, events) = state(1 << 16);
        let (tx, _rx) = sync_channel(4);
        let (a, _) = st.add_sub("a", false, false, Box::new(tx.clone())).expect("open");
        let (b, _) = st.add_sub("b", true, false, Box::new(tx.clone())).expect("open");
        let (c, _) = st.add_sub("c", false, false, Box::new(tx)).expect("open");
        assert_eq!((a, b, c), (1, 2, 3));
        st.try_queue_pub(&publication(b"1")).expect("open");
        assert!(st.remove_sub(c));
        let (pong_tx, pong_rx) = sync_channel(1);
        st.queue_ping(Box::new(pong_tx)).expect("up");
        st.try_queue_pub(&publication(b"2")).expect("open");
        st.connection_lost(DisconnectReason::Closed);
        assert_eq!(pong_rx.try_recv(), Ok(FlushEnd::Lost));
        assert_eq!(st.link(), Link::Down);
        assert!(st.reconnected(info(4096), 3));
        assert_eq!(
            queued(&st),
            ["SUB 1 a lossy=false", "SUB 2 b lossy=true", "PUB t [49]", "PUB t [50]"]
        );
        assert_eq!(st.session(), 2);
        assert_eq!(st.info().max_frame, 4096);
        let events: Vec<Event> = events.try_iter().collect();
        assert_eq!(events[0], Event::Disconnected(DisconnectReason::Closed));
        assert!(matches!(events[1], Event::Reconnected { attempts: 3, .. }));
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
        st.begin_close();
        assert_eq!(st.link(), Link::Closed, "nothing can be sent while draining");
        assert!(matches!(st.try_queue_pub(&publication(b"x")), Err(ClientError::Closed)));
    }

    #[test]
    fn closing_sends_what_is_buffered_first() {
        let (mut st, _events) = state(1 << 16);
        st.try_queue_pub(&publication(b"x")).expect("open");
        st.begin_close();
        let mut batch = Vec::new();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Write);
        batch.clear();
        assert_eq!(st.writer_step(1, &mut batch), WriterStep::Finish);
    }

    #[test]
    fn server_pings_are_answered_and_errors_reach_flushes() {
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
        let refusal = ErrFrame { code: 102, fatal: false, text: "duplicate" };
        server(&mut st, ServerFrame::Err(refusal));
        server(&mut st, ServerFrame::Pong { nonce });
        let expected = ServerError { code: 102, fatal: false, text: "duplicate".into() };
        assert_eq!(rx.try_recv(), Ok(FlushEnd::Pong(Some(expected.clone()))));
        assert_eq!(events.try_recv(), Ok(Event::ServerError(expected)));
        let fatal = ErrFrame { code: 9, fatal: true, text: "slow consumer" };
        assert_eq!(server(&mut st, ServerFrame::Err(fatal)).fatal.map(|e| e.code), Some(9));
    }

    #[test]
    fn drops_by_the_broker_and_by_a_full_queue_are_counted_and_reported() {
        let (mut st, events) = state(1 << 16);
        let (tx, rx) = sync_channel(1);
        let (sid, counters) = st.add_sub("lossy.t", true, false, Box::new(tx)).expect("open");
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
        let welcome = crate::Welcome {
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
        assert!(st.check_size("t", "ab", max).is_ok());
        assert!(matches!(
            st.check_size("t", "ab", max + 1),
            Err(ClientError::PayloadTooLarge { max: m, .. }) if m == max
        ));
    }
}
