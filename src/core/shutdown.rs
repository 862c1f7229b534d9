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

/// Two one-way flags, lame duck and shutdown, with one waker slot per
/// core (each core's run task is the only one that waits).
#[derive(Debug)]
pub(crate) struct ShutdownSignal {
    raised: AtomicBool,
    lame_duck: AtomicBool,
    wakers: Vec<AtomicWaker>,
}

/// What ended a core's normal service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Lame duck: stop accepting, send the clients away over time.
    LameDuck,
    /// Shutdown: send every client away now.
    Shutdown,
}

impl ShutdownSignal {
    pub(crate) fn new(cores: usize) -> Arc<Self> {
        Arc::new(Self {
            raised: AtomicBool::new(false),
            lame_duck: AtomicBool::new(false),
            wakers: (0..cores).map(|_| AtomicWaker::new()).collect(),
        })
    }

    /// Raises the shutdown flag and wakes every core waiting for it.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Raises the lame-duck flag; false if it was raised already.
    pub(crate) fn raise_lame_duck(&self) -> bool {
        let first = !self.lame_duck.swap(true, Ordering::SeqCst);
        self.wake_all();
        first
    }

    fn wake_all(&self) {
        for waker in &self.wakers {
            waker.wake();
        }
    }

    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    pub(crate) fn is_lame_duck(&self) -> bool {
        self.lame_duck.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown is raised; `core` picks the waker slot.
    pub(crate) async fn wait(&self, core: usize) {
        self.wait_for(core, Self::is_raised).await;
    }

    /// Resolves once lame duck or shutdown is raised, with which.
    pub(crate) async fn wait_stop(&self, core: usize) -> Stop {
        self.wait_for(core, |s| s.is_raised() || s.is_lame_duck()).await;
        if self.is_raised() {
            Stop::Shutdown
        } else {
            Stop::LameDuck
        }
    }

    async fn wait_for(&self, core: usize, raised: impl Fn(&Self) -> bool) {
        poll_fn(|cx| {
            self.wakers[core].register(cx.waker());
            if raised(self) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
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
