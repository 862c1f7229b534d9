//! Live counters, one set per core, readable from any thread.
//!
//! Each core is the only writer of its own set, so an update is a plain load
//! and store (no locked instruction); readers on other threads see values
//! that are at most a moment old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// The counters of one core, written only by that core.
        #[derive(Debug, Default)]
        pub struct CoreCounters {
            $( $(#[$doc])* pub(crate) $name: AtomicU64, )*
        }

        /// A copy of counter values: one core's, or the sum over cores.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct Snapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl CoreCounters {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl std::ops::AddAssign for Snapshot {
            fn add_assign(&mut self, other: Snapshot) {
                $( self.$name += other.$name; )*
            }
        }

        impl Snapshot {
            /// Every counter as `(name, value)`, for logs and tools.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }
        }
    };
}

counters! {
    /// Connections past the handshake and not yet leaving (state `Open`).
    connections_open,
    /// Slab slots taken, in any state from `Handshake` to `Closed`.
    slots_in_use,
    /// Chunks and large input buffers held by connections (none while a
    /// connection is idle).
    buffers_out,
    /// Bytes queued for clients and not yet written.
    pending_bytes,
    /// Bytes of the pending budget held by connections: output chunks,
    /// input chunks, large input buffers.
    memory_used,
    /// Bytes of free chunks kept resident for reuse; past a small reserve
    /// they go back to the kernel on the sweeper's next tick.
    memory_cached,
    /// Connection tasks running.
    tasks_alive,
    /// Subscriptions held by connections of this core.
    subscriptions,
    /// Connections accepted since start.
    connections_accepted,
    /// Connections refused with `ERR server full`.
    connections_refused,
    /// Accepts that failed, for instance with the open-file limit reached.
    accept_failures,
    /// `PUB` frames accepted.
    msgs_in,
    /// Bytes read from client sockets.
    bytes_in,
    /// `MSG` frames queued to subscribers.
    msgs_out,
    /// Bytes written to client sockets.
    bytes_out,
    /// Messages dropped on lossy subscriptions (reported with `DROPPED`).
    msgs_dropped,
    /// Of those, dropped because the connection had `max_pending` queued.
    drops_max_pending,
    /// Of those, dropped (new or already queued) to keep the core within
    /// its pending budget.
    drops_budget,
    /// Messages no member of a queue group received, once per group: the
    /// core drawn for the group had no member left when the message
    /// arrived (the member drawn left while it was on its way), and no
    /// other member could be drawn: none on another core that it knew of
    /// and could hand the message to at once, or the message had been
    /// drawn again already.
    queue_undeliverable,
    /// Messages handed on to another core for a queue group, once per
    /// group: the core drawn for the group had no member left when the
    /// message arrived, and drew again among the other cores' members.
    queue_redrawn,
    /// Connections closed because they could not keep up (all causes).
    slow_consumer_closes,
    /// Of those, closed with `max_pending` bytes queued.
    closes_max_pending,
    /// Of those, closed because their socket took nothing for
    /// `write_deadline_ms` while output was pending.
    closes_write_deadline,
    /// Of those, closed to keep the core within its pending budget.
    closes_budget,
    /// Connections closed because the budget could not hold a frame they
    /// were sending (`ERR` out of memory).
    input_budget_closes,
    /// Connections closed for silence past the idle limit.
    stale_closes,
    /// Connections closed for not sending `HELLO` in time.
    handshake_timeouts,
    /// Frames refused with an `ERR` code, fatal or not.
    protocol_errors,
    /// Times a publisher's reads were held back by a full cross-core queue.
    publisher_stalls,
    /// Times a publisher (or the receiver of another core's publishes) was
    /// held back for a subscriber that keeps reading and had most of
    /// `max_pending` queued (the fast-producer hold).
    publisher_holds,
    /// Publish records sent to other cores.
    cross_core_sent,
    /// Publish records received from other cores.
    cross_core_received,
    /// Batches handed to cross-core channels.
    cross_core_batches,
    /// Connection tasks that panicked (caught; the connection was closed).
    task_panics,
}

impl CoreCounters {
    /// Adds `n` to a counter of this core (single writer: load and store).
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets a gauge of this core.
    #[inline]
    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Relaxed);
    }

    /// Subtracts `n` from a gauge of this core.
    #[inline]
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Relaxed).wrapping_sub(n), Relaxed);
    }
}

/// Counters of every core and their sum.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// The sum over cores.
    pub total: Snapshot,
    /// One snapshot per core, by core index.
    pub per_core: Vec<Snapshot>,
}

impl Counters {
    pub(crate) fn collect<'a>(cores: impl Iterator<Item = &'a CoreCounters>) -> Self {
        let per_core: Vec<Snapshot> = cores.map(CoreCounters::snapshot).collect();
        let mut total = Snapshot::default();
        for s in &per_core {
            total += *s;
        }
        Self { per_core, total }
    }
}
