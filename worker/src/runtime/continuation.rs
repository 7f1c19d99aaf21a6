//! Continuations: a run goes on in a scheduled copy of its event (protocol section 7), for a
//! durable sleep's wake-up or a step retry beyond one delivery's budget.

use std::time::Duration;

use async_nats::jetstream;
use herald::protocol::{self, header, runs};

use super::FunctionLoop;
use super::delivery::Delivery;
use crate::run_store::{Lifetime, RunStoreError};
use crate::steps::RunState;

/// The `@at` time of a schedule due at `at_ms`: whole seconds, rounded up, at least a second
/// from now, RFC 3339 UTC.
pub(super) fn schedule_time(at_ms: u64) -> String {
    let seconds = at_ms.div_ceil(1000).max(crate::steps::now_ms() / 1000 + 1);
    let time = herald::headers::format_time(std::time::UNIX_EPOCH + Duration::from_secs(seconds));
    format!("{}Z", &time[..19])
}

/// What a continuation carries.
pub(crate) struct Continuation<'a> {
    pub(crate) function: &'a str,
    pub(crate) event_key: &'a str,
    pub(crate) payload: bytes::Bytes,
    /// The delivered message's headers, copied without `Nats-*` and `herald-wake`.
    pub(crate) original: Option<&'a async_nats::HeaderMap>,
    /// The delivered message's stream sequence: the trigger's, unless it says otherwise.
    pub(crate) stream_sequence: u64,
    pub(crate) at_ms: u64,
    pub(crate) wake: Option<&'a str>,
    pub(crate) ttl_never: bool,
}

/// Publishes a continuation on `ns.redrive.F.sched.<event-key>` (replacing any earlier one of
/// the run); returns its subject and stream sequence.
pub(crate) async fn publish_continuation(
    client: &herald::Client,
    continuation: &Continuation<'_>,
) -> Result<(String, u64), async_nats::Error> {
    let mut headers = match continuation.original {
        Some(original) => {
            let mut copy = protocol::copy_headers_except_transport(original, &[header::WAKE]);
            crate::cron::keep_tick(original, &mut copy);
            copy
        }
        None => async_nats::HeaderMap::new(),
    };
    if headers.get(TRIGGER_SEQ).is_none() {
        headers.insert(
            TRIGGER_SEQ,
            continuation.stream_sequence.to_string().as_str(),
        );
    }
    let at = schedule_time(continuation.at_ms);
    let namespace = client.namespace();
    let target = namespace.redrive_subject(continuation.function);
    headers.insert(header::NATS_SCHEDULE, protocol::schedule_at(&at));
    headers.insert(header::NATS_SCHEDULE_TARGET, target.as_str());
    if continuation.ttl_never {
        headers.insert(header::NATS_TTL, header::TTL_NEVER);
    }
    headers.insert(header::CONTINUATION, header::CONTINUATION_VALUE);
    if let Some(step) = continuation.wake {
        headers.insert(header::WAKE, step);
    }
    let subject =
        protocol::schedule_subject(namespace, continuation.function, continuation.event_key);
    let ack = client
        .jetstream()
        .send_publish(
            subject.clone(),
            jetstream::message::PublishMessage::build()
                .payload(continuation.payload.clone())
                .headers(headers),
        )
        .await?
        .await?;
    Ok((subject, ack.sequence))
}

use crate::wait::TRIGGER_SEQ;

impl FunctionLoop {
    /// Publishes a scheduled copy of the event to `ns.redrive.F` at `at_ms`, with a fresh
    /// delivery count (`Nats-Schedule`, nats-server 2.12+). With `Nats-TTL: never` the
    /// schedule outlives the stream's `max_age`, however long the sleep.
    pub(super) async fn schedule_continuation(
        &self,
        delivery: &Delivery,
        at_ms: u64,
        wake_step: Option<&str>,
    ) -> Result<(), async_nats::Error> {
        publish_continuation(
            &self.shared.client,
            &Continuation {
                function: &self.function.id,
                event_key: &runs::event_key(delivery.event_id()),
                payload: delivery.payload().clone(),
                original: delivery.headers(),
                stream_sequence: delivery.stream_sequence,
                at_ms,
                wake: wake_step,
                ttl_never: self.shared.schedules_ttl,
            },
        )
        .await
        .map(drop)
    }

    /// Writes the step records this attempt saw again, to live until `at_ms` and then the
    /// retention: a run sleeping longer than the retention keeps its steps.
    pub(super) async fn extend_records(
        &self,
        run: &RunState,
        at_ms: u64,
    ) -> Result<(), RunStoreError> {
        let records = run.records.lock().clone();
        for (key, record) in records {
            run.store
                .put_until(&key, &record, Lifetime::Beyond(at_ms), run.deadline())
                .await?;
        }
        Ok(())
    }
}
