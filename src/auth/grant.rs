//! What one user may do, as one core sees it: the user's compiled rules
//! with the answers this core already gave, per topic.
//!
//! The connections that share rules and limits on a core share one
//! [`Grant`] ([`Grants`]); a connection with everything allowed has none
//! and pays for no check. The answers of all of a core's grants live in
//! one store with one bound, whatever the number of users.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::{Rc, Weak},
    sync::Arc,
};

use super::{config::UserLimits, permissions::Compiled};

/// Answers a core keeps for all its grants; past it they start over.
const VERDICTS: usize = 16_384;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A user's rules and limits on one core, with a cache of answers.
#[derive(Debug)]
pub(crate) struct Grant {
    /// Its answers' key in the store.
    id: u64,
    rules: Arc<Compiled>,
    limits: UserLimits,
    /// The core's answers: a publish is one hash probe once its topic was
    /// seen, whatever the number of rules.
    verdicts: Rc<RefCell<Verdicts>>,
}

/// The answers of a core's grants, per grant and topic, at most
/// [`VERDICTS`] in all.
#[derive(Debug, Default)]
struct Verdicts {
    by_grant: Map<u64, Map<Box<str>, Verdict>>,
    total: usize,
}

/// What a topic was found to allow; `None` until asked.
#[derive(Debug, Default, Clone, Copy)]
struct Verdict {
    publish: Option<bool>,
    receive: Option<bool>,
}

impl Grant {
    /// The rules.
    pub(crate) fn rules(&self) -> &Arc<Compiled> {
        &self.rules
    }

    /// The user's limits.
    pub(crate) fn limits(&self) -> UserLimits {
        self.limits
    }

    /// Whether the user may publish to `topic` (cached).
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        self.cached(topic, |v| &mut v.publish, |r| r.may_publish(topic))
    }

    /// Whether a message on `topic` may reach the user (cached).
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        self.cached(topic, |v| &mut v.receive, |r| r.may_receive(topic))
    }

    /// Whether the user may subscribe to `pattern`.
    pub(crate) fn may_subscribe(&self, pattern: &str) -> bool {
        self.rules.may_subscribe(pattern)
    }

    /// Whether deliveries to a subscription on `pattern` need checking.
    pub(crate) fn overlaps_deny(&self, pattern: &str) -> bool {
        self.rules.overlaps_deny(pattern)
    }

    fn cached(
        &self,
        topic: &str,
        field: impl Fn(&mut Verdict) -> &mut Option<bool>,
        decide: impl FnOnce(&Compiled) -> bool,
    ) -> bool {
        let mut store = self.verdicts.borrow_mut();
        let known = store.by_grant.get_mut(&self.id).and_then(|m| m.get_mut(topic));
        if let Some(known) = known.and_then(|v| *field(v)) {
            return known;
        }
        let answer = decide(&self.rules);
        store.record(self.id, topic, |v| *field(v) = Some(answer));
        answer
    }
}

impl Verdicts {
    fn record(&mut self, grant: u64, topic: &str, set: impl FnOnce(&mut Verdict)) {
        let known = self.by_grant.get(&grant).is_some_and(|m| m.contains_key(topic));
        if !known && self.total >= VERDICTS {
            self.by_grant.clear();
            self.total = 0;
        }
        let topics = self.by_grant.entry(grant).or_default();
        let verdict = topics.entry(topic.into()).or_insert_with(|| {
            self.total += 1;
            Verdict::default()
        });
        set(verdict);
    }

    fn forget(&mut self, grant: u64) {
        if let Some(topics) = self.by_grant.remove(&grant) {
            self.total -= topics.len();
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.verdicts.borrow_mut().forget(self.id);
    }
}

/// The grants of one core, one per set of rules and limits while some
/// connection here has them.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    by_rules: HashMap<(usize, UserLimits), Weak<Grant>>,
    verdicts: Rc<RefCell<Verdicts>>,
    next_id: u64,
}

impl Grants {
    /// The grant of `rules` with `limits`: the one other connections with
    /// the same share, or a new one.
    pub(crate) fn grant(&mut self, rules: &Arc<Compiled>, limits: UserLimits) -> Rc<Grant> {
        let key = (Arc::as_ptr(rules) as usize, limits);
        if let Some(live) = self.by_rules.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        if self.by_rules.len() >= 64 {
            self.by_rules.retain(|_, g| g.strong_count() > 0);
        }
        self.next_id += 1;
        let grant = Rc::new(Grant {
            id: self.next_id,
            rules: Arc::clone(rules),
            limits,
            verdicts: Rc::clone(&self.verdicts),
        });
        self.by_rules.insert(key, Rc::downgrade(&grant));
        grant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permissions, Rules};

    fn denying(topic: &str) -> Arc<Compiled> {
        let rules = Rules { allow: None, deny: vec![topic.into()] };
        let perms = Permissions { publish: rules.clone(), subscribe: rules, ..Default::default() };
        Arc::new(Compiled::new(&perms).expect("valid"))
    }

    #[test]
    fn answers_are_cached_and_bounded_per_core() {
        let mut grants = Grants::default();
        let a = grants.grant(&denying("a.secret"), UserLimits::default());
        let b = grants.grant(&denying("b.secret"), UserLimits::default());
        assert!(!a.may_publish("a.secret"));
        assert!(!a.may_receive("a.secret"));
        assert!(a.may_publish("a.public"));
        assert!(!b.may_publish("b.secret") && b.may_publish("a.secret"));
        for i in 0..VERDICTS + 10 {
            assert!(a.may_publish(&format!("t.{i}")));
            assert!(b.may_publish(&format!("t.{i}")));
        }
        assert!(grants.verdicts.borrow().total <= VERDICTS);
        assert!(!a.may_publish("a.secret"), "an evicted answer is found again");
        drop(a);
        let left = grants.verdicts.borrow().total;
        assert!(left <= VERDICTS && grants.verdicts.borrow().by_grant.len() <= 1, "a's went");
    }

    #[test]
    fn connections_with_the_same_rules_share_one_grant() {
        let mut grants = Grants::default();
        let rules = denying("x");
        let a = grants.grant(&rules, UserLimits::default());
        let b = grants.grant(&rules, UserLimits::default());
        assert!(Rc::ptr_eq(&a, &b));
        let c = grants.grant(&denying("x"), UserLimits::default());
        assert!(!Rc::ptr_eq(&a, &c), "reloaded rules make a new grant");
        let limited = UserLimits { max_subscriptions: Some(1), ..UserLimits::default() };
        assert!(!Rc::ptr_eq(&a, &grants.grant(&rules, limited)), "other limits, another grant");
    }
}
