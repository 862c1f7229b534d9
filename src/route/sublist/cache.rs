//! A bounded cache of lookups, topic → result, with second-chance (clock)
//! eviction.
//!
//! Entries live in a fixed ring of at most `capacity` slots. A hit marks its
//! slot. When a new entry finds no free slot, a hand walks the ring: a marked
//! slot loses its mark and is passed over once, the first unmarked slot is
//! evicted. Entries used since the hand last passed survive, so a hot topic
//! stays cached while cold ones cycle through.

use std::{collections::HashMap, rc::Rc};

type Index = HashMap<Rc<str>, usize, foldhash::fast::RandomState>;

/// One cached result.
#[derive(Debug)]
struct Entry<V> {
    /// The topic, shared with the index so that eviction can find it there.
    topic: Rc<str>,
    value: V,
    /// Hit since the hand last passed: spared once by eviction.
    referenced: bool,
}

/// The cache.
#[derive(Debug)]
pub(super) struct Cache<V> {
    /// Where each cached topic sits in `slots`.
    index: Index,
    /// The ring; `None` is a slot emptied by invalidation.
    slots: Vec<Option<Entry<V>>>,
    /// Emptied slots, reused before anything is evicted.
    free: Vec<usize>,
    /// Next slot the eviction hand looks at.
    hand: usize,
    /// Most entries held at once.
    capacity: usize,
}

impl<V> Cache<V> {
    /// An empty cache of at most `capacity` entries (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            index: Index::default(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            capacity: capacity.max(1),
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The cached value for `topic`, marking it as used. On a miss, calls
    /// `make`, and caches and returns what it returns, if anything
    /// (evicting one entry when the cache is full).
    pub(super) fn get_or_cache(
        &mut self,
        topic: &str,
        make: impl FnOnce() -> Option<V>,
    ) -> Option<&V> {
        let slot = match self.index.get(topic) {
            Some(&slot) => {
                self.entry_mut(slot).referenced = true;
                slot
            }
            None => self.insert(topic, make()?),
        };
        Some(&self.entry_mut(slot).value)
    }

    /// Caches `value` for `topic`, which is not cached; returns its slot.
    fn insert(&mut self, topic: &str, value: V) -> usize {
        let topic: Rc<str> = Rc::from(topic);
        let slot = self.vacant_slot();
        self.index.insert(topic.clone(), slot);
        let entry = Entry { topic, value, referenced: false };
        match self.slots.get_mut(slot) {
            Some(place) => *place = Some(entry),
            None => self.slots.push(Some(entry)),
        }
        slot
    }

    /// The entry in a slot the index points to.
    fn entry_mut(&mut self, slot: usize) -> &mut Entry<V> {
        self.slots[slot].as_mut().expect("the index points at full slots only")
    }

    /// Forgets the entry for `topic`, if any.
    pub(super) fn remove(&mut self, topic: &str) {
        if let Some(slot) = self.index.remove(topic) {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }

    /// Forgets every entry whose topic satisfies `stale`.
    pub(super) fn remove_where(&mut self, mut stale: impl FnMut(&str) -> bool) {
        for (slot, place) in self.slots.iter_mut().enumerate() {
            if place.as_ref().is_some_and(|e| stale(&e.topic)) {
                if let Some(entry) = place.take() {
                    self.index.remove(&entry.topic);
                    self.free.push(slot);
                }
            }
        }
    }

    /// Forgets everything and gives the memory back.
    pub(super) fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }

    /// A slot for a new entry: an emptied one, a new one while the ring is
    /// below capacity, else the one the clock evicts.
    fn vacant_slot(&mut self) -> usize {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        if self.slots.len() < self.capacity {
            return self.slots.len();
        }
        self.evict()
    }

    /// Advances the hand to the first unmarked entry, unmarking the ones it
    /// passes, and empties that slot. Ends within two turns of the ring:
    /// after one turn every entry is unmarked.
    fn evict(&mut self) -> usize {
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if std::mem::take(&mut self.entry_mut(slot).referenced) {
                continue;
            }
            if let Some(old) = self.slots[slot].take() {
                self.index.remove(&old.topic);
            }
            return slot;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<V: Copy> Cache<V> {
        /// The cached value, marking it as used.
        fn get(&mut self, topic: &str) -> Option<V> {
            let &slot = self.index.get(topic)?;
            let entry = self.entry_mut(slot);
            entry.referenced = true;
            Some(entry.value)
        }

        fn put(&mut self, topic: &str, value: V) {
            self.get_or_cache(topic, || Some(value));
        }
    }

    #[test]
    fn hit_and_miss() {
        let mut c = Cache::new(4);
        assert_eq!(c.get_or_cache("a", || None), None, "nothing to cache");
        assert_eq!(c.len(), 0);
        assert_eq!(c.get_or_cache("a", || Some(1)), Some(&1), "a miss caches the new value");
        assert_eq!(c.get_or_cache("a", || Some(2)), Some(&1), "a hit returns the cached value");
        c.remove("a");
        assert_eq!(c.get("a"), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn never_holds_more_than_capacity() {
        let mut c = Cache::new(3);
        for i in 0..100 {
            c.put(&i.to_string(), i);
            assert!(c.len() <= 3);
            assert_eq!(c.get(&i.to_string()), Some(i), "the newest entry is cached");
        }
        assert_eq!(c.slots.len(), 3);
    }

    #[test]
    fn an_entry_used_since_the_hand_passed_is_spared() {
        let mut c = Cache::new(3);
        for t in ["a", "b", "c"] {
            c.put(t, ());
        }
        c.get("a");
        c.put("d", ());
        assert!(c.get("a").is_some(), "a was used: spared");
        assert!(c.get("b").is_none(), "b was the first unused entry");
        assert!(c.get("c").is_some() && c.get("d").is_some());
    }

    #[test]
    fn emptied_slots_are_reused_before_eviction() {
        let mut c = Cache::new(3);
        for t in ["a", "b", "c"] {
            c.put(t, ());
        }
        c.remove("b");
        c.put("d", ());
        for t in ["a", "c", "d"] {
            assert!(c.get(t).is_some(), "{t}");
        }
    }

    #[test]
    fn remove_where_forgets_matching_topics() {
        let mut c = Cache::new(8);
        for t in ["a.1", "a.2", "b.1"] {
            c.put(t, ());
        }
        c.remove_where(|t| t.starts_with("a."));
        assert_eq!(c.len(), 1);
        assert!(c.get("b.1").is_some());
        for t in ["x", "y", "z", "w", "v", "u", "s"] {
            c.put(t, ());
        }
        assert_eq!(c.len(), 8);
        assert_eq!(c.slots.len(), 8, "emptied slots were reused");
    }

    #[test]
    fn clear_empties() {
        let mut c = Cache::new(2);
        c.put("a", ());
        c.clear();
        assert_eq!(c.len(), 0);
        assert!(c.get("a").is_none());
    }
}
