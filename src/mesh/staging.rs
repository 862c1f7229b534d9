//! The per-peer staging that batches records for the other cores, and the
//! barrier that lets a `PING` wait until earlier effects landed on every
//! core.
//!
//! Publishers stage only while their peer's staging is below
//! `cross_core_batch`; past it they stop reading their socket until the
//! forwarder has handed the batch to the link. That is the "backpressure to
//! the publisher" policy.

use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::{coreset::CoreSet, record::Record};

/// Staging grows in chunks of this size, so batches share allocations.
const STAGING_CHUNK: usize = 64 << 10;

/// Records waiting for one peer's forwarder.
#[derive(Debug, Default)]
struct PeerQueue {
    staging: BytesMut,
    /// The forwarder task, parked until there is something to send.
    forwarder: Option<Waker>,
}

/// The barrier in flight, if any.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    seq: u64,
    acks_missing: usize,
}

/// Everything this core has staged for its peers.
#[derive(Debug)]
pub(crate) struct Outbound {
    core: usize,
    peers: Vec<PeerQueue>,
    /// Staging size past which publishers wait.
    limit: usize,
    /// Connections waiting for staging room; woken when a batch leaves.
    blocked: Vec<Waker>,
    /// Effects (publishes, interest changes) staged so far.
    staged_seq: u64,
    /// Every effect up to here is known to have landed on every peer.
    acked_seq: u64,
    inflight: Option<Inflight>,
    /// Set at shutdown: forwarders finish once their staging is empty.
    closing: bool,
}

impl Outbound {
    pub(crate) fn new(core: usize, cores: usize, limit: usize) -> Self {
        Self {
            core,
            peers: (0..cores).map(|_| PeerQueue::default()).collect(),
            limit,
            blocked: Vec::new(),
            staged_seq: 0,
            acked_seq: 0,
            inflight: None,
            closing: false,
        }
    }

    /// Whether every peer in `peers` can take more records now.
    pub(crate) fn has_room(&self, peers: &CoreSet) -> bool {
        peers.iter().all(|p| self.peers[p].staging.len() < self.limit)
    }

    /// Parks a connection until a batch leaves.
    pub(crate) fn wait_for_room(&mut self, waker: &Waker) {
        if !self.blocked.iter().any(|w| w.will_wake(waker)) {
            self.blocked.push(waker.clone());
        }
    }

    /// Stages a record for one peer. Publishes and interest changes count as
    /// effects that a later barrier must cover.
    pub(crate) fn stage(&mut self, peer: usize, record: Record<'_>) {
        if matches!(
            record,
            Record::Publish { .. } | Record::InterestAdd { .. } | Record::InterestRemove { .. }
        ) {
            self.staged_seq += 1;
        }
        let queue = &mut self.peers[peer];
        let need = record.encoded_len();
        if queue.staging.capacity() - queue.staging.len() < need {
            queue.staging.reserve(need.max(STAGING_CHUNK));
        }
        record.encode(&mut queue.staging);
        if let Some(w) = queue.forwarder.take() {
            w.wake();
        }
    }

    /// Stages a record for every peer.
    pub(crate) fn stage_all(&mut self, record: Record<'_>) {
        for peer in 0..self.peers.len() {
            if peer != self.core {
                self.stage(peer, record);
            }
        }
    }

    /// For the forwarder of `peer`: the next batch, `Pending` while there is
    /// none, `None` once closing and drained.
    pub(crate) fn poll_batch(&mut self, peer: usize, cx: &Context<'_>) -> Poll<Option<Bytes>> {
        let queue = &mut self.peers[peer];
        if queue.staging.is_empty() {
            if self.closing {
                return Poll::Ready(None);
            }
            queue.forwarder = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let batch = queue.staging.split().freeze();
        for w in self.blocked.drain(..) {
            w.wake();
        }
        Poll::Ready(Some(batch))
    }

    /// Lets forwarders finish once they have sent what is staged.
    pub(crate) fn close(&mut self) {
        self.closing = true;
        for queue in &mut self.peers {
            if let Some(w) = queue.forwarder.take() {
                w.wake();
            }
        }
    }

    /// The effect count a `PING` received now must wait for.
    pub(crate) fn staged_seq(&self) -> u64 {
        self.staged_seq
    }

    /// The effect count known to have landed everywhere.
    pub(crate) fn acked_seq(&self) -> u64 {
        self.acked_seq
    }

    /// Starts a barrier covering everything staged so far, unless one is in
    /// flight (its completion starts the next when still needed).
    pub(crate) fn request_barrier(&mut self) {
        if self.inflight.is_some() || self.acked_seq >= self.staged_seq {
            return;
        }
        let seq = self.staged_seq;
        self.inflight = Some(Inflight { seq, acks_missing: self.peers.len() - 1 });
        self.stage_all(Record::Barrier { seq });
    }

    /// Counts one peer's ack; true when the barrier completed.
    pub(crate) fn on_ack(&mut self, seq: u64) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barrier_completes_after_every_peer_acks() {
        let mut out = Outbound::new(0, 3, 1024);
        out.stage_all(Record::InterestAdd { topic: "t" });
        assert_eq!(out.staged_seq(), 2);
        out.request_barrier();
        assert!(!out.on_ack(2));
        assert!(out.on_ack(2));
        assert_eq!(out.acked_seq(), 2);
    }

    #[test]
    fn staging_limit_reports_room() {
        let mut out = Outbound::new(0, 2, 16);
        let mut peers = CoreSet::default();
        peers.insert(1);
        assert!(out.has_room(&peers));
        out.stage(1, Record::Publish { topic: "t", reply_to: "", payload: &[0; 32] });
        assert!(!out.has_room(&peers));
    }
}
