//! [`Ctx`]: what a handler knows about the event and the attempt, and its steps.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald::Event;
use herald::protocol::runs;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::run_store::Lifetime;
use crate::steps::{RunState, StepRecord};

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
#[derive(Clone, Default)]
pub(crate) struct EnvelopeMeta {
    pub(crate) id: String,
    /// Shared by the events of a type and source (most deliveries repeat a few of each):
    /// [`crate::envelope`] interns them.
    pub(crate) event_type: Arc<str>,
    pub(crate) source: Arc<str>,
    /// `ce-time` as given; without it, the time of a UUIDv7 id, written when first asked
    /// for ([`EnvelopeMeta::time`]): most handlers never ask.
    time: std::sync::OnceLock<Option<String>>,
    pub(crate) subject: Option<String>,
    /// Interned as the type and source are: a publisher names one schema per type.
    pub(crate) data_schema: Option<Arc<str>>,
}

impl EnvelopeMeta {
    /// The attributes of an event; without `time` (no `ce-time`), the event happened when
    /// its UUIDv7 id was made (protocol section 4).
    pub(crate) fn new(
        id: String,
        event_type: Arc<str>,
        source: Arc<str>,
        time: Option<String>,
        subject: Option<String>,
        data_schema: Option<Arc<str>>,
    ) -> EnvelopeMeta {
        let mut meta = EnvelopeMeta {
            id,
            event_type,
            source,
            time: std::sync::OnceLock::new(),
            subject,
            data_schema,
        };
        if let Some(time) = time {
            meta.set_time(time);
        }
        meta
    }

    /// When the event happened, RFC 3339: its `ce-time`, else the time of its UUIDv7 id.
    pub(crate) fn time(&self) -> Option<&str> {
        self.time
            .get_or_init(|| herald::headers::event_time(None, &self.id))
            .as_deref()
    }

    /// Sets when the event happened (a cron tick's scheduled time, say).
    pub(crate) fn set_time(&mut self, time: String) {
        self.time = std::sync::OnceLock::from(Some(time));
    }

    /// Seconds from when the event happened until now (0 for a time ahead of this clock);
    /// `None` for an event with no time. An id's time is not written out to be read back.
    pub(crate) fn seconds_since(&self) -> Option<f64> {
        match self.time.get() {
            Some(time) => time.as_deref().and_then(crate::telemetry::seconds_since),
            None => {
                let made = herald::headers::time_of_event_id(&self.id)?;
                let age = SystemTime::now().duration_since(made).unwrap_or_default();
                Some(age.as_secs_f64())
            }
        }
    }
}

impl std::fmt::Debug for EnvelopeMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeMeta")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("source", &self.source)
            .field("time", &self.time())
            .field("subject", &self.subject)
            .field("data_schema", &self.data_schema)
            .finish()
    }
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
        self.envelope.time()
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

    pub(crate) fn run(&self) -> Result<&Arc<RunState>, HandlerError> {
        let run = self.run.as_ref().ok_or_else(|| {
            HandlerError::retry(
                "durable steps need the runs bucket; provision the namespace (Client::provision)",
            )
        })?;
        // A durable sleep whose error was swallowed: no step runs before the run wakes.
        if run.is_suspending() {
            return Err(suspended("a durable sleep is pending"));
        }
        if let Some(reason) = run.cancelled() {
            return Err(HandlerError {
                kind: ErrorKind::Cancelled,
                message: reason,
            });
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
        let stored = run.read_step(&key).await.map_err(HandlerError::from)?;
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
        // A cancel stored since the attempt started: the step does not run.
        self.run()?;
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
        let wake_at_ms = match run.read_step(&key).await.map_err(HandlerError::from)? {
            Some(StepRecord::Ok { .. }) => {
                run.step_done();
                return Ok(());
            }
            Some(StepRecord::Sleeping { wake_at_ms }) => wake_at_ms,
            None => {
                let wake_at_ms = run.bounded(
                    time.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                );
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
