//! TLS settings ([`TlsOptions`]) and credentials ([`Credentials`]), as both
//! clients use them: the rustls configuration (ring provider) built once
//! when a client connects, the server name of an address, and what a failed
//! TLS handshake is told as.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use corecast_proto::Credential;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};

use crate::ClientError;

/// PEM data: a file to read when the client connects, or the bytes
/// themselves.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A file holding PEM sections, read when the client connects.
    File(PathBuf),
    /// PEM sections in memory.
    Bytes(Vec<u8>),
}

impl Pem {
    /// PEM read from the file at `path` when the client connects.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// PEM held in memory.
    pub fn bytes(pem: impl Into<Vec<u8>>) -> Self {
        Self::Bytes(pem.into())
    }

    /// What the PEM is, for error messages.
    fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("{}", path.display()),
            Self::Bytes(_) => "PEM in memory".into(),
        }
    }

    /// Every section of type `T`; at least one.
    fn all<T: PemObject>(&self, what: &str) -> Result<Vec<T>, ClientError> {
        let parsed: Result<Vec<T>, _> = match self {
            Self::File(path) => T::pem_file_iter(path)
                .map_err(|e| tls_config(format!("cannot read {what} {}: {e}", path.display())))?
                .collect(),
            Self::Bytes(bytes) => T::pem_slice_iter(bytes).collect(),
        };
        let items = parsed
            .map_err(|e| tls_config(format!("cannot read {what} {}: {e}", self.describe())))?;
        if items.is_empty() {
            return Err(tls_config(format!("no {what} in {}", self.describe())));
        }
        Ok(items)
    }

    /// The first section of type `T`.
    fn first<T: PemObject>(&self, what: &str) -> Result<T, ClientError> {
        let first = match self {
            Self::File(path) => T::from_pem_file(path),
            Self::Bytes(bytes) => T::from_pem_slice(bytes),
        };
        first.map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                tls_config(format!("no {what} in {}", self.describe()))
            }
            e => tls_config(format!("cannot read {what} {}: {e}", self.describe())),
        })
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Bytes(bytes) => write!(f, "Bytes(<{} bytes>)", bytes.len()),
        }
    }
}

impl From<PathBuf> for Pem {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl From<&Path> for Pem {
    fn from(path: &Path) -> Self {
        Self::File(path.to_owned())
    }
}

/// How a client connects with TLS ([`Options::tls`](crate::Options::tls)):
/// the certificate authorities it trusts, the certificate it presents if the
/// broker asks for one (mutual TLS), and the name it expects in the broker's
/// certificate.
///
/// The client trusts only the CA roots given here (there are no system
/// roots), with rustls and its ring provider, TLS 1.2 and 1.3.
///
/// ```
/// use corecast_client::{Options, Pem, TlsOptions};
///
/// let tls = TlsOptions::new(Pem::file("/etc/corecast/ca.pem"))
///     .client_cert(Pem::file("client.pem"), Pem::file("client.key"))
///     .server_name("broker.internal");
/// let options = Options::new().tls(tls);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    ca: Pem,
    client_cert: Option<(Pem, Pem)>,
    server_name: Option<String>,
}

impl TlsOptions {
    /// TLS that trusts the CA certificates in `ca` (one or more PEM
    /// `CERTIFICATE` sections), without a client certificate, expecting the
    /// host of the address connected to as the server name.
    pub fn new(ca: Pem) -> Self {
        Self { ca, client_cert: None, server_name: None }
    }

    /// Presents `cert` (a PEM certificate chain, the client's own first)
    /// with its private key `key` (PEM, PKCS#8, PKCS#1 or SEC1) when the
    /// broker asks for a client certificate.
    pub fn client_cert(mut self, cert: Pem, key: Pem) -> Self {
        self.client_cert = Some((cert, key));
        self
    }

    /// The name the broker's certificate must hold: a DNS name, or an IP
    /// address (then the certificate must hold that IP address). By default
    /// the host of the address connected to.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the PEM data and builds the rustls configuration.
    pub(crate) fn load(&self) -> Result<Tls, ClientError> {
        let mut roots = RootCertStore::empty();
        for ca in self.ca.all::<CertificateDer<'static>>("CA certificate")? {
            roots.add(ca).map_err(|e| {
                tls_config(format!("bad CA certificate in {}: {e}", self.ca.describe()))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = cert.all::<CertificateDer<'static>>("client certificate")?;
                let key = key.first::<PrivateKeyDer<'static>>("private key")?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    tls_config(format!("client certificate {}: {e}", cert.describe()))
                })?
            }
        };
        let server_name = match &self.server_name {
            Some(name) => Some(parse_server_name(name)?),
            None => None,
        };
        Ok(Tls { config: Arc::new(config), server_name })
    }
}

/// A loaded [`TlsOptions`]: what each connection attempt uses.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl Tls {
    /// The server name to expect when connecting to `addr` (`host:port`).
    pub(crate) fn server_name(&self, addr: &str) -> Result<ServerName<'static>, ClientError> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => parse_server_name(host_of(addr)),
        }
    }
}

/// The host of `host:port` (`[::1]:7400` gives `::1`); the whole of an
/// address without a port.
fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => addr,
    };
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// A DNS name or an IP address as a server name.
fn parse_server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| tls_config(format!("{name:?} is not a valid TLS server name")))
}

fn tls_config(message: String) -> ClientError {
    ClientError::TlsConfig(message)
}

/// The error of a connection attempt to `addr` whose TLS handshake failed
/// with `e`: [`ClientError::TlsHandshake`] when TLS refused (a certificate
/// that does not verify, say), `None` for a plain I/O failure.
pub(crate) fn handshake_error(addr: &str, e: &io::Error) -> Option<ClientError> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(ClientError::TlsHandshake { addr: addr.to_owned(), reason: tls.to_string() })
}

/// What a client authenticates with, sent in `HELLO`
/// ([`Options::credentials`](crate::Options::credentials)).
///
/// [`Credentials::Token`] is the untyped token of protocol version 1 (what
/// [`Options::auth_token`](crate::Options::auth_token) sets). The typed
/// kinds travel with the `HELLO` credential flag of protocol 1.1
/// (PROTOCOL.md section 14), so they need a 1.1 session: a client with one
/// never falls back to version 1. Its `Debug` output shows no secret.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credential: an empty token (a broker without authentication, or
    /// one that authenticates the client by its TLS certificate).
    #[default]
    None,
    /// A plain shared token, as in protocol version 1.
    Token(Vec<u8>),
    /// A user name and its password.
    Password {
        /// The user: non-empty, without `:`.
        user: String,
        /// The password: any bytes.
        password: Vec<u8>,
    },
    /// A bearer token configured for a user.
    Bearer(Vec<u8>),
    /// A JSON Web Token in compact form; the user is its `sub` claim.
    Jwt(String),
}

impl Credentials {
    /// A user name and its password.
    pub fn password(user: impl Into<String>, password: impl AsRef<[u8]>) -> Self {
        Self::Password { user: user.into(), password: password.as_ref().to_vec() }
    }

    /// A bearer token.
    pub fn bearer(token: impl AsRef<[u8]>) -> Self {
        Self::Bearer(token.as_ref().to_vec())
    }

    /// A JSON Web Token in compact form.
    pub fn jwt(jwt: impl Into<String>) -> Self {
        Self::Jwt(jwt.into())
    }

    /// A plain shared token (protocol version 1).
    pub fn token(token: impl AsRef<[u8]>) -> Self {
        Self::Token(token.as_ref().to_vec())
    }

    /// Whether this is a typed credential, sent with the `HELLO` credential
    /// flag.
    pub fn is_typed(&self) -> bool {
        matches!(self, Self::Password { .. } | Self::Bearer(_) | Self::Jwt(_))
    }

    /// The typed credential as the protocol crate has it.
    pub(crate) fn credential(&self) -> Option<Credential<'_>> {
        match self {
            Self::None | Self::Token(_) => None,
            Self::Password { user, password } => Some(Credential::Password { user, password }),
            Self::Bearer(token) => Some(Credential::Bearer(token)),
            Self::Jwt(jwt) => Some(Credential::Jwt(jwt)),
        }
    }

    /// The token field of `HELLO`.
    pub(crate) fn token_field(&self) -> Vec<u8> {
        match self {
            Self::None => Vec::new(),
            Self::Token(token) => token.clone(),
            typed => typed.credential().map(|c| c.to_vec()).unwrap_or_default(),
        }
    }

    /// Checks what the protocol and the broker would refuse anyway.
    pub(crate) fn check(&self) -> Result<(), ClientError> {
        let invalid = |what: &str| Err(ClientError::InvalidOption(what.to_owned()));
        match self {
            Self::Password { user, .. } if user.is_empty() => {
                return invalid("the user name of a password credential is empty")
            }
            Self::Password { user, .. } if user.contains(':') => {
                return invalid("the user name of a password credential holds ':'")
            }
            Self::Bearer(token) if token.is_empty() => return invalid("the bearer token is empty"),
            Self::Jwt(jwt) if jwt.is_empty() => return invalid("the JWT is empty"),
            _ => {}
        }
        let len = match self.credential() {
            Some(c) => c.encoded_len(),
            None => self.token_field().len(),
        };
        if len > usize::from(u16::MAX) {
            return Err(ClientError::InvalidOption(format!(
                "the credential takes {len} bytes in HELLO, more than the 65535 allowed"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(t) => write!(f, "Token(<{} bytes>)", t.len()),
            Self::Password { user, password } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &format_args!("<{} bytes>", password.len()))
                .finish(),
            Self::Bearer(t) => write!(f, "Bearer(<{} bytes>)", t.len()),
            Self::Jwt(t) => write!(f, "Jwt(<{} bytes>)", t.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("broker.internal:7400"), "broker.internal");
        assert_eq!(host_of("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7400"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn ip_addresses_are_ip_server_names() {
        assert!(matches!(parse_server_name("127.0.0.1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(parse_server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(parse_server_name("broker.internal"), Ok(ServerName::DnsName(_))));
        assert!(matches!(parse_server_name("not a name"), Err(ClientError::TlsConfig(_))));
    }

    #[test]
    fn credentials_encode_as_the_token_field() {
        assert_eq!(Credentials::None.token_field(), b"");
        assert_eq!(Credentials::token("t0k").token_field(), b"t0k");
        assert_eq!(
            Credentials::password("alice", "s3:cr3t").token_field(),
            b"password alice:s3:cr3t"
        );
        assert_eq!(Credentials::bearer([0u8, 0xff]).token_field(), b"bearer \x00\xff");
        assert_eq!(Credentials::jwt("a.b.c").token_field(), b"jwt a.b.c");
        for typed in
            [Credentials::password("u", "p"), Credentials::bearer("b"), Credentials::jwt("j")]
        {
            assert!(typed.is_typed());
            let field = typed.token_field();
            assert_eq!(Credential::parse(&field), typed.credential(), "{typed:?}");
        }
        assert!(!Credentials::token("t").is_typed() && !Credentials::None.is_typed());
    }

    #[test]
    fn credentials_the_broker_would_refuse_are_refused_before_connecting() {
        for bad in [
            Credentials::password("", "p"),
            Credentials::password("a:b", "p"),
            Credentials::bearer(""),
            Credentials::jwt(""),
            Credentials::bearer(vec![b'x'; 65535 - 6]),
            Credentials::token(vec![b'x'; 65536]),
        ] {
            assert!(matches!(bad.check(), Err(ClientError::InvalidOption(_))), "{bad:?}");
        }
        assert!(Credentials::bearer(vec![b'x'; 65535 - 7]).check().is_ok());
        assert!(Credentials::token(vec![b'x'; 65535]).check().is_ok());
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            Credentials::password("alice", "hunter2"),
            Credentials::bearer("opaque-secret"),
            Credentials::jwt("e30.e30.signature"),
            Credentials::token("shared-secret"),
        );
        assert!(shown.contains("alice"), "{shown}");
        for secret in ["hunter2", "opaque-secret", "signature", "shared-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn unreadable_pem_is_a_tls_config_error() {
        let missing = TlsOptions::new(Pem::file("/nonexistent/ca.pem")).load();
        assert!(matches!(&missing, Err(ClientError::TlsConfig(m)) if m.contains("ca.pem")));
        let empty = TlsOptions::new(Pem::bytes("no PEM here")).load();
        assert!(matches!(&empty, Err(ClientError::TlsConfig(m)) if m.contains("no CA")));
    }
}
