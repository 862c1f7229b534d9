//! The per-peer staging that batches records for the other cores.
//!
//! Publishers stage only while their peer's staging is below
//! `cross_core_batch`. A publisher that finds it at the limit hands the
//! batch to the link itself when the link has room; when the link is full
//! too, it stops reading its socket until the forwarder has handed the
//! batch on. That is the "backpressure to the publisher" policy.
//!
//! A core that hands a peer's message on to a third core (a queue group
//! whose members here left, `route::queue`) never waits: it asks
//! [`Outbound::can_forward`] and chooses among the cores that have room.

use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

use super::{
    coreset::CoreSet,
    link::{Closed, LinkTx},
    record::Record,
};

/// What a batch's staging reserves past the limit when it starts, and
/// grows by should a record not fit.
const STAGING_CHUNK: usize = 64 << 10;

/// Records waiting for one peer's link.
#[derive(Debug, Default)]
struct PeerQueue {
    staging: BytesMut,
    /// The forwarder task, parked until there is something to send.
    forwarder: Option<Waker>,
    /// The link to the peer; `None` before [`Outbound::connect`] and once
    /// it is closed.
    link: Option<LinkTx>,
}

/// What a forwarder's poll did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Forwarded {
    /// A batch went to the link.
    Batch,
    /// Closing and drained: the link is closed.
    Done,
    /// The peer closed its end; the staging stays unsent.
    PeerGone,
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

    /// Gives the staging for `peer` its link.
    pub(crate) fn connect(&mut self, peer: usize, link: LinkTx) {
        self.peers[peer].link = Some(link);
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
        // A new batch starts where the last one ended while the space left
        // holds the limit and a publisher's overshoot past it (growing a
        // batch copies what it holds), else in an allocation that holds
        // two batches, so that small batches share one.
        let batch = self.limit + STAGING_CHUNK;
        if queue.staging.is_empty() && queue.staging.capacity() < batch {
            queue.staging.reserve(need.max(batch + self.limit));
        } else if queue.staging.capacity() - queue.staging.len() < need {
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

    /// Hands the staging of every peer in `peers` that reached the limit
    /// to its link, where the link has room: a publisher at the limit goes
    /// on without waiting for the forwarder's turn. Returns the batches
    /// sent.
    pub(crate) fn send_full(&mut self, peers: &CoreSet) -> u64 {
        let mut sent = 0;
        for peer in peers.iter() {
            let queue = &self.peers[peer];
            let ready = queue.link.as_ref().is_some_and(LinkTx::has_room);
            if ready && queue.staging.len() >= self.limit && self.send(peer).is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// For the forwarder of `peer`: sends the staging once there is some and
    /// the link has room. `Pending` while either waits; the task is woken
    /// by the next record staged or by the peer taking a batch.
    pub(crate) fn poll_forward(&mut self, peer: usize, cx: &Context<'_>) -> Poll<Forwarded> {
        let queue = &mut self.peers[peer];
        if queue.staging.is_empty() {
            if self.closing {
                // Dropping the link tells the peer nothing more comes.
                queue.link = None;
                return Poll::Ready(Forwarded::Done);
            }
            queue.forwarder = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let Some(link) = &queue.link else { return Poll::Ready(Forwarded::PeerGone) };
        match link.poll_room(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(match self.send(peer) {
                Ok(()) => Forwarded::Batch,
                Err(Closed) => Forwarded::PeerGone,
            }),
            Poll::Ready(Err(Closed)) => {
                queue.link = None;
                Poll::Ready(Forwarded::PeerGone)
            }
        }
    }

    /// Sends `peer`'s staging, which its link has room for, and wakes the
    /// connections waiting for room.
    fn send(&mut self, peer: usize) -> Result<(), Closed> {
        let queue = &mut self.peers[peer];
        let link = queue.link.as_ref().ok_or(Closed)?;
        if let Err(closed) = link.push(queue.staging.split().freeze()) {
            queue.link = None;
            return Err(closed);
        }
        for w in self.blocked.drain(..) {
            w.wake();
        }
        Ok(())
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
    use std::future::poll_fn;

    use futures_lite::future::block_on;

    use super::*;
    use crate::mesh::link::link;

    fn publish(payload: &[u8]) -> Record<'_> {
        Record::Publish { topic: "t", reply_to: "", requester: 0, payload }
    }

    /// One poll of peer 1's forwarder.
    fn forward(out: &mut Outbound) -> Poll<Forwarded> {
        block_on(poll_fn(|cx| Poll::Ready(out.poll_forward(1, cx))))
    }

    fn encoded(records: &[Record<'_>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        records.iter().for_each(|r| r.encode(&mut out));
        out.to_vec()
    }

    /// A publisher that finds its peer's staging at the limit sends it
    /// itself while the link has room, and waits only once the link is
    /// full; the forwarder then sends in the order staged.
    #[test]
    fn a_full_staging_goes_to_a_link_with_room_and_waits_on_a_full_one() {
        let (tx, rx) = link(1);
        let mut out = Outbound::new(0, 2, 16);
        out.connect(1, tx);
        let mut peers = CoreSet::default();
        peers.insert(1);
        out.stage(1, publish(&[1; 32]));
        assert!(!out.has_room(&peers));
        assert_eq!(out.send_full(&peers), 1);
        assert!(out.has_room(&peers), "sent without waiting for the forwarder");

        out.stage(1, publish(&[2; 32]));
        assert_eq!(out.send_full(&peers), 0, "the link holds one batch already");
        assert!(!out.has_room(&peers), "the publisher waits");
        assert!(forward(&mut out).is_pending(), "the forwarder waits for room");

        assert_eq!(block_on(rx.recv()).as_deref(), Some(&encoded(&[publish(&[1; 32])])[..]));
        assert_eq!(forward(&mut out), Poll::Ready(Forwarded::Batch));
        assert!(out.has_room(&peers));
        assert_eq!(block_on(rx.recv()).as_deref(), Some(&encoded(&[publish(&[2; 32])])[..]));
    }

    /// Small batches share an allocation: the next starts where the last
    /// one ended, with no new buffer per batch.
    #[test]
    fn small_batches_share_one_allocation() {
        let (tx, rx) = link(4);
        let mut out = Outbound::new(0, 2, 1024);
        out.connect(1, tx);
        out.stage(1, publish(b"a"));
        assert_eq!(forward(&mut out), Poll::Ready(Forwarded::Batch));
        out.stage(1, publish(b"b"));
        assert_eq!(forward(&mut out), Poll::Ready(Forwarded::Batch));
        let first = block_on(rx.recv()).expect("first batch");
        let second = block_on(rx.recv()).expect("second batch");
        assert_eq!(second.as_ptr(), first.as_ptr().wrapping_add(first.len()), "one allocation");
    }

    /// Below the limit nothing is sent early: records gather into one
    /// batch for the forwarder.
    #[test]
    fn staging_below_the_limit_waits_for_the_forwarder() {
        let (tx, rx) = link(4);
        let mut out = Outbound::new(0, 2, 1024);
        out.connect(1, tx);
        let mut peers = CoreSet::default();
        peers.insert(1);
        let records = [publish(b"a"), publish(b"b")];
        records.iter().for_each(|r| out.stage(1, *r));
        assert_eq!(out.send_full(&peers), 0);
        assert_eq!(forward(&mut out), Poll::Ready(Forwarded::Batch));
        assert!(forward(&mut out).is_pending(), "nothing more staged");
        assert_eq!(block_on(rx.recv()).as_deref(), Some(&encoded(&records)[..]));
        out.close();
        assert_eq!(forward(&mut out), Poll::Ready(Forwarded::Done));
        assert_eq!(block_on(rx.recv()), None, "closing drops the link");
    }

    #[test]
    fn staging_limit_reports_room() {
        let mut out = Outbound::new(0, 2, 16);
        let mut peers = CoreSet::default();
        peers.insert(1);
        assert!(out.has_room(&peers));
        out.stage(1, Record::Publish { topic: "t", reply_to: "", requester: 0, payload: &[0; 32] });
        assert!(!out.has_room(&peers));
    }

    #[test]
    fn forwarding_needs_room_and_an_open_mesh() {
        let mut out = Outbound::new(0, 3, 16);
        assert!(out.can_forward(1) && out.can_forward(2));
        out.stage(1, Record::Publish { topic: "t", reply_to: "", requester: 0, payload: &[0; 32] });
        assert!(!out.can_forward(1) && out.can_forward(2));
        out.close();
        assert!(!out.can_forward(2));
    }
}
