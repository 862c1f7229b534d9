//! A cluster of nodes over Redis: what leaves this node for the others and
//! what arrives from them.
//!
//! The design, with its reasons and costs, is `docs/design/cluster.md`.
//! In short: a thread of its own (the bridge) is one more peer of the
//! cores' mesh, over the same bounded links the cores use among
//! themselves. It tells the cores the union of the other nodes' interest as
//! if it were one more core, so `route::publish` stages a copy for it
//! exactly when another node wants the message; it sends each such copy to
//! the inbox channel of every node that wants it, and hands what arrives
//! in its own inbox to its cores.
//!
//! - [`config`]: the `[cluster]` section.
//! - `wire`: the frames and records on Redis (no I/O, no clock).
//! - `interest`: this node's interest, aggregated over its cores.
//! - `view`: the other nodes' interest, and which nodes a topic reaches.
//! - `bridge`: the thread, its tasks, and the links to the cores.
//! - `redis`: the connections to Redis, heartbeats and snapshots.

mod bridge;
pub mod config;
mod interest;
mod names;
mod peers;
mod redis;
pub(crate) mod run;
mod wire;

pub use config::{Backpressure, ClusterConfig, Mode, RedisTls};

use crate::counters::counters;

counters! {
    /// The cluster bridge's counters, written only by its thread.
    ClusterCounters {},
    /// A copy of the cluster bridge's counters.
    ClusterSnapshot;
    /// 1 while the node is connected to Redis, 0 while it is cut off.
    gauge connected,
    /// Other nodes this node sees alive.
    gauge peers,
    /// Distinct patterns (with queue groups) that other nodes want.
    gauge remote_patterns,
    /// Bytes sent to Redis and not yet answered.
    gauge out_window_bytes,
    /// Bytes received from Redis and not yet handed to the cores.
    gauge in_queue_bytes,
    /// Milliseconds since the node lost Redis (0 while connected), as of
    /// the last heartbeat tick.
    gauge outage_ms,
    /// Message copies sent to other nodes: one per interested node.
    counter out_msgs,
    /// Redis publishes carrying them (one carries many under load).
    counter out_frames,
    /// Bytes of those publishes.
    counter out_bytes,
    /// Copies for other nodes dropped while Redis was unreachable.
    counter out_dropped_down,
    /// Copies dropped because the window to Redis was full
    /// (`backpressure = "drop"`).
    counter out_dropped_full,
    /// Copies dropped because they exceed the receiving node's `max_frame`.
    counter out_dropped_too_large,
    /// Copies dropped because their node left before they were sent.
    counter out_dropped_peer_gone,
    /// Redis publishes that reached no subscriber: their node was gone.
    counter out_unreceived,
    /// Times the bridge stopped taking the cores' copies for a full window
    /// (`backpressure = "hold"`): their publishers waited.
    counter holds,
    /// Messages received from other nodes.
    counter in_msgs,
    /// Redis messages carrying them.
    counter in_frames,
    /// Redis messages from other nodes that never arrived, counted from
    /// the gaps in their sequence numbers.
    counter in_lost_frames,
    /// Messages those lost Redis messages carried.
    counter in_lost_msgs,
    /// Redis messages dropped on arrival because the queue to the cores
    /// was full.
    counter in_dropped_full,
    /// Redis messages dropped because they were addressed to an earlier
    /// run of this node, or came from itself.
    counter in_dropped_stale,
    /// Redis messages dropped because they did not decode.
    counter in_dropped_malformed,
    /// Queue group messages that arrived for a group with no member left
    /// on this node.
    counter queue_undeliverable,
    /// Times a path to another node waited past `command_timeout` for the
    /// credit its receiver grants, and was given some (the grant was lost).
    counter credit_resets,
    /// Times the node lost Redis.
    counter disconnects,
    /// Times it connected again.
    counter reconnects,
    /// Times it read another node's interest again from its snapshot.
    counter resyncs,
    /// Nodes that joined (or came back) as seen from here.
    counter peers_joined,
    /// Nodes that left, said goodbye or went silent past the TTL.
    counter peers_expired,
    /// Transactions that wrote this node's interest snapshot to Redis.
    counter snapshot_writes,
}

impl ClusterSnapshot {
    /// Why `/healthz` reports the node degraded: cut off from Redis for
    /// `grace_ms` or more.
    pub fn degraded(&self, grace_ms: u64) -> Option<String> {
        (self.connected == 0 && self.outage_ms >= grace_ms)
            .then(|| format!("cluster: cut off from Redis for {} ms", self.outage_ms))
    }
}
