//! Copying one message into the output queues of this core's subscribers.
//!
//! A subscriber whose queue cannot take the message meets its policy
//! ([`crate::core::pressure`]): lossy subscriptions drop and count it (reported
//! later with `DROPPED`), others begin to leave as slow consumers and are
//! listed for the caller to finish with [`super::reap`].

use corecast_proto::{HMsg, HPub, Headers, Msg, Pub, ServerFrame, ServerFrame11};
use slab::Slab;

use super::topics::LocalSub;
use crate::{
    core::{
        pressure::{Policy, Queued},
        slot::Slot,
    },
    counters::CoreCounters,
    mem::{queue::Item, splice::HEADER, Blob, ChunkId, Memory, CHUNK, REFCOUNT},
};

/// A message for more than one subscriber is written once to a shared
/// chunk, with the first subscriber's sid, and every subscriber with that
/// sid queues the frame as it lies there: consecutive ones extend one
/// record. (Clients number sids from 1, so the subscribers of one topic
/// often share one.) A subscriber with another sid gets its own header and
/// the shared body when the body (topic and reply-to included) has this
/// many bytes; a shorter one is copied into its queue, which costs less
/// than a record and the extra slices in `sendmsg`.
const SHARE_FROM: usize = 256;

/// The current message, written once to a shared chunk with one
/// subscriber's sid.
#[derive(Debug, Clone, Copy)]
struct Shared {
    sid: u32,
    frame: Blob,
}

impl Shared {
    /// How `sub` gets it: the whole frame when its sid is the one written;
    /// else its own header and the shared body when the body is long
    /// enough for that to beat a copy; else `None`, a copy.
    fn item_for(
        self,
        sub: &LocalSub,
        header: impl FnOnce() -> [u8; HEADER],
    ) -> Option<Item<'static>> {
        if sub.sid == self.sid {
            return Some(Item::Frame { sid: sub.sid, frame: self.frame });
        }
        let body = usize::from(self.frame.len) - HEADER;
        (body >= SHARE_FROM).then(|| {
            let blob = Blob { off: self.frame.off + HEADER as u16, len: body as u16, ..self.frame };
            Item::Shared { header: header(), blob }
        })
    }
}

/// The parts of a message every subscriber gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub topic: &'a str,
    pub reply_to: &'a str,
    /// The header block of an `HPUB`, checked by the codec; `None` for a
    /// `PUB`. 1.1 subscribers get it in `HMSG`, version 1 ones a `MSG`
    /// without it.
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// The length the budget check assumes for its `MSG` or `HMSG` frame:
    /// the body and 16 bytes of header and length fields (a few more than
    /// exact).
    pub(crate) fn frame_len(&self) -> usize {
        let headers = self.headers.map_or(0, |h| 2 + h.len());
        16 + self.topic.len() + self.reply_to.len() + headers + self.payload.len()
    }
}

impl<'a> From<Pub<'a>> for Message<'a> {
    fn from(p: Pub<'a>) -> Self {
        Message { topic: p.topic, reply_to: p.reply_to, headers: None, payload: p.payload }
    }
}

impl<'a> From<HPub<'a>> for Message<'a> {
    fn from(h: HPub<'a>) -> Self {
        let headers = Some(h.headers.as_bytes());
        Message { topic: h.topic, reply_to: h.reply_to, headers, payload: h.payload }
    }
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
    /// The current `HMSG`, when the message has headers, for 1.1
    /// subscribers; stamped like `frame`.
    hframe: Vec<u8>,
    /// Bytes copied out since the last yield.
    burst: usize,
    /// The chunk shared bodies are being written to, and how far it is
    /// filled; it holds a reference of its own.
    shared: Option<(ChunkId, usize)>,
}

impl Fanout {
    /// Measured with `corecast-bench fanout` (1 → 1000, 64 B, one core,
    /// before output moved to chunks, with 64 MiB write buffers): 1 MiB
    /// leaves too few messages per write (1.0 M delivered/s), no limit
    /// thrashes memory (4.0 M/s, 740 MiB RSS), 32 MiB gives 6.1 M/s and
    /// 46 MiB RSS. At the shipped defaults with chunks, 1 → 1000 peaked at
    /// 43 MiB RSS.
    const BURST: usize = 32 << 20;

    /// Encodes `msg` once for the subscribers about to get it: as `MSG`,
    /// and as `HMSG` too when it has headers.
    fn encode(&mut self, msg: Message<'_>) {
        self.frame.clear();
        let Message { topic, reply_to, headers, payload } = msg;
        ServerFrame::Msg(Msg { sid: 0, topic, reply_to, payload }).encode(&mut self.frame);
        if let Some(block) = headers {
            self.hframe.clear();
            // The codec checked the block when it decoded the HPUB (or the
            // peer core's codec did); a broken one cannot get here.
            let headers = Headers::parse(block).unwrap_or(Headers::EMPTY);
            let hmsg = HMsg { sid: 0, topic, reply_to, headers, payload };
            ServerFrame11::HMsg(hmsg).encode(&mut self.hframe);
        }
    }

    /// The encoded `HMSG` with `sid` stamped in.
    fn hmsg_for_sid(&mut self, sid: u32) -> &[u8] {
        self.hframe[HMsg::SID_AT..HMsg::SID_AT + 4].copy_from_slice(&sid.to_le_bytes());
        &self.hframe
    }

    /// The encoded message with `sid` stamped in.
    fn for_sid(&mut self, sid: u32) -> &[u8] {
        self.frame[Msg::SID_AT..Msg::SID_AT + 4].copy_from_slice(&sid.to_le_bytes());
        &self.frame
    }

    /// The subscriber's own header for the current message.
    fn header_for(&self, sid: u32) -> [u8; HEADER] {
        let mut header = [0; HEADER];
        header.copy_from_slice(&self.frame[..HEADER]);
        header[Msg::SID_AT..].copy_from_slice(&sid.to_le_bytes());
        header
    }

    /// Writes the current message, stamped with `sid`, to a shared chunk
    /// when more than one subscriber will get it and it fits in a chunk;
    /// `None` means copy it.
    fn share(&mut self, mem: &mut Memory, subscribers: usize, sid: u32) -> Option<Shared> {
        let len = self.frame.len();
        if subscribers < 2 || len > CHUNK - REFCOUNT {
            return None;
        }
        let (id, fill) = match self.shared.take() {
            // No queue holds a frame from it any more: write from the start.
            Some((id, _)) if mem.refs(id) == 1 => (id, REFCOUNT),
            Some((id, fill)) if fill + len <= CHUNK => (id, fill),
            full => {
                if let Some((id, _)) = full {
                    mem.release(id);
                }
                (mem.take_shared()?, REFCOUNT)
            }
        };
        let frame = self.for_sid(sid);
        mem.chunk_mut(id)[fill..fill + len].copy_from_slice(frame);
        self.shared = Some((id, fill + len));
        Some(Shared { sid, frame: Blob { chunk: id, off: fill as u16, len: len as u16 } })
    }

    /// Gives the chunk for shared bodies back once no queue holds a body
    /// from it, so an idle core holds no memory. The sweeper calls it.
    pub(crate) fn release_idle(&mut self, mem: &mut Memory) {
        if let Some((id, _)) = self.shared {
            if mem.refs(id) == 1 {
                mem.release(id);
                self.shared = None;
            }
        }
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
fn prefetch_ahead(slots: &Slab<Slot>, mem: &Memory, subs: &[LocalSub], i: usize, shared: bool) {
    if let Some(far) = subs.get(i + 2 * PREFETCH_AHEAD) {
        if let Some(slot) = slots.get(far.key) {
            slot.prefetch();
        }
    }
    if let Some(near) = subs.get(i + PREFETCH_AHEAD).and_then(|s| slots.get(s.key)) {
        near.out().prefetch_tail(mem, shared);
    }
}

/// Delivers `msg` to `subs`, except to the subscriptions of connection
/// `skip` (a publisher that asked for no echo). Returns whether the caller
/// should let subscribers flush before delivering more: some subscriber's
/// queue just went past half of `max_pending`, or this burst reached its
/// limit.
///
/// Only header-less messages are shared between queues: a message with
/// headers goes out as two different frames (`HMSG`, `MSG`), and each
/// subscriber gets its own copy of the one it speaks.
pub(crate) fn deliver(
    slots: &mut Slab<Slot>,
    mem: &mut Memory,
    subs: &[LocalSub],
    (msg, skip): (Message<'_>, Option<usize>),
    policy: &mut Policy<'_>,
    scratch: &mut Fanout,
) -> bool {
    let (mut sent, mut copied, mut pressed) = (0, 0, false);
    let half = mem.max_pending() / 2;
    scratch.encode(msg);
    let has_headers = msg.headers.is_some();
    let first_sid = subs.first().map_or(0, |s| s.sid);
    let shared = if has_headers { None } else { scratch.share(mem, subs.len(), first_sid) };
    for (i, sub) in subs.iter().enumerate() {
        prefetch_ahead(slots, mem, subs, i, shared.is_some());
        let Some(slot) = slots.get(sub.key) else { continue };
        if !slot.is_open() || skip == Some(sub.key) {
            continue;
        }
        let before = slot.out().len();
        let item = match shared.and_then(|s| s.item_for(sub, || scratch.header_for(sub.sid))) {
            Some(item) => item,
            None if has_headers && sub.hmsg => Item::Bytes(scratch.hmsg_for_sid(sub.sid)),
            None => Item::Bytes(scratch.for_sid(sub.sid)),
        };
        let len = item.len();
        let drop_sid = sub.lossy.then_some(sub.sid);
        if policy.queue(slots, mem, sub.key, item, drop_sid) == Queued::Yes {
            sent += 1;
            copied += len;
            // Once per crossing: a subscriber stuck above half is not news.
            pressed |= before <= half && slots[sub.key].out().len() > half;
        }
    }
    CoreCounters::add(&policy.counters.msgs_out, sent);
    scratch.burst_over(copied) | pressed
}
