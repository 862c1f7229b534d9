//! `SUB`: register a subscription here and, for a topic new to this core,
//! tell the other cores.

use corecast_proto::{topic, ErrorCode, Sub, TopicKind};

use super::{Ctx, Flow};
use crate::{
    core::slot::SlotSub, counters::CoreCounters, mesh::record::Record, route::topics::LocalSub,
};

pub(super) fn apply(ctx: &mut Ctx<'_>, sub: Sub<'_>) -> Flow {
    if !sub.queue_group.is_empty() {
        return ctx.refuse(ErrorCode::Unsupported, "queue groups are not supported in version 1");
    }
    match topic::validate(sub.topic) {
        Err(e) => return ctx.refuse(ErrorCode::BadTopic, &e.to_string()),
        Ok(TopicKind::Wildcard) => {
            return ctx.refuse(
                ErrorCode::Unsupported,
                "wildcard subscriptions are not supported in version 1",
            )
        }
        Ok(TopicKind::Literal) => {}
    }
    let max = ctx.shard.cfg.max_subscriptions;
    let slot = ctx.slot();
    if slot.subs.contains_key(&sub.sid) {
        return ctx
            .refuse(ErrorCode::DuplicateSid, &format!("sid {} is already subscribed", sub.sid));
    }
    if slot.subs.len() >= max {
        return ctx
            .refuse(ErrorCode::TooManySubscriptions, &format!("at most {max} subscriptions"));
    }
    let local = LocalSub { key: ctx.key, sid: sub.sid, lossy: sub.lossy };
    let (topic, first_here) = ctx.st.topics.add_local(sub.topic, local);
    if first_here {
        ctx.st.outbound.stage_all(Record::InterestAdd { topic: sub.topic });
    }
    ctx.slot().subs.insert(sub.sid, SlotSub { topic, lossy: sub.lossy, dropped: 0 });
    CoreCounters::add(&ctx.shard.counters.subscriptions, 1);
    Flow::Continue
}
