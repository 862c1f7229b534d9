//! `UNSUB`: remove a subscription, reporting its last drops first.

use corecast_proto::{ErrorCode, ServerFrame};

use super::{Ctx, Flow};
use crate::{
    core::slot::{Exit, Limit},
    route,
};

pub(super) fn apply(ctx: &mut Ctx<'_>, sid: u32) -> Flow {
    let Some(sub) = route::subs::unsubscribe(ctx.shard, ctx.st, ctx.key, sid) else {
        return ctx.refuse(ErrorCode::UnknownSid, &format!("sid {sid} is not subscribed"));
    };
    if sub.dropped > 0 && !report_last_drops(ctx, sid, sub.dropped) {
        ctx.st.leave(ctx.shard, ctx.key, Exit::SlowConsumer(Limit::MaxPending), "");
        return Flow::Stop;
    }
    Flow::Continue
}

/// Loss is never silent: the removed subscription's drops are reported now
/// or, when the write buffer is full, as soon as it has room.
fn report_last_drops(ctx: &mut Ctx<'_>, sid: u32, count: u64) -> bool {
    let max = ctx.shard.cfg().max_subscriptions;
    let (slot, mem) = ctx.slot_and_memory();
    if !slot.has_unreported_drops() && slot.push(mem, &ServerFrame::Dropped { sid, count }).is_ok()
    {
        return true;
    }
    slot.orphan_drops(sid, count, max)
}
