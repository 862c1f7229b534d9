//! Capped exponential backoff with jitter, for reconnecting.

use std::time::Duration;

/// How a client waits between reconnection attempts: the first wait is
/// about `initial`, each next one doubles, none exceeds `max`, and each is
/// drawn at random from the upper half of its range ("equal jitter") so that
/// many clients cut off together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first attempt.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Attempts before giving up and closing the client; `None` = never give
    /// up.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s, never giving up.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The wait before attempt number `attempt` (0 for the first), with
    /// jitter: between half the capped exponential value and all of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(fastrand::u64(0..=spread))
    }

    /// The capped exponential value for `attempt`, before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Whether attempt number `attempt` (0 for the first) may still be made.
    pub fn allows(&self, attempt: u32) -> bool {
        !matches!(self.max_attempts, Some(max) if attempt >= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: Some(3),
        }
    }

    #[test]
    fn ceiling_doubles_then_stays_capped() {
        let b = backoff();
        let ms: Vec<u128> = (0..8).map(|a| b.ceiling(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn delay_stays_within_the_upper_half() {
        let b = backoff();
        for attempt in 0..10 {
            let ceiling = b.ceiling(attempt);
            for _ in 0..200 {
                let d = b.delay(attempt);
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn delay_is_jittered() {
        let b = backoff();
        let distinct: std::collections::BTreeSet<_> = (0..50).map(|_| b.delay(4)).collect();
        assert!(distinct.len() > 10, "{distinct:?}");
    }

    #[test]
    fn attempts_are_limited_when_asked() {
        let b = backoff();
        assert!(b.allows(0) && b.allows(2));
        assert!(!b.allows(3));
        assert!(Backoff::default().allows(u32::MAX - 1));
    }
}
