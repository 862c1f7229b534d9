//! Bounded one-way links between cores: the only thing cores share.
//!
//! A link is a bounded `crossbeam-channel` of [`Bytes`] batches plus two
//! wakers. The receiving task parks on `data` only after it found the queue
//! empty, so a sender wakes the other core at most once per time it went
//! idle; the sending task parks on `room` only after it found the queue
//! full, so a receiver wakes the sender only when it really waits. (glommio's
//! own shared channel signals the sending core after every receive whenever
//! that core sleeps, which costs an extra wake-up of an idle core per
//! batch.) Dropping either end wakes the other, which then sees the link
//! closed.

use std::{
    future::poll_fn,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

/// The wakers both ends of one link share.
#[derive(Debug, Default)]
struct Wakers {
    /// The receiving task, parked on an empty queue.
    data: AtomicWaker,
    /// The sending task, parked on a full queue.
    room: AtomicWaker,
    /// The receiving end is gone. A full queue whose receiver left stays
    /// full, so waiting for room must look here too.
    receiver_gone: AtomicBool,
}

/// The sending end of a link, owned by one task on the sending core.
#[derive(Debug)]
pub(crate) struct LinkTx {
    /// Always `Some` until `Drop`, which disconnects before it wakes.
    queue: Option<Sender<Bytes>>,
    wakers: Arc<Wakers>,
}

/// The receiving end of a link, owned by one task on the receiving core.
#[derive(Debug)]
pub(crate) struct LinkRx {
    /// Always `Some` until `Drop`, which disconnects before it wakes.
    queue: Option<Receiver<Bytes>>,
    wakers: Arc<Wakers>,
}

/// The receiving end is gone; the batch was not sent.
#[derive(Debug)]
pub(crate) struct Closed;

/// A link holding at most `capacity` batches.
pub(crate) fn link(capacity: usize) -> (LinkTx, LinkRx) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let wakers = Arc::new(Wakers::default());
    (LinkTx { queue: Some(tx), wakers: Arc::clone(&wakers) }, LinkRx { queue: Some(rx), wakers })
}

/// The link ends one core owns: a sender to and a receiver from every
/// other core, each with the peer's index.
#[derive(Debug, Default)]
pub(crate) struct CoreLinks {
    pub to: Vec<(usize, LinkTx)>,
    pub from: Vec<(usize, LinkRx)>,
}

/// A full mesh between `cores` cores, each link holding `capacity`
/// batches; element `i` is what core `i` owns.
pub(crate) fn mesh(cores: usize, capacity: usize) -> Vec<CoreLinks> {
    let mut ends: Vec<CoreLinks> = (0..cores).map(|_| CoreLinks::default()).collect();
    for from in 0..cores {
        for to in (0..cores).filter(|&to| to != from) {
            let (tx, rx) = link(capacity);
            ends[from].to.push((to, tx));
            ends[to].from.push((from, rx));
        }
    }
    ends
}

impl LinkTx {
    /// Queues `batch`, waiting while the link is full.
    #[cfg(test)]
    pub(crate) async fn send(&self, batch: Bytes) -> Result<(), Closed> {
        poll_fn(|cx| self.poll_room(cx)).await?;
        self.push(batch)
    }

    /// Whether the link takes a batch now. Each link has one sending
    /// task's core behind it and the receiver only makes room, so a batch
    /// pushed right after this said yes is taken.
    pub(crate) fn has_room(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| !q.is_full())
    }

    /// Ready once the link has room (or is closed); until then the task
    /// is woken when the receiver takes a batch.
    pub(crate) fn poll_room(&self, cx: &Context<'_>) -> Poll<Result<(), Closed>> {
        let Some(queue) = &self.queue else { return Poll::Ready(Err(Closed)) };
        let room = || match self.wakers.receiver_gone.load(Ordering::Acquire) {
            true => Some(Err(Closed)),
            false => (!queue.is_full()).then_some(Ok(())),
        };
        if let Some(ready) = room() {
            return Poll::Ready(ready);
        }
        self.wakers.room.register(cx.waker());
        // The receiver may have made room (or left) between the check and
        // the registration; look once more so that wake is not lost.
        room().map_or(Poll::Pending, Poll::Ready)
    }

    /// Queues `batch`, which the link must have room for ([`Self::has_room`]
    /// or [`Self::poll_room`] just said so), and wakes the receiver.
    pub(crate) fn push(&self, batch: Bytes) -> Result<(), Closed> {
        let queue = self.queue.as_ref().ok_or(Closed)?;
        match queue.try_send(batch) {
            Ok(()) => {
                self.wakers.data.wake();
                Ok(())
            }
            // Full cannot happen when the caller asked first; were it to,
            // the batch is lost as if the peer had left, and said so.
            Err(TrySendError::Disconnected(_) | TrySendError::Full(_)) => Err(Closed),
        }
    }
}

impl Drop for LinkTx {
    fn drop(&mut self) {
        // Disconnect, then wake: woken earlier, the receiver could find the
        // sender still there and park for good.
        drop(self.queue.take());
        self.wakers.data.wake();
    }
}

impl LinkRx {
    /// The next batch, or `None` once the sender is gone and the queue empty.
    pub(crate) async fn recv(&self) -> Option<Bytes> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some(queue) = &self.queue else { return Poll::Ready(None) };
        match queue.try_recv() {
            Ok(batch) => return self.received(batch),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.wakers.data.register(cx.waker());
        match queue.try_recv() {
            Ok(batch) => self.received(batch),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    fn received(&self, batch: Bytes) -> Poll<Option<Bytes>> {
        self.wakers.room.wake();
        Poll::Ready(Some(batch))
    }
}

impl Drop for LinkRx {
    fn drop(&mut self) {
        drop(self.queue.take());
        self.wakers.receiver_gone.store(true, Ordering::Release);
        self.wakers.room.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, thread, time::Duration};

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    const ROUNDS: u32 = 5_000;
    const BURST: u32 = 20_000;

    fn on_executor<F, Fut>(name: &str, work: F) -> thread::JoinHandle<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let builder = LocalExecutorBuilder::new(Placement::Unbound).name(name).io_memory(512 << 10);
        thread::spawn(move || builder.make().expect("executor").run(work()))
    }

    fn numbered(n: u32) -> Bytes {
        Bytes::copy_from_slice(&n.to_le_bytes())
    }

    fn number(b: &Bytes) -> u32 {
        u32::from_le_bytes(b[..4].try_into().expect("four bytes"))
    }

    /// Ping-pong then a burst through a two-slot link, across two
    /// executors: a lost wake-up anywhere hangs, and the timeout fails it.
    #[test]
    fn no_lost_wakeups_across_executors() {
        let (ping_tx, ping_rx) = link(2);
        let (pong_tx, pong_rx) = link(2);
        let (done_tx, done_rx) = mpsc::channel();
        let a = on_executor("link-a", move || async move {
            for n in 0..ROUNDS {
                ping_tx.send(numbered(n)).await.expect("b is there");
                assert_eq!(pong_rx.recv().await.map(|b| number(&b)), Some(n));
            }
            for n in 0..BURST {
                ping_tx.send(numbered(n)).await.expect("b is there");
            }
            drop(ping_tx);
            assert!(pong_rx.recv().await.is_none(), "b closes after the burst");
            done_tx.send(()).expect("test waits");
        });
        let b = on_executor("link-b", move || async move {
            for _ in 0..ROUNDS {
                let ping = ping_rx.recv().await.expect("a is there");
                pong_tx.send(ping).await.expect("a is there");
            }
            let mut next = 0;
            while let Some(batch) = ping_rx.recv().await {
                assert_eq!(number(&batch), next, "in order, none lost");
                next += 1;
            }
            assert_eq!(next, BURST);
        });
        done_rx.recv_timeout(Duration::from_secs(20)).expect("a wake-up was lost");
        a.join().expect("a");
        b.join().expect("b");
    }

    #[test]
    fn a_dropped_receiver_fails_a_waiting_sender() {
        let (tx, rx) = link(1);
        let (done_tx, done_rx) = mpsc::channel();
        let a = on_executor("link-tx", move || async move {
            tx.send(numbered(1)).await.expect("room for one");
            // Full now: waits until the receiver goes, then fails.
            assert!(tx.send(numbered(2)).await.is_err());
            done_tx.send(()).expect("test waits");
        });
        thread::sleep(Duration::from_millis(50));
        drop(rx);
        done_rx.recv_timeout(Duration::from_secs(10)).expect("sender never woke");
        a.join().expect("sender");
    }
}
