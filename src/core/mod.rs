//! What runs on one core, and the state it keeps.
//!
//! - [`run`]: starts a core's tasks and runs it until shutdown.
//! - [`accept`]: the accept loop, a slot and a task per connection.
//! - [`connection`]: the task that owns one socket: flush, read, apply.
//! - [`slot`]: a connection's shared state and its lifecycle.
//! - [`shard`]: the state of one core and the ways a connection leaves.
//! - [`pressure`]: the named policies when something is full.
//! - [`sweep`]: heartbeats, timeouts, drain deadlines, pool trimming.
//! - [`unsent`]: how much unsent output the kernel holds per connection.
//! - [`shutdown`]: the signal and the sequence that ends a core.

pub(crate) mod accept;
pub(crate) mod closed;
pub(crate) mod connection;
pub(crate) mod inspect;
pub(crate) mod lame_duck;
pub(crate) mod pressure;
pub(crate) mod run;
pub(crate) mod shard;
pub(crate) mod shutdown;
pub(crate) mod slot;
pub(crate) mod sweep;
pub(crate) mod unsent;
