//! [`Tick`], what a cron-triggered handler receives, and the builder methods that add cron
//! triggers.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use herald::schema::CompiledSchema;
use serde::{Deserialize, Serialize};

use super::{CronTrigger, tick_of};
use crate::envelope::Envelope;
use crate::function::{
    BoxFuture, Ctx, Decoded, ErasedHandler, Function, FunctionBuilder, HandlerError,
};

/// One tick of a cron trigger, as its handler receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The trigger's id (see [`CronTrigger::id`]).
    pub cron_id: String,
    /// The pattern as given to [`FunctionBuilder::cron`].
    pub schedule: String,
    /// The IANA time zone, `None` for UTC.
    pub time_zone: Option<String>,
    /// When this tick was due, RFC 3339 with the zone's offset (`2026-11-27T12:00:00+01:00`).
    pub scheduled_at: String,
    /// When the next tick is due, as the server computed it.
    pub next: String,
}

/// The body of a cron schedule message (protocol section 8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScheduleBody {
    /// The pattern as given.
    pub(crate) schedule: String,
    /// The 6-field pattern.
    pub(crate) pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time_zone: Option<String>,
}

impl ScheduleBody {
    pub(crate) fn of(trigger: &CronTrigger) -> ScheduleBody {
        ScheduleBody {
            schedule: trigger.given().to_owned(),
            pattern: trigger.pattern().to_owned(),
            time_zone: trigger.time_zone().map(str::to_owned),
        }
    }
}

impl Tick {
    /// Reads a tick from a delivered message: its headers name the trigger and the next
    /// fire, its body the pattern.
    pub(crate) fn read(
        payload: &[u8],
        headers: Option<&async_nats::HeaderMap>,
    ) -> Result<Tick, String> {
        let (cron_id, next) = headers.and_then(tick_of).ok_or(
            "the message is not a cron tick (no herald-cron and Nats-Schedule-Next headers)",
        )?;
        let body: ScheduleBody = serde_json::from_slice(payload)
            .map_err(|error| format!("the cron tick's body is not a schedule: {error}"))?;
        let trigger = CronTrigger::new(&body.pattern, body.time_zone.as_deref())
            .map_err(|error| error.to_string())?;
        let scheduled_at = chrono::DateTime::parse_from_rfc3339(next)
            .ok()
            .and_then(|next| trigger.tick_before(next))
            .map_or_else(|| next.to_owned(), |tick| tick.to_rfc3339());
        Ok(Tick {
            cron_id: cron_id.to_owned(),
            schedule: body.schedule,
            time_zone: body.time_zone,
            scheduled_at,
            next: next.to_owned(),
        })
    }
}

struct TickHandler<F> {
    handler: F,
}

impl<F, Fut, T> ErasedHandler for TickHandler<F>
where
    F: Fn(Tick, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    T: Send + 'static,
{
    fn prepare(
        &self,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        ctx: Ctx,
        _writer_schema: Option<Arc<CompiledSchema>>,
    ) -> Decoded {
        match Tick::read(&payload, headers) {
            Ok(tick) => {
                let future = (self.handler)(tick, ctx);
                Decoded::Ready(Box::pin(async move { future.await.map(drop) }) as BoxFuture<_>)
            }
            Err(error) => Decoded::DecodeError(error),
        }
    }
}

impl FunctionBuilder<()> {
    /// Runs the function on a schedule: a cron pattern of 5 fields (`0 12 * * 5`: Fridays at
    /// noon) or 6 with seconds first (`*/10 * * * * *`), or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`; in UTC unless [`time_zone`](FunctionBuilder::time_zone) follows.
    /// Call it again for more schedules. The handler takes a [`Tick`].
    ///
    /// nats-server fires the ticks (scheduled messages, 2.12+; time zones 2.14+), so a tick
    /// is due once however many replicas run, and one fired twice after a leader change runs
    /// once (with idempotent runs, the default). Ticks missed while the whole cluster was
    /// down fire once when it is back.
    ///
    /// ```
    /// use herald_worker::{Ctx, Function, HandlerError, Tick};
    ///
    /// let report = Function::new("weekly-report")
    ///     .cron("0 12 * * 5")
    ///     .time_zone("Europe/Paris")
    ///     .handler(|tick: Tick, _ctx: Ctx| async move {
    ///         tracing::info!(due = %tick.scheduled_at, "building the weekly report");
    ///         Ok::<(), HandlerError>(())
    ///     });
    /// assert!(report.check().is_ok());
    /// assert_eq!(report.crons()[0].pattern(), "0 0 12 * * 5");
    /// ```
    pub fn cron(self, pattern: impl Into<String>) -> FunctionBuilder<Tick> {
        let mut crons = self.crons;
        crons.push((pattern.into(), None));
        FunctionBuilder {
            id: self.id,
            triggers: self.triggers,
            crons,
            settings: self.settings,
            on_failure: self.on_failure,
            _event: PhantomData,
        }
    }
}

impl FunctionBuilder<Tick> {
    /// Another cron schedule (see [`FunctionBuilder::cron`]).
    pub fn cron(mut self, pattern: impl Into<String>) -> Self {
        self.crons.push((pattern.into(), None));
        self
    }

    /// Sets the handler of a cron function: `async fn(Tick, Ctx) -> Result<T, HandlerError>`.
    pub fn handler<F, Fut, T>(self, handler: F) -> Function
    where
        F: Fn(Tick, Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
        T: Send + 'static,
    {
        let checked = self.check();
        Function {
            error: checked.as_ref().err().cloned(),
            id: self.id.into(),
            triggers: self.triggers,
            crons: checked.unwrap_or_default(),
            settings: self.settings,
            on_failure: self.on_failure,
            handler: Arc::new(TickHandler { handler }),
        }
    }
}

impl FunctionBuilder<Envelope> {
    /// A cron schedule for an untyped function, alongside its event triggers: each tick
    /// arrives as an [`Envelope`] of type `herald.cron` whose data is the schedule
    /// (`{"schedule", "pattern", "time_zone"}`) and whose [`Ctx::time`] is when the tick was
    /// due. See [`FunctionBuilder::cron`].
    pub fn cron(mut self, pattern: impl Into<String>) -> Self {
        self.crons.push((pattern.into(), None));
        self
    }
}
