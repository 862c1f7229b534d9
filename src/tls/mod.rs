//! TLS (and mutual TLS) on a port of its own.
//!
//! Decision: TLS is served on a second listener, `[tls] listen =
//! "HOST:PORT"` (`--tls-listen`), bound on every core with `SO_REUSEPORT`
//! like the plain one, beside it. The plain port keeps zero TLS cost and
//! needs no protocol sniffing: clients choose by port. Operators who want
//! TLS only bind the plain port to loopback, where local sidecars and
//! health checks still reach it. Every connection on the TLS port completes
//! a TLS handshake before any corecast frame; bytes that are not a TLS
//! handshake close it at once.
//!
//! rustls runs sans-I/O inside the existing connection task
//! (`session::Tls`): the task reads ciphertext into a per-core scratch,
//! hands it to rustls and decrypts straight into its usual input buffers;
//! it hands queued output to rustls within a bounded buffer and writes the
//! records with the same non-blocking sends as a plain connection. All TLS
//! state of a connection lives in its task and goes with it.
//!
//! The files are read at start and on every reload (SIGHUP): new
//! connections use the new certificate at once, open ones keep theirs. A
//! reload whose files do not load keeps the certificate in force.
//!
//! Session resumption is off: the stateful cache would be one mutex shared
//! by every core, tickets add two records after every TLS 1.3 handshake,
//! and broker clients hold long-lived connections.

pub(crate) mod session;

use std::{fmt, path::PathBuf, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{NoServerSessionStorage, WebPkiClientVerifier},
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use serde::{Deserialize, Serialize};

use crate::{address::ListenAddr, config::ConfigError};

/// The default time a client has to complete the TLS handshake, ms.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `HOST:PORT` every core serves TLS on (`SO_REUSEPORT`), beside the
    /// plain `listen`. Fixed at start.
    pub listen: ListenAddr,
    /// The server's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates, PEM, that client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Whether clients present certificates: `off`, `optional` or
    /// `required` (the last two need `client_ca`).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// The oldest protocol version offered: `"1.2"` (1.2 and 1.3) or
    /// `"1.3"`.
    #[serde(default)]
    pub min_version: MinVersion,
    /// Time a connection has to complete the TLS handshake, ms.
    #[serde(
        default = "default_handshake_timeout",
        rename = "handshake_timeout",
        alias = "handshake_timeout_ms",
        with = "crate::config::millis"
    )]
    pub handshake_timeout_ms: u64,
}

fn default_handshake_timeout() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates are asked for.
    #[default]
    Off,
    /// A certificate is asked for; one given must verify, none is allowed.
    Optional,
    /// A certificate that verifies is required.
    Required,
}

/// The oldest TLS version offered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsConfig {
    /// Checks what can be checked without reading the files.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.client_auth != ClientAuth::Off && self.client_ca.is_none() {
            return Err(ConfigError::Invalid(format!(
                "[tls] client_auth = \"{}\" needs client_ca (the CA bundle client certificates \
                 must chain to)",
                self.client_auth
            )));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(ConfigError::Invalid("[tls] handshake_timeout must be > 0".into()));
        }
        Ok(())
    }
}

impl fmt::Display for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        })
    }
}

/// The server's TLS settings as loaded from the files.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// What every new connection is served with.
    pub config: Arc<ServerConfig>,
    /// The section it was loaded from and the certificates read, to tell a
    /// reload that changed something from one that did not.
    pub source: TlsConfig,
    pub chain: Vec<CertificateDer<'static>>,
    pub client_cas: Vec<CertificateDer<'static>>,
}

impl Loaded {
    /// Whether `other` serves anything differently.
    pub(crate) fn differs(&self, other: &Loaded) -> bool {
        self.source != other.source
            || self.chain != other.chain
            || self.client_cas != other.client_cas
    }
}

/// Sends rustls plaintext in chunks of at most this many bytes buffered as
/// ciphertext per connection: it bounds the memory a TLS connection holds
/// outside the pending budget (the output waits in the slot's queue, where
/// `max_pending`, `write_deadline` and the budget see it), while it still
/// fills four whole 16 KiB records per pass and a socket's send in one go.
pub(crate) const SEND_BUFFER: usize = 64 << 10;

/// Reads the certificate chain, key and client CAs of `cfg` and builds
/// what connections are served with. Errors name the file and what is
/// wrong with it.
pub(crate) fn load(cfg: &TlsConfig) -> Result<Loaded, ConfigError> {
    cfg.check()?;
    let chain = read_certs("cert", &cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| file_error("key", &cfg.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&SupportedProtocolVersion] = match cfg.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| ConfigError::Invalid(format!("[tls] min_version: {e}")))?;
    let mut client_cas = Vec::new();
    let builder = match (cfg.client_auth, &cfg.client_ca) {
        (ClientAuth::Off, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(path)) => {
            client_cas = read_certs("client_ca", path)?;
            let mut roots = RootCertStore::empty();
            for ca in &client_cas {
                roots.add(ca.clone()).map_err(|e| file_error("client_ca", path, e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier.build().map_err(|e| file_error("client_ca", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain.clone(), key).map_err(|e| {
        ConfigError::Invalid(format!(
            "[tls] cert {} and key {}: {e}",
            cfg.cert.display(),
            cfg.key.display()
        ))
    })?;
    config.alpn_protocols = Vec::new();
    config.max_fragment_size = None;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Loaded { config: Arc::new(config), source: cfg.clone(), chain, client_cas })
}

fn read_certs(key: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "[tls] {key} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn file_error(key: &str, path: &std::path::Path, e: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("[tls] {key} {}: {e}", path.display()))
}

/// Why a TLS connection failed, for its closed record and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsFailure {
    /// The first bytes were not a TLS handshake (plaintext, say).
    NotTls,
    /// The handshake did not complete within `[tls] handshake_timeout`.
    HandshakeTimeout,
    /// The client left in the middle of the handshake.
    Abandoned,
    /// The client's certificate does not chain to `client_ca`.
    UnknownIssuer,
    /// The client's certificate has expired.
    Expired,
    /// The client's certificate is invalid otherwise (not yet valid,
    /// revoked, wrong usage, bad signature).
    BadCertificate,
    /// `client_auth = "required"` and the client sent no certificate.
    NoCertificate,
    /// No protocol version or cipher suite in common.
    Incompatible,
    /// The client ended the handshake with an alert.
    PeerAlert,
    /// Any other handshake failure.
    Handshake,
    /// A TLS error after the handshake (a bad record, say).
    Protocol,
}

impl TlsFailure {
    /// What `rustls` reported, as a failure.
    pub(crate) fn of(error: &rustls::Error, established: bool) -> Self {
        use rustls::{CertificateError as C, Error as E};
        if established {
            return Self::Protocol;
        }
        match error {
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => Self::NotTls,
            E::InvalidCertificate(C::UnknownIssuer) => Self::UnknownIssuer,
            E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => Self::Expired,
            E::InvalidCertificate(_) => Self::BadCertificate,
            E::NoCertificatesPresented => Self::NoCertificate,
            E::PeerIncompatible(_) => Self::Incompatible,
            E::AlertReceived(_) => Self::PeerAlert,
            _ => Self::Handshake,
        }
    }

    /// Whether it ended a handshake (everything but [`Self::Protocol`]).
    pub(crate) fn in_handshake(self) -> bool {
        self != Self::Protocol
    }

    /// The reason in words, for logs and `/connz?state=closed`.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::NotTls => "tls: not a TLS handshake",
            Self::HandshakeTimeout => "tls: handshake timeout",
            Self::Abandoned => "tls: client left during the handshake",
            Self::UnknownIssuer => "tls: client certificate: unknown issuer",
            Self::Expired => "tls: client certificate expired",
            Self::BadCertificate => "tls: client certificate invalid",
            Self::NoCertificate => "tls: no client certificate",
            Self::Incompatible => "tls: no common protocol version or cipher suite",
            Self::PeerAlert => "tls: the client sent an alert",
            Self::Handshake => "tls: handshake failed",
            Self::Protocol => "tls: protocol error",
        }
    }
}

/// The subject of a DER certificate as an RFC 4514 string
/// (`CN=svc-a,O=corp`: the last RDN of the certificate first); `None` if
/// the certificate does not parse.
pub(crate) fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for (i, rdn) in cert.subject().iter().collect::<Vec<_>>().into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(name) => out.push_str(name),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_into(&mut out, value),
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().data.iter() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    Some(out)
}

/// Appends `value` escaped as RFC 4514 section 2.4 asks.
fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
            continue;
        }
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_rfc_4514_asks() {
        let mut out = String::new();
        escape_into(&mut out, " a,b+c\"d\\e<f>g;h ");
        assert_eq!(out, "\\ a\\,b\\+c\\\"d\\\\e\\<f\\>g\\;h\\ ");
        let mut out = String::new();
        escape_into(&mut out, "#x");
        assert_eq!(out, "\\#x");
    }

    #[test]
    fn client_auth_needs_a_ca() {
        let cfg = TlsConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: None,
            client_auth: ClientAuth::Required,
            min_version: MinVersion::Tls12,
            handshake_timeout_ms: 1000,
        };
        let message = cfg.check().expect_err("refused").to_string();
        assert!(message.contains("needs client_ca"), "{message}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let cfg = TlsConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            cert: "/nonexistent/corecast-cert.pem".into(),
            key: "/nonexistent/corecast-key.pem".into(),
            client_ca: None,
            client_auth: ClientAuth::Off,
            min_version: MinVersion::Tls13,
            handshake_timeout_ms: 1000,
        };
        let message = load(&cfg).expect_err("refused").to_string();
        assert!(message.contains("[tls] cert /nonexistent/corecast-cert.pem"), "{message}");
    }

    #[test]
    fn the_section_reads_with_defaults() {
        let cfg: TlsConfig = toml::from_str(
            "listen = \"127.0.0.1:7443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\nmin_version = \"1.3\"\n",
        )
        .expect("valid");
        assert_eq!(cfg.client_auth, ClientAuth::Off);
        assert_eq!(cfg.min_version, MinVersion::Tls13);
        assert_eq!(cfg.handshake_timeout_ms, DEFAULT_HANDSHAKE_TIMEOUT_MS);
        assert!(toml::from_str::<TlsConfig>(
            "listen = \"x:1\"\ncert = \"c\"\nkey = \"k\"\nport = 1"
        )
        .is_err());
    }
}
