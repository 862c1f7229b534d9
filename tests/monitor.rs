#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The monitoring port over real HTTP, against an embedded broker whose
//! client port and monitoring port both listen on 127.0.0.1:0: `/metrics`
//! against the counters and the binary `STATS` reply, `/connz` (open and
//! closed connections, paging, sorting, bad queries), the bounded record of
//! closed connections, `/subsz`, `/healthz` and the lame duck (with its
//! spread of `GOAWAY`s), `/stats`, `Broker::reload`, and HTTP input that
//! breaks the rules (huge heads, a slowloris, too many connections, wrong
//! paths and methods).

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use common::{v11::Client11, *};
use corecast::{counters::Kind, Broker, Config};
use corecast_proto::{ClientFrame, Hello, Pub, VERSION};
use serde_json::Value;

/// `/metrics` parses; after a settled workload its `core="all"` series
/// equal the broker's counters and the binary `STATS` reply, the per-core
/// series add up to them, every counter is exported, and the histograms
/// count what the workload did (3 subscribers on core 0: fan-out 3 there).
#[test]
fn metrics_match_the_counters_and_the_binary_stats() {
    const N: u64 = 100;
    let broker = start(monitored(test_config(2)));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut subs: Vec<Client> = (0..3).map(|_| connect_on(addr, 0)).collect();
    subs.push(connect_on(addr, 1));
    for s in &mut subs {
        s.sub(1, "m.t");
        s.flush_empty();
    }
    let publisher = corecast_client::blocking::Client::connect(addr).unwrap();
    for i in 0..N {
        publisher.publish("m.t", seq_payload(i, 92)).unwrap();
    }
    publisher.flush().unwrap();
    assert_eq!(publisher.stats().published, N, "the client sent every PUB");
    for s in &mut subs {
        assert_eq!(s.flush().len() as u64, N, "each subscriber got every message");
    }
    // The binary STATS reply, the last frame any client sends here.
    let stats = subs[0].stats(7);
    wait_counters(&broker, "the STATS reply written", |c| c.pending_bytes == 0);

    // Counters and scrape of one settled moment (the sweeper may still
    // trim cached memory: read again until nothing moved meanwhile).
    let (counters, metrics) = (0..50)
        .find_map(|_| {
            let before = broker.counters();
            let metrics = Metrics::scrape(&http);
            (broker.counters() == before).then_some((before, metrics))
        })
        .expect("the counters settle");
    let total = counters.total;
    assert_eq!((total.msgs_in, total.msgs_out), (N, 4 * N), "{total:#?}");
    assert_eq!(total.subscriptions, 4);

    for field in total.described() {
        let name = metric_name(field.name, field.kind);
        let all = metrics.value(&name, "all");
        assert_eq!(all, Some(field.value as f64), "{name} (core=\"all\") against the counters");
        let per_core: f64 = (0..2).map(|c| metrics.value(&name, &c.to_string()).unwrap()).sum();
        assert_eq!(per_core, field.value as f64, "{name}: the cores add up to \"all\"");
        for (core, snapshot) in counters.per_core.iter().enumerate() {
            let of_core = snapshot.fields().into_iter().find(|(n, _)| *n == field.name).unwrap();
            assert_eq!(metrics.value(&name, &core.to_string()), Some(of_core.1 as f64), "{name}");
        }
    }
    assert_eq!(total.fields().len(), total.described().len());
    for (name, value) in [
        ("corecast_msgs_in_total", total.msgs_in),
        ("corecast_msgs_out_total", total.msgs_out),
        ("corecast_connections_accepted_total", total.connections_accepted),
        ("corecast_subscriptions", total.subscriptions),
        ("corecast_in_bytes_total", total.bytes_in),
    ] {
        assert_eq!(metrics.value(name, "all"), Some(value as f64), "{name}");
    }
    let wire = &stats["total"];
    for key in ["msgs_in", "msgs_out", "connections_accepted", "subscriptions", "bytes_in"] {
        let in_stats = wire[key].as_u64().unwrap();
        let name =
            metric_name(key, if key == "subscriptions" { Kind::Gauge } else { Kind::Counter });
        assert_eq!(metrics.value(&name, "all"), Some(in_stats as f64), "{key}: STATS and /metrics");
    }

    // Fan-out: N messages reached 3 subscribers on core 0 and 1 on core 1.
    let fanout = metrics.histogram("corecast_fanout_subscribers", "0");
    assert_eq!((fanout.count, fanout.sum), (N as f64, 3.0 * N as f64), "core 0 fan-out");
    assert_eq!((fanout.le(2.0), fanout.le(5.0)), (0.0, N as f64), "observed as 3: {fanout:?}");
    let fanout = metrics.histogram("corecast_fanout_subscribers", "1");
    assert_eq!((fanout.count, fanout.sum, fanout.le(1.0)), (N as f64, N as f64, N as f64));
    let fanout = metrics.histogram("corecast_fanout_subscribers", "all");
    assert_eq!((fanout.count, fanout.sum), (2.0 * N as f64, 4.0 * N as f64));
    // Every byte written was written by some sendmsg.
    let writes = metrics.histogram("corecast_write_size_bytes", "all");
    assert!(writes.count > 0.0 && writes.le(f64::INFINITY) == writes.count, "{writes:?}");
    assert_eq!(writes.sum, total.bytes_out as f64, "write sizes add up to bytes_out");
    // One observation per connection at the scrape, none with output queued.
    let pending = metrics.histogram("corecast_connection_pending_bytes", "all");
    assert_eq!(pending.count, total.slots_in_use as f64, "{pending:?}");
    assert_eq!((pending.le(0.0), pending.sum), (pending.count, 0.0), "{pending:?}");
    assert!(metrics.text.contains("# TYPE corecast_msgs_in_total counter"), "{}", metrics.text);
    drop((subs, publisher));
    finish(broker);
}

/// `/connz` lists each open connection with its id, core, peer, name, state
/// and traffic; pages are disjoint and cover all; `sort=msgs_out` orders by
/// messages queued; `subs=1` lists subscriptions; bad queries get a `400`.
#[test]
fn connz_lists_pages_and_sorts_open_connections() {
    let broker = start(monitored(test_config(2)));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut clients: Vec<Client> = (0..7).map(|i| named(addr, &format!("conn-{i}"))).collect();
    let topics: [&[&str]; 3] = [&["t.a", "t.b"], &["t.a"], &["t.b"]];
    for (c, topics) in clients.iter_mut().zip(topics) {
        for (sid, topic) in (1..).zip(topics) {
            c.sub(sid, topic);
        }
        c.flush_empty();
    }
    let publisher = &mut clients[6];
    let mut sent = hello_len("conn-6") + 14;
    for topic in ["t.a", "t.a", "t.a", "t.b", "t.b"] {
        publisher.publish(topic, b"payload");
        sent += pub_len(topic, b"payload");
    }
    publisher.flush_empty();
    // Each subscriber reads what it got: 5, 3 and 2 messages.
    for (c, want) in clients.iter_mut().zip([5, 3, 2]) {
        assert_eq!(c.flush().len(), want);
    }

    let page = http.ok("/connz");
    assert_eq!((page["state"].as_str(), page["total"].as_u64()), (Some("open"), Some(7)));
    let listed = page["connections"].as_array().unwrap();
    let ids: Vec<u64> = listed.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id by default: {ids:?}");
    for (i, c) in clients.iter().enumerate() {
        let entry = listed.iter().find(|e| e["id"] == conn_id(c)).expect("listed");
        assert_eq!(entry["core"], u64::from(c.core_id()), "{entry}");
        assert_eq!(entry["peer"], c.stream.local_addr().unwrap().to_string(), "{entry}");
        assert_eq!(entry["name"], format!("conn-{i}"), "{entry}");
        assert_eq!(entry["state"], "open", "{entry}");
        assert_eq!(entry["pending_bytes"], 0, "{entry}");
        assert!(entry.get("subs").is_none(), "subs only when asked: {entry}");
        for key in ["uptime_ms", "idle_ms", "msgs_in", "msgs_out", "bytes_in", "bytes_out", "drops"]
        {
            assert!(entry[key].is_u64(), "{key} in {entry}");
        }
    }
    let entry = |id: u64| listed.iter().find(|e| e["id"] == id).unwrap().clone();
    let publisher = entry(conn_id(&clients[6]));
    assert_eq!(publisher["msgs_in"], 5, "{publisher}");
    assert_eq!(publisher["bytes_in"], sent as u64, "every byte the publisher sent: {publisher}");
    for (c, (msgs, subs)) in clients.iter().zip([(5, 2), (3, 1), (2, 1)]) {
        let e = entry(conn_id(c));
        assert_eq!((e["msgs_out"].as_u64(), e["subscriptions"].as_u64()), (Some(msgs), Some(subs)));
        assert!(e["bytes_out"].as_u64().unwrap() > msgs * 20, "{e}");
    }

    // Pages of 3: disjoint, covering every connection, then empty.
    let mut seen = Vec::new();
    for offset in [0, 3, 6, 9] {
        let page = http.ok(&format!("/connz?offset={offset}&limit=3"));
        assert_eq!((page["total"].as_u64(), page["limit"].as_u64()), (Some(7), Some(3)));
        let ids = page["connections"].as_array().unwrap().iter().map(|c| c["id"].as_u64());
        let ids: Vec<u64> = ids.map(Option::unwrap).collect();
        assert_eq!(ids.len(), [3, 3, 1, 0][offset / 3], "page at {offset}");
        seen.extend(ids);
    }
    assert_eq!(seen, ids, "the pages, in order, are the whole list");

    let sorted = http.ok("/connz?sort=msgs_out");
    let order: Vec<(u64, u64)> = sorted["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["msgs_out"].as_u64().unwrap(), c["id"].as_u64().unwrap()))
        .collect();
    let mut want = order.clone();
    want.sort_by_key(|&(msgs, id)| (std::cmp::Reverse(msgs), id));
    assert_eq!(order, want, "most messages queued first, then by id");
    assert_eq!(order.iter().map(|o| o.0).take(3).collect::<Vec<_>>(), [5, 3, 2]);

    let with_subs = http.ok("/connz?subs=1&sort=msgs_out&limit=1");
    let first = &with_subs["connections"][0];
    assert_eq!(first["id"], conn_id(&clients[0]));
    let mut listed: Vec<(u64, String)> = first["subs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["sid"].as_u64().unwrap(), s["topic"].as_str().unwrap().to_string()))
        .collect();
    listed.sort();
    assert_eq!(listed, [(1, "t.a".to_string()), (2, "t.b".to_string())]);

    for query in [
        "limit=0",
        "limit=abc",
        "limit=10001",
        "offset=-1",
        "sort=nope",
        "state=maybe",
        "subs=maybe",
        "foo=1",
    ] {
        let (status, body) = http.json(&format!("/connz?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{query}: {body}");
    }
    drop(clients);
    finish(broker);
}

/// `/connz?state=closed` says why each connection went, in words and with
/// the code of its final `ERR`, with its name and final counters: a slow
/// consumer, a protocol error and clients that closed.
#[test]
fn closed_connections_say_why_they_closed() {
    let broker = start(monitored(small_config(2)));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));

    // A subscriber that never reads, and a publisher that floods it.
    let mut slow = Client::connect_raw_tight(addr);
    slow.hello("slowpoke", b"");
    slow.expect_welcome();
    slow.sub(1, "flood");
    slow.flush_empty();
    let mut flooder = named(addr, "flooder");
    let (started, mut published) = (Instant::now(), 0u64);
    while broker.counters().total.slow_consumer_closes == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "no slow consumer");
        for _ in 0..32 {
            flooder.publish("flood", &seq_payload(published, 1000));
            published += 1;
        }
        flooder.flush();
    }
    // A protocol error: an opcode no client may send, after HELLO.
    let mut garbler = named(addr, "garbler");
    garbler.send_raw(&frame(0x7f, 0, &[]));
    garbler.expect_only_fatal(2);
    // A client that publishes twice and closes.
    let mut quitter = named(addr, "quitter");
    quitter.publish("q.t", b"one");
    quitter.publish("q.t", b"two");
    quitter.flush_empty();
    let quitter_sent = hello_len("quitter") + pub_len("q.t", b"one") + pub_len("q.t", b"two") + 14;

    let who = [&slow, &flooder, &garbler, &quitter].map(|c| (conn_id(c), c.core_id()));
    let peers = [&slow, &flooder, &garbler, &quitter].map(|c| c.stream.local_addr().unwrap());
    drop((slow, flooder, garbler, quitter));
    wait_idle(&broker);

    let page = http.ok("/connz?state=closed");
    assert_eq!((page["state"].as_str(), page["total"].as_u64()), (Some("closed"), Some(4)));
    let closed = by_name(&page);
    let expected = [
        ("slowpoke", "slow consumer: max_pending", Value::from(9)),
        ("flooder", "client closed", Value::Null),
        ("garbler", "protocol error 2 (unknown opcode)", Value::from(2)),
        ("quitter", "client closed", Value::Null),
    ];
    for (i, (name, reason, code)) in expected.into_iter().enumerate() {
        let e = &closed[name];
        assert_eq!((&e["reason"], &e["error_code"]), (&Value::from(reason), &code), "{e}");
        assert_eq!((e["id"].as_u64(), e["core"].as_u64()), (Some(who[i].0), Some(who[i].1.into())));
        assert_eq!(e["peer"], peers[i].to_string(), "{e}");
        for key in ["opened_at", "closed_at"] {
            assert!(e[key].as_str().is_some_and(|t| t.ends_with('Z')), "{key}: {e}");
        }
    }
    let slow = &closed["slowpoke"];
    assert_eq!(slow["subscriptions"], 1, "held when it left: {slow}");
    assert!(slow["msgs_out"].as_u64().unwrap() > 0 && slow["msgs_in"] == 0, "{slow}");
    assert_eq!(closed["flooder"]["msgs_in"], published, "{}", closed["flooder"]);
    assert_eq!(closed["garbler"]["bytes_in"], (hello_len("garbler") + 6) as u64);
    let quitter = &closed["quitter"];
    assert_eq!(
        (quitter["msgs_in"].as_u64(), quitter["bytes_in"].as_u64()),
        (Some(2), Some(quitter_sent as u64))
    );
    // Newest first.
    let order: Vec<&str> = page["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["closed_at"].as_str().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "{order:?}");
    finish(broker);
}

/// A connection refused for a full core is recorded as "server full" with
/// no id, and one that stays silent past `stale_after` as stale.
#[test]
fn refused_and_stale_connections_are_recorded() {
    let broker = start(monitored(Config {
        max_connections: 1,
        ping_interval_ms: 500,
        stale_after_ms: 2000,
        ..small_config(1)
    }));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut sleeper = named(addr, "sleeper");
    let mut second = Client::connect_raw(addr);
    second.expect_only_fatal(8);
    let refused_peer = second.stream.local_addr().unwrap();
    // The sleeper answers no PING: it is closed as stale.
    let frames = sleeper.read_to_close(Duration::from_secs(20));
    assert_eq!(frames.last().and_then(Got::err_code), Some((10, true)), "{frames:?}");
    let sleeper_id = conn_id(&sleeper);
    drop((sleeper, second));
    wait_idle(&broker);

    let page = http.ok("/connz?state=closed");
    assert_eq!(page["total"], 2, "{page}");
    let list = page["connections"].as_array().unwrap();
    let refused = list
        .iter()
        .find(|c| c["reason"] == "server full")
        .unwrap_or_else(|| panic!("none refused: {page}"));
    assert_eq!((&refused["id"], &refused["error_code"]), (&Value::Null, &Value::from(8)));
    assert_eq!((&refused["name"], &refused["core"]), (&Value::Null, &Value::from(0)));
    assert_eq!(refused["peer"], refused_peer.to_string());
    let stale = list
        .iter()
        .find(|c| c["name"] == "sleeper")
        .unwrap_or_else(|| panic!("no sleeper: {page}"));
    assert_eq!(stale["reason"], "stale: no traffic within stale_after", "{stale}");
    assert_eq!((stale["id"].as_u64(), stale["error_code"].as_u64()), (Some(sleeper_id), Some(10)));
    finish(broker);
}

/// 20 000 connections that close during the handshake are each recorded
/// as "client closed", yet the record keeps only `closed_connections`
/// (50 per core of 2), and the broker is idle again afterwards.
#[test]
fn the_closed_record_stays_bounded_after_20000_closes() {
    const CONNECTIONS: usize = 20_000;
    const BATCH: usize = 500;
    const THREADS: usize = 4;
    let broker = start(monitored(Config { closed_connections: 100, ..test_config(2) }));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let started = Instant::now();
    for batch in 0..CONNECTIONS / BATCH {
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    let open: Vec<TcpStream> =
                        (0..BATCH / THREADS).map(|_| TcpStream::connect(addr).unwrap()).collect();
                    drop(open);
                });
            }
        });
        // The accept queues stay short: the next batch waits for this one.
        let accepted = ((batch + 1) * BATCH) as u64;
        wait_counters(&broker, "the batch accepted", |c| c.connections_accepted == accepted);
    }
    let c = wait_idle(&broker);
    assert_eq!((c.connections_accepted, c.connections_refused), (CONNECTIONS as u64, 0));
    assert_eq!((c.slots_in_use, c.tasks_alive, c.memory_used), (0, 0, 0));

    let page = http.ok("/connz?state=closed&limit=1000");
    assert_eq!(page["total"], 100, "50 kept per core");
    let list = page["connections"].as_array().unwrap();
    assert_eq!(list.len(), 100);
    let per_core = list.iter().fold(BTreeMap::new(), |mut n, c| {
        *n.entry(c["core"].as_u64().unwrap()).or_insert(0) += 1;
        n
    });
    assert_eq!(per_core, BTreeMap::from([(0, 50), (1, 50)]));
    for entry in list {
        assert_eq!(entry["reason"], "client closed", "{entry}");
        assert!(entry["id"].is_u64() && entry["name"].is_null(), "{entry}");
        assert!(entry["error_code"].is_null(), "{entry}");
    }
    eprintln!("20 000 connections opened and closed in {:?}", started.elapsed());
    finish(broker);
}

/// `/subsz` counts subscriptions and distinct topics, lists the most
/// subscribed first, and for `?topic=` lists exactly who a publish there
/// would reach (wildcard and queue-group members included); a bad or
/// wildcard topic is a `400`.
#[test]
fn subsz_counts_topics_and_lists_receivers() {
    let broker = start(monitored(test_config(2)));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut exact = named(addr, "exact");
    exact.sub(1, "a.b");
    exact.flush_empty();
    let mut twin = named(addr, "twin");
    twin.sub(5, "a.b");
    twin.flush_empty();
    let mut other = named(addr, "other");
    other.sub(1, "x.y");
    other.sub(2, "a.c");
    other.flush_empty();
    let mut wildcard = Client11::connect(addr, false);
    wildcard.sub(3, "a.*");
    wildcard.flush_empty();
    let mut member = Client11::connect(addr, false);
    member.sub_group(4, "a.b", "workers");
    member.flush_empty();

    let all = http.ok("/subsz");
    assert_eq!((all["subscriptions"].as_u64(), all["topics"].as_u64()), (Some(6), Some(4)));
    assert_eq!(all["truncated"], false);
    let top: Vec<(&str, u64)> = all["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["topic"].as_str().unwrap(), t["subscriptions"].as_u64().unwrap()))
        .collect();
    assert_eq!(top, [("a.b", 3), ("a.*", 1), ("a.c", 1), ("x.y", 1)]);
    assert!(all.get("receivers").is_none(), "receivers only for a topic: {all}");
    let one = http.ok("/subsz?limit=1");
    assert_eq!(one["top"].as_array().unwrap().len(), 1);
    assert_eq!(one["top"][0]["topic"], "a.b");

    let reach = http.ok("/subsz?topic=a.b");
    assert_eq!(reach["topic"], "a.b");
    let receivers: BTreeSet<(String, u64, String, String)> = reach["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap().to_string();
            let queue = r["queue"].as_str().unwrap_or("").to_string();
            (name, r["sid"].as_u64().unwrap(), r["topic"].as_str().unwrap().to_string(), queue)
        })
        .collect();
    let want = [("exact", 1, "a.b", ""), ("twin", 5, "a.b", ""), ("v11", 3, "a.*", "")];
    let mut want: BTreeSet<_> =
        want.map(|(n, s, t, q)| (n.to_string(), s, t.to_string(), q.to_string())).into();
    want.insert(("v11".into(), 4, "a.b".into(), "workers".into()));
    assert_eq!(receivers, want, "{reach}");
    let conns: BTreeSet<u64> = reach["receivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["conn"].as_u64().unwrap())
        .collect();
    assert!(conns.contains(&conn_id(&exact)) && conns.contains(&conn_id(&twin)));
    assert!(!conns.contains(&conn_id(&other)), "x.y and a.c do not match a.b");
    let none = http.ok("/subsz?topic=q.r");
    assert_eq!(none["receivers"], serde_json::json!([]));

    for query in ["topic=a..b", "topic=a.*", "topic=a.%3E", "topic=", "limit=abc", "nope=1"] {
        let (status, body) = http.json(&format!("/subsz?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }
    drop((exact, twin, other, wildcard, member));
    finish(broker);
}

/// `/healthz` is `200 {"status":"ok"}`, turns `503` naming the lame duck
/// as soon as it begins (during the grace), and the broker then stops by
/// itself once its client was sent away.
/// `/subsz?topic=` lists at most 10 000 receivers per core and says when
/// it left some out, so one question cannot make the broker build an
/// answer as large as its whole subscription table.
#[test]
fn subsz_receivers_are_bounded_and_flagged() {
    const SUBS: u32 = 10_001;
    let cfg = Config { max_subscriptions: 20_000, ..test_config(1) };
    let broker = start(monitored(cfg));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut many = named(addr, "many");
    for sid in 1..=SUBS {
        many.sub(sid, "crowded.topic");
    }
    many.flush_empty();
    let view = http.ok("/subsz?topic=crowded.topic");
    assert_eq!(view["subscriptions"].as_u64(), Some(u64::from(SUBS)));
    assert_eq!(view["receivers"].as_array().unwrap().len(), 10_000);
    assert_eq!(view["truncated"], true);
    let few = http.ok("/subsz?topic=quiet.topic");
    assert_eq!((few["receivers"].as_array().unwrap().len(), &few["truncated"]), (0, &false.into()));
}

#[test]
fn healthz_turns_503_in_lame_duck_and_the_broker_then_stops() {
    let broker = start(monitored(Config {
        lame_duck_grace_ms: 3000,
        // Room for the one GOAWAY before the lame duck's time is up (the
        // broker stops as soon as the client has left).
        lame_duck_duration_ms: 1000,
        ..test_config(2)
    }));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut client = named(addr, "stays");
    let (status, body) = http.json("/healthz");
    assert_eq!((status, body), (200, serde_json::json!({ "status": "ok" })));
    let began = Instant::now();
    broker.lame_duck();
    let (status, body) = http.json("/healthz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().unwrap().contains("lame duck"), "{body}");
    assert_eq!(http.ok("/stats")["lame_duck"], true);
    assert!(Metrics::scrape(&http).value("corecast_lame_duck", "") == Some(1.0));
    // After the grace the client is sent elsewhere.
    match client.read_frame(Duration::from_secs(20)) {
        ReadEnd::Frame(Got::GoAway { reason: 2, .. }) => {}
        other => panic!("expected GOAWAY (lame duck), got {other:?}"),
    }
    assert!(began.elapsed() >= Duration::from_millis(2900), "GOAWAY before the grace");
    drop(client);
    broker.wait().expect("the lame duck ends in a clean stop");
}

/// Lame duck sends its clients away a few at a time over
/// `lame_duck_duration`, not all at once; it accepts no new connection
/// meanwhile, and the broker stops cleanly afterwards.
#[test]
fn lame_duck_spreads_goaways_over_its_duration() {
    const CLIENTS: usize = 20;
    let broker = start(monitored(Config {
        lame_duck_grace_ms: 0,
        lame_duck_duration_ms: 2000,
        ..test_config(2)
    }));
    let addr = broker.local_addr();
    let clients: Vec<Client> = (0..CLIENTS).map(|i| named(addr, &format!("ld-{i}"))).collect();
    let cores: BTreeSet<u16> = clients.iter().map(Client::core_id).collect();
    assert_eq!(cores, BTreeSet::from([0, 1]), "clients on both cores");
    let began = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || loop {
                match c.read_frame(Duration::from_secs(20)) {
                    ReadEnd::Frame(Got::GoAway { reason: 2, .. }) => return Instant::now(),
                    ReadEnd::Frame(Got::Ping(nonce)) => c.send(&ClientFrame::Pong { nonce }),
                    other => panic!("expected GOAWAY (lame duck), got {other:?}"),
                }
            })
        })
        .collect();
    broker.lame_duck();
    // The listeners close: connections are refused from then on.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refused(addr) {
        assert!(Instant::now() < deadline, "still accepting in lame duck");
        thread::sleep(Duration::from_millis(10));
    }
    let mut arrived: Vec<Duration> =
        readers.into_iter().map(|r| r.join().expect("reader") - began).collect();
    assert!(refused(addr), "accepting again");
    arrived.sort();
    let span = arrived[CLIENTS - 1] - arrived[0];
    assert!(span >= Duration::from_secs(1), "GOAWAYs within {span:?}: {arrived:?}");
    let window = Duration::from_millis(200);
    let most = (0..CLIENTS)
        .map(|i| arrived[i..].iter().take_while(|&&t| t - arrived[i] < window).count())
        .max()
        .unwrap();
    assert!(most <= CLIENTS / 2, "{most} GOAWAYs within 200 ms: {arrived:?}");
    broker.wait().expect("the lame duck ends in a clean stop");
}

/// `/stats` tells the version, pid, uptime, cores, the settings in force
/// (the token shown as "(redacted)", never itself) and the counters.
#[test]
fn stats_shows_the_broker_and_hides_the_token() {
    const TOKEN: &str = "s3cret-t0ken-xyzzy";
    let broker = start(monitored(Config { auth_token: Some(TOKEN.into()), ..test_config(2) }));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut c = Client::connect_raw(addr);
    c.hello("holder", TOKEN.as_bytes());
    c.expect_welcome();
    c.sub(1, "s.t");
    c.flush_empty();
    let (status, text) = http.get("/stats");
    assert_eq!(status, 200);
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    let stats: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(stats["pid"], std::process::id());
    assert_eq!(
        (stats["cores"].as_u64(), stats["server_name"].as_str()),
        (Some(2), Some("corecast"))
    );
    assert_eq!(
        (&stats["lame_duck"], &stats["shutting_down"]),
        (&Value::Bool(false), &Value::Bool(false))
    );
    assert!(stats["started_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{stats}");
    let uptime = stats["uptime_ms"].as_u64().unwrap();
    thread::sleep(Duration::from_millis(20));
    assert!(http.ok("/stats")["uptime_ms"].as_u64().unwrap() >= uptime + 20, "uptime grows");
    let config = &stats["config"];
    assert_eq!(config["auth_token"], "(redacted)");
    assert_eq!(config["max_frame"], 64 << 10);
    assert_eq!(config["cores"], 2);
    let counters = &stats["counters"];
    let now = broker.counters().total;
    assert_eq!(counters["subscriptions"], 1);
    assert_eq!(counters["connections_open"], 1);
    assert_eq!(counters["connections_accepted"], now.connections_accepted);
    assert_eq!(
        counters.as_object().unwrap().len(),
        now.fields().len(),
        "every counter: {counters}"
    );
    drop(c);
    finish(broker);
    // Without a token there is nothing to hide: null, not "(redacted)".
    let broker = start(monitored(test_config(1)));
    assert_eq!(Http::of(&broker).ok("/stats")["config"]["auth_token"], Value::Null);
    finish(broker);
}

/// A request head past 16 KiB (one 20 KiB header, or 1 MB of headers) is
/// answered `431` or closed, never left hanging; the port still serves.
#[test]
fn oversized_request_heads_get_431_or_a_close() {
    let broker = start(monitored(test_config(1)));
    let http = Http::of(&broker);
    let big_header =
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20 << 10));
    let mut many = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    let mut i = 0;
    while many.len() < 1 << 20 {
        many.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(100)));
        i += 1;
    }
    many.push_str("\r\n");
    for head in [big_header, many] {
        let mut s = http.raw();
        // The broker may close before taking it all: a failed write is a close.
        let _ = s.write_all(head.as_bytes());
        match read_answer(&mut s, Duration::from_secs(10)) {
            Answer::Closed => {}
            Answer::Bytes(text) => assert!(text.starts_with("HTTP/1.1 431"), "{text}"),
            Answer::Hung => panic!("no answer and no close for a {} byte head", head.len()),
        }
    }
    assert_eq!(http.json("/healthz").0, 200);
    finish(broker);
}

/// A slowloris (a head sent one byte a second) is closed by the 5 s header
/// timeout, and the port still serves afterwards.
#[test]
fn slowloris_is_closed_by_the_header_timeout() {
    let broker = start(monitored(test_config(1)));
    let http = Http::of(&broker);
    let mut s = http.raw();
    let started = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
    loop {
        assert!(started.elapsed() < Duration::from_secs(10), "slowloris still open");
        // One header byte a second.
        if s.write_all(b"X").is_err() {
            break;
        }
        match s.read(&mut [0; 1024]) {
            Ok(_) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    assert!(started.elapsed() >= Duration::from_secs(4), "closed before the header timeout");
    assert_eq!(http.json("/healthz").0, 200);
    finish(broker);
}

/// An unknown path is a `404` with a JSON error; a `POST` is a `405` with
/// `Allow`; `HEAD` answers with headers only.
#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let broker = start(monitored(test_config(1)));
    let http = Http::of(&broker);
    let (status, body) = http.json("/nope");
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/nope"), "{body}");
    let mut response = http.agent.post(http.url("/healthz")).send_empty().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "GET, HEAD");
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert!(body["error"].is_string(), "{body}");
    let mut response = http.agent.head(http.url("/healthz")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.body_mut().read_to_string().unwrap(), "");
    let paths = http.ok("/");
    assert!(paths["paths"].as_array().unwrap().iter().any(|p| p == "/connz"), "{paths}");
    finish(broker);
}

/// 64 idle HTTP connections take every place: the 65th is closed at once,
/// while the client port keeps serving; once they go, `/healthz` answers.
#[test]
fn the_65th_http_connection_is_closed_while_clients_are_served() {
    let broker = start(monitored(test_config(2)));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut witness = Witness::new(addr);
    // No HTTP connection before these: 64 idle ones hold every place
    // (until the header timeout closes them, 5 s after they open).
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..64).map(|_| http.raw()).collect();
    // Closed within 3 s of its connect: by the bound, not by the timeout.
    let mut extra = http.raw();
    let answer = read_answer(&mut extra, Duration::from_secs(3));
    assert!(matches!(answer, Answer::Closed), "the 65th got {answer:?}");
    witness.check();
    // The 64 are still served (unless so long went by that the header
    // timeout may have closed them).
    if opened.elapsed() < Duration::from_secs(4) {
        for mut s in &idle {
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            let e = s.read(&mut [0; 16]).expect_err("an idle connection is still open");
            assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{e}");
        }
    } else {
        eprintln!("note: the machine is too slow to check that the 64 stayed open");
    }
    drop(idle);
    // Their places come back as the port sees them close.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.try_json("/healthz").map(|a| a.0) != Some(200) {
        assert!(Instant::now() < deadline, "the monitoring port no longer answers");
        thread::sleep(Duration::from_millis(50));
    }
    witness.check();
    drop(witness);
    finish(broker);
}

/// `Broker::reload` puts a lower `max_connections` in force (the next
/// connection gets `ERR server full`, open ones stay), keeps a fixed key's
/// old value and lists it as refused, and changes nothing for an invalid
/// configuration.
#[test]
fn reload_lowers_limits_refuses_fixed_keys_and_rejects_invalid_configs() {
    let broker = start(monitored(Config { max_connections: 4, ..test_config(1) }));
    let (addr, http) = (broker.local_addr(), Http::of(&broker));
    let mut open: Vec<Client> = (0..3).map(|i| named(addr, &format!("r-{i}"))).collect();
    let old = broker.config();
    let reloaded = broker
        .reload(Config { max_connections: 2, cross_core_batch: 32 << 10, ..(*old).clone() })
        .expect("valid");
    assert_eq!(reloaded.changed, ["max_connections"]);
    assert_eq!(reloaded.refused, ["cross_core_batch"]);
    // The core takes the new settings from its inbox; a question put there
    // after them is answered once they are in force.
    assert_eq!(http.json("/healthz").0, 200);
    let mut refused = Client::connect_raw(addr);
    refused.expect_only_fatal(8);
    for c in &mut open {
        c.flush_empty();
    }
    let stats = http.ok("/stats");
    assert_eq!(stats["config"]["max_connections"], 2);
    assert_eq!(stats["config"]["cross_core_batch"], old.cross_core_batch, "the old value stays");
    assert_eq!(broker.config().cross_core_batch, old.cross_core_batch);

    let before = broker.config();
    // Were it put in force, a fourth connection would be let in.
    let invalid = Config { max_pending: 100, max_connections: 4, ..(*before).clone() };
    assert!(broker.reload(invalid).is_err(), "max_pending below a maximal MSG");
    assert_eq!(broker.config(), before, "nothing changed");
    assert_eq!(http.ok("/stats")["config"]["max_pending"], before.max_pending);
    assert_eq!(http.json("/healthz").0, 200);
    let mut still_refused = Client::connect_raw(addr);
    still_refused.expect_only_fatal(8);
    assert_eq!(broker.counters().total.connections_refused, 2);
    drop((open, refused, still_refused));
    finish(broker);
}

// ---------------------------------------------------------------------------
// Helpers

/// `cfg` with the monitoring port on 127.0.0.1:0.
fn monitored(cfg: Config) -> Config {
    Config { http: "127.0.0.1:0".parse().unwrap(), ..cfg }
}

/// The monitoring port of a test broker, over ureq.
struct Http {
    addr: SocketAddr,
    agent: ureq::Agent,
}

impl Http {
    fn of(broker: &Broker) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            // Each request on a connection of its own, closed after it: no
            // pooled connection holds one of the port's places.
            .max_idle_connections(0)
            .build()
            .into();
        Self { addr: broker.http_addr().expect("a monitoring port"), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Status and body of `GET path`, or none when the request failed.
    fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let mut response = self.agent.get(self.url(path)).call().ok()?;
        let body = response.body_mut().read_to_string().ok()?;
        Some((response.status().as_u16(), body))
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).unwrap_or_else(|| panic!("GET {path} failed"))
    }

    fn try_json(&self, path: &str) -> Option<(u16, Value)> {
        let (status, body) = self.try_get(path)?;
        Some((status, serde_json::from_str(&body).expect("a JSON body")))
    }

    fn json(&self, path: &str) -> (u16, Value) {
        self.try_json(path).unwrap_or_else(|| panic!("GET {path} failed"))
    }

    /// The JSON of `GET path`, which must answer `200`.
    fn ok(&self, path: &str) -> Value {
        let (status, body) = self.json(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A raw TCP connection to the port; a write that the port does not
    /// take within 10 s fails instead of hanging the test.
    fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect to the monitoring port");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

/// What a raw HTTP connection got.
#[derive(Debug)]
enum Answer {
    /// Some bytes (the start of a response).
    Bytes(String),
    /// A close (end of stream or reset) before any byte.
    Closed,
    /// Nothing within the time allowed.
    Hung,
}

fn read_answer(s: &mut TcpStream, within: Duration) -> Answer {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => Answer::Closed,
        Ok(n) => Answer::Bytes(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Answer::Hung,
        Err(_) => Answer::Closed,
    }
}

/// A parsed `/metrics` scrape, and its text.
struct Metrics {
    scrape: prometheus_parse::Scrape,
    text: String,
}

/// One histogram series: cumulative buckets, count and sum.
#[derive(Debug)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Histogram {
    /// Observations at most `bound` (a bucket's upper bound).
    fn le(&self, bound: f64) -> f64 {
        let bucket = self.buckets.iter().find(|(le, _)| *le == bound);
        bucket.unwrap_or_else(|| panic!("no bucket le={bound}: {self:?}")).1
    }
}

impl Metrics {
    fn scrape(http: &Http) -> Self {
        let mut response = http.agent.get(http.url("/metrics")).call().expect("GET /metrics");
        assert_eq!(response.status().as_u16(), 200);
        let kind = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        let text = response.body_mut().read_to_string().unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
        Self { scrape, text }
    }

    fn series(&self, name: &str, core: &str) -> Option<&prometheus_parse::Value> {
        let mut found = self.scrape.samples.iter().filter(|s| {
            s.metric == name && (core.is_empty() || s.labels.get("core") == Some(core))
        });
        let sample = found.next()?;
        assert!(found.next().is_none(), "{name}{{core=\"{core}\"}} twice");
        Some(&sample.value)
    }

    /// The value of a counter or gauge series (`core` empty: unlabelled).
    fn value(&self, name: &str, core: &str) -> Option<f64> {
        use prometheus_parse::Value::{Counter, Gauge, Untyped};
        match self.series(name, core)? {
            Counter(v) | Gauge(v) | Untyped(v) => Some(*v),
            other => panic!("{name} is not a number: {other:?}"),
        }
    }

    fn histogram(&self, name: &str, core: &str) -> Histogram {
        let Some(prometheus_parse::Value::Histogram(buckets)) = self.series(name, core) else {
            panic!("no histogram {name}{{core=\"{core}\"}} in\n{}", self.text)
        };
        let buckets: Vec<(f64, f64)> = buckets.iter().map(|b| (b.less_than, b.count)).collect();
        assert!(buckets.len() > 2, "{name}: {buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
        let count = self.value(&format!("{name}_count"), core).expect("_count");
        let sum = self.value(&format!("{name}_sum"), core).expect("_sum");
        assert_eq!(buckets.last().map(|b| b.1), Some(count), "{name}: +Inf holds every one");
        Histogram { buckets, count, sum }
    }
}

/// The Prometheus name of a `STATS` field: `corecast_` first, a size in
/// bytes ends in `_bytes`, a counter in `_total`.
fn metric_name(field: &str, kind: Kind) -> String {
    let base = if let Some(rest) = field.strip_prefix("bytes_") {
        format!("{rest}_bytes")
    } else if field.starts_with("memory_") {
        format!("{field}_bytes")
    } else {
        field.to_string()
    };
    let total = if kind == Kind::Counter { "_total" } else { "" };
    format!("corecast_{base}{total}")
}

/// Whether a connection to `addr` is refused (nothing listens there).
fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// Connects and says `HELLO` with `name`.
fn named(addr: SocketAddr, name: &str) -> Client {
    let mut c = Client::connect_raw(addr);
    c.hello(name, b"");
    c.expect_welcome();
    c
}

/// The connection id from the client's `WELCOME`.
fn conn_id(c: &Client) -> u64 {
    match &c.welcome {
        Some(Got::Welcome { connection_id, .. }) => *connection_id,
        other => panic!("no WELCOME: {other:?}"),
    }
}

/// Bytes of a `HELLO` with `name` and no token.
fn hello_len(name: &str) -> usize {
    ClientFrame::Hello(Hello { version: VERSION, name, token: b"" }).encoded_len()
}

/// Bytes of a `PUB` without reply-to.
fn pub_len(topic: &str, payload: &[u8]) -> usize {
    ClientFrame::Pub(Pub { topic, reply_to: "", payload }).encoded_len()
}

/// The closed connections of a `/connz?state=closed` page, by name.
fn by_name(page: &Value) -> BTreeMap<String, Value> {
    let list = page["connections"].as_array().unwrap();
    list.iter().filter_map(|c| Some((c["name"].as_str()?.to_string(), c.clone()))).collect()
}
