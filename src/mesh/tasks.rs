//! The cross-core tasks of one core: per peer, a forwarder that hands the
//! staging to the link and a receiver that applies the batches arriving.

use std::{future::poll_fn, rc::Rc, task::Poll, time::Instant};

use futures_lite::future;
use glommio::{timer::sleep, Task};

use super::{
    link::{CoreLinks, LinkRx},
    record,
    staging::Forwarded,
};
use crate::{
    core::{pressure::Hold, shard::Shard, slot::ms_duration},
    counters::CoreCounters,
};

/// The cross-core tasks of one core.
pub(crate) struct MeshTasks {
    forwarders: Vec<Task<()>>,
    receivers: Vec<Task<()>>,
}

impl MeshTasks {
    pub(crate) fn start(shard: &Rc<Shard>, links: CoreLinks) -> Self {
        let peers: Vec<usize> = links.to.iter().map(|(peer, _)| *peer).collect();
        {
            let outbound = &mut shard.state.borrow_mut().outbound;
            for (peer, tx) in links.to {
                outbound.connect(peer, tx);
            }
        }
        let forwarders = peers
            .into_iter()
            .map(|peer| glommio::spawn_local(forward(Rc::clone(shard), peer)))
            .collect();
        let receivers = links
            .from
            .into_iter()
            .map(|(peer, rx)| glommio::spawn_local(receive(Rc::clone(shard), rx, peer)))
            .collect();
        Self { forwarders, receivers }
    }

    /// For the shutdown: sends what is staged, closing every link, then
    /// applies what the peers still send until they close theirs.
    pub(crate) async fn finish(self, shard: &Shard) {
        shard.state.borrow_mut().outbound.close();
        // Each forwarder ends once its staging is sent, closing its link.
        for f in self.forwarders {
            f.await;
        }
        // Peers close their side once drained; a peer that died never does,
        // so give up on it after the grace period.
        let drained = async {
            for r in self.receivers {
                r.await;
            }
            true
        };
        let grace = ms_duration(shard.cfg().shutdown_grace_ms);
        if !future::or(drained, async {
            sleep(grace).await;
            false
        })
        .await
        {
            tracing::warn!(core = shard.core, "a peer core did not close its link");
        }
    }
}

/// Hands staged batches for `peer` to its link whenever there are some and
/// the link has room. Ends once closing and drained, which closes the link
/// and so tells the peer nothing more comes.
async fn forward(shard: Rc<Shard>, peer: usize) {
    poll_fn(|cx| {
        let _mark = crate::probe::mark();
        let outbound = &mut shard.state.borrow_mut().outbound;
        loop {
            match outbound.poll_forward(peer, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Forwarded::Batch) => {
                    CoreCounters::add(&shard.counters.cross_core_batches, 1);
                }
                Poll::Ready(Forwarded::Done) => return Poll::Ready(()),
                Poll::Ready(Forwarded::PeerGone) => {
                    tracing::warn!(core = shard.core, peer, "peer core left; dropping its traffic");
                    return Poll::Ready(());
                }
            }
        }
    })
    .await;
}

/// Applies the batches `peer` sends until it closes its side. It yields
/// after every batch: a receive from a link that already holds the next
/// batch does not, so under a steady flow from a peer this task would
/// otherwise keep the core from the connections' own reads and writes.
async fn receive(shard: Rc<Shard>, link: LinkRx, peer: usize) {
    while let Some(batch) = link.recv().await {
        apply(&shard, &batch, peer).await;
        futures_lite::future::yield_now().await;
    }
}

/// Applies one batch, letting subscribers flush whenever they fill up, and
/// waiting for one that holds the receiver back (as a client publisher
/// waits: [`Hold`]). While it waits, the link fills and the publishing
/// core's publishers wait for room.
async fn apply(shard: &Shard, batch: &[u8], peer: usize) {
    let mut done = 0;
    let mut deferred = false;
    while done < batch.len() {
        let rest = &batch[done..];
        let (used, hold) =
            record::apply_batch(shard, &mut shard.state.borrow_mut(), peer, rest, &mut deferred);
        done += used;
        if let Some(by) = hold {
            wait_for(shard, by).await;
        } else if done < batch.len() {
            // Subscribers filled up: let them flush, then go on.
            futures_lite::future::yield_now().await;
        }
    }
}

/// Waits while subscriber `by` holds the receiver back, if it does.
async fn wait_for(shard: &Shard, by: usize) {
    let hold = {
        let st = shard.state.borrow();
        Hold::start(by, &st.slots, st.mem.max_pending())
    };
    let Some(hold) = hold else { return };
    CoreCounters::add(&shard.counters.publisher_holds, 1);
    loop {
        sleep(Hold::TICK).await;
        let st = shard.state.borrow();
        if !hold.holds(&st.slots, st.mem.max_pending(), Instant::now()) {
            return;
        }
    }
}
