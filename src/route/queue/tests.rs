use std::{collections::BTreeMap, time::Instant};

use super::*;
use crate::{core::slot::Session, mesh::record::Publisher, route::topics::Topics};

/// A table and the slots of its members, all open.
struct Fixture {
    topics: Topics,
    slots: Slab<Slot>,
}

impl Fixture {
    fn new() -> Self {
        Self { topics: Topics::default(), slots: Slab::new() }
    }

    /// An open connection's first subscription to `topic`, a member of
    /// `group` if given.
    fn subscribe(&mut self, topic: &str, group: Option<&str>) -> LocalSub {
        let mut slot = Slot::new(0, "127.0.0.1:1".parse().expect("an address"), Instant::now());
        slot.open(Session::default(), "");
        let sub = LocalSub { key: self.slots.insert(slot), sid: 1, lossy: false, hmsg: false };
        self.topics.add_local(topic, group, sub);
        sub
    }
}

fn names(list: &[&str]) -> Vec<u8> {
    let mut buf = Vec::new();
    list.iter().for_each(|name| GroupNames::push(&mut buf, name));
    buf
}

fn handoff(groups: &[u8], redrawn: bool) -> Handoff<'_> {
    Handoff { groups: GroupNames::from_encoded(groups), redrawn, no_echo: None }
}

fn room() -> Room {
    Room::new(64, 1 << 20)
}

fn keys(subs: &[LocalSub]) -> Vec<usize> {
    subs.iter().map(|s| s.key).collect()
}

fn cores(set: &CoreSet) -> Vec<usize> {
    set.iter().collect()
}

#[test]
fn a_group_with_a_member_here_is_served_here() {
    let mut f = Fixture::new();
    let plain = f.subscribe("t", None);
    let member = f.subscribe("t", Some("g"));
    f.topics.set_remote_members("t", "g", 2, 5);
    let groups = names(&["g"]);
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    let t = q.serve(topics.get("t"), (handoff(&groups, false), open()), slots, |_| true, room());
    assert_eq!(keys(t.local), [plain.key, member.key]);
    assert!(t.remote.is_empty());
    assert_eq!((t.undeliverable, t.redrawn, t.stuck), (0, 0, 0));
}

#[test]
fn an_orphaned_group_is_drawn_again_for_another_core_and_the_rest_served_here() {
    let mut f = Fixture::new();
    let plain = f.subscribe("t", None);
    let h_member = f.subscribe("t", Some("h"));
    // Group g: members on cores 0 and 3 only, none here any more.
    f.topics.set_remote_members("t", "g", 0, 1);
    f.topics.set_remote_members("t", "g", 3, 2);
    let groups = names(&["g", "h"]);
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    let mut seen = BTreeMap::new();
    for _ in 0..3000 {
        let t =
            q.serve(topics.get("t"), (handoff(&groups, false), open()), slots, |_| true, room());
        assert_eq!(keys(t.local), [plain.key, h_member.key], "plain and h served here");
        assert_eq!((t.undeliverable, t.redrawn, t.stuck), (0, 1, 0));
        let remote = cores(&t.remote);
        assert_eq!(remote.len(), 1, "one core: {remote:?}");
        let core = remote[0];
        assert_eq!(t.handed.to(core).iter().collect::<Vec<_>>(), ["g"], "only g goes on");
        *seen.entry(core).or_insert(0u32) += 1;
    }
    // Weighted by members: a third to core 0, two thirds to core 3.
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [0, 3]);
    assert!((850..1150).contains(&seen[&0]), "core 0 drawn {} of 3000", seen[&0]);
}

#[test]
fn a_redrawn_message_is_not_handed_on_again_nor_given_to_plain_subscribers() {
    let mut f = Fixture::new();
    f.subscribe("t", None);
    f.topics.set_remote_members("t", "g", 3, 2);
    let groups = names(&["g"]);
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    let t = q.serve(topics.get("t"), (handoff(&groups, true), open()), slots, |_| true, room());
    assert!(t.local.is_empty(), "plain subscribers had their copy");
    assert!(t.remote.is_empty());
    assert_eq!((t.undeliverable, t.redrawn, t.stuck), (1, 0, 0));
}

#[test]
fn a_redrawn_message_reaches_a_member_but_not_plain_subscribers() {
    let mut f = Fixture::new();
    f.subscribe("t", None);
    let member = f.subscribe("t", Some("g"));
    let groups = names(&["g"]);
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    let t = q.serve(topics.get("t"), (handoff(&groups, true), open()), slots, |_| true, room());
    assert_eq!(keys(t.local), [member.key]);
    assert_eq!((t.undeliverable, t.redrawn, t.stuck), (0, 0, 0));
}

#[test]
fn without_a_member_elsewhere_or_room_to_reach_one_the_message_is_counted() {
    let mut f = Fixture::new();
    f.subscribe("t", Some("h"));
    // g has members elsewhere, but on another topic only.
    f.topics.set_remote_members("other", "g", 2, 4);
    let groups = names(&["g"]);
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    let t = q.serve(topics.get("t"), (handoff(&groups, false), open()), slots, |_| true, room());
    assert!(t.local.is_empty() && t.remote.is_empty());
    assert_eq!((t.undeliverable, t.redrawn, t.stuck), (1, 0, 0));
    // No entry for the topic at all.
    let t = q.serve(topics.get("none"), (handoff(&groups, false), open()), slots, |_| true, room());
    assert_eq!((t.undeliverable, t.redrawn, t.stuck), (1, 0, 0));
    // Members on core 2, whose staging is full: drawn among the others.
    topics.set_remote_members("t", "g", 2, 4);
    topics.set_remote_members("t", "g", 1, 1);
    for _ in 0..50 {
        let t =
            q.serve(topics.get("t"), (handoff(&groups, false), open()), slots, |c| c != 2, room());
        assert_eq!(cores(&t.remote), [1]);
    }
    let t = q.serve(topics.get("t"), (handoff(&groups, false), open()), slots, |_| false, room());
    assert!(t.remote.is_empty());
    assert_eq!((t.undeliverable, t.redrawn, t.stuck), (1, 0, 1));
}

#[test]
fn the_publishers_own_member_is_passed_over_when_the_message_comes_back() {
    let mut f = Fixture::new();
    let own = f.subscribe("t", Some("g"));
    let groups = names(&["g"]);
    let no_echo = Some(Publisher { core: 0, key: own.key });
    let back = Handoff { no_echo, ..handoff(&groups, true) };
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    let skip = back.skip_on(0);
    let t = q.serve(topics.get("t"), (back, Barred { skip, topic: "t" }), slots, |_| true, room());
    assert!(t.local.is_empty(), "no echo holds after the second draw");
    assert_eq!(t.undeliverable, 1);
    let t = q.serve(topics.get("t"), (back, open()), slots, |_| true, room());
    assert_eq!(keys(t.local), [own.key]);
}

#[test]
fn nth_core_lines_cores_up_by_weight() {
    let weights = [(4, 2), (7, 0), (9, 3)];
    let at = |n| nth_core(weights.iter().copied(), n);
    assert_eq!([at(0), at(1), at(2), at(4), at(5)], [Some(4), Some(4), Some(9), Some(9), None]);
}

/// Who can be drawn is counted once per batch; after a recount a member
/// that closed meanwhile is drawn no more, and the other takes every
/// message.
#[test]
fn a_recount_leaves_a_member_that_closed_during_the_batch_out_of_the_draw() {
    let mut f = Fixture::new();
    let (a, b) = (f.subscribe("t", Some("g")), f.subscribe("t", Some("g")));
    let Fixture { topics, slots } = &mut f;
    let entry = topics.get("t").expect("the topic");
    let mut q = Queues::default();
    q.begin_batch();
    let drawn: Vec<usize> =
        (0..64).map(|_| keys(q.draw(entry, slots, open(), room()).local)[0]).collect();
    assert!(drawn.contains(&a.key) && drawn.contains(&b.key), "{drawn:?}");
    slots[a.key].close();
    q.recount();
    for _ in 0..64 {
        assert_eq!(keys(q.draw(entry, slots, open(), room()).local), [b.key]);
    }
}

/// A draw for another topic without a new batch would use the first
/// topic's lists; it is caught where the groups differ in number.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "draw outside its batch")]
fn a_draw_outside_its_batch_is_caught() {
    let mut f = Fixture::new();
    f.subscribe("t", Some("g"));
    f.subscribe("t", Some("h"));
    f.subscribe("u", Some("g"));
    let Fixture { topics, slots } = &mut f;
    let mut q = Queues::default();
    q.begin_batch();
    let _ = q.draw(topics.get("t").expect("t"), slots, open(), room());
    let _ = q.draw(topics.get("u").expect("u"), slots, open(), room());
}

/// Nobody barred: no echo not asked for, no deny rule.
fn open() -> Barred<'static> {
    Barred { skip: None, topic: "t" }
}
