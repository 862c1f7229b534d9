//! Client frames and what each one does, one file per command.
//!
//! [`dispatch`] takes one frame cut out of a connection's read buffer and
//! applies it to the core's state. A command answers with a [`Flow`]: go on
//! with the next frame, yield to the subscribers it filled, stop reading for
//! now (the frame stays in the buffer and is applied again later), or stop for good because the connection is
//! leaving.

mod hello;
mod ping;
mod publish;
mod stats;
mod sub;
mod unsub;

use std::task::Waker;

use corecast_proto::{
    ClientFrame, ClientFrame11, DecodeError, ErrFrame, ErrorCode, RawFrame, ServerFrame,
};

use crate::{
    core::{
        shard::{Shard, State},
        slot::{Exit, Phase, Slot},
    },
    counters::CoreCounters,
    mem::Memory,
};

/// What the connection does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The frame took effect; decode the next one.
    Continue,
    /// The frame took effect but filled some subscriber past half its write
    /// buffer; let the woken subscribers flush before the next frame.
    Yield,
    /// The frame cannot take effect yet; keep it and stop reading until the
    /// connection is woken.
    Stall,
    /// The frame took effect, and left subscriber `by`, which keeps
    /// reading, near `max_pending`: read nothing more until it has written
    /// some, within a bound ([`crate::core::pressure::Hold`]). With
    /// `flush`, as after `Yield`, the subscribers flush before the next
    /// frame; without, the frames already read go on first.
    Hold { by: usize, flush: bool },
    /// The frame should wait for the subscribers to write once: keep it,
    /// yield, and apply it on the next turn (whatever the budget then).
    Defer,
    /// The connection is leaving; read nothing more.
    Stop,
}

/// Everything a command may touch.
pub(crate) struct Ctx<'a> {
    pub shard: &'a Shard,
    pub st: &'a mut State,
    /// The connection's slab key.
    pub key: usize,
    /// The connection task, to park it on a stall.
    pub waker: &'a Waker,
    /// The frame was deferred once for the budget already.
    pub deferred: &'a mut bool,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("core", &self.shard.core).field("key", &self.key).finish()
    }
}

impl Ctx<'_> {
    pub(crate) fn slot(&mut self) -> &mut Slot {
        &mut self.st.slots[self.key]
    }

    /// The connection's slot and the core's memory, borrowed together.
    pub(crate) fn slot_and_memory(&mut self) -> (&mut Slot, &mut Memory) {
        (&mut self.st.slots[self.key], &mut self.st.mem)
    }

    /// Refuses one frame with a non-fatal `ERR`; the session goes on. A
    /// client that does not read its errors is cut off like any slow one.
    pub(crate) fn refuse(&mut self, code: ErrorCode, text: &str) -> Flow {
        CoreCounters::add(&self.shard.counters.protocol_errors, 1);
        let frame = ServerFrame::Err(ErrFrame { code: code.as_u16(), fatal: false, text });
        if self.st.push(self.shard, self.key, &frame) {
            Flow::Continue
        } else {
            Flow::Stop
        }
    }

    /// Ends the session with a fatal `ERR`.
    pub(crate) fn fail(&mut self, code: ErrorCode, text: &str) -> Flow {
        self.close(Exit::Protocol(code), text)
    }

    fn close(&mut self, why: Exit, text: &str) -> Flow {
        self.st.leave(self.shard, self.key, why, text);
        Flow::Stop
    }
}

/// Applies one frame; `rest` is the input after it, where a `PUB` may take
/// the ones that follow it to the same topic.
pub(crate) fn dispatch<'a>(ctx: &mut Ctx<'_>, raw: RawFrame<'a>, rest: &mut &'a [u8]) -> Flow {
    let frame = match decode(ctx, raw) {
        Ok(frame) => frame,
        Err(e) => return refuse_decode(ctx, &e),
    };
    let in_handshake = ctx.slot().phase() == Phase::Handshake;
    match frame {
        ClientFrame11::Hello { hello, v1_1, no_echo, .. } if in_handshake => {
            hello::apply(ctx, hello, v1_1, no_echo)
        }
        ClientFrame11::Hello { .. } => ctx.fail(ErrorCode::HandshakeRequired, "HELLO sent twice"),
        _ if in_handshake => {
            ctx.fail(ErrorCode::HandshakeRequired, "the first frame must be HELLO")
        }
        ClientFrame11::Ping { nonce } => ping::ping(ctx, nonce),
        ClientFrame11::Pong { .. } => Flow::Continue,
        ClientFrame11::Sub(s) => sub::apply(ctx, s),
        ClientFrame11::Unsub { sid } => unsub::apply(ctx, sid),
        ClientFrame11::Pub { publish, request } => {
            publish::apply(ctx, publish.into(), request, rest)
        }
        ClientFrame11::HPub(h) => publish::apply(ctx, h.into(), h.request, rest),
        ClientFrame11::Stats { nonce } => stats::apply(ctx, nonce),
        // The codec may grow frames this broker does not speak yet.
        _ => ctx.fail(ErrorCode::UnknownOpcode, "frame not supported"),
    }
}

/// Decodes with the session's version: `HELLO` (which negotiates it) and
/// 1.1 sessions with the 1.1 decoder, version 1 sessions with the version 1
/// decoder, which refuses every 1.1 opcode and flag bit as before.
fn decode<'a>(ctx: &mut Ctx<'_>, raw: RawFrame<'a>) -> Result<ClientFrame11<'a>, DecodeError> {
    let slot = ctx.slot();
    if slot.phase() == Phase::Handshake || slot.session().v1_1 {
        ClientFrame11::parse(raw)
    } else {
        ClientFrame::parse(raw).map(ClientFrame11::from)
    }
}

/// Answers a frame that could be cut out of the stream but not parsed.
pub(crate) fn refuse_decode(ctx: &mut Ctx<'_>, e: &DecodeError) -> Flow {
    let code = e.code();
    let text = e.to_string();
    if code.is_fatal() {
        ctx.fail(code, &text)
    } else {
        ctx.refuse(code, &text)
    }
}
