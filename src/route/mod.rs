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
//! - [`topics`]: one core's subscription table.
//! - [`fanout`]: copying a message into subscribers' output queues.
//! - [`subs`]: subscribe, unsubscribe, leave with every subscription, and
//!   the interest records that follow.

pub(crate) mod fanout;
pub(crate) mod subs;
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

/// Routes a batch of messages to one topic, in order. `deferred` says
/// whether it was deferred once already (and is set when it is deferred
/// now).
pub(crate) fn publish(
    shard: &Shard,
    st: &mut State,
    msgs: &[Message<'_>],
    source: Source<'_>,
    deferred: &mut bool,
) -> Routed {
    let State { slots, routes, outbound, doomed, mem, .. } = &mut *st;
    let Routes { topics, fanout } = routes;
    let (mut pressed, mut responders) = (false, false);
    let Some(first) = msgs.first() else { return Routed::Delivered { pressed, responders } };
    if let Some(entry) = topics.get(first.topic) {
        let skip = match source {
            Source::Client { skip, .. } => skip,
            Source::Peer => None,
        };
        if let Source::Client { waker, .. } = source {
            if !outbound.has_room(&entry.remote) {
                outbound.wait_for_room(waker);
                CoreCounters::add(&shard.counters.publisher_stalls, 1);
                return Routed::Stalled;
            }
        }
        let frames_len = msgs.iter().map(Message::frame_len).sum();
        let short = pressure::budget_short(mem, entry.local.len(), frames_len);
        if !std::mem::take(deferred) && short {
            *deferred = true;
            return Routed::Deferred;
        }
        let mut policy = State::policy(shard, doomed);
        pressed = fanout::deliver(slots, mem, &entry.local, (msgs, skip), &mut policy, fanout);
        responders = !entry.remote.is_empty() || entry.local.iter().any(|s| skip != Some(s.key));
        if let Source::Client { .. } = source {
            msgs.iter().for_each(|&msg| stage_for_peers(shard, outbound, &entry.remote, msg));
        }
    }
    reap(shard, st);
    Routed::Delivered { pressed, responders }
}

/// Messages to one topic that follow each other in a publisher's input (or
/// a peer core's batch), delivered together ([`fanout::deliver`]).
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    msgs: [Message<'a>; Batch::MAX],
    len: usize,
    /// Bytes of frames so far, and the most the batch may hold.
    bytes: usize,
    limit: usize,
}

impl<'a> Batch<'a> {
    /// At most this many messages: enough that each subscriber's slot and
    /// queue are fetched once for many messages, few enough that the
    /// batch's frames stay in the first-level cache.
    pub(crate) const MAX: usize = 32;

    /// A batch that starts with `first`. It takes at most 64 KiB of frames,
    /// and an eighth of `max_pending`, so one batch cannot carry a
    /// subscriber far past the point where it would have yielded.
    pub(crate) fn new(first: Message<'a>, max_pending: usize) -> Self {
        let limit = (max_pending / 8).min(64 << 10);
        Self { msgs: [first; Self::MAX], len: 1, bytes: first.frame_len(), limit }
    }

    /// Whether `msg` may join: same topic, and room for it.
    pub(crate) fn admits(&self, msg: &Message<'_>) -> bool {
        self.len < Self::MAX
            && msg.topic == self.msgs[0].topic
            && self.bytes + msg.frame_len() <= self.limit
    }

    /// Adds `msg`, which [`Self::admits`] accepted.
    pub(crate) fn push(&mut self, msg: Message<'a>) {
        self.bytes += msg.frame_len();
        self.msgs[self.len] = msg;
        self.len += 1;
    }

    pub(crate) fn messages(&self) -> &[Message<'a>] {
        &self.msgs[..self.len]
    }
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
