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

/// Delivers `msg` to `subs`. Slots too slow to take it are added to
/// `doomed`. Returns whether some subscriber's write buffer just went past
/// half full, a hint for the caller to let it flush before delivering more.
pub(crate) fn deliver(
    slots: &mut Slab<Slot>,
    subs: &[LocalSub],
    msg: Message<'_>,
    counters: &CoreCounters,
    doomed: &mut Vec<usize>,
) -> bool {
    let (mut sent, mut dropped, mut pressed) = (0, 0, false);
    for sub in subs {
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
    pressed
}
