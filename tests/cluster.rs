//! A cluster of nodes over Redis, against a real `redis-server` of each
//! test's own and three nodes on loopback (in this process, or as
//! processes where one is killed): pub/sub between every pair, wildcards,
//! headers, large messages, queue groups, requests and no-responders,
//! per-publisher order, no double delivery, a node killed, Redis killed or
//! flushed, and a leak storm after which every node is idle.
//!
//! Interest crosses nodes asynchronously, so nothing here sleeps for it:
//! [`await_route`] publishes probes until the subscribers see one, and the
//! counters are polled, each wait with a deadline that fails the test with
//! what was missing. Probe payloads start with [`PROBE`], and the readers
//! skip them, so a probe that arrives late never counts as traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use common::{
    process::Proc,
    redis::Redis,
    seq_of, seq_payload, test_config,
    v11::{hmsg, msg11, no_responders, trace_block, Client11, Got11},
    wait_idle, Client, Got,
};
use corecast::{
    cluster::{Backpressure, ClusterConfig, ClusterSnapshot},
    Broker, Config,
};

/// How long any one wait (a route, a counter, a batch of messages) may
/// take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The start of every probe payload; readers skip such messages.
const PROBE: &[u8] = b"probe:";

// ---------------------------------------------------------------------------
// The Redis test server itself

#[test]
fn redis_helper_starts_answers_pauses_kills_and_restarts() {
    let mut redis = Redis::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.command(&["GET", "k"]), "v");
    assert_eq!(redis.command(&["GET", "missing"]), "(nil)");
    assert_eq!(redis.command(&["HSET", "h", "f1", "a", "f2", "b"]), "2");
    let all: BTreeSet<String> =
        redis.command(&["HGETALL", "h"]).lines().map(String::from).collect();
    assert_eq!(all, ["f1", "a", "f2", "b"].into_iter().map(String::from).collect());
    let keys: BTreeSet<String> = redis.command(&["KEYS", "*"]).lines().map(String::from).collect();
    assert_eq!(keys, ["h", "k"].into_iter().map(String::from).collect());
    assert_eq!(redis.command(&["PUBSUB", "CHANNELS"]), "");
    assert!(redis.command(&["INFO", "server"]).contains("redis_version:"));
    assert!(redis.command(&["NO-SUCH-COMMAND"]).starts_with("(error) "));
    assert_eq!(redis.command(&["FLUSHALL"]), "OK");
    assert_eq!(redis.command(&["KEYS", "*"]), "");

    // Paused, it holds connections but answers nothing; resumed, it does.
    redis.command(&["SET", "kept", "1"]);
    redis.pause();
    assert!(redis.try_command_within(&["PING"], Duration::from_millis(300)).is_err());
    redis.resume();
    assert_eq!(redis.command(&["GET", "kept"]), "1");

    // Killed, nothing answers; restarted, the same port answers, empty.
    let port = redis.port();
    redis.kill();
    assert!(redis.try_command(&["PING"]).is_err(), "a killed server answered");
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["KEYS", "*"]), "", "a restarted server starts empty");

    // Dropped, the process is gone.
    let pid = redis.pid().expect("running");
    drop(redis);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "redis {pid} outlived Drop");
}

// ---------------------------------------------------------------------------
// Pub/sub, wildcards, headers, large messages

#[test]
fn nodes_join_and_count_each_other() {
    let nodes = Nodes::start_with("join", 3, Timing::RELAXED, |_, cfg| {
        cfg.http = "127.0.0.1:0".parse().unwrap();
    });
    nodes.wait_joined();
    for i in 0..3 {
        let c = nodes.cc(i);
        assert_eq!((c.connected, c.peers), (1, 2), "node {i}: {c:#?}");
        assert!(c.peers_joined >= 2, "node {i}: {c:#?}");
        assert!(c.snapshot_writes >= 1, "node {i} never wrote its snapshot: {c:#?}");
        // `/stats` carries the same counters in its "cluster" object.
        let stats = http_json(nodes.nodes[i].http_addr().expect("monitoring port"), "/stats");
        let cluster = &stats["cluster"];
        assert_eq!(cluster["connected"], 1, "node {i}: /stats cluster {cluster}");
        assert_eq!(cluster["peers"], 2, "node {i}: /stats cluster {cluster}");
    }
    nodes.finish();
}

#[test]
fn pubsub_between_every_pair_of_nodes() {
    let nodes = Nodes::start("pairs", 3);
    nodes.wait_joined();
    for from in 0..3 {
        for to in 0..3 {
            let topic = format!("pair.{from}.{to}");
            let mut publ = Client11::connect(nodes.addr(from), false);
            let mut sub = Client11::connect(nodes.addr(to), false);
            sub.sub(7, &topic);
            sub.flush_empty();
            await_route(&mut publ, &topic, &mut [&mut sub]);
            let sent: Vec<Vec<u8>> =
                (0..20).map(|i| format!("{from}->{to} #{i}").into_bytes()).collect();
            for payload in &sent {
                publ.publish(&topic, payload);
            }
            publ.flush_empty();
            let got = collect(&mut sub, sent.len(), &topic);
            let want: Vec<Got11> = sent.iter().map(|p| msg11(7, &topic, p)).collect();
            assert_eq!(got, want, "node {from} to node {to}");
            expect_quiet(&mut sub, Duration::from_millis(200), &topic);
        }
    }
    nodes.finish();
}

#[test]
fn wildcards_match_across_nodes() {
    let nodes = Nodes::start("wild", 3);
    nodes.wait_joined();
    // node 1: `*`; node 2: `>`; node 0, beside the publisher: both on one
    // connection, so each matching subscription gets its own copy.
    let mut star = Client11::connect(nodes.addr(1), false);
    star.sub(1, "wild.*.x");
    star.flush_empty();
    let mut tail = Client11::connect(nodes.addr(2), false);
    tail.sub(2, "wild.>");
    tail.flush_empty();
    let mut both = Client11::connect(nodes.addr(0), false);
    both.sub(3, "wild.*.x");
    both.sub(4, "wild.>");
    both.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "wild.probe.x", &mut [&mut star, &mut tail, &mut both]);
    for topic in ["wild.a.x", "wild.b.y", "wild.c.x.d", "wild", "other.a.x", "wild.z.x"] {
        publ.publish(topic, topic.as_bytes());
    }
    publ.flush_empty();
    let m = |sid, topic: &str| msg11(sid, topic, topic.as_bytes());
    assert_eq!(collect(&mut star, 2, "wild.*.x"), vec![m(1, "wild.a.x"), m(1, "wild.z.x")]);
    let all = ["wild.a.x", "wild.b.y", "wild.c.x.d", "wild.z.x"];
    assert_eq!(collect(&mut tail, 4, "wild.>"), all.map(|t| m(2, t)).to_vec());
    let got: BTreeSet<String> =
        collect(&mut both, 6, "both").iter().map(|g| format!("{g:?}")).collect();
    let want: BTreeSet<String> = [m(3, "wild.a.x"), m(3, "wild.z.x")]
        .into_iter()
        .chain(all.map(|t| m(4, t)))
        .map(|g| format!("{g:?}"))
        .collect();
    assert_eq!(got, want);
    // A publisher on another node reaches the same subscriptions.
    let mut publ2 = Client11::connect(nodes.addr(2), false);
    await_route(&mut publ2, "wild.probe.x", &mut [&mut star, &mut both]);
    publ2.publish("wild.n2.x", b"wild.n2.x");
    publ2.flush_empty();
    assert_eq!(collect(&mut star, 1, "wild.*.x"), vec![m(1, "wild.n2.x")]);
    assert_eq!(collect(&mut tail, 1, "wild.>"), vec![m(2, "wild.n2.x")]);
    let got: BTreeSet<String> =
        collect(&mut both, 2, "both").iter().map(|g| format!("{g:?}")).collect();
    assert_eq!(
        got,
        BTreeSet::from([m(3, "wild.n2.x"), m(4, "wild.n2.x")].map(|g| format!("{g:?}")))
    );
    for c in [&mut star, &mut tail, &mut both] {
        expect_quiet(c, Duration::from_millis(200), "wild");
    }
    drop((star, tail, both, publ, publ2));
    nodes.finish();
}

#[test]
fn headers_cross_nodes_intact() {
    let nodes = Nodes::start("hdrs", 3);
    nodes.wait_joined();
    let mut h11 = Client11::connect(nodes.addr(1), false);
    h11.sub(1, "hdr.t");
    h11.flush_empty();
    // A version 1 subscriber gets a plain MSG: the payload, no block.
    let mut v1 = Client::connect(nodes.addr(2));
    v1.sub(2, "hdr.t");
    v1.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "hdr.t", &mut [&mut h11]);
    await_route_v1(&mut publ, "hdr.t", &mut v1);
    let block = trace_block();
    publ.hpub("hdr.t", block.headers(), b"with headers", false);
    publ.flush_empty();
    assert_eq!(
        collect(&mut h11, 1, "hdr.t"),
        vec![hmsg(1, "hdr.t", block.headers().as_bytes(), b"with headers")]
    );
    assert_eq!(next_v1(&mut v1), Got::msg(2, "hdr.t", b"with headers"));
    // A request with headers keeps its reply-to across nodes.
    publ.hpub("hdr.t", block.headers(), b"asking", true);
    assert_eq!(publ.flush(), vec![], "a subscriber on another node answers for the request");
    let want = Got11::HMsg {
        sid: 1,
        topic: "hdr.t".into(),
        reply_to: "_INBOX.h".into(),
        headers: block.headers().as_bytes().to_vec(),
        payload: b"asking".to_vec(),
    };
    assert_eq!(collect(&mut h11, 1, "hdr.t"), vec![want]);
    match next_v1(&mut v1) {
        Got::Msg { sid: 2, reply_to, payload, .. } => {
            assert_eq!((reply_to.as_str(), payload.as_slice()), ("_INBOX.h", &b"asking"[..]))
        }
        other => panic!("expected the plain MSG, got {other:?}"),
    }
    drop((h11, v1, publ));
    nodes.finish();
}

#[test]
fn a_1_mib_message_crosses_nodes_intact() {
    let nodes = Nodes::start_with("large", 3, Timing::RELAXED, |_, cfg| {
        cfg.max_frame = 2 << 20;
        cfg.max_pending = 16 << 20;
    });
    nodes.wait_joined();
    let mut subs: Vec<Client11> = (1..3).map(|i| Client11::connect(nodes.addr(i), false)).collect();
    for s in &mut subs {
        s.sub(5, "big.t");
        s.flush_empty();
    }
    let mut publ = Client11::connect(nodes.addr(0), false);
    {
        let [a, b] = &mut subs[..] else { unreachable!() };
        await_route(&mut publ, "big.t", &mut [a, b]);
    }
    let payload: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    for _ in 0..3 {
        publ.publish("big.t", &payload);
    }
    publ.publish("big.t", b"small after");
    publ.flush_empty();
    for (i, s) in subs.iter_mut().enumerate() {
        let got = collect(s, 4, "big.t");
        for g in &got[..3] {
            match g {
                Got11::Msg { sid: 5, payload: p, .. } => {
                    assert!(p == &payload, "node {}: a 1 MiB body changed on the way", i + 1)
                }
                other => panic!("node {}: expected the 1 MiB MSG, got {}", i + 1, brief(other)),
            }
        }
        assert_eq!(brief(&got[3]), brief(&msg11(5, "big.t", b"small after")));
    }
    assert_eq!(nodes.cc(0).out_dropped_too_large, 0);
    drop((subs, publ));
    nodes.finish();
}

#[test]
fn a_message_over_a_peers_max_frame_is_not_sent_and_is_counted() {
    // Node 0 takes 2 MiB frames; node 1 only 64 KiB (the test default).
    let nodes = Nodes::start_with("toolarge", 2, Timing::RELAXED, |i, cfg| {
        if i == 0 {
            cfg.max_frame = 2 << 20;
            cfg.max_pending = 16 << 20;
        }
    });
    nodes.wait_joined();
    let mut sub = Client11::connect(nodes.addr(1), false);
    sub.sub(1, "cap.t");
    sub.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "cap.t", &mut [&mut sub]);
    publ.publish("cap.t", &vec![7u8; 1 << 20]);
    publ.publish("cap.t", b"fits");
    publ.flush_empty();
    // Only the small one arrives (shown in brief: the other is 1 MiB).
    let got: Vec<String> = collect(&mut sub, 1, "cap.t").iter().map(brief).collect();
    assert_eq!(got, vec![brief(&msg11(1, "cap.t", b"fits"))]);
    nodes.wait_cc(0, "out_dropped_too_large = 1", |c| c.out_dropped_too_large == 1);
    drop((sub, publ));
    nodes.finish();
}

// ---------------------------------------------------------------------------
// Queue groups, requests

#[test]
fn queue_group_members_on_three_nodes_get_each_message_once() {
    const N: u64 = 3000;
    let nodes = Nodes::start("queue", 3);
    nodes.wait_joined();
    // One member per node, with different patterns: a group is its name.
    let patterns = ["jobs.*", "jobs.q", "jobs.>"];
    let mut members: Vec<Client11> = (0..3)
        .map(|i| {
            let mut m = Client11::connect(nodes.addr(i), false);
            m.sub_group(1, patterns[i], "workers");
            m.flush_empty();
            m
        })
        .collect();
    // And a subscription without a group, which gets every message.
    let mut plain = Client11::connect(nodes.addr(1), false);
    plain.sub(9, "jobs.q");
    plain.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    {
        let [a, b, c] = &mut members[..] else { unreachable!() };
        await_route(&mut publ, "jobs.q", &mut [a, b, c, &mut plain]);
    }
    for seq in 0..N {
        publ.publish("jobs.q", &seq_payload(seq, 8));
    }
    publ.flush_empty();

    let mut owner: HashMap<u64, usize> = HashMap::new();
    let mut shares = [0u64; 3];
    let deadline = Instant::now() + PATIENCE * 2;
    while owner.len() < N as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {N} queue messages arrived; shares {shares:?}",
            owner.len()
        );
        for (i, m) in members.iter_mut().enumerate() {
            while let Some(g) = next_real(m, Duration::from_millis(5)) {
                let seq = seq_of(payload(&g).unwrap_or_else(|| panic!("member {i}: {g:?}")));
                if let Some(first) = owner.insert(seq, i) {
                    panic!("message {seq} reached member {first} and member {i}");
                }
                shares[i] += 1;
            }
        }
    }
    for (i, m) in members.iter_mut().enumerate() {
        expect_quiet(m, Duration::from_millis(300), &format!("member {i}"));
    }
    // Uniform over the three members: each expects N/3 (sd about 26).
    for (i, share) in shares.iter().enumerate() {
        assert!(*share >= N / 10, "member on node {i} got {share} of {N}: {shares:?}");
    }
    let got = collect(&mut plain, N as usize, "plain jobs.q");
    let seqs: Vec<u64> = got.iter().map(|g| seq_of(payload(g).unwrap())).collect();
    assert_eq!(seqs, (0..N).collect::<Vec<_>>(), "the plain subscriber gets every message");
    for i in 0..3 {
        assert_eq!(nodes.cc(i).queue_undeliverable, 0, "node {i}");
    }
    drop((members, plain, publ));
    nodes.finish();
}

#[test]
fn requests_reach_a_responder_on_another_node_and_no_responders_means_nobody_anywhere() {
    let nodes = Nodes::start("request", 3);
    nodes.wait_joined();
    // Nobody anywhere: NO_RESPONDERS at once, on every node.
    for i in 0..3 {
        let mut req = Client11::connect(nodes.addr(i), false);
        req.request("svc.echo", "_INBOX.none", b"?");
        assert_eq!(req.flush(), vec![no_responders("svc.echo", "_INBOX.none")], "node {i}");
    }
    let mut svc = Client11::connect(nodes.addr(1), false);
    svc.sub(1, "svc.echo");
    svc.flush_empty();
    let mut req = Client11::connect(nodes.addr(0), false);
    await_responder(&mut req, "svc.echo", PATIENCE);
    req.sub(2, "_INBOX.r");
    req.flush_empty();
    for i in 0..100u64 {
        let body = seq_payload(i, 4);
        req.request("svc.echo", "_INBOX.r", &body);
        let (reply_to, got) = match next_real(&mut svc, PATIENCE) {
            Some(Got11::Msg { sid: 1, reply_to, payload, .. }) => (reply_to, payload),
            other => panic!("request {i}: the responder got {other:?}"),
        };
        assert_eq!((reply_to.as_str(), got.as_slice()), ("_INBOX.r", body.as_slice()));
        svc.publish(&reply_to, &got);
        assert_eq!(next_real(&mut req, PATIENCE), Some(msg11(2, "_INBOX.r", &body)), "reply {i}");
    }
    // The responder leaves: nobody anywhere again, on every node, once
    // its withdrawal has crossed.
    drop(svc);
    for i in 0..3 {
        let mut other = Client11::connect(nodes.addr(i), false);
        await_no_responders(&mut other, "svc.echo", &format!("node {i}"));
    }
    drop(req);
    nodes.finish();
}

#[test]
fn a_reply_inbox_subscribed_just_before_its_request_gets_the_reply() {
    // The in-band case: the inbox's interest must reach the responder's
    // node before the request it precedes, on every round.
    let nodes = Nodes::start("inbox", 2);
    nodes.wait_joined();
    let mut svc = Client11::connect(nodes.addr(1), false);
    svc.sub(1, "svc.inbox");
    svc.flush_empty();
    let mut req = Client11::connect(nodes.addr(0), false);
    await_responder(&mut req, "svc.inbox", PATIENCE);
    for i in 0..300u32 {
        let inbox = format!("_INBOX.{i}");
        req.sub(100 + i, &inbox);
        req.request("svc.inbox", &inbox, &i.to_le_bytes());
        let reply_to = match next_real(&mut svc, PATIENCE) {
            Some(Got11::Msg { reply_to, .. }) => reply_to,
            other => panic!("round {i}: the responder got {other:?}"),
        };
        assert_eq!(reply_to, inbox);
        svc.publish(&reply_to, b"yes");
        assert_eq!(
            next_real(&mut req, PATIENCE),
            Some(msg11(100 + i, &inbox, b"yes")),
            "round {i}: the reply to a fresh inbox"
        );
        req.unsub(100 + i);
    }
    drop((svc, req));
    nodes.finish();
}

// ---------------------------------------------------------------------------
// Order, no double delivery

#[test]
fn each_publishers_order_holds_at_subscribers_on_every_node() {
    const N: u64 = 20_000;
    let nodes = Nodes::start_with("order", 3, Timing::RELAXED, |_, cfg| {
        cfg.max_pending = 16 << 20;
    });
    nodes.wait_joined();
    let mut subs: Vec<Client11> = (0..3)
        .map(|i| {
            let mut s = Client11::connect(nodes.addr(i), false);
            s.sub(1, "order.*");
            s.flush_empty();
            s
        })
        .collect();
    let mut pubs: Vec<Client11> = (0..3).map(|i| Client11::connect(nodes.addr(i), false)).collect();
    for (i, p) in pubs.iter_mut().enumerate() {
        let [a, b, c] = &mut subs[..] else { unreachable!() };
        await_route(p, &format!("order.{i}"), &mut [a, b, c]);
    }
    let results: Vec<Result<(), String>> = thread::scope(|s| {
        let readers: Vec<_> = subs
            .iter_mut()
            .enumerate()
            .map(|(node, sub)| s.spawn(move || check_order(sub, node, N)))
            .collect();
        for (i, p) in pubs.iter_mut().enumerate() {
            s.spawn(move || {
                let topic = format!("order.{i}");
                for seq in 0..N {
                    p.publish(&topic, &seq_payload(seq, 16));
                    if seq % 1000 == 999 {
                        p.flush_empty();
                    }
                }
                p.flush_empty();
            });
        }
        readers.into_iter().map(|r| r.join().expect("reader thread")).collect()
    });
    for r in results {
        r.unwrap();
    }
    drop((subs, pubs));
    nodes.finish();
}

/// Reads `3 × n` messages of `order.0..2` and checks that each topic's
/// numbers come as 0, 1, 2… with none missing.
fn check_order(sub: &mut Client11, node: usize, n: u64) -> Result<(), String> {
    let mut next = BTreeMap::<String, u64>::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut total = 0;
    while total < 3 * n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(got) = next_real(sub, left.min(PATIENCE)) else {
            return Err(format!(
                "node {node}: {total} of {} messages, then nothing: {next:?}",
                3 * n
            ));
        };
        let Got11::Msg { topic, payload, .. } = &got else {
            return Err(format!("node {node}: unexpected {got:?}"));
        };
        let want = next.entry(topic.clone()).or_insert(0);
        let seq = seq_of(payload);
        if seq != *want {
            return Err(format!("node {node}: {topic} #{seq} came where #{want} was due"));
        }
        *want += 1;
        total += 1;
    }
    Ok(())
}

#[test]
fn a_message_reaches_each_subscriber_once_and_only_interested_nodes() {
    const N: u64 = 1000;
    let nodes = Nodes::start("once", 3);
    nodes.wait_joined();
    // Subscribers beside the publisher (a topic and a pattern) and on node
    // 1; node 2 has none and must receive nothing.
    let mut local = Client11::connect(nodes.addr(0), false);
    local.sub(1, "once.t");
    local.flush_empty();
    let mut local_tail = Client11::connect(nodes.addr(0), false);
    local_tail.sub(2, "once.>");
    local_tail.flush_empty();
    let mut remote = Client11::connect(nodes.addr(1), false);
    remote.sub(3, "once.t");
    remote.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "once.t", &mut [&mut local, &mut local_tail, &mut remote]);
    for seq in 0..N {
        publ.publish("once.t", &seq_payload(seq, 0));
    }
    publ.flush_empty();
    for (name, c, sid) in
        [("local", &mut local, 1), ("local >", &mut local_tail, 2), ("remote", &mut remote, 3)]
    {
        let got = collect(c, N as usize, name);
        let want: Vec<Got11> = (0..N).map(|s| msg11(sid, "once.t", &seq_payload(s, 0))).collect();
        assert!(got == want, "{name}: not every message once and in order");
        expect_quiet(c, Duration::from_millis(300), name);
    }
    // One copy per interested node: what node 0 sent is what node 1 got,
    // and nothing went to node 2 or came back to node 0.
    let (c0, c1) = wait_for(
        "node 0's out_msgs to match node 1's in_msgs",
        || (nodes.cc(0), nodes.cc(1)),
        |(c0, c1)| c0.out_msgs == c1.in_msgs && c0.out_msgs >= N,
    );
    let c2 = nodes.cc(2);
    assert_eq!((c0.in_msgs, c2.in_msgs, c2.out_msgs), (0, 0, 0), "{c0:#?} {c2:#?}");
    for (i, c) in [c0, c1, c2].iter().enumerate() {
        assert_eq!(c.in_dropped_stale + c.in_dropped_malformed, 0, "node {i}: {c:#?}");
    }
    drop((local, local_tail, remote, publ));
    nodes.finish();
}

// ---------------------------------------------------------------------------
// Faults

#[test]
fn a_killed_node_expires_within_its_ttl_and_its_restart_gets_traffic() {
    let redis = Redis::start();
    let name = cluster_name("nodekill");
    let timing = Timing::FAST;
    let mut nodes = Nodes::with_redis(redis, &name, 2, timing, |_, _| {});
    // Node n2 runs as a process, with its name and Redis given as flags.
    nodes.extra = 1;
    let config = NodeFile::new(&name, &nodes.redis, timing);
    let url = nodes.redis.url();
    let spawn = || {
        let mut p = Proc::spawn(&[
            "--config",
            config.path(),
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "2",
            "--http",
            "127.0.0.1:0",
            "--cluster-redis",
            &url,
            "--cluster-node",
            "n2",
        ]);
        let http = addr_in(&p.wait_for("monitoring port listening"));
        (p, http)
    };
    let (mut proc, _) = spawn();
    nodes.wait_peers(2);
    let mut sub = Client11::connect(proc.addr, false);
    sub.sub(1, "kill.t");
    sub.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "kill.t", &mut [&mut sub]);

    proc.signal("KILL");
    proc.wait_exit(PATIENCE);
    let killed = Instant::now();
    for i in 0..2 {
        nodes.wait_cc(i, "peers = 1 after the kill", |c| c.peers == 1);
    }
    let took = killed.elapsed();
    let bound = Duration::from_millis(timing.ttl_ms) + Duration::from_millis(1500);
    assert!(took <= bound, "the killed node counted for {took:?}, ttl {}ms", timing.ttl_ms);
    assert!(nodes.cc(0).peers_expired >= 1, "{:#?}", nodes.cc(0));
    // Expired, it is no longer sent anything.
    let before = nodes.cc(0).out_msgs;
    for i in 0..50u64 {
        publ.publish("kill.t", &seq_payload(i, 0));
    }
    publ.flush_empty();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(nodes.cc(0).out_msgs, before, "copies sent to a node that is gone");

    // Restarted under the same name: a new incarnation, found and served.
    wait_for(
        "the killed node's snapshot to expire in Redis",
        || nodes.redis.command(&["KEYS", &format!("*{name}*n2*")]),
        |keys| keys.is_empty(),
    );
    let (proc, http) = spawn();
    nodes.wait_peers(2);
    let mut sub = Client11::connect(proc.addr, false);
    sub.sub(1, "kill.t");
    sub.flush_empty();
    await_route(&mut publ, "kill.t", &mut [&mut sub]);
    for i in 0..50u64 {
        publ.publish("kill.t", &seq_payload(i, 0));
    }
    publ.flush_empty();
    let got = collect(&mut sub, 50, "kill.t on the restarted node");
    let want: Vec<Got11> = (0..50).map(|i| msg11(1, "kill.t", &seq_payload(i, 0))).collect();
    assert_eq!(got, want);
    wait_for(
        "the restarted node to see 2 peers in /stats",
        || http_json(http, "/stats")["cluster"].clone(),
        |c| c["peers"] == 2,
    );
    drop((sub, publ));
    assert!(proc.stop().success());
    nodes.finish();
}

#[test]
fn with_redis_killed_local_traffic_goes_on_and_remote_traffic_resumes_after_its_restart() {
    // A ttl long enough that the peers are still there while the outage's
    // first messages are dropped as "down".
    let timing = Timing { heartbeat_ms: 200, ttl_ms: 3000, ..Timing::FAST };
    // Node 0 serves /healthz, degraded 300 ms into an outage.
    let mut nodes = Nodes::start_with("rediskill", 3, timing, |i, cfg| {
        if i == 0 {
            cfg.http = "127.0.0.1:0".parse().unwrap();
            cfg.cluster.as_mut().unwrap().health_grace_ms = 300;
        }
    });
    let health = nodes.nodes[0].http_addr().expect("node 0's monitoring port");
    assert_eq!(http_json(health, "/healthz")["status"], "ok");
    nodes.wait_joined();
    let mut remote = Client11::connect(nodes.addr(1), false);
    remote.sub(1, "rk.t");
    remote.flush_empty();
    let mut local = Client11::connect(nodes.addr(0), false);
    local.sub(2, "rk.local");
    local.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "rk.t", &mut [&mut remote]);

    nodes.redis.kill();
    // Publish toward node 1 until node 0 notices (probes: nobody counts
    // them if one slipped through before the kill).
    wait_for(
        "node 0 to notice that Redis is gone",
        || {
            publ.publish("rk.t", b"probe:outage");
            publ.flush_empty();
            nodes.cc(0)
        },
        |c| c.connected == 0,
    );
    for seq in 0..100 {
        publ.publish("rk.t", &seq_payload(seq, 0));
    }
    publ.flush_empty();
    nodes.wait_cc(0, "out_dropped_down > 0", |c| c.out_dropped_down > 0);
    // Local pub/sub goes on meanwhile.
    for seq in 0..100 {
        publ.publish("rk.local", &seq_payload(seq, 0));
    }
    publ.flush_empty();
    let got = collect(&mut local, 100, "local during the outage");
    assert_eq!(got, (0..100).map(|s| msg11(2, "rk.local", &seq_payload(s, 0))).collect::<Vec<_>>());
    for i in 0..3 {
        nodes.wait_cc(i, "connected = 0", |c| c.connected == 0);
    }
    wait_for(
        "node 0's /healthz to say degraded",
        || http_json(health, "/healthz"),
        |h| h["status"] == "degraded" && h["cluster"]["connected"] == false,
    );
    expect_quiet(&mut remote, Duration::from_millis(100), "remote during the outage");

    // Back, empty: every node reconnects and rebuilds the interest.
    nodes.redis.restart();
    for i in 0..3 {
        let c = nodes.wait_cc(i, "connected = 1 again", |c| c.connected == 1);
        assert!(c.disconnects >= 1 && c.reconnects >= 1, "node {i}: {c:#?}");
    }
    nodes.wait_joined();
    wait_for(
        "node 0's /healthz to be ok again",
        || http_json(health, "/healthz"),
        |h| h["status"] == "ok" && h["cluster"]["connected"] == true && h["cluster"]["peers"] == 2,
    );
    await_route(&mut publ, "rk.t", &mut [&mut remote]);
    for seq in 100..200 {
        publ.publish("rk.t", &seq_payload(seq, 0));
    }
    publ.flush_empty();
    let got = collect(&mut remote, 100, "remote after the restart");
    let want: Vec<Got11> = (100..200).map(|s| msg11(1, "rk.t", &seq_payload(s, 0))).collect();
    assert_eq!(got, want);
    // Interest made after the restart crosses too, the other way.
    let mut late = Client11::connect(nodes.addr(0), false);
    late.sub(3, "rk.late");
    late.flush_empty();
    let mut publ2 = Client11::connect(nodes.addr(2), false);
    await_route(&mut publ2, "rk.late", &mut [&mut late]);
    let keys = nodes.redis.command(&["KEYS", "*"]);
    assert!(keys.contains(&nodes.name), "no key of the cluster in the new Redis: {keys:?}");
    drop((remote, local, publ, late, publ2));
    nodes.finish();
}

#[test]
fn a_flushed_redis_gets_every_snapshot_back() {
    let mut nodes = Nodes::start("flush", 3);
    nodes.wait_joined();
    let mut sub = Client11::connect(nodes.addr(1), false);
    sub.sub(1, "fl.t");
    sub.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "fl.t", &mut [&mut sub]);
    let writes = nodes.cc(1).snapshot_writes;
    assert_eq!(nodes.redis.command(&["FLUSHALL"]), "OK");
    nodes.wait_cc(1, "a snapshot rewrite after the flush", |c| c.snapshot_writes > writes);
    // Routes that existed go on.
    publ.publish("fl.t", b"after the flush");
    publ.flush_empty();
    assert_eq!(collect(&mut sub, 1, "fl.t"), vec![msg11(1, "fl.t", b"after the flush")]);
    // A node that joins now learns node 1's interest from Redis alone.
    let timing = nodes.timing;
    nodes.add_node(timing, |_| {});
    nodes.wait_joined();
    let mut publ3 = Client11::connect(nodes.addr(3), false);
    await_route(&mut publ3, "fl.t", &mut [&mut sub]);
    drop((sub, publ, publ3));
    nodes.finish();
}

#[test]
fn hold_or_drop_while_redis_is_paused() {
    for policy in [Backpressure::Hold, Backpressure::Drop] {
        let mut nodes = Nodes::start_with("paused", 2, Timing::RELAXED, |_, cfg| {
            let cc = cfg.cluster.as_mut().unwrap();
            cc.backpressure = policy;
            cc.max_batch = 4096;
            cc.out_window = 16 << 10;
            cc.command_timeout_ms = 5_000;
            cfg.max_frame = 4096;
            cfg.max_pending = 16 << 20;
        });
        nodes.wait_joined();
        let mut remote = Client11::connect(nodes.addr(1), false);
        remote.sub(1, "bp.remote");
        remote.flush_empty();
        let mut local = Client11::connect(nodes.addr(0), false);
        local.sub(2, "bp.local");
        local.flush_empty();
        let mut publ = Client11::connect(nodes.addr(0), false);
        await_route(&mut publ, "bp.remote", &mut [&mut remote]);
        nodes.redis.pause();
        // Far more than the window, to the remote topic, from a thread:
        // under `hold` its publisher waits.
        let body = vec![1u8; 1024];
        let (resumed, sent) = thread::scope(|s| {
            let sender = s.spawn(|| {
                for _ in 0..256 {
                    publ.publish("bp.remote", &body);
                }
                publ.flush_empty();
                Instant::now()
            });
            // A local topic is never held.
            let mut other = Client11::connect(nodes.addr(0), false);
            for seq in 0..100 {
                other.publish("bp.local", &seq_payload(seq, 0));
            }
            collect(&mut local, 100, "local while Redis is paused");
            thread::sleep(Duration::from_millis(500));
            nodes.redis.resume();
            (Instant::now(), sender.join().expect("sender"))
        });
        match policy {
            Backpressure::Hold => {
                assert!(
                    sent >= resumed,
                    "hold: the remote publisher went on while Redis was paused"
                );
                // Held, not lost: every message arrives once Redis is back.
                let got = collect(&mut remote, 256, "held messages after the resume");
                assert!(got.iter().all(|g| payload(g) == Some(&body[..])));
                let c = nodes.cc(0);
                assert!(c.holds >= 1, "{c:#?}");
                assert_eq!(c.out_dropped_full, 0, "{c:#?}");
            }
            Backpressure::Drop => {
                assert!(sent < resumed, "drop: the remote publisher waited for Redis");
                nodes.wait_cc(0, "out_dropped_full > 0", |c| c.out_dropped_full > 0);
            }
        }
        drop((remote, local, publ));
        nodes.finish();
    }
}

// ---------------------------------------------------------------------------
// Leaks

/// Under `hold`, Redis that stops answering for longer than
/// `command_timeout` counts as down: the held publisher and the `PONG`s
/// behind its messages go on (the copies for other nodes dropped and
/// counted) while Redis is still paused, and traffic crosses again once it
/// is back.
#[test]
fn hold_ends_when_redis_stays_silent_past_the_command_timeout() {
    let mut nodes = Nodes::start_with("silent", 2, Timing::RELAXED, |_, cfg| {
        let cc = cfg.cluster.as_mut().unwrap();
        cc.max_batch = 4096;
        cc.out_window = 16 << 10;
        cc.command_timeout_ms = 500;
        cfg.max_frame = 4096;
    });
    nodes.wait_joined();
    let mut remote = Client11::connect(nodes.addr(1), false);
    remote.sub(1, "silent.remote");
    remote.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "silent.remote", &mut [&mut remote]);
    nodes.redis.pause();
    let paused = Instant::now();
    let body = vec![2u8; 1024];
    for _ in 0..256 {
        publ.publish("silent.remote", &body);
    }
    // The PONG comes while Redis is still paused: the wait ended with the
    // command timeout, not with Redis.
    publ.flush_empty();
    let waited = paused.elapsed();
    assert!(waited < Duration::from_secs(4), "the PONG took {waited:?}");
    let c =
        nodes.wait_cc(0, "the outage counted", |c| c.disconnects >= 1 && c.out_dropped_down > 0);
    assert!(c.holds >= 1, "{c:#?}");
    nodes.redis.resume();
    nodes.wait_cc(0, "connected again", |c| c.connected == 1 && c.peers == 1);
    // What Redis had read before it paused is delivered after it resumes,
    // though the node counted it as dropped when the round timed out.
    while remote.next(Duration::from_millis(500)).is_some() {}
    await_route(&mut publ, "silent.remote", &mut [&mut remote]);
    drop((remote, publ));
    nodes.finish();
}

/// A subscription made right after Redis lost every key (a `FLUSHALL`,
/// eviction) does not leave a partial snapshot behind: the node writes it
/// whole again, so a node that joins later learns all of its interest.
#[test]
fn a_change_right_after_a_flush_leaves_the_whole_snapshot() {
    let mut nodes = Nodes::start("flushchange", 2);
    nodes.wait_joined();
    let mut sub = Client11::connect(nodes.addr(1), false);
    sub.sub(1, "fc.old");
    sub.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "fc.old", &mut [&mut sub]);
    assert_eq!(nodes.redis.command(&["FLUSHALL"]), "OK");
    sub.sub(2, "fc.new");
    sub.flush_empty();
    let key = format!("{{cc:{}}}:node:n1", nodes.name);
    wait_for(
        "n1's snapshot whole again",
        || interest_fields(&nodes.redis.command(&["HGETALL", &key])),
        |fields| {
            fields.iter().any(|f| f.contains("fc.old"))
                && fields.iter().any(|f| f.contains("fc.new"))
        },
    );
    let timing = nodes.timing;
    nodes.add_node(timing, |_| {});
    nodes.wait_joined();
    let mut late = Client11::connect(nodes.addr(2), false);
    await_route(&mut late, "fc.old", &mut [&mut sub]);
    drop((sub, publ, late));
    nodes.finish();
}

/// A message as large as `max_frame` crosses when the windows hold it
/// (the configuration refuses windows that cannot).
#[test]
fn a_message_of_max_frame_crosses() {
    let nodes = Nodes::start_with("bigframe", 2, Timing::RELAXED, |_, cfg| {
        cfg.max_frame = 8 << 20;
        cfg.max_pending = 32 << 20;
        cfg.pending_budget = 64 << 20;
        let cc = cfg.cluster.as_mut().unwrap();
        cc.in_queue = 16 << 20;
        cc.out_window = 16 << 20;
    });
    nodes.wait_joined();
    let mut sub = Client11::connect(nodes.addr(1), false);
    sub.sub(5, "big.t");
    sub.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "big.t", &mut [&mut sub]);
    let body: Vec<u8> = (0..(8 << 20) - 1024).map(|i| (i % 251) as u8).collect();
    publ.publish("big.t", &body);
    let got = next_real(&mut sub, Duration::from_secs(10)).expect("the large message arrives");
    assert_eq!(payload(&got), Some(&body[..]));
    drop((sub, publ));
    nodes.finish();
}

#[test]
fn a_leak_storm_leaves_every_node_idle() {
    const CONNECTIONS: usize = 2000;
    const WORKERS: usize = 4;
    let nodes = Nodes::start("storm", 3);
    nodes.wait_joined();
    let channels_before = nodes.redis.command(&["PUBSUB", "CHANNELS"]);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| nodes.addr(i)).collect();
    // The storm, while a sampler notes the most remote patterns any node
    // held: the storm must have crossed nodes for the test to mean much.
    let done = std::sync::atomic::AtomicBool::new(false);
    let peak_remote = thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                peak = (0..3).map(|i| nodes.cc(i).remote_patterns).fold(peak, u64::max);
                thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        let stop = common::SetOnDrop(&done);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let addrs = &addrs;
                s.spawn(move || {
                    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
                    for _ in 0..CONNECTIONS / WORKERS {
                        storm_connection(&mut rng, addrs);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("storm worker");
        }
        drop(stop);
        sampler.join().expect("sampler")
    });
    assert!(peak_remote > 0, "no node ever saw remote interest during the storm");
    let crossed: u64 = (0..3).map(|i| nodes.cc(i).out_msgs).sum();
    assert!(crossed > 0, "no storm message crossed nodes");
    for (i, node) in nodes.nodes.iter().enumerate() {
        let c = wait_idle(node);
        assert_eq!((c.slots_in_use, c.subscriptions, c.connections_open), (0, 0, 0), "node {i}");
        nodes.wait_cc(i, "no remote interest, empty windows and queues", |c| {
            c.remote_patterns == 0 && c.out_window_bytes == 0 && c.in_queue_bytes == 0
        });
        let c = nodes.cc(i);
        assert_eq!(c.in_dropped_malformed + c.in_dropped_stale, 0, "node {i}: {c:#?}");
    }
    // Redis holds no per-topic channel, and no node's snapshot keeps an
    // item of interest (`p…`/`q…` fields, design 2.3).
    let channels = nodes.redis.command(&["PUBSUB", "CHANNELS"]);
    assert_eq!(channels.lines().count(), channels_before.lines().count(), "{channels}");
    for node in ["n0", "n1", "n2"] {
        let key = format!("{{cc:{}}}:node:{node}", nodes.name);
        wait_for(
            &format!("{key} to hold no interest"),
            || nodes.redis.command(&["HGETALL", &key]),
            |all| interest_fields(all).is_empty(),
        );
    }
    // And the nodes still route between each other.
    let mut sub = Client11::connect(nodes.addr(2), false);
    sub.sub(1, "storm.after");
    sub.flush_empty();
    let mut publ = Client11::connect(nodes.addr(0), false);
    await_route(&mut publ, "storm.after", &mut [&mut sub]);
    publ.publish("storm.after", b"still there");
    publ.flush_empty();
    assert_eq!(
        collect(&mut sub, 1, "after the storm"),
        vec![msg11(1, "storm.after", b"still there")]
    );
    drop((sub, publ));
    nodes.finish();
}

/// One connection of the storm: a random node, one to three random topics,
/// patterns or queue groups, a few publishes, then away in one of three
/// ways (UNSUB first, a plain close, a reset).
fn storm_connection(rng: &mut XorShift, addrs: &[SocketAddr]) {
    let mut c = Client11::connect(addrs[rng.below(addrs.len() as u64) as usize], false);
    let topic = |rng: &mut XorShift| format!("storm.{}.{}", rng.below(20), rng.below(20));
    let subs = 1 + rng.below(3) as u32;
    for sid in 1..=subs {
        let pattern = match rng.below(5) {
            0 => format!("storm.{}.*", rng.below(20)),
            1 => format!("storm.*.{}", rng.below(20)),
            2 => "storm.>".to_string(),
            _ => topic(rng),
        };
        if rng.below(3) == 0 {
            c.sub_group(sid, &pattern, &format!("g{}", rng.below(4)));
        } else {
            c.sub(sid, &pattern);
        }
    }
    for _ in 0..rng.below(4) {
        c.publish(&topic(rng), b"storm");
    }
    if rng.below(2) == 0 {
        let _ = c.flush();
    }
    match rng.below(3) {
        0 => {
            for sid in 1..=subs {
                c.unsub(sid);
            }
            drop(c);
        }
        1 => drop(c),
        _ => c.reset(),
    }
}

/// The fields of an `HGETALL` reply (field, value, field, value… one a
/// line) that name an item of interest rather than the snapshot's meta.
fn interest_fields(hgetall: &str) -> Vec<String> {
    let lines: Vec<&str> = hgetall.lines().collect();
    lines
        .chunks(2)
        .map(|kv| kv[0])
        .filter(|f| (f.starts_with('p') && *f != "partitions") || f.starts_with('q'))
        .map(String::from)
        .collect()
}

/// A small deterministic generator, so that a failing storm can be rerun.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------
// Nodes

/// The timings of a test cluster.
#[derive(Debug, Clone, Copy)]
struct Timing {
    heartbeat_ms: u64,
    ttl_ms: u64,
    command_timeout_ms: u64,
    reconnect_min_ms: u64,
    reconnect_max_ms: u64,
}

impl Timing {
    /// For the fault tests: a silent node expires within 600 ms.
    const FAST: Timing = Timing {
        heartbeat_ms: 100,
        ttl_ms: 600,
        command_timeout_ms: 1000,
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
    };
    /// For the others: slack enough that a busy machine (tests run in
    /// parallel) never makes a live node look dead.
    const RELAXED: Timing = Timing { heartbeat_ms: 250, ttl_ms: 5000, ..Timing::FAST };
}

/// A unique cluster name per test (and test process), so that clusters
/// sharing a Redis never see each other.
fn cluster_name(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// The `[cluster]` section of node `node`.
fn cluster_config(redis: &Redis, name: &str, node: &str, t: Timing) -> ClusterConfig {
    let mut cc = ClusterConfig::new(redis.url());
    cc.name = name.into();
    cc.node = Some(node.into());
    cc.heartbeat_ms = t.heartbeat_ms;
    cc.ttl_ms = t.ttl_ms;
    cc.health_grace_ms = t.ttl_ms;
    cc.command_timeout_ms = t.command_timeout_ms;
    cc.reconnect_min_ms = t.reconnect_min_ms;
    cc.reconnect_max_ms = t.reconnect_max_ms;
    cc
}

/// A Redis of the test's own and nodes `n0, n1…` in this process, each on
/// two cores.
struct Nodes {
    nodes: Vec<Broker>,
    redis: Redis,
    name: String,
    timing: Timing,
    /// Nodes outside `nodes` that count as peers (processes).
    extra: usize,
}

impl Nodes {
    fn start(test: &str, n: usize) -> Nodes {
        Self::start_with(test, n, Timing::RELAXED, |_, _| {})
    }

    /// Nodes whose configs `tweak` (node index, config) adjusts.
    fn start_with(
        test: &str,
        n: usize,
        timing: Timing,
        tweak: impl Fn(usize, &mut Config),
    ) -> Nodes {
        Self::with_redis(Redis::start(), &cluster_name(test), n, timing, tweak)
    }

    fn with_redis(
        redis: Redis,
        name: &str,
        n: usize,
        timing: Timing,
        tweak: impl Fn(usize, &mut Config),
    ) -> Nodes {
        let mut nodes = Nodes { nodes: Vec::new(), redis, name: name.into(), timing, extra: 0 };
        for i in 0..n {
            nodes.add_node(timing, |cfg| tweak(i, cfg));
        }
        nodes
    }

    /// Starts node `n<len>`.
    fn add_node(&mut self, timing: Timing, tweak: impl FnOnce(&mut Config)) {
        let node = format!("n{}", self.nodes.len());
        let mut cfg = Config {
            cluster: Some(cluster_config(&self.redis, &self.name, &node, timing)),
            ..test_config(2)
        };
        tweak(&mut cfg);
        self.nodes.push(Broker::start(cfg).unwrap_or_else(|e| panic!("node {node} starts: {e}")));
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].local_addr()
    }

    /// Node `i`'s cluster counters.
    fn cc(&self, i: usize) -> ClusterSnapshot {
        self.nodes[i].cluster_counters().expect("a cluster node has cluster counters")
    }

    /// Polls node `i`'s cluster counters until `cond` holds.
    fn wait_cc(
        &self,
        i: usize,
        what: &str,
        cond: impl Fn(&ClusterSnapshot) -> bool,
    ) -> ClusterSnapshot {
        wait_for(&format!("node {i}: {what}"), || self.cc(i), cond)
    }

    /// Every node connected and seeing `peers` others.
    fn wait_peers(&self, peers: u64) {
        for i in 0..self.nodes.len() {
            self.wait_cc(i, &format!("connected, {peers} peers"), |c| {
                c.connected == 1 && c.peers == peers
            });
        }
    }

    /// Every node connected and seeing every other.
    fn wait_joined(&self) {
        let others = self.nodes.len() + self.extra - 1;
        self.wait_peers(others as u64);
    }

    /// Ends the test: every node idle, with no remote interest and empty
    /// windows and queues once the others' clients are gone too, then
    /// stopped cleanly. The clients must be dropped first.
    fn finish(self) {
        for i in 0..self.nodes.len() {
            self.wait_cc(i, "idle (no remote interest, empty window and queue)", |c| {
                c.remote_patterns == 0 && c.out_window_bytes == 0 && c.in_queue_bytes == 0
            });
        }
        for node in self.nodes {
            common::finish(node);
        }
    }
}

/// A config file for a node run as a process: the `[cluster]` section with
/// the test's name and timings (the Redis and the node name also come as
/// flags).
struct NodeFile(std::path::PathBuf);

impl NodeFile {
    fn new(name: &str, redis: &Redis, t: Timing) -> Self {
        let dir = std::env::temp_dir().join(format!("corecast-cluster-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corecast.toml");
        let text = format!(
            "max_frame = 65536\nmax_pending = 262144\n\n[cluster]\nredis = \"{}\"\nname = \"{name}\"\n\
             heartbeat = \"{}ms\"\nttl = \"{}ms\"\nhealth_grace = \"{}ms\"\ncommand_timeout = \"{}ms\"\n\
             reconnect_min = \"{}ms\"\nreconnect_max = \"{}ms\"\nbackpressure = \"hold\"\n",
            redis.url(),
            t.heartbeat_ms,
            t.ttl_ms,
            t.ttl_ms,
            t.command_timeout_ms,
            t.reconnect_min_ms,
            t.reconnect_max_ms,
        );
        std::fs::write(&path, text).unwrap();
        NodeFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for NodeFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `addr=…` from a log line.
fn addr_in(line: &str) -> SocketAddr {
    let word = line.split_whitespace().find_map(|w| w.strip_prefix("addr="));
    word.unwrap_or_else(|| panic!("no addr= in {line:?}")).parse().expect("an address")
}

/// `GET path` on a monitoring port, as JSON.
fn http_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .max_idle_connections(0)
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = response.body_mut().read_to_string().expect("a body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

// ---------------------------------------------------------------------------
// Waiting without sleeping for it

/// Calls `probe` until `cond` holds for what it returns, at most
/// [`PATIENCE`]; fails the test naming `what` and showing the last value.
fn wait_for<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    cond: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..100_000 {
        let value = probe();
        if cond(&value) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("waited {PATIENCE:?} for {what}; last: {value:#?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("waited 100 000 rounds for {what}");
}

/// Publishes probes on `topic` until every one of `subs` has received one:
/// the publisher's node then knows of each subscriber's interest (and, by
/// per-publisher order, every later message follows the probes).
fn await_route(publ: &mut Client11, topic: &str, subs: &mut [&mut Client11]) {
    let deadline = Instant::now() + PATIENCE;
    let mut reached = vec![false; subs.len()];
    for i in 0..10_000u64 {
        publ.publish(topic, &[PROBE, &i.to_le_bytes()[..]].concat());
        for (s, r) in subs.iter_mut().zip(&mut reached) {
            if !*r {
                *r = drain_probes(s, Duration::from_millis(20), topic);
            }
        }
        if reached.iter().all(|r| *r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "interest in {topic} did not cross within {PATIENCE:?}: {} of {} subscribers got \
             one of {} probes",
            reached.iter().filter(|r| **r).count(),
            subs.len(),
            i + 1,
        );
    }
    panic!("10 000 probes on {topic} and still not every subscriber reached");
}

/// Reads what arrives within `wait`: true if a probe did. Anything else is
/// a failure: no test traffic flows while a route is awaited.
fn drain_probes(c: &mut Client11, wait: Duration, topic: &str) -> bool {
    let mut seen = false;
    let mut wait = wait;
    while let Some(got) = c.next(wait) {
        assert!(is_probe(&got), "while awaiting a route for {topic}: unexpected {}", brief(&got));
        seen = true;
        wait = Duration::from_millis(1);
    }
    seen
}

/// [`await_route`] for a version 1 subscriber.
fn await_route_v1(publ: &mut Client11, topic: &str, sub: &mut Client) {
    let deadline = Instant::now() + PATIENCE;
    for i in 0..10_000u64 {
        publ.publish(topic, &[PROBE, &i.to_le_bytes()[..]].concat());
        let mut seen = false;
        while let Ok(got) = sub.next_frame(Duration::from_millis(if seen { 1 } else { 20 })) {
            match got {
                Got::Msg { payload, .. } if payload.starts_with(PROBE) => seen = true,
                other => panic!("while awaiting a route for {topic}: unexpected {other:?}"),
            }
        }
        if seen {
            return;
        }
        assert!(Instant::now() < deadline, "interest in {topic} did not cross within {PATIENCE:?}");
    }
}

/// The next frame of a version 1 client that is not a probe.
fn next_v1(c: &mut Client) -> Got {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_frame(left) {
            Ok(Got::Msg { payload, .. }) if payload.starts_with(PROBE) => {}
            Ok(got) => return got,
            Err(end) => panic!("expected a frame within {PATIENCE:?}, got {end:?}"),
        }
    }
}

/// Sends requests on `topic` until one is not answered `NO_RESPONDERS`:
/// the requester's node then knows of a responder somewhere.
fn await_responder(req: &mut Client11, topic: &str, patience: Duration) {
    let deadline = Instant::now() + patience;
    for i in 0..10_000u64 {
        let inbox = format!("_INBOX.await.{i}");
        req.request(topic, &inbox, &[PROBE, &i.to_le_bytes()[..]].concat());
        let got = req.flush();
        if got.is_empty() {
            return;
        }
        assert_eq!(got, vec![no_responders(topic, &inbox)]);
        assert!(Instant::now() < deadline, "no responder for {topic} within {patience:?}");
        thread::sleep(Duration::from_millis(10));
    }
    panic!("10 000 requests on {topic} all found no responder");
}

/// Sends requests on `topic` until one is answered `NO_RESPONDERS`.
fn await_no_responders(req: &mut Client11, topic: &str, who: &str) {
    let deadline = Instant::now() + PATIENCE;
    for i in 0..10_000u64 {
        let inbox = format!("_INBOX.gone.{i}");
        req.request(topic, &inbox, &[PROBE, &i.to_le_bytes()[..]].concat());
        let got = req.flush();
        if got == vec![no_responders(topic, &inbox)] {
            return;
        }
        assert!(got.is_empty(), "{who}: {got:?}");
        assert!(Instant::now() < deadline, "{who}: a gone responder of {topic} still counts");
        thread::sleep(Duration::from_millis(10));
    }
    panic!("{who}: 10 000 requests on {topic} were all routed");
}

fn payload(g: &Got11) -> Option<&[u8]> {
    match g {
        Got11::Msg { payload, .. } | Got11::HMsg { payload, .. } => Some(payload),
        _ => None,
    }
}

/// A frame in a line: a body shown by its length and first bytes.
fn brief(g: &Got11) -> String {
    match g {
        Got11::Msg { sid, topic, reply_to, payload } => {
            format!("MSG sid {sid} {topic} reply {reply_to:?} {}", body(payload))
        }
        Got11::HMsg { sid, topic, reply_to, headers, payload } => format!(
            "HMSG sid {sid} {topic} reply {reply_to:?} headers {} {}",
            body(headers),
            body(payload)
        ),
        other => format!("{other:?}"),
    }
}

fn body(b: &[u8]) -> String {
    format!("{} B {:?}", b.len(), String::from_utf8_lossy(&b[..b.len().min(24)]))
}

fn is_probe(g: &Got11) -> bool {
    payload(g).is_some_and(|p| p.starts_with(PROBE))
}

/// The next frame that is not a probe, within `timeout`.
fn next_real(c: &mut Client11, timeout: Duration) -> Option<Got11> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = c.next(deadline.saturating_duration_since(Instant::now()))?;
        if !is_probe(&got) {
            return Some(got);
        }
    }
}

/// Exactly `n` frames (probes skipped), within [`PATIENCE`] in all.
fn collect(c: &mut Client11, n: usize, what: &str) -> Vec<Got11> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_real(c, left) {
            Some(g) => got.push(g),
            None => panic!(
                "{what}: {} of {n} messages within {PATIENCE:?}; the last {}",
                got.len(),
                got.last().map_or("none".into(), brief)
            ),
        }
    }
    got
}

/// Nothing but probes arrives for `wait`.
fn expect_quiet(c: &mut Client11, wait: Duration, what: &str) {
    if let Some(extra) = next_real(c, wait) {
        panic!("{what}: unexpected {}", brief(&extra));
    }
}
