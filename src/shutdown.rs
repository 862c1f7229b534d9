//! The shutdown signal: raised from any thread, awaited by every core.

use std::{
    future::poll_fn,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Poll,
};

use atomic_waker::AtomicWaker;

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
