//! Cancelling many runs of a function at once: the runs waiting in a continuation (asleep,
//! or between step retries) and the runs of the events in a time range that have not
//! finished, with a dry run that only counts them.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::{StreamExt, TryStreamExt};
use herald::protocol::{self, header, runs};

use super::{CancelError, CancelOutcome, cancel_key, nats};
use crate::steps::{RunRecord, RunStatus};

/// Which runs of a function to cancel.
#[derive(Debug, Clone)]
pub struct BulkCancel {
    /// The function.
    pub function: String,
    /// Runs of events published at or after this time (default: any).
    pub since: Option<SystemTime>,
    /// Runs of events published before this time (default: any).
    pub until: Option<SystemTime>,
    /// Only count them.
    pub dry_run: bool,
    /// The reason recorded.
    pub reason: String,
}

/// What a bulk cancel found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkCancelReport {
    /// Unfinished runs in the range (what a dry run would cancel).
    pub matched: usize,
    /// Runs cancelled now.
    pub cancelled: usize,
    /// Of those, runs whose pending continuation was fired to end them now.
    pub woken: usize,
    /// Runs cancelled before.
    pub already_cancelled: usize,
}

impl BulkCancel {
    /// Carries the cancel out (or counts, with `dry_run`).
    pub async fn run(&self, client: &herald::Client) -> Result<BulkCancelReport, CancelError> {
        let function = self.function.as_str();
        crate::function::check_function_id(function)?;
        let kv = client
            .jetstream()
            .get_key_value(client.namespace().runs_bucket())
            .await
            .map_err(nats(function))?;
        let mut keys = self.waiting(client).await?;
        keys.extend(self.logged(client).await?);
        let mut report = BulkCancelReport::default();
        for event_key in keys {
            let run_key = runs::run_key(function, &event_key);
            let status = kv
                .get(&run_key)
                .await
                .map_err(nats(function))?
                .and_then(|bytes| serde_json::from_slice::<RunRecord>(&bytes).ok())
                .map(|record| record.status);
            if status.is_some_and(|s| s.is_final() || s == RunStatus::DeadLettered) {
                continue;
            }
            report.matched += 1;
            if self.dry_run {
                continue;
            }
            match cancel_key(client, &kv, function, &event_key, &self.reason).await? {
                CancelOutcome::Cancelled { woken } => {
                    report.cancelled += 1;
                    report.woken += usize::from(woken);
                }
                CancelOutcome::AlreadyCancelled(_) => report.already_cancelled += 1,
                CancelOutcome::AlreadyFinished(_) => report.matched -= 1,
            }
        }
        Ok(report)
    }

    fn in_range(&self, time: SystemTime) -> bool {
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time < until)
    }

    /// Runs with a pending continuation (`ns.redrive.F.sched.<event-key>`) whose event is in
    /// the range.
    async fn waiting(&self, client: &herald::Client) -> Result<BTreeSet<String>, CancelError> {
        let function = self.function.as_str();
        let namespace = client.namespace();
        let stream = client
            .jetstream()
            .get_stream_no_info(namespace.events_stream())
            .await
            .map_err(nats(function))?;
        let prefix = format!("{}.sched.", namespace.redrive_subject(function));
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}*"))
            .await
            .map_err(nats(function))?;
        let mut found = Vec::new();
        while let Some((subject, _)) = subjects.try_next().await.map_err(nats(function))? {
            found.push(subject);
        }
        let mut keys = BTreeSet::new();
        for subject in found {
            let message = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => message,
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(error) => return Err(nats(function)(error)),
            };
            // The event's time (protocol section 4): its `ce-time`, else its UUIDv7 id's,
            // else (an event with neither) when the schedule was stored.
            let time = message
                .headers
                .get(header::TIME)
                .and_then(|t| {
                    time::OffsetDateTime::parse(
                        t.as_str(),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .ok()
                })
                .map(SystemTime::from)
                .or_else(|| {
                    let id = message.headers.get(header::ID)?;
                    herald::headers::time_of_event_id(id.as_str())
                })
                .unwrap_or_else(|| message.time.into());
            if self.in_range(time)
                && let Some(key) = subject.strip_prefix(&prefix)
            {
                keys.insert(key.to_owned());
            }
        }
        Ok(keys)
    }

    /// Runs of the events of the function's triggers stored in the range.
    async fn logged(&self, client: &herald::Client) -> Result<BTreeSet<String>, CancelError> {
        let function = self.function.as_str();
        let namespace = client.namespace();
        let stream = client
            .jetstream()
            .get_stream(namespace.events_stream())
            .await
            .map_err(nats(function))?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(function)
            .await
            .map_err(|_| CancelError::UnknownFunction {
                function: function.to_owned(),
            })?;
        let info = consumer.info().await.map_err(nats(function))?;
        let prefix = protocol::events_prefix(namespace);
        let filters: Vec<String> = info
            .config
            .filter_subjects
            .iter()
            .chain(std::iter::once(&info.config.filter_subject))
            .filter(|s| s.starts_with(&prefix))
            .cloned()
            .collect();
        let mut keys = BTreeSet::new();
        if filters.is_empty() {
            return Ok(keys);
        }
        let deliver_policy = match self.since {
            Some(since) => consumer::DeliverPolicy::ByStartTime {
                start_time: since.into(),
            },
            None => consumer::DeliverPolicy::All,
        };
        let reader = stream
            .create_consumer(pull::OrderedConfig {
                filter_subjects: filters,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(nats(function))?;
        let mut messages = reader.messages().await.map_err(nats(function))?;
        let until = self.until.map(time::OffsetDateTime::from);
        loop {
            // An empty range says nothing: the timeout ends it.
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let Ok(Some(message)) = next else { break };
            let message = message.map_err(nats(function))?;
            let info = message.info().map_err(nats(function))?;
            if until.is_some_and(|until| info.published >= until) {
                break;
            }
            if let Some(id) = message.headers.as_ref().and_then(|h| h.get(header::ID)) {
                keys.insert(runs::event_key(id.as_str()));
            }
            if info.pending == 0 {
                break;
            }
        }
        Ok(keys)
    }
}
