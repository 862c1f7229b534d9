//! Routing: which subscribers a published message reaches, on this core
//! and on the others, and the subscriptions that decide it.
//!
//! Every publish goes through [`publish`], whether a client of this core
//! sent it (`PUB`) or another core forwarded it: topic lookup, the draw of
//! a member of each queue group, the fan-out to local subscribers, staging
//! for the other cores that have subscribers or were drawn (or, for a
//! queue group whose members here left while another core's message was
//! on its way, drawn again), and reaping the subscribers cut on the way.
//! Subscriptions change only through [`subs`], which keeps the topic table, the other cores' view of this
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
use queue::{Barred, Handed, Queues, Room};
use slab::Slab;
use topics::{LocalSub, TopicEntry, Topics};

use crate::{
    core::{
        pressure::{self, Doomed, Pressure},
        shard::{Shard, State},
        slot::Slot,
    },
    counters::CoreCounters,
    mem::Memory,
    mesh::{
        coreset::CoreSet,
        record::{Handoff, Publisher, Record},
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
    /// Another core, which staged it for this one: delivered here, to the
    /// subscriptions without a queue group (unless it was re-drawn) and to
    /// one member of each group in the handoff, which that core drew here.
    /// A group with no member left here is drawn once more among the other
    /// cores ([`queue`]), the only case where a peer's publish goes on.
    Peer { handoff: Handoff<'a> },
}

/// How a publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Delivered, if anyone listens. `pressure`: what the publisher should
    /// do before it delivers more (let subscribers flush, or wait for
    /// one). `responders`: some subscription here (not skipped) or some other
    /// core's was there to receive it, which is what decides a request's
    /// `NO_RESPONDERS`.
    Delivered { pressure: Pressure, responders: bool },
    /// A peer's staging is full: nothing was delivered, and the client's
    /// task is woken when a batch leaves. Only a client's publish stalls.
    Stalled,
    /// The budget may be short for it, or (a peer's publish) a queue
    /// group it must hand on finds every core with members of the group
    /// short of staging room: nothing was delivered. Let the subscribers
    /// write and the forwarders send once, then publish it again; it goes
    /// through then whatever the budget, and a group still without room
    /// is counted as undeliverable. Waiting once, and never for a peer,
    /// keeps cores from waiting on each other in a circle.
    Deferred,
}

/// Who gets one message, or a batch of them.
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
    /// Queue groups this core was drawn for but has no member of any more,
    /// and could not draw again for.
    undeliverable: u64,
    /// Queue groups this core was drawn for, has no member of any more,
    /// and drew again for another core.
    redrawn: u64,
    /// Of the undeliverable ones, those with members on other cores, none
    /// of which this core could stage for now.
    stuck: u64,
}

impl<'a> Targets<'a> {
    /// The targets of a topic without queue groups: its entry as it is.
    fn plain(entry: &'a TopicEntry) -> Self {
        Self { local: entry.local(), remote: *entry.remote(), ..Self::default() }
    }

    /// The targets of a peer's publish without queue groups: the
    /// subscriptions here; the peer sent the other cores their own copy.
    fn here(entry: &'a TopicEntry) -> Self {
        Self { local: entry.local(), ..Self::default() }
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// Routes a batch of messages to one topic, in order. `deferred` says
/// whether it was deferred once already (and is set when it is deferred
/// now).
///
/// A batch shares one lookup. Its messages share their targets too, unless
/// a client publishes to a topic with queue groups: then each message draws
/// its own members. A peer's publish for queue groups comes alone.
pub(crate) fn publish(
    shard: &Shard,
    st: &mut State,
    msgs: &[Message<'_>],
    source: Source<'_>,
    deferred: &mut bool,
) -> Routed {
    let Some(first) = msgs.first() else {
        return Routed::Delivered { pressure: Pressure::default(), responders: false };
    };
    let State { slots, routes, outbound, doomed, mem, .. } = &mut *st;
    let Routes { topics, fanout, queues } = routes;
    let entry = topics.get(first.topic);
    let mut p = Publishing { shard, slots, mem, outbound, doomed, fanout, source };
    let routed = match (entry, source) {
        (Some(entry), Source::Client { skip, .. }) if !entry.groups().is_empty() => {
            p.drawn(entry, queues, (msgs, skip), deferred)
        }
        _ => p.together(entry, queues, msgs, deferred),
    };
    reap(shard, st);
    routed
}

/// The parts of a core's state one publish works with.
struct Publishing<'s, 'm> {
    shard: &'s Shard,
    slots: &'s mut Slab<Slot>,
    mem: &'s mut Memory,
    outbound: &'s mut Outbound,
    doomed: &'s mut Doomed,
    fanout: &'s mut Fanout,
    source: Source<'m>,
}

impl Publishing<'_, '_> {
    /// One set of targets for the whole batch: a topic without queue
    /// groups (its entry as it is: no copy, no draw), or a peer's publish
    /// for queue groups.
    fn together(
        &mut self,
        entry: Option<&TopicEntry>,
        queues: &mut Queues,
        msgs: &[Message<'_>],
        deferred: &mut bool,
    ) -> Routed {
        let room = Room::new(msgs[0].frame_len(), self.mem.max_pending());
        let outbound = &*self.outbound;
        let can_forward = |core| outbound.can_forward(core);
        let targets = match (entry, self.source) {
            (entry, Source::Peer { handoff }) if !handoff.groups.is_empty() => {
                let barred =
                    Barred { skip: handoff.skip_on(self.shard.core), topic: msgs[0].topic };
                queues.serve(entry, (handoff, barred), self.slots, can_forward, room)
            }
            (Some(entry), Source::Peer { .. }) => Targets::here(entry),
            (Some(entry), Source::Client { .. }) => Targets::plain(entry),
            (None, _) => Targets::default(),
        };
        if targets.stuck > 0 && !*deferred {
            *deferred = true;
            return Routed::Deferred;
        }
        let (mut pressure, mut responders) = (Pressure::default(), false);
        if !targets.is_empty() {
            let frames_len = msgs.iter().map(Message::frame_len).sum();
            if let Err(blocked) =
                self.admit(&targets.remote, targets.local.len(), frames_len, deferred)
            {
                return blocked;
            }
            (pressure, responders) = self.deliver(&targets, msgs);
        }
        // Through, whether or not `admit` ran: the next publish may wait once.
        *deferred = false;
        let counters = &self.shard.counters;
        if targets.undeliverable > 0 {
            CoreCounters::add(&counters.queue_undeliverable, targets.undeliverable);
        }
        if targets.redrawn > 0 {
            CoreCounters::add(&counters.queue_redrawn, targets.redrawn);
        }
        Routed::Delivered { pressure, responders }
    }

    /// A client's batch to a topic with queue groups: after one check of
    /// everything the batch may reach, each message draws its own members
    /// (leaving out those of connection `skip`) and goes on its own.
    fn drawn(
        &mut self,
        entry: &TopicEntry,
        queues: &mut Queues,
        (msgs, skip): (&[Message<'_>], Option<usize>),
        deferred: &mut bool,
    ) -> Routed {
        let frames_len = msgs.iter().map(Message::frame_len).sum();
        let local = entry.local().len() + entry.groups().len();
        if let Err(blocked) = self.admit(&queue::reach(entry), local, frames_len, deferred) {
            return blocked;
        }
        let (mut pressure, mut responders) = (Pressure::default(), false);
        queues.begin_batch();
        for msg in msgs {
            let room = Room::new(msg.frame_len(), self.mem.max_pending());
            let barred = Barred { skip, topic: msg.topic };
            let targets = queues.draw(entry, self.slots, barred, room);
            if !targets.is_empty() {
                let cut_before = self.doomed.len();
                let (p, r) = self.deliver(&targets, std::slice::from_ref(msg));
                (pressure, responders) = (pressure.and(p), responders | r);
                if self.doomed.len() > cut_before {
                    queues.recount();
                }
            }
        }
        Routed::Delivered { pressure, responders }
    }

    /// Checks before anything of a batch is delivered: a client's publish
    /// waits while a core in `reach` has no staging room, and any waits
    /// once for the subscribers to write when the budget may be short for
    /// `local` subscribers.
    fn admit(
        &mut self,
        reach: &CoreSet,
        local: usize,
        frames_len: usize,
        deferred: &mut bool,
    ) -> Result<(), Routed> {
        if let Source::Client { waker, .. } = self.source {
            if !self.outbound.has_room(reach) {
                let sent = self.outbound.send_full(reach);
                CoreCounters::add(&self.shard.counters.cross_core_batches, sent);
            }
            if !self.outbound.has_room(reach) {
                self.outbound.wait_for_room(waker);
                CoreCounters::add(&self.shard.counters.publisher_stalls, 1);
                return Err(Routed::Stalled);
            }
        }
        let short = pressure::budget_short(self.mem, local, frames_len);
        if !std::mem::take(deferred) && short {
            *deferred = true;
            return Err(Routed::Deferred);
        }
        Ok(())
    }

    /// Delivers `msgs` to the targets here and stages them for the other
    /// cores in the targets (a peer's publish has some only when it was
    /// drawn again); returns what the publisher should do before more
    /// ([`Pressure`]) and whether anyone was there to receive them
    /// (`responders`).
    fn deliver(&mut self, targets: &Targets<'_>, msgs: &[Message<'_>]) -> (Pressure, bool) {
        let skip = match self.source {
            Source::Client { skip, .. } => skip,
            Source::Peer { .. } => None,
        };
        let mut policy = State::policy(self.shard, self.doomed);
        let local = targets.local;
        let pressure =
            fanout::deliver(self.slots, self.mem, local, (msgs, skip), &mut policy, self.fanout);
        let responders = !targets.remote.is_empty() || local.iter().any(|s| skip != Some(s.key));
        if !targets.remote.is_empty() {
            let onward = self.onward();
            for &msg in msgs {
                stage_for_peers(self.shard, self.outbound, targets, msg, onward);
            }
        }
        (pressure, responders)
    }

    /// How the message goes on to other cores for queue groups: a
    /// client's names its publisher when that asked for no echo; a peer's
    /// goes on as re-drawn, with the publisher it came with.
    fn onward(&self) -> Handoff<'static> {
        match self.source {
            Source::Client { skip, .. } => {
                let no_echo = skip.map(|key| Publisher { core: self.shard.core, key });
                Handoff { no_echo, ..Handoff::default() }
            }
            Source::Peer { handoff } => {
                Handoff { redrawn: true, no_echo: handoff.no_echo, ..Handoff::default() }
            }
        }
    }
}

/// Messages to one topic that follow each other in a publisher's input (or
/// a peer core's batch), delivered together ([`fanout::deliver`]).
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    msgs: Msgs<'a>,
    /// Bytes of frames so far, and the most the batch may hold.
    bytes: usize,
    limit: usize,
}

/// A lone message is kept alone: most publishes that do not come in a row
/// would otherwise fill the whole array for one message. The large variant
/// stays inline on purpose: a batch lives on the stack for one publish, and
/// boxing it would allocate per batch.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Msgs<'a> {
    One(Message<'a>),
    Many([Message<'a>; Batch::MAX], usize),
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
        Self { msgs: Msgs::One(first), bytes: first.frame_len(), limit }
    }

    /// The topic every message of the batch goes to.
    pub(crate) fn topic(&self) -> &'a str {
        self.messages()[0].topic
    }

    /// Whether `msg` may join: same topic, and room for it.
    pub(crate) fn admits(&self, msg: &Message<'_>) -> bool {
        self.messages().len() < Self::MAX
            && msg.topic == self.topic()
            && self.bytes + msg.frame_len() <= self.limit
    }

    /// Adds `msg`, which [`Self::admits`] accepted.
    pub(crate) fn push(&mut self, msg: Message<'a>) {
        self.bytes += msg.frame_len();
        match &mut self.msgs {
            Msgs::One(first) => {
                let mut all = [*first; Self::MAX];
                all[1] = msg;
                self.msgs = Msgs::Many(all, 2);
            }
            Msgs::Many(all, len) => {
                all[*len] = msg;
                *len += 1;
            }
        }
    }

    pub(crate) fn messages(&self) -> &[Message<'a>] {
        match &self.msgs {
            Msgs::One(first) => std::slice::from_ref(first),
            Msgs::Many(all, len) => &all[..*len],
        }
    }
}

/// Stages one copy of a message for each core in the targets, with the
/// queue groups that core was drawn for, handed on as `onward` says.
fn stage_for_peers(
    shard: &Shard,
    outbound: &mut Outbound,
    targets: &Targets<'_>,
    msg: Message<'_>,
    onward: Handoff<'_>,
) {
    let plain = Record::publish(msg);
    let mut crossed = 0;
    for peer in targets.remote.iter() {
        let record = if targets.handed.is_empty() {
            plain
        } else {
            Record::queue_publish(msg, Handoff { groups: targets.handed.to(peer), ..onward })
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
