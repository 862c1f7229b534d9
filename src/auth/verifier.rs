//! Password checks off the cores.
//!
//! An argon2 check costs tens of milliseconds of CPU by design; on a core
//! it would stall every connection there. The cores hand each check to a
//! small pool of threads through a bounded queue and park the connection
//! (its `HELLO` stays unapplied) until the answer wakes it. A full queue
//! refuses the login at once rather than queueing without bound.

use std::{
    sync::{Arc, Mutex},
    task::Waker,
    thread::JoinHandle,
};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Sender, TrySendError};

/// Checks waiting for a thread, at most.
pub(crate) const QUEUE: usize = 256;

type Job = Box<dyn FnOnce() + Send>;

/// The pool; dropping it ends the threads once the queue is empty.
#[derive(Debug)]
pub(crate) struct Verifier {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

/// The queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Busy;

/// A check in progress: its answer once there, and the task to wake then.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    answer: Mutex<Option<T>>,
    waker: AtomicWaker,
}

impl Verifier {
    /// Starts `threads` threads (at least one).
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new().name(format!("corecast-auth-{i}")).spawn(move || {
                    // A job that panics leaves its login unanswered (it
                    // ends at the handshake timeout), not the thread dead.
                    for job in rx.iter() {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tx: Some(tx), threads })
    }

    /// Queues `work`; `waker` is woken when its answer is in.
    pub(crate) fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
        waker: &Waker,
    ) -> Result<Arc<Pending<T>>, Busy> {
        let pending = Arc::new(Pending { answer: Mutex::new(None), waker: AtomicWaker::new() });
        pending.waker.register(waker);
        let done = Arc::clone(&pending);
        let job: Job = Box::new(move || {
            let answer = work();
            *done.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
            done.waker.wake();
        });
        let tx = self.tx.as_ref().ok_or(Busy)?;
        match tx.try_send(job) {
            Ok(()) => Ok(pending),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

impl<T> Pending<T> {
    /// The answer if it is in; otherwise `waker` is woken when it is.
    pub(crate) fn take(&self, waker: &Waker) -> Option<T> {
        self.waker.register(waker);
        self.answer.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.tx = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicBool, task::Wake};

    use super::*;

    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_answer_wakes_the_waiter() {
        let verifier = Verifier::start(1).expect("threads");
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let pending = verifier.submit(|| 7, &waker).expect("room");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !flag.0.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "never woken");
            std::thread::yield_now();
        }
        assert_eq!(pending.take(&waker), Some(7));
        assert_eq!(pending.take(&waker), None, "taken once");
    }

    #[test]
    fn a_full_queue_refuses() {
        let verifier = Verifier::start(1).expect("threads");
        let waker = Waker::noop();
        let (hold, release) = crossbeam_channel::bounded::<()>(0);
        let _first = verifier.submit(move || release.recv().ok(), waker).expect("room");
        let mut refused = false;
        for _ in 0..QUEUE + 2 {
            refused |= verifier.submit(|| (), waker).is_err();
        }
        assert!(refused, "the queue is bounded");
        drop(hold);
    }
}
