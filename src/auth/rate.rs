//! A connection's publish rate: token buckets for messages and bytes per
//! second. A connection over its rate is not refused anything: the broker
//! stops reading it until the buckets refill (TCP backpressure), so what
//! waits is in the client's socket, not in the broker.

use std::time::{Duration, Instant};

use super::config::UserLimits;

/// The buckets of one connection.
#[derive(Debug)]
pub(crate) struct Rate {
    msgs: Option<Bucket>,
    bytes: Option<Bucket>,
}

/// One bucket: `rate` tokens a second, at most one second's worth held.
/// A batch is charged whole, so the level may go below zero; the next
/// publish waits until it is above zero again.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    level: f64,
    at: Instant,
}

impl Rate {
    /// The buckets `limits` ask for; `None` without a publish rate.
    pub(crate) fn new(limits: UserLimits, now: Instant) -> Option<Self> {
        let bucket = |rate: f64| Bucket { rate, level: rate, at: now };
        let msgs = limits.publish_msgs_per_sec.filter(|r| *r > 0).map(|r| bucket(r.into()));
        let bytes = limits.publish_bytes_per_sec.filter(|r| *r > 0).map(|r| bucket(r as f64));
        (msgs.is_some() || bytes.is_some()).then_some(Self { msgs, bytes })
    }

    /// When the connection may publish again, if not now.
    pub(crate) fn wait(&mut self, now: Instant) -> Option<Instant> {
        let a = self.msgs.as_mut().and_then(|b| b.wait(now));
        let b = self.bytes.as_mut().and_then(|b| b.wait(now));
        a.max(b)
    }

    /// Charges a published batch.
    pub(crate) fn charge(&mut self, msgs: usize, bytes: usize) {
        if let Some(b) = &mut self.msgs {
            b.level -= msgs as f64;
        }
        if let Some(b) = &mut self.bytes {
            b.level -= bytes as f64;
        }
    }
}

impl Bucket {
    fn wait(&mut self, now: Instant) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.level > 0.0 {
            return None;
        }
        let secs = (-self.level + 1.0) / self.rate;
        Some(now + Duration::from_secs_f64(secs.min(60.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(msgs: Option<u32>, bytes: Option<u64>) -> UserLimits {
        UserLimits {
            publish_msgs_per_sec: msgs,
            publish_bytes_per_sec: bytes,
            ..UserLimits::default()
        }
    }

    #[test]
    fn no_rate_no_bucket() {
        assert!(Rate::new(limits(None, None), Instant::now()).is_none());
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut rate = Rate::new(limits(Some(100), None), t0).expect("limited");
        assert_eq!(rate.wait(t0), None);
        rate.charge(100, 0);
        let until = rate.wait(t0).expect("spent");
        let waited = until - t0;
        assert!(
            waited >= Duration::from_millis(9) && waited <= Duration::from_millis(11),
            "{waited:?}"
        );
        assert_eq!(rate.wait(t0 + Duration::from_millis(20)), None);
    }

    #[test]
    fn bytes_limit_on_their_own() {
        let t0 = Instant::now();
        let mut rate = Rate::new(limits(None, Some(1000)), t0).expect("limited");
        rate.charge(1, 3000);
        let until = rate.wait(t0).expect("in debt");
        assert!(until - t0 >= Duration::from_secs(2), "a debt of 2 s: {:?}", until - t0);
    }
}
