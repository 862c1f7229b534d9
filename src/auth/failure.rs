//! Why a `HELLO` was refused. The client is told only [`ANSWER`], whatever
//! the reason, so that it learns nothing (which users exist, which check
//! failed); the reason goes to the log and the counters.

/// The text of the `ERR` a refused client gets, for every [`AuthFailure`].
pub const ANSWER: &str = "auth failed";

/// Why a client could not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The name given with a password, a TLS subject, or (with
    /// `require_known_user`) a JWT's `sub` matches no user.
    #[error("unknown user")]
    UnknownUser,
    /// The password is not the user's, or the token is no user's (nor the
    /// legacy `auth_token`).
    #[error("wrong password or token")]
    WrongSecret,
    /// The JWT's `exp` has passed, leeway included.
    #[error("token expired")]
    Expired,
    /// The JWT's `nbf` has not come yet, leeway included.
    #[error("token not valid yet")]
    NotYetValid,
    /// The JWT's signature does not verify with the configured key of its
    /// algorithm.
    #[error("bad signature")]
    BadSignature,
    /// The JWT is not one the broker accepts; the text says why (shape,
    /// size, a missing or malformed claim, issuer, audience).
    #[error("bad token: {0}")]
    BadToken(String),
    /// The source address failed too often lately; nothing was verified.
    #[error("too many failures from this address")]
    Throttled,
    /// The credential flag was set but the credential did not parse.
    #[error("malformed credential")]
    Malformed,
    /// The broker requires a credential and the client gave none.
    #[error("no credential")]
    NoCredential,
    /// The credential is of a kind the configuration does not accept: a
    /// JWT with no `[jwt]` keys, or signed with an algorithm whose key is
    /// not configured.
    #[error("not allowed: {0}")]
    NotAllowed(String),
}
