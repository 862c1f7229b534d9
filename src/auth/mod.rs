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
//! - `verify`: [`Authenticator`], the checks of a `HELLO`'s credential,
//!   built once per configuration and shared by the cores.
//! - `users`: the configured users compiled and indexed by name, token
//!   digest and TLS subject.
//! - `password`: argon2 checks as jobs to run off the cores.
//! - `jwt`: JWT keys, signatures and claims.
//! - `throttle`: failed attempts rate-limited per source address.
//! - `identity`: who a client turned out to be; `failure`: why not.
//! - `hash`: the hashed forms of passwords and tokens the config holds.

pub(crate) mod access;
pub(crate) mod census;
pub mod config;
mod failure;
pub(crate) mod grant;
mod hash;
mod identity;
mod jwt;
mod password;
pub(crate) mod permissions;
pub(crate) mod rate;
pub(crate) mod replies;
mod throttle;
mod users;
pub(crate) mod verifier;
mod verify;

/// A tag of the user `name` (0 for a client without one): what a request
/// carries to say who asked, so that `allow_responses` never lets a user
/// answer its own requests. FNV-1a; distinct users that collide only lose
/// each other's permits.
pub(crate) fn principal(name: Option<&str>) -> u64 {
    name.map_or(0, |name| fnv64(name.as_bytes()) | 1)
}

/// FNV-1a over `bytes`: a tag, not a secret.
pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the cores share to let clients in, beyond the authenticator in
/// force: each user's open connections, and the threads that check
/// passwords. Lives as long as the broker.
#[derive(Debug)]
pub(crate) struct Logins {
    pub census: std::sync::Arc<census::Census>,
    pub verifier: verifier::Verifier,
}

impl Logins {
    /// Starts the password threads: one per two cores, at least one.
    pub(crate) fn start(cores: usize) -> std::io::Result<Self> {
        let verifier = verifier::Verifier::start(cores.div_ceil(2))?;
        Ok(Self { census: std::sync::Arc::default(), verifier })
    }
}

pub use config::{AllowResponses, JwtConfig, Permissions, Rules, UserConfig, UserLimits};
pub use failure::{AuthFailure, ANSWER};
pub use hash::{hash_password, hash_token};
pub use identity::{CredentialKind, Identity};
pub use password::PasswordJob;
pub use verify::{Authenticator, Begin, Presented};
