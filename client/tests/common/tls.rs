//! TLS for the client tests: certificates made with rcgen, and the `[tls]`
//! section that has an embedded broker serve them on its TLS port.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use corecast::{
    tls::{ClientAuth, TlsConfig},
    Broker, Config,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A CA that signs server and client certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A certificate and its key, in PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Issued {
        self.issue(
            &["localhost", "127.0.0.1"],
            "corecast test broker",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject is `CN=user`.
    pub fn client(&self, user: &str) -> Issued {
        self.issue(&[], user, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], cn: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// Writes `contents` to a new file in the temporary directory.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("corecast-client-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A `[tls]` section on `listen` serving a server certificate of `ca`;
/// with `client_ca`, a client certificate of that CA is required.
pub fn tls_section(listen: SocketAddr, ca: &Ca, client_ca: Option<&Ca>) -> TlsConfig {
    let server = ca.server();
    TlsConfig {
        listen: listen.into(),
        cert: temp_file("server.pem", &server.cert_pem),
        key: temp_file("server.key", &server.key_pem),
        client_ca: client_ca.map(|ca| temp_file("client-ca.pem", &ca.pem())),
        client_auth: if client_ca.is_some() { ClientAuth::Required } else { ClientAuth::Off },
        min_version: Default::default(),
        handshake_timeout_ms: 5_000,
    }
}

/// The test broker config with a TLS port on 127.0.0.1 (see
/// [`tls_section`]).
pub fn tls_config(ca: &Ca, client_ca: Option<&Ca>) -> Config {
    let listen = "127.0.0.1:0".parse().unwrap();
    Config { tls: Some(tls_section(listen, ca, client_ca)), ..super::config() }
}

/// The broker's TLS port.
pub fn tls_addr(broker: &Broker) -> SocketAddr {
    broker.tls_addr().expect("the broker has a TLS port")
}

/// Starts a broker with `config`, retrying while its ports are still taken
/// (to restart one on the ports of the one before).
pub fn restart(config: &Config) -> Broker {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Broker::start(config.clone()) {
            Ok(broker) => return broker,
            Err(e) if Instant::now() < deadline => {
                eprintln!("restart: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot restart the broker: {e}"),
        }
    }
}
