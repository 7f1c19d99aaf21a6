//! Durable runs and steps (protocol section 7) on the `ns-runs` bucket.
//!
//! A run is one function handling one event, keyed `F.<event-key>`. Its steps are memoized
//! at `F.<event-key>.s.<step-key>`; the position and failure count of the step that failed
//! last is kept at `F.<event-key>.p`, so that retries are counted per step; the run's outcome
//! is kept at `F.<event-key>` once it finished, so that a redelivery does not run it again.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use crate::run_store::RunStore;

use herald::protocol::runs::{numbered_step_key, step_key_base, step_record_key};
use serde::{Deserialize, Serialize};

/// What is stored for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepRecord {
    /// The step succeeded; later attempts return `output` without running it.
    Ok {
        /// The step's output (JSON).
        output: serde_json::Value,
        /// Attempts it took.
        #[serde(default)]
        attempts: u32,
        /// How long the successful attempt took, in milliseconds.
        #[serde(default)]
        duration_ms: u64,
        /// When it finished (RFC 3339).
        #[serde(default)]
        finished_at: String,
    },
    /// A durable sleep in progress.
    Sleeping {
        /// When the run wakes up (Unix milliseconds).
        wake_at_ms: u64,
    },
}

/// Where the run failed last and how often (`F.<event-key>.p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// How many steps the run had reached when it failed (1 = inside the first step).
    pub position: u32,
    /// The step's name, if the failure was inside a step.
    pub step: Option<String>,
    /// Failures at this position.
    pub failures: u32,
    /// The last error.
    pub error: String,
    /// The redrive this count belongs to (a redrive starts a fresh count).
    #[serde(default)]
    pub epoch: String,
}

/// How a run finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// The handler succeeded.
    Ok,
    /// The run was dead-lettered.
    DeadLettered,
    /// The run was skipped without running its handler (`detail` says why, e.g. a cron tick
    /// while the previous tick still ran).
    Skipped,
    /// The run was cancelled (`detail` says why): it ran no step after the cancel.
    Cancelled,
    /// The event joined a batch (`detail` names it): the batch's run handles it.
    Batched,
}

impl RunStatus {
    /// The protocol's name: `ok`, `dead_lettered`, `skipped`, `cancelled` or `batched`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::DeadLettered => "dead_lettered",
            RunStatus::Skipped => "skipped",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Batched => "batched",
        }
    }

    /// Whether a run with this status is over: a later delivery of it does nothing.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Ok | RunStatus::Skipped | RunStatus::Cancelled | RunStatus::Batched
        )
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A run's outcome (`F.<event-key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// How it finished.
    pub status: RunStatus,
    /// When (RFC 3339).
    pub finished_at: String,
    /// For dead letters: the reason and the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl RunRecord {
    /// A run that finished now with `status`.
    pub(crate) fn now(status: RunStatus, detail: Option<String>) -> RunRecord {
        RunRecord {
            status,
            finished_at: herald::headers::format_time(SystemTime::now()),
            detail,
        }
    }
}

/// The state of one run during one attempt, shared by its steps.
#[derive(Debug)]
pub(crate) struct RunState {
    pub(crate) store: RunStore,
    pub(crate) run_key: String,
    pub(crate) max_step_output: usize,
    /// How long a record write may keep retrying (a leader election, a node restart).
    pub(crate) patience: Duration,
    pub(crate) counters: parking_lot::Mutex<HashMap<String, u32>>,
    /// Steps reached in this attempt, and the one that failed.
    pub(crate) position: parking_lot::Mutex<(u32, Option<String>)>,
    /// Set by `sleep` when the run must suspend until this time.
    pub(crate) suspend_until: parking_lot::Mutex<Option<(u64, String)>>,
    /// The step key a schedule woke the run for (`herald-wake` header).
    pub(crate) woken_for: Option<String>,
    /// The failure record read at the start of the attempt: (position, failures).
    pub(crate) failures_before: parking_lot::Mutex<Option<(u32, u32)>>,
    /// The step records this attempt read or wrote, so that a sleep can extend their lives.
    pub(crate) records: parking_lot::Mutex<Vec<(String, StepRecord)>>,
    /// The function's cancelled runs, checked at each step boundary.
    pub(crate) cancelled: Option<std::sync::Arc<crate::cancel::watch::Cancelled>>,
    /// `NS_EVENTS` accepts `Nats-TTL`, so continuations can outlive its `max_age`.
    pub(crate) schedules_ttl: bool,
    /// The stream sequence of the event that started the run.
    pub(crate) trigger_sequence: u64,
    /// Set when the run parked waiting (for an event): the step key.
    pub(crate) parked: parking_lot::Mutex<Option<String>>,
    /// The handler's output, once it succeeded in this attempt (for an invoking caller).
    pub(crate) output: parking_lot::Mutex<Option<serde_json::Value>>,
    /// With a finish timeout: when the run must have finished (Unix ms; 0 without).
    pub(crate) finish_by: std::sync::atomic::AtomicU64,
    /// With a throttle or rate limit: the delivery's place in the function's turnstile.
    pub(crate) turn: Option<crate::runtime::turnstile::Ticket>,
    /// The concurrency slots the attempt holds.
    pub(crate) slots: parking_lot::Mutex<Vec<crate::runtime::concurrency::HeldSlot>>,
}

impl RunState {
    /// The deadline of a record operation started now.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.patience
    }

    /// Why the run was cancelled, if it was (a cancel record, or its finish timeout).
    pub(crate) fn cancelled(&self) -> Option<String> {
        let by = self.finish_by.load(std::sync::atomic::Ordering::Relaxed);
        if by != 0 && now_ms() >= by {
            return Some("finish timeout: the run did not finish in time".to_owned());
        }
        self.cancelled.as_ref()?.reason(&self.run_key)
    }

    /// `at_ms`, or the finish timeout when earlier: no park outlives the run's deadline.
    pub(crate) fn bounded(&self, at_ms: u64) -> u64 {
        match self.finish_by.load(std::sync::atomic::Ordering::Relaxed) {
            0 => at_ms,
            by => at_ms.min(by),
        }
    }

    /// Reads a step's record and, in the same request, the run's cancel record (a cancel
    /// found is remembered, so [`cancelled`](Self::cancelled) reports it).
    pub(crate) async fn read_step(
        &self,
        key: &str,
    ) -> Result<Option<StepRecord>, crate::RunStoreError> {
        let cancel_key = crate::cancel::cancel_record_key(&self.run_key);
        let read = self
            .store
            .get_many(&[key, &cancel_key], std::time::Duration::from_secs(2))
            .await;
        let Ok(found) = read else {
            return self.store.get_until(key, self.deadline()).await;
        };
        if let (Some(bytes), Some(cancelled)) = (found.get(&cancel_key), &self.cancelled) {
            let reason = serde_json::from_slice::<crate::cancel::CancelRecord>(bytes)
                .map_or_else(|_| "cancelled".to_owned(), |r| r.reason);
            cancelled.insert(&self.run_key, reason);
        }
        Ok(found
            .get(key)
            .and_then(|bytes| serde_json::from_slice(bytes).ok()))
    }

    /// [`read_step`](Self::read_step) for a step that parks (a wait, an invoke): when this
    /// delivery was woken for `step_key` and the record looks missing, it is read again from
    /// the bucket's leader, because whoever woke the run wrote it just before and a
    /// follower may not have it yet (taken as missing, the run would park again until its
    /// timeout).
    pub(crate) async fn read_parking_step(
        &self,
        key: &str,
        step_key: &str,
    ) -> Result<Option<StepRecord>, crate::RunStoreError> {
        let found = self.read_step(key).await?;
        if matches!(found, Some(StepRecord::Ok { .. }))
            || self.woken_for.as_deref() != Some(step_key)
        {
            return Ok(found);
        }
        crate::run_store::until(self.deadline(), || self.store.get_from_leader(key)).await
    }

    /// Whether the run asked for a durable sleep, or parked, in this attempt.
    pub(crate) fn is_suspending(&self) -> bool {
        self.suspend_until.lock().is_some() || self.parked.lock().is_some()
    }

    /// The event key of the run (`F.<event-key>` without `F.`).
    pub(crate) fn event_key(&self) -> &str {
        self.run_key
            .split_once('.')
            .map_or(self.run_key.as_str(), |(_, key)| key)
    }

    /// `F.<event-key>.p`: where the run failed last.
    pub(crate) fn failure_key(&self) -> String {
        herald::protocol::runs::failure_key(&self.run_key)
    }

    /// The step that was reached last completed.
    pub(crate) fn step_done(&self) {
        self.position.lock().1 = None;
    }

    /// Failures already counted at the current position, plus this attempt.
    pub(crate) fn failures_here(&self) -> u32 {
        self.failures_before
            .lock()
            .map_or(1, |(position, failures)| {
                if position == self.position.lock().0 {
                    failures + 1
                } else {
                    1
                }
            })
    }

    /// The key of the next step named `name` (`name`, then `name.2`, `name.3`…).
    pub(crate) fn next_step_key(&self, name: &str) -> (String, String) {
        let base = step_key_base(name);
        let mut counters = self.counters.lock();
        let count = counters.entry(base.clone()).or_insert(0);
        *count += 1;
        let step_key = numbered_step_key(&base, *count);
        let mut position = self.position.lock();
        position.0 += 1;
        position.1 = Some(name.to_owned());
        (step_record_key(&self.run_key, &step_key), step_key)
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_serialise_as_the_protocol_says() {
        let ok = StepRecord::Ok {
            output: serde_json::json!(3),
            attempts: 1,
            duration_ms: 2,
            finished_at: "t".into(),
        };
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["output"], 3);
    }
}
