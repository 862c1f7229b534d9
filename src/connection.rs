//! The connection task: one per client socket, owner of the socket and the
//! read buffer, and the only code that writes to that socket.
//!
//! Each poll flushes the write buffer (one `send` for everything queued
//! since the last one), then reads and applies whole frames. Other tasks
//! queue frames into the slot's write buffer and wake the task; they never
//! touch the socket. When the task ends, for whatever reason, its drop frees
//! the slot and returns both buffers to the pools.

use std::{
    future::{poll_fn, Future},
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Instant,
};

use corecast_proto::RawFrame;
use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use glommio::net::TcpStream;

use crate::{
    buffer::ReadBuf,
    cmd::{self, Ctx, Flow},
    counters::CoreCounters,
    shard::{ms_duration, Shard, State},
    slot::{Exit, Phase},
};

/// Reads applied in one poll before the task yields to others.
const READS_PER_POLL: usize = 4;
/// Reads discarded in one poll while draining.
const DRAIN_READS_PER_POLL: usize = 16;

/// What the connection does about input.
enum Input {
    /// Read from the socket.
    Read,
    /// Wait to be woken.
    Wait,
    /// Buffered frames were applied; flush before reading.
    Applied,
    /// Buffered frames filled subscribers; let them flush first.
    Yield,
}

/// The task's own state; dropping it frees the slot.
struct Connection {
    shard: Rc<Shard>,
    key: usize,
    stream: TcpStream,
    /// Taken out only by `Drop`, to give it back to the pool.
    rbuf: Option<ReadBuf>,
    /// `shutdown(Write)` was sent while draining.
    fin_sent: bool,
    /// Whole frames may wait in the read buffer (after a stall or a yield):
    /// apply them before reading more.
    backlog: bool,
}

/// Serves one accepted connection until it closes. Panics are caught here:
/// they close this connection and leave the rest of the core running.
pub(crate) fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    key: usize,
    rbuf: ReadBuf,
) -> impl Future<Output = ()> {
    CoreCounters::add(&shard.counters.tasks_alive, 1);
    let mut conn =
        Connection { shard, key, stream, rbuf: Some(rbuf), fin_sent: false, backlog: false };
    let run = async move { poll_fn(|cx| conn.poll(cx)).await };
    async move {
        if std::panic::AssertUnwindSafe(run).catch_unwind().await.is_err() {
            tracing::error!(key, "connection task panicked; connection closed");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(rbuf) = self.rbuf.take() {
            self.shard.free_slot(self.key, rbuf);
        }
        CoreCounters::sub(&self.shard.counters.tasks_alive, 1);
    }
}

impl Connection {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _mark = crate::probe::mark();
        let shard = Rc::clone(&self.shard);
        let mut guard = shard.state.borrow_mut();
        let st = &mut *guard;
        {
            let slot = &mut st.slots[self.key];
            // We flush before returning, so wakes for our own frames are moot.
            slot.notified = true;
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
        }
        let result = self.run(&shard, st, cx);
        if let Some(slot) = st.slots.get_mut(self.key) {
            slot.notified = false;
        }
        result
    }

    fn run(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<()> {
        self.trim_if_due(st);
        let mut reads = 0;
        loop {
            if let Err(e) = self.flush(shard, st, cx) {
                tracing::trace!(error = %e, "write failed");
                st.leave(shard, self.key, Exit::Reset, "");
            }
            match st.slots[self.key].phase {
                Phase::Closed => return Poll::Ready(()),
                Phase::Draining { .. } => return self.drain(shard, st, cx),
                Phase::Handshake | Phase::Open => {}
            }
            match self.input_gate(shard, st, cx) {
                Input::Read => {}
                Input::Wait => return Poll::Pending,
                // Flush what the retried frames queued, then look again.
                Input::Applied => continue,
                Input::Yield => return self.yield_now(shard, st, cx),
            }
            if reads == READS_PER_POLL {
                // Budget spent (and flushed above): let the other tasks run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let rbuf = self.rbuf.as_mut().expect("read buffer present while running");
            match Pin::new(&mut self.stream).poll_read(cx, rbuf.spare()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => st.leave(shard, self.key, Exit::Eof, ""),
                Poll::Ready(Err(_)) => st.leave(shard, self.key, Exit::Reset, ""),
                Poll::Ready(Ok(n)) => {
                    rbuf.filled_by(n);
                    CoreCounters::add(&shard.counters.bytes_in, n as u64);
                    let slot = &mut st.slots[self.key];
                    slot.last_inbound = shard.clock.get();
                    slot.ping_outstanding = false;
                    slot.trimmed = false;
                    if self.apply_frames(shard, st, cx) == Flow::Yield {
                        return self.yield_now(shard, st, cx);
                    }
                }
            }
        }
    }

    /// Lets the subscribers this connection filled flush before it applies
    /// more: they were woken first, so they run before it polls again.
    fn yield_now(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<()> {
        if self.flush(shard, st, cx).is_err() {
            st.leave(shard, self.key, Exit::Reset, "");
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// An idle connection hands its buffers' touched pages back to the
    /// kernel, so idle connections cost little more than their slot.
    fn trim_if_due(&mut self, st: &mut State) {
        let slot = &mut st.slots[self.key];
        if !std::mem::take(&mut slot.trim_due) {
            return;
        }
        slot.wbuf.trim();
        if let Some(rbuf) = self.rbuf.as_mut() {
            rbuf.trim();
        }
        slot.trimmed = true;
    }

    /// Whether the connection may take more input now. It must wait while
    /// shutting down or stalled (the stall's owner wakes it: staging room, a
    /// barrier, a flush); applying buffered frames may also queue output.
    fn input_gate(&mut self, shard: &Shard, st: &mut State, cx: &Context<'_>) -> Input {
        if shard.shutting_down.get() {
            return Input::Wait;
        }
        if !self.backlog {
            return Input::Read;
        }
        // Frames read earlier wait at the front of the buffer.
        match self.apply_frames(shard, st, cx) {
            Flow::Stall => Input::Wait,
            Flow::Yield => Input::Yield,
            Flow::Continue | Flow::Stop => Input::Applied,
        }
    }

    /// Applies every whole frame in the read buffer. Returns how it stopped:
    /// `Continue` when it needs more bytes.
    fn apply_frames(&mut self, shard: &Shard, st: &mut State, cx: &Context<'_>) -> Flow {
        let waker = cx.waker();
        let rbuf = self.rbuf.as_mut().expect("read buffer present while running");
        let max_frame = shard.cfg.max_frame;
        loop {
            let mut src = rbuf.filled();
            let before = src.len();
            let flow = match RawFrame::split(&mut src, max_frame) {
                Ok(None) => {
                    self.backlog = false;
                    return Flow::Continue;
                }
                Ok(Some(raw)) => {
                    let mut ctx = Ctx { shard, st, key: self.key, waker };
                    cmd::dispatch(&mut ctx, raw)
                }
                Err(e) => {
                    let mut ctx = Ctx { shard, st, key: self.key, waker };
                    cmd::refuse_decode(&mut ctx, &e)
                }
            };
            let used = before - src.len();
            match flow {
                Flow::Continue => rbuf.consume(used),
                Flow::Yield => {
                    rbuf.consume(used);
                    self.backlog = true;
                    return Flow::Yield;
                }
                Flow::Stall => {
                    self.backlog = true;
                    return Flow::Stall;
                }
                Flow::Stop => {
                    rbuf.clear();
                    self.backlog = false;
                    return Flow::Stop;
                }
            }
        }
    }

    /// Writes what is queued, in one `send` when the socket takes it all,
    /// then queues the notices that were waiting for room.
    fn flush(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> io::Result<()> {
        self.release_notices(shard, st);
        loop {
            let slot = &mut st.slots[self.key];
            let pending = slot.wbuf.pending();
            if pending.is_empty() {
                return Ok(());
            }
            match Pin::new(&mut self.stream).poll_write(cx, pending) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    slot.wbuf.consume(n);
                    CoreCounters::add(&shard.counters.bytes_out, n as u64);
                    self.release_notices(shard, st);
                }
            }
        }
    }

    /// Queues the notices that were waiting for room or for a barrier:
    /// `DROPPED` reports, then `PONG`s.
    fn release_notices(&mut self, shard: &Shard, st: &mut State) {
        let slot = &mut st.slots[self.key];
        if !slot.is_open() {
            return;
        }
        if slot.unreported_drops {
            slot.report_drops();
        }
        if !slot.pongs.is_empty() && !cmd::release_pongs(st, self.key) {
            st.leave(shard, self.key, Exit::SlowConsumer, "");
        }
    }

    /// After the final frame went out: half-close, then read and discard
    /// until the client closes too (or the sweeper ends the linger), so the
    /// client sees our last frame instead of a reset.
    fn drain(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<()> {
        let slot = &mut st.slots[self.key];
        if !slot.wbuf.is_empty() {
            return Poll::Pending;
        }
        if !self.fin_sent {
            if let Poll::Ready(Err(_)) = Pin::new(&mut self.stream).poll_close(cx) {
                return Poll::Ready(());
            }
            self.fin_sent = true;
            // Everything is out: wait for the client's close only briefly.
            let linger = Instant::now() + ms_duration(shard.cfg.close_linger_ms);
            if let Phase::Draining { until } = &mut slot.phase {
                *until = (*until).min(linger);
            }
        }
        let rbuf = self.rbuf.as_mut().expect("read buffer present while running");
        for _ in 0..DRAIN_READS_PER_POLL {
            rbuf.clear();
            match Pin::new(&mut self.stream).poll_read(cx, rbuf.spare()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
