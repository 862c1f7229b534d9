//! Who a client is and what it may do.
//!
//! - `config`: users, permissions, limits and JWT keys as the TOML file
//!   writes them.
//! - `permissions`: a user's rules compiled for the checks on `PUB`, `SUB`
//!   and delivery.
//! - `verify`: [`Authenticator`], the checks of a `HELLO`'s credential,
//!   built once per configuration and shared by the cores.
//! - `users`: the configured users compiled and indexed by name, token
//!   digest and TLS subject.
//! - `password`: argon2 checks as jobs to run off the cores.
//! - `jwt`: JWT keys, signatures and claims.
//! - `throttle`: failed attempts rate-limited per source address.
//! - `identity`: who a client turned out to be; `failure`: why not.
//! - `hash`: the hashed forms of passwords and tokens the config holds.

pub mod config;
mod failure;
mod hash;
mod identity;
mod jwt;
mod password;
pub(crate) mod permissions;
mod throttle;
mod users;
mod verify;

pub use config::{AllowResponses, JwtConfig, Permissions, Rules, UserConfig, UserLimits};
pub use failure::{AuthFailure, ANSWER};
pub use hash::{hash_password, hash_token};
pub use identity::{CredentialKind, Identity};
pub use password::PasswordJob;
pub use verify::{Authenticator, Begin, Presented};
