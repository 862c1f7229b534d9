#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Publish/subscribe between real connections: exact MSG contents, fan-out
//! across cores with ordering, UNSUB, the PONG-after-SUB guarantee, echo
//! rules, counters, the connection limit, WELCOME, frame reassembly and
//! size limits, pipelined PINGs and cross-core backpressure.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::*;
use corecast::{Broker, Config, Counters};

/// Polls the per-core counters until `cond` holds (10 s at most).
fn wait_per_core(broker: &Broker, what: &str, cond: impl Fn(&Counters) -> bool) -> Counters {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = broker.counters();
        if cond(&c) {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "counters never reached {what}: {c:#?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn msg_carries_sid_topic_reply_to_and_payload_exactly() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(1, "a.b");
    sub.sub(77, "é.ü");
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    let binary: Vec<u8> = (0..=255u8).collect();
    publ.publish("a.b", b"hello");
    publ.publish_reply("a.b", "_INBOX.reply.1", b"");
    publ.publish_reply("é.ü", "r", &binary);
    publ.publish("other.topic", b"nobody listens");
    publ.flush_empty();
    assert_eq!(sub.recv(), Got::msg(1, "a.b", b"hello"));
    assert_eq!(
        sub.recv(),
        Got::Msg {
            sid: 1,
            topic: "a.b".into(),
            reply_to: "_INBOX.reply.1".into(),
            payload: vec![]
        }
    );
    assert_eq!(
        sub.recv(),
        Got::Msg { sid: 77, topic: "é.ü".into(), reply_to: "r".into(), payload: binary }
    );
    sub.flush_empty();
    drop((sub, publ));
    finish(broker);
}

#[test]
fn largest_frame_is_accepted_and_delivered() {
    let cfg = test_config(2);
    let max_frame = cfg.max_frame as usize;
    let broker = start(cfg);
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(9, "big");
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    // len = opcode + flags + t + "big" + r + payload = max_frame exactly.
    let payload: Vec<u8> = (0..max_frame - 2 - 1 - 3 - 1).map(|i| i as u8).collect();
    publ.publish("big", &payload);
    publ.flush_empty();
    assert_eq!(sub.recv(), Got::msg(9, "big", &payload), "MSG of len max_frame + 4");
    drop((sub, publ));
    finish(broker);
}

const FAN_TOPICS: [&str; 3] = ["fan.alpha", "fan.beta", "fan.gamma.x"];

/// Publishes `count` messages from `publ` round-robin over the topics, with
/// sequence numbers from `base`, then checks that every subscriber received
/// each one exactly once, in publish order, with the sid of its topic.
fn fan_out_round(publ: &mut Client, subs: &mut [Client], base: u64, count: u64) {
    for i in 0..count {
        let topic = FAN_TOPICS[(i % 3) as usize];
        publ.publish(topic, &seq_payload(base + i, 16));
    }
    publ.flush_empty();
    for (n, sub) in subs.iter_mut().enumerate() {
        for i in 0..count {
            let want_topic = FAN_TOPICS[(i % 3) as usize];
            let (sid, topic, payload) = sub.recv_msg();
            assert_eq!(
                (sid, topic.as_str(), seq_of(&payload)),
                ((i % 3) as u32 + 1, want_topic, base + i),
                "subscriber {n} (core {}), message {i}",
                sub.core_id()
            );
        }
        // Nothing else: no duplicates.
        sub.flush_empty();
    }
}

#[test]
fn fan_out_to_200_subscribers_across_cores_in_order() {
    const SUBSCRIBERS: usize = 200;
    let broker = start(Config { max_frame: 4096, max_pending: 16 << 10, ..test_config(4) });
    let addr = broker.local_addr();
    // Pipelined handshakes: every HELLO first, then every WELCOME.
    let mut subs: Vec<Client> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut c = Client::connect_raw(addr);
            c.hello("fan", b"");
            c
        })
        .collect();
    for c in &mut subs {
        c.expect_welcome();
    }
    let mut nonces = Vec::new();
    for c in &mut subs {
        for (sid, topic) in FAN_TOPICS.iter().enumerate() {
            c.sub(sid as u32 + 1, topic);
        }
        nonces.push(c.ping());
    }
    for (c, nonce) in subs.iter_mut().zip(nonces) {
        assert!(c.until_pong(nonce).is_empty());
    }
    let cores: BTreeSet<u16> = subs.iter().map(Client::core_id).collect();
    assert!(cores.len() >= 2, "subscribers all on cores {cores:?}");
    let c = broker.counters();
    assert_eq!(c.total.subscriptions, 3 * SUBSCRIBERS as u64);
    assert_eq!(c.total.connections_open, SUBSCRIBERS as u64);
    let busy = c.per_core.iter().filter(|s| s.subscriptions > 0).count();
    assert!(busy >= 2, "per-core subscriptions: {:?}", c.per_core);

    let mut first = Client::connect(addr);
    fan_out_round(&mut first, &mut subs, 0, 50);
    // A second publisher, on another core than the first.
    let mut second = connect_not_on(addr, first.core_id());
    fan_out_round(&mut second, &mut subs, 1000, 50);
    // And the first again, after the second: still exactly once, in order.
    fan_out_round(&mut first, &mut subs, 2000, 30);

    let c = broker.counters().total;
    assert_eq!(c.msgs_in, 130);
    assert_eq!(c.msgs_out, 130 * SUBSCRIBERS as u64);
    assert_eq!(c.slow_consumer_closes, 0);
    drop((subs, first, second));
    finish(broker);
}

#[test]
fn unsubscribe_stops_delivery_and_the_sid_can_be_reused() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    // Subscriber on the other core, so removal has to cross cores.
    let (mut publ, mut sub) = cross_core_pair(addr, 1, "u.gone");
    sub.sub(2, "u.marker");
    sub.flush_empty();
    publ.publish("u.gone", b"first");
    publ.flush_empty();
    assert_eq!(sub.recv(), Got::msg(1, "u.gone", b"first"));

    sub.unsub(1);
    sub.flush_empty();
    publ.publish("u.gone", b"second");
    publ.publish("u.marker", b"marker");
    publ.flush_empty();
    // Same publisher, so "second" would come before the marker.
    assert_eq!(sub.recv(), Got::msg(2, "u.marker", b"marker"));
    sub.flush_empty();

    sub.sub(1, "u.gone");
    sub.flush_empty();
    publ.publish("u.gone", b"third");
    publ.flush_empty();
    assert_eq!(sub.recv(), Got::msg(1, "u.gone", b"third"));
    sub.flush_empty();
    assert_eq!(broker.counters().total.subscriptions, 2);
    drop((sub, publ));
    finish(broker);
}

#[test]
fn pong_after_sub_guarantees_delivery_across_cores() {
    let broker = start(Config { max_frame: 4096, max_pending: 16 << 10, ..test_config(4) });
    let addr = broker.local_addr();
    // Publishers on at least three cores, so that every subscriber has one
    // on another core.
    let mut pubs: Vec<Client> = Vec::new();
    for _ in 0..64 {
        pubs.push(Client::connect(addr));
        let cores: BTreeSet<u16> = pubs.iter().map(Client::core_id).collect();
        if cores.len() >= 3 && pubs.len() >= 4 {
            break;
        }
    }
    let pub_cores: BTreeSet<u16> = pubs.iter().map(Client::core_id).collect();
    assert!(pub_cores.len() >= 3, "publishers on cores {pub_cores:?}");

    for i in 0..60u64 {
        // Half the rounds use a topic new to the broker, half a topic whose
        // interest comes and goes as each subscriber closes.
        let topic = if i % 2 == 0 { format!("race.{i}") } else { "race.shared".to_string() };
        let mut sub = Client::connect(addr);
        sub.sub(i as u32, &topic);
        sub.flush_empty();
        let publ = pubs.iter_mut().find(|p| p.core_id() != sub.core_id()).expect("other core");
        let sent_before = broker.counters().total.cross_core_sent;
        publ.publish(&topic, &seq_payload(i, 0));
        assert_eq!(
            sub.recv(),
            Got::msg(i as u32, &topic, &seq_payload(i, 0)),
            "round {i}: subscriber on core {}, publisher on core {}",
            sub.core_id(),
            publ.core_id()
        );
        // The message crossed cores: counted when the publisher's core
        // staged it, before it could reach the subscriber. A topic new to the
        // broker has exactly one interested core; the shared one may still
        // have a core whose last subscriber's removal is on its way.
        let crossed = broker.counters().total.cross_core_sent - sent_before;
        if i % 2 == 0 {
            assert_eq!(crossed, 1, "round {i}: copies sent to other cores");
        } else {
            assert!((1..=3).contains(&crossed), "round {i}: {crossed} copies to other cores");
        }
        sub.flush_empty();
    }
    for p in &mut pubs {
        p.flush_empty();
    }
    drop(pubs);
    finish(broker);
}

#[test]
fn own_publications_only_when_subscribed_and_once_per_sid() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut me = Client::connect(addr);
    me.publish("own.t", b"x");
    me.flush_empty();

    me.sub(7, "own.t");
    me.sub(8, "own.t");
    me.flush_empty();
    let mut other = connect_not_on(addr, me.core_id());
    other.sub(9, "own.t");
    other.flush_empty();

    me.publish("own.t", b"y");
    let mut got = me.flush();
    got.sort_by_key(|g| match g {
        Got::Msg { sid, .. } => *sid,
        _ => u32::MAX,
    });
    assert_eq!(got, vec![Got::msg(7, "own.t", b"y"), Got::msg(8, "own.t", b"y")]);
    assert_eq!(other.recv(), Got::msg(9, "own.t", b"y"));
    other.flush_empty();

    // The other connection publishing: `me` gets it twice, once per sid.
    other.publish("own.t", b"z");
    assert_eq!(other.flush(), vec![Got::msg(9, "own.t", b"z")]);
    let mut got = vec![me.recv(), me.recv()];
    got.sort_by_key(|g| match g {
        Got::Msg { sid, .. } => *sid,
        _ => u32::MAX,
    });
    assert_eq!(got, vec![Got::msg(7, "own.t", b"z"), Got::msg(8, "own.t", b"z")]);

    me.unsub(7);
    me.publish("own.t", b"w");
    assert_eq!(me.flush(), vec![Got::msg(8, "own.t", b"w")]);
    assert_eq!(other.recv(), Got::msg(9, "own.t", b"w"));
    drop((me, other));
    finish(broker);
}

#[test]
fn counters_follow_cross_core_traffic() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let (mut publ, mut sub) = cross_core_pair(addr, 1, "cnt.t");
    let (pc, sc) = (publ.core_id() as usize, sub.core_id() as usize);
    let before = broker.counters();

    for i in 0..10 {
        publ.publish("cnt.t", &seq_payload(i, 0));
    }
    publ.publish("cnt.nobody", b"dropped on the floor");
    publ.flush_empty();
    for i in 0..10 {
        assert_eq!(sub.recv(), Got::msg(1, "cnt.t", &seq_payload(i, 0)));
    }
    sub.flush_empty();

    let delta = |after: &Counters, core: usize, f: fn(&corecast::Snapshot) -> u64| {
        f(&after.per_core[core]) - f(&before.per_core[core])
    };
    let after = wait_per_core(&broker, "cross-core deliveries", |c| {
        c.per_core[sc].msgs_out - before.per_core[sc].msgs_out == 10
            && c.per_core[sc].cross_core_received - before.per_core[sc].cross_core_received == 10
    });
    assert_eq!(delta(&after, pc, |s| s.msgs_in), 11, "publisher core msgs_in");
    assert_eq!(delta(&after, sc, |s| s.msgs_in), 0, "subscriber core msgs_in");
    assert_eq!(delta(&after, pc, |s| s.cross_core_sent), 10, "only subscribed topics cross");
    assert_eq!(delta(&after, pc, |s| s.msgs_out), 0, "no local subscriber on publisher core");
    assert_eq!(delta(&after, sc, |s| s.cross_core_sent), 0);
    assert!(delta(&after, pc, |s| s.cross_core_batches) >= 1);
    assert!(delta(&after, pc, |s| s.bytes_in) > 0);
    assert!(delta(&after, sc, |s| s.bytes_out) > 0);
    assert_eq!(after.total.msgs_dropped, 0);
    drop((sub, publ));
    finish(broker);
}

#[test]
fn connection_limit_refuses_with_server_full() {
    let broker = start(Config { max_connections: 3, ..test_config(1) });
    let addr = broker.local_addr();
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(addr)).collect();
    // The fourth: ERR 8 before any HELLO, then the close.
    let mut refused = Client::connect_raw(addr);
    refused.expect_only_fatal(8);
    // A client that sends HELLO right away gets the same answer.
    let mut eager = Client::connect_raw(addr);
    eager.hello("eager", b"");
    eager.expect_only_fatal(8);
    let c = broker.counters().total;
    assert_eq!((c.connections_refused, c.connections_accepted, c.slots_in_use), (2, 3, 3));

    // The held connections still work.
    held[0].sub(1, "lim.t");
    held[0].flush_empty();
    held[1].publish("lim.t", b"still here");
    held[1].flush_empty();
    assert_eq!(held[0].recv(), Got::msg(1, "lim.t", b"still here"));

    // Closing one frees a slot for the next.
    held.pop();
    wait_counters(&broker, "a free slot", |c| c.slots_in_use == 2);
    let mut next = Client::connect(addr);
    next.publish("lim.t", b"from the newcomer");
    next.flush_empty();
    assert_eq!(held[0].recv(), Got::msg(1, "lim.t", b"from the newcomer"));
    assert_eq!(broker.counters().total.connections_refused, 2);
    drop((held, next));
    finish(broker);
}

#[test]
fn welcome_describes_the_session() {
    let cfg = Config {
        server_name: "unit-broker".into(),
        max_frame: 8192,
        ping_interval_ms: 12_345,
        ..test_config(2)
    };
    let broker = start(cfg);
    let clients: Vec<Client> = (0..20).map(|_| Client::connect(broker.local_addr())).collect();
    let mut ids = BTreeSet::new();
    for c in &clients {
        match c.welcome.clone().expect("welcomed") {
            Got::Welcome { core_id, connection_id, max_frame, ping_interval_ms, server_name } => {
                assert_eq!(
                    (max_frame, ping_interval_ms, server_name.as_str()),
                    (8192, 12_345, "unit-broker")
                );
                assert!(core_id < 2, "core_id {core_id}");
                assert!(ids.insert(connection_id), "connection_id {connection_id} repeated");
            }
            other => panic!("{other:?}"),
        }
    }
    drop(clients);
    finish(broker);
}

#[test]
fn many_pings_waiting_on_a_barrier_are_answered_in_order() {
    // The SUB must reach the other core before any PONG, so every PING
    // waits for a barrier; more than the 64 a connection may have pending
    // holds its reads back until they are answered.
    let broker = start(test_config(2));
    let mut c = Client::connect(broker.local_addr());
    let mut bytes = Vec::new();
    corecast_proto::ClientFrame::Sub(corecast_proto::Sub {
        sid: 1,
        topic: "pings.t",
        queue_group: "",
        lossy: false,
    })
    .encode(&mut bytes);
    for nonce in 1..=300u64 {
        bytes.extend_from_slice(&frame(corecast_proto::opcode::PING, 0, &nonce.to_le_bytes()));
    }
    c.send_raw(&bytes);
    for nonce in 1..=300u64 {
        match c.read_frame(Duration::from_secs(3)) {
            ReadEnd::Frame(Got::Pong(n)) if n == nonce => {}
            other => {
                // One more frame from the client wakes the connection: what
                // was queued and never flushed comes out before its PONG.
                c.next_nonce = 1000;
                let unstuck = c.flush();
                panic!(
                    "waiting for PONG {nonce} of 300 (all before it came in order): {other:?}; \
                     after one more PING the broker sent {} frames first, starting {:?}",
                    unstuck.len(),
                    unstuck.first()
                )
            }
        }
    }
    c.next_nonce = 301;
    c.flush_empty();
    drop(c);
    finish(broker);
}

#[test]
fn frames_split_byte_by_byte_are_reassembled() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut c = Client::connect_raw(addr);
    let mut bytes = Vec::new();
    corecast_proto::ClientFrame::Hello(corecast_proto::Hello {
        version: 1,
        name: "trickle",
        token: b"",
    })
    .encode(&mut bytes);
    for b in &bytes {
        c.send_raw(std::slice::from_ref(b));
    }
    c.expect_welcome();
    let mut bytes = Vec::new();
    for f in [
        corecast_proto::ClientFrame::Sub(corecast_proto::Sub {
            sid: 1,
            topic: "bytewise",
            queue_group: "",
            lossy: false,
        }),
        corecast_proto::ClientFrame::Pub(corecast_proto::Pub {
            topic: "bytewise",
            reply_to: "re",
            payload: b"one byte at a time",
        }),
        corecast_proto::ClientFrame::Ping { nonce: 99 },
    ] {
        f.encode(&mut bytes);
    }
    for b in &bytes {
        c.send_raw(std::slice::from_ref(b));
    }
    assert_eq!(
        c.recv(),
        Got::Msg {
            sid: 1,
            topic: "bytewise".into(),
            reply_to: "re".into(),
            payload: b"one byte at a time".to_vec()
        }
    );
    assert_eq!(c.recv(), Got::Pong(99));
    drop(c);
    finish(broker);
}

#[test]
fn large_frames_straddling_the_read_buffer_arrive_intact() {
    // Ten 10 kB PUBs and PINGs in one write: more than the 64 kB read
    // buffer, so frames straddle its end and get moved to the front.
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let (mut publ, mut sub) = cross_core_pair(addr, 3, "big.t");
    let payload = |i: usize| -> Vec<u8> { (0..10_000).map(|j| (i * 7 + j * 13) as u8).collect() };
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend_from_slice(&raw_pub(b"big.t", b"", &payload(i)));
        bytes.extend_from_slice(&frame(corecast_proto::opcode::PING, 0, &(i as u64).to_le_bytes()));
    }
    publ.send_raw(&bytes);
    for i in 0..10u64 {
        assert_eq!(publ.recv(), Got::Pong(i));
    }
    for i in 0..10 {
        assert_eq!(sub.recv(), Got::msg(3, "big.t", &payload(i)), "message {i}");
    }
    sub.flush_empty();
    drop((publ, sub));
    finish(broker);
}

#[test]
fn maximal_msg_fits_the_smallest_allowed_write_buffer() {
    // write_buffer = max_frame + 8 + 512, the least the configuration
    // allows: a MSG carrying a maximal PUB (max_frame + 8 bytes on the wire)
    // fits exactly in the room left beside the 512-byte reserve.
    let max_frame = 4096usize;
    let broker = start(Config {
        max_frame: max_frame as u32,
        max_pending: max_frame + 8 + 512,
        ..test_config(2)
    });
    let addr = broker.local_addr();
    let (mut publ, mut sub) = cross_core_pair(addr, 1, "m");
    for round in 0..3u8 {
        // len = 2 + 1 + "m" + 1 + payload = max_frame.
        let payload = vec![round; max_frame - 5];
        publ.publish("m", &payload);
        publ.flush_empty();
        assert_eq!(sub.recv(), Got::msg(1, "m", &payload), "round {round}");
    }
    assert_eq!(broker.counters().total.slow_consumer_closes, 0);
    drop((publ, sub));
    finish(broker);
}

#[test]
fn cross_core_backpressure_keeps_order_and_loses_nothing() {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    };
    const N: u64 = 3000;
    const WINDOW: u64 = 200; // 200 MSGs of ~530 bytes: well inside the write buffer
    let broker = start(Config { cross_core_batch: 2048, cross_core_queue: 1, ..test_config(2) });
    let addr = broker.local_addr();
    let (mut publ, mut sub) = cross_core_pair(addr, 5, "bp.t");
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            for i in 0..N {
                let (sid, topic, payload) = sub.recv_msg();
                assert_eq!((sid, topic.as_str(), seq_of(&payload)), (5, "bp.t", i));
                progress.store(i + 1, Ordering::Release);
            }
            sub.flush_empty();
            sub
        })
    };
    let started = std::time::Instant::now();
    for i in 0..N {
        while i - progress.load(Ordering::Acquire) >= WINDOW {
            assert!(started.elapsed() < Duration::from_secs(8), "subscriber stuck at {i}");
            assert!(!reader.is_finished(), "reader ended early");
            std::thread::sleep(Duration::from_micros(100));
        }
        publ.publish("bp.t", &seq_payload(i, 512));
    }
    publ.flush_empty();
    let sub = reader.join().expect("reader");
    let c = broker.counters();
    let pc = publ.core_id() as usize;
    assert!(c.per_core[pc].publisher_stalls > 0, "the publisher never waited: {c:#?}");
    assert_eq!(c.per_core[pc].cross_core_sent, N);
    assert_eq!(c.total.slow_consumer_closes, 0);
    drop((publ, sub));
    finish(broker);
}

#[test]
fn refusal_after_a_stalled_publish_arrives_without_further_input() {
    // cross_core_batch 1: every cross-core PUB after the first waits for the
    // forwarder, so the rest of the write is applied when the stalled PUB is
    // retried. The ERR for the bad PUB at its end must still go out. The
    // topics alternate, so each PUB goes alone (PUBs to one topic in a row
    // would go together).
    const TOPICS: [&str; 2] = ["stall.t", "stall.u"];
    let broker = start(Config { cross_core_batch: 1, cross_core_queue: 1, ..test_config(2) });
    let addr = broker.local_addr();
    let (mut publ, mut sub) = cross_core_pair(addr, 1, TOPICS[0]);
    sub.sub(2, TOPICS[1]);
    sub.flush_empty();
    let mut bytes = Vec::new();
    for i in 0..20 {
        let topic = TOPICS[i as usize % 2];
        bytes.extend_from_slice(&raw_pub(topic.as_bytes(), b"", &seq_payload(i, 0)));
    }
    bytes.extend_from_slice(&raw_pub(b"bad topic", b"", b""));
    publ.send_raw(&bytes);
    // Nothing else is sent: the ERR must not wait for more input.
    match publ.read_frame(Duration::from_secs(3)) {
        ReadEnd::Frame(Got::Err { code: 100, fatal: false, .. }) => {}
        other => {
            let stalls = broker.counters().total.publisher_stalls;
            let unstuck = publ.flush();
            panic!(
                "expected ERR 100 for the last PUB within 3 s, got {other:?} (publisher_stalls \
                 {stalls}); after one more PING the broker sent {unstuck:?} before its PONG"
            )
        }
    }
    for i in 0..20 {
        let sid = i as u32 % 2 + 1;
        assert_eq!(sub.recv(), Got::msg(sid, TOPICS[sid as usize - 1], &seq_payload(i, 0)));
    }
    assert!(broker.counters().total.publisher_stalls > 0);
    drop((publ, sub));
    finish(broker);
}

/// A message for several subscribers is written once with the first
/// subscriber's sid: subscribers with that sid send it as it lies there,
/// others get their own header on the shared body or, when it is short, a
/// copy. Topics, sids and sizes interleaved here take every one of those
/// paths, and each subscriber must see exactly its own sids, in order.
#[test]
fn shared_frames_carry_each_subscribers_own_sid() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    // (subscriptions as (sid, topic)) per subscriber; the first on each
    // topic decides the sid written to the shared chunk.
    let plans: [&[(u32, &str)]; 5] =
        [&[(1, "t")], &[(1, "t"), (2, "u")], &[(9, "t")], &[(2, "u"), (1, "t")], &[(1, "u")]];
    let mut subs: Vec<Client> = plans
        .iter()
        .map(|plan| {
            let mut c = Client::connect(addr);
            plan.iter().for_each(|&(sid, topic)| c.sub(sid, topic));
            c.flush_empty();
            c
        })
        .collect();
    let mut publ = Client::connect(addr);
    let mut sent = Vec::new();
    for n in 0..400u64 {
        // Mixed first; then a long row to one topic, which goes in batches
        // that fill several shared chunks each.
        let topic = if n % 3 == 0 && n < 300 { "u" } else { "t" };
        let pad = if n < 300 { [10, 600, 40, 3000][n as usize % 4] } else { 1000 };
        let payload = seq_payload(n, pad);
        publ.publish(topic, &payload);
        sent.push((topic, payload));
    }
    publ.flush_empty();
    for (c, plan) in subs.iter_mut().zip(plans) {
        let nonce = c.ping();
        let got = c.until_pong(nonce);
        let want: Vec<Got> = sent
            .iter()
            .filter_map(|(topic, payload)| {
                let &(sid, _) = plan.iter().find(|(_, t)| t == topic)?;
                Some(Got::msg(sid, topic, payload))
            })
            .collect();
        assert_eq!(got.len(), want.len(), "subscriber {plan:?}");
        assert!(got == want, "subscriber {plan:?} got other messages than were sent to it");
    }
    drop((subs, publ));
    finish(broker);
}

/// `PUB`s to one topic that arrive in one read are delivered together.
/// A connection subscribed to the topic under two sids must still get
/// each message for both sids before the next message, as it would one
/// by one.
#[test]
fn publishes_in_a_row_keep_their_order_on_a_connection_with_two_sids() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut twice = Client::connect(addr);
    twice.sub(1, "row.t");
    twice.sub(2, "row.t");
    twice.flush_empty();
    let mut other = Client::connect(addr);
    other.sub(1, "row.t");
    other.flush_empty();
    let mut publ = Client::connect(addr);
    let bytes: Vec<u8> =
        (0..100).flat_map(|i| raw_pub(b"row.t", b"", &seq_payload(i, 40))).collect();
    publ.send_raw(&bytes);
    publ.flush_empty();
    let nonce = twice.ping();
    let want: Vec<Got> = (0..100)
        .flat_map(|i| [1, 2].map(|sid| Got::msg(sid, "row.t", &seq_payload(i, 40))))
        .collect();
    assert!(twice.until_pong(nonce) == want, "the two sids' messages interleave as published");
    let nonce = other.ping();
    let got = other.until_pong(nonce);
    assert_eq!(got.len(), 100);
    drop((twice, other, publ));
    finish(broker);
}

/// A `PUB` that is refused in the middle of a run to one topic ends the
/// run there: what came before it is delivered, its `ERR` comes back, and
/// what follows is delivered after it.
#[test]
fn a_refused_publish_in_a_row_is_refused_in_its_place() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(1, "row.r");
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    publ.sub(7, "row.r");
    publ.flush_empty();
    let mut bytes = Vec::new();
    for i in 0..30u64 {
        let reply: &[u8] = if i == 12 { b"bad reply" } else { b"" };
        bytes.extend_from_slice(&raw_pub(b"row.r", reply, &seq_payload(i, 0)));
    }
    publ.send_raw(&bytes);
    let nonce = publ.ping();
    let got = publ.until_pong(nonce);
    let err_at = got.iter().position(|g| matches!(g, Got::Err { code: 100, fatal: false, .. }));
    assert_eq!(err_at, Some(12), "the ERR comes between the 12th and 13th echo: {got:?}");
    let echoed: Vec<u64> = got
        .iter()
        .filter_map(|g| match g {
            Got::Msg { sid: 7, payload, .. } => Some(seq_of(payload)),
            _ => None,
        })
        .collect();
    let want: Vec<u64> = (0..30).filter(|&i| i != 12).collect();
    assert_eq!(echoed, want);
    let nonce = sub.ping();
    assert_eq!(sub.until_pong(nonce).len(), 29);
    drop((sub, publ));
    finish(broker);
}

/// A frame with an unknown opcode right after a row of `PUB`s to one topic
/// ends the session, but only after the row: every message before it is
/// delivered, none after it, and a witness connection on the same core
/// keeps working.
#[test]
fn an_unknown_opcode_after_a_row_of_publishes_ends_the_session_after_them() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr);
    sub.sub(1, "row.bad");
    sub.flush_empty();
    let mut publ = Client::connect(addr);
    let mut bytes: Vec<u8> =
        (0..20).flat_map(|i| raw_pub(b"row.bad", b"", &seq_payload(i, 10))).collect();
    bytes.extend_from_slice(&frame(0x7e, 0, b"no such opcode"));
    bytes.extend_from_slice(&raw_pub(b"row.bad", b"", &seq_payload(99, 10)));
    publ.send_raw(&bytes);
    let unknown = corecast_proto::ErrorCode::UnknownOpcode.as_u16();
    assert_eq!(publ.expect_fatal(), unknown, "an unknown opcode ends the session");
    let nonce = sub.ping();
    let got = sub.until_pong(nonce);
    let want: Vec<Got> = (0..20).map(|i| Got::msg(1, "row.bad", &seq_payload(i, 10))).collect();
    assert!(got == want, "the 20 before the bad frame, and nothing after it: {} got", got.len());
    let mut witness = Client::connect(addr);
    witness.publish("row.bad", b"still here");
    witness.flush_empty();
    assert_eq!(sub.recv(), Got::msg(1, "row.bad", b"still here"));
    drop((sub, witness));
    finish(broker);
}
