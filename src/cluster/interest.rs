//! Who wants what, by holder: this node's cores (the bridge's own node) or
//! the other nodes (the cluster's view). One type serves both sides: an
//! index that answers which holders a topic reaches, and per pattern the
//! totals whose changes the other side must hear of.
//!
//! A holder is a small index: a core number, or a peer's slot in the view.

use std::{collections::HashMap, rc::Rc};

use crate::route::sublist::{shrink_vec, Entry, Sublist};

/// Who wants one pattern or, as a lookup's result, one topic.
#[derive(Debug, Default, Clone)]
pub(crate) struct Holders {
    /// Holders with subscriptions without a queue group, each once.
    plain: Vec<usize>,
    /// Queue groups: each holder with its members, none with zero.
    groups: Vec<(Rc<str>, Members)>,
}

/// Holders of one queue group, each with its members.
type Members = Vec<(usize, u32)>;

impl Entry for Holders {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }

    fn absorb(&mut self, other: &Self) {
        for &h in &other.plain {
            if !self.plain.contains(&h) {
                self.plain.push(h);
            }
        }
        for (name, members) in &other.groups {
            match self.groups.iter_mut().find(|(n, _)| n == name) {
                Some((_, mine)) => {
                    for &(h, n) in members {
                        match mine.iter_mut().find(|(m, _)| *m == h) {
                            Some((_, count)) => *count = count.saturating_add(n),
                            None => mine.push((h, n)),
                        }
                    }
                }
                None => self.groups.push((name.clone(), members.clone())),
            }
        }
    }
}

impl Holders {
    /// Holders with subscriptions without a queue group.
    pub(crate) fn plain(&self) -> &[usize] {
        &self.plain
    }

    /// Draws one holder of `group`, each weighted by its members;
    /// `pick` is a uniform draw below its argument. `None`: the group has
    /// no member anywhere.
    pub(crate) fn draw(&self, group: &str, pick: impl FnOnce(u64) -> u64) -> Option<usize> {
        let (_, members) = self.groups.iter().find(|(n, _)| &**n == group)?;
        let total: u64 = members.iter().map(|&(_, n)| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let mut at = pick(total);
        for &(holder, n) in members {
            if at < u64::from(n) {
                return Some(holder);
            }
            at -= u64::from(n);
        }
        None
    }

    fn set_plain(&mut self, holder: usize, on: bool) -> bool {
        let at = self.plain.iter().position(|&h| h == holder);
        match (at, on) {
            (None, true) => self.plain.push(holder),
            (Some(at), false) => {
                self.plain.swap_remove(at);
                shrink_vec(&mut self.plain);
            }
            _ => return false,
        }
        true
    }

    /// Sets `holder`'s members of `group`; returns the previous count.
    fn set_members(&mut self, holder: usize, group: &str, members: u32) -> u32 {
        let g = match self.groups.iter().position(|(n, _)| &**n == group) {
            Some(g) => g,
            None if members == 0 => return 0,
            None => {
                self.groups.push((Rc::from(group), Vec::new()));
                self.groups.len() - 1
            }
        };
        let list = &mut self.groups[g].1;
        let before = match list.iter().position(|&(h, _)| h == holder) {
            Some(at) if members == 0 => list.swap_remove(at).1,
            Some(at) => std::mem::replace(&mut list[at].1, members),
            None if members > 0 => {
                list.push((holder, members));
                0
            }
            None => 0,
        };
        if list.is_empty() {
            self.groups.swap_remove(g);
            shrink_vec(&mut self.groups);
        }
        before
    }
}

/// What a change did to the totals over holders: what the other side is
/// told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Total {
    /// The first holder without a queue group came (`true`) or the last
    /// one left (`false`).
    Plain(bool),
    /// The group's members over every holder are now this many.
    Members(u32),
}

/// The index and the totals per pattern.
#[derive(Debug, Default)]
pub(crate) struct Interest {
    index: Sublist<Holders>,
    /// Per pattern: holders without a group, and members per group, summed
    /// over holders. What the other side knows.
    totals: HashMap<Box<str>, PatternTotal>,
}

#[derive(Debug, Default)]
struct PatternTotal {
    plain: usize,
    groups: HashMap<Box<str>, u32>,
}

impl PatternTotal {
    fn is_empty(&self) -> bool {
        self.plain == 0 && self.groups.is_empty()
    }
}

impl Interest {
    /// Records whether `holder` has subscriptions without a group on
    /// `pattern`; returns the change of the total, if any.
    pub(crate) fn set_plain(&mut self, holder: usize, pattern: &str, on: bool) -> Option<Total> {
        if !self.index.update(pattern, |e| e.set_plain(holder, on)) {
            return None;
        }
        let total = self.totals.entry(pattern.into()).or_default();
        let flipped = if on {
            total.plain += 1;
            total.plain == 1
        } else {
            total.plain = total.plain.saturating_sub(1);
            total.plain == 0
        };
        self.forget_if_empty(pattern);
        flipped.then_some(Total::Plain(on))
    }

    /// Records `holder`'s members of `group` on `pattern`; returns the new
    /// total when it changed.
    pub(crate) fn set_members(
        &mut self,
        holder: usize,
        pattern: &str,
        group: &str,
        members: u32,
    ) -> Option<Total> {
        let before = self.index.update(pattern, |e| e.set_members(holder, group, members));
        if before == members {
            return None;
        }
        let total = self.totals.entry(pattern.into()).or_default();
        let sum = total.groups.get(group).copied().unwrap_or(0);
        let sum = sum.saturating_sub(before).saturating_add(members);
        if sum == 0 {
            total.groups.remove(group);
        } else {
            total.groups.insert(group.into(), sum);
        }
        self.forget_if_empty(pattern);
        Some(Total::Members(sum))
    }

    fn forget_if_empty(&mut self, pattern: &str) {
        if self.totals.get(pattern).is_some_and(PatternTotal::is_empty) {
            self.totals.remove(pattern);
            if self.totals.capacity() > 64 && self.totals.len() < self.totals.capacity() / 4 {
                self.totals.shrink_to_fit();
            }
        }
    }

    /// Who a message to `topic` reaches.
    pub(crate) fn lookup(&mut self, topic: &str) -> Option<&Holders> {
        self.index.match_topic(topic)
    }

    /// Patterns with any interest.
    pub(crate) fn patterns(&self) -> usize {
        self.totals.len()
    }

    /// Every total, as `(pattern, group, value)`: `group` `None` for the
    /// subscriptions without a group (value 1).
    pub(crate) fn totals(&self) -> impl Iterator<Item = (&str, Option<&str>, u32)> {
        self.totals.iter().flat_map(|(pattern, t)| {
            let plain = (t.plain > 0).then_some((&**pattern, None, 1));
            plain.into_iter().chain(t.groups.iter().map(move |(g, &n)| (&**pattern, Some(&**g), n)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_change_only_at_the_edges() {
        let mut i = Interest::default();
        assert_eq!(i.set_plain(0, "a.*", true), Some(Total::Plain(true)));
        assert_eq!(i.set_plain(1, "a.*", true), None);
        assert_eq!(i.set_plain(1, "a.*", true), None);
        assert_eq!(i.set_plain(0, "a.*", false), None);
        assert_eq!(i.set_plain(1, "a.*", false), Some(Total::Plain(false)));
        assert_eq!(i.patterns(), 0);
        assert_eq!(i.set_members(0, "q", "g", 2), Some(Total::Members(2)));
        assert_eq!(i.set_members(1, "q", "g", 3), Some(Total::Members(5)));
        assert_eq!(i.set_members(1, "q", "g", 3), None);
        assert_eq!(i.set_members(0, "q", "g", 0), Some(Total::Members(3)));
        assert_eq!(i.set_members(1, "q", "g", 0), Some(Total::Members(0)));
        assert_eq!(i.patterns(), 0);
        assert!(i.lookup("q").is_none());
    }

    #[test]
    fn lookups_merge_patterns_and_draws_follow_members() {
        let mut i = Interest::default();
        i.set_plain(0, "a.>", true);
        i.set_plain(2, "a.b", true);
        i.set_members(1, "a.*", "g", 1);
        i.set_members(2, "a.b", "g", 3);
        let h = i.lookup("a.b").expect("matches").clone();
        let mut plain = h.plain().to_vec();
        plain.sort_unstable();
        assert_eq!(plain, [0, 2]);
        let draws: Vec<_> = (0..4)
            .map(|n| {
                h.draw("g", |total| {
                    assert_eq!(total, 4);
                    n
                })
            })
            .collect();
        assert_eq!(draws.iter().filter(|d| **d == Some(1)).count(), 1);
        assert_eq!(draws.iter().filter(|d| **d == Some(2)).count(), 3);
        assert_eq!(h.draw("other", |_| 0), None);
        let mut totals: Vec<_> =
            i.totals().map(|(p, g, n)| (p.to_string(), g.map(str::to_string), n)).collect();
        totals.sort();
        assert_eq!(totals.len(), 4);
    }
}
