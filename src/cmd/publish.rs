//! `PUB`: check the topic and reply-to, then route the message: to this
//! core's subscribers and one copy for each other core that has
//! subscribers ([`route::publish`]).

use corecast_proto::{topic, ErrorCode, Pub, TopicKind};

use super::{Ctx, Flow};
use crate::{
    counters::CoreCounters,
    route::{self, Message, Routed, Source},
};

pub(super) fn apply(ctx: &mut Ctx<'_>, p: Pub<'_>) -> Flow {
    if let Err((code, text)) = check_target(p.topic, "topic") {
        return ctx.refuse(code, &text);
    }
    if !p.reply_to.is_empty() {
        if let Err((code, text)) = check_target(p.reply_to, "reply-to") {
            return ctx.refuse(code, &text);
        }
    }
    let msg = Message { topic: p.topic, reply_to: p.reply_to, payload: p.payload };
    let source = Source::Client(ctx.waker);
    let pressed = match route::publish(ctx.shard, ctx.st, msg, source, ctx.deferred) {
        Routed::Delivered { pressed } => pressed,
        Routed::Stalled => return Flow::Stall,
        Routed::Deferred => return Flow::Defer,
    };
    CoreCounters::add(&ctx.shard.counters.msgs_in, 1);
    match (ctx.slot().is_open(), pressed) {
        (false, _) => Flow::Stop,
        (true, true) => Flow::Yield,
        (true, false) => Flow::Continue,
    }
}

/// A publish target must be a literal topic outside the reserved space.
fn check_target(name: &str, what: &str) -> Result<(), (ErrorCode, String)> {
    match topic::validate(name) {
        Err(e) => Err((ErrorCode::BadTopic, format!("{what}: {e}"))),
        Ok(TopicKind::Wildcard) => {
            Err((ErrorCode::BadTopic, format!("{what}: cannot publish to a wildcard")))
        }
        Ok(TopicKind::Literal) if topic::is_reserved(name) => Err((
            ErrorCode::PermissionDenied,
            format!("{what}: topics starting with '$' are reserved"),
        )),
        Ok(TopicKind::Literal) => Ok(()),
    }
}
