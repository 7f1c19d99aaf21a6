//! The generic cell rate algorithm (GCRA) behind throttle and rate limit: one number per key,
//! the theoretical arrival time (TAT), in Unix microseconds.
//!
//! With `limit` per `period`, one start is due every `emission = period / limit`; a key may
//! run `burst` starts ahead of that pace. In any window of length `W`, at most
//! `burst + ceil(W / emission)` starts conform (so `limit + burst` per period).

use std::time::Duration;

/// A limit's pace: `limit` per `period`, `burst` extra at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Microseconds between starts at the steady pace.
    emission_us: u64,
    /// How far ahead of the pace a key may run, in microseconds (`burst × emission`).
    tolerance_us: u64,
}

/// A start reserved by [`Gcra::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// When the start is due (Unix µs; at most `now` when it may start at once).
    pub(crate) start_at_us: u64,
    /// The key's TAT once this start is counted.
    pub(crate) tat_us: u64,
}

impl Gcra {
    /// `limit` starts per `period` (limit at least 1), `burst` more at once.
    pub(crate) fn new(limit: u32, period: Duration, burst: u32) -> Gcra {
        let emission_us = (period.as_micros() as u64 / u64::from(limit.max(1))).max(1);
        Gcra {
            emission_us,
            tolerance_us: emission_us * u64::from(burst),
        }
    }

    /// The time between two starts at the pace, in microseconds.
    pub(crate) fn emission_us(&self) -> u64 {
        self.emission_us
    }

    /// Reserves the next start of a key whose TAT is `tat_us` (0 for a key never seen): it
    /// is due at `start_at_us`, which may be later than `now_us` (a throttle waits until
    /// then).
    pub(crate) fn reserve(&self, tat_us: u64, now_us: u64) -> Reservation {
        let base = tat_us.max(now_us);
        Reservation {
            start_at_us: base.saturating_sub(self.tolerance_us).max(now_us),
            tat_us: base + self.emission_us,
        }
    }

    /// A start now, if the key is within its pace (a rate limit drops the rest): the key's
    /// new TAT.
    #[cfg(test)]
    pub(crate) fn admit(&self, tat_us: u64, now_us: u64) -> Option<u64> {
        let reservation = self.reserve(tat_us, now_us);
        (reservation.start_at_us <= now_us).then_some(reservation.tat_us)
    }

    /// How long the key's state matters after `tat_us`: once the TAT is past, the key is
    /// as if never seen, so its record may expire (whole seconds, at least 1).
    pub(crate) fn record_ttl(tat_us: u64, now_us: u64) -> Duration {
        Duration::from_secs((tat_us.saturating_sub(now_us) / 1_000_000 + 1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    /// Admissions of `arrivals` (µs) under `gcra`, each reserving in order.
    fn starts(gcra: &Gcra, arrivals: &[u64]) -> Vec<u64> {
        let mut tat = 0;
        arrivals
            .iter()
            .map(|&now| {
                let r = gcra.reserve(tat, now);
                tat = r.tat_us;
                r.start_at_us
            })
            .collect()
    }

    #[test]
    fn a_burst_starts_at_once_then_the_pace_holds() {
        // 10 per second, burst 5: 6 start at once, then one every 100 ms.
        let gcra = Gcra::new(10, Duration::from_secs(1), 5);
        let at = starts(&gcra, &[10 * S; 10]);
        assert_eq!(&at[..6], &[10 * S; 6]);
        assert_eq!(at[6], 10 * S + 100_000);
        assert_eq!(at[9], 10 * S + 400_000);
    }

    #[test]
    fn starts_in_any_window_stay_within_burst_plus_pace() {
        // 2,000 arrivals in a rush: every window of W holds at most burst + ceil(W / e).
        let gcra = Gcra::new(10, Duration::from_secs(1), 5);
        let arrivals: Vec<u64> = (0..2000).map(|i| 100 * S + i * 1000).collect();
        let at = starts(&gcra, &arrivals);
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "in arrival order");
        for window in [100_000, S, 10 * S] {
            for (i, &from) in at.iter().enumerate() {
                let inside = at[i..].iter().take_while(|&&t| t < from + window).count() as u64;
                assert!(
                    inside <= 5 + window.div_ceil(100_000),
                    "{inside} in {window} µs"
                );
            }
        }
    }

    #[test]
    fn a_rate_limit_admits_the_limit_and_the_burst_then_drops() {
        let gcra = Gcra::new(3, Duration::from_secs(60), 0);
        let mut tat = 0;
        let mut admitted = 0;
        for i in 0..100 {
            if let Some(next) = gcra.admit(tat, S + i) {
                tat = next;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 1, "no burst: one now, the next in 20 s");
        assert!(gcra.admit(tat, S + 20 * S).is_some());

        let bursty = Gcra::new(3, Duration::from_secs(60), 2);
        let mut tat = 0;
        let admitted = (0..100)
            .filter(|i| match bursty.admit(tat, S + i) {
                Some(next) => {
                    tat = next;
                    true
                }
                None => false,
            })
            .count();
        assert_eq!(admitted, 3, "one plus a burst of two");
    }

    #[test]
    fn an_idle_key_forgets() {
        let gcra = Gcra::new(1, Duration::from_secs(10), 0);
        let r = gcra.reserve(0, 5 * S);
        assert_eq!(r.start_at_us, 5 * S);
        // Long after its TAT the key starts at once again.
        assert_eq!(gcra.reserve(r.tat_us, 100 * S).start_at_us, 100 * S);
        assert_eq!(Gcra::record_ttl(r.tat_us, 5 * S), Duration::from_secs(11));
        assert_eq!(Gcra::record_ttl(0, 5 * S), Duration::from_secs(1));
    }
}
