//! Batching settings and the open batch's record (protocol section 19): events of a key
//! are appended to the key's open batch; the batch runs once it is full or its timer fires,
//! and its handler gets every member.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::debounce::KeyOf;

/// `herald-batch: <batch id>`: on a batch's timer and the run it fires.
pub const HEADER_BATCH: &str = "herald-batch";
/// `herald-batch-key: <key token>`: on a batch's timer and the run it fires.
pub const HEADER_BATCH_KEY: &str = "herald-batch-key";

/// The largest batch.
pub(crate) const MAX_SIZE: u32 = 1000;
/// The shortest and the longest timeout (the server fires schedules in whole seconds).
pub(crate) const TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// A function's batching.
#[derive(Clone)]
pub(crate) struct Batch {
    pub(crate) max_size: u32,
    pub(crate) timeout: Duration,
    pub(crate) key: Option<KeyOf>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("max_size", &self.max_size)
            .field("timeout", &self.timeout)
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl Batch {
    /// What is wrong with the settings, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.max_size == 0 || self.max_size > MAX_SIZE {
            return Some(format!(
                "batch max_size is {}; it must be 1 to {MAX_SIZE}",
                self.max_size
            ));
        }
        let (shortest, longest) = TIMEOUT_RANGE;
        if self.timeout < shortest || self.timeout > longest {
            return Some(format!(
                "batch timeout is {:?}; it must be 1 s to 1 h (the server fires timers in whole seconds)",
                self.timeout
            ));
        }
        None
    }
}

/// One member: its stream sequence in `NS_EVENTS` and its event key.
pub(crate) type Member = (u64, String);

/// A key's open batch, `_batch.<F>.<key token>` in `ns-runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Open {
    pub(crate) batch: String,
    pub(crate) first_ms: u64,
    /// When its timer is due (Unix ms).
    pub(crate) timer_ms: u64,
    pub(crate) members: Vec<Member>,
    /// No member joins any more: the batch is full, or its run started.
    #[serde(default)]
    pub(crate) closed: bool,
}

/// A batch's members once its run started, `F.<batch id>.m` in `ns-runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Members {
    pub(crate) key: String,
    pub(crate) members: Vec<Member>,
}

/// What an event does with its key's open batch, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Join {
    /// The event is a member already (a redelivery whose ack was lost).
    Member,
    /// No batch is open (or the open one is closed): this event opens one.
    Open,
    /// The event joins the open batch; `closes` when it fills it.
    Append { closes: bool },
}

/// Decides how an event with `event_key` joins `open` (the key's record, `None` without
/// one) for batches of `max_size`.
pub(crate) fn join(open: Option<&Open>, event_key: &str, max_size: u32) -> Join {
    let Some(open) = open else {
        return Join::Open;
    };
    if open.members.iter().any(|(_, key)| key == event_key) {
        return Join::Member;
    }
    if open.closed || open.members.len() >= max_size as usize {
        return Join::Open;
    }
    Join::Append {
        closes: open.members.len() + 1 >= max_size as usize,
    }
}

/// The key of a key's open batch: `_batch.<F>.<key token>`.
pub(crate) fn open_key(function: &str, token: &str) -> String {
    format!("_batch.{function}.{token}")
}

/// The key of a batch's members: `F.<batch id>.m`.
pub(crate) fn members_key(function: &str, batch: &str) -> String {
    format!("{function}.{batch}.m")
}

/// The subject of a batch's timer: `ns.redrive.<F>.batch.<batch id>`.
pub(crate) fn timer_subject(namespace: &herald::Namespace, function: &str, batch: &str) -> String {
    format!("{}.batch.{batch}", namespace.redrive_subject(function))
}

/// A new batch id: 32 hex digits, unique (a valid event key, so the batch's run key is
/// `F.<batch id>`).
pub(crate) fn new_batch_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(members: &[&str], closed: bool) -> Open {
        Open {
            batch: "b".into(),
            first_ms: 0,
            timer_ms: 0,
            members: members
                .iter()
                .enumerate()
                .map(|(n, k)| (n as u64 + 1, (*k).to_owned()))
                .collect(),
            closed,
        }
    }

    #[test]
    fn an_event_opens_a_batch_when_none_is_open_or_the_open_one_is_closed_or_full() {
        assert_eq!(join(None, "e", 3), Join::Open);
        assert_eq!(join(Some(&open(&["a"], true)), "e", 3), Join::Open);
        assert_eq!(
            join(Some(&open(&["a", "b", "c"], false)), "e", 3),
            Join::Open
        );
    }

    #[test]
    fn an_event_joins_the_open_batch_and_the_one_that_fills_it_closes_it() {
        assert_eq!(
            join(Some(&open(&["a"], false)), "e", 3),
            Join::Append { closes: false }
        );
        assert_eq!(
            join(Some(&open(&["a", "b"], false)), "e", 3),
            Join::Append { closes: true }
        );
        assert_eq!(join(None, "e", 1), Join::Open);
    }

    #[test]
    fn a_member_is_a_member_even_of_a_closed_batch() {
        assert_eq!(join(Some(&open(&["a", "e"], false)), "e", 3), Join::Member);
        assert_eq!(join(Some(&open(&["e"], true)), "e", 3), Join::Member);
    }

    #[test]
    fn settings_out_of_range_say_what_is_allowed() {
        let batch = |max_size, secs| Batch {
            max_size,
            timeout: Duration::from_secs(secs),
            key: None,
        };
        assert!(batch(100, 2).problem().is_none());
        assert!(batch(0, 2).problem().unwrap().contains("1 to 1000"));
        assert!(batch(1001, 2).problem().unwrap().contains("1 to 1000"));
        assert!(batch(10, 0).problem().unwrap().contains("1 s to 1 h"));
    }

    #[test]
    fn a_batch_id_is_an_event_key() {
        let id = new_batch_id();
        assert_eq!(herald::protocol::runs::event_key(&id), id);
    }
}
