//! Copying one message into the output queues of this core's subscribers.
//!
//! A subscriber whose queue cannot take the message meets its policy
//! ([`crate::pressure`]): lossy subscriptions drop and count it (reported
//! later with `DROPPED`), others begin to leave as slow consumers and are
//! listed for the caller to finish with [`crate::shard::State::reap_doomed`].

use corecast_proto::{Msg, ServerFrame};
use slab::Slab;

use crate::{
    counters::CoreCounters,
    memory::Memory,
    pressure::{Policy, Queued},
    slot::Slot,
    topics::LocalSub,
};

/// The parts of a message every subscriber gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub topic: &'a str,
    pub reply_to: &'a str,
    pub payload: &'a [u8],
}

/// A core's fan-out scratch: the message being delivered, encoded once, and
/// how much was copied out since subscribers last had a turn to flush.
///
/// Past [`Fanout::BURST`] bytes the publisher yields and every subscriber
/// writes, giving its chunks back. Without it one large read of publishes
/// fans out into memory proportional to readers × read size (about 1 GiB
/// for a 1 MiB read and 1000 subscribers): page faults, cache misses and a
/// broker RSS in the hundreds of MiB.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// The current `MSG`; each subscriber gets a copy with its own sid
    /// stamped in. Grows to the largest message, at most a frame.
    frame: Vec<u8>,
    /// Bytes copied out since the last yield.
    burst: usize,
}

impl Fanout {
    /// Measured with `corecast-bench fanout` (1 → 1000, 64 B, one core,
    /// before output moved to chunks, with 64 MiB write buffers): 1 MiB
    /// leaves too few messages per write (1.0 M delivered/s), no limit
    /// thrashes memory (4.0 M/s, 740 MiB RSS), 32 MiB gives 6.1 M/s and
    /// 46 MiB RSS. At the shipped defaults with chunks, 1 → 1000 peaked at
    /// 43 MiB RSS.
    const BURST: usize = 32 << 20;

    /// Encodes `msg` once for the subscribers about to get it.
    fn encode(&mut self, msg: Message<'_>) {
        self.frame.clear();
        let Message { topic, reply_to, payload } = msg;
        ServerFrame::Msg(Msg { sid: 0, topic, reply_to, payload }).encode(&mut self.frame);
    }

    /// The encoded message with `sid` stamped in.
    fn for_sid(&mut self, sid: u32) -> &[u8] {
        self.frame[Msg::SID_AT..Msg::SID_AT + 4].copy_from_slice(&sid.to_le_bytes());
        &self.frame
    }

    /// Counts `bytes` more copied out; true when the burst is over (and
    /// starts the next one).
    fn burst_over(&mut self, bytes: usize) -> bool {
        self.burst += bytes;
        if self.burst >= Self::BURST {
            self.burst = 0;
            return true;
        }
        false
    }
}

/// How many subscribers ahead the loop prefetches write positions; slots
/// are prefetched twice as far ahead, so their queue's tail is at hand.
const PREFETCH_AHEAD: usize = 4;

/// Asks for the slot `2 × PREFETCH_AHEAD` subscribers ahead and for the
/// chunk line the subscriber `PREFETCH_AHEAD` ahead will be written at.
#[inline(always)]
fn prefetch_ahead(slots: &Slab<Slot>, mem: &Memory, subs: &[LocalSub], i: usize) {
    if let Some(far) = subs.get(i + 2 * PREFETCH_AHEAD) {
        if let Some(slot) = slots.get(far.key) {
            crate::prefetch::line(slot);
        }
    }
    if let Some(near) = subs.get(i + PREFETCH_AHEAD).and_then(|s| slots.get(s.key)) {
        near.out.prefetch_tail(mem);
    }
}

/// Delivers `msg` to `subs`. Returns whether the caller should let
/// subscribers flush before delivering more: some subscriber's queue just
/// went past half of `max_pending`, or this burst reached its limit.
pub(crate) fn deliver(
    slots: &mut Slab<Slot>,
    mem: &mut Memory,
    subs: &[LocalSub],
    msg: Message<'_>,
    policy: &mut Policy<'_>,
    scratch: &mut Fanout,
) -> bool {
    let (mut sent, mut pressed) = (0, false);
    let half = mem.max_pending() / 2;
    scratch.encode(msg);
    for (i, sub) in subs.iter().enumerate() {
        prefetch_ahead(slots, mem, subs, i);
        let Some(slot) = slots.get(sub.key) else { continue };
        if !slot.is_open() {
            continue;
        }
        let before = slot.out.len();
        let frame = scratch.for_sid(sub.sid);
        let drop_sid = sub.lossy.then_some(sub.sid);
        if policy.queue(slots, mem, sub.key, frame, drop_sid) == Queued::Yes {
            sent += 1;
            // Once per crossing: a subscriber stuck above half is not news.
            pressed |= before <= half && slots[sub.key].out.len() > half;
        }
    }
    CoreCounters::add(&policy.counters.msgs_out, sent);
    let copied = scratch.frame.len() * sent as usize;
    scratch.burst_over(copied) | pressed
}
