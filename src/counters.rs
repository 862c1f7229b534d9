//! Live counters, one set per core, readable from any thread.
//!
//! Each core is the only writer of its own set, so an update is a plain load
//! and store (no locked instruction); readers on other threads see values
//! that are at most a moment old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A set of counters with one writer (`$set`) and its copy (`$snap`):
/// each field's doc is its help text, and `gauge`/`counter` its kind.
macro_rules! counters {
    ($(#[$set_doc:meta])* $set:ident { $($extra:tt)* }, $(#[$snap_doc:meta])* $snap:ident;
     $( $(#[$doc:meta])* $kind:ident $name:ident ),* $(,)?) => {
        $(#[$set_doc])*
        #[derive(Debug, Default)]
        pub struct $set {
            $( $(#[$doc])* pub(crate) $name: std::sync::atomic::AtomicU64, )*
            $($extra)*
        }

        $(#[$snap_doc])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct $snap {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl $set {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snap {
                $snap { $( $name: self.$name.load(std::sync::atomic::Ordering::Relaxed), )* }
            }
        }

        impl std::ops::AddAssign for $snap {
            fn add_assign(&mut self, other: $snap) {
                $( self.$name += other.$name; )*
            }
        }

        impl $snap {
            /// Every counter as `(name, value)`, for logs and tools.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name), )*]
            }

            /// Every counter with its kind and the first line of its doc.
            pub fn described(&self) -> Vec<$crate::counters::Described> {
                vec![$( $crate::counters::Described {
                    name: stringify!($name),
                    kind: $crate::counters::kind!($kind),
                    doc: &[$( stringify!($doc) ),*],
                    value: self.$name,
                }, )*]
            }
        }
    };
}

/// Whether a value only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A total since start: only grows.
    Counter,
    /// A level now: goes up and down.
    Gauge,
}

macro_rules! kind {
    (counter) => {
        $crate::counters::Kind::Counter
    };
    (gauge) => {
        $crate::counters::Kind::Gauge
    };
}
pub(crate) use {counters, kind};

/// One counter's value with what it is, for exporters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Described {
    /// The field's name, as in `STATS`.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its value.
    pub value: u64,
    /// Its documentation, line by line, as `stringify!` wrote the
    /// attributes.
    pub(crate) doc: &'static [&'static str],
}

impl Described {
    /// Its documentation as one line.
    pub fn help(&self) -> String {
        // Each is `doc = r" text"` (or `doc = " text"`).
        let text = |d: &'static str| {
            let literal = d.trim_start_matches("doc").trim_start().trim_start_matches('=').trim();
            literal.trim_start_matches('r').trim_matches('"').trim()
        };
        self.doc.iter().map(|d| text(d)).collect::<Vec<_>>().join(" ")
    }
}

counters! {
    /// The counters of one core, written only by that core.
    CoreCounters {
        /// Distributions the monitoring port exports.
        pub(crate) histograms: Histograms,
    },
    /// A copy of counter values: one core's, or the sum over cores.
    Snapshot;
    /// Connections past the handshake and not yet leaving (state `Open`).
    gauge connections_open,
    /// Slab slots taken, in any state from `Handshake` to `Closed`.
    gauge slots_in_use,
    /// Chunks and large input buffers held by connections (none while a
    /// connection is idle).
    gauge buffers_out,
    /// Bytes queued for clients and not yet written.
    gauge pending_bytes,
    /// Bytes of the pending budget held by connections: output chunks,
    /// input chunks, large input buffers.
    gauge memory_used,
    /// Bytes of free chunks kept resident for reuse; past a small reserve
    /// they go back to the kernel on the sweeper's next tick.
    gauge memory_cached,
    /// Connection tasks running.
    gauge tasks_alive,
    /// Subscriptions held by connections of this core.
    gauge subscriptions,
    /// Connections on the TLS port, from accept to close (handshake
    /// included).
    gauge tls_connections,
    /// Connections on the web port, from accept to close.
    gauge web_connections,
    /// WebSocket sessions opened (upgrades answered with `101`).
    counter ws_sessions,
    /// Requests on the web port refused with an HTTP error status.
    counter web_refusals,
    /// WebSocket sessions the broker closed for a protocol violation
    /// (close codes 1002, 1003, 1007, 1009).
    counter ws_protocol_closes,
    /// SSE streams opened: authenticated and subscribed, their `200`
    /// queued.
    counter sse_streams,
    /// Messages sent to SSE streams as events.
    counter sse_events,
    /// Messages an SSE stream could not carry: not UTF-8 without
    /// `encoding=base64`, larger than 64 KiB, or too many before the
    /// stream opened. The stream's event ids skip them.
    counter sse_dropped,
    /// Connections accepted since start.
    counter connections_accepted,
    /// Connections refused with `ERR server full`.
    counter connections_refused,
    /// Accepts that failed, for instance with the open-file limit reached.
    counter accept_failures,
    /// `PUB` frames accepted.
    counter msgs_in,
    /// Bytes read from client sockets (for TLS connections, the plaintext).
    counter bytes_in,
    /// `MSG` frames queued to subscribers.
    counter msgs_out,
    /// Bytes written to client sockets (for TLS connections, the
    /// plaintext).
    counter bytes_out,
    /// Messages dropped on lossy subscriptions (reported with `DROPPED`).
    counter msgs_dropped,
    /// Of those, dropped because the connection had `max_pending` queued.
    counter drops_max_pending,
    /// Of those, dropped (new or already queued) to keep the core within
    /// its pending budget.
    counter drops_budget,
    /// Messages no member of a queue group received, once per group: the
    /// core drawn for the group had no member left when the message
    /// arrived (the member drawn left while it was on its way), and no
    /// other member could be drawn: none on another core that it knew of
    /// and could hand the message to at once, or the message had been
    /// drawn again already.
    counter queue_undeliverable,
    /// Messages handed on to another core for a queue group, once per
    /// group: the core drawn for the group had no member left when the
    /// message arrived, and drew again among the other cores' members.
    counter queue_redrawn,
    /// Connections closed because they could not keep up (all causes).
    counter slow_consumer_closes,
    /// Of those, closed with `max_pending` bytes queued.
    counter closes_max_pending,
    /// Of those, closed because their socket took nothing for
    /// `write_deadline_ms` while output was pending.
    counter closes_write_deadline,
    /// Of those, closed to keep the core within its pending budget.
    counter closes_budget,
    /// Connections closed because the budget could not hold a frame they
    /// were sending (`ERR` out of memory).
    counter input_budget_closes,
    /// Connections closed for silence past the idle limit.
    counter stale_closes,
    /// Connections closed for not sending `HELLO` in time.
    counter handshake_timeouts,
    /// Frames refused with an `ERR` code, fatal or not.
    counter protocol_errors,
    /// Times a publisher's reads were held back by a full cross-core queue.
    counter publisher_stalls,
    /// Times a publisher (or the receiver of another core's publishes) was
    /// held back for a subscriber that keeps reading and had most of
    /// `max_pending` queued (the fast-producer hold).
    counter publisher_holds,
    /// Publish records sent to other cores.
    counter cross_core_sent,
    /// Publish records received from other cores.
    counter cross_core_received,
    /// Batches handed to cross-core channels.
    counter cross_core_batches,
    /// Connection tasks that panicked (caught; the connection was closed).
    counter task_panics,
    /// `HELLO`s refused with `ERR auth failed` (throttled ones included).
    counter auth_failures,
    /// Of those, refused unchecked: the source address had failed too
    /// often lately.
    counter auth_throttled,
    /// `PUB`s and `SUB`s refused with `ERR permission denied`.
    counter permission_denied,
    /// Messages not delivered to a wildcard subscription because a deny
    /// rule of its user covers their topic.
    counter deliveries_denied,
    /// Subscriptions removed by a reload that took their permission away.
    counter subscriptions_revoked,
    /// Times a publisher over its user's publish rate had its reads paused
    /// until its bucket refilled.
    counter publish_rate_waits,
    /// Connections refused for their user's `max_connections`.
    counter user_connection_refusals,
    /// Sessions ended because the JWT they logged in with expired.
    counter credentials_expired,
    /// TLS handshakes completed.
    counter tls_handshakes,
    /// TLS handshakes that failed: not TLS, timed out, abandoned by the
    /// client, or a client certificate refused.
    counter tls_handshake_failures,
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

/// Most buckets a [`Histogram`] has, the last (`+Inf`) included.
const MAX_BUCKETS: usize = 16;

/// A distribution one core writes: a count per bucket and the sum of the
/// values, updated like the counters (load and store, no locked
/// instruction).
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Upper bounds of the buckets, ascending; one more bucket holds what
    /// is above the last.
    bounds: &'static [u64],
    counts: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.len() < MAX_BUCKETS && bounds.windows(2).all(|w| w[0] < w[1]));
        Self { bounds, counts: Default::default(), sum: AtomicU64::new(0) }
    }

    /// Counts `n` observations of `value`.
    #[inline]
    pub(crate) fn observe(&self, value: u64, n: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        CoreCounters::add(&self.counts[bucket], n);
        CoreCounters::add(&self.sum, value.wrapping_mul(n));
    }

    /// Reads the buckets.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts = self.counts[..=self.bounds.len()].iter().map(|c| c.load(Relaxed)).collect();
        HistogramSnapshot { bounds: self.bounds, counts, sum: self.sum.load(Relaxed) }
    }
}

/// A copy of a histogram: one core's, or the sum over cores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets but the last, ascending.
    pub bounds: &'static [u64],
    /// Observations per bucket (not cumulative); one more than `bounds`.
    pub counts: Vec<u64>,
    /// The sum of the values observed.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Empty buckets with these bounds.
    pub fn empty(bounds: &'static [u64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0 }
    }

    /// Counts `n` observations of `value`, for distributions taken from a
    /// snapshot rather than kept.
    pub fn observe(&mut self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += 1;
        self.sum += value;
    }

    /// Adds another core's buckets (same bounds).
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Bucket bounds of the bytes one `sendmsg` wrote.
pub const WRITE_BYTES_BUCKETS: &[u64] =
    &[64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20];
/// Bucket bounds of the subscribers one message reached on a core.
pub const FANOUT_BUCKETS: &[u64] = &[1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000];
/// Bucket bounds of the bytes queued for one connection.
pub const PENDING_BYTES_BUCKETS: &[u64] =
    &[0, 1 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20];

/// The distributions a core keeps as it works.
#[derive(Debug)]
pub(crate) struct Histograms {
    /// Bytes written by each `sendmsg` to a client.
    pub write_bytes: Histogram,
    /// Subscribers on this core each published message reached.
    pub fanout: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            write_bytes: Histogram::new(WRITE_BYTES_BUCKETS),
            fanout: Histogram::new(FANOUT_BUCKETS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each counter's help (the `# HELP` of `/metrics`) is its doc as plain
    /// text: no attribute syntax or string quotes left from `stringify!`.
    #[test]
    fn every_counter_has_its_doc_as_help() {
        let described = Snapshot::default().described();
        assert_eq!(described.len(), Snapshot::default().fields().len());
        for d in described {
            let help = d.help();
            assert!(help.len() > 10, "{}: {help:?}", d.name);
            assert!(!help.starts_with("doc") && !help.contains('"'), "{}: {help:?}", d.name);
            assert!(!help.starts_with("r ") && !help.starts_with(' '), "{}: {help:?}", d.name);
        }
        let queued = Snapshot::default().described();
        let pending = queued.iter().find(|d| d.name == "pending_bytes").expect("listed");
        assert_eq!(pending.help(), "Bytes queued for clients and not yet written.");
        assert_eq!(pending.kind, Kind::Gauge);
    }
}
