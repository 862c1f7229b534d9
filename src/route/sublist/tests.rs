//! The index's matching rules, cache and memory, with a plain list of
//! values as the entry. The broker's own entry, queue groups and other
//! cores' interest included, is checked against brute force in
//! `topics::tests`.

use super::*;

/// A test entry: the values subscribed to one pattern, each as many times
/// as it was added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Values(Vec<u32>);

impl Entry for Values {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn absorb(&mut self, other: &Self) {
        self.0.extend_from_slice(&other.0);
    }
}

impl Sublist<Values> {
    fn add(&mut self, pattern: &str, value: u32) {
        self.update(pattern, |e| e.0.push(value));
    }

    /// Removes one `value` from `pattern`; false if there is none.
    fn take(&mut self, pattern: &str, value: u32) -> bool {
        self.update(pattern, |e| match e.0.iter().position(|v| *v == value) {
            Some(at) => {
                e.0.remove(at);
                true
            }
            None => false,
        })
    }

    /// The values a topic reaches, sorted.
    fn values(&mut self, topic: &str) -> Vec<u32> {
        let mut found = self.match_topic(topic).map(|e| e.0.clone()).unwrap_or_default();
        found.sort_unstable();
        found
    }

    /// Trie nodes below the root.
    fn trie_nodes(&self) -> usize {
        self.trie.nodes()
    }
}

impl<E: Entry> Node<E> {
    fn nodes(&self) -> usize {
        let below = |n: &Node<E>| 1 + n.nodes();
        self.literal.values().map(below).sum::<usize>() + self.star.as_deref().map_or(0, below)
    }
}

fn list(patterns: &[(&str, u32)]) -> Sublist<Values> {
    let mut list = Sublist::default();
    for &(pattern, value) in patterns {
        list.add(pattern, value);
    }
    list
}

#[test]
fn exact_topics_match_themselves_only() {
    let mut list = list(&[("a.b", 1), ("a.b", 2), ("a", 3)]);
    assert_eq!(list.values("a.b"), [1, 2]);
    assert_eq!(list.values("a"), [3]);
    assert!(list.match_topic("a.b.c").is_none());
    assert!(list.match_topic("b").is_none());
    assert_eq!(list.cached(), 0, "without wildcards the cache is not used");
}

#[test]
fn star_matches_exactly_one_token() {
    let mut list = list(&[("a.*", 1), ("*.b", 2), ("*", 3), ("a.*.c", 4)]);
    assert_eq!(list.values("a.b"), [1, 2]);
    assert_eq!(list.values("a.x"), [1]);
    assert_eq!(list.values("a"), [3], "a.* needs a second token");
    assert_eq!(list.values("zz"), [3]);
    assert_eq!(list.values("a.x.c"), [4]);
    assert!(list.match_topic("a.b.c.d").is_none());
}

#[test]
fn tail_matches_one_or_more_trailing_tokens() {
    let mut list = list(&[("a.>", 1), ("a.b.>", 2)]);
    assert!(list.match_topic("a").is_none(), "a.> does not match a");
    assert_eq!(list.values("a.b"), [1]);
    assert_eq!(list.values("a.b.c"), [1, 2]);
    assert_eq!(list.values("a.b.c.d.e"), [1, 2]);
    assert!(list.match_topic("b.a").is_none());
}

#[test]
fn tail_alone_matches_every_topic() {
    let mut list = list(&[(">", 1)]);
    for topic in ["a", "a.b", "x.y.z.w", "$SYS.x"] {
        assert_eq!(list.values(topic), [1], "{topic}");
    }
}

#[test]
fn star_alone_matches_single_token_topics() {
    let mut list = list(&[("*", 1)]);
    assert_eq!(list.values("a"), [1]);
    assert!(list.match_topic("a.b").is_none());
}

#[test]
fn overlapping_patterns_merge_their_entries() {
    let patterns = ["a.b", "a.*", "*.b", "a.>", ">", "*.*"];
    let mut list = Sublist::default();
    for p in patterns {
        list.add(p, 7);
    }
    list.add("a.b.c", 7);
    assert_eq!(list.values("a.b"), vec![7; patterns.len()]);
    assert!(list.take("a.*", 7));
    assert_eq!(list.values("a.b"), vec![7; patterns.len() - 1]);
}

#[test]
fn an_update_returns_what_the_change_returns_and_changes_nothing_else() {
    let mut list = list(&[("a.b", 1), ("a.*", 1)]);
    assert!(!list.take("a.b", 9), "no such value");
    assert!(!list.take("a.c", 1), "no such pattern");
    assert!(!list.take("a.*.c", 1), "no such wildcard pattern");
    assert!(!list.take("*.b", 1), "no such wildcard pattern");
    assert_eq!(list.trie_nodes(), 2, "a failed removal leaves no node behind");
    assert_eq!(list.exact.len(), 1);
    assert_eq!(list.values("a.b"), [1, 1]);
}

#[test]
fn removing_the_last_entries_prunes_the_trie() {
    let patterns = ["a.b.*.d", "a.b.>", "a.*.c", "*.>", ">", "*", "a.b.c.*", "x.*.y.>"];
    let mut list = Sublist::default();
    for (i, p) in (0..8).zip(patterns) {
        list.add(p, i);
        list.add(p, i + 100);
    }
    list.add("a.b.c.d", 99);
    list.match_topic("a.b.c.d");
    assert!(list.trie_nodes() > 0);
    for (i, p) in (0..8).zip(patterns).rev() {
        assert!(list.take(p, i));
        assert!(list.take(p, i + 100));
    }
    assert_eq!(list.trie_nodes(), 0, "no node outlives its last pattern");
    assert!(list.trie.is_empty());
    assert_eq!(list.wildcards, 0);
    assert_eq!(list.cached(), 0, "the cache empties with the last wildcard");
    assert!(!list.is_empty());
    assert!(list.take("a.b.c.d", 99));
    assert!(list.exact.is_empty() && list.is_empty());
}

#[test]
fn pruning_keeps_nodes_still_in_use() {
    let mut list = list(&[("a.*.c", 1), ("a.*.d", 2), ("a.>", 3)]);
    list.take("a.*.c", 1);
    assert_eq!(list.trie_nodes(), 3, "a, a.*, a.*.d");
    assert_eq!(list.values("a.x.d"), [2, 3]);
    list.take("a.*.d", 2);
    assert_eq!(list.trie_nodes(), 1, "a still holds a.>");
    assert_eq!(list.values("a.x"), [3]);
}

#[test]
fn lookups_through_the_trie_are_cached() {
    let mut list = list(&[("a.*", 1), ("b", 2)]);
    let first: *const Values = list.match_topic("a.x").expect("a.* matches");
    assert_eq!(list.cached(), 1);
    assert!(std::ptr::eq(first, list.match_topic("a.x").expect("")), "a hit lends the result");
    assert_eq!(list.values("b"), [2]);
    assert!(list.match_topic("nobody").is_none());
    assert_eq!(list.cached(), 1, "topics no wildcard reaches are not cached");
    let exact: *const Values = &list.exact["b"];
    assert!(std::ptr::eq(exact, list.match_topic("b").expect("")), "but lent from `exact`");
}

#[test]
fn without_wildcards_a_lookup_lends_the_exact_entry() {
    let mut list = list(&[("a", 1), ("b.c", 2)]);
    let exact: *const Values = &list.exact["b.c"];
    assert!(std::ptr::eq(exact, list.match_topic("b.c").expect("subscribed")));
    assert_eq!(list.cached(), 0);
}

#[test]
fn an_exact_topic_no_wildcard_reaches_sees_exact_changes_at_once() {
    let mut list = list(&[("a.*", 1)]);
    assert!(list.match_topic("b").is_none());
    list.add("b", 2);
    assert_eq!(list.values("b"), [2]);
    list.add("b", 3);
    list.take("b", 2);
    assert_eq!(list.values("b"), [3]);
}

#[test]
fn an_exact_change_forgets_only_its_topic() {
    let mut list = list(&[("a.*", 1)]);
    for topic in ["a.x", "a.y"] {
        list.match_topic(topic);
    }
    list.add("a.x", 2);
    assert_eq!(list.cached(), 1, "a.y stays");
    assert_eq!(list.values("a.x"), [1, 2]);
    list.take("a.x", 2);
    assert_eq!(list.values("a.x"), [1]);
}

#[test]
fn a_wildcard_change_forgets_the_topics_it_matches() {
    let mut list = list(&[("a.*", 1)]);
    list.add("b.*", 3);
    for topic in ["a.x", "a.y", "b.x", "b.y"] {
        list.match_topic(topic);
    }
    list.add("*.x", 2);
    assert_eq!(list.cached(), 2, "a.x and b.x are stale, a.y and b.y stay");
    assert_eq!(list.values("a.x"), [1, 2]);
    assert_eq!(list.values("b.x"), [2, 3]);
    list.take("*.x", 2);
    assert_eq!(list.values("b.x"), [3]);
    assert_eq!(list.values("b.y"), [3]);
}

#[test]
fn a_change_of_an_entry_in_place_is_seen_by_the_next_lookup() {
    let mut list = list(&[("a.*", 1), ("a.x", 2)]);
    assert_eq!(list.values("a.x"), [1, 2]);
    list.update("a.x", |e| e.0[0] = 5);
    assert_eq!(list.values("a.x"), [1, 5]);
    list.update("a.*", |e| e.0[0] = 6);
    assert_eq!(list.values("a.x"), [5, 6]);
}

#[test]
fn the_cache_stays_within_its_capacity() {
    let mut list = Sublist::with_cache_capacity(4);
    list.add("t.*", 1);
    for round in 0..3 {
        for i in 0..50 {
            let topic = format!("t.{i}");
            assert_eq!(list.values(&topic), [1], "round {round}, {topic}");
            assert!(list.cached() <= 4);
        }
    }
}

#[test]
fn memory_is_given_back_as_entries_leave() {
    let mut list = Sublist::default();
    for i in 0..1000u32 {
        list.add(&format!("t.{i}"), i);
        list.add(&format!("w.{i}.*"), i);
    }
    for i in 1..1000u32 {
        list.take(&format!("t.{i}"), i);
        list.take(&format!("w.{i}.*"), i);
    }
    assert!(list.exact.capacity() < 64, "map kept {}", list.exact.capacity());
    let w = &list.trie.literal["w"];
    assert!(w.literal.capacity() < 64, "trie level kept {}", w.literal.capacity());
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
