//! The shard runtime's own counters ([`RuntimeStats`], next to the core's `broker::Stats`) and the
//! publish-to-deliver [`LatencyHistogram`]: plain data that a shard's tasks add to (`shard.rs`) and
//! its once-a-second snapshot copies (`snapshot.rs`).
//!
//! Must stay plain counters: no runtime, no knowledge of the shard, of `$SYS` or of Prometheus.

use std::time::Duration;

/// Upper bounds of the latency buckets, in nanoseconds (the Prometheus `le` values, in seconds, are
/// these / 1e9). A last, implicit bucket holds everything slower (`+Inf`).
pub(crate) const LATENCY_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A fixed-bucket histogram of durations: plain counters, `Copy`, cheap to record (one short scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    pub buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    pub count: u64,
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: [0; LATENCY_BOUNDS_NS.len() + 1],
            count: 0,
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let index = LATENCY_BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.buckets[index] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds another histogram's counts (aggregating shards).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Cumulative counts per bound, `+Inf` last (what the Prometheus text format wants).
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.buckets.iter().scan(0u64, |total, n| {
            *total += n;
            Some(*total)
        })
    }
}

/// Counters kept by the runtime itself (the core keeps its own).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RuntimeStats {
    pub bus_dropped_qos0: u64,
    pub bus_blocked: u64,
    pub handoffs_sent: u64,
    pub handoffs_received: u64,
    /// Persistence: journal writes or syncs that failed (each retried), bytes appended, syncs,
    /// snapshots written.
    pub journal_errors: u64,
    pub journal_bytes: u64,
    pub journal_syncs: u64,
    pub snapshots_written: u64,
    pub connection_panics: u64,
    /// Connections that ended before a complete first packet (port probes, health checks).
    pub closed_before_connect: u64,
    pub connect_timeouts: u64,
    pub rejected_max_connections: u64,
    /// Times an accept loop waited for `max_connect_rate`.
    pub accept_rate_waits: u64,
    /// TLS handshakes and WebSocket upgrades that failed.
    pub handshake_failures: u64,
    /// Connections closed on a `proxy-protocol` listener for a missing or malformed PROXY header
    /// (one closed before a complete header is `closed_before_connect`).
    pub proxy_header_failures: u64,
    /// Bytes read from client sockets after CONNECT (one add per read).
    pub bytes_received: u64,
    /// PUBLISH read → delivery written (one sample per write that carried a delivery).
    pub latency: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_and_cumulate() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(10)); // exactly the first bound
        h.record(Duration::from_micros(11));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // +Inf
        assert_eq!(h.count, 4);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(h.buckets[LATENCY_BOUNDS_NS.len()], 1);
        let cumulative: Vec<u64> = h.cumulative().collect();
        assert_eq!(cumulative.len(), LATENCY_BOUNDS_NS.len() + 1);
        assert_eq!(cumulative.last(), Some(&4));
        assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(h.sum_ns, 10_000 + 11_000 + 3_000_000 + 60_000_000_000);

        let mut total = LatencyHistogram::default();
        total.merge(&h);
        total.merge(&h);
        assert_eq!(total.count, 8);
        assert_eq!(total.buckets[1], 2);
    }
}
