//! What happens when a connection's output or the core's budget is full:
//! the named policies, in one place.
//!
//! - **`max_pending`** (per connection): a message that would queue more is
//!   dropped and counted on a lossy subscription, and closes the connection
//!   with `ERR slow consumer` otherwise.
//! - **`write_deadline_ms`** (per connection): a socket that took nothing for
//!   that long while output waited closes the same way (the sweeper checks).
//! - **`pending_budget`** (per core): a publisher about to deliver a message
//!   the budget may be short for first lets the subscribers write once. When
//!   a frame then cannot get chunks, another connection meets its policy
//!   first: one whose socket refuses output before one whose socket takes
//!   it, then the one holding the most, as long as it holds more than the
//!   asker (or is stuck while the asker is not). A connection whose
//!   subscriptions are all lossy drops its queued messages (counted,
//!   reported with `DROPPED`); any other is closed (`ERR slow consumer`, or
//!   `ERR out of memory` when what it holds is mostly input). Only when no
//!   one qualifies does the asker meet its own policy. So a subscriber that
//!   keeps up is never cut while a stalled one holds as much.
//! - **Fast-producer hold** (backpressure): a delivery that leaves a
//!   subscriber that keeps reading with more than [`Hold::FROM`] of
//!   `max_pending` queued holds its publisher back until the subscriber is
//!   back under that mark, for at most [`Hold::MAX`] each time (counted in
//!   `publisher_holds`): a client publisher before its next read (of up to
//!   256 KiB), the receiver of another core's publishes before its next
//!   delivery (its link fills meanwhile, and that core's publishers wait
//!   for room). A reading subscriber is thus not cut for being slower than
//!   its publisher for a while, and one that stopped reading, or that
//!   subscribed lossy, holds no one back.
//!
//! Connections that begin to leave here are listed in [`Doomed`];
//! [`crate::route::reap`] finishes their exit (subscriptions, counters)
//! right after the delivery, since their subscriptions are being walked.

use std::time::{Duration, Instant};

use slab::Slab;

use super::slot::{Deadlines, Exit, Limit, Slot};
use crate::{
    counters::CoreCounters,
    mem::{queue::Item, Memory, CHUNK},
};

/// Slots that began leaving during a delivery: key, why, whether it was
/// `Open`.
pub(crate) type Doomed = Vec<(usize, Exit, bool)>;

/// What applying a policy needs besides the slots and memory.
#[derive(Debug)]
pub(crate) struct Policy<'a> {
    pub counters: &'a CoreCounters,
    pub deadlines: Deadlines,
    pub doomed: &'a mut Doomed,
}

/// What a delivery asks of its publisher before it delivers more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pressure {
    /// Some subscriber's queue just went past half of `max_pending`, or the
    /// burst reached its limit: let the subscribers flush first.
    pub flush: bool,
    /// A subscriber that keeps reading is past [`Hold::FROM`]: wait for it.
    pub hold: Option<usize>,
}

impl Pressure {
    /// Both deliveries' asks.
    pub(crate) fn and(self, other: Self) -> Self {
        Self { flush: self.flush | other.flush, hold: self.hold.or(other.hold) }
    }
}

/// A publisher held back for subscriber `by` (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    by: usize,
    until: Instant,
}

impl Hold {
    /// The share of `max_pending` past which a reading subscriber holds its
    /// publisher back. nats-server stalls a fast producer past 3/4; half
    /// leaves room for what arrives meanwhile: a socket that is read
    /// without pause may still refuse output for 20–50 ms at a time (the
    /// kernel wakes a writer once a third of its send buffer is free), and
    /// a publisher goes on by a read of up to 256 KiB after each hold.
    pub(crate) const FROM: (usize, usize) = (1, 2);
    /// The longest one delivery waits; as long as nats-server's stall per
    /// read. A subscriber that drains slower than its publisher's reads
    /// arrive at this pace still falls behind, and meets its policy.
    pub(crate) const MAX: Duration = Duration::from_millis(10);
    /// How often a held publisher looks at the subscriber again.
    pub(crate) const TICK: Duration = Duration::from_millis(1);
    /// A socket that has refused output for this long is not read.
    const READING: Duration = Duration::from_millis(100);

    /// Whether `slot`, a subscriber of a non-lossy subscription just given
    /// a message, holds its publisher back.
    pub(crate) fn holds_for(slot: &Slot, max_pending: usize, now: Instant) -> bool {
        let (num, den) = Self::FROM;
        slot.is_open()
            && slot.out().len() > max_pending / den * num
            && slot.write_blocked_since().is_none_or(|since| now - since < Self::READING)
    }

    /// A hold for `by`, if it holds now.
    pub(crate) fn start(by: usize, slots: &Slab<Slot>, max_pending: usize) -> Option<Self> {
        let now = Instant::now();
        let hold = Self { by, until: now + Self::MAX };
        hold.holds(slots, max_pending, now).then_some(hold)
    }

    /// Whether the publisher still waits.
    pub(crate) fn holds(&self, slots: &Slab<Slot>, max_pending: usize, now: Instant) -> bool {
        now < self.until && slots.get(self.by).is_some_and(|s| Self::holds_for(s, max_pending, now))
    }
}

/// How one queued frame fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// It is queued.
    Yes,
    /// It did not fit and the subscription is lossy: dropped and counted.
    Dropped,
    /// It did not fit: the connection is leaving as a slow consumer.
    Cut,
}

impl Policy<'_> {
    /// Queues `frame` for `key`, making room in the budget if it can; a
    /// frame that still does not fit meets `key`'s policy: dropped and
    /// counted for a message on a lossy subscription (`drop_sid`), a cut
    /// otherwise.
    pub(crate) fn queue(
        &mut self,
        slots: &mut Slab<Slot>,
        mem: &mut Memory,
        key: usize,
        item: Item<'_>,
        drop_sid: Option<u32>,
    ) -> Queued {
        let limit = match slots[key].queue(mem, item) {
            Ok(()) => return Queued::Yes,
            Err(Limit::Budget) if self.make_room(slots, mem, key, item.len()) => {
                match slots[key].queue(mem, item) {
                    Ok(()) => return Queued::Yes,
                    Err(limit) => limit,
                }
            }
            Err(limit) => limit,
        };
        let slot = &mut slots[key];
        if let Some(sid) = drop_sid {
            slot.record_drop(sid);
            let cause = match limit {
                Limit::MaxPending => &self.counters.drops_max_pending,
                _ => &self.counters.drops_budget,
            };
            CoreCounters::add(cause, 1);
            CoreCounters::add(&self.counters.msgs_dropped, 1);
            return Queued::Dropped;
        }
        self.cut(slots, mem, key, Exit::SlowConsumer(limit));
        Queued::Cut
    }

    /// Frees budget until `len` more bytes fit, applying the budget policy
    /// to connections that hold more than `key`, each at most once. False
    /// when it cannot.
    ///
    /// Shared message bodies go back only when every queue holding them
    /// has let go, so one victim may free little; the loop goes on through
    /// the holders rather than stopping at the first.
    pub(crate) fn make_room(
        &mut self,
        slots: &mut Slab<Slot>,
        mem: &mut Memory,
        key: usize,
        len: usize,
    ) -> bool {
        let fits = |mem: &Memory| mem.room() >= len + CHUNK;
        if fits(mem) {
            return true;
        }
        for victim in victims_for(slots, key) {
            self.apply_budget_policy(slots, mem, victim);
            if fits(mem) {
                return true;
            }
        }
        false
    }

    /// Sheds the queued messages of a connection whose subscriptions are all
    /// lossy (never cutting it), and cuts any other.
    fn apply_budget_policy(&mut self, slots: &mut Slab<Slot>, mem: &mut Memory, key: usize) {
        let slot = &mut slots[key];
        if slot.all_lossy() && slot.input().is_empty() {
            let shed = slot.shed_messages(mem);
            if shed > 0 {
                slot.notify();
                CoreCounters::add(&self.counters.drops_budget, shed);
                CoreCounters::add(&self.counters.msgs_dropped, shed);
            }
            return;
        }
        let input_bound = slot.held() > 2 * slot.out().held();
        let why = if input_bound { Exit::OutOfMemory } else { Exit::SlowConsumer(Limit::Budget) };
        self.cut(slots, mem, key, why);
    }

    /// Starts `key`'s exit now (giving its memory back) and lists it for
    /// the core to finish.
    pub(crate) fn cut(&mut self, slots: &mut Slab<Slot>, mem: &mut Memory, key: usize, why: Exit) {
        if let Some(was_open) = slots[key].begin_leave(mem, why, "", self.deadlines) {
            self.doomed.push((key, why, was_open));
        }
    }
}

/// Who meets the budget policy so that `asker` gets room, in order: live
/// connections whose socket refuses output first (they will not give
/// anything back by themselves), then by what they hold, the one refused
/// longest first among equals. Each must hold more than the asker, unless
/// it is stuck and the asker is not: a subscriber that keeps up never loses
/// to one that does not. Ranked once, so going through many holders of
/// shared bodies costs one sort, not a scan per victim.
fn victims_for(slots: &Slab<Slot>, asker: usize) -> Vec<usize> {
    let rank = |s: &Slot| {
        let since = s.write_blocked_since().map(std::cmp::Reverse);
        (s.write_blocked_since().is_some(), s.held(), since)
    };
    let (asker_stuck, mine, asker_since) = slots.get(asker).map_or((false, 0, None), rank);
    let outranks = |&((stuck, held, since), _): &(_, usize)| match (stuck, asker_stuck) {
        (true, false) => true,
        (false, true) => false,
        _ => held > mine || (held == mine && since > asker_since),
    };
    let mut ranked: Vec<_> = slots
        .iter()
        .filter(|&(k, s)| k != asker && s.is_live())
        .map(|(k, s)| (rank(s), k))
        .filter(|&((_, held, _), _)| held > 0)
        .collect();
    ranked.sort_unstable_by_key(|&(rank, _)| std::cmp::Reverse(rank));
    ranked.into_iter().take_while(outranks).map(|(_, k)| k).collect()
}

/// Whether a message of `frame_len` bytes for `subscribers` would run into
/// the budget. A publisher then lets the subscribers write once before it
/// delivers (see [`crate::cmd::Flow::Defer`]), so that readers that keep up
/// give their chunks back instead of meeting the policy alongside the
/// stalled ones.
pub(crate) fn budget_short(mem: &Memory, subscribers: usize, frame_len: usize) -> bool {
    // Each subscriber may need a fresh chunk for it.
    let per_subscriber = frame_len.max(CHUNK);
    mem.room() < subscribers.saturating_mul(per_subscriber)
}
