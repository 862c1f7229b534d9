//! One core's subscription index: topic patterns with `*` and `>`, queue
//! groups, and a bounded cache of lookups.
//!
//! Matching follows NATS: `*` matches exactly one token and `>` one or more
//! trailing tokens, as the last token only, so `a.>` matches `a.b` and
//! `a.b.c` but not `a`. A subscription is returned once for each time it was
//! inserted, so a connection with overlapping subscriptions (`a.>` and `a.b`)
//! is returned once for each of them, with each one's value.
//!
//! Patterns without wildcards sit in a hash map keyed by the whole topic,
//! their subscriptions inline. While a core has no wildcard subscription a
//! lookup is one probe of that map, as in the exact-topic table. Patterns
//! with wildcards go into a token trie, and the results for topics that
//! wildcards reach are remembered in a cache of at most [`CACHE_CAPACITY`]
//! topics. A topic no wildcard reaches is not cached, so that a core with
//! many exact topics does not churn the cache: its result is its exact
//! entry, found after one probe of the trie's first level when no wildcard
//! pattern starts like it, else after a walk of the levels that do.
//!
//! A lookup lends its result (`&Match<T>`), copying and counting nothing;
//! a caller that must keep it across a change of the index clones it.
//!
//! Memory follows the live subscriptions: removing the last subscription of
//! a pattern removes its map entry or the trie nodes nothing else uses, and
//! lists and maps that shrink to a quarter of their capacity give memory
//! back.

mod cache;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, rc::Rc};

use cache::Cache;

/// Most topics the lookup cache remembers (nats-server keeps 1024 too);
/// past that, a new entry evicts one by the clock (second-chance) rule. An
/// entry holds its topic and a copy of its subscriptions, so the cache's
/// memory is at most this many times the largest fan-out that involves a
/// wildcard.
pub(crate) const CACHE_CAPACITY: usize = 1024;

type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// The subscriptions a topic reaches, or that one pattern holds.
#[derive(Debug, Clone)]
pub(crate) struct Match<T> {
    /// Subscriptions without a queue group: each gets every message.
    plain: Vec<T>,
    /// Queue groups, each name once: one member of each gets a message.
    groups: Vec<Group<T>>,
}

/// The members of one queue group.
#[derive(Debug, Clone)]
pub(crate) struct Group<T> {
    /// The group's name, shared with the index so results copy no text.
    name: Rc<str>,
    /// Members in subscription order.
    members: Vec<T>,
}

/// What an insert or a remove did to its pattern, so that the caller can
/// keep interest records for other cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest {
    /// The change added a subscription (else it removed one); with the
    /// count this tells a first subscription from a last one.
    added: bool,
    /// Subscriptions the pattern has now, plain and queued.
    on_pattern: usize,
    /// Members the subscription's queue group has now on the pattern;
    /// `None` for a plain subscription.
    in_group: Option<usize>,
}

/// The index.
#[derive(Debug)]
pub(crate) struct Sublist<T> {
    /// Patterns without wildcards, by topic. For a topic that no wildcard
    /// reaches, the entry is the result itself.
    exact: Map<Match<T>>,
    /// Patterns with a wildcard; the root stands for the empty prefix.
    trie: Node<T>,
    /// Subscriptions in `trie`. While there are none, lookups use `exact`
    /// alone and skip the cache.
    wildcard_subs: usize,
    /// Subscriptions in all.
    subs: usize,
    /// Results for topics that wildcard patterns match: their
    /// subscriptions and the exact ones, merged.
    cache: Cache<Match<T>>,
    /// The result for a topic nobody wants.
    none: Match<T>,
}

/// One trie level: the wildcard patterns that share a prefix of tokens.
#[derive(Debug)]
struct Node<T> {
    /// Subscriptions whose pattern ends with this node's token.
    end: Match<T>,
    /// Subscriptions whose pattern goes on with a final `>` (at the root:
    /// the pattern `>`). `>` is always last, so it needs no node of its own.
    tail: Match<T>,
    /// Next level, by literal token.
    literal: Map<Node<T>>,
    /// Next level for `*`.
    star: Option<Box<Node<T>>>,
}

impl<T> Default for Match<T> {
    fn default() -> Self {
        Self { plain: Vec::new(), groups: Vec::new() }
    }
}

impl<T: Copy + Eq> Match<T> {
    /// Subscriptions without a queue group.
    pub(crate) fn plain(&self) -> &[T] {
        &self.plain
    }

    /// The queue groups reached, each once, with the members reached.
    pub(crate) fn groups(&self) -> &[Group<T>] {
        &self.groups
    }

    /// Subscriptions, plain and queued.
    pub(crate) fn len(&self) -> usize {
        self.plain.len() + self.groups.iter().map(|g| g.members.len()).sum::<usize>()
    }

    /// Whether nobody is reached.
    pub(crate) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn add(&mut self, queue: Option<&str>, value: T) -> Interest {
        let in_group = match queue {
            None => {
                self.plain.push(value);
                None
            }
            Some(name) => Some(self.join(name, value)),
        };
        Interest { added: true, on_pattern: self.len(), in_group }
    }

    /// Adds a member to a group, creating it; returns the group's size.
    fn join(&mut self, name: &str, value: T) -> usize {
        let at = match self.groups.iter().position(|g| *g.name == *name) {
            Some(at) => at,
            None => {
                self.groups.push(Group { name: Rc::from(name), members: Vec::new() });
                self.groups.len() - 1
            }
        };
        let members = &mut self.groups[at].members;
        members.push(value);
        members.len()
    }

    fn remove(&mut self, queue: Option<&str>, value: T) -> Option<Interest> {
        let in_group = match queue {
            None => {
                remove_one(&mut self.plain, value)?;
                None
            }
            Some(name) => Some(self.leave(name, value)?),
        };
        Some(Interest { added: false, on_pattern: self.len(), in_group })
    }

    /// Removes a member from a group, dropping the group when it empties;
    /// returns the group's size.
    fn leave(&mut self, name: &str, value: T) -> Option<usize> {
        let at = self.groups.iter().position(|g| *g.name == *name)?;
        let members = &mut self.groups[at].members;
        remove_one(members, value)?;
        let left = members.len();
        if left == 0 {
            self.groups.remove(at);
            shrink_vec(&mut self.groups);
        }
        Some(left)
    }

    /// Adds everyone in `other`, merging groups of the same name.
    fn absorb(&mut self, other: &Match<T>) {
        self.plain.extend_from_slice(&other.plain);
        for group in &other.groups {
            match self.groups.iter_mut().find(|g| g.name == group.name) {
                Some(mine) => mine.members.extend_from_slice(&group.members),
                None => self.groups.push(group.clone()),
            }
        }
    }
}

impl<T> Group<T> {
    /// The group's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The members reached, at least one.
    pub(crate) fn members(&self) -> &[T] {
        &self.members
    }
}

impl Interest {
    /// The pattern went from no subscription to one: this core now wants
    /// what matches it.
    pub(crate) fn opened(&self) -> bool {
        self.added && self.on_pattern == 1
    }

    /// The pattern lost its last subscription.
    pub(crate) fn closed(&self) -> bool {
        !self.added && self.on_pattern == 0
    }

    /// Subscriptions the pattern has now, plain and queued.
    pub(crate) fn subscriptions(&self) -> usize {
        self.on_pattern
    }

    /// Members the subscription's queue group has now on the pattern (the
    /// weight of this core in the group); `None` for a plain subscription.
    pub(crate) fn group_members(&self) -> Option<usize> {
        self.in_group
    }
}

impl<T: Copy + Eq> Default for Sublist<T> {
    fn default() -> Self {
        Self::with_cache_capacity(CACHE_CAPACITY)
    }
}

impl<T: Copy + Eq> Sublist<T> {
    /// An empty index with a cache of [`CACHE_CAPACITY`] topics.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An empty index whose cache holds at most `capacity` topics.
    pub(crate) fn with_cache_capacity(capacity: usize) -> Self {
        Self {
            exact: Map::default(),
            trie: Node::default(),
            wildcard_subs: 0,
            subs: 0,
            cache: Cache::new(capacity),
            none: Match::default(),
        }
    }

    /// Subscriptions held.
    pub(crate) fn len(&self) -> usize {
        self.subs
    }

    /// Whether no subscription is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.subs == 0
    }

    /// Topics whose result is cached.
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Subscribes `value` to `pattern`, in queue group `queue` if given.
    ///
    /// The caller validates the pattern (`topic::validate`) and the group
    /// name (`topic::validate_queue_group`). Values need not be unique: an
    /// equal value inserted twice is returned twice and must be removed
    /// twice.
    pub(crate) fn insert(&mut self, pattern: &str, queue: Option<&str>, value: T) -> Interest {
        let interest = if is_wildcard(pattern) {
            self.cache.remove_where(|topic| matches(pattern, topic));
            self.wildcard_subs += 1;
            self.trie.subs_mut(pattern).add(queue, value)
        } else {
            self.cache.remove(pattern);
            self.exact_entry(pattern).add(queue, value)
        };
        self.subs += 1;
        interest
    }

    /// Removes one subscription equal to (`pattern`, `queue`, `value`);
    /// `None` if there is none.
    pub(crate) fn remove(
        &mut self,
        pattern: &str,
        queue: Option<&str>,
        value: T,
    ) -> Option<Interest> {
        let interest = if is_wildcard(pattern) {
            self.remove_wildcard(pattern, queue, value)?
        } else {
            self.remove_exact(pattern, queue, value)?
        };
        self.subs -= 1;
        Some(interest)
    }

    /// Who a message published to `topic` (a literal topic) reaches.
    pub(crate) fn match_topic(&mut self, topic: &str) -> &Match<T> {
        if self.wildcard_subs == 0 || !self.trie.may_match(topic) {
            return self.exact_match(topic);
        }
        let Self { exact, trie, cache, none, .. } = self;
        match cache.get_or_cache(topic, || Self::merge(trie, exact, topic)) {
            Some(merged) => merged,
            None => exact.get(topic).unwrap_or(none),
        }
    }

    /// The subscriptions of the wildcard patterns matching `topic` and of
    /// its exact entry; `None` if no wildcard pattern matches.
    fn merge(trie: &Node<T>, exact: &Map<Match<T>>, topic: &str) -> Option<Match<T>> {
        let mut found = trie.wildcard_match(topic)?;
        if let Some(entry) = exact.get(topic) {
            found.absorb(entry);
        }
        Some(found)
    }

    fn exact_match(&self, topic: &str) -> &Match<T> {
        self.exact.get(topic).unwrap_or(&self.none)
    }

    fn exact_entry(&mut self, pattern: &str) -> &mut Match<T> {
        if !self.exact.contains_key(pattern) {
            self.exact.insert(Box::from(pattern), Match::default());
        }
        self.exact.get_mut(pattern).expect("entry was just ensured")
    }

    fn remove_exact(&mut self, pattern: &str, queue: Option<&str>, value: T) -> Option<Interest> {
        let interest = self.exact.get_mut(pattern)?.remove(queue, value)?;
        self.cache.remove(pattern);
        if interest.closed() {
            self.exact.remove(pattern);
            shrink_map(&mut self.exact);
        }
        Some(interest)
    }

    fn remove_wildcard(
        &mut self,
        pattern: &str,
        queue: Option<&str>,
        value: T,
    ) -> Option<Interest> {
        let interest = self.trie.remove(pattern, queue, value)?;
        self.wildcard_subs -= 1;
        if self.wildcard_subs == 0 {
            self.cache.clear();
        } else {
            self.cache.remove_where(|topic| matches(pattern, topic));
        }
        Some(interest)
    }
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self { end: Match::default(), tail: Match::default(), literal: Map::default(), star: None }
    }
}

impl<T: Copy + Eq> Node<T> {
    fn is_empty(&self) -> bool {
        self.end.is_empty()
            && self.tail.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
    }

    /// The subscriptions of `pattern` (tokens below this node), creating
    /// the nodes on the way.
    fn subs_mut(&mut self, pattern: &str) -> &mut Match<T> {
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

    fn child_or_new(&mut self, token: &str) -> &mut Node<T> {
        if token == "*" {
            return self.star.get_or_insert_with(Box::default);
        }
        if !self.literal.contains_key(token) {
            self.literal.insert(Box::from(token), Node::default());
        }
        self.literal.get_mut(token).expect("child was just ensured")
    }

    fn child_mut(&mut self, token: &str) -> Option<&mut Node<T>> {
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

    /// Removes one subscription of `pattern` (tokens below this node) and
    /// the nodes it leaves empty.
    fn remove(&mut self, pattern: &str, queue: Option<&str>, value: T) -> Option<Interest> {
        let (token, rest) = split_first(pattern);
        if token == ">" && rest.is_none() {
            return self.tail.remove(queue, value);
        }
        let child = self.child_mut(token)?;
        let interest = match rest {
            None => child.end.remove(queue, value),
            Some(rest) => child.remove(rest, queue, value),
        }?;
        if child.is_empty() {
            self.drop_child(token);
        }
        Some(interest)
    }

    /// Whether a pattern below this node might match `topic`, judged by
    /// its first token alone.
    fn may_match(&self, topic: &str) -> bool {
        let (token, _) = split_first(topic);
        !self.tail.is_empty() || self.star.is_some() || self.literal.contains_key(token)
    }

    /// The subscriptions below this node whose pattern matches `topic`;
    /// `None` if there are none.
    fn wildcard_match(&self, topic: &str) -> Option<Match<T>> {
        let mut found = Match::default();
        self.collect(topic, &mut found);
        (!found.is_empty()).then_some(found)
    }

    /// Adds to `found` the subscriptions below this node whose pattern
    /// matches `topic` (the topic's tokens below this node, at least one).
    /// Visits each node at most once: a node stands for one prefix.
    fn collect(&self, topic: &str, found: &mut Match<T>) {
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
    fn collect_rest(&self, rest: Option<&str>, found: &mut Match<T>) {
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
fn matches(pattern: &str, topic: &str) -> bool {
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

/// Removes the first element equal to `value`.
fn remove_one<T: Copy + Eq>(list: &mut Vec<T>, value: T) -> Option<()> {
    let at = list.iter().position(|v| *v == value)?;
    list.remove(at);
    shrink_vec(list);
    Some(())
}

/// Gives memory back once a list is down to a quarter of its capacity,
/// keeping room to double so that add/remove at the edge stays cheap.
fn shrink_vec<V>(list: &mut Vec<V>) {
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
