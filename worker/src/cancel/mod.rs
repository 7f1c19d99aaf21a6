//! Cancelling runs (protocol section 10): a cancel record `F.<event-key>.c` in `ns-runs`
//! that every worker of the function follows, checked when a delivery of the run arrives and
//! at each step boundary; a sleeping run's continuation is fired at once, so it ends
//! promptly rather than at its wake time.

mod bulk;
pub(crate) mod watch;

use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use herald::protocol::{self, runs};
use serde::{Deserialize, Serialize};

use crate::cron::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_SCHEDULE_NEXT, NATS_SCHEDULER};
use crate::steps::{RunRecord, RunStatus};

pub use bulk::{BulkCancel, BulkCancelReport};

/// `herald-cancelled: <reason>`: on a continuation fired early to end a cancelled run.
pub const HEADER_CANCELLED: &str = "herald-cancelled";
/// `Nats-Expected-Last-Subject-Sequence-Subject`: the subject the expected sequence is
/// checked on, when it is not the one published to (nats-server 2.11+).
pub const NATS_EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT: &str =
    "Nats-Expected-Last-Subject-Sequence-Subject";

/// A run's cancel record (`F.<event-key>.c`): the first reason wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRecord {
    /// Why.
    pub reason: String,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// What cancelling one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The run is cancelled: it runs no further step.
    Cancelled {
        /// Whether a pending continuation (a sleep, a step retry) was fired to end it now.
        woken: bool,
    },
    /// It was cancelled already (the first reason stands).
    AlreadyCancelled(String),
    /// It has finished: nothing to cancel.
    AlreadyFinished(RunStatus),
}

/// Why runs could not be cancelled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// The function id is not valid.
    #[error(transparent)]
    Function(#[from] crate::FunctionError),
    /// The function has no consumer in the namespace.
    #[error("function {function} does not exist in this namespace; `herald functions` lists them")]
    UnknownFunction {
        /// The id.
        function: String,
    },
    /// NATS failed.
    #[error("cancelling runs of {function}: {source}")]
    Nats {
        /// The function.
        function: String,
        /// The error.
        source: async_nats::Error,
    },
}

fn nats<E: Into<async_nats::Error>>(function: &str) -> impl Fn(E) -> CancelError + '_ {
    move |error| CancelError::Nats {
        function: function.to_owned(),
        source: error.into(),
    }
}

/// Cancels the run of `function` for the event (or run id) `event_id`: it runs no further
/// step, and ends recorded `cancelled` when a worker next sees it (at once when it was
/// sleeping or waiting for a retry).
pub async fn cancel_run(
    client: &herald::Client,
    function: &str,
    event_id: &str,
    reason: &str,
) -> Result<CancelOutcome, CancelError> {
    crate::function::check_function_id(function)?;
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .map_err(nats(function))?;
    cancel_key(client, &kv, function, &runs::event_key(event_id), reason).await
}

/// Cancels the run `F.<event_key>` with the runs bucket at hand.
pub(crate) async fn cancel_key(
    client: &herald::Client,
    kv: &kv::Store,
    function: &str,
    event_key: &str,
    reason: &str,
) -> Result<CancelOutcome, CancelError> {
    let run_key = runs::run_key(function, event_key);
    if let Some(bytes) = kv.get(&run_key).await.map_err(nats(function))?
        && let Ok(record) = serde_json::from_slice::<RunRecord>(&bytes)
        && (record.status.is_final() || record.status == RunStatus::DeadLettered)
    {
        return Ok(CancelOutcome::AlreadyFinished(record.status));
    }
    let record = CancelRecord {
        reason: reason.to_owned(),
        at: herald::headers::format_time(SystemTime::now()),
    };
    let value = serde_json::to_vec(&record).map_err(nats(function))?;
    let key = cancel_record_key(&run_key);
    match kv.create(&key, value.into()).await {
        Ok(_) => {}
        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
            let first = kv
                .get(&key)
                .await
                .map_err(nats(function))?
                .and_then(|bytes| serde_json::from_slice::<CancelRecord>(&bytes).ok())
                .map_or_else(|| reason.to_owned(), |r| r.reason);
            return Ok(CancelOutcome::AlreadyCancelled(first));
        }
        Err(error) => return Err(nats(function)(error)),
    }
    let woken = wake(client, function, event_key, reason).await?;
    Ok(CancelOutcome::Cancelled { woken })
}

/// `F.<event-key>.c`.
pub(crate) fn cancel_record_key(run_key: &str) -> String {
    format!("{run_key}.c")
}

async fn wake(
    client: &herald::Client,
    function: &str,
    event_key: &str,
    reason: &str,
) -> Result<bool, CancelError> {
    fire_now(client, function, event_key, Some(reason), None)
        .await
        .map_err(nats(function))
}

/// Fires the run's pending continuation now (marked cancelled with a reason), removing its
/// timer in the same message (early fire with purge); false when none is pending, or it
/// fired or changed meanwhile.
pub(crate) async fn fire_now(
    client: &herald::Client,
    function: &str,
    event_key: &str,
    cancelled: Option<&str>,
    only_for_step: Option<&str>,
) -> Result<bool, async_nats::Error> {
    let subject = protocol::schedule_subject(client.namespace(), function, event_key);
    fire_schedule(client, function, &subject, cancelled, only_for_step).await
}

/// Early-fires the schedule on `subject` to `ns.redrive.<function>` (see [`fire_now`]).
pub(crate) async fn fire_schedule(
    client: &herald::Client,
    function: &str,
    subject: &str,
    cancelled: Option<&str>,
    only_for_step: Option<&str>,
) -> Result<bool, async_nats::Error> {
    let namespace = client.namespace();
    let stream = client
        .jetstream()
        .get_stream_no_info(namespace.events_stream())
        .await?;
    let pending = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => message,
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(false),
        Err(error) => return Err(error.into()),
    };
    // A wake meant for one step leaves a later continuation of the run (another sleep or
    // wait) alone.
    if let Some(step) = only_for_step
        && pending
            .headers
            .get(herald::protocol::header::WAKE)
            .map(|v| v.as_str())
            != Some(step)
    {
        return Ok(false);
    }
    let mut headers: HeaderMap = protocol::copy_headers_except_transport(&pending.headers, &[]);
    headers.insert(NATS_SCHEDULER, subject);
    headers.insert(NATS_SCHEDULE_NEXT, "purge");
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        pending.sequence.to_string().as_str(),
    );
    headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT, subject);
    if let Some(reason) = cancelled {
        headers.insert(HEADER_CANCELLED, reason);
    }
    let sent = client
        .jetstream()
        .send_publish(
            namespace.redrive_subject(function),
            PublishMessage::build()
                .payload(pending.payload.clone())
                .headers(headers),
        )
        .await?
        .await;
    match sent {
        Ok(_) => Ok(true),
        // It fired (or was replaced) meanwhile: that delivery finds what was recorded.
        Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
        Err(error) => Err(error.into()),
    }
}
