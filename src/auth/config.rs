//! The security settings as they are written in the TOML file: users,
//! their credentials, permissions and limits, and the keys that verify
//! JWTs. [`super::Authenticator`] compiles them into what a core checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `[[users]]` entry: a name, the credentials that prove it, what it
/// may do and how much.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// The user's name: what `HELLO`'s `password` credential names, a
    /// JWT's `sub`, and what operators see in `/connz`.
    pub name: String,
    /// An argon2 hash in PHC form (`$argon2id$v=19$...`), as
    /// `corecast-cli hash-password` prints it; never the password itself.
    pub password: Option<String>,
    /// The SHA-256 of a bearer token, in hex, as `corecast-cli hash-token`
    /// prints it: the config never holds a secret that works as it is.
    pub token_sha256: Option<String>,
    /// The subject of a TLS client certificate (RFC 4514, `CN=svc-a,O=corp`)
    /// that authenticates as this user on the TLS port.
    pub tls_subject: Option<String>,
    /// What the user may publish and subscribe to; none = the
    /// `default_permissions`.
    pub permissions: Option<Permissions>,
    /// How much the user may hold and send.
    pub limits: UserLimits,
}

/// Publish and subscribe rules, and the replies allowed outside them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permissions {
    /// Topics (or patterns) the user may publish to.
    pub publish: Rules,
    /// Patterns the user may subscribe to, queue subscriptions included.
    pub subscribe: Rules,
    /// Replies to requests the user received, even outside `publish`.
    pub allow_responses: Option<AllowResponses>,
}

/// An allow list and a deny list of topics or patterns (`*`, `>`); deny
/// wins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Only these; none = everything not denied.
    pub allow: Option<Vec<String>>,
    /// Never these, whatever `allow` says.
    pub deny: Vec<String>,
}

/// How many replies a user may send to the reply-to of each request it
/// received, and for how long after it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowResponses {
    /// Replies per request received.
    pub max: u32,
    /// Time after the request within which the replies may go, ms.
    #[serde(rename = "window", alias = "window_ms", with = "crate::config::millis")]
    pub window_ms: u64,
}

impl Default for AllowResponses {
    fn default() -> Self {
        Self { max: 1, window_ms: 60_000 }
    }
}

/// Per-user limits; none = only the broker's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserLimits {
    /// Connections open at once as this user, across the cores.
    pub max_connections: Option<u32>,
    /// Subscriptions per connection of this user (at most the broker's
    /// `max_subscriptions`).
    pub max_subscriptions: Option<u32>,
    /// Messages a connection of this user may publish per second; past it
    /// the broker stops reading the connection until the bucket refills.
    pub publish_msgs_per_sec: Option<u32>,
    /// Bytes of published payload per second, likewise.
    pub publish_bytes_per_sec: Option<u64>,
}

/// The keys that verify JWTs presented in `HELLO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// A file holding the HS256 secret (its bytes, trailing newline
    /// removed).
    pub hs256_secret_file: Option<PathBuf>,
    /// A PEM file with the RS256 public key.
    pub rs256_public_key_file: Option<PathBuf>,
    /// A PEM file with the Ed25519 public key (`alg: EdDSA`).
    pub eddsa_public_key_file: Option<PathBuf>,
    /// `iss` the token must carry, if set.
    pub issuer: Option<String>,
    /// `aud` the token must carry, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, ms.
    #[serde(rename = "leeway", alias = "leeway_ms", with = "crate::config::millis")]
    pub leeway_ms: u64,
    /// Whether `sub` must name a configured user; otherwise an unknown
    /// `sub` gets the token's `corecast` claim, or `default_permissions`.
    pub require_known_user: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret_file: None,
            rs256_public_key_file: None,
            eddsa_public_key_file: None,
            issuer: None,
            audience: None,
            leeway_ms: 30_000,
            require_known_user: false,
        }
    }
}
