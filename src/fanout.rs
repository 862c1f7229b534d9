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

/// A core's fan-out scratch: the message being delivered, encoded once, and
/// how much was copied out since subscribers last had a turn to flush.
///
/// Past [`Fanout::BURST`] bytes the publisher yields and every subscriber
/// writes, then reuses its buffer from the start. Without it one large read
/// of publishes fans out into memory proportional to readers × read size
/// (about 1 GiB for a 1 MiB read and 1000 subscribers): page faults, cache
/// misses and a broker RSS in the hundreds of MiB.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// The current `MSG`, encoded with sid 0; each subscriber gets a copy
    /// with its own sid. Grows to the largest message, at most a frame.
    frame: Vec<u8>,
    /// Bytes copied out since the last yield.
    burst: usize,
}

impl Fanout {
    /// Measured with `corecast-bench fanout` (1 → 1000, 64 B, one core):
    /// 1 MiB leaves too few messages per write (1.0 M delivered/s), no limit
    /// thrashes memory (4.0 M/s, 740 MiB RSS), 32 MiB gives 6.1 M/s and
    /// 46 MiB RSS.
    const BURST: usize = 32 << 20;

    /// Encodes `msg` once for the subscribers about to get it.
    fn encode(&mut self, msg: Message<'_>) -> &[u8] {
        self.frame.clear();
        let Message { topic, reply_to, payload } = msg;
        ServerFrame::Msg(Msg { sid: 0, topic, reply_to, payload }).encode(&mut self.frame);
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
    scratch: &mut Fanout,
) -> bool {
    let (mut sent, mut dropped, mut pressed) = (0, 0, false);
    let frame = scratch.encode(msg);
    for (i, sub) in subs.iter().enumerate() {
        prefetch_ahead(slots, subs, i);
        let Some(slot) = slots.get_mut(sub.key) else { continue };
        if !slot.is_open() {
            continue;
        }
        let half = slot.message_limit() / 2;
        let before = slot.wbuf.pending().len();
        if slot.push_msg(frame, sub.sid) {
            sent += 1;
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
    let copied = frame.len() * sent as usize;
    scratch.burst_over(copied) | pressed
}
