//! Who a connection turned out to be: the outcome of a successful `HELLO`,
//! kept by the connection for its checks and for `/connz`.

use std::{fmt, sync::Arc};

use super::{config::UserLimits, permissions::Compiled};

/// The credential a connection proved itself with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// None: the broker asks for none.
    None,
    /// The `HELLO` token field: the legacy `auth_token`, or a user's bearer
    /// token sent by a client that has no credential flag.
    Token,
    /// A user name and password.
    Password,
    /// A user's bearer token, flagged as such.
    Bearer,
    /// A signed JWT.
    Jwt,
    /// A TLS client certificate whose subject names a user.
    Tls,
}

impl CredentialKind {
    /// The name `/connz` shows: `none`, `token`, `password`, `bearer`,
    /// `jwt` or `tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token => "token",
            Self::Password => "password",
            Self::Bearer => "bearer",
            Self::Jwt => "jwt",
            Self::Tls => "tls",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated client: its name, what it may do, its limits. Cheap to
/// clone (the name and the rules are shared).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user's name; none for an anonymous client (no user configured,
    /// or the legacy `auth_token`).
    user: Option<Arc<str>>,
    /// The rules every `PUB` and `SUB` of the connection is checked
    /// against, shared with the user's other connections.
    permissions: Arc<Compiled>,
    /// The user's limits, copied: they are a few numbers.
    limits: UserLimits,
    /// How the client proved who it is, for `/connz` and the log.
    kind: CredentialKind,
    /// A JWT's `exp`: when the connection's right to stay ends.
    expires_unix: Option<u64>,
}

impl Identity {
    pub(crate) fn new(
        user: Option<Arc<str>>,
        permissions: Arc<Compiled>,
        limits: UserLimits,
        kind: CredentialKind,
    ) -> Self {
        Self { user, permissions, limits, kind, expires_unix: None }
    }

    /// The same identity, ending at `exp` (seconds since the Unix epoch).
    pub(crate) fn expiring(self, exp: u64) -> Self {
        Self { expires_unix: Some(exp), ..self }
    }

    /// The user's name; `None` = anonymous (no users configured, or the
    /// legacy `auth_token`).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The user's name, shared.
    pub(crate) fn user_name(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// The compiled rules of the user. Crate-private because the compiled
    /// form is: the connection's checks are the only readers.
    pub(crate) fn permissions(&self) -> &Arc<Compiled> {
        &self.permissions
    }

    /// The user's limits; all `None` for an anonymous client.
    pub fn limits(&self) -> UserLimits {
        self.limits
    }

    /// The credential the client proved itself with.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// A JWT's `exp`, seconds since the Unix epoch; `None` for credentials
    /// that do not expire.
    pub fn expires_unix(&self) -> Option<u64> {
        self.expires_unix
    }
}
