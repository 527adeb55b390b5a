//! How long a failing peer waits before its next attempt: exponential in its consecutive
//! failures, capped, with jitter so that peers failing together do not retry together.

use rand::Rng;

/// Exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The wait after the first failure, in seconds.
    pub base_secs: i64,
    /// The longest wait, in seconds.
    pub max_secs: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base_secs: 10,
            max_secs: 3600,
        }
    }
}

impl Backoff {
    /// The exponential wait after `failures` consecutive failures (at least 1), without jitter:
    /// `base × 2^(failures − 1)`, at most `max`.
    pub fn ceiling_secs(&self, failures: i32) -> i64 {
        let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 62)).unwrap_or(62);
        let base = self.base_secs.max(1);
        base.checked_shl(doublings)
            .filter(|v| *v > 0 && *v / base == 1i64 << doublings)
            .unwrap_or(self.max_secs)
            .min(self.max_secs)
            .max(1)
    }

    /// The wait after `failures` consecutive failures: uniformly drawn from the upper half of
    /// [`Backoff::ceiling_secs`] ("equal jitter"), so it still grows and never collapses to 0.
    pub fn delay_secs(&self, failures: i32) -> i64 {
        let ceiling = self.ceiling_secs(failures);
        let half = ceiling / 2;
        half + rand::rng().random_range(0..=ceiling - half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubling_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            base_secs: 10,
            max_secs: 600,
        };
        let ceilings: Vec<i64> = (1..=8).map(|f| b.ceiling_secs(f)).collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 160, 320, 600, 600]);
        assert_eq!(b.ceiling_secs(0), 10, "no failure counts as the first");
        assert_eq!(b.ceiling_secs(i32::MAX), 600, "no overflow");
        for f in 1..=10 {
            let c = b.ceiling_secs(f);
            let draws: Vec<i64> = (0..200).map(|_| b.delay_secs(f)).collect();
            assert!(
                draws.iter().all(|d| *d >= c / 2 && *d <= c),
                "{f}: {draws:?}"
            );
            assert!(
                draws.iter().any(|d| *d != draws[0]),
                "jitter spreads retries"
            );
        }
    }
}
