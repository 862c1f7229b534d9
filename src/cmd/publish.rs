//! `PUB`: deliver to this core's subscribers and stage one copy for each
//! other core that has subscribers.

use corecast_proto::{topic, ErrorCode, Pub, TopicKind};

use super::{Ctx, Flow};
use crate::{
    core::{pressure, shard::State},
    counters::CoreCounters,
    mesh::record::Record,
    route::fanout::{self, Message},
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
    let counters = &ctx.shard.counters;
    let mut pressed = false;
    let State { slots, topics, outbound, doomed, fanout, mem, .. } = &mut *ctx.st;
    if let Some(entry) = topics.get(p.topic) {
        if !outbound.has_room(&entry.remote) {
            outbound.wait_for_room(ctx.waker);
            CoreCounters::add(&counters.publisher_stalls, 1);
            return Flow::Stall;
        }
        let frame_len = 16 + p.topic.len() + p.reply_to.len() + p.payload.len();
        let deferred = &mut slots[ctx.key].deferred;
        if !std::mem::take(deferred) && pressure::budget_short(mem, entry.local.len(), frame_len) {
            *deferred = true;
            return Flow::Defer;
        }
        let msg = Message { topic: p.topic, reply_to: p.reply_to, payload: p.payload };
        let mut policy = State::policy(ctx.shard, doomed);
        pressed = fanout::deliver(slots, mem, &entry.local, msg, &mut policy, fanout);
        let mut crossed = 0;
        for peer in entry.remote.iter() {
            outbound.stage(
                peer,
                Record::Publish { topic: p.topic, reply_to: p.reply_to, payload: p.payload },
            );
            crossed += 1;
        }
        CoreCounters::add(&counters.cross_core_sent, crossed);
    }
    CoreCounters::add(&counters.msgs_in, 1);
    ctx.st.reap_doomed(ctx.shard);
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
