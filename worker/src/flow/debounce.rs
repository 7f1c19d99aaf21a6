//! Debounce settings (protocol section 9): a function whose events are folded per key, the
//! run getting the last event once no event came for the period, or the timeout passed.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The key of an event, from its JSON payload; `Err` when the payload does not decode.
pub(crate) type KeyOf = Arc<dyn Fn(&[u8]) -> Result<String, String> + Send + Sync>;

/// A function's debounce.
#[derive(Clone)]
pub(crate) struct Debounce {
    pub(crate) key: KeyOf,
    pub(crate) period: Duration,
}

impl std::fmt::Debug for Debounce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debounce")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// `herald-debounce-first: <Unix ms>`: when the window of the schedule's key opened.
pub const HEADER_FIRST: &str = "herald-debounce-first";
/// `herald-debounce-seq: <stream seq>`: the stream sequence of the event the schedule holds.
pub const HEADER_SEQ: &str = "herald-debounce-seq";
/// `herald-debounce-key: <key token>`: on a debounce schedule and the run it fires.
pub const HEADER_KEY: &str = "herald-debounce-key";

/// A key as a subject token: the key itself when it matches `[A-Za-z0-9_-]{1,64}`, else `h-`
/// and the hex SHA-256 of the key.
pub fn key_token(key: &str) -> String {
    let safe = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        key.to_owned()
    } else {
        let hash = Sha256::digest(key.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("h-{hex}")
    }
}

/// The subject of a key's debounce schedule: `ns.redrive.<F>.debounce.<key token>`.
pub fn schedule_subject(namespace: &herald::Namespace, function: &str, token: &str) -> String {
    format!("{}.debounce.{token}", namespace.redrive_subject(function))
}

/// When a window fires: the period after now, but no later than the window's first event
/// plus the timeout (rounded down to a whole second, as the server fires in whole seconds and
/// the period's end is rounded up). Unix milliseconds.
pub(crate) fn fire_at(
    now_ms: u64,
    first_ms: u64,
    period: Duration,
    timeout: Option<Duration>,
) -> u64 {
    let after_period = now_ms + period.as_millis() as u64;
    match timeout {
        Some(timeout) => after_period.min((first_ms + timeout.as_millis() as u64) / 1000 * 1000),
        None => after_period,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_tokens() {
        assert_eq!(key_token("tenant-42"), "tenant-42");
        assert!(key_token("a.b").starts_with("h-"));
        assert!(key_token("").starts_with("h-"));
        assert_eq!(key_token(&"x".repeat(65)).len(), 66);
    }

    #[test]
    fn a_window_fires_after_the_period_or_at_the_timeout() {
        let second = Duration::from_secs(1);
        assert_eq!(fire_at(10_000, 10_000, 2 * second, None), 12_000);
        assert_eq!(
            fire_at(10_000, 2_000, 2 * second, Some(10 * second)),
            12_000
        );
        assert_eq!(
            fire_at(11_000, 2_000, 2 * second, Some(10 * second)),
            12_000,
            "capped"
        );
        assert_eq!(
            fire_at(20_000, 2_000, 2 * second, Some(10 * second)),
            12_000,
            "past due"
        );
        assert_eq!(
            fire_at(11_000, 2_500, 2 * second, Some(10 * second)),
            12_000,
            "rounded down"
        );
    }
}
