//! Throttle and rate-limit settings (protocol section 15): a pace per key, enforced with
//! [`Gcra`](super::gcra::Gcra) state in the runs bucket.

use std::time::Duration;

use super::debounce::KeyOf;
use super::gcra::Gcra;

/// `herald-wake` of a throttled run's continuation: the run has not started yet, its
/// reserved start is in its decision record.
pub(crate) const THROTTLE_WAKE: &str = "_throttle";

/// The flow control that `key` and `burst` configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowSlot {
    Throttle,
    RateLimit,
    Singleton,
    /// The concurrency limit at this index.
    Concurrency(usize),
}

/// A singleton function: one run per key at a time.
#[derive(Clone)]
pub(crate) struct Singleton {
    pub(crate) mode: crate::SingletonMode,
    pub(crate) key: Option<KeyOf>,
}

impl std::fmt::Debug for Singleton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Singleton")
            .field("mode", &self.mode)
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

/// The lock of a singleton key: `_singleton.<F>.<key token>`.
pub(crate) fn singleton_lock(function: &str, token: &str) -> String {
    format!("_singleton.{function}.{token}")
}

/// What a limit does with a start beyond its pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Excess {
    /// Throttle: the run waits (parks) until its reserved start.
    Delay,
    /// Rate limit: the run is skipped (recorded `skipped`, reason `rate_limited`).
    Drop,
}

/// A throttle or a rate limit of a function.
#[derive(Clone)]
pub(crate) struct PaceLimit {
    pub(crate) excess: Excess,
    pub(crate) limit: u32,
    pub(crate) period: Duration,
    pub(crate) burst: u32,
    /// The key of an event; `None`: one key for the whole function.
    pub(crate) key: Option<KeyOf>,
    /// Throttle only: a start further out than this dead-letters the event
    /// (`throttled_too_long`).
    pub(crate) max_delay: Option<Duration>,
}

impl std::fmt::Debug for PaceLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaceLimit")
            .field("excess", &self.excess)
            .field("limit", &self.limit)
            .field("period", &self.period)
            .field("burst", &self.burst)
            .field("keyed", &self.key.is_some())
            .field("max_delay", &self.max_delay)
            .finish()
    }
}

impl PaceLimit {
    /// The limit's pace.
    pub(crate) fn gcra(&self) -> Gcra {
        Gcra::new(self.limit, self.period, self.burst)
    }

    /// The record prefix of this kind: `_throttle` or `_rate`.
    pub(crate) fn prefix(&self) -> &'static str {
        match self.excess {
            Excess::Delay => "_throttle",
            Excess::Drop => "_rate",
        }
    }

    /// The suffix of a run's decision record: `F.<event-key>.th` or `.rl`.
    pub(crate) fn decision_suffix(&self) -> &'static str {
        match self.excess {
            Excess::Delay => "th",
            Excess::Drop => "rl",
        }
    }

    /// What is wrong with the settings, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        let name = match self.excess {
            Excess::Delay => "throttle",
            Excess::Drop => "rate_limit",
        };
        if self.limit == 0 {
            return Err(format!("{name}: the limit must be at least 1"));
        }
        if self.period < Duration::from_secs(1) || self.period > Duration::from_secs(7 * 86_400) {
            return Err(format!("{name}: the period must be between 1 s and 7 days"));
        }
        if self.max_delay.is_some() && self.excess == Excess::Drop {
            return Err("max_delay applies to a throttle, not to a rate limit".to_owned());
        }
        Ok(())
    }
}

/// The state key of a limit's key: `_throttle.<F>.<key token>` or `_rate.<F>.<key token>`
/// (`_` for a function without a key).
pub(crate) fn state_key(limit: &PaceLimit, function: &str, token: &str) -> String {
    format!("{}.{function}.{token}", limit.prefix())
}
