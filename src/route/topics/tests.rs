use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::route::sublist::CACHE_CAPACITY;

fn sub(key: usize, sid: u32) -> LocalSub {
    LocalSub { key, sid, lossy: false, hmsg: false }
}

/// A result as sorted plain subscriptions (key, sid), sorted plain cores,
/// and per group name its sorted members here and member count per core,
/// so that results compare regardless of order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Normal {
    local: Vec<Id>,
    remote: Vec<usize>,
    groups: BTreeMap<String, NormalGroup>,
}

/// A subscription's (key, sid).
type Id = (usize, u32);

/// A group's members here, sorted, and its member count per other core.
type NormalGroup = (Vec<Id>, BTreeMap<usize, u32>);

fn ids(subs: &[LocalSub]) -> Vec<(usize, u32)> {
    let mut ids: Vec<_> = subs.iter().map(|s| (s.key, s.sid)).collect();
    ids.sort_unstable();
    ids
}

fn normal(entry: Option<&TopicEntry>) -> Normal {
    let Some(e) = entry else { return Normal::default() };
    let mut groups = BTreeMap::new();
    for g in e.groups() {
        let remote: BTreeMap<usize, u32> = g.remote().collect();
        assert_eq!(remote.len(), g.remote().count(), "group {} lists a core twice", g.name());
        assert!(remote.values().all(|&n| n > 0), "group {} has a core with 0", g.name());
        assert!(!g.local().is_empty() || !remote.is_empty(), "group {} is empty", g.name());
        let total: u64 = remote.values().map(|&n| u64::from(n)).sum();
        assert_eq!(g.remote_members(), total);
        let old = groups.insert(g.name().to_string(), (ids(g.local()), remote));
        assert!(old.is_none(), "group {} twice", g.name());
    }
    Normal { local: ids(e.local()), remote: e.remote().iter().collect(), groups }
}

#[test]
fn plain_interest_follows_the_first_and_last_local_sub() {
    let mut t = Topics::default();
    assert_eq!(t.add_local("a", None, sub(1, 1)), Change::Plain(true));
    assert_eq!(t.add_local("a", None, sub(2, 1)), Change::Quiet);
    assert_eq!(t.remove_local("a", None, 1, 1), Change::Quiet);
    assert_eq!(t.remove_local("a", None, 1, 1), Change::Quiet, "already gone");
    assert_eq!(t.remove_local("a", None, 2, 1), Change::Plain(false));
    assert!(t.table().is_empty(), "unused entries are removed");
}

#[test]
fn members_are_counted_per_group_and_pattern_apart_from_plain_interest() {
    let mut t = Topics::default();
    assert_eq!(t.add_local("a.*", Some("w"), sub(1, 1)), Change::Members(1));
    assert_eq!(t.add_local("a.*", Some("w"), sub(2, 1)), Change::Members(2));
    assert_eq!(t.add_local("a.*", Some("v"), sub(2, 2)), Change::Members(1));
    assert_eq!(t.add_local("a.*", None, sub(3, 1)), Change::Plain(true), "groups are not plain");
    assert_eq!(t.remove_local("a.*", Some("v"), 2, 1), Change::Quiet, "2/1 is in w, not v");
    assert_eq!(t.remove_local("a.*", Some("w"), 1, 1), Change::Members(1));
    assert_eq!(t.remove_local("a.*", Some("w"), 2, 1), Change::Members(0));
    assert_eq!(t.remove_local("a.*", Some("v"), 2, 2), Change::Members(0));
    let e = normal(t.get("a.x"));
    assert_eq!((e.local, e.groups.len()), (vec![(3, 1)], 0));
    assert_eq!(t.remove_local("a.*", None, 3, 1), Change::Plain(false));
    assert!(t.table().is_empty());
}

#[test]
fn remote_interest_keeps_entries_alive() {
    let mut t = Topics::default();
    t.set_remote("a", 3, true);
    t.add_local("a", None, sub(1, 7));
    t.remove_local("a", None, 1, 7);
    assert_eq!(normal(t.get("a")).remote, vec![3]);
    t.set_remote_members("a", "w", 2, 4);
    t.set_remote("a", 3, false);
    let e = normal(t.get("a"));
    assert!(e.remote.is_empty());
    assert_eq!(e.groups["w"], (vec![], BTreeMap::from([(2, 4)])));
    t.set_remote_members("a", "w", 2, 0);
    assert!(t.get("a").is_none());
    assert!(t.table().is_empty());
}

#[test]
fn wildcards_match_locally_and_remotely_once_per_core() {
    let mut t = Topics::default();
    t.add_local("a.*", None, sub(1, 1));
    t.add_local("a.>", None, sub(1, 2));
    t.add_local("a.b", None, sub(2, 1));
    t.set_remote("a.>", 2, true);
    t.set_remote("*.b", 2, true);
    t.set_remote("x.>", 1, true);
    let e = normal(t.get("a.b"));
    assert_eq!(e.local, [(1, 1), (1, 2), (2, 1)], "each matching subscription once");
    assert_eq!(e.remote, [2]);
    assert_eq!(normal(t.get("a.b.c")).local, [(1, 2)]);
    assert!(t.get("b.c").is_none());
}

#[test]
fn groups_merge_by_name_across_patterns_with_member_counts_summed() {
    let mut t = Topics::default();
    t.add_local("orders.*", Some("w"), sub(1, 1));
    t.add_local("orders.eu", Some("w"), sub(2, 1));
    t.set_remote_members("orders.>", "w", 1, 2);
    t.set_remote_members("orders.eu", "w", 1, 3);
    t.set_remote_members("orders.*", "v", 2, 1);
    let e = normal(t.get("orders.eu"));
    let w = (vec![(1, 1), (2, 1)], BTreeMap::from([(1, 5)]));
    let v = (vec![], BTreeMap::from([(2, 1)]));
    assert_eq!(e.groups, BTreeMap::from([("v".into(), v), ("w".into(), w)]));
    let e = normal(t.get("orders.us.x"));
    assert_eq!(e.groups, BTreeMap::from([("w".into(), (vec![], BTreeMap::from([(1, 2)])))]));
    let entry = t.get("orders.eu").expect("members");
    assert_eq!(entry.group("v").map(|g| g.remote_members()), Some(1));
    assert!(entry.group("x").is_none());
}

#[test]
fn an_exact_topic_is_one_lookup_that_lends_its_entry() {
    let mut t = Topics::default();
    t.add_local("t", None, sub(1, 1));
    t.set_remote("t", 1, true);
    let first: *const TopicEntry = t.get("t").expect("subscribed");
    assert!(std::ptr::eq(first, t.get("t").expect("subscribed")));
    assert_eq!(t.table().cached(), 0, "nothing was merged or cached");
}

/// The property test: random local subscriptions (plain and queued),
/// other cores' interest (plain and member counts) and lookups, against
/// lists matched by brute force.
mod property {
    use super::*;

    /// Random cases; each is one table driven through `OPS` operations,
    /// then emptied. A failure names its seed; the run is deterministic.
    const CASES: u64 = 400;
    const OPS: usize = 300;
    const TOKENS: [&str; 3] = ["a", "b", "c"];
    const GROUPS: [&str; 2] = ["q1", "q2"];
    const CORES: usize = 3;

    /// A local subscription: pattern, group, (key, sid).
    type Local = (String, Option<&'static str>, (usize, u32));

    /// The reference: every subscription and every piece of interest in
    /// lists, matched one by one.
    #[derive(Default)]
    struct Model {
        local: Vec<Local>,
        /// (pattern, core) with plain subscriptions there.
        remote: BTreeSet<(String, usize)>,
        /// (pattern, group, core) → members there.
        members: BTreeMap<(String, &'static str, usize), u32>,
    }

    impl Model {
        fn matching(&self, topic: &str) -> Normal {
            let mut out = Normal::default();
            for (_, group, id) in self.local.iter().filter(|l| matches(&l.0, topic)) {
                match group {
                    None => out.local.push(*id),
                    Some(g) => out.groups.entry((*g).into()).or_default().0.push(*id),
                }
            }
            let cores = self.remote.iter().filter(|(p, _)| matches(p, topic)).map(|(_, c)| *c);
            out.remote = cores.collect::<BTreeSet<_>>().into_iter().collect();
            for ((pattern, group, core), n) in &self.members {
                if matches(pattern, topic) {
                    let group = out.groups.entry((*group).into()).or_default();
                    *group.1.entry(*core).or_default() += n;
                }
            }
            out.local.sort_unstable();
            out.groups.values_mut().for_each(|g| g.0.sort_unstable());
            out
        }

        fn plain_on(&self, pattern: &str) -> usize {
            self.local.iter().filter(|l| l.0 == pattern && l.1.is_none()).count()
        }

        fn members_on(&self, pattern: &str, group: &str) -> u32 {
            let n = self.local.iter().filter(|l| l.0 == pattern && l.1 == Some(group)).count();
            n as u32
        }
    }

    fn matches(pattern: &str, topic: &str) -> bool {
        let pattern: Vec<&str> = pattern.split('.').collect();
        let topic: Vec<&str> = topic.split('.').collect();
        naive(&pattern, &topic)
    }

    /// NATS matching, written from the definition.
    fn naive(pattern: &[&str], topic: &[&str]) -> bool {
        match (pattern, topic) {
            ([], []) => true,
            ([">"], [_, ..]) => true,
            (["*", p @ ..], [_, t @ ..]) => naive(p, t),
            ([p0, p @ ..], [t0, t @ ..]) => p0 == t0 && naive(p, t),
            _ => false,
        }
    }

    struct Case {
        seed: u64,
        rng: fastrand::Rng,
        topics: Topics,
        /// The cache's capacity, small in most cases so that eviction runs.
        capacity: usize,
        model: Model,
        next_sid: u32,
        /// What was done so far, printed with a failure.
        log: Vec<String>,
    }

    impl Case {
        fn new(seed: u64) -> Self {
            let capacity = [1, 4, 16, CACHE_CAPACITY][(seed % 4) as usize];
            Self {
                seed,
                rng: fastrand::Rng::with_seed(seed),
                topics: Topics::with_cache_capacity(capacity),
                capacity,
                model: Model::default(),
                next_sid: 0,
                log: Vec::new(),
            }
        }

        fn context(&self) -> String {
            format!("seed {}, after {:?}", self.seed, self.log)
        }

        fn topic(&mut self) -> String {
            let len = self.rng.usize(1..=4);
            let tokens: Vec<&str> = (0..len).map(|_| TOKENS[self.rng.usize(..3)]).collect();
            tokens.join(".")
        }

        fn pattern(&mut self) -> String {
            let len = self.rng.usize(1..=4);
            let mut tokens: Vec<&str> = (0..len)
                .map(|_| if self.rng.u8(..5) == 0 { "*" } else { TOKENS[self.rng.usize(..3)] })
                .collect();
            if self.rng.u8(..4) == 0 {
                tokens[len - 1] = ">";
            }
            tokens.join(".")
        }

        /// A group half of the time.
        fn group(&mut self) -> Option<&'static str> {
            match self.rng.u8(..4) {
                0 => Some(GROUPS[0]),
                1 => Some(GROUPS[1]),
                _ => None,
            }
        }

        fn step(&mut self) {
            match self.rng.u8(..24) {
                0..=5 => self.subscribe(),
                6..=8 => self.unsubscribe_existing(),
                9 => self.unsubscribe_missing(),
                10..=12 => self.remote_plain(),
                13..=15 => self.remote_members(),
                _ => {
                    let topic = self.topic();
                    self.lookup(&topic);
                }
            }
        }

        fn subscribe(&mut self) {
            self.next_sid += 1;
            let (pattern, group) = (self.pattern(), self.group());
            let id = (self.rng.usize(..4), self.next_sid);
            self.log.push(format!("+{pattern} {group:?} {id:?}"));
            let change = self.topics.add_local(&pattern, group, sub(id.0, id.1));
            self.model.local.push((pattern.clone(), group, id));
            let want = match group {
                None if self.model.plain_on(&pattern) == 1 => Change::Plain(true),
                None => Change::Quiet,
                Some(g) => Change::Members(self.model.members_on(&pattern, g)),
            };
            assert_eq!(change, want, "{}", self.context());
        }

        fn unsubscribe_existing(&mut self) {
            if self.model.local.is_empty() {
                return self.subscribe();
            }
            let at = self.rng.usize(..self.model.local.len());
            let (pattern, group, id) = self.model.local.remove(at);
            self.log.push(format!("-{pattern} {group:?} {id:?}"));
            let change = self.topics.remove_local(&pattern, group, id.0, id.1);
            let want = match group {
                None if self.model.plain_on(&pattern) == 0 => Change::Plain(false),
                None => Change::Quiet,
                Some(g) => Change::Members(self.model.members_on(&pattern, g)),
            };
            assert_eq!(change, want, "{}", self.context());
        }

        /// Removes what is not there: a new sid, or an existing one under
        /// another pattern or group. Nothing changes.
        fn unsubscribe_missing(&mut self) {
            let (pattern, group) = (self.pattern(), self.group());
            let sid = match self.model.local.first() {
                Some(l) if self.rng.bool() => l.2 .1,
                _ => self.next_sid + 1,
            };
            let present =
                self.model.local.iter().any(|l| (&l.0, l.1, l.2 .1) == (&pattern, group, sid));
            if present {
                return;
            }
            self.log.push(format!("-? {pattern} {group:?} {sid}"));
            for key in 0..4 {
                let change = self.topics.remove_local(&pattern, group, key, sid);
                assert_eq!(change, Change::Quiet, "{}", self.context());
            }
        }

        fn remote_plain(&mut self) {
            let (pattern, core) = (self.pattern(), self.rng.usize(..CORES));
            let on = self.rng.bool();
            self.log.push(format!("r{core} {pattern} {on}"));
            self.topics.set_remote(&pattern, core, on);
            if on {
                self.model.remote.insert((pattern, core));
            } else {
                self.model.remote.remove(&(pattern, core));
            }
        }

        fn remote_members(&mut self) {
            let (pattern, core) = (self.pattern(), self.rng.usize(..CORES));
            let group = GROUPS[self.rng.usize(..2)];
            let n = [0, 0, 1, 2, 5][self.rng.usize(..5)];
            self.log.push(format!("m{core} {pattern} {group} {n}"));
            self.topics.set_remote_members(&pattern, group, core, n);
            let key = (pattern, group, core);
            if n == 0 {
                self.model.members.remove(&key);
            } else {
                self.model.members.insert(key, n);
            }
        }

        fn lookup(&mut self, topic: &str) {
            self.log.push(format!("?{topic}"));
            let want = self.model.matching(topic);
            let cached = normal(self.topics.get(topic));
            assert_eq!(cached, want, "cached lookup of {topic}: {}", self.context());
            let fresh = normal(self.topics.table().match_uncached(topic).as_ref());
            assert_eq!(fresh, want, "uncached lookup of {topic}: {}", self.context());
            assert!(self.topics.table().cached() <= self.capacity, "{}", self.context());
        }

        /// Takes everything out in random order; the table must end empty.
        fn drain(&mut self) {
            while !self.model.local.is_empty() {
                self.unsubscribe_existing();
            }
            for (pattern, core) in std::mem::take(&mut self.model.remote) {
                self.topics.set_remote(&pattern, core, false);
            }
            for (pattern, group, core) in std::mem::take(&mut self.model.members).into_keys() {
                self.topics.set_remote_members(&pattern, group, core, 0);
            }
            let ctx = self.context();
            assert!(self.topics.table().is_empty(), "{ctx}");
            assert_eq!(self.topics.table().cached(), 0, "{ctx}");
        }
    }

    #[test]
    fn the_table_matches_like_brute_force() {
        for seed in 0..CASES {
            let mut case = Case::new(seed);
            for _ in 0..OPS {
                case.step();
            }
            case.drain();
        }
    }
}
