//! The cluster over the other kinds of Redis a deployment uses: a Redis
//! Cluster through sharded pub/sub, TLS with a client certificate, and a
//! Redis user limited by the ACL the README gives. Each test starts its
//! own `redis-server` processes on free loopback ports and three nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    start, test_config,
    v11::{Client11, Got11},
};
use corecast::{
    cluster::{ClusterConfig, Mode, RedisTls},
    Broker, Config,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// `redis-server` processes of one test, killed when dropped.
struct Servers {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Servers {
    fn new(test: &str) -> Self {
        assert!(
            Command::new("redis-server").arg("--version").output().is_ok(),
            "redis-server is missing: run tools/test, which installs it"
        );
        let dir = std::env::temp_dir().join(format!("corecast-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Servers { children: Vec::new(), dir }
    }

    /// Starts `redis-server` with `args` in a directory of its own and
    /// waits until `port` accepts connections.
    fn spawn(&mut self, port: u16, args: &[&str]) {
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args)
            .current_dir(&dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server on {port} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p PORT ARGS...`, its output; panics when it fails.
fn cli(port: u16, args: &[&str]) -> String {
    let out =
        Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A cluster section with quick timings for tests.
fn section(redis: String, name: &str, node: &str) -> ClusterConfig {
    ClusterConfig {
        name: name.into(),
        node: Some(node.into()),
        heartbeat_ms: 100,
        ttl_ms: 1_000,
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        health_grace_ms: 1_000,
        ..ClusterConfig::new(redis)
    }
}

fn node(cluster: ClusterConfig) -> Broker {
    start(Config { cluster: Some(cluster), ..test_config(2) })
}

/// Waits until every node is connected and sees the others.
fn await_joined(nodes: &[Broker]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = nodes.iter().all(|n| {
            let c = n.cluster_counters().unwrap();
            c.connected == 1 && c.peers == nodes.len() as u64 - 1
        });
        if all {
            return;
        }
        let seen: Vec<_> = nodes.iter().map(|n| n.cluster_counters().unwrap()).collect();
        assert!(Instant::now() < deadline, "nodes never joined: {seen:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes probes on `topic` from `publisher` until `subscriber` gets one
/// (the subscription's announcement reached the publisher's node), then
/// drains the probes still on their way.
fn await_route(publisher: &mut Client11, topic: &str, subscriber: &mut Client11) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publisher.publish(topic, b"probe");
        if let Some(Got11::Msg { .. }) = subscriber.next(Duration::from_millis(50)) {
            break;
        }
        assert!(Instant::now() < deadline, "no route to {topic} within 10 s");
    }
    while subscriber.next(Duration::from_millis(200)).is_some() {}
}

fn expect_msg(c: &mut Client11, topic: &str, payload: &[u8]) {
    match c.next(Duration::from_secs(5)) {
        Some(Got11::Msg { topic: t, payload: p, .. }) if t == topic && p == payload => {}
        other => panic!("expected {topic} {payload:?}, got {other:?}"),
    }
}

fn connect(node: &Broker) -> Client11 {
    Client11::connect(node.local_addr(), false)
}

/// Pub/sub with a wildcard, a queue group with a member on each node, and
/// a request answered on another node: what every mode must carry.
fn exercise(nodes: &[Broker]) {
    let mut sub = connect(&nodes[1]);
    sub.sub(1, "orders.*");
    let mut publisher = connect(&nodes[0]);
    await_route(&mut publisher, "orders.probe", &mut sub);
    publisher.publish("orders.new", b"first");
    expect_msg(&mut sub, "orders.new", b"first");

    let mut members: Vec<Client11> = nodes.iter().map(connect).collect();
    for m in &mut members {
        m.sub_group(7, "jobs", "workers");
        m.flush();
    }
    let mut observer = connect(&nodes[2]);
    observer.sub(8, "jobs");
    await_route(&mut publisher, "jobs", &mut observer);
    for m in &mut members {
        while m.next(Duration::from_millis(100)).is_some() {}
    }
    const JOBS: usize = 300;
    for n in 0..JOBS {
        publisher.publish("jobs", format!("job {n}").as_bytes());
    }
    for _ in 0..JOBS {
        observer.recv();
    }
    let mut got = Vec::new();
    let mut shares = Vec::new();
    for m in &mut members {
        let before = got.len();
        while let Some(Got11::Msg { payload, .. }) = m.next(Duration::from_millis(300)) {
            got.push(payload);
        }
        shares.push(got.len() - before);
    }
    assert_eq!(got.len(), JOBS, "each job once: {shares:?}");
    got.sort();
    got.dedup();
    assert_eq!(got.len(), JOBS, "none twice, none lost");
    assert!(shares.iter().all(|&n| n > 0), "every node's member had a share: {shares:?}");

    let mut responder = connect(&nodes[2]);
    responder.sub(9, "svc.echo");
    let mut requester = connect(&nodes[0]);
    requester.sub(10, "_INBOX.r1");
    requester.flush();
    await_route(&mut publisher, "svc.echo", &mut responder);
    requester.request("svc.echo", "_INBOX.r1", b"ping");
    let reply_to = loop {
        match responder.next(Duration::from_secs(5)) {
            Some(Got11::Msg { reply_to, payload, .. }) if payload == b"ping" => break reply_to,
            Some(_) => {}
            None => panic!("the request never arrived"),
        }
    };
    responder.publish(&reply_to, b"pong");
    expect_msg(&mut requester, "_INBOX.r1", b"pong");
    requester.request("svc.nobody", "_INBOX.r1", b"anyone?");
    match requester.next(Duration::from_secs(5)) {
        Some(Got11::NoResponders { topic, .. }) if topic == "svc.nobody" => {}
        other => panic!("expected NO_RESPONDERS, got {other:?}"),
    }
}

/// A Redis Cluster of three shards: the nodes publish with `SPUBLISH` and
/// subscribe with `SSUBSCRIBE` only (a plain `PUBLISH` there is broadcast
/// to every shard), and every case of a single Redis works.
#[test]
fn sharded_mode_routes_over_a_redis_cluster() {
    let mut servers = Servers::new("sharded");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for &p in &ports {
        servers.spawn(
            p,
            &[
                "--port",
                &p.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ],
        );
    }
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(hosts.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    cli(ports[0], &create);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ports.iter().all(|&p| cli(p, &["cluster", "info"]).contains("cluster_state:ok")) {
        assert!(Instant::now() < deadline, "the Redis Cluster never formed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let urls = format!("redis://{},redis://{}", hosts[0], hosts[1]);
    let nodes: Vec<Broker> = (0..3)
        .map(|i| {
            node(ClusterConfig {
                mode: Mode::Sharded,
                ..section(urls.clone(), "sharded", &format!("s{i}"))
            })
        })
        .collect();
    await_joined(&nodes);
    exercise(&nodes);
    let stats: String = ports.iter().map(|&p| cli(p, &["info", "commandstats"])).collect();
    assert!(stats.contains("cmdstat_spublish"), "{stats}");
    assert!(stats.contains("cmdstat_ssubscribe"), "{stats}");
    assert!(!stats.contains("cmdstat_publish:"), "a plain PUBLISH on a Redis Cluster: {stats}");
    for n in nodes {
        n.shutdown();
        n.wait().unwrap();
    }
}

/// A CA and a certificate it signed, as PEM files.
fn pki(servers: &Servers) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "cluster test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&params, &ca_key);
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        servers.file("ca.pem", &ca_cert.pem()),
        servers.file("cert.pem", &cert.pem()),
        servers.file("key.pem", &key.serialize_pem()),
        servers.file("other-ca.pem", &{
            let mut other = CertificateParams::default();
            other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            other.self_signed(&KeyPair::generate().unwrap()).unwrap().pem()
        }),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// TLS to Redis, which asks for client certificates: nodes with the CA and
/// a certificate join and route; a node that does not trust Redis's
/// certificate never connects, and its own clients are served meanwhile.
#[test]
fn nodes_reach_redis_over_tls_with_a_client_certificate() {
    let mut servers = Servers::new("redis-tls");
    let (ca, cert, key, other_ca) = pki(&servers);
    let port = free_port();
    let tls_port = port.to_string();
    servers.spawn(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            path(&cert),
            "--tls-key-file",
            path(&key),
            "--tls-ca-cert-file",
            path(&ca),
            "--tls-auth-clients",
            "yes",
        ],
    );
    let url = format!("rediss://localhost:{port}");
    let tls = RedisTls { ca: Some(ca.clone()), cert: Some(cert.clone()), key: Some(key.clone()) };
    let nodes: Vec<Broker> = (0..3)
        .map(|i| {
            node(ClusterConfig {
                tls: Some(tls.clone()),
                ..section(url.clone(), "tls", &format!("t{i}"))
            })
        })
        .collect();
    await_joined(&nodes);
    exercise(&nodes);

    let untrusting = RedisTls { ca: Some(other_ca), ..tls };
    let outsider = node(ClusterConfig { tls: Some(untrusting), ..section(url, "tls", "outsider") });
    let mut sub = connect(&outsider);
    sub.sub(1, "local");
    sub.flush();
    let mut publisher = connect(&outsider);
    publisher.publish("local", b"still served");
    expect_msg(&mut sub, "local", b"still served");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        outsider.cluster_counters().unwrap().connected,
        0,
        "connected without trusting Redis"
    );
    for n in nodes.into_iter().chain([outsider]) {
        n.shutdown();
        n.wait().unwrap();
    }
}

/// The README's `ACL SETUSER` line, with a password.
fn readme_acl(password: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("ACL SETUSER corecast "))
        .expect("the README gives the ACL");
    line.replace(">PASSWORD", &format!(">{password}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// A Redis user with exactly the README's ACL is enough for every case,
/// and Redis refused nothing a node asked.
#[test]
fn the_readme_acl_is_all_a_node_needs() {
    let mut servers = Servers::new("redis-acl");
    let port = free_port();
    servers.spawn(port, &["--port", &port.to_string()]);
    let acl = readme_acl("s3cret");
    let args: Vec<&str> = acl.iter().map(String::as_str).collect();
    assert_eq!(cli(port, &args).trim(), "OK");
    let password = servers.file("redis.pass", "s3cret\n");
    let nodes: Vec<Broker> = (0..3)
        .map(|i| {
            node(ClusterConfig {
                username: Some("corecast".into()),
                password_file: Some(password.clone()),
                ..section(format!("redis://127.0.0.1:{port}"), "corecast", &format!("a{i}"))
            })
        })
        .collect();
    await_joined(&nodes);
    exercise(&nodes);
    // The default user (an administrator here) reads what was refused.
    let log = cli(port, &["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "Redis refused commands: {log}");
    let clients = cli(port, &["CLIENT", "LIST"]);
    let nodes_as_corecast = clients.lines().filter(|l| l.contains("user=corecast")).count();
    assert!(nodes_as_corecast >= 6, "each node's two connections log in as corecast: {clients}");
    for n in nodes {
        n.shutdown();
        n.wait().unwrap();
    }
}

/// The `[cluster]` section is fixed at start: a reload that changes or
/// drops it is refused by name, and the node stays in its cluster.
#[test]
fn a_reload_keeps_the_cluster_section() {
    let mut servers = Servers::new("redis-reload");
    let port = free_port();
    servers.spawn(port, &["--port", &port.to_string()]);
    let url = format!("redis://127.0.0.1:{port}");
    let nodes: Vec<Broker> =
        (0..2).map(|i| node(section(url.clone(), "reload", &format!("r{i}")))).collect();
    await_joined(&nodes);
    let config = (*nodes[0].config()).clone();
    let renamed = Config { cluster: Some(section(url, "reload", "other")), ..config.clone() };
    let reloaded = nodes[0].reload(renamed).expect("a valid configuration");
    assert!(reloaded.refused.iter().any(|k| k == "cluster"), "{reloaded:?}");
    let reloaded = nodes[0].reload(Config { cluster: None, ..config }).expect("valid");
    assert!(reloaded.refused.iter().any(|k| k == "cluster"), "{reloaded:?}");
    assert!(nodes[0].config().cluster.as_ref().and_then(|c| c.node.clone()) == Some("r0".into()));
    await_joined(&nodes);
    for n in nodes {
        n.shutdown();
        n.wait().unwrap();
    }
}
