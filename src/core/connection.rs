//! The connection task: one per client socket, the only code that reads from
//! or writes to that socket.
//!
//! Each poll flushes the output queue (one `sendmsg` gathers up to 512
//! slices: chunks, and the header and body of each message whose body is
//! shared), then reads into the core's scratch and applies whole frames.
//! Bytes left over after the last whole frame move into chunks of the
//! connection's own, and a frame too large for the scratch is read into a
//! buffer of its own size; both are charged to the core's budget. Other
//! tasks queue frames in the slot and wake the task; they never touch the
//! socket. When the task ends, for whatever reason, its drop frees the slot
//! and everything it holds.
//!
//! A connection from the TLS port reads and writes through its [`Tls`]
//! instead (boxed: plain connections carry one pointer for it, and pay one
//! check per read and per flush): reads decrypt into the same buffers, and
//! flushes hand the output queue's slices to rustls and push its records
//! out. Ciphertext rustls still holds is output not yet written: the write
//! deadline runs while the socket refuses it, and a drain ends only once it
//! and the `close_notify` are out.

use std::{
    future::{poll_fn, Future},
    io::{self, IoSlice},
    os::fd::AsRawFd,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Instant,
};

use corecast_proto::{ErrorCode, RawFrame, LEN_PREFIX};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use glommio::{net::TcpStream, timer::Timer};

use super::{
    pressure::Hold,
    shard::{Shard, State, READ_SCRATCH},
    slot::{ms_duration, Exit, LargeFrame, Phase, WebExit},
    unsent::Proof,
};
use crate::{
    cmd::{self, Ctx, Flow},
    counters::CoreCounters,
    mem::Charge,
    mesh::barrier,
    route,
    tls::session::Tls,
    web::session::{self, Web},
};

/// Reads applied in one poll before the task yields to others.
const READS_PER_POLL: usize = 4;
/// Reads discarded in one poll while draining.
const DRAIN_READS_PER_POLL: usize = 16;
/// Slices handed to one `sendmsg` (the kernel takes up to 1024): 2 MiB of
/// whole chunks, or about 256 messages with shared bodies.
const SEND_SLICES: usize = 512;
/// Slices tried first: enough for most flushes, cheap to set up.
const FEW_SLICES: usize = 32;
/// Bytes of an SSE stream's output queue turned into events at a time:
/// the rest waits in the queue, where its limits apply.
const SSE_STEP: usize = 16 << 10;

/// The task's own state; dropping it frees the slot.
struct Connection {
    shard: Rc<Shard>,
    key: usize,
    stream: TcpStream,
    /// `shutdown(Write)` was sent while draining.
    fin_sent: bool,
    /// The client closed its side while we were draining.
    peer_eof: bool,
    /// Whole frames wait in the connection's input (after a stall or a
    /// yield): apply them before reading more.
    backlog: bool,
    /// The frame at the front of the input was deferred once for the
    /// budget; the next attempt applies it.
    deferred: bool,
    /// A subscriber that keeps reading holds the connection's reads back;
    /// boxed, so that the many connections that never publish carry one
    /// pointer for it.
    hold: Option<Box<Held>>,
    /// Lifts the kernel's limit on unsent output once the client reads.
    proof: Proof,
    /// Reads wait for this timer: the publisher is over its user's rate.
    paused: Option<Timer>,
    /// The TLS session of a connection from the TLS port.
    tls: Option<Box<Tls>>,
    /// The HTTP request, then the WebSocket session, of a connection from
    /// the web port.
    web: Option<Box<Web>>,
}

/// A connection held back for a subscriber that keeps reading.
enum Held {
    /// A delivery from the input being applied left subscriber `by` near
    /// `max_pending`: the next read waits for it.
    Next { by: usize },
    /// Reads wait ([`Hold`]); the timer wakes the task to look again.
    Waiting(Hold, Timer),
}

/// Serves one accepted connection until it closes. Panics are caught here:
/// they close this connection and leave the rest of the core running.
pub(crate) fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    key: usize,
    (tls, web): (Option<Box<Tls>>, Option<Box<Web>>),
) -> impl Future<Output = ()> {
    CoreCounters::add(&shard.counters.tasks_alive, 1);
    if tls.is_some() {
        CoreCounters::add(&shard.counters.tls_connections, 1);
    }
    if web.is_some() {
        CoreCounters::add(&shard.counters.web_connections, 1);
    }
    let mut conn = Connection {
        shard,
        key,
        stream,
        fin_sent: false,
        peer_eof: false,
        backlog: false,
        deferred: false,
        hold: None,
        proof: Proof::new(),
        paused: None,
        tls,
        web,
    };
    let run = async move { poll_fn(|cx| conn.poll(cx)).await };
    async move {
        if std::panic::AssertUnwindSafe(run).catch_unwind().await.is_err() {
            tracing::error!(key, "connection task panicked; connection closed");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shard.free_slot(self.key);
        CoreCounters::sub(&self.shard.counters.tasks_alive, 1);
        if self.tls.is_some() {
            CoreCounters::sub(&self.shard.counters.tls_connections, 1);
        }
        if self.web.is_some() {
            CoreCounters::sub(&self.shard.counters.web_connections, 1);
        }
    }
}

impl Connection {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _mark = crate::probe::mark();
        let shard = Rc::clone(&self.shard);
        let mut guard = shard.state.borrow_mut();
        let st = &mut *guard;
        st.slots[self.key].begin_poll(cx.waker());
        let result = self.run(&shard, st, cx);
        if let Some(slot) = st.slots.get_mut(self.key) {
            slot.end_poll();
        }
        result
    }

    fn run(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<()> {
        let mut reads = 0;
        loop {
            self.flush_or_leave(shard, st, cx);
            match st.slots[self.key].phase() {
                Phase::Closed => return Poll::Ready(()),
                Phase::Draining { .. } => return self.drain(shard, st, cx),
                Phase::Handshake | Phase::Open => {}
            }
            if shard.shutting_down.get() {
                return Poll::Pending;
            }
            if self.held(shard, st, cx) || self.paused(cx) {
                return Poll::Pending;
            }
            let flow = if self.backlog {
                self.apply_input(shard, st, cx, 0)
            } else if reads == READS_PER_POLL {
                // Budget spent (and flushed above): let the other tasks run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            } else {
                reads += 1;
                match self.read(shard, st, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(flow) => flow,
                }
            };
            match flow {
                Flow::Continue | Flow::Stop => {}
                Flow::Stall => return Poll::Pending,
                Flow::Yield | Flow::Defer => return self.yield_now(shard, st, cx),
                Flow::Hold { by, .. } => self.hold_next(by),
                Flow::Wait(until) => {
                    let wait = until.saturating_duration_since(Instant::now());
                    self.paused = Some(Timer::new(wait));
                }
            }
        }
    }

    /// Whether reads wait for the publish rate; the timer wakes the task.
    fn paused(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.paused.as_mut() else { return false };
        if Pin::new(timer).poll(cx).is_pending() {
            return true;
        }
        self.paused = None;
        false
    }

    /// Holds the next read for subscriber `by`, unless a hold is on already.
    fn hold_next(&mut self, by: usize) {
        self.hold.get_or_insert_with(|| Box::new(Held::Next { by }));
    }

    /// Whether reads wait for the subscriber the connection is held for
    /// (starting the hold the last read asked for); the timer is armed to
    /// look again when they do.
    fn held(&mut self, shard: &Shard, st: &State, cx: &mut Context<'_>) -> bool {
        let Some(held) = self.hold.as_deref_mut() else { return false };
        let max_pending = st.mem.max_pending();
        if let Held::Next { by } = *held {
            match Hold::start(by, &st.slots, max_pending) {
                Some(hold) => {
                    CoreCounters::add(&shard.counters.publisher_holds, 1);
                    *held = Held::Waiting(hold, Timer::new(Hold::TICK));
                }
                None => {
                    self.hold = None;
                    return false;
                }
            }
        }
        let Held::Waiting(hold, timer) = held else { return false };
        if !hold.holds(&st.slots, max_pending, Instant::now()) {
            self.hold = None;
            return false;
        }
        while Pin::new(&mut *timer).poll(cx).is_ready() {
            *timer = Timer::new(Hold::TICK);
        }
        true
    }

    fn flush_or_leave(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) {
        if let Err(e) = self.flush(shard, st, cx) {
            tracing::trace!(error = %e, "write failed");
            st.leave(shard, self.key, Exit::Reset, "");
            // A draining connection has nothing left to deliver either.
            st.slots[self.key].close();
        }
    }

    /// Lets the subscribers this connection filled flush before it applies
    /// more: they were woken first, so they run before it polls again.
    fn yield_now(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<()> {
        self.flush_or_leave(shard, st, cx);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Reads what the socket has and applies the whole frames.
    fn read(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<Flow> {
        if st.slots[self.key].input().large.is_some() {
            return self.read_large(shard, st, cx);
        }
        let mut scratch = st.take_read_scratch();
        let held = st.slots[self.key].input().stash.len();
        let result = self.poll_in(shard, cx, &mut scratch[held..]);
        st.read_scratch = scratch;
        self.note_handshake(shard, st);
        self.note_credential(st);
        let n = match result {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(why)) => return Poll::Ready(self.leave(shard, st, why)),
            Poll::Ready(Ok(n)) => n,
        };
        self.note_inbound(shard, st, n);
        Poll::Ready(self.apply_input(shard, st, cx, n))
    }

    /// Reads what the socket has into `dst`, through TLS for a connection
    /// that has it, and through the web session for one from the web port:
    /// `Ok(n > 0)` (0 from a web session with only an answer of its own to
    /// send), or why the connection ends.
    #[inline]
    fn poll_in(
        &mut self,
        shard: &Shard,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<Result<usize, Exit>> {
        let (stream, tls) = (&mut self.stream, self.tls.as_deref_mut());
        if let Some(web) = self.web.as_deref_mut() {
            let mut raw = shard.web_scratch();
            let was_websocket = web.is_websocket();
            let read = match tls {
                Some(tls) => web.poll_read(cx, &mut raw, dst, |cx, buf| {
                    tls.poll_read(stream, cx, &mut shard.tls_scratch(), buf)
                }),
                None => web.poll_read(cx, &mut raw, dst, |cx, buf| read_plain(stream, cx, buf)),
            };
            if !was_websocket && web.is_websocket() {
                CoreCounters::add(&shard.counters.ws_sessions, 1);
            }
            return read;
        }
        if let Some(tls) = tls {
            let mut scratch = shard.tls_scratch();
            return tls.poll_read(stream, cx, &mut scratch, dst);
        }
        read_plain(stream, cx, dst)
    }

    /// Records a TLS handshake that just completed: counted, and its
    /// version and client subject kept on the slot before any frame of
    /// the session is applied.
    fn note_handshake(&mut self, shard: &Shard, st: &mut State) {
        let Some(tls) = self.tls.as_deref_mut() else { return };
        let Some(done) = tls.take_established() else { return };
        CoreCounters::add(&shard.counters.tls_handshakes, 1);
        st.slots[self.key].tls_established(done.version, done.subject);
    }

    /// Keeps on the slot the credential a web request carried, for a
    /// `HELLO` that carries none.
    fn note_credential(&mut self, st: &mut State) {
        let Some(web) = self.web.as_deref_mut() else { return };
        if let Some(credential) = web.take_credential() {
            st.slots[self.key].present_at_upgrade(credential);
        }
    }

    fn leave(&mut self, shard: &Shard, st: &mut State, why: Exit) -> Flow {
        st.leave(shard, self.key, why, "");
        Flow::Stop
    }

    fn note_inbound(&mut self, shard: &Shard, st: &mut State, n: usize) {
        CoreCounters::add(&shard.counters.bytes_in, n as u64);
        st.slots[self.key].note_inbound(shard.clock.get(), n);
    }

    /// Applies the connection's input: the stash, moved in front of the
    /// `fresh` bytes just read into the scratch (or a complete large frame).
    /// Whatever is left moves back into the connection's own memory.
    fn apply_input(
        &mut self,
        shard: &Shard,
        st: &mut State,
        cx: &Context<'_>,
        fresh: usize,
    ) -> Flow {
        if st.slots[self.key].input().large.as_ref().is_some_and(|l| l.filled == l.buf.len()) {
            return self.apply_large(shard, st, cx);
        }
        let mut scratch = st.take_read_scratch();
        let State { slots, mem, .. } = &mut *st;
        let held = slots[self.key].input_mut().stash.move_into(mem, &mut scratch);
        let mut src = &scratch[..held + fresh];
        let flow = self.apply_frames(shard, st, cx, &mut src);
        if st.slots[self.key].is_live() {
            self.keep_leftover(shard, st, src);
        }
        st.read_scratch = scratch;
        flow
    }

    /// Applies whole frames from the front of `src`, leaving in it what was
    /// not applied. Returns how it stopped: `Continue` when it needs more
    /// bytes.
    fn apply_frames(
        &mut self,
        shard: &Shard,
        st: &mut State,
        cx: &Context<'_>,
        src: &mut &[u8],
    ) -> Flow {
        let max_frame = shard.cfg().max_frame;
        // Answers pile up fastest when a client pipelines many frames: let
        // them out before they reach max_pending.
        let own_output_limit = st.mem.max_pending() / 2;
        self.backlog = false;
        loop {
            let before = *src;
            let waker = cx.waker();
            let mut ctx = Ctx { shard, st, key: self.key, waker, deferred: &mut self.deferred };
            let flow = match RawFrame::split(src, max_frame) {
                Ok(None) => return Flow::Continue,
                Ok(Some(raw)) => cmd::dispatch(&mut ctx, raw, src),
                Err(e) => cmd::refuse_decode(&mut ctx, &e),
            };
            let flow = match flow {
                // Like nats-server's stall, a hold comes between reads, not
                // between the frames of one read, unless the subscribers
                // are to flush first anyway.
                Flow::Hold { by, flush } => {
                    self.hold_next(by);
                    if flush {
                        Flow::Yield
                    } else {
                        Flow::Continue
                    }
                }
                flow => flow,
            };
            let flow = match flow {
                Flow::Continue if st.slots[self.key].out().len() > own_output_limit => Flow::Yield,
                flow => flow,
            };
            match flow {
                Flow::Continue | Flow::Hold { .. } => {}
                Flow::Yield => {
                    self.backlog = !src.is_empty();
                    return Flow::Yield;
                }
                Flow::Stall => {
                    *src = before;
                    self.backlog = true;
                    return Flow::Stall;
                }
                Flow::Defer => {
                    *src = before;
                    self.backlog = true;
                    return Flow::Yield;
                }
                Flow::Wait(until) => {
                    *src = before;
                    self.backlog = true;
                    return Flow::Wait(until);
                }
                Flow::Stop => {
                    *src = &[];
                    return Flow::Stop;
                }
            }
        }
    }

    /// Moves input left after the last applied frame into the connection's
    /// own memory: chunks, or a buffer of its own for a frame larger than
    /// the scratch. Without budget for it the connection is closed.
    fn keep_leftover(&mut self, shard: &Shard, st: &mut State, left: &[u8]) {
        if left.is_empty() {
            return;
        }
        let frame_len = RawFrame::peek_len(left).map_or(0, |len| LEN_PREFIX + len as usize);
        if !self.backlog && frame_len > READ_SCRATCH {
            self.start_large_frame(shard, st, left, frame_len);
            return;
        }
        let State { slots, mem, .. } = &mut *st;
        if slots[self.key].input_mut().stash.push(mem, left, Charge::Budget) {
            return;
        }
        if self.make_room(shard, st, left.len()) {
            let State { slots, mem, .. } = &mut *st;
            if slots[self.key].input_mut().stash.push(mem, left, Charge::Budget) {
                return;
            }
        }
        st.leave(shard, self.key, Exit::OutOfMemory, "");
    }

    fn start_large_frame(&mut self, shard: &Shard, st: &mut State, left: &[u8], frame_len: usize) {
        if !st.slots[self.key].is_open() {
            let text = "the first frame must be HELLO";
            st.leave(shard, self.key, Exit::Protocol(ErrorCode::HandshakeRequired), text);
            return;
        }
        let buf = match st.mem.take_large(frame_len) {
            Some(buf) => Some(buf),
            None if self.make_room(shard, st, frame_len) => st.mem.take_large(frame_len),
            None => None,
        };
        let Some(mut buf) = buf else {
            st.leave(shard, self.key, Exit::OutOfMemory, "");
            return;
        };
        buf[..left.len()].copy_from_slice(left);
        st.slots[self.key].input_mut().large = Some(LargeFrame { buf, filled: left.len() });
    }

    /// Applies the budget policy to connections holding more than this one.
    fn make_room(&mut self, shard: &Shard, st: &mut State, len: usize) -> bool {
        let State { slots, mem, doomed, .. } = &mut *st;
        let made = State::policy(shard, doomed).make_room(slots, mem, self.key, len);
        route::reap(shard, st);
        made
    }

    /// Reads the rest of a large frame straight into its buffer (never past
    /// its end), and applies it once complete.
    fn read_large(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<Flow> {
        let large = st.slots[self.key].input_mut().large.as_mut().expect("checked by the caller");
        let result = self.poll_in(shard, cx, &mut large.buf[large.filled..]);
        let n = match result {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(why)) => return Poll::Ready(self.leave(shard, st, why)),
            Poll::Ready(Ok(n)) => n,
        };
        let large = st.slots[self.key].input_mut().large.as_mut().expect("checked by the caller");
        large.filled += n;
        let complete = large.filled == large.buf.len();
        self.note_inbound(shard, st, n);
        Poll::Ready(if complete { self.apply_large(shard, st, cx) } else { Flow::Continue })
    }

    fn apply_large(&mut self, shard: &Shard, st: &mut State, cx: &Context<'_>) -> Flow {
        let large = st.slots[self.key].input_mut().large.take().expect("checked by the caller");
        let mut src = &large.buf[..];
        let flow = self.apply_frames(shard, st, cx, &mut src);
        let stalled = !src.is_empty();
        let slot = &mut st.slots[self.key];
        if stalled && slot.is_live() {
            slot.input_mut().large = Some(large);
        } else {
            st.mem.give_large(large.buf);
        }
        flow
    }

    /// Writes what is queued, then queues the notices that were waiting for
    /// room. Records when the socket stopped taking bytes, for the write
    /// deadline.
    fn flush(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> io::Result<()> {
        if self.web.is_some() {
            return self.flush_web(shard, st, cx);
        }
        if self.tls.is_some() {
            return self.flush_tls(shard, st, cx);
        }
        self.release_notices(shard, st);
        loop {
            let State { slots, mem, .. } = &mut *st;
            let slot = &mut slots[self.key];
            if slot.out().is_empty() {
                slot.flushed();
                return Ok(());
            }
            let sent = {
                // Most flushes need few slices: only a long queue pays for
                // setting up the large array.
                let mut few = [IoSlice::new(&[]); FEW_SLICES];
                let n = slot.out().slices(mem, &mut few);
                if n < FEW_SLICES {
                    self.send(cx, &few[..n])
                } else {
                    let mut many = [IoSlice::new(&[]); SEND_SLICES];
                    let n = slot.out().slices(mem, &mut many);
                    self.send(cx, &many[..n])
                }
            };
            match sent {
                Poll::Pending => {
                    slot.write_blocked();
                    return Ok(());
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    slot.sent(mem, n);
                    self.proof.took(&self.stream, n);
                    CoreCounters::add(&shard.counters.bytes_out, n as u64);
                    shard.counters.histograms.write_bytes.observe(n as u64, 1);
                    self.release_notices(shard, st);
                }
            }
        }
    }

    /// [`Self::flush`] through the web session: its own bytes (the HTTP
    /// answer, frame headers, control frames), then the output queue as
    /// the payload of binary frames, with no copy; through TLS when the
    /// port has it (the ciphertext rustls holds goes out first, as in
    /// [`Self::flush_tls`]).
    fn flush_web(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> io::Result<()> {
        self.release_notices(shard, st);
        loop {
            self.convert_sse(shard, st, cx);
            let State { slots, mem, .. } = &mut *st;
            let slot = &mut slots[self.key];
            if !self.push_tls(slot, cx)? {
                return Ok(());
            }
            let Some(web) = self.web.as_deref_mut() else { return Ok(()) };
            let queued = slot.out().len();
            let write = web.next_write(queued);
            if write.own.is_empty() && write.queue_limit == 0 {
                if queued == 0 {
                    slot.flushed();
                }
                return Ok(());
            }
            let (stream, tls) = (&mut self.stream, self.tls.as_deref_mut());
            let send = |cx: &mut Context<'_>, parts: &[IoSlice<'_>]| match tls {
                Some(tls) => Poll::Ready(tls.take_plaintext(parts)),
                None => send_parts(stream, cx, parts),
            };
            let sent = {
                // As in a plain flush: few slices first, many only for a
                // long queue (a fan-out's shared bodies).
                let mut queue = [IoSlice::new(&[]); FEW_SLICES];
                let n = if write.queue_limit > 0 { slot.out().slices(mem, &mut queue) } else { 0 };
                if n < FEW_SLICES {
                    let mut parts = [IoSlice::new(&[]); FEW_SLICES + 1];
                    let k = session::cut(write.own, &queue[..n], write.queue_limit, &mut parts);
                    send(cx, &parts[..k])
                } else {
                    let mut queue = [IoSlice::new(&[]); SEND_SLICES];
                    let n = slot.out().slices(mem, &mut queue);
                    let mut parts = [IoSlice::new(&[]); SEND_SLICES + 1];
                    let k = session::cut(write.own, &queue[..n], write.queue_limit, &mut parts);
                    send(cx, &parts[..k])
                }
            };
            let n = match sent {
                Poll::Pending => {
                    slot.write_blocked();
                    return Ok(());
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => n,
            };
            let payload = web.wrote(n);
            if payload > 0 {
                slot.sent(mem, payload);
            }
            // An SSE stream's text is all its own: count what went out.
            let payload = if web.is_sse() { n } else { payload };
            if self.tls.is_none() {
                self.proof.took(&self.stream, n);
            }
            CoreCounters::add(&shard.counters.bytes_out, payload as u64);
            shard.counters.histograms.write_bytes.observe(n as u64, 1);
            self.release_notices(shard, st);
        }
    }

    /// Writes the ciphertext rustls holds, for a web connection over TLS:
    /// whether more may be handed to rustls now (all of it is out and the
    /// handshake is complete). Always true without TLS.
    fn push_tls(&mut self, slot: &mut super::slot::Slot, cx: &mut Context<'_>) -> io::Result<bool> {
        let Some(tls) = self.tls.as_deref_mut() else { return Ok(true) };
        let pushed = tls.push(&mut self.stream, cx)?;
        if pushed.bytes > 0 {
            self.proof.took(&self.stream, pushed.bytes);
        }
        if pushed.blocked {
            slot.write_blocked();
            return Ok(false);
        }
        Ok(tls.is_established())
    }

    /// Turns the front of an SSE stream's output queue into what its client
    /// is sent, once what was made of the last is out: until some is made,
    /// [`SSE_STEP`] bytes are read or the queue is empty. Stopped at the
    /// step with nothing made (messages it drops), the task wakes itself to
    /// go on after the others. A stream refused (its `HELLO` or a `SUB`
    /// answered with `ERR`) leaves with its status.
    fn convert_sse(&mut self, shard: &Shard, st: &mut State, cx: &Context<'_>) {
        let Some(web) = self.web.as_deref_mut().filter(|web| web.converts()) else { return };
        let State { slots, mem, .. } = &mut *st;
        let slot = &mut slots[self.key];
        let mut read = 0;
        let mut refused = None;
        while read < SSE_STEP && !slot.out().is_empty() && !web.wants_write() {
            let mut parts = [IoSlice::new(&[]); FEW_SLICES];
            let n = slot.out().slices(mem, &mut parts);
            let mut taken = 0;
            for part in &parts[..n] {
                let (used, converted) = web.convert(part);
                taken += used;
                match converted {
                    Ok(tally) => count_sse(shard, tally),
                    Err(status) => refused = Some(status),
                }
                if refused.is_some() || used < part.len() || taken >= SSE_STEP {
                    break;
                }
            }
            slot.sent(mem, taken);
            read += taken;
            if refused.is_some() {
                break;
            }
        }
        if !web.wants_write() && !slot.out().is_empty() {
            cx.waker().wake_by_ref();
        }
        if let Some(status) = refused {
            st.leave(shard, self.key, Exit::Web(WebExit::Refused(status)), "");
        }
    }

    /// [`Self::flush`] through TLS: the ciphertext rustls holds goes out
    /// first; only then does rustls take more of the queue (within its
    /// buffer), so the queue shrinks as the socket takes records and the
    /// write deadline sees a socket that refuses them.
    fn flush_tls(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> io::Result<()> {
        self.release_notices(shard, st);
        loop {
            let Some(tls) = self.tls.as_deref_mut() else { return Ok(()) };
            let pushed = tls.push(&mut self.stream, cx)?;
            if pushed.bytes > 0 {
                self.proof.took(&self.stream, pushed.bytes);
            }
            let State { slots, mem, .. } = &mut *st;
            let slot = &mut slots[self.key];
            if pushed.blocked {
                slot.write_blocked();
                return Ok(());
            }
            if slot.out().is_empty() {
                slot.flushed();
                return Ok(());
            }
            if !tls.is_established() {
                // The session's frames wait for the handshake.
                return Ok(());
            }
            let mut parts = [IoSlice::new(&[]); FEW_SLICES];
            let n = slot.out().slices(mem, &mut parts);
            let taken = tls.take_plaintext(&parts[..n])?;
            if taken == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            slot.sent(mem, taken);
            CoreCounters::add(&shard.counters.bytes_out, taken as u64);
            shard.counters.histograms.write_bytes.observe(taken as u64, 1);
            self.release_notices(shard, st);
        }
    }

    /// One `sendmsg` of `parts`; when the socket is full, arms glommio's
    /// wake-up for when it has room.
    fn send(&mut self, cx: &mut Context<'_>, parts: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        send_parts(&mut self.stream, cx, parts)
    }

    /// Queues the notices that were waiting for room or for a barrier:
    /// `DROPPED` reports, then `PONG`s.
    fn release_notices(&mut self, shard: &Shard, st: &mut State) {
        let State { slots, mem, .. } = &mut *st;
        let slot = &mut slots[self.key];
        if !slot.is_open() {
            return;
        }
        if slot.has_unreported_drops() {
            slot.report_drops(mem);
        }
        if !slot.pongs().is_empty() {
            barrier::release_pongs(shard, st, self.key);
        }
    }

    /// A closing connection: flush the final frame, then half-close, while
    /// reading and discarding input the whole time, so unread input never
    /// turns the close into a reset that would destroy what was queued.
    /// Ends when the client has closed too and everything is out, or when
    /// the sweeper ends the drain at its deadline.
    fn drain(&mut self, shard: &Shard, st: &mut State, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(web) = self.web.as_deref_mut() {
            if st.slots[self.key].out().is_empty() && !self.fin_sent {
                // The session's end, before the socket's.
                let code = match st.slots[self.key].exit() {
                    Some(Exit::Shutdown | Exit::LameDuck) => 1001,
                    Some(Exit::Protocol(_)) => 1008,
                    _ => 1000,
                };
                web.close(code, "");
                if self.flush_web(shard, st, cx).is_err() {
                    return Poll::Ready(());
                }
            }
        }
        let flushed = st.slots[self.key].out().is_empty()
            && self.tls.as_deref().is_none_or(|tls| !tls.wants_write())
            && self.web.as_deref().is_none_or(|web| !web.wants_write());
        if let Some(tls) = self.tls.as_deref_mut().filter(|_| flushed && !self.fin_sent) {
            if !tls.close_notify_sent() {
                // The session's end, before the socket's.
                tls.close_notify();
                match tls.push(&mut self.stream, cx) {
                    Ok(pushed) if !pushed.blocked => {}
                    Ok(_) => return Poll::Pending,
                    Err(_) => return Poll::Ready(()),
                }
            }
        }
        if flushed && !self.fin_sent {
            if let Poll::Ready(Err(_)) = Pin::new(&mut self.stream).poll_close(cx) {
                return Poll::Ready(());
            }
            self.fin_sent = true;
            // Everything is out: wait for the client's close only briefly.
            let linger = Instant::now() + ms_duration(shard.cfg().close_linger_ms);
            st.slots[self.key].drain_until(linger);
        }
        if self.peer_eof {
            return if self.fin_sent { Poll::Ready(()) } else { Poll::Pending };
        }
        for _ in 0..DRAIN_READS_PER_POLL {
            if st.read_scratch.is_empty() {
                st.read_scratch = st.take_read_scratch();
            }
            match Pin::new(&mut self.stream).poll_read(cx, &mut st.read_scratch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(0)) => {
                    self.peer_eof = true;
                    return if self.fin_sent { Poll::Ready(()) } else { Poll::Pending };
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn count_sse(shard: &Shard, tally: crate::web::sse::Tally) {
    let c = &shard.counters;
    CoreCounters::add(&c.sse_streams, u64::from(tally.opened));
    CoreCounters::add(&c.sse_events, tally.events);
    CoreCounters::add(&c.sse_dropped, tally.dropped);
}

/// Reads what the socket has: `Ok(n > 0)`, or how it ended.
fn read_plain(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    dst: &mut [u8],
) -> Poll<Result<usize, Exit>> {
    match Pin::new(stream).poll_read(cx, dst) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(0)) => Poll::Ready(Err(Exit::Eof)),
        Poll::Ready(Err(_)) => Poll::Ready(Err(Exit::Reset)),
        Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
    }
}

/// Sends `parts` at once when the socket takes them; otherwise waits for
/// it to take the first.
fn send_parts(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    parts: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    match send_vectored(stream, parts) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Pin::new(stream).poll_write(cx, &parts[0])
        }
        other => Poll::Ready(other),
    }
}

/// One `sendmsg` of several slices (glommio's own vectored write sends only
/// the first), never blocking and never raising `SIGPIPE`.
pub(crate) fn send_vectored(stream: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; an all-zero value is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix; sendmsg only reads them.
    msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = parts.len() as _;
    // SAFETY: the fd is the stream's open socket and `msg` points at
    // `parts`, which outlive the call.
    let rc =
        unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}
