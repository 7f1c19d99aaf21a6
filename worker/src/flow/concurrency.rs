//! Concurrency limits per key (protocol section 17): slots leased in the runs bucket while
//! an attempt runs; a run that finds none parks until a slot frees.

use std::time::Duration;

use super::debounce::KeyOf;

/// `herald-wake` of the continuation of a run parked for a concurrency slot.
pub(crate) const SLOT_WAKE: &str = "_slot";

/// How long a slot's lease lives without a refresh: a dead worker's slots free by then.
/// Short, because a killed worker's slots hold their limit back until then (30 s made a
/// shared limit of 10 mostly dead leases with a worker killed every 5 s); renewed every
/// [`RENEW`], so four renewals in a row must fail (a leader election takes one or two
/// seconds) before a live run's lease is lost.
pub(crate) const LEASE: Duration = Duration::from_secs(10);

/// How often a held slot's lease is renewed.
pub(crate) const RENEW: Duration = Duration::from_secs(2);

/// The longest a parked run waits before it looks for a slot again by itself (a freed
/// slot wakes the oldest parked run at once; this is the fallback).
pub(crate) const FALLBACK: Duration = Duration::from_secs(10);

/// A concurrency limit of a function.
#[derive(Clone)]
pub(crate) struct ConcurrencyLimit {
    pub(crate) limit: u32,
    /// `None`: the function's own limit; `Some(name)`: a limit shared by every function
    /// that names it.
    pub(crate) shared: Option<String>,
    /// The key of an event; `None`: one key for the whole scope.
    pub(crate) key: Option<KeyOf>,
    /// The most runs of one key parked waiting; beyond, dead-lettered `queue_full`.
    pub(crate) max_parked: Option<u32>,
}

impl std::fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("limit", &self.limit)
            .field("shared", &self.shared)
            .field("keyed", &self.key.is_some())
            .field("max_parked", &self.max_parked)
            .finish()
    }
}

impl ConcurrencyLimit {
    /// The limit's scope token: the function id, or `_shared-<name>`.
    pub(crate) fn scope(&self, function: &str) -> String {
        match &self.shared {
            Some(name) => format!("_shared-{name}"),
            None => function.to_owned(),
        }
    }

    /// What is wrong with the settings, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.limit == 0 || self.limit > 1000 {
            return Err("concurrency_limit: the limit must be between 1 and 1000".to_owned());
        }
        if let Some(name) = &self.shared
            && (name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(format!(
                "shared_concurrency_limit: the name {name:?} must match [A-Za-z0-9_-]{{1,64}}"
            ));
        }
        Ok(())
    }
}

/// Slot `i` of a key: `_slot.<scope>.<key token>.<i>`.
pub(crate) fn slot_key(scope: &str, token: &str, index: u32) -> String {
    format!("_slot.{scope}.{token}.{index}")
}

/// A parked run's entry: `_parked.<scope>.<key token>.<F>.<event-key>`.
pub(crate) fn parked_key(scope: &str, token: &str, function: &str, event_key: &str) -> String {
    format!("_parked.{scope}.{token}.{function}.{event_key}")
}

/// Every parked run of a key: `_parked.<scope>.<key token>.>`.
pub(crate) fn parked_pattern(scope: &str, token: &str) -> String {
    format!("_parked.{scope}.{token}.>")
}

/// The largest priority, in seconds either way: a factor beyond is clamped to it.
pub(crate) const PRIORITY_LIMIT_S: i64 = 600;

/// The priority factor of an event in seconds (`Err`: the event does not decode).
pub(crate) type PriorityOf = std::sync::Arc<dyn Fn(&[u8]) -> Result<i64, String> + Send + Sync>;

/// A function's priority: a run is ordered as if it had parked `factor` seconds earlier.
#[derive(Clone)]
pub(crate) struct Priority(pub(crate) PriorityOf);

impl std::fmt::Debug for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Priority")
    }
}

impl Priority {
    /// The event's factor in seconds, clamped to ±[`PRIORITY_LIMIT_S`]; 0 for an event
    /// that does not decode (the handler's path dead-letters it).
    pub(crate) fn factor(&self, event: &[u8]) -> i64 {
        (self.0)(event).map_or(0, |s| s.clamp(-PRIORITY_LIMIT_S, PRIORITY_LIMIT_S))
    }
}

/// A parked run's score: the Unix milliseconds it first parked, less its factor. The
/// lowest score is woken first.
pub(crate) fn score_ms(since_ms: u64, factor_s: i64) -> i64 {
    (since_ms as i64).saturating_sub(factor_s.saturating_mul(1000))
}

/// The order in which parked runs are woken: lowest score, then the earliest parked, then
/// by entry key (so every releaser sees one order).
pub(crate) fn wake_order<T>(parked: &mut [T], fields: impl Fn(&T) -> (i64, u64, &str)) {
    parked.sort_by(|a, b| fields(a).cmp(&fields(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priority(factor: i64) -> Priority {
        Priority(std::sync::Arc::new(move |_: &[u8]| Ok(factor)))
    }

    #[test]
    fn factors_are_clamped_to_ten_minutes_either_way() {
        assert_eq!(priority(30).factor(b"{}"), 30);
        assert_eq!(priority(3600).factor(b"{}"), 600);
        assert_eq!(priority(-3600).factor(b"{}"), -600);
        let broken = Priority(std::sync::Arc::new(|_: &[u8]| Err("no".to_owned())));
        assert_eq!(broken.factor(b"{"), 0);
    }

    #[test]
    fn a_higher_factor_goes_before_runs_parked_less_than_it_earlier() {
        // (entry, parked at ms, factor s)
        let parked = [
            ("low-old", 100_000_u64, 0_i64),
            ("low-new", 109_000, 0),
            ("high", 110_000, 10),
            ("low-older", 99_000, 0),
            ("late", 106_000, -5),
            ("tie-b", 105_000, 0),
            ("tie-a", 105_000, 0),
        ];
        let scored: Vec<(i64, u64, &str)> = parked
            .iter()
            .map(|(k, since, f)| (score_ms(*since, *f), *since, *k))
            .collect();
        let mut order = scored.clone();
        wake_order(&mut order, |e| *e);
        let names: Vec<&str> = order.iter().map(|e| e.2).collect();
        // "high" (score 100 000) goes before every run parked less than 10 s before it,
        // its tie with "low-old" broken by the earlier park; "late" counts as parked 5 s
        // later (111 000), so after "low-new".
        assert_eq!(
            names,
            [
                "low-older",
                "low-old",
                "high",
                "tie-a",
                "tie-b",
                "low-new",
                "late"
            ]
        );
    }

    #[test]
    fn without_factors_the_order_is_first_parked_first() {
        let mut order: Vec<(i64, u64, &str)> = [3_u64, 1, 2]
            .iter()
            .map(|s| (score_ms(*s, 0), *s, "k"))
            .collect();
        wake_order(&mut order, |e| *e);
        let since: Vec<u64> = order.iter().map(|e| e.1).collect();
        assert_eq!(since, [1, 2, 3]);
    }
}
