//! [`Pace`]: how long a function's handlers take, which decides how many messages its loop
//! holds beyond those running: as many as the handlers are expected to start within
//! [`AHEAD`]. A fast function pulls whole windows (few pull requests, the I/O of many
//! deliveries in flight at once); a slow one holds little more than it runs, so that
//! messages do not wait in one replica while another is idle, nor near their `ack_wait`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How far ahead a function's loop pulls, in handler time.
pub(crate) const AHEAD: Duration = Duration::from_secs(1);

/// The most message bytes a function's loop holds beyond its concurrency: a window of
/// large events is held by bytes, not by count.
pub(crate) const HELD_BYTES: u64 = 64 * 1024 * 1024;

/// A moving average of handler durations and of message sizes.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// Nanoseconds; 0 until a handler has finished.
    average_ns: AtomicU64,
    /// Bytes per message (headers and payload); 0 until a message came.
    average_bytes: AtomicU64,
}

impl Pace {
    /// Counts one handler's duration (an exponential average, weight 1/16).
    pub(crate) fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let before = self.average_ns.load(Ordering::Relaxed);
        let after = if before == 0 {
            took
        } else {
            before - before / 16 + took / 16
        };
        self.average_ns.store(after.max(1), Ordering::Relaxed);
    }

    /// Counts the sizes of `count` messages that came together, `bytes` in all (an
    /// exponential average per group, weight 1/8).
    pub(crate) fn record_sizes(&self, bytes: usize, count: usize) {
        if count == 0 {
            return;
        }
        let size = (bytes / count) as u64;
        let before = self.average_bytes.load(Ordering::Relaxed);
        let after = if before == 0 {
            size
        } else {
            before - before / 8 + size / 8
        };
        self.average_bytes.store(after.max(1), Ordering::Relaxed);
    }

    /// How many messages to hold: the concurrency, plus what the handlers start within
    /// [`AHEAD`] at their average pace, no more than [`HELD_BYTES`] of messages beyond the
    /// concurrency, within `1..=window`. Before any handler finished, the concurrency alone.
    pub(crate) fn target(&self, concurrency: usize, window: usize) -> usize {
        let average = self.average_ns.load(Ordering::Relaxed);
        let ahead = if average == 0 {
            0
        } else {
            let per_slot = u128::from(u64::try_from(AHEAD.as_nanos()).unwrap_or(u64::MAX))
                / u128::from(average);
            usize::try_from(per_slot.saturating_mul(concurrency as u128)).unwrap_or(usize::MAX)
        };
        // No size known yet (0): no bound by bytes.
        let by_bytes = HELD_BYTES
            .checked_div(self.average_bytes.load(Ordering::Relaxed))
            .map_or(usize::MAX, |count| {
                concurrency.max(usize::try_from(count).unwrap_or(usize::MAX))
            });
        concurrency
            .saturating_add(ahead)
            .min(by_bytes)
            .clamp(1, window.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_handler_finished_the_concurrency_is_held() {
        assert_eq!(Pace::default().target(16, 256), 16);
        assert_eq!(Pace::default().target(1000, 1000), 1000);
    }

    #[test]
    fn fast_handlers_fill_the_window() {
        let pace = Pace::default();
        pace.record(Duration::from_micros(20));
        assert_eq!(pace.target(16, 256), 256);
    }

    #[test]
    fn slow_handlers_hold_about_a_second_of_work_ahead() {
        let pace = Pace::default();
        pace.record(Duration::from_millis(100));
        // 16 running, 16 × 10 more start within a second.
        assert_eq!(pace.target(16, 256), 176);
        let slow = Pace::default();
        slow.record(Duration::from_secs(10));
        assert_eq!(slow.target(16, 256), 16);
    }

    #[test]
    fn large_messages_are_held_by_bytes() {
        let pace = Pace::default();
        pace.record(Duration::from_micros(20));
        pace.record_sizes(300 * 10, 10);
        assert_eq!(pace.target(16, 1024), 1024, "small events fill the window");
        let large = Pace::default();
        large.record(Duration::from_micros(20));
        large.record_sizes(4 * 1024 * 1024, 4);
        // 1 MiB each: 64 MiB is 64 of them.
        assert_eq!(large.target(16, 1024), 64);
        // Never fewer than the handlers can run at once.
        let huge = Pace::default();
        huge.record(Duration::from_micros(20));
        huge.record_sizes(16 * 1024 * 1024, 1);
        assert_eq!(huge.target(16, 1024), 16);
    }

    #[test]
    fn the_average_follows_a_change_of_pace() {
        let pace = Pace::default();
        pace.record(Duration::from_micros(20));
        for _ in 0..200 {
            pace.record(Duration::from_secs(2));
        }
        assert_eq!(pace.target(4, 256), 4);
    }
}
