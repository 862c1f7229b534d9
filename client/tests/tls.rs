#![allow(clippy::unwrap_used)]
//! TLS and credentials, with both clients, against the broker's own TLS
//! port: pub/sub over TLS, mutual TLS, a CA that does not match,
//! reconnection, and logging in with a password, a bearer token, a JWT or
//! a client certificate as a configured user.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use common::{tls::*, *};
use corecast::{
    auth::{hash_password, hash_token, JwtConfig, Permissions, Rules, UserConfig},
    Broker, Config,
};
use corecast_client::{
    blocking, tokio as async_client, ClientError, Credentials, Event, Options, Pem, TlsOptions,
};
use corecast_proto::ErrorCode;

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

// ---------------------------------------------------------------------------
// Logging in as a configured user

/// A user who may subscribe to `news.>` only (and publish anywhere).
fn news_reader(name: &str) -> UserConfig {
    UserConfig {
        name: name.into(),
        permissions: Some(Permissions {
            subscribe: Rules { allow: Some(vec!["news.>".into()]), deny: vec![] },
            ..Permissions::default()
        }),
        ..UserConfig::default()
    }
}

/// Whether `err` is the broker's non-fatal permission denied (104) for
/// subscribing to `topic`, naming it.
fn denied_subscription(err: &ClientError, topic: &str) -> bool {
    matches!(
        err,
        ClientError::Server(e) if e.error_code() == Some(ErrorCode::PermissionDenied)
            && !e.fatal
            && e.text.contains(topic)
    )
}

/// Logged in with `credentials`, the blocking client may subscribe to
/// `news.>` and not to `secret.plans`, and the session goes on after the
/// refusal.
fn blocking_as_news_reader(addr: SocketAddr, options: Options) {
    let client = blocking::Client::connect_with(addr, options).unwrap();
    let sub = client.subscribe("news.today").unwrap();
    let err = client.subscribe("secret.plans").map(|_| ()).unwrap_err();
    assert!(denied_subscription(&err, "secret.plans"), "{err:?}");
    client.publish("news.today", "hello").unwrap();
    assert_eq!(&sub.recv_timeout(SHORT).unwrap().unwrap().payload[..], b"hello");
    client.close().unwrap();
}

async fn tokio_as_news_reader(addr: SocketAddr, options: Options) {
    let client = async_client::Client::connect_with(addr, options).await.unwrap();
    let mut sub = client.subscribe("news.today").await.unwrap();
    let err = client.subscribe("secret.plans").await.map(|_| ()).unwrap_err();
    assert!(denied_subscription(&err, "secret.plans"), "{err:?}");
    client.publish("news.today", "hello").await.unwrap();
    let msg = tokio::time::timeout(SHORT, sub.recv()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"hello");
    client.close().await.unwrap();
}

/// Both clients, as a news reader.
fn both_as_news_reader(addr: SocketAddr, options: impl Fn(&str) -> Options) {
    blocking_as_news_reader(addr, options("blocking-reader"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(tokio_as_news_reader(addr, options("tokio-reader")));
}

/// Both clients fail to connect with `options`, with the broker's *auth
/// failed*.
fn both_refused(addr: SocketAddr, options: impl Fn(&str) -> Options) {
    let err = blocking::Client::connect_with(addr, options("blocking-intruder")).unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(e) if e.error_code() == Some(ErrorCode::AuthFailed)),
        "blocking: {err:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("the broker refused the connection: auth failed"), "{text}");
    assert!(!err.is_transient());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime
        .block_on(async_client::Client::connect_with(addr, options("tokio-intruder")))
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused(e) if e.error_code() == Some(ErrorCode::AuthFailed)),
        "tokio: {err:?}"
    );
}

fn with_users(users: Vec<UserConfig>) -> Broker {
    start(Config { users, ..config() })
}

#[test]
fn both_clients_log_in_with_a_password_and_a_wrong_one_is_refused() {
    let alice = UserConfig { password: Some(hash_password(b"pw-alice")), ..news_reader("alice") };
    let broker = with_users(vec![alice]);
    let addr = broker.local_addr();
    let good = Credentials::password("alice", "pw-alice");
    both_as_news_reader(addr, |name| options(name).credentials(good.clone()));
    let wrong = Credentials::password("alice", "pw-bob");
    both_refused(addr, |name| options(name).credentials(wrong.clone()));
    // No credential at all, where users are configured.
    both_refused(addr, options);
    stop(broker);
}

#[test]
fn a_denied_publication_is_a_server_error_event_naming_the_topic() {
    let mut writer = UserConfig { name: "writer".into(), ..UserConfig::default() };
    writer.token_sha256 = Some(hash_token(b"tok-writer"));
    writer.permissions = Some(Permissions {
        publish: Rules { allow: Some(vec!["mine.>".into()]), deny: vec![] },
        ..Permissions::default()
    });
    let broker = with_users(vec![writer]);
    let options = options("writer").credentials(Credentials::bearer("tok-writer"));
    let client = blocking::Client::connect_with(broker.local_addr(), options).unwrap();
    let sub = client.subscribe("mine.x").unwrap();
    client.publish("theirs.x", "no").unwrap();
    client.publish("mine.x", "yes").unwrap();
    assert_eq!(&sub.recv_timeout(SHORT).unwrap().unwrap().payload[..], b"yes");
    let denied = |e: &Event| {
        matches!(e, Event::ServerError(e) if e.code == ErrorCode::PermissionDenied.as_u16()
            && e.text.contains("theirs.x"))
    };
    let deadline = std::time::Instant::now() + SHORT;
    let mut seen = Vec::new();
    while !seen.iter().any(denied) {
        assert!(std::time::Instant::now() < deadline, "no 104 event; saw {seen:?}");
        seen.extend(client.next_event(Duration::from_millis(50)));
    }
    client.close().unwrap();
    stop(broker);
}

#[test]
fn both_clients_log_in_with_a_bearer_token_and_a_wrong_one_is_refused() {
    let svc = UserConfig { token_sha256: Some(hash_token(b"tok-svc")), ..news_reader("svc") };
    let broker = with_users(vec![svc]);
    let addr = broker.local_addr();
    let good = Credentials::bearer("tok-svc");
    both_as_news_reader(addr, |name| options(name).credentials(good.clone()));
    let wrong = Credentials::bearer("tok-guess");
    both_refused(addr, |name| options(name).credentials(wrong.clone()));
    stop(broker);
}

const HS256_SECRET: &[u8] = b"a-long-enough-test-secret-for-hs256";

/// A JWT for `sub`, signed with HS256 and `secret`, that expires `ttl`
/// seconds from now (before now when negative).
fn jwt(secret: &[u8], sub: &str, ttl: i64) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({ "sub": sub, "exp": now.saturating_add_signed(ttl) });
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret).unwrap())
        .unwrap()
}

#[test]
fn both_clients_log_in_with_a_jwt_and_an_expired_or_forged_one_is_refused() {
    let secret = temp_file("hs256.secret", std::str::from_utf8(HS256_SECRET).unwrap());
    let jwt_config = JwtConfig { hs256_secret_file: Some(secret), ..JwtConfig::default() };
    let broker =
        start(Config { users: vec![news_reader("reader")], jwt: Some(jwt_config), ..config() });
    let addr = broker.local_addr();
    let good = Credentials::jwt(jwt(HS256_SECRET, "reader", 600));
    both_as_news_reader(addr, |name| options(name).credentials(good.clone()));
    // Expired well beyond the 30 s leeway.
    let expired = Credentials::jwt(jwt(HS256_SECRET, "reader", -600));
    both_refused(addr, |name| options(name).credentials(expired.clone()));
    // Signed with another secret.
    let forged = Credentials::jwt(jwt(b"not-the-brokers-secret-not-the-brokers", "reader", 600));
    both_refused(addr, |name| options(name).credentials(forged.clone()));
    stop(broker);
}

#[test]
fn a_client_certificate_logs_in_as_the_user_with_its_subject() {
    let ca = Ca::new("test CA");
    let client_ca = Ca::new("client CA");
    let svc = UserConfig { tls_subject: Some("CN=svc-a".into()), ..news_reader("svc-a") };
    let broker = start(Config { users: vec![svc], ..tls_config(&ca, Some(&client_ca)) });
    let addr = tls_addr(&broker);
    let tls_as = |cert: &Issued| {
        TlsOptions::new(Pem::bytes(ca.pem()))
            .client_cert(Pem::bytes(cert.cert_pem.clone()), Pem::bytes(cert.key_pem.clone()))
    };
    // No credential in HELLO: the certificate's subject names the user.
    let known = client_ca.client("svc-a");
    both_as_news_reader(addr, |name| options(name).tls(tls_as(&known)));
    // A certificate of the right CA whose subject no user has.
    let unknown = client_ca.client("svc-z");
    both_refused(addr, |name| options(name).tls(tls_as(&unknown)));
    let c = broker.counters().total;
    assert_eq!((c.tls_handshakes, c.auth_failures), (4, 2), "{c:#?}");
    stop(broker);
}
