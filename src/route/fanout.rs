//! Copying a batch of messages to one topic into the output queues of this
//! core's subscribers.
//!
//! Each message is encoded once. One for several subscribers is also
//! written once to a shared chunk, and queues refer to it there (see
//! [`SHARE_FROM`] and [`crate::mem::splice`]). One for a lone subscriber
//! goes into its queue as a head written for it and the payload copied
//! from where the publish lies.
//!
//! A subscriber whose queue cannot take a message meets its policy
//! ([`crate::core::pressure`]): lossy subscriptions drop and count it (reported
//! later with `DROPPED`), others begin to leave as slow consumers and are
//! listed for the caller to finish with [`super::reap`].

use std::{ops::Range, time::Instant};

use corecast_proto::{HMsg, HPub, Headers, Msg, Pub, ServerFrame, ServerFrame11};
use slab::Slab;

use super::topics::LocalSub;
use crate::{
    core::{
        pressure::{Hold, Policy, Pressure, Queued},
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

/// A message of the batch, written once to a shared chunk with one
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
            return Some(Item::Frames { sid: sub.sid, frames: self.frame, count: 1 });
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
    /// Who asked, when the message has a reply-to: a tag of the publishing
    /// user ([`crate::auth::principal`]). A user answers under
    /// `allow_responses` only the requests of others, never its own.
    pub requester: u64,
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
        Message {
            topic: p.topic,
            reply_to: p.reply_to,
            headers: None,
            payload: p.payload,
            requester: 0,
        }
    }
}

impl<'a> From<HPub<'a>> for Message<'a> {
    fn from(h: HPub<'a>) -> Self {
        let headers = Some(h.headers.as_bytes());
        Message { topic: h.topic, reply_to: h.reply_to, headers, payload: h.payload, requester: 0 }
    }
}

/// Where one message of the batch lies in [`Fanout`]'s frames.
#[derive(Debug, Clone, Copy)]
struct Encoded {
    /// Its `MSG`: start and length in `frames`.
    msg: (usize, usize),
    /// Its `HMSG`, when it has headers, for 1.1 subscribers.
    hmsg: Option<(usize, usize)>,
    /// Its copy in a shared chunk, when it has one.
    shared: Option<Shared>,
    /// One past the last message of the batch whose shared copy follows
    /// this one's directly in the same chunk, message after message: a
    /// subscriber with the shared sid queues them as one item.
    run_end: usize,
}

/// A core's fan-out scratch: the messages being delivered, encoded once,
/// and how much was copied out since subscribers last had a turn to flush.
///
/// Past [`Fanout::BURST`] bytes the publisher yields and every subscriber
/// writes, giving its chunks back. Without it one large read of publishes
/// fans out into memory proportional to readers × read size (about 1 GiB
/// for a 1 MiB read and 1000 subscribers): page faults, cache misses and a
/// broker RSS in the hundreds of MiB.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    /// The batch's frames, back to back; each subscriber gets a copy with
    /// its own sid stamped in. At most a batch's bytes.
    frames: Vec<u8>,
    /// The batch, in order.
    batch: Vec<Encoded>,
    /// Bytes copied out since the last yield.
    burst: usize,
    /// The chunk shared frames are being written to, and how far it is
    /// filled; it holds a reference of its own.
    shared: Option<(ChunkId, usize)>,
    /// Chunks filled during this batch, whose reference is held until the
    /// batch is queued.
    retired: Vec<ChunkId>,
    /// Some message of this batch was written to a shared chunk, so the
    /// chunk in use may hold frames no queue has a reference to yet.
    batch_shared: bool,
    /// Numbers the checks that no connection is listed twice; see
    /// [`Slot::visit`].
    pass: u32,
}

impl Fanout {
    /// Measured with `corecast-bench fanout` (1 → 1000, 64 B, one core,
    /// before output moved to chunks, with 64 MiB write buffers): 1 MiB
    /// leaves too few messages per write (1.0 M delivered/s), no limit
    /// thrashes memory (4.0 M/s, 740 MiB RSS), 32 MiB gives 6.1 M/s and
    /// 46 MiB RSS. At the shipped defaults with chunks, 1 → 1000 peaked at
    /// 43 MiB RSS.
    const BURST: usize = 32 << 20;

    /// Encodes the batch once for the subscribers about to get it: each
    /// message as `MSG`, as `HMSG` too when it has headers, and written to
    /// a shared chunk when that pays.
    fn encode(&mut self, mem: &mut Memory, msgs: &[Message<'_>], subs: &[LocalSub]) {
        self.frames.clear();
        self.batch.clear();
        self.batch_shared = false;
        let first_sid = subs.first().map_or(0, |s| s.sid);
        for &Message { topic, reply_to, headers, payload, .. } in msgs {
            let start = self.frames.len();
            ServerFrame::Msg(Msg { sid: 0, topic, reply_to, payload }).encode(&mut self.frames);
            let msg = (start, self.frames.len() - start);
            let hmsg = headers.map(|block| {
                let start = self.frames.len();
                // The codec checked the block when it decoded the HPUB (or
                // the peer core's codec did); a broken one cannot get here.
                let headers = Headers::parse(block).unwrap_or(Headers::EMPTY);
                let hmsg = HMsg { sid: 0, topic, reply_to, headers, payload };
                ServerFrame11::HMsg(hmsg).encode(&mut self.frames);
                (start, self.frames.len() - start)
            });
            let shared = match hmsg {
                Some(_) => None,
                None => self.share(mem, msg, subs.len(), first_sid),
            };
            self.batch.push(Encoded { msg, hmsg, shared, run_end: self.batch.len() + 1 });
        }
        self.link_runs();
    }

    /// Sets each message's `run_end`, from the last message back.
    fn link_runs(&mut self) {
        for j in (1..self.batch.len()).rev() {
            let (before, after) = (self.batch[j - 1], self.batch[j]);
            let follows = match (before.shared, after.shared) {
                (Some(a), Some(b)) => {
                    a.frame.chunk == b.frame.chunk && a.frame.off + a.frame.len == b.frame.off
                }
                _ => false,
            };
            if follows {
                self.batch[j - 1].run_end = after.run_end;
            }
        }
    }

    /// Messages `j..` up to `end` as one item for `sub`, when it takes
    /// them as they lie in the shared chunk and there are at least two;
    /// returns the item and how many messages it holds.
    fn frames_from(&self, j: usize, end: usize, sub: &LocalSub) -> Option<(Item<'static>, usize)> {
        let first = self.batch[j].shared.filter(|s| s.sid == sub.sid)?;
        let last = self.batch[j].run_end.min(end) - 1;
        let tail = self.batch[last].shared?.frame;
        let count = u16::try_from(last + 1 - j).ok().filter(|&n| n >= 2)?;
        let len = tail.off + tail.len - first.frame.off;
        let frames = Blob { len, ..first.frame };
        Some((Item::Frames { sid: sub.sid, frames, count }, usize::from(count)))
    }

    /// The frame at `(start, len)` with `sid` stamped in.
    fn stamped(&mut self, (start, len): (usize, usize), sid: u32) -> &[u8] {
        // `MSG` and `HMSG` keep the sid at the same offset.
        const _: () = assert!(Msg::SID_AT == HMsg::SID_AT);
        let frame = &mut self.frames[start..start + len];
        frame[Msg::SID_AT..Msg::SID_AT + 4].copy_from_slice(&sid.to_le_bytes());
        frame
    }

    /// The subscriber's own header for message `j`.
    fn header_for(&self, j: usize, sid: u32) -> [u8; HEADER] {
        let start = self.batch[j].msg.0;
        let mut header = [0; HEADER];
        header.copy_from_slice(&self.frames[start..start + HEADER]);
        header[Msg::SID_AT..].copy_from_slice(&sid.to_le_bytes());
        header
    }

    /// How `sub` gets message `j`.
    fn item_for(&mut self, j: usize, sub: &LocalSub) -> Item<'_> {
        let e = self.batch[j];
        if let Some(item) = e.shared.and_then(|s| s.item_for(sub, || self.header_for(j, sub.sid))) {
            return item;
        }
        match e.hmsg {
            Some(hmsg) if sub.hmsg => Item::Bytes(self.stamped(hmsg, sub.sid)),
            _ => Item::Bytes(self.stamped(e.msg, sub.sid)),
        }
    }

    /// Whether every subscription in `subs` belongs to a different
    /// connection, checked by marking each connection's slot with a fresh
    /// pass number. Only then may each subscriber take the whole batch in
    /// turn and still see the messages in the order they were published.
    fn one_per_connection(&mut self, slots: &mut Slab<Slot>, subs: &[LocalSub]) -> bool {
        self.pass = self.pass.wrapping_add(1);
        let pass = self.pass;
        subs.iter().enumerate().all(|(i, sub)| {
            if let Some(slot) = subs.get(i + 2 * PREFETCH_AHEAD).and_then(|s| slots.get(s.key)) {
                slot.prefetch();
            }
            slots.get_mut(sub.key).is_none_or(|slot| slot.visit(pass))
        })
    }

    /// Writes a message, stamped with `sid`, to a shared chunk when more
    /// than one subscriber will get it and it fits in a chunk; `None` means
    /// copy it.
    fn share(
        &mut self,
        mem: &mut Memory,
        msg: (usize, usize),
        subscribers: usize,
        sid: u32,
    ) -> Option<Shared> {
        let len = msg.1;
        if subscribers < 2 || len > CHUNK - REFCOUNT {
            return None;
        }
        let (id, fill) = match self.shared.take() {
            // No queue holds a frame from it, nor does this batch: write
            // from the start.
            Some((id, _)) if !self.batch_shared && mem.refs(id) == 1 => (id, REFCOUNT),
            Some((id, fill)) if fill + len <= mem.chunk(id).len() => (id, fill),
            full => {
                // Frames of this batch may be in it, not yet queued: its
                // reference goes once they are ([`Fanout::release_retired`]).
                self.retired.extend(full.map(|(id, _)| id));
                (mem.take_shared()?, REFCOUNT)
            }
        };
        let frame = self.stamped(msg, sid);
        mem.chunk_mut(id)[fill..fill + len].copy_from_slice(frame);
        self.shared = Some((id, fill + len));
        self.batch_shared = true;
        Some(Shared { sid, frame: Blob { chunk: id, off: fill as u16, len: len as u16 } })
    }

    /// Drops the references to the chunks filled during the last batch,
    /// now that its frames are queued.
    fn release_retired(&mut self, mem: &mut Memory) {
        self.retired.drain(..).for_each(|id| mem.release(id));
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

/// Delivers `msgs` (one topic's, in order) to `subs`, except to the
/// subscriptions of connection `skip` (a publisher that asked for no
/// echo). Returns what the publisher should do before delivering more:
/// let subscribers flush (some subscriber's queue just went past half of
/// `max_pending`, or this burst reached its limit), or wait for one that
/// keeps reading and is near `max_pending` ([`Hold`]).
///
/// When no connection holds two of the subscriptions, each subscriber takes
/// the whole batch in turn, so its slot and queue are fetched once for the
/// batch rather than once per message; otherwise message by message.
///
/// Only header-less messages are shared between queues: a message with
/// headers goes out as two different frames (`HMSG`, `MSG`), and each
/// subscriber gets its own copy of the one it speaks. A topic's lone
/// subscriber gets header-less messages without the batch being encoded
/// at all ([`Delivery::offer_alone`]).
pub(crate) fn deliver(
    slots: &mut Slab<Slot>,
    mem: &mut Memory,
    subs: &[LocalSub],
    (msgs, skip): (&[Message<'_>], Option<usize>),
    policy: &mut Policy<'_>,
    scratch: &mut Fanout,
) -> Pressure {
    let tally = match subs {
        // Every target is on other cores: nothing to encode here.
        [] => return Pressure::default(),
        [sub] if msgs.iter().all(|m| m.headers.is_none()) => {
            let mut d = Delivery::new(slots, mem, policy, scratch, (msgs, skip));
            d.offer_alone(sub, msgs);
            d.tally
        }
        _ => {
            scratch.encode(mem, msgs, subs);
            let whole = msgs.len() > 1 && scratch.one_per_connection(slots, subs);
            let mut d = Delivery::new(slots, mem, policy, scratch, (msgs, skip));
            if whole {
                d.offer_each(subs, 0..msgs.len());
            } else {
                (0..msgs.len()).for_each(|j| d.offer_each(subs, j..j + 1));
            }
            d.tally
        }
    };
    let Tally { sent, copied, pressed, hold } = tally;
    scratch.release_retired(mem);
    CoreCounters::add(&policy.counters.msgs_out, sent);
    let n = msgs.len() as u64;
    policy.counters.histograms.fanout.observe(sent / n.max(1), n);
    Pressure { flush: scratch.burst_over(copied) | pressed, hold }
}

/// What a delivery queued.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    copied: usize,
    /// Some subscriber's queue went past half of `max_pending`.
    pressed: bool,
    /// A subscriber that holds the publisher back.
    hold: Option<usize>,
}

/// One delivery in progress.
struct Delivery<'a, 'p, 'm> {
    slots: &'a mut Slab<Slot>,
    mem: &'a mut Memory,
    policy: &'a mut Policy<'p>,
    scratch: &'a mut Fanout,
    /// The messages, for the subscribers whose deliveries are checked
    /// ([`Slot::admit`]).
    msgs: &'a [Message<'m>],
    skip: Option<usize>,
    tally: Tally,
    /// The time, read once per delivery and only if a subscriber's queue
    /// is past half of `max_pending`.
    now: Option<Instant>,
}

impl<'a, 'p, 'm> Delivery<'a, 'p, 'm> {
    fn new(
        slots: &'a mut Slab<Slot>,
        mem: &'a mut Memory,
        policy: &'a mut Policy<'p>,
        scratch: &'a mut Fanout,
        (msgs, skip): (&'a [Message<'m>], Option<usize>),
    ) -> Self {
        Self { slots, mem, policy, scratch, msgs, skip, tally: Tally::default(), now: None }
    }

    /// Offers the batch's messages `which` to every subscriber in turn.
    fn offer_each(&mut self, subs: &[LocalSub], which: Range<usize>) {
        let shared = self.scratch.batch[which.start].shared.is_some();
        for (i, sub) in subs.iter().enumerate() {
            prefetch_ahead(self.slots, self.mem, subs, i, shared);
            self.offer(sub, which.clone());
        }
    }

    /// Queues `n` messages in one item for `key` if they fit, with no
    /// policy applied when they do not.
    fn queue_together(&mut self, key: usize, item: Item<'_>, n: usize) -> bool {
        if self.slots[key].queue(self.mem, item).is_err() {
            return false;
        }
        self.tally.sent += n as u64;
        self.tally.copied += item.len();
        true
    }

    /// Queues messages `which` for `sub`, each meeting the subscriber's
    /// policy if it does not fit; stops at a cut. Messages that lie back to
    /// back in the shared chunk with `sub`'s sid go in as one item while
    /// they fit; past that, message by message.
    fn offer(&mut self, sub: &LocalSub, which: Range<usize>) {
        let Some(before) = self.queued_before(sub, which.clone()) else { return };
        let sent_before = self.tally.sent;
        let drop_sid = sub.lossy.then_some(sub.sid);
        let (mut j, mut together) = (which.start, true);
        while j < which.end {
            if let Some((item, n)) = self.scratch.frames_from(j, which.end, sub) {
                if together && self.queue_together(sub.key, item, n) {
                    j += n;
                    continue;
                }
                together = false;
            }
            let item = self.scratch.item_for(j, sub);
            let len = item.len();
            let queued = self.policy.queue(self.slots, self.mem, sub.key, item, drop_sid);
            if !self.count(queued, len) {
                return;
            }
            j += 1;
        }
        self.after_offer(sub, before, drop_sid, sent_before);
    }

    /// Queues `msgs` for the topic's one subscriber, each frame's head
    /// written for it and its payload copied straight from where the
    /// publish lies: one copy of the payload instead of two (into the
    /// batch's frames, then into the queue). Each message meets the
    /// subscriber's policy if it does not fit; stops at a cut.
    fn offer_alone(&mut self, sub: &LocalSub, msgs: &[Message<'_>]) {
        let Some(before) = self.queued_before(sub, 0..msgs.len()) else { return };
        let sent_before = self.tally.sent;
        let drop_sid = sub.lossy.then_some(sub.sid);
        let mut head = [0; Msg::MAX_HEAD];
        for m in msgs {
            let msg =
                Msg { sid: sub.sid, topic: m.topic, reply_to: m.reply_to, payload: m.payload };
            let mut rest = &mut head[..];
            msg.encode_head(&mut rest);
            let written = Msg::MAX_HEAD - rest.len();
            let item = Item::Parts { head: &head[..written], payload: m.payload };
            let queued = self.policy.queue(self.slots, self.mem, sub.key, item, drop_sid);
            if !self.count(queued, item.len()) {
                return;
            }
        }
        self.after_offer(sub, before, drop_sid, sent_before);
    }

    /// What `sub`'s connection has queued before it is offered messages
    /// `which`; `None` when it takes none (gone, leaving, the publisher
    /// asked for no echo, or its user may not receive the topic).
    fn queued_before(&mut self, sub: &LocalSub, which: Range<usize>) -> Option<usize> {
        let slot = self.slots.get_mut(sub.key)?;
        if !slot.is_open() || self.skip == Some(sub.key) {
            return None;
        }
        if slot.watches() {
            let msgs = &self.msgs[which];
            let requests = msgs.iter().map(|m| (m.reply_to, m.requester));
            if !slot.admit(sub.sid, msgs[0].topic, requests, &mut self.now) {
                CoreCounters::add(&self.policy.counters.deliveries_denied, msgs.len() as u64);
                return None;
            }
        }
        Some(slot.out().len())
    }

    /// Tallies how one message of `len` bytes fared; false at a cut.
    fn count(&mut self, queued: Queued, len: usize) -> bool {
        match queued {
            Queued::Yes => {
                self.tally.sent += 1;
                self.tally.copied += len;
                true
            }
            Queued::Dropped => true,
            Queued::Cut => false,
        }
    }

    /// After `sub` took its messages (the tally had `sent_before` before
    /// them): its own count, whether its queue just passed half of
    /// `max_pending` (the publisher lets subscribers flush), and whether it
    /// holds the publisher back.
    fn after_offer(
        &mut self,
        sub: &LocalSub,
        before: usize,
        drop_sid: Option<u32>,
        sent_before: u64,
    ) {
        let half = self.mem.max_pending() / 2;
        let slot = &mut self.slots[sub.key];
        slot.count_delivered(self.tally.sent - sent_before);
        let after = slot.out().len();
        // Once per crossing: a subscriber stuck above half is not news.
        self.tally.pressed |= before <= half && after > half;
        if after > half && drop_sid.is_none() && self.tally.hold.is_none() {
            let now = *self.now.get_or_insert_with(Instant::now);
            if Hold::holds_for(slot, self.mem.max_pending(), now) {
                self.tally.hold = Some(sub.key);
            }
        }
    }
}
