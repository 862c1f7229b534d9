//! Queue groups at publish time: a message goes to one member of each
//! group it reaches, drawn uniformly among the members on every core.
//!
//! The core where the message is published draws for each group: one of
//! its own members, or another core, weighted by the members that core
//! has (the interest records carry the counts). A message drawn for
//! another core travels there once, with the names of the groups it must
//! serve ([`GroupNames`]), and that core picks one of its own members.
//!
//! If that core has no member left when the message arrives (it left while
//! the message was on its way), it draws once more among the other cores
//! it knows members on, the publishing core included, weighted the same
//! way, and hands the message on there, marked as re-drawn
//! ([`Handoff::redrawn`]): one more hop at most, so a message never
//! circles while the cores learn of the departures. A group the core
//! knows no member of elsewhere, or whose re-drawn message finds no member
//! either, loses the message, which is counted in `queue_undeliverable`;
//! each group of a message is served, handed on or lost on its own. The
//! hop may bring the message to its member after messages of the same
//! publisher published later; the protocol allows that for a message given
//! to another member after the first left.
//!
//! The re-draw never waits for a full peer: it is made on a peer's
//! publish, which must never stall (a core waiting for another to make
//! room while that one waits for it would stop both). It chooses only
//! among cores whose staging has room (`Outbound::can_forward`). When
//! none with members has, the message waits once, as a delivery waits
//! once for the budget: the receiving task yields, which lets this core's
//! forwarders hand their staging to the links, and draws again. Still no
//! room (the links are full too), and the message is lost and counted as
//! above. Staging stays within its bound: below `cross_core_batch` before
//! each record, as for a client's publish.
//!
//! A pick here passes over members whose connection is leaving, and
//! prefers a member with room for the message below `max_pending` to one
//! the message would make meet the slow-consumer policy; when every member
//! is that full, the one drawn meets its policy as any subscriber would.

#[cfg(test)]
mod tests;

use std::{ops::Range, rc::Rc};

use slab::Slab;

use super::{
    topics::{LocalSub, QueueGroup, TopicEntry},
    Targets,
};
use crate::{
    core::slot::Slot,
    mesh::{
        coreset::CoreSet,
        record::{GroupNames, Handoff},
    },
};

/// A core's queue group scratch: the random draws, and the targets of the
/// message being routed, reused from one message to the next.
#[derive(Debug)]
pub(crate) struct Queues {
    /// The draws. Seeded per core; the distribution is what matters, not
    /// unpredictability.
    rng: fastrand::Rng,
    /// The local subscriptions the message goes to: the plain ones, then
    /// the members picked here.
    recipients: Vec<LocalSub>,
    /// Groups drawn for other cores: the core and the group's name.
    handed: Vec<(usize, Rc<str>)>,
    /// The names handed to each core, encoded for its record.
    names: Vec<u8>,
    /// Which bytes of `names` go to which core, by core.
    blocks: Vec<(usize, Range<usize>)>,
    /// For each group of the topic being drawn for, the positions of its
    /// members here that can be drawn; counted once for the messages of a
    /// batch ([`Queues::begin_batch`]), again once a delivery has cut a
    /// connection ([`Queues::recount`]).
    eligible: Vec<Vec<usize>>,
    /// Whether `eligible` holds for the batch being drawn for.
    counted: bool,
    /// Scratch for a pick among one group's members here.
    listed: Vec<usize>,
}

impl Default for Queues {
    fn default() -> Self {
        Self {
            rng: fastrand::Rng::new(),
            recipients: Vec::new(),
            handed: Vec::new(),
            names: Vec::new(),
            blocks: Vec::new(),
            eligible: Vec::new(),
            counted: false,
            listed: Vec::new(),
        }
    }
}

/// The groups a message was drawn for on other cores, by core.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Handed<'a> {
    blocks: &'a [(usize, Range<usize>)],
    names: &'a [u8],
}

impl<'a> Handed<'a> {
    /// The groups core `peer` must serve; empty when none.
    pub(crate) fn to(&self, peer: usize) -> GroupNames<'a> {
        match self.blocks.iter().find(|(core, _)| *core == peer) {
            Some((_, range)) => GroupNames::from_encoded(&self.names[range.clone()]),
            None => GroupNames::default(),
        }
    }

    /// Whether no group went to another core.
    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// What a pick checks a member's output queue against: the message's
/// frame and the connection's `max_pending`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Room {
    frame: usize,
    max_pending: usize,
}

impl Room {
    /// Room for a frame of `frame` bytes below `max_pending`.
    pub(crate) fn new(frame: usize, max_pending: usize) -> Self {
        Self { frame, max_pending }
    }
}

/// Where one group's member was drawn.
enum Draw {
    Here(LocalSub),
    There(usize),
    Nobody,
}

impl Queues {
    /// Starts drawing for a batch of messages to one topic: who can be
    /// drawn is counted at the first draw and kept for the batch.
    pub(super) fn begin_batch(&mut self) {
        self.counted = false;
    }

    /// Counts who can be drawn again at the next draw: a delivery cut a
    /// connection, which may be a member.
    pub(super) fn recount(&mut self) {
        self.counted = false;
    }

    /// The targets of a client's message whose topic has queue groups: the
    /// plain subscriptions here and on other cores, and one member of each
    /// group, drawn among all members but those of connection `skip` (a
    /// publisher that asked for no echo). Between [`Queues::begin_batch`]
    /// and the end of the batch, `entry`, `skip` and the members' states
    /// stay as they were but for what [`Queues::recount`] says.
    pub(super) fn draw<'a>(
        &'a mut self,
        entry: &'a TopicEntry,
        slots: &Slab<Slot>,
        barred: Barred<'_>,
        room: Room,
    ) -> Targets<'a> {
        if !self.counted {
            self.count_eligible(entry, slots, barred);
        }
        // A count kept from another topic's batch would draw from the wrong
        // lists: every batch starts with `begin_batch`.
        debug_assert_eq!(self.eligible.len(), entry.groups().len(), "draw outside its batch");
        self.start(entry.local());
        let mut remote = *entry.remote();
        for (g, group) in entry.groups().iter().enumerate() {
            match self.draw_one(g, group, slots, room) {
                Draw::Here(member) => self.recipients.push(member),
                Draw::There(core) => {
                    remote.insert(core);
                    self.handed.push((core, Rc::clone(group.name())));
                }
                Draw::Nobody => {}
            }
        }
        self.encode_handed();
        let handed = Handed { blocks: &self.blocks, names: &self.names };
        Targets { local: &self.recipients, remote, handed, ..Targets::default() }
    }

    /// Lists, for each group of `entry`, its members here that can be
    /// drawn.
    fn count_eligible(&mut self, entry: &TopicEntry, slots: &Slab<Slot>, barred: Barred<'_>) {
        let groups = entry.groups();
        self.eligible.resize_with(groups.len(), Vec::new);
        for (list, group) in self.eligible.iter_mut().zip(groups) {
            list_eligible(group.local(), slots, barred, list);
        }
        self.counted = true;
    }

    /// The targets of a message another core sent here: the plain
    /// subscriptions (unless it was re-drawn), and a member here of each
    /// group in the handoff, passing over the members of connection `skip`
    /// (the publisher's, when it asked for no echo and the message came
    /// back to its core). A group with no member left here is drawn once
    /// more among the other cores that `can_forward` to, unless it was
    /// re-drawn already; else it is counted as undeliverable, and as stuck
    /// when only the staging room was missing.
    pub(super) fn serve<'a>(
        &'a mut self,
        entry: Option<&'a TopicEntry>,
        (handoff, barred): (Handoff<'_>, Barred<'_>),
        slots: &Slab<Slot>,
        can_forward: impl Fn(usize) -> bool,
        room: Room,
    ) -> Targets<'a> {
        let plain = entry.filter(|_| !handoff.redrawn).map_or(&[][..], TopicEntry::local);
        self.start(plain);
        let (mut remote, mut undeliverable, mut stuck) = (CoreSet::default(), 0, 0);
        for name in handoff.groups.iter() {
            let group = entry.and_then(|e| e.group(name));
            let members = group.map_or(&[][..], QueueGroup::local);
            if let Some(member) = self.pick(members, slots, barred, room) {
                self.recipients.push(member);
                continue;
            }
            let Some(group) = group.filter(|_| !handoff.redrawn) else {
                undeliverable += 1;
                continue;
            };
            match self.redraw(group, &can_forward) {
                Some(core) => {
                    remote.insert(core);
                    self.handed.push((core, Rc::clone(group.name())));
                }
                None => {
                    undeliverable += 1;
                    stuck += u64::from(group.remote_members() > 0);
                }
            }
        }
        let redrawn = self.handed.len() as u64;
        self.encode_handed();
        let handed = Handed { blocks: &self.blocks, names: &self.names };
        Targets { local: &self.recipients, remote, handed, undeliverable, redrawn, stuck }
    }

    fn start(&mut self, plain: &[LocalSub]) {
        self.recipients.clear();
        self.recipients.extend_from_slice(plain);
    }

    /// Draws among all members of `group`, the `g`th of the topic: each
    /// member here that can be drawn counts once, each other core as many
    /// times as it has members.
    fn draw_one(&mut self, g: usize, group: &QueueGroup, slots: &Slab<Slot>, room: Room) -> Draw {
        let here = self.eligible[g].len() as u64;
        let total = here + group.remote_members();
        if total == 0 {
            return Draw::Nobody;
        }
        let n = self.rng.u64(..total);
        if n < here {
            return Draw::Here(pick_listed(
                group.local(),
                &self.eligible[g],
                n as usize,
                slots,
                room,
            ));
        }
        let weights = group.remote().map(|(core, count)| (core, u64::from(count)));
        nth_core(weights, n - here).map_or(Draw::Nobody, Draw::There)
    }

    /// Draws one of the other cores with members of `group` that
    /// `can_forward` to, each weighted by its members; `None` when there
    /// is none.
    fn redraw(&mut self, group: &QueueGroup, can_forward: impl Fn(usize) -> bool) -> Option<usize> {
        let can_forward = &can_forward;
        let weights = move || {
            let open = group.remote().filter(move |&(core, _)| can_forward(core));
            open.map(|(core, count)| (core, u64::from(count)))
        };
        let total: u64 = weights().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        nth_core(weights(), self.rng.u64(..total))
    }

    /// Picks one of `members` here that is not `barred`, uniformly; `None`
    /// if none can take messages.
    fn pick(
        &mut self,
        members: &[LocalSub],
        slots: &Slab<Slot>,
        barred: Barred<'_>,
        room: Room,
    ) -> Option<LocalSub> {
        let listed = &mut self.listed;
        list_eligible(members, slots, barred, listed);
        if listed.is_empty() {
            return None;
        }
        let n = self.rng.usize(..listed.len());
        Some(pick_listed(members, listed, n, slots, room))
    }

    /// Encodes the groups drawn for other cores, one block of names per
    /// core, and lets go of the names.
    fn encode_handed(&mut self) {
        self.names.clear();
        self.blocks.clear();
        self.handed.sort_by_key(|(core, _)| *core);
        for (core, name) in self.handed.drain(..) {
            let start = self.names.len();
            GroupNames::push(&mut self.names, &name);
            let end = self.names.len();
            match self.blocks.last_mut() {
                Some((last, range)) if *last == core => range.end = end,
                _ => self.blocks.push((core, start..end)),
            }
        }
    }
}

/// Every other core a message to `entry`'s topic may go to: those with
/// subscriptions without a group, and those with members of its groups.
pub(super) fn reach(entry: &TopicEntry) -> CoreSet {
    let mut cores = *entry.remote();
    for group in entry.groups() {
        group.remote().for_each(|(core, _)| cores.insert(core));
    }
    cores
}

/// The core whose share holds the `n`th of the weights' sum, when cores
/// are lined up with `weights`, each `(core, weight)`.
fn nth_core(weights: impl Iterator<Item = (usize, u64)>, mut n: u64) -> Option<usize> {
    for (core, weight) in weights {
        match n.checked_sub(weight) {
            Some(rest) => n = rest,
            None => return Some(core),
        }
    }
    None
}

/// Who may not be drawn for a message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Barred<'t> {
    /// The publisher's own connection, when it asked for no echo.
    pub skip: Option<usize>,
    /// The message's topic: a member whose user may not receive it (its
    /// pattern overlaps a deny rule that covers the topic) is passed over,
    /// so that another member gets the message.
    pub topic: &'t str,
}

/// Whether a member can be picked: its connection is open, it is not the
/// publisher's own when that asked for no echo, and its user may receive
/// the topic.
fn eligible(member: &LocalSub, slots: &Slab<Slot>, barred: Barred<'_>) -> bool {
    barred.skip != Some(member.key)
        && slots
            .get(member.key)
            .is_some_and(|slot| slot.is_open() && slot.may_deliver(member.sid, barred.topic))
}

/// Sets `list` to the positions of the `members` that can be picked.
fn list_eligible(
    members: &[LocalSub],
    slots: &Slab<Slot>,
    barred: Barred<'_>,
    list: &mut Vec<usize>,
) {
    list.clear();
    let open = members.iter().enumerate().filter(|(_, m)| eligible(m, slots, barred));
    list.extend(open.map(|(at, _)| at));
}

/// The member at `listed[nth]` or, when its queue has no room for the
/// message, the next listed one after it that has; the `nth` itself if
/// none has.
fn pick_listed(
    members: &[LocalSub],
    listed: &[usize],
    nth: usize,
    slots: &Slab<Slot>,
    room: Room,
) -> LocalSub {
    let has_room =
        |&at: &usize| slots[members[at].key].out().len() + room.frame <= room.max_pending;
    let from_nth = listed[nth..].iter().chain(&listed[..nth]);
    members[from_nth.copied().find(has_room).unwrap_or(listed[nth])]
}
