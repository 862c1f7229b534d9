//! TLS and mutual TLS on the second port: real TCP, real TLS (rustls on
//! both ends), certificates made at test time with rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{start, test_config, wait_counters, wait_idle, Client};
use corecast::{address::HttpAddr, tls::ClientAuth, tls::TlsConfig, Broker, Config};
use corecast_proto::{ClientFrame, Hello, Pub, ServerFrame, Sub, VERSION};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Certificates

/// A CA that signs certificates, and where the test keeps their files.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { der: cert.der().clone(), pem: cert.pem(), params, key }
    }

    /// A leaf certificate: (PEM chain, PEM key, DER).
    fn issue(&self, leaf: Leaf<'_>) -> (String, String, CertificateDer<'static>) {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(org) = leaf.org {
            params.distinguished_name.push(DnType::OrganizationName, org);
        }
        params.distinguished_name.push(DnType::CommonName, leaf.cn);
        params.serial_number = Some(leaf.serial.into());
        if leaf.server {
            params.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }
}

#[derive(Clone, Copy)]
struct Leaf<'a> {
    cn: &'a str,
    org: Option<&'a str>,
    serial: u64,
    server: bool,
    expired: bool,
}

impl<'a> Leaf<'a> {
    fn server(serial: u64) -> Self {
        Leaf { cn: "corecast-test", org: None, serial, server: true, expired: false }
    }

    fn client(cn: &'a str, org: &'a str) -> Self {
        Leaf { cn, org: Some(org), serial: 7, server: false, expired: false }
    }
}

/// A client's certificate and key, for rustls.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// Everything a test's broker and clients need.
struct Pki {
    dir: PathBuf,
    ca: Ca,
    server_der: CertificateDer<'static>,
}

impl Pki {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("corecast-tls-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("corecast test CA");
        std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        let (cert, key, server_der) = ca.issue(Leaf::server(1));
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        Pki { dir, ca, server_der }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The `[tls]` section serving this PKI's server certificate.
    fn section(&self, client_auth: ClientAuth) -> TlsConfig {
        TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: (client_auth != ClientAuth::Off).then(|| self.path("ca.pem")),
            client_auth,
            min_version: Default::default(),
            handshake_timeout_ms: 5_000,
        }
    }

    fn client_config(
        &self,
        version: Option<&'static SupportedProtocolVersion>,
        identity: Option<Identity>,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = match version {
            Some(v) => vec![v],
            None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        })
    }

    fn plain_config(&self) -> Arc<ClientConfig> {
        self.client_config(None, None)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn identity(chain_pem: &str, key_pem: &str) -> Identity {
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes()).map(Result::unwrap).collect();
    (chain, PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
}

// ---------------------------------------------------------------------------
// Brokers and clients

fn tls_config(pki: &Pki, client_auth: ClientAuth) -> Config {
    Config {
        tls: Some(pki.section(client_auth)),
        http: HttpAddr::At("127.0.0.1:0".parse().unwrap()),
        ..test_config(2)
    }
}

/// What a TLS client got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Welcome,
    Msg { sid: u32, topic: String, payload: Vec<u8> },
    Pong(u64),
    Err(u16, String),
    GoAway,
    Other(String),
}

/// A corecast client over rustls.
struct TlsClient {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    nonce: u64,
}

impl TlsClient {
    /// Connects and completes the TLS handshake (not HELLO).
    fn try_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Self> {
        Self::over(TcpStream::connect(addr)?, config)
    }

    /// Completes the TLS handshake over `sock`.
    fn over(sock: TcpStream, config: Arc<ClientConfig>) -> std::io::Result<Self> {
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).unwrap();
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient { tls, buf: Vec::new(), nonce: 0 })
    }

    /// Connects, handshakes and says HELLO.
    fn connect(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> Self {
        let mut c = Self::try_connect(addr, config).expect("TLS handshake");
        c.hello(name);
        assert_eq!(c.recv(), Got::Welcome);
        c
    }

    fn send(&mut self, frame: &ClientFrame<'_>) {
        let mut out = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut out);
        self.tls.write_all(&out).expect("TLS write");
        self.tls.flush().expect("TLS flush");
    }

    fn try_send(&mut self, frame: &ClientFrame<'_>) -> std::io::Result<()> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        self.tls.write_all(&out)?;
        self.tls.flush()
    }

    fn hello(&mut self, name: &str) {
        self.send(&ClientFrame::Hello(Hello { version: VERSION, name, token: b"" }));
    }

    fn sub(&mut self, sid: u32, topic: &str) {
        self.send(&ClientFrame::Sub(Sub { sid, topic, queue_group: "", lossy: false }));
    }

    fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.send(&ClientFrame::Pub(Pub { topic, reply_to: "", payload }));
    }

    /// PING, and the frames before its PONG.
    fn flush(&mut self) -> Vec<Got> {
        self.nonce += 1;
        let nonce = self.nonce;
        self.send(&ClientFrame::Ping { nonce });
        let mut before = Vec::new();
        loop {
            match self.recv() {
                Got::Pong(n) if n == nonce => return before,
                other => before.push(other),
            }
        }
    }

    /// The next frame, or why none came.
    fn next(&mut self, timeout: Duration) -> Result<Got, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut src = &self.buf[..];
            let before = src.len();
            match ServerFrame::decode(&mut src, u32::MAX) {
                Ok(Some(frame)) => {
                    let got = match frame {
                        ServerFrame::Welcome(_) => Got::Welcome,
                        ServerFrame::Msg(m) => Got::Msg {
                            sid: m.sid,
                            topic: m.topic.into(),
                            payload: m.payload.to_vec(),
                        },
                        ServerFrame::Pong { nonce } => Got::Pong(nonce),
                        ServerFrame::Err(e) => Got::Err(e.code, e.text.into()),
                        ServerFrame::GoAway { .. } => Got::GoAway,
                        other => Got::Other(format!("{other:?}")),
                    };
                    let used = before - src.len();
                    self.buf.drain(..used);
                    return Ok(got);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("undecodable frame: {e}")),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("timeout".into());
            }
            self.tls.sock.set_read_timeout(Some(deadline - now)).unwrap();
            let mut chunk = vec![0u8; 64 << 10];
            match self.tls.read(&mut chunk) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err("timeout".into())
                }
                Err(e) => return Err(format!("failed: {e}")),
            }
        }
    }

    fn recv(&mut self) -> Got {
        self.next(Duration::from_secs(10)).expect("a frame")
    }

    fn recv_msg(&mut self) -> (u32, String, Vec<u8>) {
        match self.recv() {
            Got::Msg { sid, topic, payload } => (sid, topic, payload),
            other => panic!("expected MSG, got {other:?}"),
        }
    }

    fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// The server certificate this session was served.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.tls.conn.peer_certificates().expect("certificates")[0].clone().into_owned()
    }
}

/// The monitoring port's JSON at `path`.
fn http_json(broker: &Broker, path: &str) -> Value {
    let addr = broker.http_addr().expect("a monitoring port");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split_once("\r\n\r\n").expect("a response").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The open connection named `name` in `/connz`.
fn conn_named(broker: &Broker, name: &str) -> Value {
    let page = http_json(broker, "/connz?limit=1000");
    let conns = page["connections"].as_array().expect("connections").clone();
    conns.into_iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} in {page}"))
}

/// Waits for a closed record whose reason is `reason`; returns how many.
fn closed_with(broker: &Broker, reason: &str, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = http_json(broker, "/connz?state=closed&limit=1000");
        let n = page["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|c| c["reason"] == reason)
            .count();
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "no {at_least} closed with {reason:?}: {page}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection the server refused during or right after the handshake
/// ends without a WELCOME.
fn refused(addr: SocketAddr, config: Arc<ClientConfig>) {
    let start = Instant::now();
    let Ok(mut c) = TlsClient::try_connect(addr, config) else { return };
    // TLS 1.3 clients finish first; the refusal comes with the next read.
    let _ = c.try_send(&ClientFrame::Hello(Hello { version: VERSION, name: "x", token: b"" }));
    match c.next(Duration::from_secs(5)) {
        Err(e) => assert_ne!(e, "timeout", "refused at once"),
        Ok(got) => panic!("refused connection got {got:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "closed promptly: {:?}", start.elapsed());
}

fn finish(broker: Broker) {
    let c = wait_idle(&broker);
    assert_eq!(c.tls_connections, 0, "{c:#?}");
    assert_eq!(c.task_panics, 0, "{c:#?}");
    broker.shutdown();
    broker.wait().expect("stops cleanly");
}

// ---------------------------------------------------------------------------
// Tests

/// A subscriber on TLS 1.3 gets what a publisher on TLS 1.2 sends, and
/// `/connz` shows each session's version.
#[test]
fn pubsub_over_tls_1_3_and_tls_1_2() {
    let pki = Pki::new("versions");
    let broker = start(tls_config(&pki, ClientAuth::Off));
    let addr = broker.tls_addr().expect("a TLS port");
    let v13 = pki.client_config(Some(&rustls::version::TLS13), None);
    let v12 = pki.client_config(Some(&rustls::version::TLS12), None);
    let mut sub = TlsClient::connect(addr, v13, "sub13");
    let mut publ = TlsClient::connect(addr, v12, "pub12");
    assert_eq!(sub.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(publ.version(), Some(rustls::ProtocolVersion::TLSv1_2));
    sub.sub(1, "t.versions");
    assert!(sub.flush().is_empty());
    for i in 0..100u32 {
        publ.publish("t.versions", &i.to_be_bytes());
    }
    assert!(publ.flush().is_empty());
    for i in 0..100u32 {
        assert_eq!(sub.recv_msg(), (1, "t.versions".into(), i.to_be_bytes().to_vec()));
    }
    let s = conn_named(&broker, "sub13");
    assert_eq!((s["tls"].clone(), s["tls_version"].clone()), (true.into(), "TLSv1.3".into()));
    let p = conn_named(&broker, "pub12");
    assert_eq!(p["tls_version"], "TLSv1.2");
    let c = broker.counters().total;
    assert_eq!((c.tls_connections, c.tls_handshakes, c.tls_handshake_failures), (2, 2, 0));
    // A plain connection says so.
    let mut plain = Client::connect_raw(broker.local_addr());
    plain.hello("plain", b"");
    plain.expect_welcome();
    let p = conn_named(&broker, "plain");
    assert_eq!(p["tls"], false);
    assert!(p.get("tls_version").is_none(), "{p}");
    drop((sub, publ, plain));
    finish(broker);
}

/// A plain-TCP publisher reaches a TLS subscriber, and a TLS publisher a
/// plain subscriber.
#[test]
fn plain_and_tls_clients_reach_each_other() {
    let pki = Pki::new("mixed");
    let broker = start(tls_config(&pki, ClientAuth::Off));
    let addr = broker.tls_addr().expect("a TLS port");
    let mut tls_sub = TlsClient::connect(addr, pki.plain_config(), "tls-sub");
    tls_sub.sub(1, "to.tls");
    assert!(tls_sub.flush().is_empty());
    let mut plain_sub = Client::connect(broker.local_addr());
    plain_sub.sub(2, "to.plain");
    plain_sub.flush_empty();
    let mut plain_pub = Client::connect(broker.local_addr());
    plain_pub.publish("to.tls", b"from plain");
    plain_pub.flush_empty();
    assert_eq!(tls_sub.recv_msg(), (1, "to.tls".into(), b"from plain".to_vec()));
    let mut tls_pub = TlsClient::connect(addr, pki.plain_config(), "tls-pub");
    tls_pub.publish("to.plain", b"from tls");
    assert!(tls_pub.flush().is_empty());
    assert_eq!(plain_sub.recv_msg(), (2, "to.plain".into(), b"from tls".to_vec()));
    drop((tls_sub, plain_sub, plain_pub, tls_pub));
    finish(broker);
}

/// Frames larger than the 64 KiB rustls buffer, and 1 MiB messages, go
/// both ways intact (TLS to TLS, plain to TLS, TLS to plain).
#[test]
fn large_frames_and_1_mib_messages_both_ways() {
    let pki = Pki::new("large");
    let cfg =
        Config { max_frame: 2 << 20, max_pending: 16 << 20, ..tls_config(&pki, ClientAuth::Off) };
    let broker = start(cfg);
    let addr = broker.tls_addr().expect("a TLS port");
    let mut tls_sub = TlsClient::connect(addr, pki.plain_config(), "tls-sub");
    tls_sub.sub(1, "big");
    assert!(tls_sub.flush().is_empty());
    let mut plain_sub = Client::connect(broker.local_addr());
    plain_sub.sub(2, "big");
    plain_sub.flush_empty();
    let payloads: Vec<Vec<u8>> = [100 << 10, 1 << 20, 3, 1 << 20]
        .iter()
        .enumerate()
        .map(|(i, &len)| (0..len).map(|j| (j * 7 + i * 13) as u8).collect())
        .collect();
    let mut tls_pub = TlsClient::connect(addr, pki.plain_config(), "tls-pub");
    for p in &payloads {
        tls_pub.publish("big", p);
    }
    assert!(tls_pub.flush().is_empty());
    let mut plain_pub = Client::connect(broker.local_addr());
    for p in &payloads {
        plain_pub.publish("big", p);
    }
    plain_pub.flush_empty();
    for _ in 0..2 {
        for p in &payloads {
            let (sid, _, got) = tls_sub.recv_msg();
            assert_eq!((sid, got.len()), (1, p.len()));
            assert!(got == *p, "payload intact");
            let (sid, _, got) = plain_sub.recv_msg();
            assert_eq!((sid, got.len()), (2, p.len()));
            assert!(got == *p, "payload intact");
        }
    }
    drop((tls_sub, plain_sub, tls_pub, plain_pub));
    finish(broker);
}

/// One publish reaches 50 TLS subscribers, many times over.
#[test]
fn fan_out_to_50_tls_subscribers() {
    let pki = Pki::new("fanout");
    let broker = start(tls_config(&pki, ClientAuth::Off));
    let addr = broker.tls_addr().expect("a TLS port");
    let config = pki.plain_config();
    let mut subs: Vec<TlsClient> = (0..50)
        .map(|i| {
            let mut s = TlsClient::connect(addr, Arc::clone(&config), &format!("s{i}"));
            s.sub(1, "fan");
            assert!(s.flush().is_empty());
            s
        })
        .collect();
    let mut publ = TlsClient::connect(addr, Arc::clone(&config), "pub");
    let payload = vec![0x5a; 1000];
    for _ in 0..200 {
        publ.publish("fan", &payload);
    }
    assert!(publ.flush().is_empty());
    for s in &mut subs {
        for _ in 0..200 {
            assert_eq!(s.recv_msg().2.len(), 1000);
        }
    }
    assert_eq!(broker.counters().total.tls_connections, 51);
    drop((subs, publ));
    finish(broker);
}

/// With `client_auth = "required"`: a certificate of the CA is welcome and
/// its subject is what the slot records; one of another CA, an expired one
/// and none at all are refused at once, counted and recorded with why.
#[test]
fn mutual_tls_required() {
    let pki = Pki::new("mtls");
    let broker = start(tls_config(&pki, ClientAuth::Required));
    let addr = broker.tls_addr().expect("a TLS port");
    let (chain, key, _) = pki.ca.issue(Leaf::client("svc-a", "corp"));
    let good = pki.client_config(None, Some(identity(&chain, &key)));
    let mut ok = TlsClient::connect(addr, good, "svc-a");
    ok.sub(1, "m");
    assert!(ok.flush().is_empty());
    let entry = conn_named(&broker, "svc-a");
    assert_eq!(entry["tls_subject"], "CN=svc-a,O=corp", "{entry}");

    let other = Ca::new("another CA");
    let (chain, key, _) = other.issue(Leaf::client("svc-b", "corp"));
    refused(addr, pki.client_config(None, Some(identity(&chain, &key))));
    closed_with(&broker, "tls: client certificate: unknown issuer", 1);

    let (chain, key, _) = pki.ca.issue(Leaf { expired: true, ..Leaf::client("old", "corp") });
    refused(addr, pki.client_config(None, Some(identity(&chain, &key))));
    closed_with(&broker, "tls: client certificate expired", 1);

    refused(addr, pki.client_config(None, None));
    closed_with(&broker, "tls: no client certificate", 1);

    let c = wait_counters(&broker, "failures counted", |c| c.tls_handshake_failures == 3);
    assert_eq!((c.tls_handshakes, c.tls_connections), (1, 1), "{c:#?}");
    // The welcome session never noticed.
    assert!(ok.flush().is_empty());
    drop(ok);
    finish(broker);
}

/// A corecast HELLO in clear on the TLS port is closed within a second and
/// counted, while an established session goes on.
#[test]
fn plaintext_on_the_tls_port_is_closed_and_counted() {
    let pki = Pki::new("plain");
    let broker = start(tls_config(&pki, ClientAuth::Off));
    let addr = broker.tls_addr().expect("a TLS port");
    let mut session = TlsClient::connect(addr, pki.plain_config(), "session");
    session.sub(1, "still");
    assert!(session.flush().is_empty());
    for _ in 0..3 {
        let start = Instant::now();
        let mut raw = TcpStream::connect(addr).unwrap();
        let mut hello = Vec::new();
        ClientFrame::Hello(Hello { version: VERSION, name: "clear", token: b"" })
            .encode(&mut hello);
        raw.write_all(&hello).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut sink = Vec::new();
        match raw.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "closed, not timed out"),
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        // At most a TLS alert came back, never a corecast frame.
        assert!(sink.is_empty() || sink[0] == 0x15, "{sink:?}");
    }
    closed_with(&broker, "tls: not a TLS handshake", 3);
    wait_counters(&broker, "counted", |c| c.tls_handshake_failures == 3);
    let mut publ = TlsClient::connect(addr, pki.plain_config(), "pub");
    publ.publish("still", b"here");
    assert!(publ.flush().is_empty());
    assert_eq!(session.recv_msg().2, b"here");
    drop((session, publ));
    finish(broker);
}

/// The first bytes of a ClientHello made by a real client.
fn client_hello_start(pki: &Pki, n: usize) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(pki.plain_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello.truncate(n);
    hello
}

/// A client that stops in the middle of its ClientHello is closed at the
/// TLS handshake timeout, with that reason on record.
#[test]
fn a_truncated_handshake_is_closed_at_the_tls_handshake_timeout() {
    let pki = Pki::new("truncated");
    let mut cfg = tls_config(&pki, ClientAuth::Off);
    if let Some(tls) = &mut cfg.tls {
        tls.handshake_timeout_ms = 300;
    }
    let broker = start(cfg);
    let addr = broker.tls_addr().expect("a TLS port");
    let start = Instant::now();
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(&client_hello_start(&pki, 40)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300), "not before the timeout: {waited:?}");
    assert!(waited < Duration::from_secs(2), "at the timeout: {waited:?}");
    closed_with(&broker, "tls: handshake timeout", 1);
    let c = wait_counters(&broker, "counted", |c| c.tls_handshake_failures == 1);
    assert_eq!(c.handshake_timeouts, 0, "not a HELLO timeout: {c:#?}");
    finish(broker);
}

/// A reload reads the certificate files again: new connections get the new
/// certificate, open ones keep their session. Files that do not load keep
/// the certificate in force and say so.
#[test]
fn a_reload_serves_the_new_certificate() {
    let pki = Pki::new("reload");
    let cfg = tls_config(&pki, ClientAuth::Off);
    let broker = start(cfg.clone());
    let addr = broker.tls_addr().expect("a TLS port");
    let mut before = TlsClient::connect(addr, pki.plain_config(), "before");
    assert_eq!(before.server_cert(), pki.server_der);

    let (cert, key, new_der) = pki.ca.issue(Leaf::server(2));
    let (cert_path, key_path) = (pki.path("server2.pem"), pki.path("server2.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let mut next = cfg.clone();
    if let Some(tls) = &mut next.tls {
        (tls.cert, tls.key) = (cert_path.clone(), key_path.clone());
    }
    let report = broker.reload(next.clone()).expect("valid");
    assert_eq!(report.changed, ["tls"], "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    for _ in 0..4 {
        let after = TlsClient::connect(addr, pki.plain_config(), "after");
        assert_eq!(after.server_cert(), new_der, "the new certificate");
        assert_ne!(new_der, pki.server_der);
    }
    before.sub(1, "r");
    assert!(before.flush().is_empty(), "the open session goes on");

    // Files that do not load: the certificate in force stays.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let report = broker.reload(next).expect("valid");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "tls");
    assert!(report.failed[0].1.contains("server2.pem"), "{report:?}");
    let after = TlsClient::connect(addr, pki.plain_config(), "after-failed");
    assert_eq!(after.server_cert(), new_der, "still the last good certificate");
    // The listen address is fixed at start.
    let mut moved = cfg;
    if let Some(tls) = &mut moved.tls {
        tls.listen = "127.0.0.1:1".parse().unwrap();
    }
    let report = broker.reload(moved).expect("valid");
    assert!(report.refused.contains(&"tls.listen".to_string()), "{report:?}");
    assert_eq!(broker.tls_addr(), Some(addr));
    drop((before, after));
    finish(broker);
}

/// 500 connect, handshake, HELLO and close cycles and 500 clients that
/// leave in the middle of the handshake leave nothing behind.
#[test]
fn a_storm_of_tls_connections_leaves_nothing_behind() {
    let pki = Pki::new("storm");
    let broker = start(tls_config(&pki, ClientAuth::Off));
    let addr = broker.tls_addr().expect("a TLS port");
    let config = pki.plain_config();
    let hello = client_hello_start(&pki, 60);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let config = Arc::clone(&config);
            let hello = hello.clone();
            std::thread::spawn(move || {
                for i in 0..125 {
                    let mut c = TlsClient::connect(addr, Arc::clone(&config), &format!("w{w}-{i}"));
                    if i % 10 == 0 {
                        c.sub(1, "storm");
                        assert!(c.flush().is_empty());
                    }
                    drop(c);
                    let mut raw = TcpStream::connect(addr).unwrap();
                    let _ = raw.write_all(&hello[..(i % hello.len()).max(1)]);
                    drop(raw);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let c = wait_counters(&broker, "every handshake accounted for", |c| {
        c.tls_handshakes == 500 && c.tls_handshake_failures == 500
    });
    assert_eq!(c.connections_accepted, 1000);
    let c = wait_idle(&broker);
    assert_eq!((c.tls_connections, c.tasks_alive, c.buffers_out), (0, 0, 0), "{c:#?}");
    assert_eq!((c.memory_used, c.slots_in_use), (0, 0), "{c:#?}");
    finish(broker);
}

/// Lame duck closes the TLS port too; a TLS client gets its GOAWAY, then
/// the session's close_notify before the socket's end, and every message
/// published before it.
#[test]
fn lame_duck_closes_the_tls_port_and_ends_sessions_cleanly() {
    let pki = Pki::new("lameduck");
    let cfg = Config {
        lame_duck_grace_ms: 200,
        lame_duck_duration_ms: 100,
        ..tls_config(&pki, ClientAuth::Off)
    };
    let broker = start(cfg);
    let addr = broker.tls_addr().expect("a TLS port");
    let mut sub = TlsClient::connect(addr, pki.plain_config(), "sub");
    sub.sub(1, "ld");
    assert!(sub.flush().is_empty());
    let mut publ = TlsClient::connect(addr, pki.plain_config(), "pub");
    let payload = vec![1u8; 60 << 10];
    for _ in 0..3 {
        publ.publish("ld", &payload);
    }
    assert!(publ.flush().is_empty());
    broker.lame_duck();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "the TLS port still accepts");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        assert_eq!(sub.recv_msg().2.len(), payload.len());
    }
    assert_eq!(sub.recv(), Got::GoAway);
    // Ok(0) from rustls: a close_notify, not a bare end of the socket.
    assert_eq!(sub.next(Duration::from_secs(5)), Err("closed".to_string()));
    drop((sub, publ));
    broker.wait().expect("stops cleanly");
}

/// A TLS subscriber that stops reading is cut off at the write deadline:
/// the records rustls holds and the socket refuses count as unwritten.
#[test]
fn a_tls_subscriber_that_stops_reading_meets_the_write_deadline() {
    let pki = Pki::new("deadline");
    let cfg = Config {
        write_deadline_ms: 300,
        max_pending: 8 << 20,
        ..tls_config(&pki, ClientAuth::Off)
    };
    let broker = start(cfg);
    let addr = broker.tls_addr().expect("a TLS port");
    let sock = {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.set_mss(536).unwrap();
        s.connect(&addr.into()).unwrap();
        TcpStream::from(s)
    };
    let mut sub = TlsClient::over(sock, pki.plain_config()).expect("TLS handshake");
    sub.hello("stuck");
    assert_eq!(sub.recv(), Got::Welcome);
    sub.sub(1, "flood");
    assert!(sub.flush().is_empty());
    let mut publ = TlsClient::connect(addr, pki.plain_config(), "pub");
    let payload = vec![7u8; 16 << 10];
    for _ in 0..128 {
        publ.publish("flood", &payload);
    }
    assert!(publ.flush().is_empty());
    closed_with(&broker, "slow consumer: write_deadline", 1);
    drop((sub, publ));
    finish(broker);
}

/// With `client_auth = "optional"`: no certificate is welcome (no subject
/// recorded), a good one is recorded, one of another CA is still refused.
#[test]
fn mutual_tls_optional() {
    let pki = Pki::new("optional");
    let broker = start(tls_config(&pki, ClientAuth::Optional));
    let addr = broker.tls_addr().expect("a TLS port");
    let anonymous = TlsClient::connect(addr, pki.plain_config(), "anonymous");
    let entry = conn_named(&broker, "anonymous");
    assert!(entry.get("tls_subject").is_none(), "{entry}");
    let (chain, key, _) = pki.ca.issue(Leaf::client("svc-c", "corp"));
    let known =
        TlsClient::connect(addr, pki.client_config(None, Some(identity(&chain, &key))), "c");
    assert_eq!(conn_named(&broker, "c")["tls_subject"], "CN=svc-c,O=corp");
    let other = Ca::new("another CA");
    let (chain, key, _) = other.issue(Leaf::client("svc-d", "corp"));
    refused(addr, pki.client_config(None, Some(identity(&chain, &key))));
    closed_with(&broker, "tls: client certificate: unknown issuer", 1);
    drop((anonymous, known));
    finish(broker);
}

/// Certificate files that do not load stop the start, naming the file.
#[test]
fn a_certificate_that_does_not_load_stops_the_start() {
    let pki = Pki::new("badstart");
    let mut cfg = tls_config(&pki, ClientAuth::Off);
    if let Some(tls) = &mut cfg.tls {
        tls.key = pki.path("missing.key");
    }
    let err = Broker::start(cfg).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("[tls] key") && message.contains("missing.key"), "{message}");
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    let mut cfg = tls_config(&pki, ClientAuth::Off);
    if let Some(tls) = &mut cfg.tls {
        tls.cert = pki.path("empty.pem");
    }
    let message = Broker::start(cfg).expect_err("refused").to_string();
    assert!(message.contains("empty.pem") && message.contains("no PEM certificate"), "{message}");
}

/// `max_connections` counts both ports; a connection refused on the TLS
/// port is closed without a frame, counted and recorded.
#[test]
fn a_full_core_closes_tls_connections_without_a_frame() {
    let pki = Pki::new("full");
    let cfg = Config { cores: 1, max_connections: 2, ..tls_config(&pki, ClientAuth::Off) };
    let broker = start(cfg);
    let addr = broker.tls_addr().expect("a TLS port");
    let plain = Client::connect(broker.local_addr());
    let tls = TlsClient::connect(addr, pki.plain_config(), "tls");
    let start = Instant::now();
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "no plaintext ERR on the TLS port: {got:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    assert!(TlsClient::try_connect(addr, pki.plain_config()).is_err(), "refused");
    let c = wait_counters(&broker, "refusals counted", |c| c.connections_refused == 2);
    assert_eq!(c.tls_handshake_failures, 0, "{c:#?}");
    closed_with(&broker, "server full", 2);
    drop((plain, tls));
    finish(broker);
}

/// A client certificate whose subject a user names logs in as that user,
/// with that user's rules, and no credential in `HELLO`; a certificate the
/// CA signed for a subject no user names gets `auth failed`.
#[test]
fn a_client_certificate_authenticates_as_the_user_with_its_subject() {
    let pki = Pki::new("cert-users");
    let svc = corecast::auth::UserConfig {
        name: "svc-a".into(),
        tls_subject: Some("CN=svc-a,O=corp".into()),
        permissions: Some(corecast::auth::Permissions {
            subscribe: corecast::auth::Rules { allow: Some(vec!["m.>".into()]), deny: vec![] },
            ..Default::default()
        }),
        ..Default::default()
    };
    let cfg = Config { users: vec![svc], ..tls_config(&pki, ClientAuth::Required) };
    let broker = start(cfg);
    let addr = broker.tls_addr().expect("a TLS port");
    let (chain, key, _) = pki.ca.issue(Leaf::client("svc-a", "corp"));
    let mut ok =
        TlsClient::connect(addr, pki.client_config(None, Some(identity(&chain, &key))), "a");
    ok.sub(1, "m.x");
    ok.sub(2, "other");
    assert!(matches!(ok.flush().as_slice(), [Got::Err(104, _)]), "the user's rules apply");
    let entry = conn_named(&broker, "a");
    assert_eq!(
        (&entry["user"], &entry["credential"]),
        (&Value::from("svc-a"), &Value::from("tls"))
    );

    let (chain, key, _) = pki.ca.issue(Leaf::client("svc-z", "corp"));
    let config = pki.client_config(None, Some(identity(&chain, &key)));
    let mut stranger = TlsClient::try_connect(addr, config).expect("the CA signed it");
    stranger.hello("z");
    assert!(matches!(stranger.recv(), Got::Err(7, _)), "no user has its subject");
    assert_eq!(broker.counters().total.auth_failures, 1);
    drop(ok);
    finish(broker);
}

// ---------------------------------------------------------------------------
// The web port over TLS

/// `[web] tls = true`: WebSocket sessions (`wss://`) and SSE streams
/// (`https://`) over the certificate of `[tls]`, a plaintext request
/// refused as a failed handshake, and every slot back afterwards.
#[test]
fn the_web_port_serves_wss_and_https_with_the_tls_certificate() {
    let pki = Pki::new("web");
    let web = corecast::web::WebConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allowed_origins: Vec::new(),
        tls: true,
    };
    let broker = start(Config { web: Some(web), ..tls_config(&pki, ClientAuth::Off) });
    let addr = broker.web_addr().expect("a web port");
    let tls = |addr| TlsClient::try_connect(addr, pki.plain_config()).expect("handshake").tls;

    let (mut ws, response) =
        tungstenite::client(format!("wss://localhost:{}/", addr.port()), tls(addr))
            .expect("upgrade over TLS");
    assert_eq!(response.status(), 101);
    let mut frames = Vec::new();
    for frame in [
        ClientFrame::Hello(Hello { version: VERSION, name: "wss", token: b"" }),
        ClientFrame::Sub(Sub { sid: 1, topic: "secure", queue_group: "", lossy: false }),
        ClientFrame::Ping { nonce: 5 },
    ] {
        frame.encode(&mut frames);
    }
    ws.send(tungstenite::Message::binary(frames)).unwrap();
    let mut got = Vec::new();
    let mut read_frame = |ws: &mut tungstenite::WebSocket<_>| loop {
        if let Some(frame) = ServerFrame::decode(&mut &got[..], u32::MAX).unwrap() {
            let text = format!("{frame:?}");
            let used = frame.encoded_len();
            got.drain(..used);
            return text;
        }
        match ws.read().unwrap() {
            tungstenite::Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("{other:?}"),
        }
    };
    assert!(read_frame(&mut ws).starts_with("Welcome"));
    assert_eq!(read_frame(&mut ws), "Pong { nonce: 5 }");

    let mut sse = tls(addr);
    let request =
        format!("GET /sse?topic=secure HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", addr.port());
    sse.write_all(request.as_bytes()).unwrap();

    let mut publisher = Client::connect(broker.local_addr());
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.ends_with(b"\r\n\r\n") {
        assert!(Instant::now() < deadline, "no SSE head: {:?}", String::from_utf8_lossy(&text));
        let mut byte = [0u8; 1];
        sse.read_exact(&mut byte).unwrap();
        text.push(byte[0]);
    }
    assert!(text.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&text));
    publisher.publish("secure", b"over tls");
    publisher.flush();
    assert!(read_frame(&mut ws).contains("payload: [111, 118, 101, 114"));
    let mut event = vec![0u8; "id: 1\nevent: secure\ndata: over tls\n\n".len()];
    sse.read_exact(&mut event).unwrap();
    assert_eq!(String::from_utf8_lossy(&event), "id: 1\nevent: secure\ndata: over tls\n\n");

    // Plaintext HTTP to a TLS port is a failed handshake, nothing else.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    plain.write_all(b"GET /sse?topic=secure HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP"), "{:?}", String::from_utf8_lossy(&answer));
    let c = wait_counters(&broker, "the failed handshake", |c| c.tls_handshake_failures == 1);
    assert_eq!((c.web_connections, c.tls_connections, c.ws_sessions, c.sse_streams), (2, 2, 1, 1));

    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop((ws, sse, publisher));
    wait_idle(&broker);
}
