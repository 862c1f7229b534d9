//! Routing: which subscribers a published message reaches, on this core
//! and on the others, and the subscriptions that decide it.
//!
//! Every publish goes through [`publish`], whether a client of this core
//! sent it (`PUB`) or another core forwarded it: topic lookup, the fan-out
//! to local subscribers, staging for the other cores that have
//! subscribers, and reaping the subscribers cut on the way. Subscriptions
//! change only through [`subs`], which keeps the topic table, the other
//! cores' view of this core's interest and the `subscriptions` counter in
//! step.
//!
//! - [`topics`]: one core's subscription table, one lookup per publish.
//! - [`sublist`]: the pattern index behind it, with `*` and `>` patterns.
//! - [`fanout`]: copying a message into subscribers' output queues.
//! - [`subs`]: subscribe, unsubscribe, leave with every subscription, and
//!   the interest records that follow.

pub(crate) mod fanout;
pub(crate) mod sublist;
pub(crate) mod subs;
// Queue groups are refused before they reach the table, so its group side
// is used by its tests only.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod topics;

use std::task::Waker;

use fanout::Fanout;
pub(crate) use fanout::Message;
use topics::Topics;

use crate::{
    core::{
        pressure,
        shard::{Shard, State},
    },
    counters::CoreCounters,
    mem::Memory,
    mesh::{coreset::CoreSet, record::Record, staging::Outbound},
};

/// A core's routing state.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    /// Who wants each topic, on this core and on the others.
    topics: Topics,
    /// The message being delivered, encoded once, and the burst so far.
    fanout: Fanout,
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
    /// core with subscribers. Its task (`waker`) waits while such a core's
    /// staging is full. `skip` is its slab key when it asked for no echo:
    /// a connection lives on one core, so only this core's fan-out has its
    /// subscriptions to leave out.
    Client { waker: &'a Waker, skip: Option<usize> },
    /// Another core, which staged it for this one: delivered here only.
    Peer,
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
    let Routes { topics, fanout } = routes;
    let (mut pressed, mut responders) = (false, false);
    if let Some(entry) = topics.get(msg.topic) {
        let skip = match source {
            Source::Client { skip, .. } => skip,
            Source::Peer => None,
        };
        if let Source::Client { waker, .. } = source {
            if !outbound.has_room(entry.remote()) {
                outbound.wait_for_room(waker);
                CoreCounters::add(&shard.counters.publisher_stalls, 1);
                return Routed::Stalled;
            }
        }
        let short = pressure::budget_short(mem, entry.local().len(), msg.frame_len());
        if !std::mem::take(deferred) && short {
            *deferred = true;
            return Routed::Deferred;
        }
        let mut policy = State::policy(shard, doomed);
        let local = entry.local();
        pressed = fanout::deliver(slots, mem, local, (msg, skip), &mut policy, fanout);
        responders = !entry.remote().is_empty() || local.iter().any(|s| skip != Some(s.key));
        if let Source::Client { .. } = source {
            stage_for_peers(shard, outbound, entry.remote(), msg);
        }
    }
    reap(shard, st);
    Routed::Delivered { pressed, responders }
}

/// Stages one copy of a client's message for each core in `peers`.
fn stage_for_peers(shard: &Shard, outbound: &mut Outbound, peers: &CoreSet, msg: Message<'_>) {
    let record = Record::publish(msg);
    let mut crossed = 0;
    for peer in peers.iter() {
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
