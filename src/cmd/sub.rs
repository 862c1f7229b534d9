//! `SUB`: check the topic, the sid and the connection's limit, then
//! subscribe ([`route::subs::subscribe`]). Only a 1.1 session may
//! subscribe to a pattern with wildcards; a v1 session keeps its `105`.

use corecast_proto::{topic, ErrorCode, Sub, TopicKind};

use super::{Ctx, Flow};
use crate::route;

pub(super) fn apply(ctx: &mut Ctx<'_>, sub: Sub<'_>) -> Flow {
    if !sub.queue_group.is_empty() {
        return ctx.refuse(ErrorCode::Unsupported, "queue groups are not supported in version 1");
    }
    match topic::validate(sub.topic) {
        Err(e) => return ctx.refuse(ErrorCode::BadTopic, &e.to_string()),
        Ok(TopicKind::Wildcard) if !ctx.slot().session().v1_1 => {
            return ctx.refuse(
                ErrorCode::Unsupported,
                "wildcard subscriptions are not supported in version 1",
            )
        }
        Ok(TopicKind::Literal | TopicKind::Wildcard) => {}
    }
    let max = ctx.shard.cfg.max_subscriptions;
    let slot = ctx.slot();
    if slot.has_sub(sub.sid) {
        return ctx
            .refuse(ErrorCode::DuplicateSid, &format!("sid {} is already subscribed", sub.sid));
    }
    if slot.sub_count() >= max {
        return ctx
            .refuse(ErrorCode::TooManySubscriptions, &format!("at most {max} subscriptions"));
    }
    route::subs::subscribe(ctx.shard, ctx.st, ctx.key, sub.sid, sub.topic, sub.lossy);
    Flow::Continue
}
