//! A connection slot: the per-connection state other tasks of the core can
//! reach (to queue messages, to wake it, to close it), and its lifecycle.
//!
//! ```text
//! Handshake ──HELLO──▶ Open ──any way out──▶ Draining ──flushed/deadline──▶ Closed ──▶ Free
//!     └───────────────────────────────────────────┴──── EOF / reset ───────────▲
//! ```
//!
//! Leaving `Open` removes the slot's subscriptions at once. `Draining` only
//! delivers the final `ERR` or `GOAWAY` within a deadline; `Free` is the
//! slab entry removed and both buffers back in their pools.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    rc::Rc,
    task::Waker,
    time::Instant,
};

use corecast_proto::{ErrFrame, ErrorCode, ServerFrame};

use crate::{buffer::WriteBuf, config::WRITE_RESERVE};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; waiting for `HELLO`.
    Handshake,
    /// Welcomed; may subscribe and publish.
    Open,
    /// Left `Open`: subscriptions gone, flushing a final frame until `until`.
    Draining { until: Instant },
    /// The task ends and frees the slot.
    Closed,
}

/// Why a connection left `Open` (or never reached it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The client closed its side.
    Eof,
    /// The socket failed (reset, broken pipe).
    Reset,
    /// The client broke the protocol; the code goes out in a fatal `ERR`.
    Protocol(ErrorCode),
    /// The client could not take its messages.
    SlowConsumer,
    /// The client went silent past the idle limit.
    Stale,
    /// No `HELLO` within the handshake timeout.
    HandshakeTimeout,
    /// The broker is shutting down.
    Shutdown,
    /// The connection task panicked.
    Panic,
}

/// A subscription as its connection sees it.
#[derive(Debug)]
pub(crate) struct SlotSub {
    /// The topic, shared with the core's topic table.
    pub topic: Rc<str>,
    /// Messages dropped since the last `DROPPED` notice.
    pub dropped: u64,
}

/// A `PONG` owed to the client once effects up to `after_seq` landed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingPong {
    pub nonce: u64,
    pub after_seq: u64,
}

/// Most `PING`s a connection may have waiting for their `PONG`; past this
/// the broker stops reading from it until they are answered.
pub(crate) const MAX_PENDING_PONGS: usize = 64;

/// One connection's shared state.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Broker-wide connection id, sent in `WELCOME`.
    pub id: u64,
    /// Client address, for logs.
    pub peer: SocketAddr,
    pub phase: Phase,
    /// Frames queued for the client; fixed size for the slot's life.
    pub wbuf: WriteBuf,
    /// The connection task, to wake when there is something to write.
    pub waker: Option<Waker>,
    /// Set once the task has been woken for the current batch, so a fan-out
    /// of many messages wakes it once.
    pub notified: bool,
    /// Subscriptions by sid.
    pub subs: HashMap<u32, SlotSub>,
    /// Some subscription has drops not yet reported with `DROPPED`.
    pub unreported_drops: bool,
    /// Drops of subscriptions already removed whose `DROPPED` did not fit
    /// yet, by sid, oldest first; at most `max_subscriptions` long.
    pub orphan_drops: Vec<(u32, u64)>,
    /// `PONG`s waiting for a barrier or for drop reports, in order.
    pub pongs: VecDeque<PendingPong>,
    /// Registered as a barrier waiter.
    pub awaiting_barrier: bool,
    pub accepted_at: Instant,
    /// Last time bytes arrived (coarse clock).
    pub last_inbound: Instant,
    /// A server `PING` went out and no bytes arrived since.
    pub ping_outstanding: bool,
    /// Asked by the sweeper: the connection is idle, release buffer pages.
    pub trim_due: bool,
    /// Buffer pages were released and no bytes arrived since.
    pub trimmed: bool,
}

impl Slot {
    pub(crate) fn new(id: u64, peer: SocketAddr, wbuf: WriteBuf, now: Instant) -> Self {
        Self {
            id,
            peer,
            phase: Phase::Handshake,
            wbuf,
            waker: None,
            notified: false,
            subs: HashMap::new(),
            unreported_drops: false,
            orphan_drops: Vec::new(),
            pongs: VecDeque::new(),
            awaiting_barrier: false,
            accepted_at: now,
            last_inbound: now,
            ping_outstanding: false,
            trim_due: false,
            trimmed: false,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Wakes the connection task once per batch of queued frames.
    pub(crate) fn notify(&mut self) {
        if !self.notified {
            self.notified = true;
            if let Some(w) = &self.waker {
                w.wake_by_ref();
            }
        }
    }

    /// Room messages and notices may fill, leaving the reserve for `ERR`
    /// and `GOAWAY`.
    pub(crate) fn message_limit(&self) -> usize {
        self.wbuf.capacity() - WRITE_RESERVE
    }

    /// Queues a message or notice; false when the write buffer is full.
    pub(crate) fn push(&mut self, frame: &ServerFrame<'_>) -> bool {
        let limit = self.message_limit();
        let ok = self.wbuf.push(frame, limit);
        if ok {
            self.notify();
        }
        ok
    }

    /// Queues an encoded `MSG` with `sid` stamped in; false when the write
    /// buffer is full.
    pub(crate) fn push_msg(&mut self, encoded: &[u8], sid: u32) -> bool {
        let limit = self.message_limit();
        let ok = self.wbuf.push_msg(encoded, sid, limit);
        if ok {
            self.notify();
        }
        ok
    }

    /// Queues an `ERR`, which may use the reserve.
    pub(crate) fn push_err(&mut self, code: ErrorCode, text: &str) -> bool {
        let frame =
            ServerFrame::Err(ErrFrame { code: code.as_u16(), fatal: code.is_fatal(), text });
        let limit = if code.is_fatal() { self.wbuf.capacity() } else { self.message_limit() };
        let ok = self.wbuf.push(&frame, limit);
        self.notify();
        ok
    }

    /// Counts a message dropped on a lossy subscription.
    pub(crate) fn record_drop(&mut self, sid: u32) {
        if let Some(sub) = self.subs.get_mut(&sid) {
            sub.dropped += 1;
            self.unreported_drops = true;
        }
    }

    /// Keeps the drop count of a subscription being removed until its
    /// `DROPPED` fits. False when too many are waiting already.
    pub(crate) fn orphan_drops(&mut self, sid: u32, count: u64, max: usize) -> bool {
        if self.orphan_drops.len() >= max {
            return false;
        }
        self.orphan_drops.push((sid, count));
        self.unreported_drops = true;
        true
    }

    /// Queues `DROPPED` notices while they fit, removed subscriptions first;
    /// true when none is left.
    pub(crate) fn report_drops(&mut self) -> bool {
        let limit = self.message_limit();
        let mut reported = 0;
        for &(sid, count) in &self.orphan_drops {
            if !self.wbuf.push(&ServerFrame::Dropped { sid, count }, limit) {
                break;
            }
            reported += 1;
        }
        self.orphan_drops.drain(..reported);
        let mut all = self.orphan_drops.is_empty();
        for (&sid, sub) in self.subs.iter_mut().filter(|(_, s)| all && s.dropped > 0) {
            let frame = ServerFrame::Dropped { sid, count: sub.dropped };
            if !self.wbuf.push(&frame, limit) {
                all = false;
                break;
            }
            sub.dropped = 0;
        }
        self.unreported_drops = !all;
        self.notify();
        all
    }
}
