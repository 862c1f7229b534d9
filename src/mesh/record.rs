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

/// One unit of work for another core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// Deliver to the receiving core's local subscribers of `topic`.
    Publish { topic: &'a str, reply_to: &'a str, payload: &'a [u8] },
    /// The same with a header block (from `HPUB`), checked by the sending
    /// core's codec. A record of its own, so header-less publishes keep
    /// their bytes and their cost.
    HPublish { topic: &'a str, reply_to: &'a str, headers: &'a [u8], payload: &'a [u8] },
    /// The sending core now has subscribers for `topic`.
    InterestAdd { topic: &'a str },
    /// The sending core no longer has subscribers for `topic`.
    InterestRemove { topic: &'a str },
    /// Answer with `BarrierAck` once everything before this took effect.
    Barrier { seq: u64 },
    /// Everything the receiver staged up to `seq` took effect on the sender.
    BarrierAck { seq: u64 },
}

impl<'a> Record<'a> {
    /// The record that carries `msg` to another core.
    pub(crate) fn publish(msg: Message<'a>) -> Self {
        let Message { topic, reply_to, headers, payload } = msg;
        match headers {
            None => Self::Publish { topic, reply_to, payload },
            Some(headers) => Self::HPublish { topic, reply_to, headers, payload },
        }
    }

    /// The message a publish record carries.
    fn message(&self) -> Option<Message<'a>> {
        Some(match *self {
            Self::Publish { topic, reply_to, payload } => {
                Message { topic, reply_to, headers: None, payload }
            }
            Self::HPublish { topic, reply_to, headers, payload } => {
                Message { topic, reply_to, headers: Some(headers), payload }
            }
            _ => return None,
        })
    }

    /// Whether it is a publish, of either kind.
    pub(crate) fn is_publish(&self) -> bool {
        matches!(self, Self::Publish { .. } | Self::HPublish { .. })
    }

    pub(super) fn encoded_len(&self) -> usize {
        match self {
            Self::Publish { topic, reply_to, payload } => {
                1 + 1 + topic.len() + 1 + reply_to.len() + 4 + payload.len()
            }
            Self::HPublish { topic, reply_to, headers, payload } => {
                1 + 1 + topic.len() + 1 + reply_to.len() + 2 + headers.len() + 4 + payload.len()
            }
            Self::InterestAdd { topic } | Self::InterestRemove { topic } => 2 + topic.len(),
            Self::Barrier { .. } | Self::BarrierAck { .. } => 9,
        }
    }

    pub(super) fn encode(&self, dst: &mut BytesMut) {
        let short = |dst: &mut BytesMut, s: &str| {
            dst.put_u8(s.len() as u8);
            dst.put_slice(s.as_bytes());
        };
        match self {
            Self::Publish { topic, reply_to, payload } => {
                dst.put_u8(PUBLISH);
                short(dst, topic);
                short(dst, reply_to);
                dst.put_u32_le(payload.len() as u32);
                dst.put_slice(payload);
            }
            Self::HPublish { topic, reply_to, headers, payload } => {
                dst.put_u8(HPUBLISH);
                short(dst, topic);
                short(dst, reply_to);
                dst.put_u16_le(headers.len() as u16);
                dst.put_slice(headers);
                dst.put_u32_le(payload.len() as u32);
                dst.put_slice(payload);
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
        fn take<'b>(src: &mut &'b [u8], n: usize) -> Option<&'b [u8]> {
            let (head, tail) = (src.get(..n)?, src.get(n..)?);
            *src = tail;
            Some(head)
        }
        fn short<'b>(src: &mut &'b [u8]) -> Option<&'b str> {
            let len = *take(src, 1)?.first()? as usize;
            std::str::from_utf8(take(src, len)?).ok()
        }
        fn u64_le(src: &mut &[u8]) -> Option<u64> {
            Some(take(src, 8)?.get_u64_le())
        }
        let kind = *take(src, 1)?.first()?;
        Some(match kind {
            PUBLISH => {
                let topic = short(src)?;
                let reply_to = short(src)?;
                let len = take(src, 4)?.get_u32_le() as usize;
                Self::Publish { topic, reply_to, payload: take(src, len)? }
            }
            HPUBLISH => {
                let topic = short(src)?;
                let reply_to = short(src)?;
                let hlen = take(src, 2)?.get_u16_le() as usize;
                let headers = take(src, hlen)?;
                let len = take(src, 4)?.get_u32_le() as usize;
                Self::HPublish { topic, reply_to, headers, payload: take(src, len)? }
            }
            INTEREST_ADD => Self::InterestAdd { topic: short(src)? },
            INTEREST_REMOVE => Self::InterestRemove { topic: short(src)? },
            BARRIER => Self::Barrier { seq: u64_le(src)? },
            BARRIER_ACK => Self::BarrierAck { seq: u64_le(src)? },
            _ => return None,
        })
    }
}

/// Applies records from the front of `batch`; returns how many bytes it
/// used. It stops early after a delivery that filled a subscriber past half,
/// and before one the budget is short for (once per record: `deferred`).
/// Adds to `batch` the publish records at the front of `src` that it
/// admits; returns what follows them.
fn gather<'a>(batch: &mut Batch<'a>, mut src: &'a [u8]) -> &'a [u8] {
    loop {
        let mut next = src;
        let msg = Record::decode(&mut next).and_then(|r| r.message());
        match msg {
            Some(msg) if batch.admits(&msg) => batch.push(msg),
            _ => return src,
        }
        src = next;
    }
}

pub(super) fn apply_batch(
    shard: &Shard,
    st: &mut State,
    from: usize,
    batch: &[u8],
    deferred: &mut bool,
) -> usize {
    let _mark = crate::probe::mark();
    let mut src = batch;
    let mut published = 0;
    loop {
        let before = src;
        let Some(record) = Record::decode(&mut src) else { break };
        match record {
            Record::Publish { .. } | Record::HPublish { .. } => {
                let msg = record.message().expect("a publish carries a message");
                let mut batch = Batch::new(msg, shard.cfg.max_pending);
                let after = gather(&mut batch, src);
                let msgs = batch.messages();
                match route::publish(shard, st, msgs, Source::Peer, deferred) {
                    Routed::Delivered { pressed, .. } => {
                        published += msgs.len() as u64;
                        src = after;
                        if pressed {
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
            Record::Barrier { seq } => barrier::on_barrier(st, from, seq),
            Record::BarrierAck { seq } => barrier::on_ack(st, seq),
        }
    }
    CoreCounters::add(&shard.counters.cross_core_received, published);
    match batch.len() - src.len() {
        0 if !batch.is_empty() && !*deferred => {
            tracing::error!(core = shard.core, from, left = batch.len(), "inconsistent batch");
            batch.len()
        }
        used => used,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_in_order() {
        let records = [
            Record::Publish { topic: "a.b", reply_to: "", payload: b"hi" },
            Record::InterestAdd { topic: "x" },
            Record::Barrier { seq: 7 },
            Record::InterestRemove { topic: "x" },
            Record::BarrierAck { seq: 7 },
            Record::Publish { topic: "é", reply_to: "r", payload: &[] },
            Record::HPublish {
                topic: "h",
                reply_to: "",
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
}
