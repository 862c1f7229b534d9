//! A core's memory for connection data, and the queues built on it.
//!
//! - [`pool`]: fixed-size chunks (and blocks for shared bodies) carved
//!   from one mapping each, the per-core budget they are charged to, and
//!   large input buffers.
//! - [`queue`]: byte queues in chunks (a connection's output, its leftover
//!   input).
//! - [`splice`]: messages an output queue sends from shared chunks.
//! - [`prefetch`]: cache-line hints for the fan-out loop.

pub(crate) mod pool;
pub(crate) mod prefetch;
pub(crate) mod queue;
pub(crate) mod splice;

pub(crate) use pool::{Blob, Charge, ChunkId, Memory, PageBuf, CHUNK, REFCOUNT, WARM_KEEP};
