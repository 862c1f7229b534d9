//! Protocol 1.1 against a real broker over TCP: negotiation, headers
//! (`HPUB`/`HMSG`), no echo, `NO_RESPONDERS` and wildcard subscriptions,
//! locally and across cores, beside version 1 sessions that must see no
//! change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::Write,
    time::{Duration, Instant},
};

use common::{
    connect_not_on, connect_on, finish, start, test_config,
    v11::{connect11_not_on, hmsg, msg11, no_responders, trace_block, Client11, Got11},
    Client, Got, ReadEnd, Witness,
};
use corecast_proto::{ClientFrame11, Headers, Sub};

#[test]
fn hello_with_the_1_1_bit_is_granted_and_without_it_welcome_is_version_1() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut c11 = Client11::connect(addr, false);
    assert!(c11.flush().is_empty());
    // A version 1 client: WELCOME with flags 0, byte for byte the v1 frame
    // (the v1 decoder refuses any flag bit), and 1.1 frames stay refused.
    let mut v1 = Client::connect(addr);
    v1.flush_empty();
    v1.send_raw(&common::frame(corecast_proto::opcode::HPUB, 0, b"\x01a\x00\x01\x00"));
    v1.expect_only_fatal(2);
    let mut v1 = Client::connect(addr);
    v1.send_raw(&common::frame(corecast_proto::opcode::PUB, 0x02, b"\x01a\x01r"));
    v1.expect_only_fatal(1);
    drop(c11);
    finish(broker);
}

#[test]
fn v1_subscriber_gets_plain_msg_for_hpub_and_1_1_subscriber_hmsg() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut v1 = Client::connect(addr);
    v1.sub(1, "orders.eu");
    v1.flush_empty();
    let mut s11 = Client11::connect(addr, false);
    s11.sub(2, "orders.eu");
    assert!(s11.flush().is_empty());
    let mut publ = Client11::connect(addr, false);
    let block = trace_block();
    publ.hpub("orders.eu", block.headers(), b"hi", false);
    publ.publish("orders.eu", b"plain");
    assert!(publ.flush().is_empty());
    // The version 1 decoder would panic on anything but v1 frames.
    assert_eq!(
        v1.flush(),
        vec![Got::msg(1, "orders.eu", b"hi"), Got::msg(1, "orders.eu", b"plain")]
    );
    let want = vec![
        hmsg(2, "orders.eu", block.headers().as_bytes(), b"hi"),
        msg11(2, "orders.eu", b"plain"),
    ];
    assert_eq!(s11.flush(), want);
    drop((v1, s11, publ));
    finish(broker);
}

#[test]
fn headers_round_trip_across_cores_to_both_kinds_of_subscriber() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut publ = Client11::connect(addr, false);
    let mut s11 = connect11_not_on(addr, publ.core_id, false);
    s11.sub(5, "t.x");
    assert!(s11.flush().is_empty());
    let mut v1 = connect_not_on(addr, publ.core_id);
    v1.sub(6, "t.x");
    v1.flush_empty();
    let block = trace_block();
    // Large enough that a header-less body would be shared between queues.
    let payload = vec![0x5a; 1000];
    for _ in 0..3 {
        publ.hpub("t.x", block.headers(), &payload, false);
        publ.publish("t.x", &payload);
    }
    assert!(publ.flush().is_empty());
    let h = hmsg(5, "t.x", block.headers().as_bytes(), &payload);
    let m = msg11(5, "t.x", &payload);
    assert_eq!(s11.flush(), [h, m].iter().cycle().take(6).cloned().collect::<Vec<_>>());
    let plain = Got::msg(6, "t.x", &payload);
    assert_eq!(v1.flush(), vec![plain; 6]);
    drop((publ, s11, v1));
    finish(broker);
}

#[test]
fn every_malformed_header_vector_gets_err_13_and_a_close() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut witness = Witness::new(addr);
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../proto/vectors/v1.json")).unwrap();
    let mut cases = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let bad_header = v["error"] == "BadHeader" && v["direction"] == "client";
        if !bad_header {
            continue;
        }
        let bytes = hex(v["hex"].as_str().unwrap());
        let mut c = Client11::connect(addr, false);
        c.stream.write_all(&bytes).unwrap();
        c.expect_fatal(13);
        witness.check();
        cases += 1;
    }
    assert!(cases >= 20, "only {cases} malformed header vectors");
    // A header block length past the end of the frame is a malformed frame.
    let mut c = Client11::connect(addr, false);
    c.stream
        .write_all(&common::frame(corecast_proto::opcode::HPUB, 0, b"\x01a\x00\x09\x00\x00"))
        .unwrap();
    c.expect_fatal(1);
    witness.check();
    drop(witness);
    finish(broker);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn no_echo_leaves_out_only_the_publishers_own_subscriptions() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut quiet = Client11::connect(addr, true);
    quiet.sub(1, "chat");
    let mut loud = Client11::connect(addr, false);
    loud.sub(2, "chat");
    assert!(quiet.flush().is_empty());
    assert!(loud.flush().is_empty());
    quiet.publish("chat", b"from quiet");
    quiet.hpub("chat", trace_block().headers(), b"h", false);
    assert!(quiet.flush().is_empty(), "no echo");
    loud.publish("chat", b"from loud");
    assert_eq!(quiet.flush(), vec![msg11(1, "chat", b"from loud")]);
    let got = loud.flush();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], msg11(2, "chat", b"from quiet"));
    assert_eq!(got[2], msg11(2, "chat", b"from loud"), "echo by default");
    // A request whose only subscriber is its no-echo publisher: nobody.
    quiet.request("chat.only", "_INBOX.q", b"");
    quiet.sub(3, "chat.only");
    assert_eq!(quiet.flush(), vec![no_responders("chat.only", "_INBOX.q")]);
    quiet.request("chat.only", "_INBOX.q2", b"");
    assert_eq!(quiet.flush(), vec![no_responders("chat.only", "_INBOX.q2")]);
    drop((quiet, loud));
    finish(broker);
}

#[test]
fn no_responders_locally_before_a_later_pong() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut c = Client11::connect(addr, false);
    c.request("svc.time", "_INBOX.r1", b"");
    c.hpub("svc.time", trace_block().headers(), b"", true);
    assert_eq!(
        c.flush(),
        vec![no_responders("svc.time", "_INBOX.r1"), no_responders("svc.time", "_INBOX.h")]
    );
    // A request needs a reply-to.
    c.request("svc.time", "", b"");
    assert_eq!(c.flush(), vec![Got11::Err { code: 100, fatal: false }]);
    // With a responder, nothing more; the responder gets a plain MSG.
    let mut svc = Client11::connect(addr, false);
    svc.sub(9, "svc.time");
    assert!(svc.flush().is_empty());
    c.request("svc.time", "_INBOX.r2", b"now?");
    assert!(c.flush().is_empty());
    let want = Got11::Msg {
        sid: 9,
        topic: "svc.time".into(),
        reply_to: "_INBOX.r2".into(),
        payload: b"now?".to_vec(),
    };
    assert_eq!(svc.flush(), vec![want]);
    drop((c, svc));
    finish(broker);
}

#[test]
fn no_responders_across_cores_and_after_the_last_responder_left() {
    let broker = start(test_config(2));
    let addr = broker.local_addr();
    let mut req = Client11::connect(addr, false);
    let mut svc = connect11_not_on(addr, req.core_id, false);
    svc.sub(1, "svc.far");
    assert!(svc.flush().is_empty());
    req.request("svc.far", "_INBOX.a", b"x");
    assert!(req.flush().is_empty(), "a responder on the other core counts");
    assert_eq!(svc.flush().len(), 1);
    // UNSUB, flushed: gone on every core.
    svc.send(&ClientFrame11::Unsub { sid: 1 });
    assert!(svc.flush().is_empty());
    req.request("svc.far", "_INBOX.b", b"x");
    assert_eq!(req.flush(), vec![no_responders("svc.far", "_INBOX.b")]);
    // Subscribed again, then the connection leaves altogether.
    svc.sub(2, "svc.far");
    assert!(svc.flush().is_empty());
    req.request("svc.far", "_INBOX.c", b"x");
    assert!(req.flush().is_empty());
    drop(svc);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        req.request("svc.far", "_INBOX.d", b"x");
        let got = req.flush();
        if got == vec![no_responders("svc.far", "_INBOX.d")] {
            break;
        }
        assert!(got.is_empty(), "{got:?}");
        assert!(Instant::now() < deadline, "the left responder still counts");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(req);
    finish(broker);
}

#[test]
fn v1_session_is_unchanged_beside_1_1_traffic() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut v1 = Client::connect(addr);
    match v1.welcome.clone() {
        Some(Got::Welcome { .. }) => {}
        other => panic!("{other:?}"),
    }
    v1.sub(1, "x");
    v1.flush_empty();
    let mut p = Client11::connect(addr, true);
    p.hpub("x", Headers::EMPTY, b"e", false);
    p.request("x", "_INBOX.z", b"r");
    assert!(p.flush().is_empty());
    let got = v1.flush();
    assert_eq!(got[0], Got::msg(1, "x", b"e"));
    assert_eq!(
        got[1],
        Got::Msg { sid: 1, topic: "x".into(), reply_to: "_INBOX.z".into(), payload: b"r".to_vec() }
    );
    assert_eq!(v1.read_frame(Duration::from_millis(50)), ReadEnd::Timeout);
    drop((v1, p));
    finish(broker);
}

/// Messages sorted by payload, then sid: the order within one publish is
/// not specified, the order between publishes is checked apart.
fn sorted(mut got: Vec<Got11>) -> Vec<Got11> {
    got.sort_by(|a, b| match (a, b) {
        (Got11::Msg { sid: s1, payload: p1, .. }, Got11::Msg { sid: s2, payload: p2, .. }) => {
            (p1, s1).cmp(&(p2, s2))
        }
        _ => panic!("only MSG expected, got {a:?} and {b:?}"),
    });
    got
}

/// The payloads in arrival order never go back: one publisher's messages
/// arrive in the order it sent them.
fn assert_in_order(got: &[Got11]) {
    let payloads: Vec<&[u8]> = got
        .iter()
        .map(|g| match g {
            Got11::Msg { payload, .. } => payload.as_slice(),
            other => panic!("only MSG expected, got {other:?}"),
        })
        .collect();
    assert!(payloads.windows(2).all(|w| w[0] <= w[1]), "out of order: {payloads:?}");
}

#[test]
fn wildcards_deliver_locally_once_per_matching_subscription_with_the_topic() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut s = Client11::connect(addr, false);
    for (sid, pattern) in [(1, "a.*"), (2, "a.>"), (3, "a.b"), (4, ">"), (5, "*.c")] {
        s.sub(sid, pattern);
    }
    assert!(s.flush().is_empty(), "1.1 sessions may subscribe with wildcards");
    let mut publ = Client11::connect(addr, false);
    for (topic, payload) in [("a.b", b"1"), ("a.b.c", b"2"), ("x", b"3"), ("b.c", b"4")] {
        publ.publish(topic, payload);
    }
    assert!(publ.flush().is_empty());
    let got = s.flush();
    assert_in_order(&got);
    let want = vec![
        msg11(1, "a.b", b"1"),
        msg11(2, "a.b", b"1"),
        msg11(3, "a.b", b"1"),
        msg11(4, "a.b", b"1"),
        msg11(2, "a.b.c", b"2"),
        msg11(4, "a.b.c", b"2"),
        msg11(4, "x", b"3"),
        msg11(4, "b.c", b"4"),
        msg11(5, "b.c", b"4"),
    ];
    assert_eq!(sorted(got), want);
    // UNSUB takes each pattern out on its own.
    s.send(&ClientFrame11::Unsub { sid: 4 });
    s.send(&ClientFrame11::Unsub { sid: 2 });
    assert!(s.flush().is_empty());
    publ.publish("a.b", b"5");
    publ.publish("x", b"6");
    assert!(publ.flush().is_empty());
    let want = vec![msg11(1, "a.b", b"5"), msg11(3, "a.b", b"5")];
    assert_eq!(sorted(s.flush()), want);
    drop((s, publ));
    finish(broker);
}

#[test]
fn wildcards_deliver_across_cores_one_copy_per_core_in_order() {
    let broker = start(test_config(4));
    let addr = broker.local_addr();
    let mut publ = Client11::connect(addr, false);
    let mut s = connect11_not_on(addr, publ.core_id, false);
    s.sub(1, "orders.*");
    s.sub(2, "orders.>");
    assert!(s.flush().is_empty());
    // On the pattern subscriber's core, so that one copy crosses per message.
    let mut v1 = connect_on(addr, s.core_id);
    v1.sub(3, "orders.eu");
    v1.flush_empty();
    let crossed_before = broker.counters().total.cross_core_sent;
    let mut want = Vec::new();
    for i in 0..20u8 {
        let topic = if i % 2 == 0 { "orders.eu" } else { "orders.eu.x" };
        publ.publish(topic, &[i]);
        want.push(msg11(2, topic, &[i]));
        if i % 2 == 0 {
            want.push(msg11(1, topic, &[i]));
        }
    }
    publ.publish("other", b"no");
    assert!(publ.flush().is_empty());
    let crossed = broker.counters().total.cross_core_sent - crossed_before;
    assert_eq!(crossed, 20, "one copy per core however many patterns match");
    let got = s.flush();
    assert_in_order(&got);
    assert_eq!(sorted(got), sorted(want));
    let exact: Vec<Got> = (0..20u8).step_by(2).map(|i| Got::msg(3, "orders.eu", &[i])).collect();
    assert_eq!(v1.flush(), exact);
    drop((s, v1, publ));
    finish(broker);
}

#[test]
fn a_wildcard_subscriber_leaving_takes_its_interest_from_every_core() {
    let broker = start(test_config(4));
    let addr = broker.local_addr();
    let mut req = Client11::connect(addr, false);
    let mut svc = connect11_not_on(addr, req.core_id, false);
    svc.sub(1, "svc.*");
    assert!(svc.flush().is_empty());
    req.request("svc.far", "_INBOX.a", b"x");
    assert!(req.flush().is_empty(), "a pattern on the other core responds");
    assert_eq!(
        svc.flush(),
        vec![Got11::Msg {
            sid: 1,
            topic: "svc.far".into(),
            reply_to: "_INBOX.a".into(),
            payload: b"x".to_vec(),
        }]
    );
    svc.send(&ClientFrame11::Unsub { sid: 1 });
    assert!(svc.flush().is_empty());
    req.request("svc.far", "_INBOX.b", b"x");
    assert_eq!(req.flush(), vec![no_responders("svc.far", "_INBOX.b")]);
    svc.sub(2, "svc.>");
    assert!(svc.flush().is_empty());
    drop(svc);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        req.request("svc.far", "_INBOX.c", b"x");
        let got = req.flush();
        if got == vec![no_responders("svc.far", "_INBOX.c")] {
            break;
        }
        assert!(got.is_empty(), "{got:?}");
        assert!(Instant::now() < deadline, "the left subscriber still counts");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(req);
    finish(broker);
}

#[test]
fn v1_sessions_get_105_for_wildcards_and_queue_groups_and_1_1_gets_106_for_bad_names() {
    let broker = start(test_config(1));
    let addr = broker.local_addr();
    let mut v1 = Client::connect(addr);
    v1.sub(1, "a.*");
    v1.sub(2, ">");
    v1.sub_group(3, "a.b", "g");
    v1.flush_expect_errs(&[105, 105, 105]);
    let mut s = Client11::connect(addr, false);
    for (sid, name) in [(4, "a.b"), (5, "*"), (6, ">"), (7, "x y"), (8, "w\u{a0}")] {
        s.send(&ClientFrame11::Sub(Sub { sid, topic: "a.b", queue_group: name, lossy: false }));
    }
    assert_eq!(s.flush(), vec![Got11::Err { code: 106, fatal: false }; 5]);
    // Nothing of the refused ones is left: a publish reaches nobody.
    let mut publ = Client::connect(addr);
    publ.publish("a.b", b"x");
    publ.flush_empty();
    v1.flush_empty();
    s.flush_empty();
    // The session goes on: a good name is taken.
    s.sub_group(4, "a.b", "g");
    s.flush_empty();
    publ.publish("a.b", b"y");
    publ.flush_empty();
    assert_eq!(s.flush(), vec![msg11(4, "a.b", b"y")]);
    drop((v1, s, publ));
    finish(broker);
}

#[test]
fn hpub_reaches_wildcards_as_hmsg_with_the_topic_and_no_echo_skips_own_patterns() {
    let broker = start(test_config(4));
    let addr = broker.local_addr();
    let mut publ = Client11::connect(addr, true);
    publ.sub(9, "t.>");
    assert!(publ.flush().is_empty());
    let mut s = connect11_not_on(addr, publ.core_id, false);
    s.sub(1, "t.*");
    s.sub(2, "*.x");
    assert!(s.flush().is_empty());
    let block = trace_block();
    publ.hpub("t.x", block.headers(), b"h", false);
    assert!(publ.flush().is_empty(), "no echo through the publisher's own pattern");
    let mut got = s.flush();
    got.sort_by_key(|g| match g {
        Got11::HMsg { sid, .. } => *sid,
        other => panic!("HMSG expected, got {other:?}"),
    });
    let headers = block.headers().as_bytes().to_vec();
    assert_eq!(got, vec![hmsg(1, "t.x", &headers, b"h"), hmsg(2, "t.x", &headers, b"h")]);
    drop((publ, s));
    finish(broker);
}
