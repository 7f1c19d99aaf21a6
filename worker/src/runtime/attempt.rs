//! One delivery from message to settlement: prepare, run the handler, count a failure.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream;
use futures::FutureExt;
use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};

use super::decide::{Facts, Outcome, decide};
use super::delivery::{Delivery, Unreadable, log, terminate_foreign};
use super::failures::{count_step_failure, with_suspension};
use super::{FunctionLoop, panic_message};
use crate::dead_letter::DeadLetterReason;
use crate::function::{BoxFuture, Ctx, Decoded, HandlerError, Publisher};
use crate::steps::{FailureRecord, RunRecord, RunState, RunStatus};
use herald::protocol::{header, runs};

/// What `prepare` found: a decision before the handler, or the handler's future.
enum Prepared {
    Settled(Outcome),
    Ready(BoxFuture<Result<(), HandlerError>>),
}

impl FunctionLoop {
    /// Handles one delivered message. What Herald logs about it is in its `delivery` span,
    /// which names the function, the event and its stream sequence.
    pub(crate) async fn handle(&self, message: jetstream::Message) {
        let delivery = match Delivery::read(&self.function.id, message, &self.shared.events_prefix)
        {
            Ok(delivery) => delivery,
            Err(unreadable) => match *unreadable {
                Unreadable::NoMetadata(message, error) => {
                    return terminate_foreign(&message, &error).await;
                }
                Unreadable::Envelope(delivery, error) => {
                    let facts = self.facts(&delivery, None, None);
                    let settlement = decide(Outcome::Unreadable(error), &facts);
                    return self.settle(&delivery, None, settlement).await;
                }
            },
        };
        self.process(delivery).await;
    }

    /// Under the attempt's OpenTelemetry span (the current context while the handler runs).
    async fn process(&self, delivery: Delivery) {
        let context = self.shared.spans.attempt(
            delivery.message(),
            &self.shared.events_prefix,
            &self.function.id,
        );
        self.attempt(&delivery, &context)
            .with_context(context.clone())
            .await;
        context.span().end();
    }

    async fn attempt(&self, delivery: &Delivery, trace: &opentelemetry::Context) {
        let run = self.run_state(delivery);
        let outcome = match self.prepare(delivery, run.as_ref(), trace).await {
            Prepared::Settled(outcome) => outcome,
            Prepared::Ready(future) => self.run(delivery, future, run.as_deref()).await,
        };
        let step_failures = self.count_failure(delivery, &outcome, run.as_deref()).await;
        let facts = self.facts(delivery, run.as_deref(), step_failures);
        let settlement = decide(outcome, &facts);
        self.settle(delivery, run.as_deref(), settlement).await;
    }

    /// The facts [`decide`] needs.
    pub(super) fn facts(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        step_failures: Option<u32>,
    ) -> Facts {
        let settings = &self.function.settings;
        let (position, step) = run.map(|r| r.position.lock().clone()).unwrap_or_default();
        Facts {
            delivered: delivery.delivered,
            attempts: settings.attempts,
            timeout: settings.timeout,
            backoff: settings.backoff,
            jitter_unit: crate::backoff::random_unit(),
            schedules: self.shared.schedules,
            record_runs: settings.idempotent && run.is_some(),
            position,
            step,
            step_failures,
            now_ms: crate::steps::now_ms(),
        }
    }

    /// The run's state in the runs bucket (no I/O yet): its key, and what the headers say
    /// about replays, wake-ups and redrives.
    pub(super) fn run_state(&self, delivery: &Delivery) -> Option<Arc<RunState>> {
        let store = self.shared.runs.as_ref()?;
        // A replay (`herald replay`) is a fresh run of the same event.
        let run_id = match delivery.header(header::REPLAY) {
            Some(replay) => runs::replay_run_id(delivery.event_id(), replay),
            None => delivery.event_id().to_owned(),
        };
        Some(Arc::new(RunState {
            store: store.clone(),
            run_key: runs::run_key(&self.function.id, &runs::event_key(&run_id)),
            max_step_output: self.function.settings.max_step_output,
            patience: self.patience(),
            counters: parking_lot::Mutex::default(),
            position: parking_lot::Mutex::new((0, None)),
            suspend_until: parking_lot::Mutex::new(None),
            woken_for: delivery.header(header::WAKE).map(str::to_owned),
            failures_before: parking_lot::Mutex::new(None),
            records: parking_lot::Mutex::default(),
        }))
    }

    /// Everything decided before the handler: the budget, a finished run, the payload.
    async fn prepare(
        &self,
        delivery: &Delivery,
        run: Option<&Arc<RunState>>,
        trace: &opentelemetry::Context,
    ) -> Prepared {
        let settings = &self.function.settings;
        if delivery.delivered > settings.attempts {
            return Prepared::Settled(Outcome::BeyondAttempts);
        }
        if let Some(run) = run {
            if settings.idempotent {
                let read = run
                    .store
                    .get_until::<RunRecord>(&run.run_key, run.deadline());
                match self.keep_alive(delivery, read).await {
                    Ok(Some(record)) if record.status == RunStatus::Ok => {
                        log!(
                            delivery,
                            info,
                            "the run already finished; acking the redelivery without running it"
                        );
                        return Prepared::Settled(Outcome::AlreadyFinished);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        return Prepared::Settled(Outcome::StoreUnavailable(error.to_string()));
                    }
                }
            }
            // A retry or a continuation may have a failure count to continue from.
            if delivery.delivered > 1 || delivery.header(header::CONTINUATION).is_some() {
                let epoch = delivery.header(header::REDRIVE_OF).unwrap_or_default();
                let key = run.failure_key();
                let read = run.store.get_until::<FailureRecord>(&key, run.deadline());
                if let Ok(Some(record)) = self.keep_alive(delivery, read).await
                    && record.epoch == epoch
                {
                    *run.failures_before.lock() = Some((record.position, record.failures));
                }
            }
        }
        let meta = &delivery.meta;
        let ctx = Ctx {
            function: Arc::clone(&self.function.id),
            envelope: Arc::clone(meta),
            attempt: delivery.delivered,
            max_attempts: settings.attempts,
            stream_sequence: delivery.stream_sequence,
            trace: trace.clone(),
            spans: self.shared.spans.clone(),
            run: run.cloned(),
            publisher: Publisher::Client(self.shared.client.clone()),
        };
        let writer_schema = self
            .shared
            .writer_schemas
            .resolve(meta.data_schema.as_deref(), &meta.event_type)
            .await;
        match self.function.handler.prepare(
            delivery.data.clone(),
            delivery.headers(),
            ctx,
            writer_schema,
        ) {
            Decoded::Ready(future) => Prepared::Ready(future),
            Decoded::SchemaViolation(violations) => Prepared::Settled(Outcome::Invalid {
                reason: DeadLetterReason::SchemaViolation,
                error: format!(
                    "the payload breaks the schema of {}: {violations}",
                    meta.event_type
                ),
            }),
            Decoded::DecodeError(error) => Prepared::Settled(Outcome::Invalid {
                reason: DeadLetterReason::DecodeError,
                error,
            }),
        }
    }

    /// Runs the handler under its timeout, sending progress acks every `ack_wait / 3`.
    async fn run(
        &self,
        delivery: &Delivery,
        future: BoxFuture<Result<(), HandlerError>>,
        run: Option<&RunState>,
    ) -> Outcome {
        let settings = &self.function.settings;
        if let Some(seconds) = delivery
            .meta
            .time
            .as_deref()
            .and_then(crate::telemetry::seconds_since)
        {
            self.shared
                .metrics
                .latency
                .record(seconds, &self.function_attribute);
        }
        self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let handler = AssertUnwindSafe(future).catch_unwind();
        tokio::pin!(handler);
        // One timer per attempt: it fires for the next progress ack or the deadline,
        // whichever comes first.
        let begun = tokio::time::Instant::now();
        let deadline = begun + settings.timeout;
        let every = settings.ack_wait / 3;
        let mut next_progress = begun + every;
        let timer = tokio::time::sleep_until(next_progress.min(deadline));
        tokio::pin!(timer);
        let outcome = loop {
            tokio::select! {
                result = &mut handler => break match result {
                    Err(panic) => Outcome::Panicked(panic_message(&panic)),
                    Ok(Err(error)) => Outcome::Failed(error),
                    Ok(Ok(())) => Outcome::Done,
                },
                () = &mut timer => {
                    if tokio::time::Instant::now() >= deadline {
                        break Outcome::TimedOut;
                    }
                    delivery.progress().await;
                    next_progress += every;
                    timer.as_mut().reset(next_progress.min(deadline));
                }
                () = self.shared.abandon.cancelled() => break Outcome::Abandoned,
            }
        };
        self.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.shared
            .metrics
            .duration
            .record(started.elapsed().as_secs_f64(), &self.function_attribute);
        with_suspension(outcome, run)
    }

    /// A retryable failure after the run reached steps is counted for that position in
    /// `F.<event-key>.p`; returns the count, or `None` when there is none to keep.
    async fn count_failure(
        &self,
        delivery: &Delivery,
        outcome: &Outcome,
        run: Option<&RunState>,
    ) -> Option<u32> {
        let epoch = delivery.header(header::REDRIVE_OF).unwrap_or_default();
        let count = count_step_failure(run?, epoch, outcome);
        match self.keep_alive(delivery, count).await? {
            Ok(failures) => Some(failures),
            Err(error) => {
                // Without the count, the delivery count decides.
                log!(delivery, error, %error, "recording the step failure failed; counting deliveries instead");
                None
            }
        }
    }

    /// Runs `work` while telling the server every `ack_wait / 3` that the delivery is alive.
    pub(super) async fn keep_alive<T>(
        &self,
        delivery: &Delivery,
        work: impl Future<Output = T>,
    ) -> T {
        let every = self.function.settings.ack_wait / 3;
        tokio::pin!(work);
        loop {
            tokio::select! {
                value = &mut work => return value,
                () = tokio::time::sleep(every) => delivery.progress().await,
            }
        }
    }
}
