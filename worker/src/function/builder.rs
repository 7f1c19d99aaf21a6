//! [`FunctionBuilder`]: a function under construction.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use herald::Event;
use herald::schema::CompiledSchema;
use serde::Serialize;

use super::handlers::{ErasedHandler, RawHandler, ReturningHandler, TypedHandler};
use super::*;
use crate::backoff::Backoff;
use crate::envelope::Envelope;

/// A function under construction; `E` is its event type once [`on`](FunctionBuilder::on)
/// is called.
#[must_use = "a function does nothing until it gets a handler and is added to a worker"]
pub struct FunctionBuilder<E> {
    pub(crate) id: String,
    pub(crate) triggers: Vec<String>,
    /// Cron patterns and their time zones, checked by `check`.
    pub(crate) crons: Vec<(String, Option<String>)>,
    pub(crate) settings: Settings,
    pub(crate) on_failure: Option<FailureHandler>,
    pub(crate) _event: PhantomData<fn(E)>,
}

impl<E> fmt::Debug for FunctionBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionBuilder")
            .field("id", &self.id)
            .field("triggers", &self.triggers)
            .finish_non_exhaustive()
    }
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
    ///
    /// A replica runs a function's deliveries as futures of one task per consumer: they
    /// wait on I/O at once, but CPU work in one holds up the others. Move heavy computation
    /// to `tokio::task::spawn_blocking` (or a thread pool of its own) and await it.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.settings.concurrency = concurrency;
        self
    }

    /// Messages delivered and not yet acknowledged across every replica: the consumer's
    /// `max_ack_pending`, which bounds the handlers running at once cluster-wide. Unset,
    /// 16 × a replica's window (`16 × max(1024, concurrency)`): room for sixteen replicas
    /// each holding its whole window, or the server's default when its limits allow less.
    /// A value above the server's, account's or stream's limit fails the worker's start.
    ///
    /// A function that sets it reads its redrive subject (redrives, continuations, wake-ups,
    /// invocations) through its one consumer, so that the bound covers every message it has
    /// in flight; one that does not has a second consumer for it (protocol section 3).
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

    /// Cancels a run whose event waited longer than `timeout` before the run first started
    /// (a backlog, a paused function): recorded `cancelled` with reason `start timeout`.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.settings.start_timeout = Some(timeout);
        self
    }

    /// Cancels a run still going `timeout` after it first started, sleeps and waits
    /// included: checked when a delivery of it arrives and at each step, and no sleep or wait
    /// outlasts it (recorded `cancelled`, reason `finish timeout`). Costs one read or write
    /// per delivery (the run's start time, `F.<event-key>.t`).
    pub fn finish_timeout(mut self, timeout: Duration) -> Self {
        self.settings.finish_timeout = Some(timeout);
        self
    }

    /// Caps how long a debounce window stays open: its run starts at most this long after
    /// the window's first event, however many events follow (default: no cap).
    pub fn debounce_timeout(mut self, timeout: Duration) -> Self {
        self.settings.debounce_timeout = Some(timeout);
        self
    }

    /// What a cron tick does while the previous tick of its trigger still runs (default
    /// [`Overlap::Skip`]: skipped, recorded `skipped`). A run that sleeps or waits still
    /// runs. Needs idempotent runs (the default) to tell a finished tick from a running one.
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.settings.overlap = overlap;
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

    pub(crate) fn check(&self) -> Result<Vec<crate::cron::CronTrigger>, FunctionError> {
        check_function_id(&self.id)?;
        if self.triggers.is_empty() && self.crons.is_empty() {
            return Err(FunctionError::NoTrigger {
                function: self.id.clone(),
            });
        }
        let mut crons: Vec<crate::cron::CronTrigger> = Vec::new();
        for (pattern, zone) in &self.crons {
            if pattern.is_empty() {
                return Err(FunctionError::InvalidCron {
                    function: self.id.clone(),
                    reason: "time_zone() names the zone of the cron pattern given just before; \
                             call cron(pattern) first"
                        .to_owned(),
                });
            }
            let trigger =
                crate::cron::CronTrigger::new(pattern, zone.as_deref()).map_err(|error| {
                    FunctionError::InvalidCron {
                        function: self.id.clone(),
                        reason: error.to_string(),
                    }
                })?;
            if !crons.contains(&trigger) {
                crons.push(trigger);
            }
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
        if let Some(reason) = self
            .settings
            .cancel_on
            .iter()
            .find_map(|c| c.invalid.clone())
        {
            return Err(invalid(&reason));
        }
        if let Some(reason) = self.settings.flow_errors.first() {
            return Err(invalid(reason));
        }
        for limit in &self.settings.concurrency_limits {
            limit.check().map_err(|reason| invalid(&reason))?;
        }
        for limit in [&self.settings.throttle, &self.settings.rate_limit]
            .into_iter()
            .flatten()
        {
            limit.check().map_err(|reason| invalid(&reason))?;
        }
        match (&self.settings.debounce, self.settings.debounce_timeout) {
            (None, Some(_)) => {
                return Err(invalid("debounce_timeout needs debounce(key, period)"));
            }
            (Some(debounce), timeout) => {
                if debounce.period < Duration::from_secs(1) {
                    return Err(invalid(
                        "the debounce period must be at least 1 s (the server fires schedules in whole seconds)",
                    ));
                }
                if timeout.is_some_and(|t| t < debounce.period) {
                    return Err(invalid(
                        "debounce_timeout must be at least the debounce period",
                    ));
                }
            }
            (None, None) => {}
        }
        if let Some(batch) = &self.settings.batch {
            if let Some(reason) = batch.problem() {
                return Err(invalid(&reason));
            }
            if let Some(other) = self.settings.batch_conflict() {
                return Err(invalid(&format!(
                    "batch cannot be combined with {other}: it decides per event, and a batch's \
                     run has many; set it on a function that handles the events one by one"
                )));
            }
        }
        Ok(crons)
    }

    /// The time zone of the cron pattern given just before (an IANA name such as
    /// `Europe/Paris`; default UTC). The nats-server host needs time-zone data for it.
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        match self.crons.last_mut() {
            Some((_, slot)) => *slot = Some(zone.into()),
            // Reported by `check` as a cron without a pattern.
            None => self.crons.push((String::new(), Some(zone.into()))),
        }
        self
    }
}

impl FunctionBuilder<()> {
    /// Triggers the function on events of type `E`; its handler takes an `E`.
    pub fn on<E: Event>(self) -> FunctionBuilder<E> {
        FunctionBuilder {
            id: self.id,
            triggers: vec![E::TYPE.to_owned()],
            crons: self.crons,
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
            crons: self.crons,
            settings: self.settings,
            on_failure: self.on_failure,
            _event: PhantomData,
        }
    }
}

impl<E: Event> FunctionBuilder<E> {
    /// Cancels a run when an event of type `C` arrives whose field at `pointer` (a JSON
    /// pointer into `C`, checked against its schema) equals `value_of(trigger)`. Several are
    /// allowed. A cancelling event sent right after the trigger still cancels (the run looks
    /// back from its trigger when it starts); the run stops at its next step, or at once if
    /// it sleeps or waits, and is recorded `cancelled`.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "signup.completed")]
    /// # struct Signup { user_id: String }
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "account.deleted")]
    /// # struct AccountDeleted { user_id: String }
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// let onboarding = Function::new("onboarding-emails")
    ///     .on::<Signup>()
    ///     .cancel_on::<AccountDeleted, _>("/user_id", |s: &Signup| s.user_id.clone())
    ///     .handler(|_: Signup, _ctx: Ctx| async { Ok::<(), HandlerError>(()) });
    /// assert!(onboarding.check().is_ok());
    /// ```
    pub fn cancel_on<C: Event, V: serde::Serialize>(
        mut self,
        pointer: &str,
        value_of: impl Fn(&E) -> V + Send + Sync + 'static,
    ) -> Self {
        let invalid = crate::wait::check_pointer(&C::schema(), pointer)
            .err()
            .map(|reason| format!("cancel_on::<{}>: {reason}", C::TYPE));
        let value_of = move |payload: &[u8]| {
            let event = serde_json::from_slice::<E>(payload).map_err(|e| e.to_string())?;
            serde_json::to_value(value_of(&event)).map_err(|e| e.to_string())
        };
        self.settings
            .cancel_on
            .push(crate::wait::cancel_on::CancelOn {
                event_type: C::TYPE.to_owned(),
                pointer: pointer.to_owned(),
                value_of: std::sync::Arc::new(value_of),
                invalid,
            });
        self
    }

    /// Debounces the function per key: an event opens or extends its key's window, and
    /// once `period` passes without another event of that key (or the
    /// [`debounce_timeout`](Self::debounce_timeout) after the window's first event) the
    /// handler runs once, with the window's **last** event. The events folded into a window
    /// are acked; the window lives in the server (a scheduled message replaced by
    /// compare-and-set), so it survives worker restarts and no worker keeps a timer. Needs
    /// nats-server 2.12+. Periods are whole seconds, at least 1 s.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "profile.updated")]
    /// # struct ProfileUpdated { user_id: String }
    /// use std::time::Duration;
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// let reindex = Function::new("reindex-profile")
    ///     .on::<ProfileUpdated>()
    ///     .debounce(|e: &ProfileUpdated| e.user_id.clone(), Duration::from_secs(5))
    ///     .debounce_timeout(Duration::from_secs(60))
    ///     .handler(|e: ProfileUpdated, _ctx: Ctx| async move {
    ///         tracing::info!(user = %e.user_id, "reindexing once for a burst of updates");
    ///         Ok::<(), HandlerError>(())
    ///     });
    /// assert!(reindex.check().is_ok());
    /// ```
    pub fn debounce<K, F>(mut self, key: F, period: Duration) -> Self
    where
        F: Fn(&E) -> K + Send + Sync + 'static,
        K: AsRef<str>,
    {
        let key_of = move |payload: &[u8]| {
            serde_json::from_slice::<E>(payload)
                .map(|event| key(&event).as_ref().to_owned())
                .map_err(|error| error.to_string())
        };
        self.settings.debounce = Some(crate::flow::debounce::Debounce {
            key: std::sync::Arc::new(key_of),
            period,
        });
        self
    }

    /// Sets the handler: `async fn(E, Ctx) -> Result<T, HandlerError>`. The payload is
    /// validated against `E`'s schema before it is decoded; an invalid one is dead-lettered
    /// without calling the handler.
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(E, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        self.typed(|schema| {
            Arc::new(TypedHandler::<E, F> {
                schema,
                handler,
                _event: PhantomData,
            })
        })
    }

    /// The function with the handler `make` builds from the event's compiled schema (`None`
    /// when it does not compile: the function then carries that error, as it carries the
    /// builder's own).
    pub(super) fn typed(
        self,
        make: impl FnOnce(Option<Arc<CompiledSchema>>) -> Arc<dyn ErasedHandler>,
    ) -> Function {
        let schema = CompiledSchema::of::<E>().map_err(|error| FunctionError::Schema {
            function: self.id.clone(),
            reason: error.to_string(),
        });
        let checked = self.check();
        let error = checked
            .as_ref()
            .err()
            .cloned()
            .or_else(|| schema.as_ref().err().cloned());
        Function {
            error,
            id: self.id.into(),
            triggers: self.triggers,
            crons: checked.unwrap_or_default(),
            settings: self.settings,
            on_failure: self.on_failure,
            handler: make(schema.ok().map(Arc::new)),
        }
    }
}

impl<E: Event> FunctionBuilder<E> {
    /// Sets a handler whose output a function that [invokes](Ctx::invoke) this one receives:
    /// `async fn(E, Ctx) -> Result<O, HandlerError>` with `O: Serialize`. Otherwise as
    /// [`handler`](Self::handler).
    pub fn returning<F, Fut, O>(self, handler: F) -> Function
    where
        F: Fn(E, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
        O: Serialize + Send + 'static,
    {
        self.typed(|schema| {
            Arc::new(ReturningHandler::<E, F> {
                schema,
                handler,
                _event: PhantomData,
            })
        })
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
        let checked = self.check();
        let error = checked.as_ref().err().cloned().or_else(|| {
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
            crons: checked.unwrap_or_default(),
            settings: self.settings,
            on_failure: self.on_failure,
            handler: Arc::new(RawHandler { handler }),
        }
    }
}
