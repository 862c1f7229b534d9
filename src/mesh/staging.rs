//! The per-peer staging that batches records for the other cores.
//!
//! Publishers stage only while their peer's staging is below
//! `cross_core_batch`; past it they stop reading their socket until the
//! forwarder has handed the batch to the link. That is the "backpressure to
//! the publisher" policy.
//!
//! A core that hands a peer's message on to a third core (a queue group
//! whose members here left, `route::queue`) never waits: it asks
//! [`Outbound::can_forward`] and chooses among the cores that have room.

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

/// Everything this core has staged for its peers.
#[derive(Debug)]
pub(crate) struct Outbound {
    core: usize,
    peers: Vec<PeerQueue>,
    /// Staging size past which publishers wait.
    limit: usize,
    /// Connections waiting for staging room; woken when a batch leaves.
    blocked: Vec<Waker>,
    /// Effects (publishes, interest changes) staged so far, which a
    /// barrier counts ([`super::barrier`]).
    staged_seq: u64,
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
            closing: false,
        }
    }

    /// Whether every peer in `peers` can take more records now.
    pub(crate) fn has_room(&self, peers: &CoreSet) -> bool {
        peers.iter().all(|p| self.peers[p].staging.len() < self.limit)
    }

    /// Whether a record staged for `peer` now would reach it without
    /// waiting: its staging is below the limit, so the record keeps it
    /// within the bound a publisher's batch keeps, and the forwarders are
    /// not closing (one that has finished would never send it).
    pub(crate) fn can_forward(&self, peer: usize) -> bool {
        !self.closing && self.peers[peer].staging.len() < self.limit
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
        if record.is_effect() {
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

    /// Effects staged so far: what a `PING` received now must wait for.
    pub(crate) fn staged_seq(&self) -> u64 {
        self.staged_seq
    }

    /// How many other cores there are.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_limit_reports_room() {
        let mut out = Outbound::new(0, 2, 16);
        let mut peers = CoreSet::default();
        peers.insert(1);
        assert!(out.has_room(&peers));
        out.stage(1, Record::Publish { topic: "t", reply_to: "", payload: &[0; 32] });
        assert!(!out.has_room(&peers));
    }

    #[test]
    fn forwarding_needs_room_and_an_open_mesh() {
        let mut out = Outbound::new(0, 3, 16);
        assert!(out.can_forward(1) && out.can_forward(2));
        out.stage(1, Record::Publish { topic: "t", reply_to: "", payload: &[0; 32] });
        assert!(!out.can_forward(1) && out.can_forward(2));
        out.close();
        assert!(!out.can_forward(2));
    }
}
