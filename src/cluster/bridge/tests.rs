//! The bridge's state machine without Redis: rounds taken by hand, frames
//! and announcements fed as bytes.

use super::*;
use crate::mesh::record::Publisher;

fn bridge(max_batch: usize) -> Bridge {
    let cfg = ClusterConfig { max_batch, ..ClusterConfig::new("redis://127.0.0.1:1") };
    let me = Me { name: "a".into(), incarnation: 1, max_frame: 1 << 20 };
    let mut b = Bridge::new(cfg, me, Arc::new(ClusterCounters::default()), 1, 1 << 16);
    b.up();
    b.next_round().expect("the first round writes the snapshot");
    b
}

fn snapshot(incarnation: u64, items: &[&str]) -> Snapshot {
    let items = items.iter().map(|f| (Box::<str>::from(*f), 1)).collect();
    Snapshot { incarnation, seq: 1, max_frame: 0, items }
}

fn presence(name: &str, incarnation: u64) -> Presence<'_> {
    Presence { node: NodeId { name, incarnation }, interest_seq: 1, max_frame: 0 }
}

fn announce(b: &mut Bridge, a: Announce<'_>) {
    let mut body = Vec::new();
    a.encode(&mut body);
    b.on_announce(&body, Instant::now());
}

fn publish(b: &mut Bridge, payload: &[u8]) {
    b.on_core_record(0, Record::Publish { topic: "t", reply_to: "", requester: 0, payload });
}

/// A frame from `from` (run `incarnation`) to this bridge, in its path or
/// aside, holding `records`.
fn frame(from: NodeId<'_>, path: (bool, u64, u64), records: &[wire::Record<'_>]) -> Vec<u8> {
    let (in_path, path_seq, bytes_before) = path;
    let header = wire::FrameHeader {
        origin: from,
        in_path,
        to_incarnation: 1,
        path_seq,
        msgs_before: 0,
        bytes_before,
        interest_seq: 0,
    };
    let mut buf = Vec::new();
    wire::put_header(&mut buf, &header);
    for r in records {
        r.encode(&mut buf);
    }
    buf
}

/// A peer forgotten with an open frame takes the frame's bytes out of the
/// window: churn of peers never fills it.
#[test]
fn forgetting_peers_with_open_frames_leaves_the_window_empty() {
    let mut b = bridge(64 << 10);
    for round in 0..200u64 {
        let inc = 100 + round;
        b.joined_from_registry("b", snapshot(inc, &["p t"]), Instant::now());
        publish(&mut b, &[0; 20_000]);
        assert!(b.open_bytes > 0);
        announce(&mut b, Announce::Bye(presence("b", inc)));
        assert_eq!(b.peers.len(), 0);
    }
    assert!(b.ready.is_empty() && b.in_flight == 0 && b.ready_bytes == 0);
    assert_eq!(b.open_bytes, 0);
    assert!(!b.window_full());
    assert_eq!(b.counters.snapshot().out_dropped_peer_gone, 200);
}

/// Redis's answer for frames to a run that a new run replaced (at the
/// same slab key) does not count against the new run.
#[test]
fn answers_about_an_old_run_spare_the_new_one() {
    let mut b = bridge(1024);
    b.joined_from_registry("b", snapshot(7, &["p t"]), Instant::now());
    publish(&mut b, &[0; 1000]);
    publish(&mut b, &[0; 1000]);
    let round = b.next_round().expect("frames");
    assert_eq!(round.frames.len(), 2);
    announce(&mut b, Announce::Hello(presence("b", 8)));
    assert_eq!(b.peers.len(), 1);
    b.round_done(&round, (true, &[0, 0]));
    assert_eq!(b.peers.len(), 1, "run 8 was forgotten for run 7's frames");
}

/// A frame whose counts are at their maximum is taken in, not a panic.
#[test]
fn a_frame_with_counts_at_their_maximum_does_not_panic() {
    let mut b = bridge(1024);
    let evil = NodeId { name: "evil", incarnation: 9 };
    b.on_frame(&frame(evil, (true, u64::MAX, u64::MAX - 10), &[]), Instant::now());
    b.on_frame(&frame(evil, (true, u64::MAX, u64::MAX), &[]), Instant::now());
}

/// A queue group copy the bridge has no node for any more is counted.
#[test]
fn a_group_copy_with_nowhere_to_go_is_counted() {
    let mut b = bridge(1024);
    let mut names = Vec::new();
    GroupNames::push(&mut names, "g");
    let no_echo = Some(Publisher { core: 0, key: 1 });
    let handoff = Handoff { groups: GroupNames::from_encoded(&names), redrawn: false, no_echo };
    let record = Record::QueuePublish {
        topic: "t",
        reply_to: "",
        requester: 0,
        headers: None,
        handoff,
        payload: b"x",
    };
    b.on_core_record(0, record);
    assert_eq!(b.counters.snapshot().queue_undeliverable, 1);
}

/// Late frames and announcements of a run that said goodbye do not bring
/// it back; a new run of the same name is welcome.
#[test]
fn a_run_that_left_stays_gone() {
    let mut b = bridge(1024);
    announce(&mut b, Announce::Hello(presence("b", 5)));
    assert_eq!(b.peers.len(), 1);
    announce(&mut b, Announce::Bye(presence("b", 5)));
    assert_eq!(b.peers.len(), 0);
    let old = NodeId { name: "b", incarnation: 5 };
    b.on_frame(&frame(old, (true, 0, 0), &[]), Instant::now());
    announce(&mut b, Announce::Alive(presence("b", 5)));
    assert_eq!(b.peers.len(), 0, "the old run came back");
    assert_eq!(b.counters.snapshot().in_dropped_stale, 1);
    announce(&mut b, Announce::Hello(presence("b", 6)));
    assert_eq!(b.peers.len(), 1);
    // A frame of another run than the one known does not replace it.
    let other = NodeId { name: "b", incarnation: 4 };
    b.on_frame(&frame(other, (true, 0, 0), &[]), Instant::now());
    assert_eq!(b.peers.len(), 1);
    assert_eq!(b.counters.snapshot().in_dropped_stale, 2);
}

/// A path sends while below its credit; past it, frames wait (and the
/// window fills, which holds the cores) until the receiver grants more.
#[test]
fn frames_wait_for_credit_and_go_when_it_comes() {
    let mut b = bridge(32 << 10);
    b.joined_from_registry("b", snapshot(7, &["p t"]), Instant::now());
    let mut sent = 0;
    for _ in 0..64 {
        publish(&mut b, &[1; 16 << 10]);
        if let Some(round) = b.next_round() {
            sent += round.bytes;
            b.round_done(&round, (true, &vec![1; round.frames.len()]));
        }
    }
    let initial = peers::INITIAL_CREDIT as usize;
    assert!(sent >= initial && sent < initial + (64 << 10), "sent {sent} with credit {initial}");
    assert!(!b.ready.is_empty(), "frames wait for credit");
    assert!(b.next_round().is_none(), "nothing may go");
    let from = NodeId { name: "b", incarnation: 7 };
    let credit = wire::Record::Credit { limit: 1 << 30 };
    b.on_frame(&frame(from, (false, 0, 0), &[credit]), Instant::now());
    let round = b.next_round().expect("the credit lets the frames go");
    assert!(!round.frames.is_empty());
    assert!(b.ready.is_empty());
}

/// Taking in a peer's frames grants it credit, sent aside in the next
/// round even while this node's own frames to it wait for credit: two
/// nodes that wait for each other still hear each other.
#[test]
fn credit_goes_aside_while_the_path_waits() {
    let mut b = bridge(32 << 10);
    b.joined_from_registry("b", snapshot(7, &["p t"]), Instant::now());
    for _ in 0..64 {
        publish(&mut b, &[1; 16 << 10]);
        if let Some(round) = b.next_round() {
            b.round_done(&round, (true, &vec![1; round.frames.len()]));
        }
    }
    assert!(!b.ready.is_empty(), "this node's path to b waits for credit");
    let from = NodeId { name: "b", incarnation: 7 };
    b.on_frame(&frame(from, (true, 0, 0), &[]), Instant::now());
    let round = b.next_round().expect("a credit to send");
    assert_eq!(round.frames.len(), 1);
    let sent = Frame::decode(&round.frames[0].frame).expect("a frame");
    assert!(!sent.header.in_path);
    assert!(matches!(sent.records().next(), Some(Ok(wire::Record::Credit { .. }))));
    assert!(!b.ready.is_empty(), "the waiting frames still wait");
}

/// A peer whose inbox nobody read twice is forgotten, but it may only be
/// reconnecting: its next announcement brings it back.
#[test]
fn a_peer_forgotten_for_an_unread_inbox_comes_back() {
    let mut b = bridge(1024);
    b.joined_from_registry("b", snapshot(7, &["p t"]), Instant::now());
    for _ in 0..2 {
        publish(&mut b, &[0; 10]);
        let round = b.next_round().expect("a frame");
        b.round_done(&round, (true, &[0]));
    }
    assert_eq!(b.peers.len(), 0);
    announce(&mut b, Announce::Alive(presence("b", 7)));
    assert_eq!(b.peers.len(), 1);
}

/// Whatever names appear on Redis, the peers kept are bounded.
#[test]
fn the_peers_kept_are_bounded() {
    let mut b = bridge(1024);
    for n in 0..peers::MAX_PEERS + 50 {
        let name = format!("n{n}");
        announce(&mut b, Announce::Hello(presence(&name, 1)));
    }
    assert_eq!(b.peers.len(), peers::MAX_PEERS);
}
