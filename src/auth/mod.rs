//! Who a client is and what it may do.
//!
//! - `config`: users, permissions, limits and JWT keys as the TOML file
//!   writes them.
//! - `permissions`: a user's rules compiled for the checks on `PUB`, `SUB`
//!   and delivery.
//! - `grant`: a user's rules on one core, with the answers cached per topic.
//! - `replies`: the reply-tos `allow_responses` lets a connection answer.
//! - `rate`: a connection's publish rate (token buckets).
//! - `census`: open connections per user, for `max_connections`.
//! - `access`: all of the above for one connection, held by its slot.
//! - `verifier`: the threads that check passwords off the cores.

pub(crate) mod access;
pub(crate) mod census;
pub mod config;
pub(crate) mod grant;
pub(crate) mod permissions;
pub(crate) mod rate;
pub(crate) mod replies;
pub(crate) mod verifier;

pub use config::{AllowResponses, JwtConfig, Permissions, Rules, UserConfig, UserLimits};
