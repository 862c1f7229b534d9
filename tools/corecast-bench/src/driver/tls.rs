//! TLS under a [`super::Wire`]: the handshake by rustls (the *ring*
//! provider, as in the broker), then TLS 1.3 records opened and sealed here
//! with *ring*'s AEAD under the keys rustls negotiated, as a kernel TLS
//! offload would take them over.
//!
//! It is the same cipher (the same *ring* code rustls would call), but the
//! ciphertext is read from the socket straight into the connection's read
//! buffer, after the plaintext not consumed yet, and each record is
//! decrypted there, its plaintext written where the plaintext before it
//! ends (*ring*'s `open_within`, which shifts as it decrypts): no byte is
//! copied besides the kernel's copy into the buffer. rustls 0.23's own read
//! path copies the ciphertext into its buffer, then each record's plaintext
//! into a newly allocated `Vec`, then out again; its unbuffered API only
//! saves the first of those copies. One read hands over all the plaintext
//! one socket read brought, as a plain read would, and plaintext is only
//! reported as "would block" once the socket itself would, so edge-triggered
//! polling of the socket still sees every arrival. The handshake is fed to
//! rustls one record at a time, so no byte after it stays in rustls.
//!
//! The client offers TLS 1.3 only (both brokers pick it anyway),
//! AES-128-GCM first, and no session resumption: every connection makes a
//! full handshake. After it, the server's session tickets are skipped (the
//! client resumes nothing), a `close_notify` ends the stream, and any other
//! alert or a `KeyUpdate` is an error.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    sync::Arc,
    time::Instant,
};

use anyhow::{anyhow, bail, Context};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{
    client::Resumption,
    pki_types::{pem::PemObject, CertificateDer, ServerName},
    CipherSuite, ClientConfig, ClientConnection, ConnectionTrafficSecrets, RootCertStore,
};

/// A record's header: content type, legacy version, length.
const HEADER: usize = 5;
/// The AEAD tag at the end of every protected record.
const TAG: usize = 16;
/// The most plaintext one record carries.
const MAX_PLAINTEXT: usize = 1 << 14;
/// The largest protected record body TLS 1.3 allows (RFC 8446, 5.2).
const MAX_BODY: usize = MAX_PLAINTEXT + 256;
/// Room the read buffer must have after its plaintext: the largest record.
pub const ROOM: usize = HEADER + MAX_BODY;
/// Content types.
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// The handshake message that changes the keys.
const KEY_UPDATE: u8 = 24;

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
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    // The record layer below takes the keys over after the handshake.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// One direction's key, IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> anyhow::Result<Self> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => bail!("a cipher suite the bench's record layer lacks"),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| anyhow!("AEAD key"))?;
        let iv = iv.as_ref().try_into().context("AEAD IV")?;
        Ok(Self { key: LessSafeKey::new(key), iv, seq })
    }

    /// The next record's nonce: the IV XOR the sequence number (RFC 8446,
    /// 5.3).
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (b, s) in nonce[aead::NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or_else(|| bad("TLS record sequence exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The whole length of the record at the front of `bytes`, once its
/// header has arrived.
fn record_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..HEADER)?;
    Some(HEADER + usize::from(u16::from_be_bytes([header[3], header[4]])))
}

/// One TLS 1.3 session after its handshake: the keys, and how much
/// ciphertext follows the plaintext in the read buffer.
pub struct Session {
    rx: Keys,
    tx: Keys,
    /// Version and cipher suite, as [`Session::describe`] gives them.
    negotiated: String,
    /// Bytes of ciphertext right after the plaintext in the read buffer,
    /// not opened yet.
    pending: usize,
    /// The server sent `close_notify`.
    closed: bool,
    /// Records being sealed for a write.
    out: Vec<u8>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("negotiated", &self.negotiated)
            .field("pending", &self.pending)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Session {
    /// Runs a full handshake over `stream` (blocking, bounded by its
    /// timeouts), verifying the server as `addr`'s IP address, reading into
    /// `raw` (the connection's read buffer, grown to [`ROOM`] if smaller).
    /// What the server sent after the handshake is left at the front of
    /// `raw`, as [`Session::pending`] ciphertext.
    pub fn handshake(
        config: Arc<ClientConfig>,
        addr: SocketAddr,
        stream: &mut TcpStream,
        raw: &mut Vec<u8>,
    ) -> anyhow::Result<Self> {
        let name = ServerName::IpAddress(addr.ip().into());
        let mut conn = ClientConnection::new(config, name).context("TLS client")?;
        if raw.len() < ROOM {
            raw.resize(ROOM, 0);
        }
        let (mut start, mut end) = (0, 0);
        loop {
            // Every whole record read so far, one at a time and only while
            // the handshake lasts: what follows it is for the record layer
            // here.
            while conn.is_handshaking() {
                let Some(len) = record_len(&raw[start..end]).filter(|&l| end - start >= l) else {
                    break;
                };
                let mut record = &raw[start..start + len];
                while !record.is_empty() {
                    conn.read_tls(&mut record).context("TLS handshake")?;
                }
                start += len;
                if let Err(e) = conn.process_new_packets() {
                    // The alert that tells the server why, as rustls's own
                    // I/O loop would send it.
                    let _ = conn.write_tls(stream);
                    return Err(e).context("TLS handshake");
                }
            }
            // Then the answer to all of them at once, as rustls's own I/O
            // loop sends it.
            while conn.wants_write() {
                conn.write_tls(stream).context("TLS handshake: write")?;
            }
            if !conn.is_handshaking() {
                break;
            }
            if start > 0 {
                raw.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            }
            if end == raw.len() {
                bail!("TLS handshake: a record larger than {} bytes", raw.len());
            }
            match stream.read(&mut raw[end..]) {
                Ok(0) => bail!("TLS handshake: the server closed the connection"),
                Ok(n) => end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("TLS handshake: read"),
            }
        }
        let version = conn.protocol_version().map_or("?".into(), |v| format!("{v:?}"));
        let suite =
            conn.negotiated_cipher_suite().map_or("?".into(), |s| format!("{:?}", s.suite()));
        let secrets = conn.dangerous_extract_secrets().context("TLS session keys")?;
        raw.copy_within(start..end, 0);
        Ok(Self {
            rx: Keys::new(secrets.rx)?,
            tx: Keys::new(secrets.tx)?,
            negotiated: format!("{version} {suite}"),
            pending: end - start,
            closed: false,
            out: Vec::new(),
        })
    }

    /// The negotiated protocol version and cipher suite, e.g.
    /// `TLSv1_3 TLS13_AES_128_GCM_SHA256`.
    pub fn describe(&self) -> String {
        self.negotiated.clone()
    }

    /// Ciphertext right after the plaintext in the read buffer, not
    /// opened yet (part of a record, or what followed the handshake); the
    /// buffer must keep it there.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Reads and decrypts plaintext into `buf[end..]`, where `end` is the
    /// end of the plaintext before it and `buf[end..end + pending]` the
    /// ciphertext left from before: as much as one read of the socket
    /// brings, like a read of a plain socket. `buf` must have [`ROOM`]
    /// bytes from `end`. The number of bytes of plaintext added; `Ok(0)` at
    /// the end of the stream (or after the server's `close_notify`); a
    /// would-block or timeout error only when the socket had nothing.
    pub fn read(
        &mut self,
        stream: &mut TcpStream,
        buf: &mut [u8],
        end: usize,
    ) -> io::Result<usize> {
        debug_assert!(buf.len() - end >= ROOM, "room for a whole record");
        // Plaintext ends at `plain`; ciphertext not opened is `buf[at..to]`.
        let (mut plain, mut at, mut to) = (end, end, end + self.pending);
        let result = loop {
            if self.closed {
                break Ok(());
            }
            match self.open_record(buf, plain, at, to) {
                Ok(Some((used, added))) => {
                    at += used;
                    plain += added;
                    continue;
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if plain > end {
                break Ok(());
            }
            // At most part of a record is left: next to the plaintext, and
            // more read after it.
            buf.copy_within(at..to, plain);
            (at, to) = (plain, plain + to - at);
            match stream.read(&mut buf[to..]) {
                Ok(0) => break Ok(()),
                Ok(n) => to += n,
                Err(e) => break Err(e),
            }
        };
        buf.copy_within(at..to, plain);
        self.pending = to - at;
        result.map(|()| plain - end)
    }

    /// Opens the record at `buf[at..to]` if it has wholly arrived,
    /// decrypting it to `buf[plain..]` (before it, or where it lies).
    /// `None` if it has not; else the record's length and the bytes of
    /// application data it added.
    fn open_record(
        &mut self,
        buf: &mut [u8],
        plain: usize,
        at: usize,
        to: usize,
    ) -> io::Result<Option<(usize, usize)>> {
        let pending = &buf[at..to];
        let Some(len) = record_len(pending) else { return Ok(None) };
        let header: [u8; HEADER] = pending[..HEADER].try_into().map_err(|_| bad("header"))?;
        if header[0] != APPLICATION_DATA {
            return Err(bad(format!("TLS record of content type {} in clear", header[0])));
        }
        if len - HEADER > MAX_BODY || len - HEADER < TAG + 1 {
            return Err(bad(format!("TLS record of {} bytes", len - HEADER)));
        }
        if pending.len() < len {
            return Ok(None);
        }
        let nonce = self.rx.next_nonce()?;
        let opened = self
            .rx
            .key
            .open_within(nonce, Aad::from(header), &mut buf[plain..at + len], at + HEADER - plain..)
            .map_err(|_| bad("TLS record failed to decrypt"))?;
        // The inner content type is the last byte that is not padding.
        let content =
            opened.iter().rposition(|&b| b != 0).ok_or_else(|| bad("TLS record all padding"))?;
        match opened[content] {
            APPLICATION_DATA => return Ok(Some((len, content))),
            HANDSHAKE => after_handshake(&opened[..content])?,
            ALERT => match opened[..content] {
                [_, 0] => self.closed = true,
                [_, alert] => return Err(bad(format!("TLS alert {alert} from the server"))),
                _ => return Err(bad("malformed TLS alert")),
            },
            other => return Err(bad(format!("TLS record of content type {other}"))),
        }
        Ok(Some((len, 0)))
    }

    /// Encrypts and writes all of `bytes`, in records of up to 16 KiB of
    /// plaintext as rustls makes them; a full socket buffer is waited out
    /// with `wait` (until `deadline`).
    pub fn write_all(
        &mut self,
        stream: &mut TcpStream,
        bytes: &[u8],
        deadline: Instant,
        wait: impl Fn(&TcpStream, Instant) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.out.clear();
        for chunk in bytes.chunks(MAX_PLAINTEXT) {
            let at = self.out.len();
            let body = u16::try_from(chunk.len() + 1 + TAG).context("record length")?;
            let mut header = [APPLICATION_DATA, 3, 3, 0, 0];
            header[3..].copy_from_slice(&body.to_be_bytes());
            self.out.extend_from_slice(&header);
            self.out.extend_from_slice(chunk);
            self.out.push(APPLICATION_DATA);
            let nonce = self.tx.next_nonce()?;
            let tag = self
                .tx
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[at + HEADER..])
                .map_err(|_| anyhow!("TLS encrypt"))?;
            self.out.extend_from_slice(tag.as_ref());
        }
        let mut rest = &self.out[..];
        while !rest.is_empty() {
            match stream.write(rest) {
                Ok(0) => bail!("write to broker: the connection takes no more bytes"),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(stream, deadline)?,
                Err(e) => return Err(e).context("write to broker"),
            }
        }
        Ok(())
    }
}

/// Handshake messages after the handshake: session tickets are skipped
/// (the client resumes nothing); a `KeyUpdate` would need keys this layer
/// does not derive.
fn after_handshake(mut messages: &[u8]) -> io::Result<()> {
    while !messages.is_empty() {
        let Some(&[kind, a, b, c]) = messages.get(..4) else {
            return Err(bad("TLS handshake message split across records"));
        };
        let len = 4 + u32::from_be_bytes([0, a, b, c]) as usize;
        if messages.len() < len {
            return Err(bad("TLS handshake message split across records"));
        }
        if kind == KEY_UPDATE {
            return Err(bad("TLS KeyUpdate from the server: the bench does not update keys"));
        }
        messages = &messages[len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use rustls::{pki_types::PrivateKeyDer, ServerConfig, ServerConnection, StreamOwned};

    use super::*;
    use crate::driver::{Access, ConnOpts, Kind, Recv, Wire};

    /// Reads from `tls` until `buf` holds `n` pings.
    fn read_pings(tls: &mut impl Read, buf: &mut Vec<u8>, n: usize) {
        let mut chunk = [0u8; 4096];
        while buf.windows(6).filter(|w| w == b"PING\r\n").count() < n {
            let got = tls.read(&mut chunk).expect("read from the client");
            assert!(got > 0, "client left early");
            buf.extend_from_slice(&chunk[..got]);
        }
    }

    /// A CA and server certificate made in `dir`, and a rustls server
    /// configuration (TLS 1.3 and 1.2, tickets on, as rustls ships) for
    /// them.
    fn server_config(dir: &Path) -> (crate::pki::Pki, ServerConfig) {
        let pki = crate::pki::Pki::generate(dir).expect("certificates");
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
        (pki, config)
    }

    /// Byte `i` of the test streams.
    fn pattern(i: usize) -> u8 {
        (i % 251) as u8
    }

    /// TLS from the first byte, as on corecast's port: the client's 40 000
    /// bytes arrive intact in 16 KiB records; the server's session tickets,
    /// 2000 small records and 50 000 bytes in large ones are decrypted in
    /// the read buffer, in order, while it is compacted and grown; and
    /// `close_notify` ends the stream after the last byte.
    #[test]
    fn records_are_opened_in_place_and_close_notify_ends_the_stream() {
        let dir =
            std::env::temp_dir().join(format!("corecast-bench-tls-records-{}", std::process::id()));
        let (pki, config) = server_config(&dir);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = thread::spawn(move || {
            let (sock, _) = listener.accept().expect("accept");
            let conn = ServerConnection::new(Arc::new(config)).expect("server session");
            let mut tls = StreamOwned::new(conn, sock);
            let mut got = vec![0u8; 40_000];
            tls.read_exact(&mut got).expect("the client's bytes");
            assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)), "client bytes intact");
            let mut at = 0;
            for len in (0..2000).map(|k| 1 + k % 61) {
                let piece: Vec<u8> = (at..at + len).map(pattern).collect();
                tls.write_all(&piece).expect("a small record");
                at += len;
            }
            let big: Vec<u8> = (at..at + 50_000).map(pattern).collect();
            tls.write_all(&big).expect("a large write");
            tls.conn.send_close_notify();
            tls.flush().expect("close_notify");
            at + 50_000
        });
        let opts = ConnOpts {
            read_buffer: 512,
            timeout: std::time::Duration::from_secs(5),
            source: None,
            v1_1: false,
            access: Access { tls: Some(pki.client.clone()), ..Access::default() },
        };
        let mut wire = Wire::connect(addr, &opts).expect("connect");
        wire.start_tls().expect("handshake");
        let session = wire.tls.as_ref().expect("a TLS session").describe();
        assert_eq!(session, "TLSv1_3 TLS13_AES_128_GCM_SHA256");
        let sent: Vec<u8> = (0..40_000).map(pattern).collect();
        wire.send(&sent).expect("write");
        // At most 777 bytes taken after each read, so that plaintext piles
        // up and the buffer is compacted and grown with ciphertext after it.
        let mut got = Vec::new();
        loop {
            let n = wire.fill().expect("read");
            let take = wire.data().len().min(777);
            got.extend_from_slice(&wire.data()[..take]);
            wire.consume(take);
            if n == 0 && wire.data().is_empty() {
                break;
            }
        }
        let total = server.join().expect("server thread");
        assert_eq!(got.len(), total, "every byte, then the end");
        assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)), "bytes intact, in order");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A NATS-like server in a thread: `INFO` in clear, the TLS handshake,
    /// then it answers the client's two pings and sends one message of
    /// 100 000 bytes (several TLS records) over TLS.
    #[test]
    fn nats_starts_tls_after_info_and_a_large_message_arrives_whole() {
        let dir = std::env::temp_dir().join(format!("corecast-bench-tls-{}", std::process::id()));
        let (pki, config) = server_config(&dir);
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
            access: Access { tls: Some(pki.client.clone()), ..Access::default() },
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
