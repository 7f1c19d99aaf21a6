//! Retry delays: exponential with jitter, computed from the attempt number.

use std::time::Duration;

/// How long to wait before attempt `n + 1` after attempt `n` failed: `initial × 2^(n-1)`,
/// at most `max`, then multiplied by a random factor in `1 ± jitter`.
///
/// The default is 1 s doubling to at most 5 min with ±20 % jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The relative spread, 0.0 to 1.0 (0.2 is ±20 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// A fixed delay with no jitter.
    pub fn fixed(delay: Duration) -> Backoff {
        Backoff {
            initial: delay,
            max: delay,
            jitter: 0.0,
        }
    }

    /// The delay before the nominal (jitter-free) retry after failed attempt `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(32);
        let factor = 2u64.saturating_pow(exponent);
        let nanos = (self.initial.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.max)
    }

    /// The delay after failed attempt `attempt`, with jitter drawn from `unit` (0.0 to 1.0).
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * unit.clamp(0.0, 1.0);
        self.nominal(attempt).mul_f64(factor)
    }

    /// The delay after failed attempt `attempt`, with random jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, random_unit())
    }
}

/// A random number in [0, 1) from the UUIDv7 generator's random bits.
pub(crate) fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_initial_delay_up_to_the_max() {
        let backoff = Backoff::default();
        let secs: Vec<u64> = (1..=11).map(|a| backoff.nominal(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff.nominal(1000), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay_with(3, 0.0), Duration::from_millis(3200));
        assert_eq!(backoff.delay_with(3, 0.5), Duration::from_secs(4));
        assert_eq!(backoff.delay_with(3, 1.0), Duration::from_millis(4800));
        for _ in 0..1000 {
            let delay = backoff.delay(2);
            assert!(delay >= Duration::from_millis(1600) && delay <= Duration::from_millis(2400));
        }
    }

    #[test]
    fn fixed_has_no_spread() {
        let backoff = Backoff::fixed(Duration::from_millis(250));
        assert_eq!(backoff.delay(1), Duration::from_millis(250));
        assert_eq!(backoff.delay(9), Duration::from_millis(250));
    }
}
