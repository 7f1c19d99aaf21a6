//! Durable runs and steps (protocol section 7) on the `ns-runs` bucket.
//!
//! A run is one function handling one event, keyed `F.<event-key>`. Its steps are memoized
//! at `F.<event-key>.s.<step-key>`; the position and failure count of the step that failed
//! last is kept at `F.<event-key>.p`, so that retries are counted per step; the run's outcome
//! is kept at `F.<event-key>` once it finished, so that a redelivery does not run it again.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The event key of a run: `ce-id` when it is key-safe, else `h-` and its SHA-256.
pub fn event_key(event_id: &str) -> String {
    let safe = !event_id.is_empty()
        && event_id.len() <= 128
        && event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if safe {
        event_id.to_owned()
    } else {
        let hash = Sha256::digest(event_id.as_bytes());
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("h-{hex}")
    }
}

/// A step name made key-safe: every character outside `[A-Za-z0-9_-]` becomes `_`.
pub fn step_key_base(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() { "_".to_owned() } else { key }
}

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

/// A run's outcome (`F.<event-key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `ok` or `dead_lettered`.
    pub status: String,
    /// When (RFC 3339).
    pub finished_at: String,
    /// For dead letters: the reason and the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Reads and writes a namespace's runs bucket.
#[derive(Debug, Clone)]
pub struct RunStore {
    kv: kv::Store,
}

/// A runs-bucket operation failed.
#[derive(Debug, thiserror::Error)]
#[error("runs bucket {action} of {key} failed: {source}")]
pub struct RunStoreError {
    action: &'static str,
    key: String,
    #[source]
    source: async_nats::Error,
}

fn store_error<E: Into<async_nats::Error>>(
    action: &'static str,
    key: &str,
) -> impl FnOnce(E) -> RunStoreError {
    let key = key.to_owned();
    move |error| RunStoreError {
        action,
        key,
        source: error.into(),
    }
}

impl RunStore {
    /// Opens the runs bucket of `client`'s namespace.
    pub async fn open(client: &herald::Client) -> Result<RunStore, RunStoreError> {
        let bucket = client.namespace().runs_bucket();
        let kv = client
            .jetstream()
            .get_key_value(&bucket)
            .await
            .map_err(store_error("open", &bucket))?;
        Ok(RunStore { kv })
    }

    pub(crate) async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, RunStoreError> {
        match self.kv.get(key).await.map_err(store_error("read", key))? {
            Some(bytes) if !bytes.is_empty() => Ok(serde_json::from_slice(&bytes).ok()),
            _ => Ok(None),
        }
    }

    pub(crate) async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), RunStoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RunStoreError {
            action: "encode",
            key: key.to_owned(),
            source: e.into(),
        })?;
        self.kv
            .put(key, Bytes::from(bytes))
            .await
            .map_err(store_error("write", key))?;
        Ok(())
    }

    /// Creates `key` only if it does not exist; true when this call created it.
    pub(crate) async fn create_marker(&self, key: &str) -> Result<bool, RunStoreError> {
        match self.kv.create(key, Bytes::from_static(b"{}")).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(store_error("create", key)(error)),
        }
    }

    /// Stores a step record, as `ctx.step` does after the step succeeded.
    pub async fn put_record(&self, key: &str, record: &StepRecord) -> Result<(), RunStoreError> {
        self.put(key, record).await
    }

    /// Reads a step record, as `ctx.step` does before running the step.
    pub async fn get_record(&self, key: &str) -> Result<Option<StepRecord>, RunStoreError> {
        self.get(key).await
    }

    /// Every stored entry of a run, by key: the outcome, the failure record and the steps.
    pub async fn entries(
        &self,
        run_key: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, RunStoreError> {
        use futures::StreamExt;
        let mut entries = Vec::new();
        if let Some(outcome) = self.get::<serde_json::Value>(run_key).await? {
            entries.push((run_key.to_owned(), outcome));
        }
        let pattern = format!("{run_key}.>");
        let mut watch = self
            .kv
            .watch_with_history(&pattern)
            .await
            .map_err(store_error("watch", &pattern))?;
        // The history ends at the entry marked `seen_current`, or at once when there is none.
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), watch.next()).await;
            let Ok(Some(Ok(entry))) = next else { break };
            if entry.operation == kv::Operation::Put
                && let Ok(value) = serde_json::from_slice(&entry.value)
            {
                entries.push((entry.key.clone(), value));
            }
            if entry.seen_current || entry.delta == 0 {
                break;
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }
}

/// What the runs bucket says about one run: "which steps ran, with what outcome, how
/// long, how many attempts".
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The run key (`F.<event-key>`).
    pub run_key: String,
    /// The outcome, once the run finished.
    pub outcome: Option<RunRecord>,
    /// Where it failed last, if it failed.
    pub failure: Option<FailureRecord>,
    /// The stored steps, by step key, in key order.
    pub steps: Vec<(String, StepRecord)>,
}

impl RunStore {
    /// The stored state of the run of `function` for the event `event_id`.
    pub async fn inspect(
        &self,
        function: &str,
        event_id: &str,
    ) -> Result<RunReport, RunStoreError> {
        let run_key = format!("{function}.{}", event_key(event_id));
        let mut report = RunReport {
            run_key: run_key.clone(),
            outcome: None,
            failure: None,
            steps: Vec::new(),
        };
        let step_prefix = format!("{run_key}.s.");
        for (key, value) in self.entries(&run_key).await? {
            if key == run_key {
                report.outcome = serde_json::from_value(value).ok();
            } else if key == format!("{run_key}.p") {
                report.failure = serde_json::from_value(value).ok();
            } else if let Some(step) = key.strip_prefix(&step_prefix)
                && let Ok(record) = serde_json::from_value(value)
            {
                report.steps.push((step.to_owned(), record));
            }
        }
        Ok(report)
    }
}

/// The state of one run during one attempt, shared by its steps.
#[derive(Debug)]
pub(crate) struct RunState {
    pub(crate) store: RunStore,
    pub(crate) run_key: String,
    pub(crate) max_step_output: usize,
    pub(crate) counters: parking_lot::Mutex<HashMap<String, u32>>,
    /// Steps reached in this attempt, and the one that failed.
    pub(crate) position: parking_lot::Mutex<(u32, Option<String>)>,
    /// Set by `sleep` when the run must suspend until this time.
    pub(crate) suspend_until: parking_lot::Mutex<Option<(u64, String)>>,
    /// The step key a schedule woke the run for (`herald-wake` header).
    pub(crate) woken_for: Option<String>,
    /// The failure record read at the start of the attempt: (position, failures).
    pub(crate) failures_before: parking_lot::Mutex<Option<(u32, u32)>>,
}

impl RunState {
    /// `F.<event-key>.p`: where the run failed last.
    pub(crate) fn failure_key(&self) -> String {
        format!("{}.p", self.run_key)
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
        let step_key = if *count == 1 {
            base
        } else {
            format!("{base}.{count}")
        };
        let mut position = self.position.lock();
        position.0 += 1;
        position.1 = Some(name.to_owned());
        (format!("{}.s.{step_key}", self.run_key), step_key)
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
    fn event_keys() {
        assert_eq!(event_key("signup-42_a"), "signup-42_a");
        let hashed = event_key("has space");
        assert!(hashed.starts_with("h-") && hashed.len() == 66, "{hashed}");
        assert_eq!(event_key(&"x".repeat(129)).len(), 66);
        assert_eq!(
            event_key("01936f2b-7c2e-7a1c-9f0e-2b3c4d5e6f70"),
            "01936f2b-7c2e-7a1c-9f0e-2b3c4d5e6f70"
        );
    }

    #[test]
    fn step_keys() {
        assert_eq!(step_key_base("charge card"), "charge_card");
        assert_eq!(step_key_base("a.b/c"), "a_b_c");
        assert_eq!(step_key_base(""), "_");
    }

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
