//! Routing: which subscribers a published message reaches, on this core
//! and on the others, and the subscriptions that decide it.
//!
//! Every publish goes through [`publish`], whether a client of this core
//! sent it (`PUB`) or another core forwarded it: topic lookup, the draw of
//! a member of each queue group, the fan-out to local subscribers, staging
//! for the other cores that have subscribers or were drawn, and reaping
//! the subscribers cut on the way. Subscriptions change only through
//! [`subs`], which keeps the topic table, the other cores' view of this
//! core's interest and the `subscriptions` counter in step.
//!
//! - [`topics`]: one core's subscription table.
//! - [`sublist`]: the pattern index behind it, with `*` and `>` patterns.
//! - [`queue`]: one member of each queue group per message.
//! - [`fanout`]: copying a message into subscribers' output queues.
//! - [`subs`]: subscribe, unsubscribe, leave with every subscription, and
//!   the interest records that follow.

pub(crate) mod fanout;
pub(crate) mod queue;
pub(crate) mod sublist;
pub(crate) mod subs;
pub(crate) mod topics;

use std::task::Waker;

use fanout::Fanout;
pub(crate) use fanout::Message;
use queue::{Handed, Queues, Room};
use slab::Slab;
use topics::{LocalSub, TopicEntry, Topics};

use crate::{
    core::{
        pressure,
        shard::{Shard, State},
        slot::Slot,
    },
    counters::CoreCounters,
    mem::Memory,
    mesh::{
        coreset::CoreSet,
        record::{GroupNames, Record},
        staging::Outbound,
    },
};

/// A core's routing state.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Who wants each topic, on this core and on the others.
    topics: Topics,
    /// The message being delivered, encoded once, and the burst so far.
    fanout: Fanout,
    /// The draws for queue groups and the targets they make.
    queues: Queues,
}

impl Routes {
    /// Gives the chunk for shared bodies back once no queue holds a body
    /// from it, so an idle core holds no memory. The sweeper calls it.
    pub(crate) fn release_idle(&mut self, mem: &mut Memory) {
        self.fanout.release_idle(mem);
    }
}

/// Where a publish comes from, which decides where it goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A client of this core: delivered here and staged once for each other
    /// core with subscribers or a queue group member drawn. Its task
    /// (`waker`) waits while such a core's staging is full. `skip` is its
    /// slab key when it asked for no echo: a connection lives on one core,
    /// so only this core's fan-out has its subscriptions to leave out.
    Client { waker: &'a Waker, skip: Option<usize> },
    /// Another core, which staged it for this one: delivered here only, to
    /// the subscriptions without a queue group and to one member of each
    /// group in `groups`, which that core drew here.
    Peer { groups: GroupNames<'a> },
}

/// How a publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Delivered, if anyone listens. `pressed`: some subscriber's queue
    /// just went past half of `max_pending`, or the burst reached its
    /// limit; let the subscribers flush before delivering more.
    /// `responders`: some subscription here (not skipped) or some other
    /// core's was there to receive it, which is what decides a request's
    /// `NO_RESPONDERS`.
    Delivered { pressed: bool, responders: bool },
    /// A peer's staging is full: nothing was delivered, and the client's
    /// task is woken when a batch leaves. Only a client's publish stalls.
    Stalled,
    /// The budget may be short for it: nothing was delivered. Let the
    /// subscribers write once, then publish it again; it is delivered then
    /// whatever the budget.
    Deferred,
}

/// Who gets one message.
#[derive(Debug, Default)]
struct Targets<'a> {
    /// Subscriptions here: every plain one, and the queue group members
    /// picked here.
    local: &'a [LocalSub],
    /// Other cores that get a copy: those with plain subscriptions, and
    /// those drawn for a queue group.
    remote: CoreSet,
    /// The queue groups each drawn core serves.
    handed: Handed<'a>,
    /// Queue groups this core was drawn for but has no member of any more.
    undeliverable: u64,
}

impl<'a> Targets<'a> {
    /// The targets of a topic without queue groups: its entry as it is.
    fn plain(entry: &'a TopicEntry) -> Self {
        Self { local: entry.local(), remote: *entry.remote(), ..Self::default() }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// Routes one message. `deferred` says whether it was deferred once
/// already (and is set when it is deferred now).
pub(crate) fn publish(
    shard: &Shard,
    st: &mut State,
    msg: Message<'_>,
    source: Source<'_>,
    deferred: &mut bool,
) -> Routed {
    let State { slots, routes, outbound, doomed, mem, .. } = &mut *st;
    let Routes { topics, fanout, queues } = routes;
    let room = Room::new(msg.frame_len(), mem.max_pending());
    let targets = targets(topics.get(msg.topic), source, queues, slots, room);
    let skip = match source {
        Source::Client { skip, .. } => skip,
        Source::Peer { .. } => None,
    };
    let (mut pressed, mut responders) = (false, false);
    if !targets.is_empty() {
        if let Source::Client { waker, .. } = source {
            if !outbound.has_room(&targets.remote) {
                outbound.wait_for_room(waker);
                CoreCounters::add(&shard.counters.publisher_stalls, 1);
                return Routed::Stalled;
            }
        }
        let short = pressure::budget_short(mem, targets.local.len(), msg.frame_len());
        if !std::mem::take(deferred) && short {
            *deferred = true;
            return Routed::Deferred;
        }
        let mut policy = State::policy(shard, doomed);
        pressed = fanout::deliver(slots, mem, targets.local, (msg, skip), &mut policy, fanout);
        responders =
            !targets.remote.is_empty() || targets.local.iter().any(|s| skip != Some(s.key));
        if let Source::Client { .. } = source {
            stage_for_peers(shard, outbound, &targets, msg);
        }
    }
    if targets.undeliverable > 0 {
        CoreCounters::add(&shard.counters.queue_undeliverable, targets.undeliverable);
    }
    reap(shard, st);
    Routed::Delivered { pressed, responders }
}

/// Who gets a message whose topic `entry` names. A topic without queue
/// groups takes its entry as it is: no copy, no draw.
fn targets<'a>(
    entry: Option<&'a TopicEntry>,
    source: Source<'_>,
    queues: &'a mut Queues,
    slots: &Slab<Slot>,
    room: Room,
) -> Targets<'a> {
    match (entry, source) {
        (Some(entry), Source::Client { skip, .. }) if !entry.groups().is_empty() => {
            queues.draw(entry, slots, skip, room)
        }
        (entry, Source::Peer { groups }) if !groups.is_empty() => {
            queues.serve(entry, groups, slots, room)
        }
        (Some(entry), _) => Targets::plain(entry),
        (None, _) => Targets::default(),
    }
}

/// Stages one copy of a client's message for each core in the targets,
/// with the queue groups that core was drawn for.
fn stage_for_peers(
    shard: &Shard,
    outbound: &mut Outbound,
    targets: &Targets<'_>,
    msg: Message<'_>,
) {
    let plain = Record::publish(msg);
    let mut crossed = 0;
    for peer in targets.remote.iter() {
        let record = if targets.handed.is_empty() {
            plain
        } else {
            Record::queue_publish(msg, targets.handed.to(peer))
        };
        outbound.stage(peer, record);
        crossed += 1;
    }
    CoreCounters::add(&shard.counters.cross_core_sent, crossed);
}

/// Finishes the exits that began while a frame was queued (subscribers
/// cut during a delivery, connections cut to make room in the budget):
/// their subscriptions could not be removed while the subscriber list was
/// being walked, so they are removed now, with the rest of the exit.
pub(crate) fn reap(shard: &Shard, st: &mut State) {
    while let Some((key, why, was_open)) = st.doomed.pop() {
        st.finish_leave(shard, key, why, was_open);
    }
}
