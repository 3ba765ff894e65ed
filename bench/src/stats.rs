//! Latency histograms (HDR, nanosecond resolution, 3 significant digits) and their percentiles.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value recorded: 10 minutes in ns. Larger values are clamped to it.
const MAX_NS: u64 = 600_000_000_000;

/// A latency histogram in nanoseconds.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

/// Percentiles in microseconds, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency {
            // 1 ns .. 10 min at 3 significant digits: ~ 40 KiB per histogram.
            hist: Histogram::new_with_bounds(1, MAX_NS, 3).expect("constant, valid bounds"),
        }
    }

    /// Records one latency in ns (0 counts as 1 ns; beyond 10 minutes is clamped).
    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Adds every value of `other`.
    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail; ignore the impossible error.
        let _ = self.hist.add(&other.hist);
    }

    pub fn reset(&mut self) {
        self.hist.reset();
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at `quantile` (0..=1) in ns.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        self.hist.value_at_quantile(quantile)
    }

    /// The reported percentiles (all zero when empty).
    pub fn percentiles(&self) -> Percentiles {
        if self.hist.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: self.hist.len(),
            min: us(self.hist.min()),
            mean: self.hist.mean() / 1000.0,
            p50: us(self.hist.value_at_quantile(0.50)),
            p90: us(self.hist.value_at_quantile(0.90)),
            p99: us(self.hist.value_at_quantile(0.99)),
            p999: us(self.hist.value_at_quantile(0.999)),
            max: us(self.hist.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.001 + 1e-9
    }

    #[test]
    fn uniform_percentiles() {
        let mut h = Latency::new();
        // 1..=10000 µs, once each.
        for us in 1..=10_000u64 {
            h.record_ns(us * 1000);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 10_000);
        assert!(close(p.p50, 5000.0), "{p:?}");
        assert!(close(p.p90, 9000.0), "{p:?}");
        assert!(close(p.p99, 9900.0), "{p:?}");
        assert!(close(p.p999, 9990.0), "{p:?}");
        assert!(close(p.max, 10_000.0), "{p:?}");
        assert!(close(p.min, 1.0), "{p:?}");
        assert!(close(p.mean, 5000.5), "{p:?}");
    }

    #[test]
    fn outliers_show_in_the_tail_only() {
        let mut h = Latency::new();
        for _ in 0..9_990 {
            h.record_ns(100_000); // 100 µs
        }
        for _ in 0..10 {
            h.record_ns(50_000_000); // 50 ms
        }
        let p = h.percentiles();
        assert!(close(p.p50, 100.0));
        assert!(close(p.p99, 100.0));
        assert!(close(p.p999, 100.0), "{p:?}");
        assert!(close(p.max, 50_000.0), "{p:?}");
    }

    #[test]
    fn merge_equals_single() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        let mut all = Latency::new();
        for i in 1..5_000u64 {
            let v = i * 37 % 100_000 + 1;
            if i % 3 == 0 {
                a.record_ns(v)
            } else {
                b.record_ns(v)
            }
            all.record_ns(v);
        }
        a.add(&b);
        assert_eq!(a.percentiles(), all.percentiles());
    }

    #[test]
    fn empty_and_clamped() {
        let mut h = Latency::new();
        assert_eq!(h.percentiles(), Percentiles::default());
        h.record_ns(0);
        h.record_ns(u64::MAX);
        assert_eq!(h.count(), 2);
        assert!(h.percentiles().max >= 599_000_000.0);
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
