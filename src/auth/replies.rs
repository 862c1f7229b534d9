//! `allow_responses`: the reply-tos of requests a connection received,
//! which it may publish to once (or `max` times) within a window, even
//! outside its publish rules.

use std::{collections::VecDeque, time::Instant};

use super::config::AllowResponses;

/// Reply-tos a connection holds permits for at most; the oldest go first.
pub(crate) const MAX_PERMITS: usize = 64;

/// The permits of one connection.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    permits: VecDeque<Permit>,
}

#[derive(Debug)]
struct Permit {
    reply_to: Box<str>,
    left: u32,
    until: Instant,
}

impl Replies {
    /// A request with `reply_to` reached the connection at `now`.
    pub(crate) fn received(&mut self, reply_to: &str, rule: AllowResponses, now: Instant) {
        let until = now + std::time::Duration::from_millis(rule.window_ms);
        if let Some(p) = self.permits.iter_mut().find(|p| *p.reply_to == *reply_to) {
            p.left = rule.max;
            p.until = until;
            return;
        }
        if self.permits.len() == MAX_PERMITS {
            self.permits.pop_front();
        }
        self.permits.push_back(Permit { reply_to: reply_to.into(), left: rule.max, until });
    }

    /// Whether the connection holds a permit for `topic`.
    pub(crate) fn holds(&mut self, topic: &str, now: Instant) -> bool {
        self.permits.retain(|p| p.until > now && p.left > 0);
        self.permits.iter().any(|p| *p.reply_to == *topic)
    }

    /// Uses one permit for `topic`, if the connection holds one.
    pub(crate) fn take(&mut self, topic: &str, now: Instant) -> bool {
        self.permits.retain(|p| p.until > now && p.left > 0);
        let Some(i) = self.permits.iter().position(|p| *p.reply_to == *topic) else {
            return false;
        };
        self.permits[i].left -= 1;
        if self.permits[i].left == 0 {
            self.permits.remove(i);
        }
        true
    }

    /// Permits held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.permits.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_permit_is_used_up_and_expires() {
        let rule = AllowResponses { max: 2, window_ms: 1000 };
        let now = Instant::now();
        let mut r = Replies::default();
        assert!(!r.take("_inbox.1", now), "never received");
        r.received("_inbox.1", rule, now);
        assert!(r.take("_inbox.1", now));
        assert!(r.take("_inbox.1", now));
        assert!(!r.take("_inbox.1", now), "over max");
        r.received("_inbox.2", rule, now);
        assert!(!r.take("_inbox.2", now + Duration::from_secs(2)), "expired");
    }

    #[test]
    fn permits_are_bounded() {
        let rule = AllowResponses::default();
        let now = Instant::now();
        let mut r = Replies::default();
        for i in 0..MAX_PERMITS + 5 {
            r.received(&format!("r.{i}"), rule, now);
        }
        assert_eq!(r.len(), MAX_PERMITS);
        assert!(!r.take("r.0", now), "the oldest went first");
        assert!(r.take(&format!("r.{}", MAX_PERMITS + 4), now));
    }
}
