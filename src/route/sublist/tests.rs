use std::collections::BTreeMap;

use super::*;

impl<T: Copy + Eq> Sublist<T> {
    /// Trie nodes below the root.
    fn trie_nodes(&self) -> usize {
        self.trie.nodes()
    }

    /// The lookup without the cache.
    fn match_uncached(&self, topic: &str) -> Match<T> {
        let merged = Self::merge(&self.trie, &self.exact, topic);
        merged.unwrap_or_else(|| self.exact_match(topic).clone())
    }
}

impl<T: Copy + Eq> Node<T> {
    fn nodes(&self) -> usize {
        let below = |n: &Node<T>| 1 + n.nodes();
        self.literal.values().map(below).sum::<usize>() + self.star.as_deref().map_or(0, below)
    }
}

/// A match as sorted plain values and sorted members by group name, so that
/// results compare regardless of order.
type Normal<T> = (Vec<T>, BTreeMap<String, Vec<T>>);

fn normal<T: Copy + Ord>(m: &Match<T>) -> Normal<T> {
    let mut plain = m.plain().to_vec();
    plain.sort_unstable();
    let mut groups = BTreeMap::new();
    for g in m.groups() {
        assert!(!g.members().is_empty(), "group {} is reported with no member", g.name());
        let mut members = g.members().to_vec();
        members.sort_unstable();
        assert!(groups.insert(g.name().to_owned(), members).is_none(), "group {} twice", g.name());
    }
    (plain, groups)
}

fn plain_of(list: &mut Sublist<u32>, topic: &str) -> Vec<u32> {
    normal(list.match_topic(topic)).0
}

fn plain_list(patterns: &[(&str, u32)]) -> Sublist<u32> {
    let mut list = Sublist::new();
    for &(pattern, value) in patterns {
        list.insert(pattern, None, value);
    }
    list
}

#[test]
fn exact_topics_match_themselves_only() {
    let mut list = plain_list(&[("a.b", 1), ("a.b", 2), ("a", 3)]);
    assert_eq!(plain_of(&mut list, "a.b"), [1, 2]);
    assert_eq!(plain_of(&mut list, "a"), [3]);
    assert!(list.match_topic("a.b.c").is_empty());
    assert!(list.match_topic("b").is_empty());
    assert_eq!(list.cached(), 0, "without wildcards the cache is not used");
}

#[test]
fn star_matches_exactly_one_token() {
    let mut list = plain_list(&[("a.*", 1), ("*.b", 2), ("*", 3), ("a.*.c", 4)]);
    assert_eq!(plain_of(&mut list, "a.b"), [1, 2]);
    assert_eq!(plain_of(&mut list, "a.x"), [1]);
    assert_eq!(plain_of(&mut list, "a"), [3], "a.* needs a second token");
    assert_eq!(plain_of(&mut list, "zz"), [3]);
    assert_eq!(plain_of(&mut list, "a.x.c"), [4]);
    assert!(list.match_topic("a.b.c.d").is_empty());
}

#[test]
fn tail_matches_one_or_more_trailing_tokens() {
    let mut list = plain_list(&[("a.>", 1), ("a.b.>", 2)]);
    assert!(list.match_topic("a").is_empty(), "a.> does not match a");
    assert_eq!(plain_of(&mut list, "a.b"), [1]);
    assert_eq!(plain_of(&mut list, "a.b.c"), [1, 2]);
    assert_eq!(plain_of(&mut list, "a.b.c.d.e"), [1, 2]);
    assert!(list.match_topic("b.a").is_empty());
}

#[test]
fn tail_alone_matches_every_topic() {
    let mut list = plain_list(&[(">", 1)]);
    for topic in ["a", "a.b", "x.y.z.w", "$SYS.x"] {
        assert_eq!(plain_of(&mut list, topic), [1], "{topic}");
    }
}

#[test]
fn star_alone_matches_single_token_topics() {
    let mut list = plain_list(&[("*", 1)]);
    assert_eq!(plain_of(&mut list, "a"), [1]);
    assert!(list.match_topic("a.b").is_empty());
}

#[test]
fn overlapping_patterns_return_a_value_once_per_subscription() {
    let patterns = ["a.b", "a.*", "*.b", "a.>", ">", "*.*"];
    let mut list = Sublist::new();
    for p in patterns {
        list.insert(p, None, 7u32);
    }
    list.insert("a.b.c", None, 7);
    assert_eq!(plain_of(&mut list, "a.b"), vec![7; patterns.len()]);
    list.remove("a.*", None, 7);
    assert_eq!(plain_of(&mut list, "a.b"), vec![7; patterns.len() - 1]);
}

#[test]
fn broker_like_values_keep_their_sids() {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Sub {
        key: usize,
        sid: u32,
        lossy: bool,
    }
    let (one, two) = (Sub { key: 3, sid: 1, lossy: false }, Sub { key: 3, sid: 2, lossy: true });
    let mut list = Sublist::new();
    list.insert("orders.>", None, one);
    list.insert("orders.eu", None, two);
    assert_eq!(normal(list.match_topic("orders.eu")).0, [one, two]);
    assert_eq!(normal(list.match_topic("orders.us")).0, [one]);
}

#[test]
fn queue_groups_merge_by_name_across_patterns() {
    let mut list = Sublist::new();
    list.insert("orders.*", Some("w"), 1u32);
    list.insert("orders.eu", Some("w"), 2);
    list.insert("orders.>", Some("v"), 3);
    list.insert("orders.eu", None, 4);
    let (plain, groups) = normal(list.match_topic("orders.eu"));
    assert_eq!(plain, [4]);
    assert_eq!(groups, BTreeMap::from([("v".into(), vec![3]), ("w".into(), vec![1, 2])]));
    let (plain, groups) = normal(list.match_topic("orders.us.x"));
    assert!(plain.is_empty());
    assert_eq!(groups, BTreeMap::from([("v".into(), vec![3])]));
}

#[test]
fn interest_reports_first_and_last_subscription_of_a_pattern() {
    let mut list = Sublist::new();
    for pattern in ["a.b", "a.*"] {
        let first = list.insert(pattern, None, 1u32);
        assert!(first.opened() && !first.closed() && first.subscriptions() == 1, "{pattern}");
        assert_eq!(first.group_members(), None);
        let second = list.insert(pattern, Some("q"), 2);
        assert!(!second.opened() && second.subscriptions() == 2);
        assert_eq!(second.group_members(), Some(1));
        assert_eq!(list.insert(pattern, Some("q"), 3).group_members(), Some(2));

        let gone = list.remove(pattern, Some("q"), 3).expect("subscribed");
        assert_eq!((gone.subscriptions(), gone.group_members()), (2, Some(1)));
        assert!(!gone.closed());
        assert_eq!(list.remove(pattern, Some("q"), 2).and_then(|i| i.group_members()), Some(0));
        let last = list.remove(pattern, None, 1).expect("subscribed");
        assert!(last.closed() && !last.opened() && last.subscriptions() == 0);
    }
    assert!(list.is_empty());
}

#[test]
fn removing_what_is_not_there_changes_nothing() {
    let mut list = plain_list(&[("a.b", 1), ("a.*", 1)]);
    list.insert("a.b", Some("q"), 2);
    assert_eq!(list.remove("a.b", None, 9), None, "no such value");
    assert_eq!(list.remove("a.b", Some("q"), 1), None, "1 is not in the group");
    assert_eq!(list.remove("a.b", Some("r"), 2), None, "no such group");
    assert_eq!(list.remove("a.c", None, 1), None, "no such pattern");
    assert_eq!(list.remove("a.*.c", None, 1), None, "no such wildcard pattern");
    assert_eq!(list.remove("*.b", None, 1), None, "no such wildcard pattern");
    assert_eq!(list.len(), 3);
    assert_eq!(list.trie_nodes(), 2);
}

#[test]
fn removing_the_last_subscriptions_prunes_the_trie() {
    let patterns = ["a.b.*.d", "a.b.>", "a.*.c", "*.>", ">", "*", "a.b.c.*", "x.*.y.>"];
    let mut list = Sublist::new();
    for (i, p) in patterns.iter().enumerate() {
        list.insert(p, Some("q"), i);
        list.insert(p, None, i);
    }
    list.insert("a.b.c.d", None, 99);
    list.match_topic("a.b.c.d");
    assert!(list.trie_nodes() > 0);
    for (i, p) in patterns.iter().enumerate().rev() {
        list.remove(p, None, i);
        list.remove(p, Some("q"), i);
    }
    assert_eq!(list.trie_nodes(), 0, "no node outlives its last pattern");
    assert!(list.trie.is_empty());
    assert_eq!(list.cached(), 0, "the cache empties with the last wildcard");
    assert_eq!(list.len(), 1);
    list.remove("a.b.c.d", None, 99);
    assert!(list.exact.is_empty() && list.is_empty());
}

#[test]
fn pruning_keeps_nodes_still_in_use() {
    let mut list = plain_list(&[("a.*.c", 1), ("a.*.d", 2), ("a.>", 3)]);
    list.remove("a.*.c", None, 1);
    assert_eq!(list.trie_nodes(), 3, "a, a.*, a.*.d");
    assert_eq!(plain_of(&mut list, "a.x.d"), [2, 3]);
    list.remove("a.*.d", None, 2);
    assert_eq!(list.trie_nodes(), 1, "a still holds a.>");
    assert_eq!(plain_of(&mut list, "a.x"), [3]);
}

#[test]
fn lookups_through_the_trie_are_cached() {
    let mut list = plain_list(&[("a.*", 1), ("b", 2)]);
    let first: *const Match<u32> = list.match_topic("a.x");
    assert_eq!(list.cached(), 1);
    assert!(std::ptr::eq(first, list.match_topic("a.x")), "a hit lends the cached result");
    assert_eq!(plain_of(&mut list, "b"), [2]);
    assert!(list.match_topic("nobody").is_empty());
    assert_eq!(list.cached(), 1, "topics no wildcard reaches are not cached");
    assert!(std::ptr::eq(&list.exact["b"], list.match_topic("b")), "but lent from `exact`");
}

#[test]
fn an_exact_topic_no_wildcard_reaches_sees_exact_changes_at_once() {
    let mut list = plain_list(&[("a.*", 1)]);
    assert!(list.match_topic("b").is_empty());
    list.insert("b", None, 2);
    assert_eq!(plain_of(&mut list, "b"), [2]);
    list.insert("b", None, 3);
    list.remove("b", None, 2);
    assert_eq!(plain_of(&mut list, "b"), [3]);
}

#[test]
fn an_exact_change_forgets_only_its_topic() {
    let mut list = plain_list(&[("a.*", 1)]);
    for topic in ["a.x", "a.y"] {
        list.match_topic(topic);
    }
    list.insert("a.x", None, 2);
    assert_eq!(list.cached(), 1, "a.y stays");
    assert_eq!(plain_of(&mut list, "a.x"), [1, 2]);
    list.remove("a.x", None, 1);
    assert_eq!(plain_of(&mut list, "a.x"), [1, 2], "nothing removed, nothing changed");
    list.remove("a.x", None, 2);
    assert_eq!(plain_of(&mut list, "a.x"), [1]);
}

#[test]
fn a_wildcard_change_forgets_the_topics_it_matches() {
    let mut list = plain_list(&[("a.*", 1)]);
    list.insert("b.*", None, 3);
    for topic in ["a.x", "a.y", "b.x", "b.y"] {
        list.match_topic(topic);
    }
    list.insert("*.x", None, 2);
    assert_eq!(list.cached(), 2, "a.x and b.x are stale, a.y and b.y stay");
    assert_eq!(plain_of(&mut list, "a.x"), [1, 2]);
    assert_eq!(plain_of(&mut list, "b.x"), [2, 3]);
    list.remove("*.x", None, 2);
    assert_eq!(plain_of(&mut list, "b.x"), [3]);
    assert_eq!(plain_of(&mut list, "b.y"), [3]);
}

#[test]
fn the_cache_stays_within_its_capacity() {
    let mut list = Sublist::with_cache_capacity(4);
    list.insert("t.*", None, 1u32);
    for round in 0..3 {
        for i in 0..50 {
            let topic = format!("t.{i}");
            assert_eq!(plain_of(&mut list, &topic), [1], "round {round}, {topic}");
            assert!(list.cached() <= 4);
        }
    }
}

#[test]
fn memory_is_given_back_as_subscriptions_leave() {
    let mut list = Sublist::new();
    for i in 0..1000u32 {
        list.insert("a", None, i);
        list.insert(&format!("t.{i}"), None, i);
    }
    for i in 1..1000u32 {
        list.remove("a", None, i);
        list.remove(&format!("t.{i}"), None, i);
    }
    assert!(list.exact.capacity() < 64, "map kept {}", list.exact.capacity());
    assert!(list.exact["a"].plain.capacity() < 64);
}

#[test]
fn matches_agrees_with_the_trie_rules() {
    let cases = [
        ("a.b", "a.b", true),
        ("a.b", "a", false),
        ("a.*", "a.b", true),
        ("a.*", "a", false),
        ("a.*", "a.b.c", false),
        ("a.>", "a", false),
        ("a.>", "a.b.c", true),
        (">", "a", true),
        ("*", "a.b", false),
        ("*.*.>", "a.b", false),
        ("*.*.>", "a.b.c", true),
    ];
    for (pattern, topic, want) in cases {
        assert_eq!(matches(pattern, topic), want, "{pattern} ~ {topic}");
    }
}

/// The property test: random inserts, removes and lookups against a list of
/// subscriptions matched by brute force.
mod property {
    use super::*;

    /// Random cases; each is one index driven through `OPS` operations,
    /// then emptied. A failure names its seed; the run is deterministic.
    const CASES: u64 = 400;
    const OPS: usize = 300;
    const TOKENS: [&str; 3] = ["a", "b", "c"];
    /// Queue groups; `None` (plain) is drawn as often as both together.
    const GROUPS: [&str; 2] = ["q1", "q2"];

    type Sub = (String, Option<&'static str>, u8);

    /// The reference: every subscription in a list, matched one by one.
    #[derive(Default)]
    struct Model {
        subs: Vec<Sub>,
    }

    impl Model {
        fn matching(&self, topic: &str) -> Normal<u8> {
            let topic: Vec<&str> = topic.split('.').collect();
            let mut plain = Vec::new();
            let mut groups: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (pattern, group, value) in &self.subs {
                let pattern: Vec<&str> = pattern.split('.').collect();
                if !naive(&pattern, &topic) {
                    continue;
                }
                match group {
                    None => plain.push(*value),
                    Some(g) => groups.entry((*g).to_owned()).or_default().push(*value),
                }
            }
            plain.sort_unstable();
            groups.values_mut().for_each(|m| m.sort_unstable());
            (plain, groups)
        }

        fn on_pattern(&self, pattern: &str) -> usize {
            self.subs.iter().filter(|s| s.0 == pattern).count()
        }

        fn in_group(&self, pattern: &str, group: &str) -> usize {
            self.subs.iter().filter(|s| s.0 == pattern && s.1 == Some(group)).count()
        }

        fn take(&mut self, sub: &Sub) -> bool {
            match self.subs.iter().position(|s| s == sub) {
                Some(at) => {
                    self.subs.remove(at);
                    true
                }
                None => false,
            }
        }
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
        list: Sublist<u8>,
        /// The cache's capacity, small in most cases so that eviction runs.
        capacity: usize,
        model: Model,
        /// What was done so far, printed with a failure.
        log: Vec<String>,
    }

    impl Case {
        fn new(seed: u64) -> Self {
            let capacity = [1, 4, 16, CACHE_CAPACITY][(seed % 4) as usize];
            let rng = fastrand::Rng::with_seed(seed);
            let (list, model) = (Sublist::with_cache_capacity(capacity), Model::default());
            Self { seed, rng, list, capacity, model, log: Vec::new() }
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

        fn sub(&mut self) -> Sub {
            let group = match self.rng.u8(..4) {
                0 => Some(GROUPS[0]),
                1 => Some(GROUPS[1]),
                _ => None,
            };
            (self.pattern(), group, self.rng.u8(..6))
        }

        fn step(&mut self) {
            match self.rng.u8(..20) {
                0..=6 => {
                    let sub = self.sub();
                    self.insert(sub);
                }
                7..=10 => {
                    let sub = self.existing_sub();
                    self.remove(sub);
                }
                11 => {
                    let sub = self.sub();
                    self.remove(sub);
                }
                _ => {
                    let topic = self.topic();
                    self.lookup(&topic);
                }
            }
        }

        fn existing_sub(&mut self) -> Sub {
            match self.model.subs.len() {
                0 => self.sub(),
                n => self.model.subs[self.rng.usize(..n)].clone(),
            }
        }

        fn insert(&mut self, sub: Sub) {
            self.log.push(format!("+{sub:?}"));
            let (pattern, group, value) = &sub;
            let interest = self.list.insert(pattern, *group, *value);
            self.model.subs.push(sub.clone());
            self.check_interest(&sub, Some(interest));
            assert!(!interest.closed(), "{}", self.context());
            let first = self.model.on_pattern(pattern) == 1;
            assert_eq!(interest.opened(), first, "{}", self.context());
        }

        fn remove(&mut self, sub: Sub) {
            self.log.push(format!("-{sub:?}"));
            let (pattern, group, value) = &sub;
            let interest = self.list.remove(pattern, *group, *value);
            let present = self.model.take(&sub);
            assert_eq!(interest.is_some(), present, "{}", self.context());
            if let Some(interest) = interest {
                self.check_interest(&sub, Some(interest));
                assert!(!interest.opened(), "{}", self.context());
                let last = self.model.on_pattern(pattern) == 0;
                assert_eq!(interest.closed(), last, "{}", self.context());
            }
            assert_eq!(self.list.len(), self.model.subs.len(), "{}", self.context());
        }

        fn check_interest(&self, (pattern, group, _): &Sub, interest: Option<Interest>) {
            let got = interest.map(|i| (i.subscriptions(), i.group_members()));
            let on_pattern = self.model.on_pattern(pattern);
            let in_group = group.map(|g| self.model.in_group(pattern, g));
            assert_eq!(got, Some((on_pattern, in_group)), "{}", self.context());
        }

        fn lookup(&mut self, topic: &str) {
            self.log.push(format!("?{topic}"));
            let want = self.model.matching(topic);
            let cached = normal(self.list.match_topic(topic));
            assert_eq!(cached, want, "cached lookup of {topic}: {}", self.context());
            let fresh = normal(&self.list.match_uncached(topic));
            assert_eq!(fresh, want, "uncached lookup of {topic}: {}", self.context());
            assert!(self.list.cached() <= self.capacity, "{}", self.context());
        }

        /// Removes everything in random order; the index must end empty.
        fn drain(&mut self) {
            while !self.model.subs.is_empty() {
                let sub = self.existing_sub();
                self.remove(sub);
            }
            let ctx = self.context();
            assert!(self.list.is_empty(), "{ctx}");
            assert_eq!(self.list.trie_nodes(), 0, "{ctx}");
            assert!(self.list.exact.is_empty(), "{ctx}");
            assert_eq!(self.list.cached(), 0, "{ctx}");
        }
    }

    #[test]
    fn the_index_matches_like_brute_force() {
        for seed in 0..CASES {
            let mut case = Case::new(seed);
            for _ in 0..OPS {
                case.step();
            }
            case.drain();
        }
    }
}
