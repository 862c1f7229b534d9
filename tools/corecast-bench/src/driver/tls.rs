//! TLS under a [`super::Wire`]: rustls (the *ring* provider, as in the
//! broker) driven by hand over the connection's own socket, blocking or not.
//!
//! Ciphertext is read from the socket into a buffer of the connection's
//! (as large as its read buffer, 16 to 256 KiB) and fed to rustls from
//! there (rustls alone reads 4 KiB per call); one read hands over all the
//! plaintext one socket read brought, as a plain read would. Plaintext is
//! only reported as "would block" once the socket itself would, so
//! edge-triggered polling of the socket still sees every arrival. Session resumption is off: every connection makes a full
//! handshake. The client offers TLS 1.3 and 1.2, AES-128-GCM first.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Instant,
};

use anyhow::{bail, Context};
use rustls::{
    client::Resumption,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    CipherSuite, ClientConfig, ClientConnection, RootCertStore,
};

/// Bounds on the ciphertext read from the socket in one call (the
/// connection's read buffer, within these).
const RAW_READ: (usize, usize) = (16 << 10, 256 << 10);

/// A client configuration that trusts the CA certificates in the PEM file
/// `ca` and makes a full handshake every time.
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("read CA certificates from {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("a certificate in {}", ca.display()))?)?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in {}", ca.display());
    }
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first: nats-server (Go) picks it whatever the client
    // prefers, rustls servers such as corecast follow the client's order,
    // so both brokers run the same cipher suite.
    provider.cipher_suites.sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// One TLS session and the ciphertext read for it but not yet fed to it.
pub struct Session {
    conn: ClientConnection,
    raw: Vec<u8>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("buffered", &(self.end - self.start)).finish()
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Session {
    /// Runs a full handshake over `stream` (blocking, bounded by its
    /// timeouts), verifying the server as `addr`'s IP address; reads take
    /// up to `read_size` bytes of ciphertext (within [`RAW_READ`]).
    pub fn handshake(
        config: Arc<ClientConfig>,
        addr: SocketAddr,
        stream: &mut TcpStream,
        read_size: usize,
    ) -> anyhow::Result<Self> {
        let name = ServerName::IpAddress(addr.ip().into());
        let mut conn = ClientConnection::new(config, name).context("TLS client")?;
        while conn.is_handshaking() || conn.wants_write() {
            conn.complete_io(stream).context("TLS handshake")?;
        }
        let raw = vec![0; read_size.clamp(RAW_READ.0, RAW_READ.1)];
        Ok(Self { conn, raw, start: 0, end: 0 })
    }

    /// The negotiated protocol version and cipher suite, e.g.
    /// `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub fn describe(&self) -> String {
        let version = self.conn.protocol_version().map_or("?".into(), |v| format!("{v:?}"));
        let suite =
            self.conn.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
        format!("{version} {suite}")
    }

    /// Reads plaintext into `buf`: as much as one read of the socket
    /// brings (and what was left from the one before), like a read of a
    /// plain socket. `Ok(0)` at the end of the stream; a would-block or
    /// timeout error only when the socket had nothing.
    pub fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            // Whatever rustls holds decrypted; after this it holds nothing
            // or `buf` is full.
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(_) if filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
            if self.start < self.end {
                let mut pending = &self.raw[self.start..self.end];
                let fed = self.conn.read_tls(&mut pending)?;
                if fed == 0 {
                    return Ok(filled);
                }
                self.start += fed;
                self.conn.process_new_packets().map_err(invalid)?;
                continue;
            }
            if filled > 0 {
                return Ok(filled);
            }
            let n = stream.read(&mut self.raw)?;
            if n == 0 {
                // Tells rustls about the end, so its reader reports it.
                let _ = self.conn.read_tls(&mut &[][..]);
                return Ok(0);
            }
            (self.start, self.end) = (0, n);
        }
    }

    /// Encrypts and writes all of `bytes`; a full socket buffer is waited
    /// out with `wait` (until `deadline`).
    pub fn write_all(
        &mut self,
        stream: &mut TcpStream,
        bytes: &[u8],
        deadline: Instant,
        wait: impl Fn(&TcpStream, Instant) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut rest = bytes;
        loop {
            if !rest.is_empty() {
                let n = self.conn.writer().write(rest).context("TLS encrypt")?;
                rest = &rest[n..];
            }
            while self.conn.wants_write() {
                match self.conn.write_tls(stream) {
                    Ok(0) => bail!("write to broker: the connection takes no more bytes"),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(stream, deadline)?,
                    Err(e) => return Err(e).context("write to broker"),
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use rustls::{pki_types::PrivateKeyDer, ServerConfig, ServerConnection, StreamOwned};

    use super::*;
    use crate::driver::{Access, ConnOpts, Kind, Recv};

    /// Reads from `tls` until `buf` holds `n` pings.
    fn read_pings(tls: &mut impl Read, buf: &mut Vec<u8>, n: usize) {
        let mut chunk = [0u8; 4096];
        while buf.windows(6).filter(|w| w == b"PING\r\n").count() < n {
            let got = tls.read(&mut chunk).expect("read from the client");
            assert!(got > 0, "client left early");
            buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// A NATS-like server in a thread: `INFO` in clear, the TLS handshake,
    /// then it answers the client's two pings and sends one message of
    /// 100 000 bytes (several TLS records) over TLS.
    #[test]
    fn nats_starts_tls_after_info_and_a_large_message_arrives_whole() {
        let dir = std::env::temp_dir().join(format!("corecast-bench-tls-{}", std::process::id()));
        let pki = crate::pki::Pki::generate(&dir).expect("certificates");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert)
            .expect("chain")
            .collect::<Result<_, _>>()
            .expect("PEM");
        let key = PrivateKeyDer::from_pem_file(&pki.key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let payload = vec![b'x'; 100_000];
        let sent = payload.clone();
        let server = thread::spawn(move || {
            let (mut sock, _) = listener.accept().expect("accept");
            sock.write_all(b"INFO {\"tls_required\":true}\r\n").expect("INFO");
            let conn = ServerConnection::new(Arc::new(config)).expect("server session");
            let mut tls = StreamOwned::new(conn, sock);
            let mut seen = Vec::new();
            read_pings(&mut tls, &mut seen, 1);
            assert!(seen.starts_with(b"CONNECT {"), "{}", String::from_utf8_lossy(&seen));
            tls.write_all(b"PONG\r\n").expect("PONG");
            read_pings(&mut tls, &mut seen, 2);
            assert!(String::from_utf8_lossy(&seen).contains("SUB big 1\r\n"));
            let mut out = b"PONG\r\nMSG big 1 100000\r\n".to_vec();
            out.extend_from_slice(&sent);
            out.extend_from_slice(b"\r\n");
            tls.write_all(&out).expect("MSG");
            tls.flush().expect("flush");
            let mut rest = [0u8; 64];
            let _ = tls.read(&mut rest);
        });
        let opts = ConnOpts {
            read_buffer: 4096,
            timeout: std::time::Duration::from_secs(5),
            source: None,
            v1_1: false,
            access: Access { tls: Some(pki.client.clone()), token: None },
        };
        let mut conn = Kind::Nats.connect(addr, "tls-test", opts).expect("TLS connection");
        let session = conn.tls_session().expect("speaks TLS");
        assert_eq!(session, "TLSv1_3 TLS13_AES_128_GCM_SHA256");
        conn.subscribe("big").expect("SUB");
        conn.confirm().expect("PONG");
        let mut got = None;
        while got.is_none() {
            let outcome = conn.receive(&mut |m| got = Some(m.payload == payload)).expect("read");
            assert_ne!(outcome, Recv::Closed, "server closed before the message");
        }
        assert_eq!(got, Some(true), "the payload arrived whole and intact");
        drop(conn);
        server.join().expect("server thread");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
