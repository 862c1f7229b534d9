//! One core's subscription table: the local subscriptions by pattern, and
//! for each other core the patterns it has subscribers for.
//!
//! Both are [`Sublist`]s, so a topic without wildcards anywhere is one
//! hash probe in each. Entries exist only while someone is interested, so
//! the table is bounded by the subscriptions that exist on all cores.

use super::sublist::{Match, Sublist};
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

/// Who wants one topic: borrowed from the table for one publish.
#[derive(Debug)]
pub(crate) struct TopicEntry<'a> {
    /// Subscriptions on this core whose pattern matches, each once per
    /// matching subscription.
    pub local: &'a [LocalSub],
    /// Other cores with at least one matching pattern.
    pub remote: CoreSet,
}

/// The table.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    /// This core's subscriptions, by pattern.
    local: Sublist<LocalSub>,
    /// The patterns other cores have subscribers for; the value is the
    /// core. A core says so once per pattern, so each appears once.
    remote: Sublist<u8>,
}

impl Topics {
    /// Who a message published to `topic` reaches; `None` when nobody.
    pub(crate) fn get(&mut self, topic: &str) -> Option<TopicEntry<'_>> {
        let remote = cores(self.remote.match_topic(topic));
        let local = self.local.match_topic(topic).plain();
        if local.is_empty() && remote.is_empty() {
            return None;
        }
        Some(TopicEntry { local, remote })
    }

    /// Adds a local subscription to `pattern`; true when this core just
    /// became interested in the pattern (its first local sub to it).
    pub(crate) fn add_local(&mut self, pattern: &str, sub: LocalSub) -> bool {
        self.local.insert(pattern, None, sub).opened()
    }

    /// Removes a local subscription; true when it was this core's last one
    /// for the pattern.
    pub(crate) fn remove_local(&mut self, pattern: &str, key: usize, sid: u32) -> bool {
        let sub = LocalSub { key, sid, lossy: false, hmsg: false };
        self.local.remove(pattern, None, sub).is_some_and(|i| i.closed())
    }

    /// Records whether core `core` has subscribers for `pattern`.
    pub(crate) fn set_remote(&mut self, pattern: &str, core: usize, interested: bool) {
        let core = u8::try_from(core).expect("core ids fit a CoreSet");
        if interested {
            self.remote.insert(pattern, None, core);
        } else {
            self.remote.remove(pattern, None, core);
        }
    }

    /// Subscriptions in the table (local or remote interest).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.local.len() + self.remote.len()
    }
}

/// The cores in a remote match, each once however many patterns matched.
fn cores(found: &Match<u8>) -> CoreSet {
    let mut set = CoreSet::default();
    for &core in found.plain() {
        set.insert(usize::from(core));
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(key: usize, sid: u32) -> LocalSub {
        LocalSub { key, sid, lossy: false, hmsg: false }
    }

    fn remote(t: &mut Topics, topic: &str) -> Vec<usize> {
        t.get(topic).map(|e| e.remote.iter().collect()).unwrap_or_default()
    }

    #[test]
    fn interest_follows_first_and_last_local_sub() {
        let mut t = Topics::default();
        assert!(t.add_local("a", sub(1, 1)));
        assert!(!t.add_local("a", sub(2, 1)));
        assert!(!t.remove_local("a", 1, 1));
        assert!(t.remove_local("a", 2, 1));
        assert_eq!(t.len(), 0, "unused entries are removed");
    }

    #[test]
    fn remote_interest_is_per_pattern() {
        let mut t = Topics::default();
        t.set_remote("a", 3, true);
        t.add_local("a", sub(1, 7));
        assert!(t.remove_local("a", 1, 7));
        assert_eq!(remote(&mut t, "a"), vec![3]);
        t.set_remote("a", 3, false);
        assert_eq!(t.len(), 0);
        assert!(t.get("a").is_none());
    }

    #[test]
    fn wildcards_match_locally_and_remotely_once_per_core() {
        let mut t = Topics::default();
        t.add_local("a.*", sub(1, 1));
        t.add_local("a.>", sub(1, 2));
        t.add_local("a.b", sub(2, 1));
        t.set_remote("a.>", 2, true);
        t.set_remote("*.b", 2, true);
        t.set_remote("x.>", 1, true);
        let e = t.get("a.b").expect("someone listens");
        assert_eq!(e.local.len(), 3, "each matching subscription once");
        assert_eq!(e.remote.iter().collect::<Vec<_>>(), vec![2]);
        assert_eq!(t.get("a.b.c").map(|e| e.local.len()), Some(1));
        assert!(t.get("b.c").is_none());
    }
}
