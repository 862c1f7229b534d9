//! Shutdown: the signal, raised from any thread and awaited by every core,
//! and the sequence each core then runs to end its connections gracefully.

use std::{
    future::poll_fn,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Poll,
};

use atomic_waker::AtomicWaker;

use super::{shard::Shard, slot::Exit};
use crate::mesh::tasks::MeshTasks;

/// A one-way flag with one waker slot per core.
#[derive(Debug)]
pub(crate) struct ShutdownSignal {
    raised: AtomicBool,
    wakers: Vec<AtomicWaker>,
}

impl ShutdownSignal {
    pub(crate) fn new(cores: usize) -> Arc<Self> {
        Arc::new(Self {
            raised: AtomicBool::new(false),
            wakers: (0..cores).map(|_| AtomicWaker::new()).collect(),
        })
    }

    /// Raises the flag and wakes every core waiting for it.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            waker.wake();
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Resolves once the flag is raised; `core` picks the waker slot.
    pub(crate) async fn wait(&self, core: usize) {
        poll_fn(|cx| {
            self.wakers[core].register(cx.waker());
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// A handle that starts a graceful shutdown of the broker from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(pub(crate) Arc<ShutdownSignal>);

impl ShutdownHandle {
    /// Stops accepting, sends `GOAWAY`, flushes within the grace period and
    /// closes everything. Returns at once; wait on the broker for the end.
    pub fn shutdown(&self) {
        self.0.raise();
    }
}

/// Stops reading everywhere, drains the cross-core channels, sends
/// `GOAWAY` after every message accepted before, and waits for every
/// connection to finish within the grace period.
pub(super) async fn shutdown(shard: &Rc<Shard>, mesh: MeshTasks) {
    shard.shutting_down.set(true);
    mesh.finish(shard).await;
    {
        let mut st = shard.state.borrow_mut();
        let keys: Vec<usize> = st.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            st.leave(shard, key, Exit::Shutdown, "");
        }
    }
    // Every slot now drains with a deadline the sweeper enforces.
    if shard.gate.close().await.is_err() {
        tracing::warn!(core = shard.core, "gate already closed");
    }
    let c = shard.counters.snapshot();
    tracing::info!(
        core = shard.core,
        slots = c.slots_in_use,
        tasks = c.tasks_alive,
        "core stopped"
    );
}
