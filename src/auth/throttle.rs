//! Failed authentications, rate-limited per source address: a token
//! bucket per address (or IPv6 /64), so guessing passwords or tokens costs
//! an attacker time while a client that mistyped once is not held back.
//!
//! Time is the caller's `now` in whole seconds since the Unix epoch (what
//! [`super::Authenticator::begin`] is given): the throttle reads no clock.
//! A clock that steps back refills nothing until it has caught up again.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Mutex, PoisonError},
};

/// Failures an address may have in a row before it is throttled.
pub(crate) const BURST: u32 = 5;
/// Failures forgiven per second.
pub(crate) const REFILL_PER_SEC: u32 = 1;
/// Addresses tracked at most: the memory bound when many addresses fail.
pub(crate) const MAX_SOURCES: usize = 4096;
/// Checks one source may have under way at once; more wait their turn, so
/// guesses sent together meet the throttle as they are checked, while a
/// host that opens many connections at once still gets them all.
pub(crate) const MAX_CHECKING: u32 = 4;

/// Where failures are counted: an IPv4 address, or the /64 of an IPv6 one
/// (one host usually holds a whole /64, and would otherwise have 2^64
/// buckets to spend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl Source {
    fn of(peer: IpAddr) -> Self {
        match peer.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.to_bits()),
            IpAddr::V6(v6) => Self::V6Prefix(prefix64(v6)),
        }
    }
}

fn prefix64(v6: Ipv6Addr) -> u64 {
    (v6.to_bits() >> 64) as u64
}

/// One source's bucket: how many more failures it may have, as of when.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// The second `tokens` was last brought up to date.
    at: u64,
    /// Checks under way.
    checking: u32,
}

impl Bucket {
    /// The bucket as of `now`, refilled for the seconds since `at`.
    fn refilled(self, now: u64) -> Self {
        let elapsed = now.saturating_sub(self.at);
        let gained = elapsed.saturating_mul(u64::from(REFILL_PER_SEC));
        let tokens = u64::from(self.tokens).saturating_add(gained).min(u64::from(BURST)) as u32;
        Self { tokens, at: now.max(self.at), checking: self.checking }
    }

    /// Holds nothing a fresh bucket would not.
    fn is_full(self) -> bool {
        self.tokens >= BURST && self.checking == 0
    }
}

/// The buckets of the sources that failed recently. Not shared by itself:
/// the authenticator holds it behind a mutex.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    buckets: HashMap<Source, Bucket>,
}

impl Throttle {
    /// Whether `peer` has no failure left to spend at `now`: it must be
    /// refused without any verification.
    pub(crate) fn is_throttled(&self, peer: IpAddr, now: u64) -> bool {
        self.buckets.get(&Source::of(peer)).is_some_and(|b| b.refilled(now).tokens == 0)
    }

    /// Spends one of `peer`'s failures at `now`.
    pub(crate) fn record_failure(&mut self, peer: IpAddr, now: u64) {
        let source = Source::of(peer);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_SOURCES {
            self.make_room(now);
        }
        let bucket = self.bucket(peer, now);
        let mut refilled = bucket.refilled(now);
        refilled.tokens = refilled.tokens.saturating_sub(1);
        *bucket = refilled;
    }

    /// `peer`'s bucket, made (full) if it has none, room made for it.
    fn bucket(&mut self, peer: IpAddr, now: u64) -> &mut Bucket {
        let source = Source::of(peer);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_SOURCES {
            self.make_room(now);
        }
        self.buckets.entry(source).or_insert(Bucket { tokens: BURST, at: now, checking: 0 })
    }

    /// Starts a check from `peer`: refused when it has no failure left; a
    /// `slow` one (a password) is put off while it has [`MAX_CHECKING`]
    /// under way. Quick checks (tokens, JWTs, certificates) end before the
    /// next can start, so only slow ones are counted.
    pub(crate) fn begin_check(&mut self, peer: IpAddr, now: u64, slow: bool) -> Admission {
        if self.is_throttled(peer, now) {
            return Admission::Throttled;
        }
        if !slow {
            return Admission::Go;
        }
        let bucket = self.bucket(peer, now);
        // Each check under way may yet spend a failure: it holds one.
        if bucket.checking >= MAX_CHECKING || bucket.refilled(now).tokens <= bucket.checking {
            return Admission::Later;
        }
        bucket.checking += 1;
        Admission::Go
    }

    /// Ends a check from `peer`, spending a failure if it `failed`.
    pub(crate) fn end_check(&mut self, peer: IpAddr, now: u64, failed: bool, slow: bool) {
        if let Some(bucket) = self.buckets.get_mut(&Source::of(peer)).filter(|_| slow) {
            bucket.checking = bucket.checking.saturating_sub(1);
        }
        if failed {
            self.record_failure(peer, now);
        } else if self.buckets.get(&Source::of(peer)).is_some_and(|b| b.refilled(now).is_full()) {
            self.buckets.remove(&Source::of(peer));
        }
    }

    /// Frees at least one place: the buckets that have refilled go (they
    /// hold nothing a fresh bucket would not), and if none has, the one
    /// least recently touched.
    fn make_room(&mut self, now: u64) {
        self.buckets.retain(|_, b| !b.refilled(now).is_full());
        if self.buckets.len() < MAX_SOURCES {
            return;
        }
        // A source with checks under way loses its count of them: its
        // next checks are the more free, never the less.
        let oldest = self.buckets.iter().min_by_key(|(_, b)| b.at).map(|(source, _)| *source);
        if let Some(source) = oldest {
            self.buckets.remove(&source);
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The throttle shared by the cores (the cores count failures in their own
/// counters, `auth_failures` and `auth_throttled`).
///
/// A `std::sync::Mutex` is fine here: it is taken only while a `HELLO` is
/// checked (once to look, once more on a failure), never on the data
/// path, and held for a hash map operation.
#[derive(Debug, Default)]
pub(crate) struct Guard {
    throttle: Mutex<Throttle>,
}

/// Whether a check may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// It may.
    Go,
    /// The source has too many checks under way: ask again shortly.
    Later,
    /// The source failed too often lately: refuse without a check.
    Throttled,
}

impl Guard {
    /// Whether a check from `peer` may start at `now`. A started check
    /// must end with [`Guard::end_check`].
    pub(crate) fn admit(&self, peer: IpAddr, now: u64, slow: bool) -> Admission {
        self.lock().begin_check(peer, now, slow)
    }

    /// Ends a check from `peer`; a failure spends one of the source's
    /// failures.
    pub(crate) fn end_check(&self, peer: IpAddr, now: u64, failed: bool, slow: bool) {
        self.lock().end_check(peer, now, failed, slow);
    }

    /// The throttle; a panic while it was held left it consistent (each
    /// operation finishes its one map update), so poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn fail(throttle: &mut Throttle, peer: IpAddr, now: u64, times: u32) {
        for _ in 0..times {
            throttle.record_failure(peer, now);
        }
    }

    #[test]
    fn a_burst_of_failures_then_one_more_a_second() {
        let mut t = Throttle::default();
        for i in 0..BURST {
            assert!(!t.is_throttled(v4(1), 100), "failure {i} is within the burst");
            t.record_failure(v4(1), 100);
        }
        assert!(t.is_throttled(v4(1), 100));
        assert!(!t.is_throttled(v4(2), 100), "other addresses are not held back");
        assert!(!t.is_throttled(v4(1), 101), "one second refills one failure");
        t.record_failure(v4(1), 101);
        assert!(t.is_throttled(v4(1), 101));
        assert!(!t.is_throttled(v4(1), 200));
        fail(&mut t, v4(1), 200, BURST - 1);
        assert!(!t.is_throttled(v4(1), 200), "refilled to the burst, not beyond");
        t.record_failure(v4(1), 200);
        assert!(t.is_throttled(v4(1), 200));
    }

    #[test]
    fn checks_under_way_are_bounded_and_counted_when_they_fail() {
        let mut t = Throttle::default();
        for _ in 0..MAX_CHECKING {
            assert_eq!(t.begin_check(v4(1), 100, true), Admission::Go);
        }
        assert_eq!(t.begin_check(v4(1), 100, true), Admission::Later, "too many at once");
        assert_eq!(t.begin_check(v4(2), 100, true), Admission::Go, "another source is not held");
        for _ in 0..10 {
            assert_eq!(t.begin_check(v4(1), 100, false), Admission::Go, "quick checks never wait");
        }
        t.end_check(v4(1), 100, false, true);
        assert_eq!(t.begin_check(v4(1), 100, true), Admission::Go, "a place came free");
        for _ in 0..MAX_CHECKING {
            t.end_check(v4(1), 100, true, true);
        }
        fail(&mut t, v4(1), 100, BURST - MAX_CHECKING);
        assert_eq!(t.begin_check(v4(1), 100, true), Admission::Throttled);
        t.end_check(v4(2), 100, false, true);
        assert!(
            !t.buckets.contains_key(&Source::of(v4(2))),
            "a source that only succeeded is forgotten"
        );
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let mut t = Throttle::default();
        fail(&mut t, v4(1), 1000, BURST);
        assert!(t.is_throttled(v4(1), 10));
        assert!(t.is_throttled(v4(1), 1000));
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_v4_is_v4() {
        let mut t = Throttle::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff:eeee:dddd:cccc".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        fail(&mut t, a, 5, BURST);
        assert!(t.is_throttled(b, 5), "same /64");
        assert!(!t.is_throttled(other, 5), "another /64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("v6");
        fail(&mut t, v4(7), 5, BURST);
        assert!(t.is_throttled(mapped, 5));
    }

    #[test]
    fn at_most_4096_sources_and_the_refilled_go_first() {
        let peer = |i: u32| IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i));
        // Even sources failed once at 0 and have refilled by 5; odd ones
        // failed a whole burst at 4 and have not.
        let mut t = Throttle::default();
        for i in 0..MAX_SOURCES as u32 {
            let (at, times) = if i % 2 == 0 { (0, 1) } else { (4, BURST) };
            fail(&mut t, peer(i), at, times);
        }
        assert_eq!(t.len(), MAX_SOURCES);
        t.record_failure(peer(MAX_SOURCES as u32), 5);
        assert_eq!(t.len(), MAX_SOURCES / 2 + 1);
        assert!(t.is_throttled(peer(1), 4), "a source still failing is kept");
        // Full of sources that are all still draining: the oldest goes.
        let mut t = Throttle::default();
        for i in 0..MAX_SOURCES as u32 {
            fail(&mut t, peer(i), if i == 0 { 999 } else { 1000 }, BURST);
        }
        t.record_failure(peer(MAX_SOURCES as u32), 1000);
        assert_eq!(t.len(), MAX_SOURCES);
        assert!(!t.is_throttled(peer(0), 999), "the oldest was evicted");
        assert!(t.is_throttled(peer(1), 1000));
        assert!(t.is_throttled(peer(MAX_SOURCES as u32 - 1), 1000));
    }
}
