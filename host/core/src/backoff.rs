//! How long to sleep between tries while waiting for a lock.

use std::time::Duration;

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

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (delay * 2).min(Self::MAX_DELAY);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let delays: Vec<_> = Backoff::new().take(8).map(|d| d.as_micros()).collect();
        assert_eq!(delays, [20, 40, 80, 160, 320, 500, 500, 500]);
    }
}
