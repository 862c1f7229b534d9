//! Traffic between cores: records, the per-peer staging that batches them,
//! the links that carry the batches, and the barrier that lets a `PING`
//! wait until earlier effects landed on every core.
//!
//! Each ordered pair of cores has one bounded link ([`link`]) carrying
//! `Bytes` batches. A batch is a run of records ([`record`]) in the order
//! they were staged ([`staging`]), so everything one core sends another
//! (publishes, interest changes, barriers) arrives in order. One task per
//! peer forwards the staging and one applies what arrives ([`tasks`]).
//! The [`barrier`] lets a `PONG` wait until earlier effects landed on every
//! core.

pub(crate) mod barrier;
pub(crate) mod coreset;
pub(crate) mod link;
pub(crate) mod record;
pub(crate) mod staging;
pub(crate) mod tasks;
