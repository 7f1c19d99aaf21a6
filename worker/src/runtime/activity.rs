//! Publishing activity records (protocol section 18, [`crate::activity`]): one when a
//! handler starts, one when its attempt is settled. Core NATS publishes that wait for no
//! acknowledgement; a failure is logged at debug level and forgotten.

use opentelemetry::trace::TraceContextExt as _;

use super::FunctionLoop;
use super::decide::Settlement;
use super::delivery::Delivery;
use crate::activity::{ActivityKind, ActivityRecord};
use crate::steps::RunState;
use herald::protocol::runs;

/// Where a worker publishes its activity records.
pub(crate) struct Activity {
    nats: async_nats::Client,
    /// `ns.activity.`
    prefix: String,
}

impl Activity {
    /// The publisher for `client`'s namespace, or `None` when records are turned off.
    pub(crate) fn new(client: &herald::Client, enabled: bool) -> Option<Activity> {
        if !enabled || crate::activity::disabled_by_env() {
            return None;
        }
        Some(Activity {
            nats: client.nats().clone(),
            prefix: client
                .namespace()
                .activity_wildcard()
                .trim_end_matches('>')
                .to_owned(),
        })
    }
}

/// The run key of a delivery: its run state's, else built from its event id.
fn run_key(function: &str, delivery: &Delivery, run: Option<&RunState>) -> String {
    run.map_or_else(
        || runs::run_key(function, &runs::event_key(delivery.event_id())),
        |run| run.run_key.clone(),
    )
}

/// The outcome name, error, retry delay and step of a settlement.
fn describe(
    settlement: &Settlement,
) -> (&'static str, Option<String>, Option<u64>, Option<String>) {
    match settlement {
        Settlement::Ack { .. } => ("ok", None, None, None),
        Settlement::Park(step) => ("parked", None, None, Some(step.clone())),
        Settlement::Skip(reason) => ("skipped", Some(reason.clone()), None, None),
        Settlement::Cancel(reason) => ("cancelled", Some(reason.clone()), None, None),
        Settlement::Retry { delay, error } => (
            "retry",
            Some(error.clone()),
            Some(delay.as_millis() as u64),
            None,
        ),
        Settlement::HandBack => ("handed_back", None, None, None),
        Settlement::Continue { at_ms, wake, error } => (
            if wake.is_some() {
                "sleeping"
            } else {
                "continued"
            },
            error.clone(),
            Some(at_ms.saturating_sub(crate::steps::now_ms())),
            wake.clone(),
        ),
        Settlement::DeadLetter {
            reason,
            error,
            step,
            ..
        } => (
            "dead_lettered",
            Some(format!("{}: {error}", reason.as_str())),
            None,
            step.clone(),
        ),
    }
}

/// An attempt whose handler ran, and for how long.
pub(crate) struct Begun {
    pub(crate) took: std::time::Duration,
}

impl FunctionLoop {
    /// Publishes the `started` record of a handler still running at its first progress ack
    /// (`ack_wait / 3` after it started).
    pub(super) async fn activity_running(&self, delivery: &Delivery, run: Option<&RunState>) {
        let Some(activity) = self.shared.activity.as_ref() else {
            return;
        };
        let at_ms = crate::steps::now_ms()
            .saturating_sub((self.function.settings.ack_wait / 3).as_millis() as u64);
        let trace = opentelemetry::Context::current();
        let record = self.activity_record(delivery, run, &trace, ActivityKind::Started, at_ms);
        self.publish_activity(activity, &record).await;
    }

    /// The `finished` record of an attempt, unless it is the unremarkable case (a first
    /// delivery of an event as its producer published it, ok within `ack_wait / 3`: the run
    /// record tells it, and a function with `idempotent(false)` keeps no record of it); and
    /// of a delivery that ended its run before the handler (a dead letter, a cancel, a
    /// skip). Made before the settlement, published after it ([`Self::publish_finished`]),
    /// so that a reader woken by the record finds the run record and the dead letter it
    /// tells of.
    ///
    /// A delivery that carries one of Herald's own headers continues a run that may
    /// already have records (a redrive, a continuation, a wake-up): its end is published
    /// even when quick, or the run's latest record would still say `dead_lettered` or
    /// `sleeping`.
    pub(super) fn finished_record(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        begun: Option<Begun>,
        settlement: &Settlement,
        trace: &opentelemetry::Context,
    ) -> Option<Box<ActivityRecord>> {
        self.shared.activity.as_ref()?;
        // A handler still running at its first progress ack announced itself.
        let announced = begun
            .as_ref()
            .is_some_and(|b| b.took >= self.function.settings.ack_wait / 3);
        let ends_run = matches!(
            settlement,
            Settlement::DeadLetter { .. } | Settlement::Cancel(_) | Settlement::Skip(_)
        );
        let plain = matches!(settlement, Settlement::Ack { .. })
            && delivery.delivered == 1
            && !announced
            && !delivery.continues_a_run();
        if (begun.is_none() && !ends_run) || plain {
            return None;
        }
        let now = crate::steps::now_ms();
        let mut record = self.activity_record(delivery, run, trace, ActivityKind::Finished, now);
        let (outcome, error, retry_in_ms, step) = describe(settlement);
        record.started_ms = begun.map(|b| now.saturating_sub(b.took.as_millis() as u64));
        record.outcome = Some(outcome.to_owned());
        record.error = error;
        record.retry_in_ms = retry_in_ms;
        record.step = step;
        Some(Box::new(record))
    }

    /// Publishes a record made by [`Self::finished_record`].
    pub(super) async fn publish_finished(&self, record: Option<Box<ActivityRecord>>) {
        if let (Some(activity), Some(record)) = (self.shared.activity.as_ref(), record) {
            // Boxed: most attempts publish nothing, and their futures stay small.
            Box::pin(self.publish_activity(activity, &record)).await;
        }
    }

    fn activity_record(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        trace: &opentelemetry::Context,
        kind: ActivityKind,
        at_ms: u64,
    ) -> ActivityRecord {
        let span = trace.span();
        let context = span.span_context();
        ActivityRecord {
            kind,
            function: self.function.id.to_string(),
            run: run_key(&self.function.id, delivery, run),
            event_id: delivery.event_id().to_owned(),
            event_type: delivery.meta.event_type.to_string(),
            attempt: delivery.delivered,
            stream_seq: delivery.stream_sequence,
            at_ms,
            started_ms: None,
            outcome: None,
            error: None,
            retry_in_ms: None,
            step: None,
            trace_id: context.is_valid().then(|| context.trace_id().to_string()),
        }
    }

    async fn publish_activity(&self, activity: &Activity, record: &ActivityRecord) {
        let Ok(body) = serde_json::to_vec(record) else {
            return;
        };
        // `F.<event-key>` → `ns.activity.F.<event-key>`.
        let subject = format!("{}{}", activity.prefix, record.run);
        if let Err(error) = activity.nats.publish(subject, body.into()).await {
            tracing::debug!(function = %self.function.id, %error, "an activity record was not sent");
        }
    }
}
