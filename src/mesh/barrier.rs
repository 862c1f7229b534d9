//! The barrier behind `PONG`: a client's `PING` is answered once everything
//! the client sent before it took effect on every core, and never ahead of
//! a `DROPPED` the client is owed.
//!
//! Each effect a core stages for its peers (a publish, an interest change)
//! is counted as it is staged ([`Outbound::staged_seq`]); a `PING` owes its
//! `PONG` after the effects staged so far. To learn that they landed, the
//! core stages a `Barrier` record with that count for every peer. Links
//! keep order, so a peer that reads it has applied everything before it,
//! and answers with a `BarrierAck`. Once every peer has answered, the
//! `PONG`s owed up to that count go out. One barrier is in flight per core
//! at a time: its completion wakes the connections waiting on it, and the
//! next flush of one still owed a later `PONG` starts the next barrier.

use std::collections::VecDeque;

use corecast_proto::ServerFrame;

use super::{record::Record, staging::Outbound};
use crate::core::shard::{Shard, State};

/// Most `PING`s a connection may have waiting for their `PONG`; past this
/// the broker stops reading from it until they are answered.
const MAX_PENDING_PONGS: usize = 64;

/// A `PONG` owed to the client once effects up to `after_seq` landed.
#[derive(Debug, Clone, Copy)]
struct PendingPong {
    nonce: u64,
    after_seq: u64,
}

/// The `PONG`s one connection is owed, in order.
#[derive(Debug, Default)]
pub(crate) struct Pongs {
    owed: VecDeque<PendingPong>,
    /// The connection is listed among the barrier's waiters.
    waiting: bool,
}

impl Pongs {
    /// Whether the connection must stop sending `PING`s for now.
    pub(crate) fn is_full(&self) -> bool {
        self.owed.len() >= MAX_PENDING_PONGS
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// Forgets the `PONG`s of a connection that is leaving.
    pub(crate) fn clear(&mut self) {
        self.owed.clear();
    }
}

/// The barrier in flight.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    seq: u64,
    acks_missing: usize,
}

/// One core's barrier.
#[derive(Debug, Default)]
pub(crate) struct Barrier {
    /// Every effect up to here is known to have landed on every peer.
    acked_seq: u64,
    inflight: Option<Inflight>,
    /// Slots whose `PONG`s wait for the barrier in flight.
    waiters: Vec<usize>,
}

impl Barrier {
    /// Starts a barrier covering everything staged so far, unless one is in
    /// flight (its completion starts the next when still needed).
    fn request(&mut self, out: &mut Outbound) {
        if self.inflight.is_some() || self.acked_seq >= out.staged_seq() {
            return;
        }
        let seq = out.staged_seq();
        self.inflight = Some(Inflight { seq, acks_missing: out.peer_count() });
        out.stage_all(Record::Barrier { seq });
    }

    /// Counts one peer's ack; true when the barrier completed.
    fn on_ack(&mut self, seq: u64) -> bool {
        let Some(inflight) = &mut self.inflight else {
            return false;
        };
        if inflight.seq != seq {
            return false;
        }
        inflight.acks_missing -= 1;
        if inflight.acks_missing > 0 {
            return false;
        }
        self.acked_seq = seq;
        self.inflight = None;
        true
    }
}

/// Owes connection `key` a `PONG` with `nonce`, after everything staged so
/// far. The caller has checked that its [`Pongs`] are not full.
pub(crate) fn owe_pong(st: &mut State, key: usize, nonce: u64) {
    let after_seq = st.outbound.staged_seq();
    st.slots[key].pongs_mut().owed.push_back(PendingPong { nonce, after_seq });
}

/// Sends the `PONG`s whose conditions hold, in order; starts a barrier for
/// the first one that waits on other cores. For a connection whose
/// subscriptions are all lossy, a `PONG` that would pass `max_pending`
/// waits, like a `DROPPED`, for the client to read: such subscribers sit
/// at that limit by design. False when a `PONG` did not fit and the client
/// was cut as a slow consumer for it.
pub(crate) fn release_pongs(shard: &Shard, st: &mut State, key: usize) -> bool {
    let acked = st.barrier.acked_seq;
    loop {
        let State { slots, mem, barrier, outbound, .. } = &mut *st;
        let slot = &mut slots[key];
        let Some(&pong) = slot.pongs().owed.front() else { return true };
        if slot.has_unreported_drops() && !slot.report_drops(mem) {
            return true;
        }
        if pong.after_seq > acked {
            if !slot.pongs().waiting {
                slot.pongs_mut().waiting = true;
                barrier.waiters.push(key);
            }
            barrier.request(outbound);
            return true;
        }
        let frame = ServerFrame::Pong { nonce: pong.nonce };
        if slot.all_lossy() && slot.out().len() + frame.encoded_len() > mem.max_pending() {
            return true;
        }
        if !st.push(shard, key, &frame) {
            return false;
        }
        st.slots[key].pongs_mut().owed.pop_front();
    }
}

/// A peer's `Barrier`: everything it staged before has been applied here,
/// so acknowledge it.
pub(crate) fn on_barrier(st: &mut State, from: usize, seq: u64) {
    st.outbound.stage(from, Record::BarrierAck { seq });
}

/// A peer's `BarrierAck`: once every peer has sent one, wakes the
/// connections whose `PONG`s waited for the barrier.
pub(crate) fn on_ack(st: &mut State, seq: u64) {
    if !st.barrier.on_ack(seq) {
        return;
    }
    let State { slots, barrier, .. } = st;
    for key in barrier.waiters.drain(..) {
        if let Some(slot) = slots.get_mut(key) {
            slot.pongs_mut().waiting = false;
            slot.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_completes_after_every_peer_acks() {
        let mut out = Outbound::new(0, 3, 1024);
        let mut barrier = Barrier::default();
        out.stage_all(Record::InterestAdd { topic: "t" });
        assert_eq!(out.staged_seq(), 2);
        barrier.request(&mut out);
        assert!(!barrier.on_ack(2));
        assert!(barrier.on_ack(2));
        assert_eq!(barrier.acked_seq, 2);
    }
}
