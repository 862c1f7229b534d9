//! Queue groups (protocol 1.1, section 13.4) against a real broker over
//! TCP, on four cores: each message reaches exactly one member of each
//! group, members share the messages fairly wherever they are connected,
//! a member that leaves gets nothing more and the messages on their way to
//! it go to another member (or, with none left, are counted), plain
//! subscribers beside a group get everything, and connections that vanish
//! leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use common::{
    finish, seq_of, seq_payload, start, test_config, v11::*, wait_counters, wait_idle, Client,
};
use corecast::Config;
use corecast_proto::{ClientFrame11, Pub};

/// A broker on four cores whose subscribers may fall far behind a burst
/// without meeting the slow-consumer policy: the tests that publish
/// thousands of messages read them after the burst.
fn roomy_config() -> Config {
    Config { max_pending: 64 << 20, ..test_config(4) }
}

/// A 1.1 client on core 0 and one on core 1.
fn one_per_core(addr: SocketAddr) -> (Client11, Client11) {
    (connect11_on(addr, 0), connect11_on(addr, 1))
}

/// The messages before the `PONG` of a flush, as (sid, sequence number),
/// in arrival order.
fn messages(c: &mut Client11) -> Vec<(u32, u64)> {
    let to_seq = |g| match g {
        Got11::Msg { sid, payload, .. } | Got11::HMsg { sid, payload, .. } => {
            (sid, seq_of(&payload))
        }
        other => panic!("only messages expected, got {other:?}"),
    };
    c.flush().into_iter().map(to_seq).collect()
}

/// The sequence numbers of the messages before the `PONG` of a flush,
/// which must all be for `sid` and, coming from one publisher, in order.
fn seqs(c: &mut Client11, sid: u32) -> Vec<u64> {
    let got: Vec<u64> = messages(c)
        .into_iter()
        .map(|(s, seq)| {
            assert_eq!(s, sid, "a message for another sid");
            seq
        })
        .collect();
    assert_in_order(&got, u64::MAX);
    got
}

/// Asserts that the messages of each publisher arrived in the order it sent
/// them, and each once: publisher `i` sent sequence numbers `i * per` to
/// `(i + 1) * per`, in order.
fn assert_in_order(got: &[u64], per: u64) {
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for &seq in got {
        if let Some(prev) = last.insert(seq / per, seq) {
            assert!(prev < seq, "{seq} after {prev}: out of order or twice in {got:?}");
        }
    }
}

/// The sequence numbers of the messages before the `PONG` of a flush, which
/// must all be for `sid`, in the order they came: a message handed on from
/// a member that left may come after later ones.
fn unordered(c: &mut Client11, sid: u32) -> Vec<u64> {
    let got = messages(c);
    assert!(got.iter().all(|&(s, _)| s == sid), "a message for another sid: {got:?}");
    got.into_iter().map(|(_, seq)| seq).collect()
}

/// The sequence number of the next frame, which must be a message for
/// `sid`.
fn next_seq(c: &mut Client11, sid: u32) -> u64 {
    match c.recv() {
        Got11::Msg { sid: s, payload, .. } if s == sid => seq_of(&payload),
        other => panic!("a message for sid {sid} expected, got {other:?}"),
    }
}

/// Asserts that the members' sequence numbers together are `0..n`, each
/// exactly once.
fn assert_exactly_once(members: &[Vec<u64>], n: u64) {
    let mut all: Vec<u64> = members.iter().flatten().copied().collect();
    all.sort_unstable();
    let want: Vec<u64> = (0..n).collect();
    assert_eq!(all.len() as u64, n, "each message once across the group");
    assert_eq!(all, want);
}

/// Publishes the sequence numbers in `range` to `topic`, pipelined: the
/// frames go out in writes of about 64 KiB.
fn publish_seqs(p: &mut Client11, topic: &str, range: std::ops::Range<u64>) {
    let mut out = Vec::new();
    for seq in range {
        let payload = seq_payload(seq, 0);
        let publish = Pub { topic, reply_to: "", payload: &payload };
        ClientFrame11::Pub { publish, request: false }.encode(&mut out);
        if out.len() >= 64 << 10 {
            p.stream.write_all(&out).unwrap();
            out.clear();
        }
    }
    p.stream.write_all(&out).unwrap();
}

/// A connection on core 0 that publishes `0, 1, 2, …` to `topic`, 1000 at
/// a time, until `stop` is set; the thread returns it, flushed, and how
/// many it published. After each thousand it sends a `PING` and waits for
/// the one before, so at most two thousand wait in its socket for the
/// broker: a stream of messages on their way, never a pile that would
/// keep the final `PONG` for seconds.
fn stream(
    addr: SocketAddr,
    topic: &str,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<(Client11, u64)> {
    let mut p = connect11_on(addr, 0);
    let (stop, topic) = (Arc::clone(stop), topic.to_owned());
    thread::spawn(move || {
        let (mut n, mut owed) = (0, None);
        while !stop.load(Ordering::Relaxed) {
            publish_seqs(&mut p, &topic, n..n + 1000);
            n += 1000;
            if let Some(nonce) = owed.take() {
                assert_eq!(p.recv(), Got11::Pong(nonce), "only PONGs for the publisher");
            }
            let nonce = STREAM_NONCES + n;
            p.send(&ClientFrame11::Ping { nonce });
            owed = Some(nonce);
        }
        if let Some(nonce) = owed {
            assert_eq!(p.recv(), Got11::Pong(nonce), "only PONGs for the publisher");
        }
        p.flush_empty();
        (p, n)
    })
}

/// The nonces of [`stream`]'s `PING`s start here, far from those of
/// `Client11::flush`.
const STREAM_NONCES: u64 = 1 << 40;

#[test]
fn each_message_reaches_one_member_of_each_group_and_every_plain_subscriber() {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    // Group w: two members on core 0, one on core 1 (one of them on a
    // connection that also holds a plain subscription). Group v: one
    // member on core 1. A plain subscriber on each core.
    let (mut a0, mut a1) = one_per_core(addr);
    let mut b0 = connect11_on(addr, 0);
    let mut plain1 = connect11_on(addr, 1);
    a0.sub_group(1, "jobs.x", "w");
    a0.sub(2, "jobs.x");
    b0.sub_group(1, "jobs.x", "w");
    a1.sub_group(1, "jobs.x", "w");
    plain1.sub(1, "jobs.x");
    plain1.sub_group(2, "jobs.x", "v");
    for c in [&mut a0, &mut b0, &mut a1, &mut plain1] {
        c.flush_empty();
    }
    let n = 400;
    // One publisher per core, and a version 1 one: the draw is made where
    // the message is published.
    let (mut p0, mut p1) = one_per_core(addr);
    let mut v1 = Client::connect(addr);
    publish_seqs(&mut p0, "jobs.x", 0..n);
    publish_seqs(&mut p1, "jobs.x", n..2 * n);
    for seq in 2 * n..3 * n {
        v1.publish("jobs.x", &seq_payload(seq, 0));
    }
    p0.flush_empty();
    p1.flush_empty();
    v1.flush_empty();
    let total = 3 * n;
    let all: Vec<u64> = (0..total).collect();
    let of_sid = |got: &[(u32, u64)], sid| -> Vec<u64> {
        let mine: Vec<u64> = got.iter().filter(|m| m.0 == sid).map(|m| m.1).collect();
        assert_in_order(&mine, n);
        mine
    };
    let (got_a0, got_plain1) = (messages(&mut a0), messages(&mut plain1));
    let mut plain = [of_sid(&got_a0, 2), of_sid(&got_plain1, 1)];
    for p in &mut plain {
        p.sort_unstable();
        assert_eq!(*p, all, "a plain subscription gets every message");
    }
    assert_exactly_once(&[of_sid(&got_plain1, 2)], total);
    let (got_b0, got_a1) = (messages(&mut b0), messages(&mut a1));
    let w = [of_sid(&got_a0, 1), of_sid(&got_b0, 1), of_sid(&got_a1, 1)];
    assert_eq!(got_b0.len() + got_a1.len(), w[1].len() + w[2].len(), "only group w there");
    assert_exactly_once(&w, total);
    assert_eq!(broker.counters().total.queue_undeliverable, 0);
    drop((a0, a1, b0, plain1, p0, p1, v1));
    finish(broker);
}

/// Publishes `n` messages from a connection on `publisher` to a group
/// whose members sit on the cores in `layout`, beside subscribers without
/// a group on the cores in `plain`, and checks that each member's share is
/// within 5% of `n / members`, each message reaches one member, and each
/// plain subscriber gets every message.
fn check_fair_shares(layout: &[u16], publisher: u16, plain: &[u16], n: u64) {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    let mut members: Vec<Client11> = layout.iter().map(|&core| connect11_on(addr, core)).collect();
    for m in &mut members {
        m.sub_group(7, "fair.t", "workers");
        m.flush_empty();
    }
    let mut plains: Vec<Client11> = plain.iter().map(|&core| connect11_on(addr, core)).collect();
    for s in &mut plains {
        s.sub(8, "fair.t");
        s.flush_empty();
    }
    let mut p = connect11_on(addr, publisher);
    publish_seqs(&mut p, "fair.t", 0..n);
    p.flush_empty();
    for s in &mut plains {
        assert!(seqs(s, 8).into_iter().eq(0..n), "a plain subscriber gets every message");
    }
    let shares: Vec<Vec<u64>> = members.iter_mut().map(|m| seqs(m, 7)).collect();
    let counts: Vec<usize> = shares.iter().map(Vec::len).collect();
    let fair = n as f64 / layout.len() as f64;
    for (count, core) in counts.iter().zip(layout) {
        let off = (*count as f64 - fair).abs() / fair;
        assert!(
            off <= 0.05,
            "layout {layout:?}, publisher on {publisher}: a member on core {core} got {count} \
             of {n}, {:.1}% off its fair share (all: {counts:?})",
            off * 100.0
        );
    }
    assert_exactly_once(&shares, n);
    let c = broker.counters().total;
    assert_eq!((c.queue_undeliverable, c.queue_redrawn), (0, 0), "nobody left");
    drop((members, plains, p));
    finish(broker);
}

/// The draw is uniform over members, so a core is drawn in proportion to
/// its members. With 100 000 messages and 4 members one member's share has
/// a standard deviation of 0.55% of its fair share, so ±5% is about nine
/// deviations.
#[test]
fn members_share_the_messages_fairly_wherever_they_are() {
    let n = 100_000;
    check_fair_shares(&[0, 1, 2, 3], 0, &[1, 3], n);
    check_fair_shares(&[0, 0, 1, 2], 3, &[3], n);
    check_fair_shares(&[1, 1, 1, 2], 1, &[0, 2], n);
}

#[test]
fn a_member_that_unsubscribes_gets_nothing_after_the_pong_and_nothing_is_lost() {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    // The leaving member shares its core with another, so messages drawn
    // for that core while it leaves still find a member.
    let mut stay0 = connect11_on(addr, 0);
    let mut leave1 = connect11_on(addr, 1);
    let mut stay1 = connect11_on(addr, 1);
    for m in [&mut stay0, &mut leave1, &mut stay1] {
        m.sub_group(3, "stream.t", "g");
        m.flush_empty();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = stream(addr, "stream.t", &stop);
    // Leave mid-stream: once some messages have arrived.
    let mut before = Vec::new();
    while before.len() < 200 {
        match leave1.recv() {
            Got11::Msg { sid: 3, payload, .. } => before.push(seq_of(&payload)),
            other => panic!("{other:?}"),
        }
    }
    leave1.unsub(3);
    before.extend(seqs(&mut leave1, 3));
    assert!(before.windows(2).all(|w| w[0] < w[1]));
    // The stream goes on for a while after the PONG.
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (p, n) = publisher.join().unwrap();
    let after = leave1.next(Duration::from_millis(300));
    assert_eq!(after, None, "nothing for the member after its UNSUB was answered");
    leave1.flush_empty();
    let last = *before.last().unwrap();
    let (s0, s1) = (seqs(&mut stay0, 3), seqs(&mut stay1, 3));
    let later = s0.iter().chain(&s1).filter(|&&seq| seq > last).count();
    assert!(later > 0, "the stream went on after the member left ({last} of {n})");
    assert_exactly_once(&[before, s0, s1], n);
    assert_eq!(broker.counters().total.queue_undeliverable, 0, "a member was left there");
    drop((stay0, leave1, stay1, p));
    finish(broker);
}

/// How a member leaves mid-stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Leave {
    Unsub,
    Reset,
}

/// A member alone on its core leaves, with `UNSUB` or by vanishing, while
/// messages drawn for it are on their way, and the group's other member is
/// on another core: those messages are handed on to that member, so the
/// group loses none. A group that still has a member on the core of the
/// one that left is served there, and the plain subscriber on the core the
/// messages are handed to gets each message once. The window lasts until
/// the publishing core learns of the departure, so a round may miss it;
/// rounds go on until each way of leaving had messages handed on.
#[test]
fn messages_on_their_way_to_a_member_that_left_go_to_a_member_on_another_core() {
    check_hand_on(roomy_config());
}

/// The same with 1 KiB of staging per pair of cores: about thirty records
/// fill it until the forwarder takes them, so a core handing messages on
/// often finds no room, waits its one turn for its forwarder, and still
/// loses nothing (the links, 64 batches deep, take everything a departure
/// leaves on its way here).
#[test]
fn a_core_handing_messages_on_waits_its_turn_for_staging_room() {
    check_hand_on(Config { cross_core_batch: 1024, ..roomy_config() });
}

/// The rounds of the tests above on a broker started with `config`.
fn check_hand_on(config: Config) {
    let broker = start(config);
    let addr = broker.local_addr();
    // Core 1: the leaving member of g, and the only member of h, so that
    // every message crosses to core 1, with both groups when g drew core 1.
    // Core 2: g's other member and a plain subscriber. The publisher is on
    // core 0, which has neither.
    let mut h1 = connect11_on(addr, 1);
    let (mut g2, mut plain2) = (connect11_on(addr, 2), connect11_on(addr, 2));
    let mut handed = BTreeSet::new();
    for round in 0..16u32 {
        let leave = [Leave::Unsub, Leave::Reset][round as usize % 2];
        let (topic, sid) = (format!("handed.{round}"), round + 1);
        h1.sub_group(sid, &topic, "h");
        g2.sub_group(sid, &topic, "g");
        plain2.sub(sid, &topic);
        for c in [&mut h1, &mut g2, &mut plain2] {
            c.flush_empty();
        }
        let mut leaving = connect11_on(addr, 1);
        leaving.sub_group(1, &topic, "g");
        leaving.flush_empty();
        let before = broker.counters().total;
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = stream(addr, &topic, &stop);
        let mut got = Vec::new();
        while got.len() < 300 {
            got.push(next_seq(&mut leaving, 1));
        }
        let stayed = match leave {
            Leave::Unsub => {
                leaving.unsub(1);
                got.extend(seqs(&mut leaving, 1));
                Some(leaving)
            }
            Leave::Reset => {
                leaving.reset();
                None
            }
        };
        thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let (p, n) = publisher.join().unwrap();
        // After the publisher's PONG every message reached core 1 and 2;
        // those handed on may still be between them. `msgs_out` counts
        // what was queued, also for a member that vanished unread.
        let after = wait_counters(&broker, "every message delivered or counted", |c| {
            let lost = c.queue_undeliverable - before.queue_undeliverable;
            c.msgs_out - before.msgs_out + lost >= 3 * n
        });
        let what = format!("round {round} ({leave:?}), {n} published");
        assert_eq!(after.queue_undeliverable, before.queue_undeliverable, "{what}: lost some");
        assert_eq!(after.msgs_out - before.msgs_out, 3 * n, "{what}: one to h, g and plain");
        assert!(seqs(&mut h1, sid).into_iter().eq(0..n), "{what}: h served on core 1");
        assert!(seqs(&mut plain2, sid).into_iter().eq(0..n), "{what}: plain got each once");
        let g = unordered(&mut g2, sid);
        if let Some(mut leaving) = stayed {
            assert_eq!(leaving.next(Duration::from_millis(50)), None, "{what}: after UNSUB");
            assert_exactly_once(&[got, g], n);
        } else {
            assert_eq!(g.iter().collect::<BTreeSet<_>>().len(), g.len(), "{what}: g twice");
        }
        if after.queue_redrawn > before.queue_redrawn {
            handed.insert(leave);
            if handed.len() == 2 {
                break;
            }
        }
        drop(p);
    }
    assert!(!handed.is_empty(), "no round handed a message on: queue_redrawn stayed 0");
    drop((h1, g2, plain2));
    finish(broker);
}

/// The group's last member, alone on its core, leaves while messages drawn
/// for it are on their way: those are lost to the group and counted, and
/// reach nobody else: not a member of the same name on another topic, nor
/// (twice) the members of another group or a plain subscriber. The member
/// never sees one after its `PONG`. The window is short, so a round may
/// miss it (on a loaded machine, several in a row); some round of up to 40
/// hits.
#[test]
fn messages_on_their_way_to_the_last_member_anywhere_are_counted_and_reach_nobody() {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    let mut elsewhere2 = connect11_on(addr, 2);
    let mut plain2 = connect11_on(addr, 2);
    let mut h3 = connect11_on(addr, 3);
    let mut hit = false;
    for round in 0..40u32 {
        let (topic, sid) = (format!("gone.{round}"), round + 1);
        elsewhere2.sub_group(sid, &format!("other.{round}"), "g");
        plain2.sub(sid, &topic);
        h3.sub_group(sid, &topic, "h");
        for c in [&mut elsewhere2, &mut plain2, &mut h3] {
            c.flush_empty();
        }
        let mut member = connect11_on(addr, 1);
        member.sub_group(1, &topic, "g");
        member.flush_empty();
        let before = broker.counters().total;
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = stream(addr, &topic, &stop);
        let mut got = Vec::new();
        while got.len() < 1000 {
            got.push(next_seq(&mut member, 1));
        }
        member.unsub(1);
        got.extend(seqs(&mut member, 1));
        thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let (p, published) = publisher.join().unwrap();
        assert_eq!(member.next(Duration::from_millis(50)), None, "round {round}");
        // What the member got is a gapless prefix of the stream: nothing
        // was drawn elsewhere, so nothing between was lost or reordered.
        assert!(got.iter().copied().eq(0..got.len() as u64), "round {round}");
        for c in [&mut plain2, &mut h3] {
            assert!(seqs(c, sid).into_iter().eq(0..published), "round {round}: each once");
        }
        elsewhere2.flush_empty();
        let after = broker.counters().total;
        assert_eq!(after.queue_redrawn, before.queue_redrawn, "round {round}: nobody to take it");
        let lost = after.queue_undeliverable - before.queue_undeliverable;
        assert!(got.len() as u64 + lost <= published, "round {round}");
        drop((member, p));
        if lost > 0 {
            hit = true;
            break;
        }
    }
    assert!(hit, "no round lost a message in flight: queue_undeliverable stayed 0");
    drop((elsewhere2, plain2, h3));
    finish(broker);
}

#[test]
fn groups_span_patterns_and_headers_reach_members_on_other_cores() {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    // One group, three patterns: a member of "w" gets a message only if its
    // own pattern matches, and each message reaches one member.
    let (mut star0, mut exact1) = one_per_core(addr);
    let mut tail1 = connect11_on(addr, 1);
    star0.sub_group(1, "orders.*", "w");
    exact1.sub_group(1, "orders.eu", "w");
    tail1.sub_group(1, "orders.>", "w");
    for c in [&mut star0, &mut exact1, &mut tail1] {
        c.flush_empty();
    }
    let mut p = connect11_on(addr, 0);
    let topics = ["orders.eu", "orders.us", "orders.eu.x"];
    let n = 300;
    for seq in 0..n {
        p.publish(topics[(seq % 3) as usize], &seq_payload(seq, 0));
    }
    let block = trace_block();
    p.hpub("orders.eu.y", block.headers(), &seq_payload(n, 0), false);
    p.flush_empty();
    let topic_of = |seq: u64| if seq == n { "orders.eu.y" } else { topics[(seq % 3) as usize] };
    let mut shares = Vec::new();
    for (c, pattern) in
        [(&mut star0, "orders.*"), (&mut exact1, "orders.eu"), (&mut tail1, "orders.>")]
    {
        let mut mine = Vec::new();
        for got in c.flush() {
            let (topic, payload) = match got {
                Got11::Msg { topic, payload, .. } => (topic, payload),
                Got11::HMsg { topic, headers, payload, .. } => {
                    assert_eq!(headers, block.headers().as_bytes(), "headers across cores");
                    (topic, payload)
                }
                other => panic!("{other:?}"),
            };
            let seq = seq_of(&payload);
            assert_eq!(topic, topic_of(seq), "the published topic, not the pattern");
            let matches = match pattern {
                "orders.*" => topic.split('.').count() == 2,
                "orders.eu" => topic == "orders.eu",
                _ => true,
            };
            assert!(matches, "{pattern} got {topic}");
            mine.push(seq);
        }
        shares.push(mine);
    }
    assert!(shares[2].contains(&n), "only orders.> matches orders.eu.y");
    assert!(shares.iter().all(|s| !s.is_empty()), "every member got some: {shares:?}");
    assert_exactly_once(&shares, n + 1);
    drop((star0, exact1, tail1, p));
    finish(broker);
}

#[test]
fn no_echo_leaves_the_publishers_own_members_out_of_the_draw() {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    let mut quiet = Client11::connect(addr, true);
    quiet.sub_group(1, "svc.q", "g");
    quiet.flush_empty();
    // Its own member is the group's only one: a request finds nobody.
    quiet.request("svc.q", "_INBOX.q1", b"");
    assert_eq!(quiet.flush(), vec![no_responders("svc.q", "_INBOX.q1")]);
    let mut other = connect11_not_on(addr, quiet.core_id, false);
    other.sub_group(1, "svc.q", "g");
    other.flush_empty();
    quiet.request("svc.q", "_INBOX.q2", &seq_payload(0, 0));
    assert!(quiet.flush().is_empty(), "a member elsewhere responds");
    assert_eq!(seqs(&mut other, 1), [0]);
    let n = 200;
    publish_seqs(&mut quiet, "svc.q", 0..n);
    quiet.request("svc.q", "_INBOX.q3", &seq_payload(n, 0));
    quiet.flush_empty();
    let got = seqs(&mut other, 1);
    assert_eq!(got, (0..=n).collect::<Vec<_>>(), "every message and the request");
    drop((quiet, other));
    finish(broker);
}

/// Members on one core, one of which stops reading: it is passed over
/// while another member has room, so it is never cut, and nothing is lost.
#[test]
fn a_stalled_member_is_passed_over_instead_of_cut() {
    let broker = start(Config { max_pending: 128 << 10, ..test_config(1) });
    let addr = broker.local_addr();
    let mut stalled = Client11::connect_tight(addr);
    stalled.sub_group(1, "work", "g");
    stalled.flush_empty();
    let mut reader = Client11::connect(addr, false);
    reader.sub_group(1, "work", "g");
    reader.flush_empty();
    let n: u64 = 20_000;
    let done = Arc::new(AtomicBool::new(false));
    let reading = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match reader.next(Duration::from_millis(100)) {
                    Some(Got11::Msg { payload, .. }) => got.push(seq_of(&payload)),
                    Some(other) => panic!("{other:?}"),
                    None if done.load(Ordering::Relaxed) => break,
                    None => {}
                }
            }
            got.extend(seqs(&mut reader, 1));
            (reader, got)
        })
    };
    let mut p = Client11::connect(addr, false);
    for seq in 0..n {
        p.publish("work", &seq_payload(seq, 100));
    }
    p.flush_empty();
    done.store(true, Ordering::Relaxed);
    let (reader, read) = reading.join().unwrap();
    let c = broker.counters().total;
    assert_eq!(c.slow_consumer_closes, 0, "the stalled member was cut: {c:#?}");
    let held = seqs(&mut stalled, 1);
    assert!(held.len() < read.len(), "the reader took most: {} vs {}", held.len(), read.len());
    assert_exactly_once(&[held, read], n);
    drop((stalled, reader, p));
    finish(broker);
}

/// Two hundred connections subscribe with wildcards and queue groups on
/// every core and then vanish with a reset: the counters go back to idle,
/// and no core keeps interest for them (a request finds nobody, and a
/// publish crosses to no core).
#[test]
fn connections_with_patterns_and_groups_that_vanish_leave_nothing_behind() {
    let broker = start(test_config(4));
    let addr = broker.local_addr();
    let topics = ["storm.a", "storm.b.c", "storm.d"];
    let patterns = ["storm.*", "storm.>", "*.b.*", "storm.a", ">"];
    let mut conns = Vec::new();
    for i in 0..200usize {
        let mut c = Client11::connect(addr, i % 3 == 0);
        for (sid, pattern) in (1..).zip(patterns.iter().skip(i % 2).take(3)) {
            match (i + sid as usize) % 3 {
                0 => c.sub(sid, pattern),
                g => c.sub_group(sid, pattern, ["", "g1", "g2"][g]),
            }
        }
        c.flush_empty();
        conns.push(c);
    }
    let mut p = connect11_on(addr, 0);
    p.publish("storm.a", b"x");
    p.flush_empty();
    let busy = broker.counters().total;
    assert_eq!(busy.subscriptions, 600);
    assert!(busy.cross_core_sent > 0, "subscribers on several cores: {busy:#?}");
    for c in conns {
        c.reset();
    }
    drop(p);
    let idle = wait_idle(&broker);
    assert_eq!(idle.connections_open, 0);
    // Each core told the others before its subscriptions counter reached
    // zero; a flush on each core waits until they applied it.
    let mut ps: Vec<Client11> = (0..4).map(|core| connect11_on(addr, core)).collect();
    ps.iter_mut().for_each(Client11::flush_empty);
    let sent = broker.counters().total.cross_core_sent;
    for p in &mut ps {
        for topic in topics {
            p.publish(topic, b"y");
            let reply_to = format!("_INBOX.{topic}");
            p.request(topic, &reply_to, b"");
            assert_eq!(p.flush(), vec![no_responders(topic, &reply_to)]);
        }
    }
    assert_eq!(broker.counters().total.cross_core_sent, sent, "no core kept interest");
    drop(ps);
    finish(broker);
}

/// The groups a topic reaches are named by the name alone: members of one
/// name under different topics are one group where their patterns meet,
/// and different names are different groups.
#[test]
fn a_group_is_its_name_and_different_names_each_get_a_copy() {
    let broker = start(roomy_config());
    let addr = broker.local_addr();
    let mut m = BTreeMap::new();
    for (i, group) in ["a", "a", "b", "c"].into_iter().enumerate() {
        let mut c = connect11_on(addr, (i % 2) as u16);
        c.sub_group(1, "named.>", group);
        c.flush_empty();
        m.entry(group).or_insert_with(Vec::new).push(c);
    }
    let mut p = connect11_on(addr, 0);
    let n = 100;
    publish_seqs(&mut p, "named.x", 0..n);
    p.flush_empty();
    for members in m.values_mut() {
        let shares: Vec<Vec<u64>> = members.iter_mut().map(|c| seqs(c, 1)).collect();
        assert_exactly_once(&shares, n);
    }
    assert_eq!(m["a"].len(), 2);
    drop((m, p));
    finish(broker);
}
