//! Concurrency limits per key (protocol section 17): slots leased in the runs bucket while
//! an attempt runs; a run that finds none parks until a slot frees.

use std::time::Duration;

use super::debounce::KeyOf;

/// `herald-wake` of the continuation of a run parked for a concurrency slot.
pub(crate) const SLOT_WAKE: &str = "_slot";

/// How long a slot's lease lives without a refresh: a dead worker's slots free by then.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

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
