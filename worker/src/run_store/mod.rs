//! [`RunStore`]: the runs bucket (`ns-runs`, protocol section 7), with per-record TTLs and
//! writes that outlast a leader election.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::steps::{FailureRecord, RunRecord, StepRecord};

mod conditional;
mod fresh;
mod lock;
mod many;
mod started;
pub(crate) use conditional::{Write, WriteError};
pub(crate) use fresh::leader_get;
use herald::protocol::runs;
pub(crate) use lock::Locked;

/// Reads and writes a namespace's runs bucket.
#[derive(Debug, Clone)]
pub struct RunStore {
    backend: Backend,
    /// How long a finished run's records are kept: the events stream's `max_age` (records
    /// must outlive every redelivery of their event). `None`: kept until deleted.
    retention: Option<Duration>,
    /// The bucket accepts per-record TTLs (`allow_msg_ttl`).
    ttl: bool,
}

/// Where the records are: the runs bucket, or memory (for [`crate::TestWorker`]).
#[derive(Debug, Clone)]
enum Backend {
    /// Behind an `Arc`: a run's state holds a clone of the store, one per delivery.
    Bucket(Arc<Bucket>),
    Memory(Arc<parking_lot::Mutex<BTreeMap<String, Bytes>>>),
}

#[derive(Debug)]
struct Bucket {
    kv: kv::Store,
    js: async_nats::jetstream::Context,
    /// Cleared when the server turns down reads of many keys at once (before 2.11).
    many_keys: std::sync::atomic::AtomicBool,
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

pub(crate) fn store_error<E: Into<async_nats::Error>>(
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

/// How long a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// As long as its event may be redelivered: the retention.
    Retention,
    /// Until `at` (Unix milliseconds), then the retention: records of a sleeping run.
    Beyond(u64),
}

/// Pauses between tries of a runs-bucket operation that failed (a leader election, a node
/// restarting): 50 ms doubling to 2 s.
const RETRY: crate::Backoff = crate::Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_secs(2),
    jitter: 0.2,
};

/// Runs `operation` until it succeeds or `deadline` passes; the last error is returned.
pub(crate) async fn until<T, F, Fut>(
    deadline: Instant,
    mut operation: F,
) -> Result<T, RunStoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RunStoreError>>,
{
    let mut failures = 0;
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                failures += 1;
                let pause = RETRY.delay(failures);
                if Instant::now() + pause >= deadline {
                    return Err(error);
                }
                tracing::debug!(%error, failures, "runs bucket operation failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

impl RunStore {
    /// Opens the runs bucket of `client`'s namespace.
    pub async fn open(client: &herald::Client) -> Result<RunStore, RunStoreError> {
        let namespace = client.namespace();
        let bucket = namespace.runs_bucket();
        let kv = client
            .jetstream()
            .get_key_value(&bucket)
            .await
            .map_err(store_error("open", &bucket))?;
        // Each look-up answers with the stream's info.
        let ttl = kv.stream.cached_info().config.allow_message_ttl;
        let events = namespace.events_stream();
        let max_age = client
            .jetstream()
            .get_stream(&events)
            .await
            .map_err(store_error("open", &events))?
            .cached_info()
            .config
            .max_age;
        let retention = (!max_age.is_zero()).then_some(max_age);
        if !ttl {
            tracing::warn!(
                bucket,
                "the runs bucket has no per-record TTLs (allow_msg_ttl); run `herald provision --apply`: until then its records live by the bucket's max age"
            );
        }
        Ok(RunStore {
            backend: Backend::Bucket(Arc::new(Bucket {
                kv,
                js: client.jetstream().clone(),
                many_keys: std::sync::atomic::AtomicBool::new(true),
            })),
            retention,
            ttl,
        })
    }

    /// The bucket, when the store is one.
    pub(crate) fn kv(&self) -> Option<kv::Store> {
        match &self.backend {
            Backend::Bucket(bucket) => Some(bucket.kv.clone()),
            Backend::Memory(_) => None,
        }
    }

    /// A store in memory, for running handlers without a server.
    pub(crate) fn in_memory() -> RunStore {
        RunStore {
            backend: Backend::Memory(Arc::default()),
            retention: None,
            ttl: false,
        }
    }

    pub(crate) async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, RunStoreError> {
        let stored = match &self.backend {
            Backend::Bucket(bucket) => {
                bucket.kv.get(key).await.map_err(store_error("read", key))?
            }
            Backend::Memory(map) => map.lock().get(key).cloned(),
        };
        match stored {
            Some(bytes) if !bytes.is_empty() => Ok(serde_json::from_slice(&bytes).ok()),
            _ => Ok(None),
        }
    }

    /// Reads `key`, retrying failures until `deadline`.
    pub(crate) async fn get_until<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<T>, RunStoreError> {
        until(deadline, || self.get(key)).await
    }

    /// The `Nats-TTL` of a record, in seconds; `None` without TTLs or retention.
    pub(crate) fn ttl_seconds(&self, lifetime: Lifetime) -> Option<u64> {
        if !self.ttl {
            return None;
        }
        let retention = self.retention?;
        let extra = match lifetime {
            Lifetime::Retention => Duration::ZERO,
            Lifetime::Beyond(at_ms) => {
                Duration::from_millis(at_ms.saturating_sub(crate::steps::now_ms()))
            }
        };
        Some((retention + extra).as_secs().max(1))
    }

    /// Writes `value` at `key` (once).
    pub(crate) async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        lifetime: Lifetime,
    ) -> Result<(), RunStoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RunStoreError {
            action: "encode",
            key: key.to_owned(),
            source: e.into(),
        })?;
        self.put_bytes(key, Bytes::from(bytes), lifetime).await
    }

    /// Writes `value` at `key`, retrying failures until `deadline`.
    pub(crate) async fn put_until<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        lifetime: Lifetime,
        deadline: Instant,
    ) -> Result<(), RunStoreError> {
        let bytes = Bytes::from(serde_json::to_vec(value).map_err(|e| RunStoreError {
            action: "encode",
            key: key.to_owned(),
            source: e.into(),
        })?);
        until(deadline, || self.put_bytes(key, bytes.clone(), lifetime)).await
    }

    pub(crate) async fn put_bytes(
        &self,
        key: &str,
        bytes: Bytes,
        lifetime: Lifetime,
    ) -> Result<(), RunStoreError> {
        let (kv, js) = match &self.backend {
            Backend::Bucket(bucket) => (&bucket.kv, &bucket.js),
            Backend::Memory(map) => {
                map.lock().insert(key.to_owned(), bytes);
                return Ok(());
            }
        };
        let Some(ttl) = self.ttl_seconds(lifetime) else {
            kv.put(key, bytes)
                .await
                .map_err(store_error("write", key))?;
            return Ok(());
        };
        // A put with `Nats-TTL` (the KV API has it for create only): the same subject.
        let prefix = kv.put_prefix.as_ref().unwrap_or(&kv.prefix);
        let mut subject = String::with_capacity(prefix.len() + key.len());
        subject.push_str(prefix);
        subject.push_str(key);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(herald::protocol::header::NATS_TTL, ttl.to_string());
        js.publish_with_headers(subject, headers, bytes)
            .await
            .map_err(store_error("write", key))?
            .await
            .map_err(store_error("write", key))?;
        Ok(())
    }

    /// Creates `key` only if it does not exist; true when this call created it.
    pub(crate) async fn create_marker(&self, key: &str) -> Result<bool, RunStoreError> {
        let value = Bytes::from_static(b"{}");
        let kv = match &self.backend {
            Backend::Bucket(bucket) => &bucket.kv,
            Backend::Memory(map) => {
                let mut map = map.lock();
                if map.contains_key(key) {
                    return Ok(false);
                }
                map.insert(key.to_owned(), value);
                return Ok(true);
            }
        };
        let created = match self.ttl_seconds(Lifetime::Retention) {
            Some(ttl) => {
                kv.create_with_ttl(key, value, Duration::from_secs(ttl))
                    .await
            }
            None => kv.create(key, value).await,
        };
        match created {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(store_error("create", key)(error)),
        }
    }

    /// Stores a step record, as `ctx.step` does after the step succeeded.
    pub async fn put_record(&self, key: &str, record: &StepRecord) -> Result<(), RunStoreError> {
        self.put(key, record, Lifetime::Retention).await
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
        let kv = match &self.backend {
            Backend::Bucket(bucket) => &bucket.kv,
            Backend::Memory(map) => {
                let prefix = format!("{run_key}.");
                for (key, value) in map.lock().iter() {
                    if key.starts_with(&prefix)
                        && let Ok(value) = serde_json::from_slice(value)
                    {
                        entries.push((key.clone(), value));
                    }
                }
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(entries);
            }
        };
        let pattern = format!("{run_key}.>");
        let mut watch = kv
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

    /// The stored state of the run of `function` for the event `event_id`.
    pub async fn inspect(
        &self,
        function: &str,
        event_id: &str,
    ) -> Result<RunReport, RunStoreError> {
        let run_key = runs::run_key(function, &runs::event_key(event_id));
        let mut report = RunReport {
            run_key: run_key.clone(),
            outcome: None,
            failure: None,
            steps: Vec::new(),
        };
        let step_prefix = runs::steps_prefix(&run_key);
        for (key, value) in self.entries(&run_key).await? {
            if key == run_key {
                report.outcome = serde_json::from_value(value).ok();
            } else if key == runs::failure_key(&run_key) {
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
