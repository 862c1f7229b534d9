//! Routing: which subscribers a published message reaches, on this core
//! and on the others.
//!
//! - [`topics`]: one core's subscription table.
//! - [`fanout`]: copying a message into subscribers' output queues.

pub(crate) mod fanout;
pub(crate) mod topics;
