//! One core's pattern index: an entry per topic pattern (`*` and `>`
//! allowed), and a bounded cache of lookups.
//!
//! Matching follows NATS: `*` matches exactly one token and `>` one or more
//! trailing tokens, as the last token only, so `a.>` matches `a.b` and
//! `a.b.c` but not `a`.
//!
//! The index does not know what an entry holds: the broker's entry
//! (`topics::TopicEntry`) keeps a pattern's local subscriptions, the other
//! cores interested in it and its queue groups. A lookup returns the
//! entries of every pattern matching a topic merged into one
//! ([`Entry::absorb`]), so that the caller pays for the merge once per
//! topic, not once per publish.
//!
//! Patterns without wildcards sit in a hash map keyed by the whole topic.
//! While a core has no wildcard pattern a lookup is one probe of that map,
//! and the entry found is the result itself: nothing is copied or
//! allocated. Patterns with wildcards go into a token trie, and the merged
//! results for topics that wildcards reach are remembered in a cache of at
//! most [`CACHE_CAPACITY`] topics. A topic no wildcard reaches is not
//! cached, so that a core with many exact topics does not churn the cache:
//! its result is its exact entry, found after one probe of the trie's
//! first level when no wildcard pattern starts like it, else after a walk
//! of the levels that do.
//!
//! Every change goes through [`Sublist::update`], which forgets the cached
//! results the changed pattern takes part in, so a lookup never sees a
//! stale merge.
//!
//! Memory follows the entries: an entry that empties is removed with the
//! trie nodes nothing else uses, and maps that shrink to a quarter of their
//! capacity give memory back.

mod cache;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use cache::Cache;

/// Most topics the lookup cache remembers (nats-server keeps 1024 too);
/// past that, a new entry evicts one by the clock (second-chance) rule. A
/// cached result is a merged copy of its patterns' entries, so the cache's
/// memory is at most this many times the largest such merge.
pub(crate) const CACHE_CAPACITY: usize = 1024;

type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// What the index keeps per pattern and returns per topic.
pub(crate) trait Entry: Default + Clone {
    /// Nobody is interested any more: the index drops the entry.
    fn is_empty(&self) -> bool;

    /// Adds what `other`, the entry of another pattern matching the same
    /// topic, holds.
    fn absorb(&mut self, other: &Self);
}

/// The index.
#[derive(Debug)]
pub(crate) struct Sublist<E> {
    /// Patterns without wildcards, by topic. For a topic that no wildcard
    /// reaches, the entry is the lookup's result itself.
    exact: Map<E>,
    /// Patterns with a wildcard; the root stands for the empty prefix.
    trie: Node<E>,
    /// Entries in `trie`. While there are none, lookups use `exact` alone
    /// and skip the cache: the whole cost of an exact topic is one probe.
    wildcards: usize,
    /// Merged results for topics that wildcard patterns match.
    cache: Cache<E>,
}

/// One trie level: the wildcard patterns that share a prefix of tokens.
#[derive(Debug)]
struct Node<E> {
    /// The entry of the pattern that ends with this node's token.
    end: E,
    /// The entry of the pattern that goes on with a final `>` (at the root:
    /// the pattern `>`). `>` is always last, so it needs no node of its own.
    tail: E,
    /// Next level, by literal token.
    literal: Map<Node<E>>,
    /// Next level for `*`.
    star: Option<Box<Node<E>>>,
}

impl<E: Entry> Default for Sublist<E> {
    fn default() -> Self {
        Self::with_cache_capacity(CACHE_CAPACITY)
    }
}

impl<E: Entry> Sublist<E> {
    /// An empty index whose cache holds at most `capacity` topics.
    pub(crate) fn with_cache_capacity(capacity: usize) -> Self {
        Self {
            exact: Map::default(),
            trie: Node::default(),
            wildcards: 0,
            cache: Cache::new(capacity),
        }
    }

    /// Whether the index holds no entry.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards == 0
    }

    /// Topics whose result is cached.
    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Applies `change` to the entry of `pattern` (an empty one if there is
    /// none) and returns what it returns. The cached results the pattern
    /// takes part in are forgotten, and an entry left empty is removed.
    ///
    /// The caller validates the pattern (`topic::validate`).
    pub(crate) fn update<R>(&mut self, pattern: &str, change: impl FnOnce(&mut E) -> R) -> R {
        if is_wildcard(pattern) {
            self.update_wildcard(pattern, change)
        } else {
            self.update_exact(pattern, change)
        }
    }

    /// Who a message published to `topic` (a literal topic) reaches: the
    /// entries of every matching pattern merged; `None` when no pattern
    /// matches.
    pub(crate) fn match_topic(&mut self, topic: &str) -> Option<&E> {
        if self.wildcards == 0 || !self.trie.may_match(topic) {
            return self.exact.get(topic);
        }
        let Self { exact, trie, cache, .. } = self;
        match cache.get_or_cache(topic, || Self::merge(trie, exact, topic)) {
            Some(merged) => Some(merged),
            None => exact.get(topic),
        }
    }

    /// The lookup without the cache, to check the cache against.
    #[cfg(test)]
    pub(crate) fn match_uncached(&self, topic: &str) -> Option<E> {
        Self::merge(&self.trie, &self.exact, topic).or_else(|| self.exact.get(topic).cloned())
    }

    /// The entries of the wildcard patterns matching `topic` and of its
    /// exact entry, merged; `None` if no wildcard pattern matches.
    fn merge(trie: &Node<E>, exact: &Map<E>, topic: &str) -> Option<E> {
        let mut found = E::default();
        trie.collect(topic, &mut found);
        if found.is_empty() {
            return None;
        }
        if let Some(entry) = exact.get(topic) {
            found.absorb(entry);
        }
        Some(found)
    }

    fn update_exact<R>(&mut self, pattern: &str, change: impl FnOnce(&mut E) -> R) -> R {
        self.cache.remove(pattern);
        if !self.exact.contains_key(pattern) {
            self.exact.insert(Box::from(pattern), E::default());
        }
        let entry = self.exact.get_mut(pattern).expect("entry was just ensured");
        let out = change(entry);
        if entry.is_empty() {
            self.exact.remove(pattern);
            shrink_map(&mut self.exact);
        }
        out
    }

    fn update_wildcard<R>(&mut self, pattern: &str, change: impl FnOnce(&mut E) -> R) -> R {
        let entry = self.trie.entry_mut(pattern);
        let was_empty = entry.is_empty();
        let out = change(entry);
        let now_empty = entry.is_empty();
        if now_empty {
            self.trie.prune(pattern);
        }
        match (was_empty, now_empty) {
            (true, false) => self.wildcards += 1,
            (false, true) => self.wildcards -= 1,
            _ => {}
        }
        if self.wildcards == 0 {
            self.cache.clear();
        } else {
            self.cache.remove_where(|topic| matches(pattern, topic));
        }
        out
    }
}

impl<E: Entry> Default for Node<E> {
    fn default() -> Self {
        Self { end: E::default(), tail: E::default(), literal: Map::default(), star: None }
    }
}

impl<E: Entry> Node<E> {
    fn is_empty(&self) -> bool {
        self.end.is_empty()
            && self.tail.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
    }

    /// The entry of `pattern` (tokens below this node), creating the nodes
    /// on the way.
    fn entry_mut(&mut self, pattern: &str) -> &mut E {
        let mut node = self;
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            let last = tokens.peek().is_none();
            if last && token == ">" {
                return &mut node.tail;
            }
            node = node.child_or_new(token);
        }
        &mut node.end
    }

    fn child_or_new(&mut self, token: &str) -> &mut Node<E> {
        if token == "*" {
            return self.star.get_or_insert_with(Box::default);
        }
        if !self.literal.contains_key(token) {
            self.literal.insert(Box::from(token), Node::default());
        }
        self.literal.get_mut(token).expect("child was just ensured")
    }

    fn child_mut(&mut self, token: &str) -> Option<&mut Node<E>> {
        match token {
            "*" => self.star.as_deref_mut(),
            _ => self.literal.get_mut(token),
        }
    }

    fn drop_child(&mut self, token: &str) {
        match token {
            "*" => self.star = None,
            _ => {
                self.literal.remove(token);
                shrink_map(&mut self.literal);
            }
        }
    }

    /// Removes the nodes on the path of `pattern` (tokens below this node)
    /// that hold nothing any more, deepest first.
    fn prune(&mut self, pattern: &str) {
        let (token, rest) = split_first(pattern);
        let Some(rest) = rest else {
            if token != ">" && self.child_mut(token).is_some_and(|c| c.is_empty()) {
                self.drop_child(token);
            }
            return;
        };
        let Some(child) = self.child_mut(token) else { return };
        child.prune(rest);
        if child.is_empty() {
            self.drop_child(token);
        }
    }

    /// Whether a pattern below this node might match `topic`, judged by
    /// its first token alone.
    fn may_match(&self, topic: &str) -> bool {
        let (token, _) = split_first(topic);
        !self.tail.is_empty() || self.star.is_some() || self.literal.contains_key(token)
    }

    /// Adds to `found` the entries below this node whose pattern matches
    /// `topic` (the topic's tokens below this node, at least one). Visits
    /// each node at most once: a node stands for one prefix.
    fn collect(&self, topic: &str, found: &mut E) {
        found.absorb(&self.tail);
        let (token, rest) = split_first(topic);
        if let Some(child) = self.literal.get(token) {
            child.collect_rest(rest, found);
        }
        if let Some(child) = &self.star {
            child.collect_rest(rest, found);
        }
    }

    /// `collect` for a child reached by the token before `rest`.
    fn collect_rest(&self, rest: Option<&str>, found: &mut E) {
        match rest {
            None => found.absorb(&self.end),
            Some(rest) => self.collect(rest, found),
        }
    }
}

/// The first token and what follows its dot, if anything.
fn split_first(s: &str) -> (&str, Option<&str>) {
    match s.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (s, None),
    }
}

/// Whether the pattern goes into the trie: it has a `*` or `>` token.
fn is_wildcard(pattern: &str) -> bool {
    pattern.split('.').any(|t| t == "*" || t == ">")
}

/// Whether `pattern` matches the literal `topic`, by the trie's rules (a
/// `>` that is not last is an ordinary token). Finds the cache entries a
/// wildcard change makes stale.
pub(crate) fn matches(pattern: &str, topic: &str) -> bool {
    let (mut pattern, mut topic) = (pattern.split('.'), topic.split('.'));
    loop {
        match (pattern.next(), topic.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) if pattern.clone().next().is_none() => return true,
            (Some(p), Some(t)) if p == "*" || p == t => {}
            _ => return false,
        }
    }
}

/// Gives memory back once a list is down to a quarter of its capacity,
/// keeping room to double so that add/remove at the edge stays cheap.
pub(crate) fn shrink_vec<V>(list: &mut Vec<V>) {
    if list.len() * 4 < list.capacity() {
        list.shrink_to(list.len() * 2);
    }
}

/// As [`shrink_vec`], for a map.
fn shrink_map<V>(map: &mut Map<V>) {
    if map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}
