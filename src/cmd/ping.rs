//! `PING` from the client: a `PONG` once everything sent before took effect
//! on every core, and never ahead of an unreported `DROPPED`.

use corecast_proto::ServerFrame;

use super::{Ctx, Flow};
use crate::{
    shard::State,
    slot::{Exit, PendingPong, MAX_PENDING_PONGS},
};

pub(super) fn ping(ctx: &mut Ctx<'_>, nonce: u64) -> Flow {
    if ctx.slot().pongs.len() >= MAX_PENDING_PONGS {
        return Flow::Stall;
    }
    let after_seq = ctx.st.outbound.staged_seq();
    ctx.slot().pongs.push_back(PendingPong { nonce, after_seq });
    if release_pongs(ctx.st, ctx.key) {
        Flow::Continue
    } else {
        ctx.st.leave(ctx.shard, ctx.key, Exit::SlowConsumer, "");
        Flow::Stop
    }
}

/// Sends the `PONG`s whose conditions hold, in order; starts a barrier for
/// the first one that waits on other cores. False when a `PONG` did not fit
/// the write buffer, which makes the client a slow consumer.
pub(crate) fn release_pongs(st: &mut State, key: usize) -> bool {
    let acked = st.outbound.acked_seq();
    let slot = &mut st.slots[key];
    while let Some(&pong) = slot.pongs.front() {
        if slot.unreported_drops && !slot.report_drops() {
            return true;
        }
        if pong.after_seq > acked {
            if !slot.awaiting_barrier {
                slot.awaiting_barrier = true;
                st.barrier_waiters.push(key);
            }
            st.outbound.request_barrier();
            return true;
        }
        if !slot.push(&ServerFrame::Pong { nonce: pong.nonce }) {
            return false;
        }
        slot.pongs.pop_front();
    }
    true
}
