//! The one clock of the harness: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! Every thread stamps send and receive times with [`now_ns`], so a timestamp written into a payload
//! by one worker can be subtracted from a receive time taken by another. The same clock drives the
//! open-loop schedule through `timerfd` (see `engine`), which is why this is the raw kernel clock and
//! not an `Instant` relative to some epoch.

/// Nanoseconds of `CLOCK_MONOTONIC` (time since boot, not counting suspend).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds as nanoseconds, saturating (negative or NaN become 0).
pub fn secs_to_ns(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1e9).min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Nanoseconds as seconds.
pub fn ns_to_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_shared_between_threads() {
        let a = now_ns();
        let b = std::thread::spawn(now_ns).join().unwrap();
        let c = now_ns();
        assert!(a <= b && b <= c);
    }

    #[test]
    fn conversions() {
        assert_eq!(secs_to_ns(1.5), 1_500_000_000);
        assert_eq!(secs_to_ns(-1.0), 0);
        assert_eq!(secs_to_ns(f64::NAN), 0);
        assert!((ns_to_secs(2_500_000_000) - 2.5).abs() < 1e-12);
    }
}
