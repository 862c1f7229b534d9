//! `PING` from the client: a `PONG` once everything sent before took effect
//! on every core, and never ahead of an unreported `DROPPED`.

use corecast_proto::ServerFrame;

use super::{Ctx, Flow};
use crate::core::{
    shard::{Shard, State},
    slot::{PendingPong, MAX_PENDING_PONGS},
};

pub(super) fn ping(ctx: &mut Ctx<'_>, nonce: u64) -> Flow {
    if ctx.slot().pongs.len() >= MAX_PENDING_PONGS {
        return Flow::Stall;
    }
    let after_seq = ctx.st.outbound.staged_seq();
    ctx.slot().pongs.push_back(PendingPong { nonce, after_seq });
    if release_pongs(ctx.shard, ctx.st, ctx.key) {
        Flow::Continue
    } else {
        Flow::Stop
    }
}

/// Sends the `PONG`s whose conditions hold, in order; starts a barrier for
/// the first one that waits on other cores. For a connection whose
/// subscriptions are all lossy, a `PONG` that would pass `max_pending`
/// waits, like a `DROPPED`, for the client to read: such subscribers sit
/// at that limit by design. False when a `PONG` did not fit and the client
/// was cut as a slow consumer for it.
pub(crate) fn release_pongs(shard: &Shard, st: &mut State, key: usize) -> bool {
    let acked = st.outbound.acked_seq();
    loop {
        let State { slots, mem, .. } = &mut *st;
        let slot = &mut slots[key];
        let Some(&pong) = slot.pongs.front() else { return true };
        if slot.unreported_drops && !slot.report_drops(mem) {
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
        let frame = ServerFrame::Pong { nonce: pong.nonce };
        if slot.all_lossy() && slot.out.len() + frame.encoded_len() > mem.max_pending() {
            return true;
        }
        if !st.push(shard, key, &frame) {
            return false;
        }
        st.slots[key].pongs.pop_front();
    }
}
