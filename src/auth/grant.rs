//! What one user may do, as one core sees it: the user's compiled rules
//! with the answers this core already gave, per topic.
//!
//! The connections of a user on a core share one [`Grant`] ([`Grants`]);
//! a connection with everything allowed has none and pays for no check.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::{Rc, Weak},
    sync::Arc,
};

use super::{config::UserLimits, permissions::Compiled};

/// Topics whose answers a grant keeps; past it the answers start over.
const VERDICTS: usize = 4096;

/// A user's rules and limits on one core, with a cache of answers.
#[derive(Debug)]
pub(crate) struct Grant {
    rules: Arc<Compiled>,
    limits: UserLimits,
    /// Answers per topic: a publish is one hash probe once its topic was
    /// seen, whatever the number of rules.
    verdicts: RefCell<HashMap<Box<str>, Verdict, foldhash::fast::RandomState>>,
}

/// What a topic was found to allow; `None` until asked.
#[derive(Debug, Default, Clone, Copy)]
struct Verdict {
    publish: Option<bool>,
    receive: Option<bool>,
}

impl Grant {
    pub(crate) fn new(rules: Arc<Compiled>, limits: UserLimits) -> Self {
        Self { rules, limits, verdicts: RefCell::default() }
    }

    /// The user's limits.
    pub(crate) fn limits(&self) -> UserLimits {
        self.limits
    }

    /// The compiled rules.
    pub(crate) fn rules(&self) -> &Arc<Compiled> {
        &self.rules
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
        let mut verdicts = self.verdicts.borrow_mut();
        if let Some(known) = verdicts.get_mut(topic).and_then(|v| *field(v)) {
            return known;
        }
        let answer = decide(&self.rules);
        if verdicts.len() >= VERDICTS && !verdicts.contains_key(topic) {
            verdicts.clear();
        }
        *field(verdicts.entry(topic.into()).or_default()) = Some(answer);
        answer
    }
}

/// The grants of one core, one per user while it has connections here.
#[derive(Debug, Default)]
pub(crate) struct Grants {
    by_user: HashMap<Option<Arc<str>>, Weak<Grant>>,
}

impl Grants {
    /// The grant of `user` with `rules`: the one its other connections
    /// share, unless the rules changed (a reload), then a new one.
    pub(crate) fn grant(
        &mut self,
        user: Option<Arc<str>>,
        rules: &Arc<Compiled>,
        limits: UserLimits,
    ) -> Rc<Grant> {
        if let Some(live) = self.by_user.get(&user).and_then(Weak::upgrade) {
            if Arc::ptr_eq(&live.rules, rules) && live.limits == limits {
                return live;
            }
        }
        if self.by_user.len() >= 64 {
            self.by_user.retain(|_, g| g.strong_count() > 0);
        }
        let grant = Rc::new(Grant::new(Arc::clone(rules), limits));
        self.by_user.insert(user, Rc::downgrade(&grant));
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
    fn answers_are_cached_and_bounded() {
        let grant = Grant::new(denying("a.secret"), UserLimits::default());
        assert!(!grant.may_publish("a.secret"));
        assert!(!grant.may_receive("a.secret"));
        assert!(grant.may_publish("a.public"));
        for i in 0..VERDICTS + 10 {
            assert!(grant.may_publish(&format!("t.{i}")));
        }
        assert!(grant.verdicts.borrow().len() <= VERDICTS);
        assert!(!grant.may_publish("a.secret"), "an evicted answer is found again");
    }

    #[test]
    fn a_user_shares_one_grant_until_its_rules_change() {
        let mut grants = Grants::default();
        let rules = denying("x");
        let user: Option<Arc<str>> = Some("svc".into());
        let a = grants.grant(user.clone(), &rules, UserLimits::default());
        let b = grants.grant(user.clone(), &rules, UserLimits::default());
        assert!(Rc::ptr_eq(&a, &b));
        let c = grants.grant(user, &denying("x"), UserLimits::default());
        assert!(!Rc::ptr_eq(&a, &c), "reloaded rules make a new grant");
    }
}
