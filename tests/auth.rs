//! Users, credentials, permissions and per-user limits, over real TCP to a
//! real broker. Each test logs in from its own 127.x address where it
//! fails logins on purpose, since failures are throttled per address.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use common::{
    start, test_config,
    v11::{msg11, Client11, Got11},
    wait_counters,
};
use corecast::{
    auth::{hash_password, hash_token, JwtConfig, Permissions, Rules, UserConfig, UserLimits},
    Config,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const AUTH_FAILED: u16 = 7;
const SERVER_FULL: u16 = 8;
const PERMISSION_DENIED: u16 = 104;
const LOCAL: [u8; 4] = [127, 0, 0, 1];

fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Rules {
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Rules { allow: allow.map(list), deny: list(deny) }
}

fn user(name: &str, password: &str) -> UserConfig {
    UserConfig {
        name: name.into(),
        password: Some(hash_password(password.as_bytes())),
        ..UserConfig::default()
    }
}

fn with_rules(mut u: UserConfig, publish: Rules, subscribe: Rules) -> UserConfig {
    u.permissions = Some(Permissions { publish, subscribe, allow_responses: None });
    u
}

fn password(user: &str, password: &str) -> Vec<u8> {
    format!("password {user}:{password}").into_bytes()
}

fn login(addr: std::net::SocketAddr, token: &[u8]) -> Result<Client11, u16> {
    Client11::login(addr, LOCAL, token, true)
}

fn broker_with(users: Vec<UserConfig>) -> corecast::Broker {
    start(Config { users, ..test_config(2) })
}

/// Expects a non-fatal `ERR` with `code` next (the session goes on).
fn expect_refused(c: &mut Client11, code: u16) {
    let got = c.flush();
    assert_eq!(got, vec![Got11::Err { code, fatal: false }], "expected a non-fatal {code}");
}

#[test]
fn frames_before_hello_are_refused_and_the_session_never_opens() {
    let users = vec![user("alice", "pw-a")];
    let broker =
        start(Config { users, http: "127.0.0.1:0".parse().expect("addr"), ..test_config(2) });
    let mut c = Client11::login(broker.local_addr(), LOCAL, b"", false);
    assert_eq!(c.as_ref().err(), Some(&AUTH_FAILED), "no credential, users configured");
    let mut raw = std::net::TcpStream::connect(broker.local_addr()).expect("connect");
    use std::io::{Read, Write};
    raw.write_all(&common::frame(corecast_proto::opcode::SUB, 0, b"\x01\x00\x00\x00\x01a\x00"))
        .expect("send");
    raw.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut buf = Vec::new();
    let _ = raw.read_to_end(&mut buf);
    assert!(!buf.is_empty(), "a fatal ERR before the close");
    c = login(broker.local_addr(), &password("alice", "pw-a"));
    assert!(c.is_ok(), "the right password opens the session");
    assert_eq!(broker.counters().total.connections_open, 1);
    let http = broker.http_addr().expect("the monitoring port");
    let mut connz = ureq::get(format!("http://{http}/connz")).call().expect("connz");
    let connz: serde_json::Value =
        serde_json::from_str(&connz.body_mut().read_to_string().expect("body")).expect("json");
    let conns = connz["connections"].as_array().expect("a list");
    let alice = |c: &serde_json::Value| c["user"] == "alice" && c["credential"] == "password";
    assert!(conns.iter().any(alice), "{connz:#}");
}

#[test]
fn a_wrong_password_an_unknown_user_and_anothers_password_get_the_same_answer() {
    let broker = broker_with(vec![user("alice", "pw-a"), user("bob", "pw-b")]);
    let addr = broker.local_addr();
    let mut took = Vec::new();
    for (i, token) in [
        password("alice", "wrong"),
        password("nobody", "pw-a"),
        password("alice", "pw-b"),
        b"password alice".to_vec(),
    ]
    .iter()
    .enumerate()
    {
        let started = Instant::now();
        let got = Client11::login(addr, [127, 0, 1, i as u8 + 1], token, true);
        assert_eq!(got.err(), Some(AUTH_FAILED), "{}", String::from_utf8_lossy(token));
        took.push(started.elapsed());
    }
    // The unknown user's answer waited for a (dummy) argon2 check too.
    assert!(took[1] * 4 >= took[0], "unknown user answered much sooner: {took:?}");
    let c = broker.counters().total;
    assert_eq!(c.auth_failures, 4, "{c:#?}");
    assert!(login(addr, &password("bob", "pw-b")).is_ok());
}

#[test]
fn failures_are_throttled_per_address() {
    let broker = broker_with(vec![user("alice", "pw-a")]);
    let addr = broker.local_addr();
    let source = [127, 0, 2, 1];
    // Five at once, then one a second: of 20 quick guesses most are
    // refused without a check.
    for _ in 0..20 {
        assert!(Client11::login(addr, source, &password("alice", "no"), true).is_err());
    }
    let c = broker.counters().total;
    assert_eq!(c.auth_failures, 20, "{c:#?}");
    assert!(c.auth_throttled >= 10, "only {} of 20 throttled", c.auth_throttled);
    // Another address is not held back.
    assert!(Client11::login(addr, [127, 0, 2, 2], &password("alice", "pw-a"), true).is_ok());
    // The throttled one gets in again once its bucket refills.
    std::thread::sleep(Duration::from_millis(2100));
    assert!(Client11::login(addr, source, &password("alice", "pw-a"), true).is_ok());
}

#[test]
fn bearer_tokens_typed_and_plain_and_the_shared_token() {
    let mut svc = UserConfig { name: "svc".into(), ..UserConfig::default() };
    svc.token_sha256 = Some(hash_token(b"tok-svc"));
    let broker = start(Config {
        users: vec![svc, user("alice", "pw-a")],
        auth_token: Some("shared".into()),
        ..test_config(2)
    });
    let addr = broker.local_addr();
    assert!(login(addr, b"bearer tok-svc").is_ok(), "typed bearer token");
    assert!(Client11::login(addr, LOCAL, b"tok-svc", false).is_ok(), "a v1 client's plain token");
    assert!(Client11::login(addr, LOCAL, b"shared", false).is_ok(), "the shared token");
    let got = Client11::login(addr, [127, 0, 3, 1], b"bearer nope", true);
    assert_eq!(got.err(), Some(AUTH_FAILED));
}

fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/auth").join(name)
}

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_secs()
}

fn jwt_broker() -> (corecast::Broker, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("corecast-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret_file = dir.join("hs256.secret");
    let secret = b"a-long-enough-test-secret-for-hs256".to_vec();
    std::fs::write(&secret_file, &secret).expect("write");
    let jwt = JwtConfig {
        hs256_secret_file: Some(secret_file),
        rs256_public_key_file: Some(key("rs256-public.pem")),
        eddsa_public_key_file: Some(key("eddsa-public.pem")),
        ..JwtConfig::default()
    };
    let reader =
        with_rules(user("reader", "pw-r"), rules(Some(&[]), &[]), rules(Some(&["news.>"]), &[]));
    (start(Config { users: vec![reader], jwt: Some(jwt), ..test_config(2) }), secret)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> Vec<u8> {
    let token = jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign");
    format!("jwt {token}").into_bytes()
}

#[test]
fn jwts_are_checked_for_time_key_and_algorithm() {
    let (broker, secret) = jwt_broker();
    let addr = broker.local_addr();
    let hs = EncodingKey::from_secret(&secret).expect("key");
    let rs = EncodingKey::from_rsa_pem(&std::fs::read(key("rs256-private.pem")).expect("key"))
        .expect("rsa key");
    let ed = EncodingKey::from_ed_pem(&std::fs::read(key("eddsa-private.pem")).expect("key"))
        .expect("ed25519 key");
    let t = now();
    let good = serde_json::json!({ "sub": "reader", "exp": t + 600 });
    for (alg, key) in [(Algorithm::HS256, &hs), (Algorithm::RS256, &rs), (Algorithm::EdDSA, &ed)] {
        let mut c = login(addr, &sign(alg, key, good.clone())).expect("a good JWT");
        c.sub(1, "news.>");
        assert!(c.flush().is_empty(), "{alg:?}: the configured user's rules apply");
        c.sub(2, "secret.>");
        expect_refused(&mut c, PERMISSION_DENIED);
    }
    let public_pem = std::fs::read(key("rs256-public.pem")).expect("key");
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("expired", sign(Algorithm::HS256, &hs, serde_json::json!({"sub": "reader", "exp": t - 120}))),
        (
            "not yet valid",
            sign(Algorithm::HS256, &hs, serde_json::json!({"sub": "reader", "exp": t + 600, "nbf": t + 300})),
        ),
        ("wrong key", sign(Algorithm::HS256, &EncodingKey::from_secret(b"other").expect("key"), good.clone())),
        (
            "HS256 keyed with the RSA public key",
            sign(Algorithm::HS256, &EncodingKey::from_secret(&public_pem).expect("key"), good.clone()),
        ),
        ("no exp", sign(Algorithm::HS256, &hs, serde_json::json!({"sub": "reader"}))),
        (
            "alg none",
            // {"alg":"none","typ":"JWT"} . {"sub":"reader","exp":4102444800} . (no signature)
            b"jwt eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJyZWFkZXIiLCJleHAiOjQxMDI0NDQ4MDB9."
                .to_vec(),
        ),
    ];
    for (i, (why, token)) in bad.iter().enumerate() {
        let got = Client11::login(addr, [127, 0, 4, i as u8 + 1], token, true);
        assert_eq!(got.err(), Some(AUTH_FAILED), "{why}");
    }
}

#[test]
fn a_full_wildcard_is_refused_when_only_a_subtree_is_allowed() {
    let alice = with_rules(user("alice", "pw-a"), rules(None, &[]), rules(Some(&["a.>"]), &[]));
    let broker = broker_with(vec![alice]);
    let mut c = login(broker.local_addr(), &password("alice", "pw-a")).expect("login");
    c.sub(1, ">");
    expect_refused(&mut c, PERMISSION_DENIED);
    c.sub_group(2, "b.*", "workers");
    expect_refused(&mut c, PERMISSION_DENIED);
    c.sub(3, "a.>");
    c.sub_group(4, "a.jobs", "workers");
    assert!(c.flush().is_empty(), "allowed ones go through");
    assert_eq!(broker.counters().total.permission_denied, 2);
}

#[test]
fn a_wildcard_overlapping_a_deny_never_receives_the_denied_topic() {
    let alice =
        with_rules(user("alice", "pw-a"), rules(None, &[]), rules(Some(&["a.*"]), &["a.secret"]));
    let broker = broker_with(vec![alice, user("pub", "pw-p")]);
    let addr = broker.local_addr();
    let mut sub = login(addr, &password("alice", "pw-a")).expect("login");
    sub.sub(1, "a.*");
    sub.sub(2, "a.secret");
    expect_refused(&mut sub, PERMISSION_DENIED);
    let mut publisher = login(addr, &password("pub", "pw-p")).expect("login");
    for topic in ["a.secret", "a.public", "a.secret", "a.news"] {
        publisher.publish(topic, topic.as_bytes());
    }
    publisher.flush_empty();
    let got = sub.flush();
    assert_eq!(got, vec![msg11(1, "a.public", b"a.public"), msg11(1, "a.news", b"a.news")]);
    wait_counters(&broker, "denied deliveries", |c| c.deliveries_denied == 2);
}

#[test]
fn a_denied_publish_is_refused_naming_the_topic_and_delivered_nowhere() {
    let alice = with_rules(
        user("alice", "pw-a"),
        rules(Some(&["orders.>"]), &["orders.internal.*"]),
        rules(None, &[]),
    );
    let broker = broker_with(vec![alice, user("watcher", "pw-w")]);
    let addr = broker.local_addr();
    let mut watcher = login(addr, &password("watcher", "pw-w")).expect("login");
    watcher.sub(1, ">");
    watcher.flush_empty();
    let mut alice = login(addr, &password("alice", "pw-a")).expect("login");
    alice.publish("orders.internal.audit", b"x");
    alice.publish("payments.new", b"x");
    alice.publish("orders.new", b"ok");
    let got = alice.flush();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|g| *g == Got11::Err { code: PERMISSION_DENIED, fatal: false }));
    assert_eq!(watcher.flush(), vec![msg11(1, "orders.new", b"ok")]);
}

#[test]
fn allow_responses_lets_a_reply_through_once_and_only_to_a_request_received() {
    let mut svc =
        with_rules(user("svc", "pw-s"), rules(Some(&[]), &[]), rules(Some(&["rpc.>"]), &[]));
    if let Some(p) = svc.permissions.as_mut() {
        p.allow_responses = Some(corecast::auth::AllowResponses { max: 1, window_ms: 60_000 });
    }
    let broker = broker_with(vec![svc, user("client", "pw-c")]);
    let addr = broker.local_addr();
    let mut server = login(addr, &password("svc", "pw-s")).expect("login");
    server.sub(1, "rpc.time");
    server.flush_empty();
    let mut client = login(addr, &password("client", "pw-c")).expect("login");
    client.sub(9, "_inbox.c1");
    client.flush_empty();
    server.publish("_inbox.never", b"unsolicited");
    expect_refused(&mut server, PERMISSION_DENIED);
    client.request("rpc.time", "_inbox.c1", b"now?");
    client.flush_empty();
    match server.recv() {
        Got11::Msg { reply_to, .. } => assert_eq!(reply_to, "_inbox.c1"),
        other => panic!("expected the request, got {other:?}"),
    }
    server.publish("_inbox.c1", b"12:00");
    server.publish("_inbox.c1", b"again");
    let got = server.flush();
    assert_eq!(got, vec![Got11::Err { code: PERMISSION_DENIED, fatal: false }], "one reply only");
    assert_eq!(client.flush(), vec![msg11(9, "_inbox.c1", b"12:00")]);
}

#[test]
fn per_user_connection_and_subscription_limits() {
    let mut alice = user("alice", "pw-a");
    alice.limits = UserLimits {
        max_connections: Some(2),
        max_subscriptions: Some(3),
        ..UserLimits::default()
    };
    let broker = broker_with(vec![alice]);
    let addr = broker.local_addr();
    let first = login(addr, &password("alice", "pw-a")).expect("first");
    let mut second = login(addr, &password("alice", "pw-a")).expect("second");
    assert_eq!(login(addr, &password("alice", "pw-a")).err(), Some(SERVER_FULL));
    assert_eq!(broker.counters().total.user_connection_refusals, 1);
    drop(first);
    wait_counters(&broker, "the first connection gone", |c| c.connections_open == 1);
    let _third = login(addr, &password("alice", "pw-a")).expect("room again");
    for sid in 1..=3 {
        second.sub(sid, &format!("t.{sid}"));
    }
    second.sub(4, "t.4");
    assert_eq!(second.flush(), vec![Got11::Err { code: 101, fatal: false }]);
}

#[test]
fn a_publisher_over_its_rate_is_held_to_it_while_others_run_at_full_speed() {
    const RATE: u32 = 200;
    let mut flood = user("flood", "pw-f");
    flood.limits = UserLimits { publish_msgs_per_sec: Some(RATE), ..UserLimits::default() };
    let broker = broker_with(vec![flood, user("fast", "pw-x"), user("sink", "pw-s")]);
    let addr = broker.local_addr();
    let mut sink = login(addr, &password("sink", "pw-s")).expect("login");
    sink.sub(1, "flood");
    sink.sub(2, "fast");
    sink.flush_empty();
    let mut flooder = login(addr, &password("flood", "pw-f")).expect("login");
    let mut fast = login(addr, &password("fast", "pw-x")).expect("login");
    let flooding = std::thread::spawn(move || {
        // Far more than the rate allows in the test's time: the broker
        // stops reading, so the writes block once the socket buffers fill.
        flooder.stream.set_write_timeout(Some(Duration::from_secs(4))).expect("timeout");
        let mut frame = Vec::new();
        let publish = corecast_proto::Pub { topic: "flood", reply_to: "", payload: b"x" };
        corecast_proto::ClientFrame11::Pub { publish, request: false }.encode(&mut frame);
        let burst = frame.repeat(1000);
        for _ in 0..100 {
            use std::io::Write;
            if flooder.stream.write_all(&burst).is_err() {
                break;
            }
        }
        flooder
    });
    let started = Instant::now();
    const FAST: usize = 20_000;
    for _ in 0..FAST {
        fast.publish("fast", b"y");
    }
    fast.flush_empty();
    let (mut flooded, mut fasts) = (0, 0);
    let window = Duration::from_secs(3);
    while started.elapsed() < window {
        match sink.next(Duration::from_millis(100)) {
            Some(Got11::Msg { sid: 1, .. }) => flooded += 1,
            Some(Got11::Msg { sid: 2, .. }) => fasts += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let most = (RATE as f64 * (secs + 1.5)) as usize;
    assert!(flooded <= most, "{flooded} flood messages in {secs:.1} s at {RATE}/s");
    assert!(flooded >= RATE as usize, "the flooder still gets its rate: {flooded}");
    assert_eq!(fasts, FAST, "the other publisher was not held back");
    assert!(broker.counters().total.publish_rate_waits > 0);
    drop(flooding.join());
}

#[test]
fn a_reload_revokes_subscriptions_that_lost_permission() {
    let alice =
        with_rules(user("alice", "pw-a"), rules(None, &[]), rules(Some(&["a.>", "b.>"]), &[]));
    let mut cfg = Config { users: vec![alice.clone(), user("pub", "pw-p")], ..test_config(2) };
    let broker = start(cfg.clone());
    let addr = broker.local_addr();
    let mut sub = login(addr, &password("alice", "pw-a")).expect("login");
    sub.sub(5, "a.x");
    sub.sub(6, "b.x");
    sub.flush_empty();
    cfg.users[0] = with_rules(alice, rules(None, &[]), rules(Some(&["b.>"]), &[]));
    let reloaded = broker.reload(cfg).expect("valid");
    assert!(reloaded.changed.contains(&"users".to_string()), "{reloaded:?}");
    assert_eq!(sub.recv(), Got11::Err { code: PERMISSION_DENIED, fatal: false });
    let mut publisher = login(addr, &password("pub", "pw-p")).expect("login");
    publisher.publish("a.x", b"gone");
    publisher.publish("b.x", b"kept");
    publisher.flush_empty();
    assert_eq!(sub.flush(), vec![msg11(6, "b.x", b"kept")]);
    assert_eq!(broker.counters().total.subscriptions_revoked, 1);
}

#[test]
fn concurrent_password_logins_all_succeed_and_leave_nothing_behind() {
    let broker = broker_with(vec![user("alice", "pw-a")]);
    let addr = broker.local_addr();
    let threads: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || login(addr, &password("alice", "pw-a")).is_ok()))
        .collect();
    assert!(threads.into_iter().all(|t| t.join().expect("joined")));
    common::wait_idle(&broker);
}

#[test]
fn a_session_ends_when_its_jwt_expires() {
    let secret = b"another-test-secret-for-hs256-tokens";
    let no_leeway = |cfg: &mut Config| {
        if let Some(jwt) = cfg.jwt.as_mut() {
            jwt.leeway_ms = 0;
        }
    };
    let (broker, _) = hs256_broker(secret, no_leeway);
    let key = EncodingKey::from_secret(b"another-test-secret-for-hs256-tokens").expect("key");
    let token =
        sign(Algorithm::HS256, &key, serde_json::json!({ "sub": "short", "exp": now() + 2 }));
    let mut c = login(broker.local_addr(), &token).expect("a valid JWT");
    c.sub(1, "t");
    assert!(c.flush().is_empty(), "the session works until exp");
    let started = Instant::now();
    assert_eq!(
        c.next(Duration::from_secs(10)),
        Some(Got11::Err { code: AUTH_FAILED, fatal: true })
    );
    assert!(started.elapsed() < Duration::from_secs(5), "closed soon after exp");
    assert_eq!(c.next(Duration::from_secs(5)), None, "then the close");
    let counters = wait_counters(&broker, "the expiry counted", |c| c.credentials_expired == 1);
    assert_eq!(counters.connections_open, 0);
}

/// A queue group member whose wildcard overlaps a deny rule is passed over
/// for the denied topic: the other member gets every such message, and
/// the group loses none.
#[test]
fn a_queue_member_denied_a_topic_is_passed_over_in_the_draw() {
    let limited =
        with_rules(user("limited", "pw-l"), rules(None, &[]), rules(None, &["jobs.secret"]));
    let broker = broker_with(vec![limited, user("full", "pw-f"), user("pub", "pw-p")]);
    let addr = broker.local_addr();
    let mut a = login(addr, &password("limited", "pw-l")).expect("login");
    let mut b = login(addr, &password("full", "pw-f")).expect("login");
    a.sub_group(1, "jobs.*", "workers");
    b.sub_group(1, "jobs.*", "workers");
    a.flush_empty();
    b.flush_empty();
    let mut publisher = login(addr, &password("pub", "pw-p")).expect("login");
    const N: usize = 200;
    for _ in 0..N {
        publisher.publish("jobs.secret", b"s");
        publisher.publish("jobs.open", b"o");
    }
    publisher.flush_empty();
    let (got_a, got_b) = (a.flush(), b.flush());
    let secret =
        |got: &[Got11]| got.iter().filter(|g| **g == msg11(1, "jobs.secret", b"s")).count();
    assert_eq!(secret(&got_a), 0, "the denied member never gets the secret topic");
    assert_eq!(secret(&got_b), N, "the other member gets every secret message");
    assert_eq!(got_a.len() + got_b.len(), 2 * N, "the group lost nothing");
    assert!(!got_a.is_empty(), "the limited member still gets open jobs");
    assert_eq!(broker.counters().total.queue_undeliverable, 0);
}

/// Guesses sent all at once are throttled as they arrive, not only once
/// the first checks have failed: of 40 parallel wrong passwords from one
/// address, at most the burst (and a refill or two) are checked.
#[test]
fn parallel_guesses_are_throttled_as_they_arrive() {
    let broker = broker_with(vec![user("alice", "pw-a")]);
    let addr = broker.local_addr();
    let started = Instant::now();
    let threads: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                Client11::login(addr, [127, 0, 6, 1], &password("alice", "guess"), true).err()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("joined"), Some(AUTH_FAILED));
    }
    // The burst, and one more for each second the guesses took.
    let checked_at_most = 5 + started.elapsed().as_secs() + 1;
    let c = broker.counters().total;
    assert_eq!(c.auth_failures, 40, "{c:#?}");
    assert!(c.auth_throttled >= 40 - checked_at_most, "{} checked", 40 - c.auth_throttled);
}

/// A user cannot mint its own permits: a request's reply-to must be a
/// topic the requester may receive, and a request a user sent itself
/// (from this connection or another of its own) gives it no permit.
#[test]
fn a_user_cannot_answer_its_own_requests_or_point_replies_elsewhere() {
    let mut m = with_rules(
        user("m", "pw-m"),
        rules(Some(&["svc.req"]), &[]),
        rules(Some(&["svc.req", "_inbox.m.>"]), &[]),
    );
    if let Some(p) = m.permissions.as_mut() {
        p.allow_responses = Some(corecast::auth::AllowResponses::default());
    }
    let broker = broker_with(vec![m, user("watcher", "pw-w")]);
    let addr = broker.local_addr();
    let mut watcher = login(addr, &password("watcher", "pw-w")).expect("login");
    watcher.sub(1, ">");
    watcher.flush_empty();
    let mut a = login(addr, &password("m", "pw-m")).expect("login");
    let mut b = login(addr, &password("m", "pw-m")).expect("login");
    a.sub(1, "svc.req");
    b.sub(1, "svc.req");
    a.flush_empty();
    b.flush_empty();
    // Replies pointed at a topic the requester may not read are refused.
    a.request("svc.req", "admin.shutdown", b"x");
    expect_refused(&mut a, PERMISSION_DENIED);
    // Its own request reaches both its connections, and neither may answer.
    a.request("svc.req", "_inbox.m.1", b"y");
    a.flush();
    b.flush();
    for c in [&mut a, &mut b] {
        c.publish("_inbox.m.1", b"self-answer");
        expect_refused(c, PERMISSION_DENIED);
    }
    let seen = watcher.flush();
    assert!(seen.iter().all(|g| !matches!(g, Got11::Msg { topic, .. } if topic == "_inbox.m.1")));
    assert!(seen
        .iter()
        .all(|g| !matches!(g, Got11::Msg { topic, .. } if topic == "admin.shutdown")));
}

/// Header bytes count against the byte rate like payload bytes.
#[test]
fn headers_are_charged_to_the_byte_rate() {
    let mut h = user("h", "pw-h");
    h.limits = UserLimits { publish_bytes_per_sec: Some(4096), ..UserLimits::default() };
    let broker = broker_with(vec![h]);
    let mut c = login(broker.local_addr(), &password("h", "pw-h")).expect("login");
    let value = "v".repeat(2000);
    let mut block = corecast_proto::HeaderBlock::new();
    block.push("k", &value).expect("a header");
    for _ in 0..10 {
        c.hpub("t", block.headers(), b"", false);
    }
    c.flush();
    assert!(broker.counters().total.publish_rate_waits > 0, "20 KB of headers at 4 KB/s");
}

/// A reload keeps a session while what vouched for it at login still does:
/// a changed password, a changed shared token or rotated JWT keys log out
/// the sessions they vouched for; tightened default rules reach the shared
/// token's sessions; everyone else goes on.
#[test]
fn a_reload_logs_out_sessions_nothing_vouches_for_any_more() {
    let mut cfg = Config {
        users: vec![user("alice", "pw-a"), user("bob", "pw-b")],
        auth_token: Some("tok-1".into()),
        default_permissions: Some(Permissions {
            subscribe: rules(Some(&["x.>", "y.>"]), &[]),
            ..Permissions::default()
        }),
        ..test_config(2)
    };
    let broker = start(cfg.clone());
    let addr = broker.local_addr();
    let mut alice = login(addr, &password("alice", "pw-a")).expect("login");
    let mut bob = login(addr, &password("bob", "pw-b")).expect("login");
    let mut shared = Client11::login(addr, LOCAL, b"tok-1", false).expect("the shared token");
    shared.sub(1, "x.1");
    shared.sub(2, "y.1");
    shared.flush_empty();

    cfg.users[0] = user("alice", "a-new-password");
    cfg.default_permissions =
        Some(Permissions { subscribe: rules(Some(&["y.>"]), &[]), ..Permissions::default() });
    broker.reload(cfg.clone()).expect("valid");
    alice.expect_fatal(AUTH_FAILED);
    bob.flush_empty();
    assert_eq!(shared.recv(), Got11::Err { code: PERMISSION_DENIED, fatal: false });
    shared.flush_empty();

    cfg.auth_token = Some("tok-2".into());
    broker.reload(cfg).expect("valid");
    shared.expect_fatal(AUTH_FAILED);
    bob.flush_empty();
    assert!(Client11::login(addr, LOCAL, b"tok-2", false).is_ok(), "the new token works");
}

/// Adding users to a broker that had none logs out the sessions that
/// never authenticated.
#[test]
fn a_reload_that_adds_users_logs_out_unauthenticated_sessions() {
    let mut cfg = test_config(2);
    let broker = start(cfg.clone());
    let mut anonymous = Client11::connect(broker.local_addr(), false);
    anonymous.flush_empty();
    cfg.users = vec![user("alice", "pw-a")];
    broker.reload(cfg).expect("valid");
    anonymous.expect_fatal(AUTH_FAILED);
}

#[test]
fn a_reload_that_rotates_the_jwt_key_logs_out_its_sessions() {
    let (broker, cfg) = hs256_broker(b"the-first-secret-for-hs256-tokens", |_| {});
    let secret_file = cfg.jwt.as_ref().and_then(|j| j.hs256_secret_file.clone()).expect("file");
    let key = EncodingKey::from_secret(b"the-first-secret-for-hs256-tokens").expect("key");
    let token = sign(Algorithm::HS256, &key, serde_json::json!({ "sub": "s", "exp": now() + 600 }));
    let mut session = login(broker.local_addr(), &token).expect("a valid JWT");
    session.flush_empty();
    broker.reload(cfg.clone()).expect("valid");
    session.flush_empty();
    std::fs::write(&secret_file, b"the-second-secret-for-hs256-token").expect("write");
    broker.reload(cfg).expect("valid");
    session.expect_fatal(AUTH_FAILED);
}

/// A broker that takes HS256 JWTs signed with `secret` (in a file of the
/// test's own), with `extra` settings; and its config, to reload.
fn hs256_broker(secret: &[u8], extra: impl FnOnce(&mut Config)) -> (corecast::Broker, Config) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("corecast-jwt-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret_file = dir.join("hs256.secret");
    std::fs::write(&secret_file, secret).expect("write");
    let jwt = JwtConfig { hs256_secret_file: Some(secret_file), ..JwtConfig::default() };
    let mut cfg = Config { jwt: Some(jwt), ..test_config(2) };
    extra(&mut cfg);
    (start(cfg.clone()), cfg)
}

/// A JWT subject that is no configured user takes the rules of a user of
/// its name while a reload configures one, and goes back to the rules its
/// token gave it (here the defaults, tightened meanwhile) when it goes.
#[test]
fn a_jwt_subject_follows_the_users_and_default_rules_of_each_reload() {
    let secret = b"a-secret-for-the-jwt-subject-tests";
    let (broker, mut cfg) = hs256_broker(secret, |_| {});
    let key = EncodingKey::from_secret(secret).expect("key");
    let token =
        sign(Algorithm::HS256, &key, serde_json::json!({ "sub": "bob", "exp": now() + 600 }));
    let mut bob = login(broker.local_addr(), &token).expect("a valid JWT");
    bob.sub(1, "x.1");
    bob.flush_empty();
    // A user bob appears, allowed only b.>: x.1 is revoked.
    let configured = with_rules(user("bob", "pw-b"), rules(None, &[]), rules(Some(&["b.>"]), &[]));
    cfg.users = vec![configured];
    broker.reload(cfg.clone()).expect("valid");
    assert_eq!(bob.recv(), Got11::Err { code: PERMISSION_DENIED, fatal: false });
    bob.sub(2, "x.2");
    expect_refused(&mut bob, PERMISSION_DENIED);
    // The user goes, and the defaults now allow only y.>: bob takes those.
    cfg.users.clear();
    cfg.default_permissions =
        Some(Permissions { subscribe: rules(Some(&["y.>"]), &[]), ..Permissions::default() });
    broker.reload(cfg).expect("valid");
    bob.sub(3, "y.1");
    bob.flush_empty();
    bob.sub(4, "x.3");
    expect_refused(&mut bob, PERMISSION_DENIED);
}

/// A reload that gives a user `max_connections` counts the connections it
/// has open already.
#[test]
fn a_reload_that_limits_connections_counts_those_open() {
    let mut cfg = Config { users: vec![user("alice", "pw-a")], ..test_config(2) };
    let broker = start(cfg.clone());
    let addr = broker.local_addr();
    let _a = login(addr, &password("alice", "pw-a")).expect("first");
    let _b = login(addr, &password("alice", "pw-a")).expect("second");
    cfg.users[0].limits = UserLimits { max_connections: Some(2), ..UserLimits::default() };
    broker.reload(cfg).expect("valid");
    assert_eq!(login(addr, &password("alice", "pw-a")).err(), Some(SERVER_FULL));
}
