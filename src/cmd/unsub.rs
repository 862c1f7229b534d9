//! `UNSUB`: remove a subscription, reporting its last drops first.

use corecast_proto::{ErrorCode, ServerFrame};

use super::{Ctx, Flow};
use crate::counters::CoreCounters;

pub(super) fn apply(ctx: &mut Ctx<'_>, sid: u32) -> Flow {
    let Some(sub) = ctx.slot().subs.remove(&sid) else {
        return ctx.refuse(ErrorCode::UnknownSid, &format!("sid {sid} is not subscribed"));
    };
    if sub.dropped > 0 {
        // Best effort: if even this does not fit, the client is far behind.
        ctx.slot().push(&ServerFrame::Dropped { sid, count: sub.dropped });
    }
    ctx.st.remove_subscription(ctx.key, sid, &sub.topic);
    CoreCounters::sub(&ctx.shard.counters.subscriptions, 1);
    Flow::Continue
}
