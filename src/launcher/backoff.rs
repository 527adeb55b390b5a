//! Restart pacing: exponential backoff that starts over once a service has stayed up for a
//! stable period. Pure arithmetic on durations; the supervisor owns the clock and the sleeping.

use std::time::Duration;

/// First delay before restarting a service that exited.
pub(super) const INITIAL_DELAY: Duration = Duration::from_millis(500);
/// Largest delay between restarts.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(30);
/// A service up at least this long counts as healthy again: its next crash restarts quickly.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Delays between restarts of one service: `initial`, doubling up to `max`, back to `initial`
/// after a run of at least `stable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL_DELAY, MAX_DELAY, STABLE_AFTER)
    }
}

impl Backoff {
    /// A backoff with the given bounds (`initial` is raised to at least 1 ms, `max` to at
    /// least `initial`).
    pub fn new(initial: Duration, max: Duration, stable: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            stable,
            next: initial,
        }
    }

    /// The delay before the next start, given how long the run that just ended lasted.
    pub fn delay_after(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.stable {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..10)
            .map(|_| b.delay_after(Duration::ZERO).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn a_stable_run_starts_over() {
        let mut b = Backoff::new(MS(100), MS(1000), MS(5000));
        assert_eq!(b.delay_after(MS(10)), MS(100));
        assert_eq!(b.delay_after(MS(10)), MS(200));
        assert_eq!(b.delay_after(MS(4999)), MS(400));
        assert_eq!(b.delay_after(MS(5000)), MS(100));
        assert_eq!(b.delay_after(MS(10)), MS(200));
    }

    #[test]
    fn degenerate_bounds_are_fixed_up() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, Duration::ZERO);
        assert_eq!(b.delay_after(Duration::ZERO), MS(1));
        assert_eq!(b.delay_after(Duration::ZERO), MS(1));
    }
}
