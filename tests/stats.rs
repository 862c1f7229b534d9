//! The `STATS` extension: counters over the wire match the embedding API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use corecast::Config;
use corecast_proto::ClientFrame;

#[test]
fn stats_reports_every_core_and_the_sums() {
    let broker = start(test_config(3));
    let mut a = Client::connect(broker.local_addr());
    a.sub(1, "s.one");
    a.sub(2, "s.two");
    a.flush_empty();
    let doc = a.stats(77);
    let per_core = doc["per_core"].as_array().unwrap();
    assert_eq!(per_core.len(), 3);
    assert_eq!(doc["total"]["subscriptions"], 2);
    assert_eq!(doc["total"]["connections_open"], 1);
    let summed: u64 = per_core.iter().map(|c| c["subscriptions"].as_u64().unwrap()).sum();
    assert_eq!(summed, 2);
    assert_eq!(broker.counters().total.subscriptions, 2);
    drop(a);
    finish(broker);
}

#[test]
fn stats_before_hello_is_refused() {
    let broker = start(test_config(1));
    let mut c = Client::connect_raw(broker.local_addr());
    c.send(&ClientFrame::Stats { nonce: 1 });
    c.expect_only_fatal(4);
    drop(c);
    finish(broker);
}

#[test]
fn stats_falls_back_to_totals_when_max_frame_is_small() {
    let mut cfg = small_config(4);
    cfg.max_frame = 1200;
    cfg.max_pending = 8192;
    let broker = start(cfg);
    let mut c = Client::connect(broker.local_addr());
    let doc = c.stats(5);
    assert!(doc.get("per_core").is_none(), "per-core counters do not fit 1200 bytes");
    assert_eq!(doc["total"]["connections_open"], 1);
    drop(c);
    finish(broker);
}

#[test]
fn stats_lists_the_connections_with_the_most_output_queued() {
    let broker = start(Config { max_pending: 64 << 20, ..test_config(1) });
    let addr = broker.local_addr();
    let mut stalled = Client::connect_small_rcvbuf(addr, 4096);
    stalled.sub(1, "stats.stalled");
    stalled.flush_empty();
    let Some(Got::Welcome { connection_id, .. }) = stalled.welcome.clone() else {
        panic!("no WELCOME")
    };
    let mut publ = Client::connect(addr);
    // More than the kernel's socket buffers take.
    for i in 0..12_000 {
        publ.publish("stats.stalled", &seq_payload(i, 1000));
    }
    publ.flush_empty();
    wait_counters(&broker, "output queued for the stalled subscriber", |c| c.pending_bytes > 0);
    let doc = publ.stats(9);
    let listed = doc["connections"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "only the stalled subscriber has output queued: {doc}");
    let entry = &listed[0];
    assert_eq!(entry["id"], connection_id);
    assert_eq!(entry["core"], 0);
    let pending = entry["pending_bytes"].as_u64().unwrap();
    assert!(pending > 0, "{entry}");
    assert!(entry["held_bytes"].as_u64().unwrap() >= pending, "{entry}");
    assert_eq!(doc["per_core"][0]["pending_bytes"].as_u64().unwrap(), pending, "{doc}");
    drop((stalled, publ));
    finish(broker);
}
