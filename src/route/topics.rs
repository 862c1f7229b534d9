//! One core's subscription table: for each topic pattern, who wants it.
//!
//! One [`Sublist`] of [`TopicEntry`]s holds everything a publish needs: the
//! local subscriptions, the other cores with subscribers, and each queue
//! group with its members here and how many it has on each other core. A
//! publish is therefore one lookup, and for a topic that no wildcard
//! pattern reaches that lookup is one hash probe that lends the pattern's
//! own entry, with nothing copied. Topics that wildcards reach get their
//! merged entry from the index's cache.
//!
//! Entries exist only while someone is interested, so the table is bounded
//! by the subscriptions that exist on all cores.

#[cfg(test)]
mod tests;

use std::rc::Rc;

use super::sublist::{shrink_vec, Entry, Sublist};
use crate::mesh::coreset::CoreSet;

/// A subscription held by a connection of this core.
///
/// Two are equal when they are the same connection's same sid: that is
/// what identifies a subscription when it is removed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSub {
    /// Slab key of the subscribing connection.
    pub key: usize,
    /// The connection's id for the subscription, echoed in `MSG`.
    pub sid: u32,
    /// Drop and count instead of disconnecting when the subscriber is slow.
    pub lossy: bool,
    /// The connection speaks 1.1: a message with headers reaches it as
    /// `HMSG`. Kept here so the fan-out need not look at the session.
    pub hmsg: bool,
}

impl PartialEq for LocalSub {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.sid == other.sid
    }
}

impl Eq for LocalSub {}

/// Who wants one pattern or, as a lookup's result, one topic (the entries
/// of every pattern matching it, merged).
#[derive(Debug, Default, Clone)]
pub(crate) struct TopicEntry {
    /// Subscriptions on this core without a queue group, in subscription
    /// order; each gets every message.
    local: Vec<LocalSub>,
    /// Other cores with at least one subscription without a queue group:
    /// each gets one copy of every message.
    remote: CoreSet,
    /// Queue groups with a member on any core, each name once: one member
    /// of each gets a message.
    groups: Vec<QueueGroup>,
}

/// One queue group's members, as one pattern (or one topic) sees them.
#[derive(Debug, Clone)]
pub(crate) struct QueueGroup {
    /// The group's name; shared, so merged results copy no text.
    name: Rc<str>,
    /// Members on this core, in subscription order.
    local: Vec<LocalSub>,
    /// Members on other cores: how many each has, which weighs the core
    /// when a member is drawn. Each core once, none with zero.
    remote: Vec<RemoteMembers>,
}

/// How many members of one group one other core has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RemoteMembers {
    core: usize,
    members: u32,
}

/// What a change to this core's subscriptions means for the other cores,
/// which must hear of it to route to this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing they need to know.
    Quiet,
    /// The pattern's first subscription here without a queue group arrived
    /// (`true`), or its last one left (`false`).
    Plain(bool),
    /// The subscription's queue group now has this many members here on
    /// the pattern (0: none left).
    Members(u32),
}

impl TopicEntry {
    /// Local subscriptions without a queue group.
    pub(crate) fn local(&self) -> &[LocalSub] {
        &self.local
    }

    /// Other cores with subscriptions without a queue group.
    pub(crate) fn remote(&self) -> &CoreSet {
        &self.remote
    }

    /// Queue groups with at least one member somewhere.
    pub(crate) fn groups(&self) -> &[QueueGroup] {
        &self.groups
    }

    /// The group called `name`, if it has a member somewhere.
    pub(crate) fn group(&self, name: &str) -> Option<&QueueGroup> {
        self.groups.iter().find(|g| *g.name == *name)
    }

    fn add_local(&mut self, queue: Option<&str>, sub: LocalSub) -> Change {
        match queue {
            None => {
                self.local.push(sub);
                if self.local.len() == 1 {
                    Change::Plain(true)
                } else {
                    Change::Quiet
                }
            }
            Some(name) => {
                let group = self.group_or_new(name);
                group.local.push(sub);
                Change::Members(group.local_members())
            }
        }
    }

    fn remove_local(&mut self, queue: Option<&str>, sub: LocalSub) -> Change {
        match queue {
            None => self.remove_plain(sub),
            Some(name) => self.leave_group(name, sub),
        }
    }

    fn remove_plain(&mut self, sub: LocalSub) -> Change {
        if remove_one(&mut self.local, sub) && self.local.is_empty() {
            return Change::Plain(false);
        }
        Change::Quiet
    }

    fn leave_group(&mut self, name: &str, sub: LocalSub) -> Change {
        let Some(at) = self.groups.iter().position(|g| *g.name == *name) else {
            return Change::Quiet;
        };
        let group = &mut self.groups[at];
        if !remove_one(&mut group.local, sub) {
            return Change::Quiet;
        }
        let left = group.local_members();
        self.drop_group_if_unused(at);
        Change::Members(left)
    }

    fn set_remote(&mut self, core: usize, interested: bool) {
        if interested {
            self.remote.insert(core);
        } else {
            self.remote.remove(core);
        }
    }

    fn set_remote_members(&mut self, name: &str, core: usize, members: u32) {
        if members > 0 {
            self.group_or_new(name).set_remote(core, members);
            return;
        }
        if let Some(at) = self.groups.iter().position(|g| *g.name == *name) {
            self.groups[at].set_remote(core, 0);
            self.drop_group_if_unused(at);
        }
    }

    fn group_or_new(&mut self, name: &str) -> &mut QueueGroup {
        let at = match self.groups.iter().position(|g| *g.name == *name) {
            Some(at) => at,
            None => {
                self.groups.push(QueueGroup::new(name));
                self.groups.len() - 1
            }
        };
        &mut self.groups[at]
    }

    fn drop_group_if_unused(&mut self, at: usize) {
        if self.groups[at].is_empty() {
            self.groups.swap_remove(at);
            shrink_vec(&mut self.groups);
        }
    }
}

impl Entry for TopicEntry {
    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty() && self.groups.is_empty()
    }

    fn absorb(&mut self, other: &Self) {
        self.local.extend_from_slice(&other.local);
        self.remote.union_with(&other.remote);
        for theirs in &other.groups {
            match self.groups.iter_mut().find(|g| g.name == theirs.name) {
                Some(mine) => mine.absorb(theirs),
                None => self.groups.push(theirs.clone()),
            }
        }
    }
}

impl QueueGroup {
    fn new(name: &str) -> Self {
        Self { name: Rc::from(name), local: Vec::new(), remote: Vec::new() }
    }

    /// The group's name, shared with the table.
    pub(crate) fn name(&self) -> &Rc<str> {
        &self.name
    }

    /// Members on this core.
    pub(crate) fn local(&self) -> &[LocalSub] {
        &self.local
    }

    /// Other cores with members, each with how many it has.
    pub(crate) fn remote(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.remote.iter().map(|r| (r.core, r.members))
    }

    /// Members on other cores, all together.
    pub(crate) fn remote_members(&self) -> u64 {
        self.remote.iter().map(|r| u64::from(r.members)).sum()
    }

    fn local_members(&self) -> u32 {
        u32::try_from(self.local.len()).unwrap_or(u32::MAX)
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }

    /// Records that `core` has `members` members (0: none).
    fn set_remote(&mut self, core: usize, members: u32) {
        let at = self.remote.iter().position(|r| r.core == core);
        match (at, members) {
            (Some(at), 0) => {
                self.remote.swap_remove(at);
                shrink_vec(&mut self.remote);
            }
            (Some(at), _) => self.remote[at].members = members,
            (None, 0) => {}
            (None, _) => self.remote.push(RemoteMembers { core, members }),
        }
    }

    /// Adds the members of the same group under another pattern.
    fn absorb(&mut self, other: &QueueGroup) {
        self.local.extend_from_slice(&other.local);
        for theirs in &other.remote {
            match self.remote.iter_mut().find(|r| r.core == theirs.core) {
                Some(mine) => mine.members += theirs.members,
                None => self.remote.push(*theirs),
            }
        }
    }
}

/// The table.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    table: Sublist<TopicEntry>,
}

impl Topics {
    /// Who a message published to `topic` reaches; `None` when nobody.
    #[inline]
    pub(crate) fn get(&mut self, topic: &str) -> Option<&TopicEntry> {
        self.table.match_topic(topic)
    }

    /// Adds a local subscription to `pattern`, a member of `queue` if
    /// given; says what the other cores must be told.
    pub(crate) fn add_local(
        &mut self,
        pattern: &str,
        queue: Option<&str>,
        sub: LocalSub,
    ) -> Change {
        self.table.update(pattern, |e| e.add_local(queue, sub))
    }

    /// Removes the local subscription `sid` of connection `key`; says what
    /// the other cores must be told.
    pub(crate) fn remove_local(
        &mut self,
        pattern: &str,
        queue: Option<&str>,
        key: usize,
        sid: u32,
    ) -> Change {
        let sub = LocalSub { key, sid, lossy: false, hmsg: false };
        self.table.update(pattern, |e| e.remove_local(queue, sub))
    }

    /// Records whether core `core` has subscriptions without a queue group
    /// to `pattern`.
    pub(crate) fn set_remote(&mut self, pattern: &str, core: usize, interested: bool) {
        self.table.update(pattern, |e| e.set_remote(core, interested));
    }

    /// Records how many members of group `queue` core `core` has on
    /// `pattern`.
    pub(crate) fn set_remote_members(&mut self, pattern: &str, queue: &str, core: usize, n: u32) {
        self.table.update(pattern, |e| e.set_remote_members(queue, core, n));
    }

    /// A table whose lookup cache holds at most `capacity` topics.
    #[cfg(test)]
    pub(crate) fn with_cache_capacity(capacity: usize) -> Self {
        Self { table: Sublist::with_cache_capacity(capacity) }
    }

    /// The index itself.
    #[cfg(test)]
    pub(crate) fn table(&self) -> &Sublist<TopicEntry> {
        &self.table
    }
}

/// Removes the first element equal to `value`; false if there is none.
fn remove_one<T: Eq>(list: &mut Vec<T>, value: T) -> bool {
    let Some(at) = list.iter().position(|v| *v == value) else { return false };
    list.remove(at);
    shrink_vec(list);
    true
}
