//! `PUB` and `HPUB`: check the topic and reply-to, then route the message:
//! to this core's subscribers and one copy for each other core that has
//! subscribers ([`route::publish`]). The `PUB`s to the same topic that
//! follow it in the input go with it, as one [`Batch`]. A request nobody
//! would receive is answered with `NO_RESPONDERS` at once, queued in order
//! with the connection's other output.

use std::time::Instant;

use corecast_proto::{topic, ErrorCode, Pub, RawFrame, ServerFrame11, TopicKind};

use super::{Ctx, Flow};
use crate::{
    auth::access::Allowed,
    core::pressure::Pressure,
    counters::CoreCounters,
    route::{self, Batch, Message, Routed, Source},
};

/// Publishes `msg`, with the plain `PUB`s to its topic that follow it in
/// `rest` (which then starts after them); `request` (1.1 sessions only: the
/// version 1 decoder refuses the flag) asks for `NO_RESPONDERS` when nobody
/// would receive it.
pub(super) fn apply<'a>(
    ctx: &mut Ctx<'_>,
    mut msg: Message<'a>,
    request: bool,
    rest: &mut &'a [u8],
) -> Flow {
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
    let by_permit = match check_access(ctx, &msg) {
        Ok(by_permit) => by_permit,
        Err(flow) => return flow,
    };
    // A permit answers one request: the next PUB needs its own.
    let gathers = !request && msg.headers.is_none() && !by_permit;
    let tag = ctx.slot().who().principal;
    msg.requester = if msg.reply_to.is_empty() { 0 } else { tag };
    let session = ctx.slot().session();
    let skip = session.no_echo.then_some(ctx.key);
    let source = Source::Client { waker: ctx.waker, skip };
    let mut batch = Batch::new(msg, ctx.st.mem.max_pending());
    let mut after = *rest;
    if gathers {
        gather(ctx, &mut batch, &mut after, tag);
    }
    let msgs = batch.messages();
    let (pressure, responders) = match route::publish(ctx.shard, ctx.st, msgs, source, ctx.deferred)
    {
        Routed::Delivered { pressure, responders } => (pressure, responders),
        Routed::Stalled => return Flow::Stall,
        Routed::Deferred => return Flow::Defer,
    };
    *rest = after;
    CoreCounters::add(&ctx.shard.counters.msgs_in, msgs.len() as u64);
    if let Some(slot) = ctx.st.slots.get_mut(ctx.key) {
        slot.count_published(msgs.len() as u64);
        if let Some(access) = slot.access_mut() {
            let bytes = msgs.iter().map(|m| m.payload.len() + m.headers.map_or(0, <[u8]>::len));
            access.charge(msgs.len(), || bytes.sum());
            if by_permit {
                access.use_permit(msg.topic, Instant::now());
            }
        }
    }
    if request && !responders && ctx.slot().is_open() {
        let frame = ServerFrame11::NoResponders { topic: msg.topic, reply_to: msg.reply_to };
        if !ctx.st.push(ctx.shard, ctx.key, &frame) {
            return Flow::Stop;
        }
    }
    if !ctx.slot().is_open() {
        return Flow::Stop;
    }
    match pressure {
        Pressure { hold: Some(by), flush } => Flow::Hold { by, flush },
        Pressure { flush: true, .. } => Flow::Yield,
        Pressure { flush: false, .. } => Flow::Continue,
    }
}

/// The checks of a user with rules: its publish rate, its publish rules
/// (or a permit to answer a request it received), and a reply-to it may
/// receive, so that nobody points replies at topics it may not read.
/// `Ok(true)`: the publish goes on a permit, used once it is delivered.
fn check_access(ctx: &mut Ctx<'_>, msg: &Message<'_>) -> Result<bool, Flow> {
    let Some(access) = ctx.slot().access_mut() else { return Ok(false) };
    if let Some(until) = access.rate_wait() {
        CoreCounters::add(&ctx.shard.counters.publish_rate_waits, 1);
        return Err(Flow::Wait(until));
    }
    let allowed = access.may_publish(msg.topic);
    let reply_ok = msg.reply_to.is_empty() || access.grant().may_subscribe(msg.reply_to);
    match allowed {
        Allowed::No => Err(ctx.deny(&format!("publish to {}", msg.topic))),
        _ if !reply_ok => {
            Err(ctx.deny(&format!("reply-to {} (not one it may receive)", msg.reply_to)))
        }
        Allowed::ByRules => Ok(false),
        Allowed::ByPermit => Ok(true),
    }
}

/// Adds to `batch` the plain `PUB`s at the front of `rest` that it admits
/// and that would be applied as they are (a reply-to that passes the
/// check), moving `rest` past them. Anything else stays for the frame loop,
/// which decodes it once. The topic was checked with the first `PUB`:
/// those that follow are recognised by its bytes and not checked again.
fn gather<'a>(ctx: &mut Ctx<'_>, batch: &mut Batch<'a>, rest: &mut &'a [u8], requester: u64) {
    let max_frame = ctx.shard.cfg().max_frame;
    // A user with rules has each reply-to checked: those go one by one.
    let plain_only = ctx.slot().access().is_some();
    loop {
        let mut next = *rest;
        let Ok(Some(raw)) = RawFrame::split(&mut next, max_frame) else { return };
        let Some(Ok(publish)) = Pub::parse_to(&raw, batch.topic()) else { return };
        let mut msg = Message::from(publish);
        if !msg.reply_to.is_empty() {
            msg.requester = requester;
        }
        let reply_ok =
            msg.reply_to.is_empty() || (!plain_only && check_target(msg.reply_to, "").is_ok());
        if !reply_ok || !batch.admits(&msg) {
            return;
        }
        batch.push(msg);
        *rest = next;
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
