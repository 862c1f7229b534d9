//! The certificates of the TLS cases: a CA and one server certificate for
//! `127.0.0.1` and `localhost`, made with rcgen once per run into the run's
//! directory. corecast and nats-server serve the same certificate and key;
//! the bench trusts the CA.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Where the files are, and the client configuration that trusts the CA.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca: PathBuf,
    /// The server certificate chain (leaf, then the CA), PEM.
    pub cert: PathBuf,
    /// The server's private key, PKCS#8 PEM.
    pub key: PathBuf,
    /// rustls client configuration trusting `ca`, without resumption.
    pub client: Arc<rustls::ClientConfig>,
}

impl Pki {
    /// Makes a CA and a server certificate (ECDSA P-256, rcgen's default)
    /// and writes `ca.pem`, `server.pem` and `server.key` into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params.distinguished_name.push(DnType::CommonName, "corecast-bench CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().context("CA key")?;
        let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;

        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "corecast-bench server");
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().context("SAN")?),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("server key")?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).context("server certificate")?;

        let pki = |name: &str| dir.join(name);
        let (ca, cert_path, key_path) = (pki("ca.pem"), pki("server.pem"), pki("server.key"));
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
        };
        write(&ca, &ca_cert.pem())?;
        write(&cert_path, &format!("{}{}", cert.pem(), ca_cert.pem()))?;
        write(&key_path, &key.serialize_pem())?;
        let client = crate::driver::tls::client_config(&ca)?;
        Ok(Self { ca, cert: cert_path, key: key_path, client })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ca_is_trusted() {
        let dir = std::env::temp_dir().join(format!("corecast-bench-pki-{}", std::process::id()));
        let pki = Pki::generate(&dir).expect("certificates");
        for path in [&pki.ca, &pki.cert, &pki.key] {
            let text = std::fs::read_to_string(path).expect("written");
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        assert!(crate::driver::tls::client_config(&pki.cert).is_ok(), "a chain is PEM too");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
