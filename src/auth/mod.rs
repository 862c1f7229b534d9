//! Who a client is and what it may do.
//!
//! - `config`: users, permissions, limits and JWT keys as the TOML file
//!   writes them.
//! - `permissions`: a user's rules compiled for the checks on `PUB`, `SUB`
//!   and delivery.

pub mod config;
pub(crate) mod permissions;

pub use config::{AllowResponses, JwtConfig, Permissions, Rules, UserConfig, UserLimits};
