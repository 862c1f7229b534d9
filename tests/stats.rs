//! The `STATS` extension: counters over the wire match the embedding API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use corecast_proto::ClientFrame;

fn stats(client: &mut Client, nonce: u64) -> serde_json::Value {
    client.send(&ClientFrame::Stats { nonce });
    loop {
        match client.recv() {
            Got::Stats { nonce: n, json } if n == nonce => {
                return serde_json::from_str(&json).unwrap()
            }
            Got::Ping(n) => client.send(&ClientFrame::Pong { nonce: n }),
            other => panic!("expected STATS_REPLY, got {other:?}"),
        }
    }
}

#[test]
fn stats_reports_every_core_and_the_sums() {
    let broker = start(test_config(3));
    let mut a = Client::connect(broker.local_addr());
    a.sub(1, "s.one");
    a.sub(2, "s.two");
    a.flush_empty();
    let doc = stats(&mut a, 77);
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
    let doc = stats(&mut c, 5);
    assert!(doc.get("per_core").is_none(), "per-core counters do not fit 1200 bytes");
    assert_eq!(doc["total"]["connections_open"], 1);
    drop(c);
    finish(broker);
}
