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
//!   shutdown).
//! - [`config`]: every setting and limit, from flags and TOML.
//! - [`address`]: the `HOST:PORT` to listen on and its resolution.
//! - `listener`: the cores' listeners, and the check that nobody else
//!   listens on the address.
//! - `memlock`: the locked memory glommio needs.
//! - `server`: what runs on a core: accept loop, sweeper (heartbeats and
//!   timeouts), cross-core forwarders and receivers, shutdown sequence.
//! - `connection`: the task that owns one socket: flush, read, apply.
//! - `cmd`: one file per client frame (`HELLO`, `PING`, `SUB`, `UNSUB`,
//!   `PUB`).
//! - `shard`: the state of one core and the ways a connection leaves.
//! - `slot`: a connection's shared state and lifecycle.
//! - `fanout`: copying a message into subscribers' output queues.
//! - `pressure`: the named policies when something is full (`max_pending`,
//!   write deadline, the per-core pending budget).
//! - `mesh`: records, staging and the barrier between cores.
//! - `link`: the bounded links that carry batches between cores.
//! - `topics`: the subscription table.
//! - `memory`: the per-core chunk pool and pending budget, large input
//!   buffers.
//! - `queue`: byte queues in chunks (a connection's output, its leftover
//!   input).
//! - `splice`: messages an output queue sends from shared chunks.
//! - `prefetch`: cache-line hints for the fan-out loop.
//! - [`counters`]: live counters.
//! - `probe`: marks the broker's own code for allocation accounting.
//!
//! The wire protocol lives in the `corecast-proto` crate (`proto/`), which
//! does no I/O; the Rust clients that speak it are the `corecast-client`
//! crate (`client/`).

pub mod address;
pub mod broker;
mod cmd;
pub mod config;
mod connection;
mod coreset;
pub mod counters;
mod fanout;
mod link;
mod listener;
mod memlock;
mod memory;
mod mesh;
mod prefetch;
mod pressure;
#[doc(hidden)]
pub mod probe;
mod queue;
mod server;
mod shard;
mod shutdown;
mod slot;
mod splice;
mod topics;

pub use address::ListenAddr;
pub use broker::{Broker, BrokerError};
pub use config::{Args, Config};
pub use counters::{Counters, Snapshot};
pub use shutdown::ShutdownHandle;
