//! Copying one message into the write buffers of this core's subscribers.
//!
//! A subscriber whose buffer cannot take the message meets its policy:
//! lossy subscriptions drop and count it (reported later with `DROPPED`),
//! others are marked for a slow-consumer close, carried out by the caller
//! right after the delivery with [`crate::shard::State::reap_doomed`].

use corecast_proto::{Msg, ServerFrame};
use slab::Slab;

use crate::{counters::CoreCounters, slot::Slot, topics::LocalSub};

/// The parts of a message every subscriber gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub topic: &'a str,
    pub reply_to: &'a str,
    pub payload: &'a [u8],
}

/// Bytes copied into write buffers since subscribers last had a turn to
/// flush. Past [`Burst::LIMIT`] the publisher yields and every subscriber
/// writes, then reuses its buffer from the start. Without it one large read
/// of publishes fans out into memory proportional to readers × read size
/// (about 1 GiB for a 1 MiB read and 1000 subscribers): page faults, cache
/// misses and a broker RSS in the hundreds of MiB.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    bytes: usize,
}

impl Burst {
    /// Measured with `corecast-bench fanout` (1 → 1000, 64 B, one core):
    /// 1 MiB leaves too few messages per write (1.0 M delivered/s), no limit
    /// thrashes memory (4.0 M/s, 740 MiB RSS), 32 MiB gives 6.1 M/s and
    /// 46 MiB RSS.
    const LIMIT: usize = 32 << 20;

    /// Counts `bytes` more; true when the limit is reached (and restarts).
    fn add(&mut self, bytes: usize) -> bool {
        self.bytes += bytes;
        if self.bytes >= Self::LIMIT {
            self.bytes = 0;
            return true;
        }
        false
    }
}

/// How many subscribers ahead the loop prefetches write positions; slots
/// are prefetched twice as far ahead, so their `tail` is at hand in time.
const PREFETCH_AHEAD: usize = 4;

/// Asks for the slot `2 × PREFETCH_AHEAD` subscribers ahead and for the
/// buffer line the subscriber `PREFETCH_AHEAD` ahead will be written at.
#[inline(always)]
fn prefetch_ahead(slots: &Slab<Slot>, subs: &[LocalSub], i: usize) {
    if let Some(far) = subs.get(i + 2 * PREFETCH_AHEAD) {
        if let Some(slot) = slots.get(far.key) {
            crate::prefetch::line(slot);
        }
    }
    if let Some(near) = subs.get(i + PREFETCH_AHEAD).and_then(|s| slots.get(s.key)) {
        near.wbuf.prefetch_tail();
    }
}

/// Delivers `msg` to `subs`. Slots too slow to take it are added to
/// `doomed`. Returns whether the caller should let subscribers flush before
/// delivering more: some subscriber's write buffer just went past half
/// full, or this burst of deliveries reached its limit.
pub(crate) fn deliver(
    slots: &mut Slab<Slot>,
    subs: &[LocalSub],
    msg: Message<'_>,
    counters: &CoreCounters,
    doomed: &mut Vec<usize>,
    burst: &mut Burst,
) -> bool {
    let (mut sent, mut dropped, mut pressed, mut bytes) = (0, 0, false, 0);
    for (i, sub) in subs.iter().enumerate() {
        prefetch_ahead(slots, subs, i);
        let Some(slot) = slots.get_mut(sub.key) else { continue };
        if !slot.is_open() {
            continue;
        }
        let frame = ServerFrame::Msg(Msg {
            sid: sub.sid,
            topic: msg.topic,
            reply_to: msg.reply_to,
            payload: msg.payload,
        });
        let half = slot.message_limit() / 2;
        let before = slot.wbuf.pending().len();
        if slot.push(&frame) {
            sent += 1;
            bytes += slot.wbuf.pending().len() - before;
            // Once per crossing: a subscriber stuck above half is not news.
            pressed |= before <= half && slot.wbuf.pending().len() > half;
        } else if sub.lossy {
            slot.record_drop(sub.sid);
            dropped += 1;
        } else if !doomed.contains(&sub.key) {
            doomed.push(sub.key);
        }
    }
    CoreCounters::add(&counters.msgs_out, sent);
    CoreCounters::add(&counters.msgs_dropped, dropped);
    burst.add(bytes) | pressed
}
