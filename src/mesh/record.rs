//! The records cores send each other, their encoding in a batch, and what
//! a core does with each one that arrives.

use bytes::{Buf, BufMut, BytesMut};

use super::barrier;

use crate::{
    core::shard::{Shard, State},
    counters::CoreCounters,
    route::{self, Batch, Message, Routed, Source},
};

const PUBLISH: u8 = 1;
const INTEREST_ADD: u8 = 2;
const INTEREST_REMOVE: u8 = 3;
const BARRIER: u8 = 4;
const BARRIER_ACK: u8 = 5;
const HPUBLISH: u8 = 6;
const QUEUE_PUBLISH: u8 = 7;
const QUEUE_INTEREST: u8 = 8;

/// The flags of a `QueuePublish`: a header block follows; it was re-drawn
/// ([`Handoff::redrawn`]); the publisher that asked for no echo follows.
const HAS_HEADERS: u8 = 1;
const REDRAWN: u8 = 2;
const NO_ECHO: u8 = 4;

/// The queue groups a publish record asks its core to serve, as they
/// travel: each name as a short string (a length byte, then the bytes).
/// The core that sent the record (the publishing core, or one that drew
/// again, [`Handoff::redrawn`]) drew a member of each group on the
/// receiving core; the receiving core picks which one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupNames<'a>(&'a [u8]);

impl<'a> GroupNames<'a> {
    /// Appends `name` (at most 255 bytes, as every queue group name) to
    /// the names being built in `buf`.
    pub(crate) fn push(buf: &mut Vec<u8>, name: &str) {
        buf.push(name.len() as u8);
        buf.extend_from_slice(name.as_bytes());
    }

    /// The names built with [`Self::push`].
    pub(crate) fn from_encoded(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// Whether no group is named.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, in order. Stops at the first one that does not parse
    /// (which a core's own encoding never produces).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'a str> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let name = tail.get(..usize::from(len))?;
            rest = &tail[usize::from(len)..];
            std::str::from_utf8(name).ok()
        })
    }
}

/// What a queue publish record asks of the receiving core: the groups it
/// serves, and what it may do with a group it has no member of left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Handoff<'a> {
    /// The groups to serve with a member of the receiving core.
    pub groups: GroupNames<'a>,
    /// Drawn a second time, by a core whose members of these groups had
    /// all left while the message was on its way there. The receiving
    /// core serves the groups only (its subscribers without a group had
    /// their copy from the publishing core), and drops and counts a group
    /// it has no member of instead of handing the message on again: one
    /// more hop at most.
    pub redrawn: bool,
    /// The publishing connection, when it asked for no echo. It travels
    /// with the message because a second draw may bring the message back
    /// to the publishing core, where that connection's members must be
    /// passed over as in the first draw.
    pub no_echo: Option<Publisher>,
}

/// A connection that published a message: its core (below 256, as every
/// core index) and its slab key there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Publisher {
    pub core: usize,
    pub key: usize,
}

impl Handoff<'_> {
    /// The slab key of the connection whose members a core `core` must
    /// pass over: the publisher's, on its own core.
    pub(crate) fn skip_on(&self, core: usize) -> Option<usize> {
        self.no_echo.filter(|p| p.core == core).map(|p| p.key)
    }
}

/// One unit of work for another core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// Deliver to the receiving core's local subscribers of `topic`.
    Publish { topic: &'a str, reply_to: &'a str, requester: u64, payload: &'a [u8] },
    /// The same with a header block (from `HPUB`), checked by the sending
    /// core's codec. A record of its own, so header-less publishes keep
    /// their bytes and their cost.
    HPublish {
        topic: &'a str,
        reply_to: &'a str,
        requester: u64,
        headers: &'a [u8],
        payload: &'a [u8],
    },
    /// Deliver to one of the receiving core's members of each group in
    /// the handoff and, unless it was re-drawn, to its subscribers of
    /// `topic` without a queue group. A record of its own, so that
    /// publishes no group reaches keep their bytes and their cost.
    QueuePublish {
        topic: &'a str,
        reply_to: &'a str,
        requester: u64,
        headers: Option<&'a [u8]>,
        handoff: Handoff<'a>,
        payload: &'a [u8],
    },
    /// The sending core now has subscribers without a queue group for
    /// `topic`, a pattern.
    InterestAdd { topic: &'a str },
    /// The sending core no longer has subscribers without a queue group
    /// for `topic`.
    InterestRemove { topic: &'a str },
    /// The sending core now has `members` members of queue group `group`
    /// subscribed to `topic` (0: none). A count, not a flag, because the
    /// publishing core draws a core in proportion to its members.
    QueueInterest { topic: &'a str, group: &'a str, members: u32 },
    /// Answer with `BarrierAck` once everything before this took effect.
    Barrier { seq: u64 },
    /// Everything the receiver staged up to `seq` took effect on the sender.
    BarrierAck { seq: u64 },
}

impl<'a> Record<'a> {
    /// The record that carries `msg` to another core.
    pub(crate) fn publish(msg: Message<'a>) -> Self {
        let Message { topic, reply_to, headers, payload, requester } = msg;
        match headers {
            None => Self::Publish { topic, reply_to, requester, payload },
            Some(headers) => Self::HPublish { topic, reply_to, requester, headers, payload },
        }
    }

    /// The record that carries `msg` to another core with the queue groups
    /// that core serves; a plain publish when there are none.
    pub(crate) fn queue_publish(msg: Message<'a>, handoff: Handoff<'a>) -> Self {
        if handoff.groups.is_empty() {
            return Self::publish(msg);
        }
        let Message { topic, reply_to, headers, payload, requester } = msg;
        Self::QueuePublish { topic, reply_to, requester, headers, handoff, payload }
    }

    /// What a publish record asks the receiving core to do for queue
    /// groups: nothing (no groups) unless it is a `QueuePublish`.
    fn handoff(&self) -> Handoff<'a> {
        match *self {
            Self::QueuePublish { handoff, .. } => handoff,
            _ => Handoff::default(),
        }
    }

    /// The message a publish record carries.
    fn message(&self) -> Option<Message<'a>> {
        Some(match *self {
            Self::Publish { topic, reply_to, requester, payload } => {
                Message { topic, reply_to, headers: None, payload, requester }
            }
            Self::HPublish { topic, reply_to, requester, headers, payload } => {
                Message { topic, reply_to, headers: Some(headers), payload, requester }
            }
            Self::QueuePublish { topic, reply_to, requester, headers, payload, .. } => {
                Message { topic, reply_to, headers, payload, requester }
            }
            _ => return None,
        })
    }

    /// Whether it changes what the receiving core does (a publish, an
    /// interest change): what a later barrier must cover.
    pub(crate) fn is_effect(&self) -> bool {
        !matches!(self, Self::Barrier { .. } | Self::BarrierAck { .. })
    }

    pub(super) fn encoded_len(&self) -> usize {
        match self {
            Self::Publish { topic, reply_to, payload, .. } => {
                1 + 1 + topic.len() + reply_len(reply_to) + 4 + payload.len()
            }
            Self::HPublish { topic, reply_to, headers, payload, .. } => {
                1 + 1 + topic.len() + reply_len(reply_to) + 2 + headers.len() + 4 + payload.len()
            }
            Self::QueuePublish { topic, reply_to, headers, handoff, payload, .. } => {
                let headers = headers.map_or(0, |h| 2 + h.len());
                let no_echo = if handoff.no_echo.is_some() { 1 + 8 } else { 0 };
                1 + 1
                    + topic.len()
                    + reply_len(reply_to)
                    + 1
                    + headers
                    + no_echo
                    + 4
                    + handoff.groups.0.len()
                    + 4
                    + payload.len()
            }
            Self::InterestAdd { topic } | Self::InterestRemove { topic } => 2 + topic.len(),
            Self::QueueInterest { topic, group, .. } => 2 + topic.len() + 1 + group.len() + 4,
            Self::Barrier { .. } | Self::BarrierAck { .. } => 9,
        }
    }

    pub(super) fn encode(&self, dst: &mut BytesMut) {
        let short = |dst: &mut BytesMut, s: &str| {
            dst.put_u8(s.len() as u8);
            dst.put_slice(s.as_bytes());
        };
        match self {
            Self::Publish { topic, reply_to, requester, payload } => {
                dst.put_u8(PUBLISH);
                short(dst, topic);
                put_reply(dst, reply_to, *requester);
                dst.put_u32_le(payload.len() as u32);
                dst.put_slice(payload);
            }
            Self::HPublish { topic, reply_to, requester, headers, payload } => {
                dst.put_u8(HPUBLISH);
                short(dst, topic);
                put_reply(dst, reply_to, *requester);
                dst.put_u16_le(headers.len() as u16);
                dst.put_slice(headers);
                dst.put_u32_le(payload.len() as u32);
                dst.put_slice(payload);
            }
            Self::QueuePublish { topic, reply_to, requester, headers, handoff, payload } => {
                dst.put_u8(QUEUE_PUBLISH);
                short(dst, topic);
                put_reply(dst, reply_to, *requester);
                dst.put_u8(queue_flags(headers.is_some(), handoff));
                if let Some(headers) = headers {
                    dst.put_u16_le(headers.len() as u16);
                    dst.put_slice(headers);
                }
                if let Some(Publisher { core, key }) = handoff.no_echo {
                    dst.put_u8(core as u8);
                    dst.put_u64_le(key as u64);
                }
                dst.put_u32_le(handoff.groups.0.len() as u32);
                dst.put_slice(handoff.groups.0);
                dst.put_u32_le(payload.len() as u32);
                dst.put_slice(payload);
            }
            Self::QueueInterest { topic, group, members } => {
                dst.put_u8(QUEUE_INTEREST);
                short(dst, topic);
                short(dst, group);
                dst.put_u32_le(*members);
            }
            Self::InterestAdd { topic } => {
                dst.put_u8(INTEREST_ADD);
                short(dst, topic);
            }
            Self::InterestRemove { topic } => {
                dst.put_u8(INTEREST_REMOVE);
                short(dst, topic);
            }
            Self::Barrier { seq } => {
                dst.put_u8(BARRIER);
                dst.put_u64_le(*seq);
            }
            Self::BarrierAck { seq } => {
                dst.put_u8(BARRIER_ACK);
                dst.put_u64_le(*seq);
            }
        }
    }

    /// Reads the next record; `None` at the end of the batch (or, should a
    /// batch ever be inconsistent, at the first byte that does not parse).
    pub(crate) fn decode(src: &mut &'a [u8]) -> Option<Self> {
        let kind = *take(src, 1)?.first()?;
        Some(match kind {
            PUBLISH => {
                let topic = short(src)?;
                let (reply_to, requester) = reply(src)?;
                let len = take(src, 4)?.get_u32_le() as usize;
                Self::Publish { topic, reply_to, requester, payload: take(src, len)? }
            }
            HPUBLISH => {
                let topic = short(src)?;
                let (reply_to, requester) = reply(src)?;
                let hlen = take(src, 2)?.get_u16_le() as usize;
                let headers = take(src, hlen)?;
                let len = take(src, 4)?.get_u32_le() as usize;
                Self::HPublish { topic, reply_to, requester, headers, payload: take(src, len)? }
            }
            QUEUE_PUBLISH => Self::decode_queue_publish(src)?,
            QUEUE_INTEREST => Self::QueueInterest {
                topic: short(src)?,
                group: short(src)?,
                members: u32_le(src)?,
            },
            INTEREST_ADD => Self::InterestAdd { topic: short(src)? },
            INTEREST_REMOVE => Self::InterestRemove { topic: short(src)? },
            BARRIER => Self::Barrier { seq: u64_le(src)? },
            BARRIER_ACK => Self::BarrierAck { seq: u64_le(src)? },
            _ => return None,
        })
    }

    /// The rest of a `QueuePublish` after its kind byte.
    fn decode_queue_publish(src: &mut &'a [u8]) -> Option<Self> {
        let topic = short(src)?;
        let (reply_to, requester) = reply(src)?;
        let flags = *take(src, 1)?.first()?;
        let headers = match flags & HAS_HEADERS {
            0 => None,
            _ => {
                let hlen = take(src, 2)?.get_u16_le() as usize;
                Some(take(src, hlen)?)
            }
        };
        let no_echo = match flags & NO_ECHO {
            0 => None,
            _ => {
                let core = usize::from(*take(src, 1)?.first()?);
                Some(Publisher { core, key: usize::try_from(u64_le(src)?).ok()? })
            }
        };
        let glen = u32_le(src)? as usize;
        let groups = GroupNames(take(src, glen)?);
        let handoff = Handoff { groups, redrawn: flags & REDRAWN != 0, no_echo };
        let len = u32_le(src)? as usize;
        let payload = take(src, len)?;
        Some(Self::QueuePublish { topic, reply_to, requester, headers, handoff, payload })
    }
}

/// Bytes of a reply-to and, when there is one, its requester.
fn reply_len(reply_to: &str) -> usize {
    1 + reply_to.len() + if reply_to.is_empty() { 0 } else { 8 }
}

/// A reply-to, then its requester when there is one: only requests pay
/// for it.
fn put_reply(dst: &mut BytesMut, reply_to: &str, requester: u64) {
    dst.put_u8(reply_to.len() as u8);
    dst.put_slice(reply_to.as_bytes());
    if !reply_to.is_empty() {
        dst.put_u64_le(requester);
    }
}

/// Reads what [`put_reply`] wrote.
fn reply<'a>(src: &mut &'a [u8]) -> Option<(&'a str, u64)> {
    let reply_to = short(src)?;
    let requester = if reply_to.is_empty() { 0 } else { u64_le(src)? };
    Some((reply_to, requester))
}

/// The flags byte of a `QueuePublish`: which optional parts follow, and
/// whether it was re-drawn.
fn queue_flags(has_headers: bool, handoff: &Handoff<'_>) -> u8 {
    let mut flags = 0;
    if has_headers {
        flags |= HAS_HEADERS;
    }
    if handoff.redrawn {
        flags |= REDRAWN;
    }
    if handoff.no_echo.is_some() {
        flags |= NO_ECHO;
    }
    flags
}

/// The first `n` bytes of `src`, which moves past them.
fn take<'b>(src: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
    let (head, tail) = (src.get(..n)?, src.get(n..)?);
    *src = tail;
    Some(head)
}

/// A string of at most 255 bytes after its length byte.
fn short<'b>(src: &mut &'b [u8]) -> Option<&'b str> {
    let len = *take(src, 1)?.first()? as usize;
    std::str::from_utf8(take(src, len)?).ok()
}

fn u64_le(src: &mut &[u8]) -> Option<u64> {
    Some(take(src, 8)?.get_u64_le())
}

fn u32_le(src: &mut &[u8]) -> Option<u32> {
    Some(take(src, 4)?.get_u32_le())
}

/// Adds to `batch` the publish records without queue groups at the front
/// of `src` that it admits; returns what follows them.
fn gather<'a>(batch: &mut Batch<'a>, mut src: &'a [u8]) -> &'a [u8] {
    loop {
        let mut next = src;
        let plain = Record::decode(&mut next).filter(|r| r.handoff().groups.is_empty());
        let msg = plain.and_then(|r| r.message());
        match msg {
            Some(msg) if batch.admits(&msg) => batch.push(msg),
            _ => return src,
        }
        src = next;
    }
}

/// Applies records from the front of `batch`; returns how many bytes it
/// used, and the subscriber that holds the receiver back, if one does. It
/// stops early after a delivery that filled a subscriber past half, and
/// before one the budget is short for (once per record: `deferred`).
pub(super) fn apply_batch(
    shard: &Shard,
    st: &mut State,
    from: usize,
    batch: &[u8],
    deferred: &mut bool,
) -> (usize, Option<usize>) {
    let _mark = crate::probe::mark();
    let mut src = batch;
    let mut published = 0;
    let mut hold = None;
    loop {
        let before = src;
        let Some(record) = Record::decode(&mut src) else { break };
        match record {
            Record::Publish { .. } | Record::HPublish { .. } | Record::QueuePublish { .. } => {
                let msg = record.message().expect("a publish carries a message");
                let handoff = record.handoff();
                let mut batch = Batch::new(msg, st.mem.max_pending());
                // A publish for queue groups goes alone: its groups are its own.
                let after = if handoff.groups.is_empty() { gather(&mut batch, src) } else { src };
                let msgs = batch.messages();
                match route::publish(shard, st, msgs, Source::Peer { handoff }, deferred) {
                    Routed::Delivered { pressure, .. } => {
                        published += msgs.len() as u64;
                        src = after;
                        if pressure.flush || pressure.hold.is_some() {
                            hold = pressure.hold;
                            break;
                        }
                    }
                    // Kept for the next call (a peer's publish never stalls).
                    Routed::Deferred | Routed::Stalled => {
                        src = before;
                        break;
                    }
                }
            }
            Record::InterestAdd { topic } => route::subs::peer_interest(st, from, topic, true),
            Record::InterestRemove { topic } => route::subs::peer_interest(st, from, topic, false),
            Record::QueueInterest { topic, group, members } => {
                route::subs::peer_members(st, from, topic, group, members)
            }
            Record::Barrier { seq } => barrier::on_barrier(st, from, seq),
            Record::BarrierAck { seq } => barrier::on_ack(st, seq),
        }
    }
    CoreCounters::add(&shard.counters.cross_core_received, published);
    let used = match batch.len() - src.len() {
        0 if !batch.is_empty() && !*deferred => {
            tracing::error!(core = shard.core, from, left = batch.len(), "inconsistent batch");
            batch.len()
        }
        used => used,
    };
    (used, hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_order() {
        let records = [
            Record::Publish { topic: "a.b", reply_to: "", requester: 0, payload: b"hi" },
            Record::InterestAdd { topic: "x" },
            Record::Barrier { seq: 7 },
            Record::InterestRemove { topic: "x" },
            Record::BarrierAck { seq: 7 },
            Record::Publish { topic: "é", reply_to: "r", requester: 42, payload: &[] },
            Record::QueueInterest { topic: "q.>", group: "workers", members: 3 },
            Record::QueuePublish {
                topic: "q.a",
                reply_to: "",
                requester: 0,
                headers: None,
                handoff: Handoff { groups: GroupNames(b"\x07workers\x01w"), ..Handoff::default() },
                payload: b"p",
            },
            Record::QueuePublish {
                topic: "q.b",
                reply_to: "r",
                requester: 7,
                headers: Some(&[0]),
                handoff: Handoff { groups: GroupNames(b"\x01w"), ..Handoff::default() },
                payload: &[],
            },
            Record::QueuePublish {
                topic: "q.c",
                reply_to: "",
                requester: 0,
                headers: None,
                handoff: Handoff {
                    groups: GroupNames(b"\x01w"),
                    redrawn: true,
                    no_echo: Some(Publisher { core: 255, key: 1 << 40 }),
                },
                payload: b"again",
            },
            Record::QueuePublish {
                topic: "q.d",
                reply_to: "",
                requester: 0,
                headers: Some(&[1, 1, b'k', 0, 0]),
                handoff: Handoff {
                    groups: GroupNames(b"\x01w"),
                    redrawn: false,
                    no_echo: Some(Publisher { core: 3, key: 7 }),
                },
                payload: b"",
            },
            Record::HPublish {
                topic: "h",
                reply_to: "",
                requester: 0,
                headers: &[1, 1, b'k', 0, 0],
                payload: b"x",
            },
        ];
        let mut buf = BytesMut::new();
        for r in &records {
            let before = buf.len();
            r.encode(&mut buf);
            assert_eq!(buf.len() - before, r.encoded_len());
        }
        let mut src = &buf[..];
        let decoded: Vec<_> = std::iter::from_fn(|| Record::decode(&mut src)).collect();
        assert_eq!(decoded, records);
    }

    #[test]
    fn group_names_round_trip() {
        let mut buf = Vec::new();
        for name in ["workers", "é", &"x".repeat(255)] {
            GroupNames::push(&mut buf, name);
        }
        let names = GroupNames::from_encoded(&buf);
        assert_eq!(names.iter().collect::<Vec<_>>(), ["workers", "é", &"x".repeat(255)]);
        assert!(!names.is_empty());
        assert_eq!(GroupNames::default().iter().count(), 0);
    }

    #[test]
    fn a_publish_without_groups_keeps_its_plain_record() {
        let msg = Message { topic: "t", reply_to: "", headers: None, payload: b"x", requester: 0 };
        let no_echo = Some(Publisher { core: 1, key: 2 });
        let record = Record::queue_publish(msg, Handoff { no_echo, ..Handoff::default() });
        assert_eq!(
            record,
            Record::Publish { topic: "t", reply_to: "", requester: 0, payload: b"x" }
        );
    }

    #[test]
    fn the_publisher_is_skipped_only_on_its_own_core() {
        let handoff =
            Handoff { no_echo: Some(Publisher { core: 2, key: 9 }), ..Handoff::default() };
        assert_eq!(handoff.skip_on(2), Some(9));
        assert_eq!(handoff.skip_on(1), None);
        assert_eq!(Handoff::default().skip_on(2), None);
    }
}
