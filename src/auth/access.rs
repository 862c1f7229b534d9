//! What one connection may do and how much: its user's grant, the replies
//! `allow_responses` lets it send, its publish rate and its place in its
//! user's connection count. Held by the slot (boxed: connections with
//! everything allowed carry none) and dropped with it.

use std::{rc::Rc, time::Instant};

use super::{census::Lease, grant::Grant, rate::Rate, replies::Replies};

/// Whether a publish may go, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    /// The user's publish rules allow the topic.
    ByRules,
    /// A reply to a request the connection received (`allow_responses`).
    ByPermit,
    /// Neither.
    No,
}

/// One connection's access.
#[derive(Debug)]
pub(crate) struct Access {
    grant: Rc<Grant>,
    /// Permits to answer requests received; only with `allow_responses`.
    replies: Option<Replies>,
    /// Only with a publish rate.
    rate: Option<Rate>,
    /// Counts the connection against its user's `max_connections` until
    /// the slot is freed.
    lease: Option<Lease>,
    /// Its user's tag ([`super::principal`]): requests that carry it are
    /// its own, and give no permit.
    principal: u64,
}

impl Access {
    pub(crate) fn new(
        grant: Rc<Grant>,
        (lease, principal): (Option<Lease>, u64),
        now: Instant,
    ) -> Self {
        let replies = grant.rules().allow_responses().map(|_| Replies::default());
        let rate = Rate::new(grant.limits(), now);
        Self { grant, replies, rate, lease, principal }
    }

    /// The user's rules on this core.
    pub(crate) fn grant(&self) -> &Rc<Grant> {
        &self.grant
    }

    /// Takes the rules and limits of a reload, keeping the permits and the
    /// lease; a changed publish rate starts a full bucket.
    pub(crate) fn regrant(&mut self, grant: Rc<Grant>) {
        if grant.rules().allow_responses().is_none() {
            self.replies = None;
        } else if self.replies.is_none() {
            self.replies = Some(Replies::default());
        }
        if grant.limits() != self.grant.limits() {
            self.rate = Rate::new(grant.limits(), Instant::now());
        }
        self.grant = grant;
    }

    /// Counts the connection for its user from now on, if it was not: a
    /// reload gave the user `max_connections`.
    pub(crate) fn count_with(&mut self, lease: impl FnOnce() -> Option<Lease>) {
        if self.lease.is_none() {
            self.lease = lease();
        }
    }

    /// Whether the connection may publish to `topic`: its rules allow it,
    /// or it holds a permit to answer a request it received there (used
    /// only once the reply is delivered: [`Access::use_permit`]).
    pub(crate) fn may_publish(&mut self, topic: &str) -> Allowed {
        if self.grant.may_publish(topic) {
            Allowed::ByRules
        } else if self.replies.as_mut().is_some_and(|r| r.holds(topic, Instant::now())) {
            Allowed::ByPermit
        } else {
            Allowed::No
        }
    }

    /// Uses the permit [`Access::may_publish`] found for `topic`, now that
    /// the reply went out.
    pub(crate) fn use_permit(&mut self, topic: &str, now: Instant) {
        if let Some(replies) = &mut self.replies {
            replies.take(topic, now);
        }
    }

    /// Whether deliveries to the connection need a look: it answers
    /// requests under `allow_responses`.
    pub(crate) fn notes_requests(&self) -> bool {
        self.replies.is_some()
    }

    /// Messages on `topic` with `requests` (each one's reply-to and
    /// requester) are about to reach a subscription (`guarded`: its
    /// pattern overlaps a deny rule). False when the topic is denied to
    /// the user; otherwise the requests of other users among them become
    /// permits. `now` is read once, only if needed.
    pub(crate) fn admit<'a>(
        &mut self,
        guarded: bool,
        topic: &str,
        requests: impl Iterator<Item = (&'a str, u64)>,
        now: &mut Option<Instant>,
    ) -> bool {
        if guarded && !self.grant.may_receive(topic) {
            return false;
        }
        if let (Some(replies), Some(rule)) =
            (self.replies.as_mut(), self.grant.rules().allow_responses())
        {
            let others = requests.filter(|(r, by)| !r.is_empty() && *by != self.principal);
            for (reply_to, _) in others {
                replies.received(reply_to, rule, *now.get_or_insert_with(Instant::now));
            }
        }
        true
    }

    /// When the connection may publish again, if its rate says not now.
    /// The clock is read only for a connection with a rate.
    pub(crate) fn rate_wait(&mut self) -> Option<Instant> {
        self.rate.as_mut()?.wait(Instant::now())
    }

    /// Charges a published batch of `msgs` to the rate; `bytes` is
    /// counted only for a connection with one.
    pub(crate) fn charge(&mut self, msgs: usize, bytes: impl FnOnce() -> usize) {
        if let Some(rate) = &mut self.rate {
            rate.charge(msgs, bytes());
        }
    }
}
