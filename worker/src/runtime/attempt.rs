//! One delivery from message to settlement: prepare, run the handler, count a failure.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use futures::FutureExt;
use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};
use tokio::sync::OwnedSemaphorePermit;

use super::decide::{Facts, Outcome, Record, decide};
use super::delivery::{Delivery, log};
use super::failures::{count_step_failure, with_suspension};
use super::group::{Held, Known};
use super::{FunctionLoop, panic_message};
use crate::dead_letter::DeadLetterReason;
use crate::function::{BoxFuture, Ctx, Decoded, HandlerError, Publisher};
use crate::steps::{FailureRecord, RunRecord, RunState};
use herald::protocol::{header, runs};

/// What `prepare` found: a decision before the handler, or the handler's future.
enum Prepared {
    Settled(Outcome),
    /// The handler's future, and the permit it runs under.
    Ready(BoxFuture<Result<(), HandlerError>>, Held),
}

impl FunctionLoop {
    /// Under the attempt's OpenTelemetry span (the current context while the handler runs).
    /// The delivery's ack subject when it was a plain first delivery acked without its
    /// run's record, whose ack the drain then confirms.
    ///
    /// An `async` block rather than an `async fn`, so that the delivery is held once, not
    /// also as an argument beside it.
    #[allow(clippy::manual_async_fn)] // see above
    pub(super) fn process(
        &self,
        delivery: Box<Delivery>,
        run: Option<Arc<RunState>>,
        known: Known,
    ) -> impl Future<Output = Option<async_nats::Subject>> + Send + '_ {
        async move {
            let context = self.shared.spans.attempt(
                delivery.message(),
                &self.shared.events_prefix,
                &self.function.id,
                delivery.traced,
            );
            let unconfirmed = self
                .attempt(&delivery, run, known, &context)
                .with_context(context.clone())
                .await;
            context.span().end();
            unconfirmed.then(|| delivery.into_reply()).flatten()
        }
    }

    async fn attempt(
        &self,
        delivery: &Delivery,
        run: Option<Arc<RunState>>,
        known: Known,
        trace: &opentelemetry::Context,
    ) -> bool {
        let mut started = None;
        let outcome = match self.prepare(delivery, run.as_ref(), known, trace).await {
            Prepared::Settled(outcome) => outcome,
            Prepared::Ready(future, permit) => {
                let (outcome, took) = self.run(delivery, future, run.as_deref()).await;
                drop(permit);
                started = self
                    .shared
                    .activity
                    .as_ref()
                    .map(|_| super::activity::Begun { took });
                // The run's output (for an invoking caller): `null` unless the handler gave one.
                if matches!(outcome, Outcome::Done)
                    && let Some(run) = &run
                {
                    run.output.lock().get_or_insert(serde_json::Value::Null);
                }
                outcome
            }
        };
        let step_failures = if matches!(outcome, Outcome::Done) {
            None
        } else {
            Box::pin(self.count_failure(delivery, &outcome, run.as_deref())).await
        };
        let facts = if matches!(outcome, Outcome::Done) {
            // A finished run's settlement reads neither the clock nor the jitter.
            self.facts_without_clock(delivery, run.as_deref(), step_failures)
        } else {
            self.facts(delivery, run.as_deref(), step_failures)
        };
        let settlement = decide(outcome, &facts);
        let finished = self.finished_record(delivery, run.as_deref(), started, &settlement, trace);
        let unconfirmed = settlement
            == super::decide::Settlement::Ack {
                record: Record::IfAckUnconfirmed,
            };
        self.settle(delivery, run.as_deref(), settlement).await;
        self.publish_finished(finished).await;
        let holds_slots = run.as_ref().is_some_and(|r| !r.slots.lock().is_empty());
        if holds_slots && let Some(run) = &run {
            Box::pin(self.give_back(run)).await;
        }
        unconfirmed
    }

    /// The facts [`decide`] needs.
    pub(super) fn facts(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        step_failures: Option<u32>,
    ) -> Facts {
        Facts {
            jitter_unit: crate::backoff::random_unit(),
            now_ms: crate::steps::now_ms(),
            ..self.facts_without_clock(delivery, run, step_failures)
        }
    }

    /// The facts but the clock and the jitter (both 0), which only a retry or a
    /// continuation reads.
    fn facts_without_clock(
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
            jitter_unit: 0.0,
            schedules: self.shared.schedules,
            record: match run {
                Some(_) if settings.idempotent && delivery.plain => Record::IfAckUnconfirmed,
                Some(_) if settings.idempotent => Record::Always,
                _ => Record::Never,
            },
            position,
            step,
            step_failures,
            now_ms: 0,
        }
    }

    /// The run's state in the runs bucket (no I/O yet): its key, and what the headers say
    /// about replays, wake-ups and redrives.
    pub(super) fn run_state(&self, delivery: &Delivery) -> Option<Arc<RunState>> {
        let store = self.shared.runs.as_ref()?;
        // A replay (`herald replay`) is a fresh run of the same event.
        let run_key = match delivery.header(header::REPLAY) {
            Some(replay) => runs::run_key_of_event(
                &self.function.id,
                &runs::replay_run_id(delivery.event_id(), replay),
            ),
            None => runs::run_key_of_event(&self.function.id, delivery.event_id()),
        };
        Some(Arc::new(RunState {
            store: store.clone(),
            run_key,
            max_step_output: self.function.settings.max_step_output,
            patience: self.patience(),
            counters: parking_lot::Mutex::default(),
            position: parking_lot::Mutex::new((0, None)),
            suspend_until: parking_lot::Mutex::new(None),
            woken_for: delivery.header(header::WAKE).map(str::to_owned),
            failures_before: parking_lot::Mutex::new(None),
            records: parking_lot::Mutex::default(),
            cancelled: Some(std::sync::Arc::clone(&self.cancelled)),
            schedules_ttl: self.shared.schedules_ttl,
            trigger_sequence: delivery
                .header(crate::wait::TRIGGER_SEQ)
                .and_then(|seq| seq.parse().ok())
                .unwrap_or(delivery.stream_sequence),
            parked: parking_lot::Mutex::new(None),
            output: parking_lot::Mutex::new(None),
            finish_by: std::sync::atomic::AtomicU64::new(0),
            turn: self
                .turnstile
                .as_ref()
                .filter(|_| delivery.header(header::CONTINUATION).is_none())
                .map(|turnstile| {
                    turnstile.ticket(delivery.stream_sequence, self.pace_lanes(delivery))
                }),
            slots: parking_lot::Mutex::default(),
        }))
    }

    /// Everything decided before the handler: the budget, a finished run, the payload.
    async fn prepare(
        &self,
        delivery: &Delivery,
        run: Option<&Arc<RunState>>,
        known: Known,
        trace: &opentelemetry::Context,
    ) -> Prepared {
        let settings = &self.function.settings;
        if delivery.delivered > settings.attempts {
            return Prepared::Settled(Outcome::BeyondAttempts);
        }
        // A batch's members, for a batched function's run.
        let mut batch = None;
        if let Some(run) = run {
            if settings.idempotent {
                let stored = match known {
                    Known::Absent => Ok(None),
                    Known::Stored(bytes) => Ok(serde_json::from_slice::<RunRecord>(&bytes).ok()),
                    Known::Unknown => {
                        let read = run
                            .store
                            .get_until::<RunRecord>(&run.run_key, run.deadline());
                        Box::pin(self.keep_alive(delivery, read)).await
                    }
                };
                match stored {
                    Ok(Some(record)) if record.status.is_final() => {
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
            let cancelled = delivery
                .header(crate::cancel::HEADER_CANCELLED)
                .map(str::to_owned)
                .or_else(|| run.cancelled());
            if let Some(reason) = cancelled {
                return Prepared::Settled(Outcome::Cancelled(reason));
            }
            // Features a function may not use: boxed, so that a plain delivery's future stays
            // small, and only built when configured.
            let settings = &self.function.settings;
            if settings.batch.is_some() {
                match Box::pin(self.batched(delivery, run)).await {
                    super::batch::Batched::Settled(outcome) => return Prepared::Settled(outcome),
                    super::batch::Batched::Run(members) => batch = Some(members),
                }
            }
            if (settings.start_timeout.is_some() || settings.finish_timeout.is_some())
                && let Some(timed_out) = Box::pin(self.timed_out(delivery, run)).await
            {
                return Prepared::Settled(timed_out);
            }
            if !settings.cancel_on.is_empty()
                && let Some(cancelled) = Box::pin(self.register_cancels(delivery, run)).await
            {
                return Prepared::Settled(cancelled);
            }
            if !self.function.crons.is_empty()
                && let Some(reason) = Box::pin(self.overlapping_tick(delivery, run)).await
            {
                return Prepared::Settled(reason);
            }
            if settings.debounce.is_some()
                && let Some(folded) = Box::pin(self.debounced(delivery)).await
            {
                return Prepared::Settled(folded);
            }
            if settings.singleton.is_some()
                && let Some(outcome) = Box::pin(self.single(delivery, run)).await
            {
                return Prepared::Settled(outcome);
            }
            if (settings.rate_limit.is_some() || settings.throttle.is_some())
                && let Some(paced) = Box::pin(self.paced(delivery, run)).await
            {
                return Prepared::Settled(paced);
            }
            if !settings.concurrency_limits.is_empty()
                && let Some(parked) = Box::pin(self.take_slots(delivery, run)).await
            {
                return Prepared::Settled(parked);
            }
            // A retry or a continuation may have a failure count to continue from.
            if delivery.delivered > 1 || delivery.header(header::CONTINUATION).is_some() {
                let epoch = delivery.header(header::REDRIVE_OF).unwrap_or_default();
                let key = run.failure_key();
                let read = run.store.get_until::<FailureRecord>(&key, run.deadline());
                if let Ok(Some(record)) = Box::pin(self.keep_alive(delivery, read)).await
                    && record.epoch == epoch
                {
                    *run.failures_before.lock() = Some((record.position, record.failures));
                }
            }
        }
        // Everything above is I/O; the function's concurrency bounds what follows: decoding
        // and the handler.
        let permit = match self.try_handler_permit() {
            Some(permit) => permit,
            // Waiting (with progress acks) is boxed: most deliveries find a permit at once.
            None => match Box::pin(self.handler_permit(delivery)).await {
                Some(permit) => permit,
                None => return Prepared::Settled(Outcome::NotStarted),
            },
        };
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
        let schemas = &self.shared.writer_schemas;
        let (data_schema, event_type) = (meta.data_schema.as_deref(), &meta.event_type);
        let writer_schema = match schemas.known(data_schema, event_type) {
            Some(known) => known,
            None => Box::pin(schemas.resolve(data_schema, event_type)).await,
        };
        let decoded = match batch {
            Some(members) => self.function.handler.prepare_batch(members, ctx),
            None => self.function.handler.prepare(
                delivery.data.clone(),
                delivery.headers(),
                ctx,
                writer_schema,
            ),
        };
        match decoded {
            Decoded::Ready(future) => Prepared::Ready(future, Some(permit)),
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

    /// One of the function's handler permits if one is free and no finished run is waiting
    /// to be recorded.
    fn try_handler_permit(&self) -> Option<OwnedSemaphorePermit> {
        if self.stall.active() {
            return None;
        }
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// One of the function's handler permits, once no finished run is waiting to be
    /// recorded ([`super::stall`]); waits with progress acks, and gives up (`None`) when the
    /// worker stops first.
    async fn handler_permit(&self, delivery: &Delivery) -> Option<OwnedSemaphorePermit> {
        if self.stall.active() {
            let stop = self.shared.stop.cancelled();
            let cleared = async {
                tokio::select! {
                    () = self.stall.cleared() => true,
                    () = stop => false,
                }
            };
            if !self.keep_alive(delivery, cleared).await {
                return None;
            }
        }
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        let wait = Arc::clone(&self.permits).acquire_owned();
        let stop = self.shared.stop.cancelled();
        let waited = async {
            tokio::select! {
                permit = wait => permit.ok(),
                () = stop => None,
            }
        };
        self.keep_alive(delivery, waited).await
    }

    /// Runs the handler under its timeout, sending progress acks every `ack_wait / 3`;
    /// says how it ended and how long it took.
    async fn run(
        &self,
        delivery: &Delivery,
        future: BoxFuture<Result<(), HandlerError>>,
        run: Option<&RunState>,
    ) -> (Outcome, std::time::Duration) {
        let settings = &self.function.settings;
        if let Some(seconds) = delivery.meta.seconds_since() {
            self.shared
                .metrics
                .latency
                .record(seconds, &self.function_attribute);
        }
        self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let handler = AssertUnwindSafe(future).catch_unwind();
        tokio::pin!(handler);
        // One timer per attempt: it fires for the next progress ack or the deadline,
        // whichever comes first.
        let begun = tokio::time::Instant::now();
        let started = begun.into_std();
        let deadline = begun + settings.timeout;
        let every = settings.ack_wait / 3;
        let mut next_progress = begun + every;
        // The handler's first poll outside `select!`, which returns at once when the task
        // has spent its cooperative budget (reading a large pull request spends it): a
        // handler that finishes at once then never waits for the task's next turn, and
        // never makes the timer or the cancellation waiter. The handler's own operations
        // still count against the budget.
        let first = std::future::poll_fn(|cx| Poll::Ready(handler.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(result) => handled(result),
            Poll::Pending => {
                let timer = tokio::time::sleep_until(next_progress.min(deadline));
                tokio::pin!(timer);
                loop {
                    tokio::select! {
                        // The handler first.
                        biased;
                        result = &mut handler => break handled(result),
                        () = &mut timer => {
                            if tokio::time::Instant::now() >= deadline {
                                break Outcome::TimedOut;
                            }
                            // Boxed: only a handler running past `ack_wait / 3` gets here.
                            let first = next_progress == begun + every;
                            Box::pin(async {
                                delivery.progress().await;
                                if first {
                                    self.activity_running(delivery, run).await;
                                }
                            })
                            .await;
                            next_progress += every;
                            timer.as_mut().reset(next_progress.min(deadline));
                        }
                        () = self.shared.abandon.cancelled() => break Outcome::Abandoned,
                    }
                }
            }
        };
        self.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        let took = started.elapsed();
        self.pace.record(took);
        self.shared
            .metrics
            .duration
            .record(took.as_secs_f64(), &self.function_attribute);
        (with_suspension(outcome, run), took)
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
                // The work first: work done at once never registers the timer.
                biased;
                value = &mut work => return value,
                () = tokio::time::sleep(every) => delivery.progress().await,
            }
        }
    }
}

/// The outcome of a handler that returned (or panicked).
fn handled(result: std::thread::Result<Result<(), HandlerError>>) -> Outcome {
    match result {
        Err(panic) => Outcome::Panicked(panic_message(&panic)),
        Ok(Err(error)) => Outcome::Failed(error),
        Ok(Ok(())) => Outcome::Done,
    }
}
