//! A user's publish and subscribe rules, compiled once per user (and per
//! reload) for the checks on `PUB`, `SUB` and delivery.
//!
//! - `PUB` to a topic: no deny rule matches it, and some allow rule does
//!   (or there is no allow list).
//! - `SUB` to a pattern: no deny rule covers the whole pattern, and some
//!   allow rule does. A pattern that only overlaps a deny rule (allowed
//!   `a.*`, denied `a.secret`) is admitted and marked: its deliveries are
//!   checked one topic at a time ([`Compiled::may_receive`]), and only its.
//!
//! Each check walks the rules; the connection's [`Grant`](crate::auth)
//! remembers the answers per topic.

use corecast_proto::topic;

use super::config::{AllowResponses, Permissions, Rules};

/// Compiled rules; shared by every connection of the user, on every core.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    publish: RuleSet,
    subscribe: RuleSet,
    responses: Option<AllowResponses>,
}

/// One direction's rules.
#[derive(Debug, Default)]
struct RuleSet {
    /// `None`: everything not denied.
    allow: Option<Vec<Box<str>>>,
    deny: Vec<Box<str>>,
}

impl Compiled {
    /// Compiles `rules`; an invalid topic or pattern is refused, naming it.
    pub(crate) fn new(rules: &Permissions) -> Result<Self, String> {
        Ok(Self {
            publish: RuleSet::new(&rules.publish, "publish")?,
            subscribe: RuleSet::new(&rules.subscribe, "subscribe")?,
            responses: rules.allow_responses,
        })
    }

    /// Everything allowed: no user configured.
    pub(crate) fn allow_all() -> Self {
        Self::default()
    }

    /// Whether nothing is ever refused: the connection skips every check.
    pub(crate) fn is_allow_all(&self) -> bool {
        self.publish.is_open() && self.subscribe.is_open()
    }

    /// Whether the user may publish to the literal `topic`.
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        self.publish.permits_topic(topic)
    }

    /// Whether the user may subscribe to `pattern` (a queue subscription
    /// too): some allow rule covers all of it and no deny rule does.
    pub(crate) fn may_subscribe(&self, pattern: &str) -> bool {
        let set = &self.subscribe;
        let allowed = set.allow.as_ref().is_none_or(|a| a.iter().any(|r| covers(r, pattern)));
        allowed && !set.deny.iter().any(|r| covers(r, pattern))
    }

    /// Whether an admitted subscription to `pattern` may reach a topic a
    /// deny rule refuses: then each delivery is checked.
    pub(crate) fn overlaps_deny(&self, pattern: &str) -> bool {
        self.subscribe.deny.iter().any(|r| intersects(r, pattern))
    }

    /// Whether a message on `topic` may reach the user's subscriptions.
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        !self.subscribe.deny.iter().any(|r| covers(r, topic))
    }

    /// The replies allowed outside the publish rules, if any.
    pub(crate) fn allow_responses(&self) -> Option<AllowResponses> {
        self.responses
    }
}

impl RuleSet {
    fn new(rules: &Rules, what: &str) -> Result<Self, String> {
        let check = |list: &[String]| -> Result<Vec<Box<str>>, String> {
            list.iter()
                .map(|p| match topic::validate(p) {
                    Ok(_) => Ok(p.as_str().into()),
                    Err(e) => Err(format!("{what} rule {p:?}: {e}")),
                })
                .collect()
        };
        Ok(Self {
            allow: rules.allow.as_deref().map(check).transpose()?,
            deny: check(&rules.deny)?,
        })
    }

    fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    fn permits_topic(&self, topic: &str) -> bool {
        let allowed = self.allow.as_ref().is_none_or(|a| a.iter().any(|r| covers(r, topic)));
        allowed && !self.deny.iter().any(|r| covers(r, topic))
    }
}

/// Whether every topic `specific` matches is matched by `general` (both
/// valid patterns; a literal topic is a pattern that matches itself).
pub(crate) fn covers(general: &str, specific: &str) -> bool {
    let (mut g, mut s) = (general.split('.'), specific.split('.'));
    loop {
        match (g.next(), s.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b && a != "*" && a != ">" => {}
            _ => return false,
        }
    }
}

/// Whether some topic matches both patterns.
pub(crate) fn intersects(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Rules {
        let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Rules { allow: allow.map(list), deny: list(deny) }
    }

    fn subscriber(allow: Option<&[&str]>, deny: &[&str]) -> Compiled {
        let perms = Permissions { subscribe: rules(allow, deny), ..Permissions::default() };
        Compiled::new(&perms).expect("valid rules")
    }

    #[test]
    fn covers_follows_the_wildcard_rules() {
        for (g, s) in [
            ("a.>", "a.b"),
            ("a.>", "a.*"),
            ("a.>", "a.b.>"),
            (">", ">"),
            (">", "a"),
            ("a.*", "a.b"),
            ("a.*", "a.*"),
            ("*.b", "a.b"),
            ("a.b", "a.b"),
        ] {
            assert!(covers(g, s), "{g} covers {s}");
        }
        for (g, s) in [
            ("a.>", "a"),
            ("a.>", ">"),
            ("a.*", "a.>"),
            ("a.*", "a.b.c"),
            ("a.b", "a.*"),
            ("a.b", "a.c"),
            ("a.*", "a"),
            ("*", ">"),
        ] {
            assert!(!covers(g, s), "{g} does not cover {s}");
        }
    }

    #[test]
    fn intersects_is_symmetric_and_exact() {
        for (a, b) in [("a.*", "a.secret"), ("a.>", "*.b"), (">", "x"), ("a.*.c", "a.b.*")] {
            assert!(intersects(a, b) && intersects(b, a), "{a} meets {b}");
        }
        for (a, b) in [("a.*", "b.*"), ("a.>", "a"), ("a.*", "a.b.c"), ("a.b", "a.c")] {
            assert!(!intersects(a, b) && !intersects(b, a), "{a} misses {b}");
        }
    }

    #[test]
    fn a_full_wildcard_is_refused_when_only_a_subtree_is_allowed() {
        let c = subscriber(Some(&["a.>"]), &[]);
        assert!(!c.may_subscribe(">"));
        assert!(!c.may_subscribe("*.b"));
        assert!(c.may_subscribe("a.>"));
        assert!(c.may_subscribe("a.b.*"));
        assert!(c.may_subscribe("a.b"));
    }

    #[test]
    fn a_wildcard_overlapping_a_deny_is_admitted_and_filtered() {
        let c = subscriber(Some(&["a.*"]), &["a.secret"]);
        assert!(c.may_subscribe("a.*"));
        assert!(c.overlaps_deny("a.*"));
        assert!(!c.may_receive("a.secret"));
        assert!(c.may_receive("a.public"));
        assert!(!c.may_subscribe("a.secret"), "deny wins over allow");
        assert!(!c.overlaps_deny("a.public"));
    }

    #[test]
    fn deny_wins_for_publish() {
        let perms = Permissions {
            publish: rules(Some(&["orders.>"]), &["orders.internal.*"]),
            ..Permissions::default()
        };
        let c = Compiled::new(&perms).expect("valid");
        assert!(c.may_publish("orders.new"));
        assert!(!c.may_publish("orders.internal.audit"));
        assert!(!c.may_publish("payments.new"));
        assert!(!c.is_allow_all());
        assert!(Compiled::allow_all().is_allow_all());
    }

    #[test]
    fn a_bad_rule_is_named() {
        let perms = Permissions { publish: rules(None, &["a..b"]), ..Permissions::default() };
        let e = Compiled::new(&perms).expect_err("invalid");
        assert!(e.contains("publish rule \"a..b\""), "{e}");
    }
}
