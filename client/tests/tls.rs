#![allow(clippy::unwrap_used)]
//! TLS and credentials, with both clients, against the broker's own TLS
//! port: pub/sub over TLS, mutual TLS, a CA that does not match,
//! reconnection, and the credentials `HELLO` carries.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use common::{tls::*, *};
use corecast::Config;
use corecast_client::{blocking, tokio as async_client, ClientError, Credentials, Pem, TlsOptions};
use corecast_proto::{
    frame::Welcome, ClientFrame11, Credential, ErrorCode, ServerFrame11, VERSION,
};

const SHORT: Duration = Duration::from_secs(5);

fn blocking_roundtrip(client: &blocking::Client, topic: &str) {
    let sub = client.subscribe(topic).unwrap();
    client.publish(topic, "over tls").unwrap();
    let msg = sub.recv_timeout(SHORT).unwrap().expect("a message within 5 s");
    assert_eq!(&msg.payload[..], b"over tls");
    // A payload larger than one TLS record (16 KiB) and than a read.
    let big: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
    client.publish(topic, &big).unwrap();
    let msg = sub.recv_timeout(SHORT).unwrap().expect("the large message");
    assert_eq!(&msg.payload[..], &big[..]);
}

async fn tokio_roundtrip(client: &async_client::Client, topic: &str) {
    let mut sub = client.subscribe(topic).await.unwrap();
    client.publish(topic, "over tls").await.unwrap();
    let msg = tokio::time::timeout(SHORT, sub.recv()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"over tls");
    let big: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
    client.publish(topic, &big).await.unwrap();
    let msg = tokio::time::timeout(SHORT, sub.recv()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], &big[..]);
}

#[test]
fn blocking_client_publishes_and_subscribes_over_tls() {
    let ca = Ca::new("test CA");
    let broker = start(tls_config(&ca, None));
    let addr = tls_addr(&broker);
    // The CA from a file; the server name is the address's IP.
    let ca_file = temp_file("ca.pem", &ca.pem());
    let options = options("tls-blocking").tls(TlsOptions::new(Pem::file(&ca_file)));
    let client = blocking::Client::connect_with(addr, options).unwrap();
    blocking_roundtrip(&client, "tls.blocking");
    // A second client sees the first one's messages: both go through TLS.
    let other = blocking::Client::connect_with(
        addr,
        common::options("tls-other").tls(TlsOptions::new(Pem::bytes(ca.pem()))),
    )
    .unwrap();
    let sub = other.subscribe("tls.shared").unwrap();
    client.publish("tls.shared", "from the first").unwrap();
    assert_eq!(&sub.recv_timeout(SHORT).unwrap().unwrap().payload[..], b"from the first");
    let c = broker.counters().total;
    assert_eq!((c.tls_handshakes, c.tls_connections), (2, 2), "{c:#?}");
    client.close().unwrap();
    other.close().unwrap();
    stop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_client_publishes_and_subscribes_over_tls() {
    let ca = Ca::new("test CA");
    let broker = start(tls_config(&ca, None));
    // The CA in memory, and a DNS server name for an IP address.
    let tls_options = TlsOptions::new(Pem::bytes(ca.pem())).server_name("localhost");
    let client = async_client::Client::connect_with(
        tls_addr(&broker),
        options("tls-tokio").tls(tls_options),
    )
    .await
    .unwrap();
    tokio_roundtrip(&client, "tls.tokio").await;
    assert_eq!(broker.counters().total.tls_handshakes, 1);
    client.close().await.unwrap();
    tokio::task::spawn_blocking(move || stop(broker)).await.unwrap();
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let ca = Ca::new("test CA");
    let client_ca = Ca::new("client CA");
    let broker = start(tls_config(&ca, Some(&client_ca)));
    let addr = tls_addr(&broker);
    let alice = client_ca.client("alice");
    let (cert, key) =
        (temp_file("alice.pem", &alice.cert_pem), temp_file("alice.key", &alice.key_pem));
    let with_cert =
        TlsOptions::new(Pem::bytes(ca.pem())).client_cert(Pem::file(&cert), Pem::file(&key));
    let client =
        blocking::Client::connect_with(addr, options("mtls").tls(with_cert.clone())).unwrap();
    blocking_roundtrip(&client, "mtls.blocking");
    client.close().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = options("mtls-tokio").tls(with_cert);
        let client = async_client::Client::connect_with(addr, options).await.unwrap();
        tokio_roundtrip(&client, "mtls.tokio").await;
        client.close().await.unwrap();
    });

    // Without a certificate, or with one of another CA, the broker refuses
    // the client, which says so.
    let stranger = Ca::new("another CA").client("mallory");
    for tls_options in [
        TlsOptions::new(Pem::bytes(ca.pem())),
        TlsOptions::new(Pem::bytes(ca.pem())).client_cert(
            Pem::bytes(stranger.cert_pem.clone()),
            Pem::bytes(stranger.key_pem.clone()),
        ),
    ] {
        let options = options("no-cert").tls(tls_options.clone()).no_reconnect();
        let err = blocking::Client::connect_with(addr, options).unwrap_err();
        assert!(matches!(err, ClientError::TlsHandshake { .. }), "blocking: {err:?}");
        let options = common::options("no-cert").tls(tls_options).no_reconnect();
        let err = runtime.block_on(async_client::Client::connect_with(addr, options)).unwrap_err();
        assert!(matches!(err, ClientError::TlsHandshake { .. }), "tokio: {err:?}");
    }
    // The broker counts a failure once it has seen the client go.
    let c = wait_counters(&broker, "4 failed handshakes", |c| c.tls_handshake_failures == 4);
    assert_eq!(c.tls_handshakes, 2, "{c:#?}");
    stop(broker);
}

#[test]
fn a_broker_certificate_of_another_ca_fails_with_a_clear_error() {
    let ca = Ca::new("test CA");
    let broker = start(tls_config(&ca, None));
    let addr = tls_addr(&broker);
    let wrong = TlsOptions::new(Pem::bytes(Ca::new("another CA").pem()));
    let err =
        blocking::Client::connect_with(addr, options("wrong-ca").tls(wrong.clone())).unwrap_err();
    let ClientError::TlsHandshake { addr: told, reason } = &err else { panic!("{err:?}") };
    assert_eq!(told, &addr.to_string());
    assert!(reason.contains("certificate"), "{reason}");
    let text = err.to_string();
    assert!(text.starts_with(&format!("TLS handshake with {addr} failed")), "{text}");
    assert!(!err.is_transient());

    // The right CA, but a name the certificate does not hold.
    let misnamed = TlsOptions::new(Pem::bytes(ca.pem())).server_name("broker.example");
    let err = blocking::Client::connect_with(addr, options("bad-name").tls(misnamed)).unwrap_err();
    assert!(
        matches!(&err, ClientError::TlsHandshake { reason, .. } if reason.contains("certificate")),
        "{err:?}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(async_client::Client::connect_with(addr, options("wrong-ca").tls(wrong)))
        .unwrap_err();
    assert!(matches!(err, ClientError::TlsHandshake { .. }), "{err:?}");
    // A CA file that does not exist is told before connecting.
    let missing = TlsOptions::new(Pem::file("/nonexistent/ca.pem"));
    let err = blocking::Client::connect_with(addr, options("no-ca").tls(missing)).unwrap_err();
    assert!(
        matches!(&err, ClientError::TlsConfig(m) if m.contains("/nonexistent/ca.pem")),
        "{err:?}"
    );
    stop(broker);
}

#[test]
fn a_broker_with_a_shared_token_accepts_the_legacy_token_kind() {
    let ca = Ca::new("test CA");
    let broker = start(Config { auth_token: Some("s3cret".into()), ..tls_config(&ca, None) });
    let credentials = Credentials::token("s3cret");
    let plain = options("token").credentials(credentials.clone());
    let client = blocking::Client::connect_with(broker.local_addr(), plain).unwrap();
    client.flush().unwrap();
    client.close().unwrap();
    let over_tls =
        options("token-tls").credentials(credentials).tls(TlsOptions::new(Pem::bytes(ca.pem())));
    let client = blocking::Client::connect_with(tls_addr(&broker), over_tls).unwrap();
    blocking_roundtrip(&client, "token.tls");
    client.close().unwrap();
    let wrong = options("wrong").auth_token("guess").no_reconnect();
    let err = blocking::Client::connect_with(broker.local_addr(), wrong).unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(e) if e.error_code() == Some(ErrorCode::AuthFailed)),
        "{err:?}"
    );
    stop(broker);
}

/// A fake broker that takes one connection, hands its `HELLO` to `check`,
/// and grants 1.1.
fn hello_catcher() -> (std::net::SocketAddr, thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let hello = read_frame(&mut stream);
        let mut out = Vec::new();
        let welcome = Welcome {
            version: VERSION,
            max_frame: 1 << 20,
            ping_interval_ms: 30_000,
            core_id: 0,
            connection_id: 1,
            server_name: "catcher",
        };
        ServerFrame11::Welcome { welcome, v1_1: true }.encode(&mut out);
        stream.write_all(&out).unwrap();
        // Hold the connection until the client goes.
        let _ = stream.read(&mut [0u8; 64]);
        hello
    });
    (addr, thread)
}

fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut rest = vec![0u8; u32::from_le_bytes(len) as usize];
    stream.read_exact(&mut rest).unwrap();
    let mut frame = len.to_vec();
    frame.extend(rest);
    frame
}

/// The token field of `HELLO` and whether the credential bit was set.
fn hello_of(bytes: &[u8]) -> (Vec<u8>, bool, bool) {
    let mut src = bytes;
    match ClientFrame11::decode(&mut src, u32::MAX).unwrap().unwrap() {
        ClientFrame11::Hello { hello, v1_1, credential, .. } => {
            (hello.token.to_vec(), v1_1, credential)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn typed_credentials_travel_in_hello_with_the_credential_bit() {
    let cases = [
        (
            Credentials::password("alice", "s3:cr3t"),
            Some(Credential::Password { user: "alice", password: b"s3:cr3t" }),
            &b"password alice:s3:cr3t"[..],
        ),
        (Credentials::bearer("opaque"), Some(Credential::Bearer(b"opaque")), b"bearer opaque"),
        (
            Credentials::jwt("e30.e30.c2ln"),
            Some(Credential::Jwt("e30.e30.c2ln")),
            b"jwt e30.e30.c2ln",
        ),
        (Credentials::token("shared"), None, b"shared"),
        (Credentials::None, None, b""),
    ];
    for (credentials, want, field) in cases {
        // The blocking client.
        let (addr, caught) = hello_catcher();
        let options = options("typed").credentials(credentials.clone()).no_reconnect();
        let client = blocking::Client::connect_with(addr, options).unwrap();
        assert!(client.server_info().v1_1);
        let _ = client.close();
        let (token, v1_1, bit) = hello_of(&caught.join().unwrap());
        assert!(v1_1, "{credentials:?}");
        assert_eq!(bit, want.is_some(), "{credentials:?}: the credential bit");
        assert_eq!(token, field, "{credentials:?}: the token field");
        if let Some(want) = want {
            assert_eq!(Credential::parse(&token), Some(want));
        }
        // The tokio client sends the same HELLO.
        let (addr, caught) = hello_catcher();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let options = common::options("typed").credentials(credentials.clone()).no_reconnect();
            let client = async_client::Client::connect_with(addr, options).await.unwrap();
            // The fake broker goes as soon as the client writes.
            let _ = client.close().await;
        });
        assert_eq!(hello_of(&caught.join().unwrap()), (token, v1_1, bit), "{credentials:?}");
    }
}

#[test]
fn a_typed_credential_needs_protocol_1_1() {
    let options = options("v1").credentials(Credentials::bearer("t")).protocol_1_1(false);
    let err = blocking::Client::connect_with(closed_port(), options).unwrap_err();
    assert!(matches!(&err, ClientError::InvalidOption(m) if m.contains("1.1")), "{err:?}");
}

#[test]
fn both_clients_reconnect_over_tls_and_restore_their_subscriptions() {
    let ca = Ca::new("test CA");
    let config = tls_config(&ca, None);
    let broker = start(config.clone());
    let addr = tls_addr(&broker);
    let tls_options = || TlsOptions::new(Pem::bytes(ca.pem()));
    let client =
        blocking::Client::connect_with(addr, options("tls-survivor").tls(tls_options())).unwrap();
    let sub = client.subscribe("tls.restart").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (async_client, mut async_sub) = runtime.block_on(async {
        let options = common::options("tls-async-survivor").tls(tls_options());
        let client = async_client::Client::connect_with(addr, options).await.unwrap();
        let sub = client.subscribe("tls.restart").await.unwrap();
        (client, sub)
    });
    stop(broker);
    // The same certificate on the same TLS port.
    let mut config = config;
    if let Some(tls) = &mut config.tls {
        tls.listen = addr.into();
    }
    let broker = restart(&config);
    assert_eq!(tls_addr(&broker), addr);
    let c = wait_counters(&broker, "both subscriptions restored", |c| c.subscriptions == 2);
    assert_eq!(c.tls_handshakes, 2, "both came back over TLS: {c:#?}");
    client.publish("tls.restart", "after restart").unwrap();
    let msg = sub.recv_timeout(SHORT).unwrap().expect("a message within 5 s");
    assert_eq!(&msg.payload[..], b"after restart");
    runtime.block_on(async {
        let msg = tokio::time::timeout(SHORT, async_sub.recv()).await.unwrap().unwrap();
        assert_eq!(&msg.payload[..], b"after restart");
        async_client.close().await.unwrap();
    });
    assert_eq!(client.stats().reconnects, 1);
    client.close().unwrap();
    stop(broker);
}
