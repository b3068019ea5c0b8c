//! How long to sleep between tries while waiting for a lock.

use std::time::{Duration, Instant};

/// Sleeps between non-blocking tries: short at first so a lock that is released
/// soon is handed over within microseconds, then capped so a waiter notices a
/// release within [`Backoff::MAX_DELAY`] without spinning.
///
/// flock(2) cannot be waited on with a timeout, and a blocking `flock` in a
/// helper thread cannot be cancelled without signals, so waiting is polling.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first sleep.
    pub const MIN_DELAY: Duration = Duration::from_micros(20);
    /// The longest sleep: half of it is the mean extra latency of a handover.
    pub const MAX_DELAY: Duration = Duration::from_micros(500);

    /// A backoff that starts at [`Backoff::MIN_DELAY`].
    pub fn new() -> Self {
        Self {
            next: Self::MIN_DELAY,
        }
    }
}

impl Backoff {
    /// The next sleep of a wait that started at `start` and may last `wait`,
    /// shortened so it ends with the wait; `None` once the wait is over.
    pub fn delay(&mut self, start: Instant, wait: Duration) -> Option<Duration> {
        let left = wait
            .checked_sub(start.elapsed())
            .filter(|left| !left.is_zero())?;
        let delay = self.next.min(left);
        self.next = (self.next * 2).min(Self::MAX_DELAY);
        Some(delay)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let start = Instant::now();
        let hour = Duration::from_secs(3600);
        let delays: Vec<_> = (0..8)
            .map(|_| backoff.delay(start, hour).unwrap().as_micros())
            .collect();
        assert_eq!(delays, [20, 40, 80, 160, 320, 500, 500, 500]);
    }

    #[test]
    fn ends_with_the_wait() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.delay(Instant::now(), Duration::ZERO), None);
        let start = Instant::now() - Duration::from_secs(2);
        assert_eq!(backoff.delay(start, Duration::from_secs(1)), None);
        let left = backoff
            .delay(Instant::now(), Duration::from_micros(5))
            .unwrap();
        assert!(left <= Duration::from_micros(5));
    }
}
