//! corecast: a thread-per-core publish/subscribe broker over raw TCP.
//!
//! Each core runs one pinned glommio executor with its own listener
//! (`SO_REUSEPORT`), its own slab of connection slots and its own topic
//! table. Cores share nothing but bounded channels. Every connection, buffer
//! and queue is bounded, and everything a connection holds goes back the
//! moment it leaves.
//!
//! The map of the crate, from the outside in:
//!
//! - [`broker`]: the embedding API ([`Broker::start`], address, counters,
//!   reload, lame duck, shutdown).
//! - [`config`]: every setting and limit, from flags and TOML.
//! - [`address`]: the `HOST:PORT` to listen on and its resolution.
//! - `listener`: the cores' listeners, and the check that nobody else
//!   listens on the address.
//! - `memlock`: the locked memory glommio needs.
//! - `core`: what runs on one core and the state it keeps.
//!   - `core::run`: a core's tasks, started and run until shutdown.
//!   - `core::accept`: the accept loop; a slot and a task per connection.
//!   - `core::connection`: the task that owns one socket: flush, read,
//!     apply.
//!   - `core::slot`: a connection's shared state and lifecycle, changed
//!     only through its own methods.
//!   - `core::shard`: the state of one core and the ways a connection
//!     leaves.
//!   - `core::pressure`: the named policies when something is full
//!     (`max_pending`, write deadline, the per-core pending budget).
//!   - `core::sweep`: heartbeats, timeouts and drain deadlines.
//!   - `core::shutdown`: the shutdown and lame-duck signal and the
//!     sequence that ends a core; `core::lame_duck`: sending the clients
//!     away over time.
//!   - `core::inspect`: the inbox through which the monitoring port asks a
//!     core about its connections and subscriptions, and reloads reach it.
//!   - `core::closed`: the record of closed connections and why.
//! - `cmd`: one file per client frame (`HELLO`, which negotiates version
//!   1.1, `PING`, `SUB`, `UNSUB`, `PUB` and `HPUB`, `STATS`).
//! - `route`: which subscribers a message reaches. Every publish, a
//!   client's or another core's, goes through `route::publish`: topic
//!   lookup, the draw of queue group members, local fan-out, staging for
//!   other cores, reaping the subscribers cut on the way.
//!   - `route::subs`: subscribe, unsubscribe, leave with every
//!     subscription, and the interest records that follow.
//!   - `route::topics`: the subscription table: for each pattern, local
//!     subscriptions, other cores' interest and queue groups, found with
//!     one lookup per publish.
//!   - `route::sublist`: the index behind it, with `*` and `>` patterns
//!     and a bounded cache of merged lookups.
//!   - `route::queue`: one member of each queue group per message, drawn
//!     across cores, and drawn once more when the core drawn has no member
//!     left.
//!   - `route::fanout`: copying a message into subscribers' output queues.
//! - `mesh`: traffic between cores.
//!   - `mesh::record`: the records cores send each other, and what a core
//!     does with each one that arrives.
//!   - `mesh::staging`: records batched per peer.
//!   - `mesh::barrier`: a `PING`'s `PONG` waits until everything sent
//!     before it took effect on every core.
//!   - `mesh::link`: the bounded links that carry batches between cores.
//!   - `mesh::tasks`: per peer, the forwarder and the receiver.
//!   - `mesh::coreset`: a set of cores.
//! - `mem`: a core's memory for connection data.
//!   - `mem::pool`: the per-core chunk pool and pending budget, large
//!     input buffers.
//!   - `mem::queue`: byte queues in chunks (a connection's output, its
//!     leftover input).
//!   - `mem::splice`: messages an output queue sends from shared chunks.
//!   - `mem::prefetch`: cache-line hints for the fan-out loop.
//! - [`auth`]: who a client is and what it may do: users, passwords,
//!   bearer tokens, JWTs and certificate subjects checked at `HELLO`
//!   (passwords on threads of their own), the failure throttle, compiled
//!   permissions with a per-core cache of answers, `allow_responses`
//!   permits, per-user limits, and what a reload re-checks
//!   (`cmd::recheck`).
//! - [`tls`]: TLS on the second port, rustls driven by the connection task.
//! - [`counters`]: live counters and histograms.
//! - `monitor`: the HTTP monitoring port on a thread of its own
//!   (`/metrics`, `/healthz`, `/stats`, `/connz`, `/subsz`).
//! - `probe`: marks the broker's own code for allocation accounting.
//!
//! The wire protocol lives in the `corecast-proto` crate (`proto/`), which
//! does no I/O; the Rust clients that speak it are the `corecast-client`
//! crate (`client/`).

pub mod address;
pub mod auth;
pub mod broker;
pub mod cluster;
mod cmd;
pub mod config;
mod core;
pub mod counters;
mod listener;
mod mem;
mod memlock;
mod mesh;
mod monitor;
#[doc(hidden)]
pub mod probe;
mod route;
pub mod tls;
pub mod web;

pub use crate::broker::{Reloaded, ShutdownHandle};
pub use address::ListenAddr;
pub use broker::{Broker, BrokerError};
pub use config::{Args, Config};
pub use counters::{Counters, Snapshot};
