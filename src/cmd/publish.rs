//! `PUB` and `HPUB`: check the topic and reply-to, then route the message:
//! to this core's subscribers and one copy for each other core that has
//! subscribers ([`route::publish`]). A request nobody would receive is
//! answered with `NO_RESPONDERS` at once, queued in order with the
//! connection's other output.

use corecast_proto::{topic, ErrorCode, ServerFrame11, TopicKind};

use super::{Ctx, Flow};
use crate::{
    counters::CoreCounters,
    route::{self, Message, Routed, Source},
};

/// Publishes `msg`; `request` (1.1 sessions only: the version 1 decoder
/// refuses the flag) asks for `NO_RESPONDERS` when nobody would receive it.
pub(super) fn apply(ctx: &mut Ctx<'_>, msg: Message<'_>, request: bool) -> Flow {
    if let Err((code, text)) = check_target(msg.topic, "topic") {
        return ctx.refuse(code, &text);
    }
    if request && msg.reply_to.is_empty() {
        return ctx.refuse(ErrorCode::BadTopic, "reply-to: a request needs one");
    }
    if !msg.reply_to.is_empty() {
        if let Err((code, text)) = check_target(msg.reply_to, "reply-to") {
            return ctx.refuse(code, &text);
        }
    }
    let session = ctx.slot().session();
    let skip = session.no_echo.then_some(ctx.key);
    let source = Source::Client { waker: ctx.waker, skip };
    let (pressed, responders) = match route::publish(ctx.shard, ctx.st, msg, source, ctx.deferred) {
        Routed::Delivered { pressed, responders } => (pressed, responders),
        Routed::Stalled => return Flow::Stall,
        Routed::Deferred => return Flow::Defer,
    };
    CoreCounters::add(&ctx.shard.counters.msgs_in, 1);
    if request && !responders && ctx.slot().is_open() {
        let frame = ServerFrame11::NoResponders { topic: msg.topic, reply_to: msg.reply_to };
        if !ctx.st.push(ctx.shard, ctx.key, &frame) {
            return Flow::Stop;
        }
    }
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
