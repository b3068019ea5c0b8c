//! The lease of a networked lock: how long a holder that vanished may still
//! be running, kept on the server's clock (a PostgreSQL lock's row, an etcd
//! lease), and when a holder must stop by its own clock so that it has
//! stopped before the lease ends there. Every networked backend counts its
//! leases with these rules.
//!
//! Assumed of the clocks: the holder's monotonic clock and the server's clock
//! run at rates within [`RATE_MARGIN_PERCENT`] of each other while a lease
//! lasts. Nothing is assumed of their readings (no clock is compared with
//! another's), and nothing holds for a holder that is paused longer than its
//! lease (SIGSTOP, a frozen virtual machine): there the fencing token is the
//! guard.

use std::time::{Duration, Instant};

/// The clock rates' assumed difference, in percent of a lease.
pub const RATE_MARGIN_PERCENT: u32 = 1;

/// A lease's length, and how long before it ends its holder is told to stop.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// How long the lease lasts from a renewal, on the server's clock.
    pub length: Duration,
    /// How long before the deadline a holder that could not renew is told
    /// to stop.
    pub notice: Duration,
}

impl Lease {
    /// The lease's length in the unit the statements take.
    pub fn micros(&self) -> i64 {
        i64::try_from(self.length.as_micros()).unwrap_or(i64::MAX)
    }

    /// What the clocks' rates may take from a lease.
    pub fn margin(&self) -> Duration {
        self.length * RATE_MARGIN_PERCENT / 100
    }

    /// When a holder must have stopped, by its own clock, if the renewal it
    /// `sent` at that instant is the last the server confirmed: the server
    /// started the lease no earlier than that.
    pub fn deadline(&self, sent: Instant) -> Instant {
        sent + self.length.saturating_sub(self.margin())
    }

    /// When a holder is told it lost the lock, for a `deadline`.
    pub fn stop_at(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.notice)
            .unwrap_or_else(Instant::now)
    }

    /// How long to wait, by this process's clock, for a lease the server
    /// said has `left` to run by its own.
    pub fn wait_out(left: Duration) -> Duration {
        left + left * RATE_MARGIN_PERCENT / 100
    }

    /// The least a time the server measured as `span` can have lasted by
    /// this process's clock.
    pub fn slower(span: Duration) -> Duration {
        span - span * RATE_MARGIN_PERCENT / 100
    }
}

/// Checks the settings a lease needs to mean anything: a holder must be able to
/// renew it in time (`interval` between renewals, each answered within
/// `timeout`) and still be told `notice` before it ends, beside the clocks'
/// margin. `Err` says which settings do not fit, in one line.
pub fn check(lease: &Lease, interval: Duration, timeout: Duration) -> Result<(), String> {
    let needed = interval + timeout + lease.notice + lease.margin();
    if needed > lease.length {
        return Err(format!(
            "a lease of {:?} cannot hold a heartbeat interval of {interval:?} + its answer timeout of {timeout:?} + a stop notice of {:?} + the clocks' margin of {:?} ({needed:?} in all): make the lease longer or the others shorter",
            lease.length,
            lease.notice,
            lease.margin()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_defaults_fit_and_a_long_notice_does_not() {
        let lease = Lease {
            length: 15 * S,
            notice: 5 * S,
        };
        assert!(check(&lease, S, 5 * S).is_ok());
        let long = Lease {
            notice: 10 * S,
            ..lease
        };
        let error = check(&long, S, 5 * S).unwrap_err();
        assert!(error.contains("16.15s in all"), "{error}");
    }

    #[test]
    fn the_deadline_comes_a_margin_before_the_lease_ends() {
        let lease = Lease {
            length: 10 * S,
            notice: 2 * S,
        };
        let sent = Instant::now();
        assert_eq!(lease.deadline(sent), sent + Duration::from_millis(9900));
        assert_eq!(
            lease.stop_at(lease.deadline(sent)),
            sent + Duration::from_millis(7900)
        );
        assert_eq!(Lease::wait_out(10 * S), Duration::from_millis(10100));
        assert_eq!(Lease::slower(10 * S), Duration::from_millis(9900));
    }
}
