//! [`Function`]: a named handler, its triggers and its settings.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herald::schema::CompiledSchema;
use herald::{Event, EventType};

use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::run_store::Lifetime;
use crate::steps::{RunState, StepRecord};
use herald::protocol::runs;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a handler returns when it fails.
///
/// Any error converts into a retryable `HandlerError` with `?`; [`HandlerError::terminal`]
/// is not retried (the event goes to the dead-letter stream at once), and
/// [`HandlerError::retry_after`] chooses the delay before the next attempt.
pub struct HandlerError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ErrorKind {
    Retry(Option<Duration>),
    Terminal,
    /// A durable sleep: the run continues later; not a failure.
    Suspend,
}

impl HandlerError {
    /// A failure worth retrying (what `?` produces).
    pub fn retry(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            kind: ErrorKind::Retry(None),
            message: message.to_string(),
        }
    }

    /// A failure that no retry can fix: dead-lettered at once with reason `terminal_error`.
    pub fn terminal(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            kind: ErrorKind::Terminal,
            message: message.to_string(),
        }
    }

    /// A retryable failure whose next attempt should wait `delay` instead of the backoff.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> HandlerError {
        HandlerError {
            kind: ErrorKind::Retry(Some(delay)),
            message: message.to_string(),
        }
    }

    /// True for [`HandlerError::terminal`].
    pub fn is_terminal(&self) -> bool {
        self.kind == ErrorKind::Terminal
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Any error (`std::error::Error`, `anyhow::Error`, a `String`) is retryable; its whole
    /// chain of causes goes into the message, so the dead letter says what went wrong
    /// underneath.
    fn from(error: E) -> Self {
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError::retry(message)
    }
}

/// What a handler knows about the event and the attempt.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub(crate) function: Arc<str>,
    pub(crate) envelope: Arc<EnvelopeMeta>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) stream_sequence: u64,
    pub(crate) trace: opentelemetry::Context,
    pub(crate) spans: crate::telemetry::Spans,
    pub(crate) run: Option<Arc<RunState>>,
    pub(crate) publisher: Publisher,
}

/// Where `ctx.send_event` sends: the bus, or a [`crate::TestWorker`]'s list.
#[derive(Debug, Clone)]
pub(crate) enum Publisher {
    Client(herald::Client),
    Test(Arc<parking_lot::Mutex<Vec<crate::SentEvent>>>),
}

/// The envelope attributes shared by [`Ctx`] and [`Envelope`].
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvelopeMeta {
    pub(crate) id: String,
    pub(crate) event_type: String,
    pub(crate) source: String,
    pub(crate) time: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) data_schema: Option<String>,
}

impl Ctx {
    /// The function running.
    pub fn function(&self) -> &str {
        &self.function
    }
    /// The event id (`ce-id`).
    pub fn event_id(&self) -> &str {
        &self.envelope.id
    }
    /// The event type (`ce-type`).
    pub fn event_type(&self) -> &str {
        &self.envelope.event_type
    }
    /// The producer (`ce-source`).
    pub fn source(&self) -> &str {
        &self.envelope.source
    }
    /// When the event happened, RFC 3339: its `ce-time`, else the time its UUIDv7 id was made
    /// (to the millisecond); `None` for an event with neither.
    pub fn time(&self) -> Option<&str> {
        self.envelope.time.as_deref()
    }
    /// The entity the event is about (`ce-subject`), if any.
    pub fn subject(&self) -> Option<&str> {
        self.envelope.subject.as_deref()
    }
    /// This attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The function's attempts budget.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// True on the last attempt.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
    /// The event's sequence in the events stream.
    pub fn stream_sequence(&self) -> u64 {
        self.stream_sequence
    }
    /// The OpenTelemetry context of this attempt (its `process <type>` span). It is the
    /// current context while the handler runs, so `tracing` spans the handler opens nest
    /// under it (through `tracing-opentelemetry`) and events it publishes carry it; attach it
    /// to work the handler spawns onto other tasks:
    ///
    /// ```
    /// # async fn handler(ctx: herald_worker::Ctx) {
    /// use opentelemetry::trace::FutureExt;
    /// tokio::spawn(async { /* … */ }.with_context(ctx.trace_context().clone()));
    /// # }
    /// ```
    pub fn trace_context(&self) -> &opentelemetry::Context {
        &self.trace
    }

    fn run(&self) -> Result<&Arc<RunState>, HandlerError> {
        let run = self.run.as_ref().ok_or_else(|| {
            HandlerError::retry(
                "durable steps need the runs bucket; provision the namespace (Client::provision)",
            )
        })?;
        // A durable sleep whose error was swallowed: no step runs before the run wakes.
        if run.is_suspending() {
            return Err(suspended("a durable sleep is pending"));
        }
        Ok(run)
    }

    /// A memoized step: runs `work` once per run and stores its output before returning it;
    /// on a later attempt or a redrive of the same run, returns the stored output without
    /// running `work`. Repeated names in one run (a loop) get distinct keys, in order.
    /// An error fails the attempt; the step is retried with its own attempts budget.
    pub async fn step<T, F, Fut, E>(&self, name: &str, work: F) -> Result<T, HandlerError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<HandlerError>,
    {
        let run = self.run()?;
        let (key, _) = run.next_step_key(name);
        let stored = run
            .store
            .get_until::<StepRecord>(&key, run.deadline())
            .await
            .map_err(HandlerError::from)?;
        if let Some(record) = stored
            && let StepRecord::Ok { output, .. } = &record
        {
            let value = serde_json::from_value(output.clone()).map_err(|error| {
                HandlerError::terminal(format!(
                    "step `{name}`: the stored output does not decode into the step's type: {error}"
                ))
            });
            run.records.lock().push((key, record));
            run.step_done();
            return value;
        }
        let started = std::time::Instant::now();
        let value = {
            use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};
            let trace = self.spans.step(&self.trace, name);
            let result = work().with_context(trace.clone()).await.map_err(Into::into);
            if let Err(error) = &result {
                crate::telemetry::set_error(&trace, &error.message);
            }
            trace.span().end();
            result?
        };
        let output = serde_json::to_value(&value).map_err(|error| {
            HandlerError::terminal(format!(
                "step `{name}`: its output cannot be stored as JSON: {error}"
            ))
        })?;
        let size = output.to_string().len();
        if size > run.max_step_output {
            return Err(HandlerError::terminal(format!(
                "step `{name}`: its output is {size} bytes, over the limit of {} bytes; store large data \
                 elsewhere and return a reference to it (or raise Function::max_step_output)",
                run.max_step_output
            )));
        }
        let record = StepRecord::Ok {
            output,
            attempts: run.failures_here(),
            duration_ms: started.elapsed().as_millis() as u64,
            finished_at: herald::headers::format_time(SystemTime::now()),
        };
        run.store
            .put_until(&key, &record, Lifetime::Retention, run.deadline())
            .await
            .map_err(HandlerError::from)?;
        run.records.lock().push((key, record));
        run.step_done();
        Ok(value)
    }

    /// A step that publishes `event` with an id derived from the run and the step, so a
    /// retried run never publishes it twice. Returns the event's stream sequence.
    pub async fn send_event<E: Event>(&self, name: &str, event: &E) -> Result<u64, HandlerError> {
        let publisher = self.publisher.clone();
        let run = Arc::clone(self.run()?);
        let step_key = {
            let counters = run.counters.lock();
            let base = runs::step_key_base(name);
            let next = counters.get(&base).copied().unwrap_or(0) + 1;
            runs::numbered_step_key(&base, next)
        };
        let id = runs::send_event_id(&run.run_key, &step_key);
        self.step(name, || async move {
            match publisher {
                Publisher::Client(client) => {
                    let options = herald::PublishOptions {
                        id: Some(id),
                        ..Default::default()
                    };
                    let ack = client.publish_with(event, options).await?.await?;
                    Ok::<u64, HandlerError>(ack.sequence)
                }
                Publisher::Test(sent) => {
                    let data = serde_json::to_value(event)?;
                    let mut sent = sent.lock();
                    sent.push(crate::SentEvent {
                        event_type: E::TYPE.to_owned(),
                        id,
                        data,
                    });
                    Ok(sent.len() as u64)
                }
            }
        })
        .await
    }

    /// A durable sleep: the run stops here, holding no handler, permit or message, and
    /// continues after `duration` (minutes or days; it survives worker restarts). Use it
    /// with `?`: `ctx.sleep("wait for trial end", Duration::from_secs(3600)).await?`.
    /// Needs nats-server 2.12 or newer (scheduled messages).
    pub async fn sleep(&self, name: &str, duration: Duration) -> Result<(), HandlerError> {
        self.sleep_until(name, SystemTime::now() + duration).await
    }

    /// A durable sleep until `time`; see [`sleep`](Self::sleep).
    pub async fn sleep_until(&self, name: &str, time: SystemTime) -> Result<(), HandlerError> {
        let run = self.run()?;
        let (key, step_key) = run.next_step_key(name);
        let now = crate::steps::now_ms();
        let wake_at_ms = match run
            .store
            .get_until::<StepRecord>(&key, run.deadline())
            .await
            .map_err(HandlerError::from)?
        {
            Some(StepRecord::Ok { .. }) => {
                run.step_done();
                return Ok(());
            }
            Some(StepRecord::Sleeping { wake_at_ms }) => wake_at_ms,
            None => {
                let wake_at_ms = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                run.store
                    .put_until(
                        &key,
                        &StepRecord::Sleeping { wake_at_ms },
                        Lifetime::Beyond(wake_at_ms),
                        run.deadline(),
                    )
                    .await
                    .map_err(HandlerError::from)?;
                wake_at_ms
            }
        };
        // Woken by the schedule for this step, or already past the time (small clock skew).
        if run.woken_for.as_deref() == Some(step_key.as_str()) || wake_at_ms <= now + 500 {
            let done = StepRecord::Ok {
                output: serde_json::Value::Null,
                attempts: 1,
                duration_ms: 0,
                finished_at: herald::headers::format_time(SystemTime::now()),
            };
            run.store
                .put_until(&key, &done, Lifetime::Retention, run.deadline())
                .await
                .map_err(HandlerError::from)?;
            run.records.lock().push((key, done));
            run.step_done();
            return Ok(());
        }
        *run.suspend_until.lock() = Some((wake_at_ms, step_key));
        Err(suspended(&format!("sleeping in step `{name}`")))
    }
}

/// The error a durable sleep returns: the run stops here and continues when it wakes. The
/// worker suspends the run whatever the handler returns after it (it cannot be swallowed).
fn suspended(message: &str) -> HandlerError {
    HandlerError {
        kind: ErrorKind::Suspend,
        message: message.to_owned(),
    }
}

/// Where a new function's consumer starts reading the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Only events published after the consumer is created (default).
    #[default]
    New,
    /// Every event still retained in the log (backfill).
    All,
    /// Events published at or after this time.
    Time(SystemTime),
}

/// A function's settings; defaults as in the architecture's defaults table.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) concurrency: usize,
    pub(crate) max_ack_pending: Option<i64>,
    pub(crate) start: StartFrom,
    pub(crate) idempotent: bool,
    pub(crate) max_step_output: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            attempts: 5,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(300),
            ack_wait: Duration::from_secs(30),
            concurrency: 16,
            max_ack_pending: None,
            start: StartFrom::New,
            idempotent: true,
            max_step_output: 256 * 1024,
        }
    }
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a decoded event becomes before the handler runs.
pub(crate) enum Decoded {
    Ready(BoxFuture<Result<(), HandlerError>>),
    /// The payload broke the schema: (JSON path: message) list.
    SchemaViolation(String),
    /// The payload is not JSON, or not the handler's type.
    DecodeError(String),
}

/// A type-erased handler: validates, decodes and calls.
pub(crate) trait ErasedHandler: Send + Sync {
    /// `headers` are only cloned by handlers that hand out the whole [`Envelope`].
    /// `headers` are only cloned by handlers that hand out the whole [`Envelope`];
    /// `writer_schema` is the registered version named by `ce-dataschema`, when known.
    fn prepare(
        &self,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded;
}

struct TypedHandler<E, F> {
    schema: Option<Arc<CompiledSchema>>,
    handler: F,
    _event: PhantomData<fn(E)>,
}

impl<E, F, Fut, T> ErasedHandler for TypedHandler<E, F>
where
    E: Event,
    F: Fn(E, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    fn prepare(
        &self,
        payload: Bytes,
        _headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        let value: serde_json::Value = match serde_json::from_slice(&payload) {
            Ok(value) => value,
            Err(error) => return Decoded::DecodeError(format!("the payload is not JSON: {error}")),
        };
        // The writer's registered version when it names one, else the local schema.
        if let Some(schema) = writer_schema.as_ref().or(self.schema.as_ref())
            && let Err(violation) = violations(schema, &value)
        {
            return violation;
        }
        let event: E = match serde_json::from_value(value) {
            Ok(event) => event,
            Err(error) => {
                return Decoded::DecodeError(format!(
                    "the payload does not decode as {}: {error}",
                    std::any::type_name::<E>()
                ));
            }
        };
        let future = (self.handler)(event, ctx);
        Decoded::Ready(Box::pin(async move { future.await.map(drop) }))
    }
}

fn violations(schema: &CompiledSchema, value: &serde_json::Value) -> Result<(), Decoded> {
    schema.validate(value).map_err(|violations| {
        Decoded::SchemaViolation(
            violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

struct RawHandler<F> {
    handler: F,
}

impl<F, Fut, T> ErasedHandler for RawHandler<F>
where
    F: Fn(Envelope, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    fn prepare(
        &self,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        if let Some(schema) = &writer_schema {
            let value: serde_json::Value = match serde_json::from_slice(&payload) {
                Ok(value) => value,
                Err(error) => {
                    return Decoded::DecodeError(format!("the payload is not JSON: {error}"));
                }
            };
            if let Err(violation) = violations(schema, &value) {
                return violation;
            }
        }
        let envelope = Envelope {
            meta: Arc::clone(&ctx.envelope),
            data: payload,
            headers: headers.cloned().unwrap_or_default(),
        };
        let future = (self.handler)(envelope, ctx);
        Decoded::Ready(Box::pin(async move { future.await.map(drop) }))
    }
}

/// A function: an id, the event types that trigger it, its settings and its handler.
///
/// ```
/// use herald_worker::{Ctx, Function, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
/// # #[event(type = "source.connected")]
/// # struct SourceConnected { source_id: String }
///
/// async fn backfill(event: SourceConnected, ctx: Ctx) -> Result<(), HandlerError> {
///     tracing::info!(source = %event.source_id, attempt = ctx.attempt(), "backfilling");
///     Ok(())
/// }
///
/// let function = Function::new("backfill-user-data")
///     .on::<SourceConnected>()
///     .attempts(5)
///     .concurrency(32)
///     .handler(backfill);
/// assert!(function.check().is_ok()); // start() checks it too
/// assert_eq!(function.id(), "backfill-user-data");
/// ```
#[derive(Clone)]
pub struct Function {
    /// Why the description cannot work, reported by `WorkerBuilder::start`.
    pub(crate) error: Option<FunctionError>,
    pub(crate) id: Arc<str>,
    pub(crate) triggers: Vec<String>,
    pub(crate) settings: Settings,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) on_failure: Option<FailureHandler>,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("id", &self.id)
            .field("triggers", &self.triggers)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Function {
    /// Starts building a function with this id (`[a-z0-9][a-z0-9_-]{0,63}`, unique in the
    /// namespace; it names the durable consumer).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(id: impl Into<String>) -> FunctionBuilder<()> {
        FunctionBuilder {
            id: id.into(),
            triggers: Vec::new(),
            settings: Settings::default(),
            on_failure: None,
            _event: PhantomData,
        }
    }

    /// The function id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The trigger event types (patterns for untyped functions).
    pub fn triggers(&self) -> &[String] {
        &self.triggers
    }

    /// The attempts budget.
    pub fn attempts(&self) -> u32 {
        self.settings.attempts
    }

    /// Whether the description can work: a valid id, at least one valid trigger, sane
    /// settings. [`WorkerBuilder::start`](crate::WorkerBuilder::start) checks this too and
    /// refuses to start otherwise; call it to fail earlier.
    pub fn check(&self) -> Result<(), FunctionError> {
        match &self.error {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// A function under construction; `E` is its event type once [`on`](FunctionBuilder::on)
/// is called.
#[must_use = "a function does nothing until it gets a handler and is added to a worker"]
pub struct FunctionBuilder<E> {
    id: String,
    triggers: Vec<String>,
    settings: Settings,
    on_failure: Option<FailureHandler>,
    _event: PhantomData<fn(E)>,
}

/// A dead-lettered run, as the failure handler sees it.
#[derive(Debug, Clone)]
pub struct FailedRun {
    /// The event.
    pub event: Envelope,
    /// Why it was dead-lettered.
    pub reason: crate::DeadLetterReason,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The step that failed, if the failure was in a step.
    pub step: Option<String>,
}

pub(crate) type FailureHandler =
    Arc<dyn Fn(FailedRun) -> BoxFuture<Result<(), HandlerError>> + Send + Sync>;

impl<E> fmt::Debug for FunctionBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionBuilder")
            .field("id", &self.id)
            .field("triggers", &self.triggers)
            .finish_non_exhaustive()
    }
}

/// A function definition that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// The id breaks the rule.
    #[error(
        "invalid function id {id:?}: {reason}. A function id is 1 to 64 characters \
         `[a-z0-9][a-z0-9_-]*`, e.g. `backfill-user-data`"
    )]
    InvalidId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A trigger pattern is not an event type or a wildcard pattern.
    #[error(
        "invalid trigger {pattern:?} for function {function}: {reason}. A trigger is an event \
         type (`user.signup`) or a pattern with `*` for one token and `>` for the rest (`user.*`)"
    )]
    InvalidTrigger {
        /// The function.
        function: String,
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// No trigger.
    #[error("function {function} has no trigger; call .on::<YourEvent>() or .on_types([..])")]
    NoTrigger {
        /// The function.
        function: String,
    },
    /// A setting out of range.
    #[error("function {function}: {reason}")]
    InvalidSetting {
        /// The function.
        function: String,
        /// What is wrong.
        reason: String,
    },
    /// The event type's schema does not compile.
    #[error("function {function}: {reason}")]
    Schema {
        /// The function.
        function: String,
        /// The compiler's message.
        reason: String,
    },
}

impl<E> FunctionBuilder<E> {
    /// Attempts per event, first one included (default 5). The consumer's `max_deliver` is
    /// this plus 2, so that a crash on the last attempt still reaches a worker.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.settings.attempts = attempts;
        self
    }

    /// Delay between attempts (default 1 s doubling, at most 5 min, ±20 %).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Longest time one attempt may run (default 5 min); a timeout is a failed attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// The consumer's `ack_wait` (default 30 s): how soon the events of a crashed worker come
    /// back. Running handlers send progress every `ack_wait / 3`.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.settings.ack_wait = ack_wait;
        self
    }

    /// Handlers running at once in one worker replica (default 16). Reading run records and
    /// acking happen outside this limit, so a fast handler is not slowed by their round trips.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.settings.concurrency = concurrency;
        self
    }

    /// Handlers running at once across every replica (`max_ack_pending`; server default
    /// when unset).
    pub fn max_ack_pending(mut self, limit: i64) -> Self {
        self.settings.max_ack_pending = Some(limit);
        self
    }

    /// Where a new function starts reading (default: new events only).
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.settings.start = start;
        self
    }

    /// Record finished runs and ack a redelivered event whose run already finished without
    /// running the handler again (default on; costs one write per event, and one read per
    /// group of events pulled together).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.settings.idempotent = idempotent;
        self
    }

    /// The largest step output stored, in bytes (default 256 KiB); a larger one fails the
    /// step with a terminal error.
    pub fn max_step_output(mut self, bytes: usize) -> Self {
        self.settings.max_step_output = bytes;
        self
    }

    /// Runs `handler` once when a run is dead-lettered, with the event, the reason, the
    /// error and the attempts (for alerts or compensation). Its own failures are logged.
    pub fn on_failure<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(FailedRun) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.on_failure = Some(Arc::new(move |failed| Box::pin(handler(failed))));
        self
    }

    fn check(&self) -> Result<(), FunctionError> {
        check_function_id(&self.id)?;
        if self.triggers.is_empty() {
            return Err(FunctionError::NoTrigger {
                function: self.id.clone(),
            });
        }
        let invalid = |reason: &str| FunctionError::InvalidSetting {
            function: self.id.clone(),
            reason: reason.to_owned(),
        };
        if self.settings.attempts == 0 {
            return Err(invalid("attempts must be at least 1"));
        }
        if self.settings.concurrency == 0 {
            return Err(invalid("concurrency must be at least 1"));
        }
        if self.settings.ack_wait < Duration::from_millis(300) {
            return Err(invalid("ack_wait must be at least 300 ms"));
        }
        if self.settings.timeout.is_zero() {
            return Err(invalid("timeout must be positive"));
        }
        if let Some(limit) = self.settings.max_ack_pending
            && limit < 1
        {
            return Err(invalid("max_ack_pending must be at least 1"));
        }
        Ok(())
    }
}

impl FunctionBuilder<()> {
    /// Triggers the function on events of type `E`; its handler takes an `E`.
    pub fn on<E: Event>(self) -> FunctionBuilder<E> {
        FunctionBuilder {
            id: self.id,
            triggers: vec![E::TYPE.to_owned()],
            settings: self.settings,
            on_failure: self.on_failure,
            _event: PhantomData,
        }
    }

    /// Triggers the function on these types or patterns (`user.*`, `billing.>`); its handler
    /// takes the raw [`Envelope`].
    pub fn on_types<I, S>(self, patterns: I) -> FunctionBuilder<Envelope>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        FunctionBuilder {
            id: self.id,
            triggers: patterns.into_iter().map(Into::into).collect(),
            settings: self.settings,
            on_failure: self.on_failure,
            _event: PhantomData,
        }
    }
}

impl<E: Event> FunctionBuilder<E> {
    /// Sets the handler: `async fn(E, Ctx) -> Result<T, HandlerError>`. The payload is
    /// validated against `E`'s schema before it is decoded; an invalid one is dead-lettered
    /// without calling the handler.
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(E, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        let schema = CompiledSchema::of::<E>().map_err(|error| FunctionError::Schema {
            function: self.id.clone(),
            reason: error.to_string(),
        });
        let error = self
            .check()
            .err()
            .or_else(|| schema.as_ref().err().cloned());
        Function {
            error,
            id: self.id.into(),
            triggers: self.triggers,
            settings: self.settings,
            on_failure: self.on_failure,
            handler: Arc::new(TypedHandler::<E, F> {
                schema: schema.ok().map(Arc::new),
                handler,
                _event: PhantomData,
            }),
        }
    }
}

impl FunctionBuilder<Envelope> {
    /// Sets the handler of an untyped function: `async fn(Envelope, Ctx) -> Result<T, HandlerError>`.
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(Envelope, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        let error = self.check().err().or_else(|| {
            self.triggers.iter().find_map(|pattern| {
                check_pattern(pattern)
                    .err()
                    .map(|reason| FunctionError::InvalidTrigger {
                        function: self.id.clone(),
                        pattern: pattern.clone(),
                        reason,
                    })
            })
        });
        Function {
            error,
            id: self.id.into(),
            triggers: self.triggers,
            settings: self.settings,
            on_failure: self.on_failure,
            handler: Arc::new(RawHandler { handler }),
        }
    }
}

/// Checks a function id against `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn check_function_id(id: &str) -> Result<(), FunctionError> {
    let error = |reason: String| FunctionError::InvalidId {
        id: id.to_owned(),
        reason,
    };
    let Some(first) = id.chars().next() else {
        return Err(error("it is empty".to_owned()));
    };
    if id.len() > 64 {
        return Err(error(format!("it is {} characters long", id.len())));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(error(format!("it starts with {first:?}")));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(error(format!("it contains {bad:?}")));
    }
    Ok(())
}

/// A trigger pattern: event-type tokens, `*` for one token, `>` as the last token.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        match *token {
            "*" => {}
            ">" if index == tokens.len() - 1 => {}
            ">" => return Err("`>` may only be the last token".to_owned()),
            token => {
                EventType::new(token).map_err(|e| e.reason().to_owned())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids() {
        assert!(check_function_id("backfill-user-data").is_ok());
        assert!(check_function_id(&"a".repeat(64)).is_ok());
        for bad in ["", "Backfill", "-x", "a.b", "a b", &"a".repeat(65)] {
            let error = check_function_id(bad).unwrap_err();
            assert!(error.to_string().contains("[a-z0-9]"), "{error}");
        }
    }

    #[test]
    fn trigger_patterns() {
        for good in ["user.signup", "user.*", "billing.>", ">", "*.created"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["User.x", "a.>.b", "a..b", ""] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_convert_with_their_chain() {
        let io = std::io::Error::other("disk full");
        let error: HandlerError = io.into();
        assert!(!error.is_terminal());
        assert_eq!(error.message(), "disk full");
        assert!(HandlerError::terminal("bad input").is_terminal());
    }
}
