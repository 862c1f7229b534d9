//! Latency histograms (HDR, nanoseconds) and their summaries (microseconds).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in nanoseconds, 1 ns to 100 s, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 100_000_000_000, 3)
            .expect("constant bounds are valid for hdrhistogram");
        Self { hist }
    }

    /// Records one value, clamped into the histogram's range.
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Adds every value recorded in `other`, as if it had been recorded
    /// here too (the runs of several rounds into one distribution).
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same constant bounds and values are clamped into
        // them when recorded, so the addition always fits.
        self.hist.add(&other.hist).expect("histograms with the same bounds add up");
    }

    /// The percentiles the reports use.
    pub fn summary(&self) -> Summary {
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            count: self.hist.len(),
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: self.hist.max() as f64 / 1000.0,
            mean_us: self.hist.mean() / 1000.0,
        }
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest value.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles() {
        let mut h = Latency::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.p999_us - 999.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        h.record(5_000_000);
        assert!((h.summary().max_us - 5000.0).abs() < 5.0);
    }

    /// Pseudo-random latencies with a long tail (xorshift, deterministic).
    fn values(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let base = 5_000 + x % 20_000;
                if x.is_multiple_of(97) {
                    base * (1 + x % 300)
                } else {
                    base
                }
            })
            .collect()
    }

    #[test]
    fn merged_rounds_equal_one_recording_of_everything() {
        let rounds = [values(1, 30_000), values(2, 10_000), values(3, 50_000)];
        let mut all = Latency::new();
        let mut merged = Latency::new();
        for round in &rounds {
            let mut h = Latency::new();
            for &v in round {
                h.record(v);
                all.record(v);
            }
            merged.merge(&h);
        }
        assert_eq!(merged.summary().count, 90_000);
        assert_eq!(merged.summary(), all.summary());
        // Merging an empty histogram changes nothing; merging into an
        // empty one copies.
        merged.merge(&Latency::new());
        assert_eq!(merged.summary(), all.summary());
        let mut copy = Latency::new();
        assert_eq!(copy.summary().count, 0);
        copy.merge(&all);
        assert_eq!(copy.summary(), all.summary());
    }
}
