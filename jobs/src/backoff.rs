//! When a failed attempt runs again: exponential in the attempt number, capped, with jitter so
//! jobs that failed together do not retry together. The result is written to the database.

use std::time::Duration;

use rand::Rng;

/// The retry policy of a worker.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// No delay is longer than this.
    pub max: Duration,
    /// Fraction of the delay that is randomised (0.0 to 1.0), taken off, never added.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60 * 60),
            jitter: 0.25,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based): `base * 2^(attempt-1)`, capped,
    /// minus up to `jitter` of itself.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 40)).unwrap_or(0);
        let raw = self
            .base
            .checked_mul(2u32.saturating_pow(exponent.min(31)))
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return raw;
        }
        let factor = 1.0 - rand::rng().random_range(0.0..=jitter);
        raw.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
            jitter: 0.0,
        };
        let delays: Vec<u64> = (1..=6).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(1_000).as_secs(), 10);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let b = Backoff {
            base: Duration::from_secs(8),
            max: Duration::from_secs(100),
            jitter: 0.25,
        };
        for _ in 0..200 {
            let d = b.delay(1);
            assert!(
                d <= Duration::from_secs(8) && d >= Duration::from_secs(6),
                "{d:?}"
            );
        }
    }
}
