//! Typed credentials in the token field of `HELLO` (`PROTOCOL.md`, section
//! 14).
//!
//! A `HELLO` with [`HELLO_FLAG_CREDENTIAL`](crate::opcode::HELLO_FLAG_CREDENTIAL)
//! (defined only together with the 1.1 bit) carries in its token field one
//! credential as text: a kind, one space, and the kind's value.
//!
//! | Kind | Token field |
//! |------|-------------|
//! | [`Credential::Password`] | `password <user>:<password>` |
//! | [`Credential::Bearer`] | `bearer <token>` |
//! | [`Credential::Jwt`] | `jwt <compact JWT>` |
//!
//! Without the flag the token field is a plain shared token, as in version
//! 1, and this module does not apply.
//!
//! ```
//! use corecast_proto::Credential;
//!
//! let password = Credential::Password { user: "alice", password: b"s3:cr3t" };
//! let token = password.to_vec();
//! assert_eq!(token, b"password alice:s3:cr3t");
//! assert_eq!(Credential::parse(&token), Some(password));
//! assert_eq!(Credential::parse(b"basic alice:pw"), None, "an unknown kind");
//! ```

use std::fmt;

use bytes::BufMut;

/// One typed credential, borrowed from the token field of a `HELLO` (or
/// from the application, to encode one).
///
/// Its `Debug` output names the kind and the user, never a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `password <user>:<password>`: a user name and its password. The
    /// server checks the password against the user's argon2 hash.
    Password {
        /// The user name: non-empty UTF-8 without `:`.
        user: &'a str,
        /// The password: any bytes (possibly `:` and empty), up to the end
        /// of the token field.
        password: &'a [u8],
    },
    /// `bearer <token>`: an opaque token, any non-empty bytes. The server
    /// checks its SHA-256 against the one configured for a user.
    Bearer(&'a [u8]),
    /// `jwt <compact JWT>`: a signed JSON Web Token in compact form
    /// (non-empty UTF-8). The server checks its signature and times, and
    /// takes the user from its `sub` claim.
    Jwt(&'a str),
}

impl<'a> Credential<'a> {
    /// The kind `password`.
    pub const PASSWORD: &'static str = "password";
    /// The kind `bearer`.
    pub const BEARER: &'static str = "bearer";
    /// The kind `jwt`.
    pub const JWT: &'static str = "jwt";

    /// Reads the token field of a `HELLO` that has the credential flag.
    ///
    /// `None` when it is malformed: no space after the kind, a kind other
    /// than `password`, `bearer` and `jwt` (kinds are lowercase and compared
    /// exactly), a password credential without `:` or with an empty or
    /// non-UTF-8 user, an empty bearer token, or a JWT that is empty or not
    /// UTF-8. A server answers a malformed credential as it answers a wrong
    /// one (*auth failed*, 7, fatal).
    pub fn parse(token: &'a [u8]) -> Option<Self> {
        let space = token.iter().position(|&b| b == b' ')?;
        let (kind, value) = (&token[..space], &token[space + 1..]);
        match kind {
            b"password" => {
                let colon = value.iter().position(|&b| b == b':')?;
                let user = std::str::from_utf8(&value[..colon]).ok()?;
                if user.is_empty() {
                    return None;
                }
                Some(Self::Password { user, password: &value[colon + 1..] })
            }
            b"bearer" if !value.is_empty() => Some(Self::Bearer(value)),
            b"jwt" if !value.is_empty() => Some(Self::Jwt(std::str::from_utf8(value).ok()?)),
            _ => None,
        }
    }

    /// The kind, as written in the token field: `password`, `bearer` or
    /// `jwt`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Password { .. } => Self::PASSWORD,
            Self::Bearer(_) => Self::BEARER,
            Self::Jwt(_) => Self::JWT,
        }
    }

    /// The user this credential names by itself: the user of a password
    /// credential; `None` for the others (a bearer token's user is the one
    /// it is configured for, a JWT's is its `sub` claim).
    pub fn user(&self) -> Option<&'a str> {
        match *self {
            Self::Password { user, .. } => Some(user),
            Self::Bearer(_) | Self::Jwt(_) => None,
        }
    }

    /// Bytes the credential takes in the token field. A `HELLO` holds at
    /// most 65535.
    pub fn encoded_len(&self) -> usize {
        self.kind().len()
            + 1
            + match self {
                Self::Password { user, password } => user.len() + 1 + password.len(),
                Self::Bearer(token) => token.len(),
                Self::Jwt(jwt) => jwt.len(),
            }
    }

    /// Writes the credential as the token field holds it (without the
    /// field's length prefix).
    ///
    /// The encoding of a credential that [`Credential::parse`] would refuse
    /// (an empty user or bearer token, a user with `:`) is written all the
    /// same, and the server refuses it.
    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_slice(self.kind().as_bytes());
        dst.put_u8(b' ');
        match self {
            Self::Password { user, password } => {
                dst.put_slice(user.as_bytes());
                dst.put_u8(b':');
                dst.put_slice(password);
            }
            Self::Bearer(token) => dst.put_slice(token),
            Self::Jwt(jwt) => dst.put_slice(jwt.as_bytes()),
        }
    }

    /// The credential as the token field holds it, in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.put(&mut out);
        out
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password { user, password } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &format_args!("<{} bytes>", password.len()))
                .finish(),
            Self::Bearer(token) => {
                f.debug_tuple("Bearer").field(&format_args!("<{} bytes>", token.len())).finish()
            }
            Self::Jwt(jwt) => {
                f.debug_tuple("Jwt").field(&format_args!("<{} bytes>", jwt.len())).finish()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_round_trips() {
        let cases = [
            (Credential::Password { user: "alice", password: b"pw" }, &b"password alice:pw"[..]),
            (Credential::Password { user: "bob", password: b"a:b c" }, b"password bob:a:b c"),
            (Credential::Password { user: "bob", password: b"" }, b"password bob:"),
            (Credential::Password { user: "jos\u{e9}", password: &[0xff, 0] }, &{
                let mut v = b"password jos\xc3\xa9:".to_vec();
                v.extend([0xff, 0]);
                v
            }),
            (Credential::Bearer(b"tok en"), b"bearer tok en"),
            (Credential::Bearer(&[0x00, 0xff]), b"bearer \x00\xff"),
            (Credential::Jwt("e30.e30.sig"), b"jwt e30.e30.sig"),
        ];
        for (credential, bytes) in cases {
            assert_eq!(credential.to_vec(), bytes, "{credential:?}");
            assert_eq!(credential.encoded_len(), bytes.len(), "{credential:?}");
            assert_eq!(Credential::parse(bytes), Some(credential), "{bytes:?}");
        }
    }

    #[test]
    fn malformed_credentials_parse_to_none() {
        let cases: [&[u8]; 14] = [
            b"",
            b"password",
            b"passwordalice:pw",
            b"password alice",
            b"password :pw",
            b"password \xff:pw",
            b"Password alice:pw",
            b"basic alice:pw",
            b" alice:pw",
            b"bearer ",
            b"bearer",
            b"jwt ",
            b"jwt \xff.e30.sig",
            b"token abc",
        ];
        for bytes in cases {
            assert_eq!(Credential::parse(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn kind_and_user() {
        let password = Credential::Password { user: "u", password: b"p" };
        assert_eq!((password.kind(), password.user()), ("password", Some("u")));
        assert_eq!(
            (Credential::Bearer(b"t").kind(), Credential::Bearer(b"t").user()),
            ("bearer", None)
        );
        assert_eq!(Credential::Jwt("j").kind(), "jwt");
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!(
            "{:?} {:?} {:?}",
            Credential::Password { user: "alice", password: b"hunter2" },
            Credential::Bearer(b"opaque-secret"),
            Credential::Jwt("e30.e30.signature"),
        );
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["hunter2", "opaque-secret", "signature"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
