//! Who a client is and what it may do.
//!
//! - `config`: users, permissions, limits and JWT keys as the TOML file
//!   writes them.
//! - `permissions`: a user's rules compiled for the checks on `PUB`, `SUB`
//!   and delivery.
//! - `throttle`: failed attempts rate-limited per source address.
//! - `failure`: why a client could not authenticate.
//! - `hash`: the hashed forms of passwords and tokens the config holds.

pub mod config;
mod failure;
mod hash;
pub(crate) mod permissions;
mod throttle;

pub use config::{AllowResponses, JwtConfig, Permissions, Rules, UserConfig, UserLimits};
pub use failure::{AuthFailure, ANSWER};
pub use hash::{hash_password, hash_token};
