//! One core's subscription table: for each topic, the local subscriptions
//! and the set of other cores that have subscribers for it.
//!
//! Entries exist only while someone is interested, so the table is bounded
//! by the subscriptions that exist on all cores.

use std::{collections::HashMap, rc::Rc};

use crate::mesh::coreset::CoreSet;

/// A subscription held by a connection of this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Who wants one topic.
#[derive(Debug, Default)]
pub(crate) struct TopicEntry {
    /// Subscriptions on this core, in subscription order.
    pub local: Vec<LocalSub>,
    /// Other cores with at least one subscription.
    pub remote: CoreSet,
}

impl TopicEntry {
    fn is_unused(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty()
    }
}

/// The table, keyed by topic.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    map: HashMap<Rc<str>, TopicEntry, foldhash::fast::RandomState>,
}

impl Topics {
    pub(crate) fn get(&self, topic: &str) -> Option<&TopicEntry> {
        self.map.get(topic)
    }

    fn entry(&mut self, topic: &str) -> &mut TopicEntry {
        if !self.map.contains_key(topic) {
            self.map.insert(Rc::from(topic), TopicEntry::default());
        }
        self.map.get_mut(topic).expect("entry was just ensured")
    }

    fn shared_name(&self, topic: &str) -> Rc<str> {
        let (name, _) = self.map.get_key_value(topic).expect("entry exists");
        name.clone()
    }

    /// Adds a local subscription. Returns the shared topic name and whether
    /// this core just became interested in the topic (its first local sub).
    pub(crate) fn add_local(&mut self, topic: &str, sub: LocalSub) -> (Rc<str>, bool) {
        let entry = self.entry(topic);
        let first = entry.local.is_empty();
        entry.local.push(sub);
        (self.shared_name(topic), first)
    }

    /// Removes a local subscription; true when it was this core's last one
    /// for the topic.
    pub(crate) fn remove_local(&mut self, topic: &str, key: usize, sid: u32) -> bool {
        let Some(entry) = self.map.get_mut(topic) else {
            return false;
        };
        let before = entry.local.len();
        entry.local.retain(|s| !(s.key == key && s.sid == sid));
        let last = before > 0 && entry.local.is_empty();
        if entry.is_unused() {
            self.map.remove(topic);
        }
        last
    }

    /// Records whether core `core` has subscribers for `topic`.
    pub(crate) fn set_remote(&mut self, topic: &str, core: usize, interested: bool) {
        if interested {
            self.entry(topic).remote.insert(core);
        } else if let Some(entry) = self.map.get_mut(topic) {
            entry.remote.remove(core);
            if entry.is_unused() {
                self.map.remove(topic);
            }
        }
    }

    /// Topics in the table (local or remote interest).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(key: usize, sid: u32) -> LocalSub {
        LocalSub { key, sid, lossy: false, hmsg: false }
    }

    #[test]
    fn interest_follows_first_and_last_local_sub() {
        let mut t = Topics::default();
        assert!(t.add_local("a", sub(1, 1)).1);
        assert!(!t.add_local("a", sub(2, 1)).1);
        assert!(!t.remove_local("a", 1, 1));
        assert!(t.remove_local("a", 2, 1));
        assert_eq!(t.len(), 0, "unused entries are removed");
    }

    #[test]
    fn remote_interest_keeps_entry_alive() {
        let mut t = Topics::default();
        t.set_remote("a", 3, true);
        t.add_local("a", sub(1, 7));
        assert!(t.remove_local("a", 1, 7));
        assert_eq!(t.get("a").map(|e| e.remote.iter().collect::<Vec<_>>()), Some(vec![3]));
        t.set_remote("a", 3, false);
        assert_eq!(t.len(), 0);
    }
}
