//! [`TestWorker`]: a function's handler run in process, without a server, the way a worker
//! would run it: validation, decoding, attempts with their retry decisions, memoized steps,
//! durable sleeps and `send_event`, with the run's records kept in memory.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use herald::Event;
use herald::protocol::runs;

use crate::dead_letter::DeadLetterReason;
use crate::function::{Ctx, Decoded, EnvelopeMeta, Function, FunctionError, Publisher};
use crate::run_store::{Lifetime, RunStore};
use crate::runtime::decide::{Facts, Outcome, Record, Settlement, decide};
use crate::runtime::failures::{count_step_failure, with_suspension};
use crate::steps::{RunRecord, RunState, RunStatus};
use crate::telemetry::{Spans, TraceMode};

/// The most attempts a [`TestWorker`] runs for one event before it gives up (a run that
/// keeps sleeping or continuing).
const MAX_ROUNDS: usize = 1000;

/// Runs a [`Function`]'s handler in process, with no server: for testing handler logic.
///
/// Each [`run`](TestWorker::run) delivers one event and runs attempts until the worker
/// would settle it for good (success or dead letter): a retry runs the next attempt at
/// once (its delay is reported, not waited), a durable sleep wakes at once, and memoized
/// steps are kept between attempts, so a step that succeeded is not run again. Events the
/// handler sends with `ctx.send_event` are collected instead of published.
///
/// ```
/// use herald_worker::{Ctx, Function, HandlerError, TestOutcome, TestWorker};
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
/// # #[event(type = "user.signup")]
/// # struct UserSignup { email: String }
///
/// async fn welcome(event: UserSignup, ctx: Ctx) -> Result<(), HandlerError> {
///     if event.email.is_empty() {
///         return Err(HandlerError::terminal("no email"));
///     }
///     ctx.step("send mail", || async { Ok::<_, HandlerError>(()) }).await?;
///     Ok(())
/// }
///
/// # tokio_test_block(async {
/// let worker = TestWorker::new(Function::new("welcome").on::<UserSignup>().handler(welcome))?;
/// let run = worker.run(&UserSignup { email: "ada@example.com".into() }).await;
/// assert_eq!(run.outcome, TestOutcome::Succeeded);
/// let run = worker.run(&UserSignup { email: String::new() }).await;
/// assert!(matches!(run.outcome, TestOutcome::DeadLettered { .. }));
/// # Ok::<(), herald_worker::FunctionError>(())
/// # });
/// # fn tokio_test_block<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct TestWorker {
    function: Function,
    store: RunStore,
    spans: Spans,
}

/// How an attempt, or a whole run, ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TestOutcome {
    /// The handler succeeded: the event is acked.
    Succeeded,
    /// The run had already finished (idempotent runs): acked without running the handler.
    AlreadyFinished,
    /// The run was skipped without running the handler, and recorded `skipped`.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The run waits for an event (`ctx.wait_for_event`) in this step.
    Waiting {
        /// The step key.
        step: String,
    },
    /// The run was cancelled, and recorded `cancelled`.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// The attempt failed and another follows after `delay`.
    Retried {
        /// The backoff (or `retry_after`) delay before the next attempt.
        delay: Duration,
        /// What failed.
        error: String,
    },
    /// The run sleeps (`ctx.sleep`) until `until`, then continues.
    Slept {
        /// The wake time.
        until: SystemTime,
    },
    /// A step failed after earlier steps spent the delivery's attempts: the run continues
    /// in a scheduled message after the backoff.
    Continued {
        /// When the run continues.
        at: SystemTime,
        /// What failed.
        error: String,
    },
    /// The event is dead-lettered.
    DeadLettered {
        /// `herald-dlq-reason`.
        reason: DeadLetterReason,
        /// `herald-dlq-error`.
        error: String,
        /// `herald-dlq-attempts`.
        attempts: u32,
        /// `herald-dlq-step`, for runs with steps.
        step: Option<String>,
    },
}

/// An event sent with `ctx.send_event` during a [`TestWorker`] run.
#[derive(Debug, Clone, PartialEq)]
pub struct SentEvent {
    /// Its type.
    pub event_type: String,
    /// Its id (`ce-id`): derived from the run and the step, as on the bus.
    pub id: String,
    /// Its payload.
    pub data: serde_json::Value,
}

/// What one [`TestWorker::run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRun {
    /// The event id it ran with.
    pub event_id: String,
    /// Each attempt's outcome, in order (the last one is [`outcome`](Self::outcome)).
    pub attempts: Vec<TestOutcome>,
    /// How the run ended: [`TestOutcome::Succeeded`] or [`TestOutcome::DeadLettered`].
    pub outcome: TestOutcome,
    /// The events the handler sent.
    pub sent: Vec<SentEvent>,
}

/// Where the next attempt of a run starts.
#[derive(Debug, Default)]
struct Delivery {
    delivered: u32,
    continuation: bool,
    woken_for: Option<String>,
}

impl TestWorker {
    /// A test worker for `function`; refuses a function that [`Function::check`] refuses.
    pub fn new(function: Function) -> Result<TestWorker, FunctionError> {
        function.check()?;
        Ok(TestWorker {
            function,
            store: RunStore::in_memory(),
            spans: Spans::new(opentelemetry::global::tracer("herald"), TraceMode::Child),
        })
    }

    /// Delivers `event` (validated against its schema, as a worker does) with a fresh id.
    pub async fn run<E: Event>(&self, event: &E) -> TestRun {
        let id = uuid::Uuid::now_v7().to_string();
        match serde_json::to_value(event) {
            Ok(data) => self.run_json(E::TYPE, &id, data).await,
            Err(error) => TestRun {
                event_id: id,
                attempts: Vec::new(),
                outcome: TestOutcome::DeadLettered {
                    reason: DeadLetterReason::DecodeError,
                    error: format!("the event does not serialise: {error}"),
                    attempts: 0,
                    step: None,
                },
                sent: Vec::new(),
            },
        }
    }

    /// Delivers a raw JSON payload of `event_type` with the id `event_id`: for payloads a
    /// typed producer cannot make (a schema violation), untyped functions, or running the
    /// same event twice (its finished run is remembered, as idempotent runs are).
    pub async fn run_json(
        &self,
        event_type: &str,
        event_id: &str,
        data: serde_json::Value,
    ) -> TestRun {
        let meta = Arc::new(EnvelopeMeta::new(
            event_id.to_owned(),
            event_type.into(),
            "urn:herald:test".into(),
            Some(herald::headers::format_time(SystemTime::now())),
            None,
            None,
        ));
        let payload = Bytes::from(data.to_string());
        let sent = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut attempts = Vec::new();
        let mut next = Delivery {
            delivered: 1,
            ..Delivery::default()
        };
        for _ in 0..MAX_ROUNDS {
            let (settlement, outcome) = self.attempt(&meta, &payload, &next, &sent).await;
            attempts.push(outcome.clone());
            next = match settlement {
                Settlement::Retry { .. } => Delivery {
                    delivered: next.delivered + 1,
                    ..next
                },
                Settlement::Continue { wake, .. } => Delivery {
                    delivered: 1,
                    continuation: true,
                    woken_for: wake,
                },
                Settlement::Ack { .. }
                | Settlement::Park(_)
                | Settlement::Skip(_)
                | Settlement::Cancel(_)
                | Settlement::DeadLetter { .. }
                | Settlement::HandBack => {
                    return TestRun {
                        event_id: event_id.to_owned(),
                        attempts,
                        outcome,
                        sent: sent.lock().clone(),
                    };
                }
            };
        }
        let outcome = TestOutcome::DeadLettered {
            reason: DeadLetterReason::HandlerError,
            error: format!("the run did not end within {MAX_ROUNDS} attempts and wake-ups"),
            attempts: u32::try_from(MAX_ROUNDS).unwrap_or(u32::MAX),
            step: None,
        };
        TestRun {
            event_id: event_id.to_owned(),
            attempts,
            outcome,
            sent: sent.lock().clone(),
        }
    }

    /// One attempt, decided as the worker decides it.
    async fn attempt(
        &self,
        meta: &Arc<EnvelopeMeta>,
        payload: &Bytes,
        delivery: &Delivery,
        sent: &Arc<parking_lot::Mutex<Vec<SentEvent>>>,
    ) -> (Settlement, TestOutcome) {
        let settings = &self.function.settings;
        let run = Arc::new(RunState {
            store: self.store.clone(),
            run_key: runs::run_key(&self.function.id, &runs::event_key(&meta.id)),
            max_step_output: settings.max_step_output,
            patience: Duration::from_secs(1),
            counters: parking_lot::Mutex::default(),
            position: parking_lot::Mutex::new((0, None)),
            suspend_until: parking_lot::Mutex::new(None),
            woken_for: delivery.woken_for.clone(),
            failures_before: parking_lot::Mutex::new(None),
            records: parking_lot::Mutex::default(),
            cancelled: None,
            schedules_ttl: false,
            trigger_sequence: 0,
            parked: parking_lot::Mutex::new(None),
            output: parking_lot::Mutex::new(None),
            finish_by: std::sync::atomic::AtomicU64::new(0),
            turn: None,
            slots: parking_lot::Mutex::default(),
        });
        if settings.idempotent
            && let Ok(Some(record)) = run.store.get::<RunRecord>(&run.run_key).await
            && record.status == RunStatus::Ok
        {
            let settlement = Settlement::Ack {
                record: Record::Never,
            };
            return (settlement, TestOutcome::AlreadyFinished);
        }
        if delivery.delivered > 1 || delivery.continuation {
            let key = run.failure_key();
            if let Ok(Some(record)) = run.store.get::<crate::FailureRecord>(&key).await {
                *run.failures_before.lock() = Some((record.position, record.failures));
            }
        }
        let outcome = self.outcome(meta, payload, delivery, &run, sent).await;
        let step_failures = match count_step_failure(&run, "", &outcome).await {
            Some(Ok(failures)) => Some(failures),
            _ => None,
        };
        let (position, step) = run.position.lock().clone();
        let facts = Facts {
            delivered: delivery.delivered,
            attempts: settings.attempts,
            timeout: settings.timeout,
            backoff: settings.backoff,
            jitter_unit: 0.5,
            schedules: true,
            record: if settings.idempotent {
                Record::Always
            } else {
                Record::Never
            },
            position,
            step,
            step_failures,
            now_ms: crate::steps::now_ms(),
        };
        let settlement = decide(outcome, &facts);
        if let Settlement::Ack {
            record: Record::Always,
        } = settlement
        {
            let record = RunRecord::now(RunStatus::Ok, None);
            let _ = run
                .store
                .put(&run.run_key, &record, Lifetime::Retention)
                .await;
        }
        let outcome = outcome_of(&settlement);
        (settlement, outcome)
    }

    async fn outcome(
        &self,
        meta: &Arc<EnvelopeMeta>,
        payload: &Bytes,
        delivery: &Delivery,
        run: &Arc<RunState>,
        sent: &Arc<parking_lot::Mutex<Vec<SentEvent>>>,
    ) -> Outcome {
        let settings = &self.function.settings;
        if delivery.delivered > settings.attempts {
            return Outcome::BeyondAttempts;
        }
        let ctx = Ctx {
            function: Arc::clone(&self.function.id),
            envelope: Arc::clone(meta),
            attempt: delivery.delivered,
            max_attempts: settings.attempts,
            stream_sequence: 0,
            trace: opentelemetry::Context::new(),
            spans: self.spans.clone(),
            run: Some(Arc::clone(run)),
            publisher: Publisher::Test(Arc::clone(sent)),
        };
        let future = match self
            .function
            .handler
            .prepare(payload.clone(), None, ctx, None)
        {
            Decoded::Ready(future) => future,
            Decoded::SchemaViolation(violations) => {
                return Outcome::Invalid {
                    reason: DeadLetterReason::SchemaViolation,
                    error: format!(
                        "the payload breaks the schema of {}: {violations}",
                        meta.event_type
                    ),
                };
            }
            Decoded::DecodeError(error) => {
                return Outcome::Invalid {
                    reason: DeadLetterReason::DecodeError,
                    error,
                };
            }
        };
        let call = AssertUnwindSafe(future).catch_unwind();
        let outcome = match tokio::time::timeout(settings.timeout, call).await {
            Err(_) => Outcome::TimedOut,
            Ok(Err(panic)) => Outcome::Panicked(crate::runtime::panic_message(&panic)),
            Ok(Ok(Err(error))) => Outcome::Failed(error),
            Ok(Ok(Ok(()))) => Outcome::Done,
        };
        with_suspension(outcome, Some(run))
    }
}

/// The public face of a settlement.
fn outcome_of(settlement: &Settlement) -> TestOutcome {
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    match settlement {
        Settlement::Ack { .. } | Settlement::HandBack => TestOutcome::Succeeded,
        Settlement::Park(step) => TestOutcome::Waiting { step: step.clone() },
        Settlement::Skip(reason) => TestOutcome::Skipped {
            reason: reason.clone(),
        },
        Settlement::Cancel(reason) => TestOutcome::Cancelled {
            reason: reason.clone(),
        },
        Settlement::Retry { delay, error } => TestOutcome::Retried {
            delay: *delay,
            error: error.clone(),
        },
        Settlement::Continue {
            at_ms,
            wake: Some(_),
            ..
        } => TestOutcome::Slept { until: at(*at_ms) },
        Settlement::Continue {
            at_ms,
            wake: None,
            error,
        } => TestOutcome::Continued {
            at: at(*at_ms),
            error: error.clone().unwrap_or_default(),
        },
        Settlement::DeadLetter {
            reason,
            error,
            attempts,
            step,
        } => TestOutcome::DeadLettered {
            reason: *reason,
            error: error.clone(),
            attempts: *attempts,
            step: step.clone(),
        },
    }
}
