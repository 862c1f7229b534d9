//! `SUB`: check the topic, the queue group, the sid and the connection's
//! limit, then subscribe ([`route::subs::subscribe`]). Only a 1.1 session
//! may subscribe to a pattern with wildcards or join a queue group; a
//! version 1 session keeps its `105` for both.

use corecast_proto::{topic, ErrorCode, Sub, TopicKind};

use super::{Ctx, Flow};
use crate::route;

pub(super) fn apply(ctx: &mut Ctx<'_>, sub: Sub<'_>) -> Flow {
    let v1_1 = ctx.slot().session().v1_1;
    let queue = match check_queue_group(sub.queue_group, v1_1) {
        Ok(queue) => queue,
        Err((code, text)) => return ctx.refuse(code, &text),
    };
    match topic::validate(sub.topic) {
        Err(e) => return ctx.refuse(ErrorCode::BadTopic, &e.to_string()),
        Ok(TopicKind::Wildcard) if !v1_1 => {
            return ctx.refuse(
                ErrorCode::Unsupported,
                "wildcard subscriptions are not supported in version 1",
            )
        }
        Ok(TopicKind::Literal | TopicKind::Wildcard) => {}
    }
    let mut max = ctx.shard.cfg().max_subscriptions;
    if let Some(access) = ctx.slot().access() {
        if !access.grant().may_subscribe(sub.topic) {
            return ctx.deny(&format!("subscribe to {}", sub.topic));
        }
        let own = access.grant().limits().max_subscriptions;
        max = max.min(own.map_or(usize::MAX, |n| n as usize));
    }
    let slot = ctx.slot();
    if slot.has_sub(sub.sid) {
        return ctx
            .refuse(ErrorCode::DuplicateSid, &format!("sid {} is already subscribed", sub.sid));
    }
    if slot.sub_count() >= max {
        return ctx
            .refuse(ErrorCode::TooManySubscriptions, &format!("at most {max} subscriptions"));
    }
    route::subs::subscribe(ctx.shard, ctx.st, ctx.key, sub.sid, sub.topic, queue, sub.lossy);
    Flow::Continue
}

/// The queue group a `SUB` joins: none when the name is empty; in a 1.1
/// session a name that is one literal token (else `106`); in a version 1
/// session none at all (`105`).
fn check_queue_group(name: &str, v1_1: bool) -> Result<Option<&str>, (ErrorCode, String)> {
    if name.is_empty() {
        return Ok(None);
    }
    if !v1_1 {
        let text = "queue groups are not supported in version 1";
        return Err((ErrorCode::Unsupported, text.to_owned()));
    }
    match topic::validate_queue_group(name) {
        Ok(()) => Ok(Some(name)),
        Err(e) => Err((ErrorCode::BadQueueGroup, e.to_string())),
    }
}
