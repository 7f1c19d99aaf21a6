//! [`FunctionLoop::settle`]: the only code that acks, NAKs, terminates or dead-letters a
//! delivery, for the worker and the sweeper alike.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use opentelemetry::KeyValue;

use super::decide::{Record, Settlement};
use super::delivery::{Delivery, log};
use super::{FunctionLoop, panic_message};
use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::envelope::Envelope;
use crate::function::FailedRun;
use crate::run_store::Lifetime;
use crate::steps::{RunRecord, RunState, RunStatus};
use crate::telemetry::{RunOutcome, set_outcome};
use herald::protocol::runs;

/// The delay of a NAK after a dead letter could not be published.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);
/// The delay of a NAK after a finished run could not be recorded.
const RECORD_RETRY: Duration = Duration::from_secs(5);
/// The delay of a NAK after a continuation could not be scheduled.
const SCHEDULE_RETRY: Duration = Duration::from_secs(1);

/// Marks the current attempt's span with its outcome.
fn outcome(name: &'static str, error: Option<&str>) {
    opentelemetry::Context::map_current(|trace| set_outcome(trace, name, error));
}

impl FunctionLoop {
    /// Carries out a settlement.
    pub(crate) async fn settle(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        settlement: Settlement,
    ) {
        match settlement {
            Settlement::Ack { record } => self.finish(delivery, run, record).await,
            Settlement::Park(step) => {
                outcome("waiting", None);
                log!(delivery, info, step = %step, "waiting for an event; the run continues when it comes or the wait times out");
                delivery.ack().await;
            }
            // The rarer arms are boxed: a future is as large as its largest arm, and every
            // delivery's future is allocated and moved whole.
            Settlement::Skip(reason) => {
                Box::pin(self.record_and_ack(delivery, run, RunStatus::Skipped, &reason)).await;
            }
            Settlement::Cancel(reason) => {
                Box::pin(self.record_and_ack(delivery, run, RunStatus::Cancelled, &reason)).await;
            }
            Settlement::Retry { delay, error } => {
                self.log_payload(delivery);
                self.counts.count(RunOutcome::Retried);
                outcome("retried", Some(&error));
                log!(delivery, warn, error, attempt = delivery.delivered, max_attempts = self.function.settings.attempts,
                    retry_in = ?delay, "attempt failed; will retry");
                delivery.nak(Some(delay)).await;
            }
            Settlement::HandBack => {
                outcome("handed_back", None);
                log!(delivery, info, "shutdown: handing the event back");
                delivery.nak(None).await;
            }
            Settlement::Continue { at_ms, wake, error } => {
                Box::pin(self.continue_later(delivery, run, at_ms, wake, error)).await;
            }
            Settlement::DeadLetter {
                reason,
                error,
                attempts,
                step,
            } => {
                Box::pin(self.dead_letter(delivery, run, reason, &error, attempts, step)).await;
            }
        }
    }

    /// Acks a finished run, with its record stored as `record` says: a finished run is
    /// acked only with its record stored, or (a plain first delivery) with its ack confirmed
    /// afterwards, or its record stored then (protocol section 7).
    async fn finish(&self, delivery: &Delivery, run: Option<&RunState>, record: Record) {
        match (record, run) {
            (Record::Always, Some(run)) => {
                // Boxed: the write's future is the largest of a settlement, and a plain
                // first delivery, the most common, has none.
                if !Box::pin(self.store_run_record(delivery, run)).await {
                    return;
                }
                self.after_run(delivery, Some(run), None).await;
                delivery.ack().await;
            }
            // A plain first delivery's ack is confirmed by the drain (`confirm.rs`).
            (_, run) => {
                self.after_run(delivery, run, None).await;
                delivery.ack().await;
            }
        }
        self.counts.count(RunOutcome::Ok);
        outcome("ok", None);
    }

    /// Stores `F.<event-key>` = `ok`, retried while the delivery is kept alive (no handler
    /// starts meanwhile); when that fails, NAKs the delivery and says `false`.
    async fn store_run_record(&self, delivery: &Delivery, run: &RunState) -> bool {
        let record = RunRecord::now(RunStatus::Ok, None);
        let first = run.store.put(&run.run_key, &record, Lifetime::Retention);
        let written = match self.keep_alive(delivery, first).await {
            Ok(()) => Ok(()),
            // Boxed: the rare path stays out of every delivery's future.
            Err(_) => {
                let _retrying = self.stall.begin();
                let retry =
                    run.store
                        .put_until(&run.run_key, &record, Lifetime::Retention, run.deadline());
                Box::pin(self.keep_alive(delivery, retry)).await
            }
        };
        if let Err(error) = written {
            log!(delivery, error, %error, retry_in = ?RECORD_RETRY,
                "the finished run cannot be recorded; NAKed rather than acked without its record (the handler runs again)");
            self.record_failed("run");
            outcome("retried", Some("the run record cannot be stored"));
            delivery.nak(Some(RECORD_RETRY)).await;
            return false;
        }
        true
    }

    /// Records a run that does not run (any further) as `skipped` or `cancelled`, then acks.
    async fn record_and_ack(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        status: RunStatus,
        reason: &str,
    ) {
        if let Some(run) = run {
            let record = RunRecord::now(status, Some(reason.to_owned()));
            let write =
                run.store
                    .put_until(&run.run_key, &record, Lifetime::Retention, run.deadline());
            if let Err(error) = self.keep_alive(delivery, write).await {
                // Acked all the same: the run has no effect left to repeat.
                log!(delivery, warn, %error, status = status.as_str(), "the run's record cannot be stored");
                self.record_failed(if status == RunStatus::Skipped {
                    "skipped_run"
                } else {
                    "cancelled_run"
                });
            }
        }
        log!(
            delivery,
            info,
            reason,
            status = status.as_str(),
            "the run ends without running further"
        );
        let why = format!("{}: {reason}", status.as_str());
        self.after_run(delivery, run, Some(&why)).await;
        delivery.ack().await;
        if status == RunStatus::Skipped {
            self.counts.count(RunOutcome::Skipped);
            outcome("skipped", Some(reason));
        } else {
            self.counts.count(RunOutcome::Cancelled);
            outcome("cancelled", Some(reason));
        }
    }

    pub(super) fn record_failed(&self, kind: &'static str) {
        self.shared.metrics.record_failures.add(
            1,
            &[
                self.function_attribute[0].clone(),
                KeyValue::new("kind", kind),
            ],
        );
    }

    /// Schedules the run's continuation, then acks.
    async fn continue_later(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        at_ms: u64,
        wake: Option<String>,
        error: Option<String>,
    ) {
        if wake.is_some()
            && let Some(run) = run
        {
            // The records of a sleeping run live until it wakes, then the retention.
            let extend = self.extend_records(run, at_ms);
            if let Err(error) = self.keep_alive(delivery, extend).await {
                log!(delivery, error, %error, retry_in = ?SCHEDULE_RETRY, "the sleeping run's records cannot be kept until it wakes; retrying");
                self.record_failed("step");
                delivery.nak(Some(SCHEDULE_RETRY)).await;
                return;
            }
        }
        let schedule = self.schedule_continuation(delivery, at_ms, wake.as_deref());
        match self.keep_alive(delivery, schedule).await {
            Ok(()) => {
                match (&wake, &error) {
                    (Some(step), _) if step == crate::flow::concurrency::SLOT_WAKE => {
                        outcome("parked", None);
                        log!(
                            delivery,
                            info,
                            "no concurrency slot free; parked until one frees"
                        );
                    }
                    (Some(step), _) if step == crate::flow::limits::THROTTLE_WAKE => {
                        outcome("throttled", None);
                        log!(
                            delivery,
                            info,
                            "throttled; the run starts when its reserved turn comes"
                        );
                    }
                    (Some(step), _) => {
                        outcome("sleeping", None);
                        log!(delivery, info, step = %step, "sleeping; the run continues when the schedule fires");
                    }
                    (None, error) => {
                        self.counts.count(RunOutcome::Retried);
                        outcome("retried", error.as_deref());
                        log!(delivery, warn, error = error.as_deref().unwrap_or(""), step = ?run.and_then(|r| r.position.lock().1.clone()),
                            "step failed; continuing in a scheduled message (this delivery's budget is spent)");
                    }
                }
                delivery.ack().await;
            }
            Err(error) => {
                log!(delivery, warn, %error, retry_in = ?SCHEDULE_RETRY, "scheduling the continuation failed; retrying this delivery");
                delivery.nak(Some(SCHEDULE_RETRY)).await;
            }
        }
    }

    /// Publishes the dead letter, records the run, then terminates the original and calls
    /// the failure handler; if the publish fails, NAKs so that the next delivery tries again.
    pub(super) async fn dead_letter(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        reason: DeadLetterReason,
        error: &str,
        attempts: u32,
        step: Option<String>,
    ) {
        let letter = DeadLetter {
            function: &self.function.id,
            reason,
            error,
            attempts,
            stream: &self.shared.events_stream,
            stream_sequence: delivery.stream_sequence,
            subject: delivery.subject(),
            step: step.as_deref(),
        };
        let publish = dead_letter::publish(
            &self.shared.client,
            delivery.headers(),
            delivery.payload().clone(),
            &letter,
        );
        if let Err(publish_error) = self.keep_alive(delivery, publish).await {
            log!(delivery, error, error = %publish_error,
                "publishing the dead letter failed; the event stays and is tried again");
            delivery.nak(Some(DEAD_LETTER_RETRY)).await;
            return;
        }
        log!(
            delivery,
            warn,
            reason = reason.as_str(),
            error,
            attempts,
            "dead-lettered"
        );
        self.log_payload(delivery);
        self.counts.count(RunOutcome::DeadLettered);
        self.shared.metrics.dead_letters.add(
            1,
            &[
                self.function_attribute[0].clone(),
                KeyValue::new("reason", reason.as_str()),
            ],
        );
        outcome("dead_lettered", Some(error));
        // The sweeper and a delivery unreadable before its run state have none yet.
        let fresh;
        let run = match run {
            Some(run) => Some(run),
            None => {
                fresh = self.run_state(delivery);
                fresh.as_deref()
            }
        };
        if let Some(run) = run {
            let detail = format!("{}: {}", reason.as_str(), dead_letter::one_line(error));
            let record = RunRecord::now(RunStatus::DeadLettered, Some(detail));
            let write =
                run.store
                    .put_until(&run.run_key, &record, Lifetime::Retention, run.deadline());
            if let Err(store_error) = self.keep_alive(delivery, write).await {
                // The dead letter is stored; only its run record is missing.
                log!(delivery, error, error = %store_error, "recording the dead-lettered run failed");
                self.record_failed("dead_lettered_run");
            }
        }
        let why = format!(
            "dead-lettered ({}): {}",
            reason.as_str(),
            dead_letter::one_line(error)
        );
        self.after_run(delivery, run, Some(&why)).await;
        delivery.term(reason.as_str()).await;
        self.call_on_failure(delivery, run, reason, error, attempts, step)
            .await;
    }

    /// Runs the function's failure handler once per dead-lettered delivery (a marker in the
    /// runs bucket guards against a second call after a crash and redelivery).
    async fn call_on_failure(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        reason: DeadLetterReason,
        error: &str,
        attempts: u32,
        step: Option<String>,
    ) {
        let Some(handler) = &self.function.on_failure else {
            return;
        };
        if let Some(run) = run {
            let marker = runs::failure_handled_key(&run.run_key, delivery.stream_sequence);
            match run.store.create_marker(&marker).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(store_error) => {
                    log!(delivery, warn, error = %store_error, "failure handler skipped: its once-only marker cannot be written");
                    return;
                }
            }
        }
        let failed = FailedRun {
            event: Envelope {
                meta: Arc::clone(&delivery.meta),
                data: delivery.data.clone(),
                headers: delivery.headers().cloned().unwrap_or_default(),
            },
            reason,
            error: error.to_owned(),
            attempts,
            step,
        };
        let call = AssertUnwindSafe(handler(failed)).catch_unwind();
        match tokio::time::timeout(self.function.settings.timeout, call).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(failure))) => {
                log!(delivery, error, error = %failure, "the failure handler failed");
            }
            Ok(Err(panic)) => {
                log!(delivery, error, panic = %panic_message(&panic), "the failure handler panicked");
            }
            Err(_) => log!(delivery, error, "the failure handler timed out"),
        }
    }

    /// With `log_payloads`, the payload of a failed event at debug level.
    fn log_payload(&self, delivery: &Delivery) {
        if self.shared.log_payloads {
            log!(delivery, debug, payload = %String::from_utf8_lossy(delivery.payload()), "payload of the failed event");
        }
    }
}
