//! `max_connect_rate`: a token bucket shared by one listener's accept loops on every shard.
//!
//! An accept loop takes a token before each `accept()`; with none left it sleeps until the next
//! one, so connections beyond the rate wait in the kernel's listen backlog (up to 4096) rather than
//! being refused, and a reconnect storm is admitted at a steady pace while established
//! connections keep their shard's time. The bucket holds up to one second of tokens (a burst).
//! Knows nothing of MQTT or sockets.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct ConnectRate {
    per_second: f64,
    /// Tokens available and when they were counted.
    bucket: Mutex<(f64, Instant)>,
}

impl ConnectRate {
    pub fn new(per_second: u32, now: Instant) -> ConnectRate {
        let per_second = f64::from(per_second.max(1));
        ConnectRate {
            per_second,
            bucket: Mutex::new((per_second, now)),
        }
    }

    /// The rate it was made with.
    pub fn per_second(&self) -> u32 {
        self.per_second as u32
    }

    /// Takes a token: `None` when one was available, otherwise how long until the next one.
    pub fn take(&self, now: Instant) -> Option<Duration> {
        let Ok(mut bucket) = self.bucket.lock() else {
            // A poisoned lock (a panic elsewhere while holding it) must not stop accepting.
            return None;
        };
        let (tokens, at) = *bucket;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
            .min(self.per_second);
        if refilled >= 1.0 {
            *bucket = (refilled - 1.0, now);
            None
        } else {
            *bucket = (refilled, now);
            Some(Duration::from_secs_f64((1.0 - refilled) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let start = Instant::now();
        let rate = ConnectRate::new(10, start);
        for _ in 0..10 {
            assert_eq!(rate.take(start), None);
        }
        let wait = rate.take(start).expect("bucket empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(rate.take(start + Duration::from_millis(100)), None);
        assert!(rate.take(start + Duration::from_millis(100)).is_some());
        // Idle time refills up to one second's worth, not more.
        let later = start + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(rate.take(later), None);
        }
        assert!(rate.take(later).is_some());
    }
}
