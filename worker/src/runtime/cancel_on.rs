//! A function's `cancel_on` registrations: made when a run's event is delivered from the
//! log (with a look-back from the trigger), removed when the run ends.

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::Delivery;
use crate::run_store::RunStore;
use crate::steps::RunState;
use crate::wait::Registration;
use crate::wait::cancel_on::{register, registrations, unregister};

impl FunctionLoop {
    /// Answers the function that invoked this run: its output, or why it failed.
    async fn answer_caller(
        &self,
        delivery: &Delivery,
        headers: &async_nats::HeaderMap,
        run: Option<&RunState>,
        failed: Option<&str>,
    ) {
        let result = match failed {
            Some(reason) => Err(reason.to_owned()),
            // Acked without running (its run had finished): the first answer stands.
            None => match run.and_then(|r| r.output.lock().take()) {
                Some(output) => Ok(output),
                None => return,
            },
        };
        let Some(kv) = self.shared.runs.as_ref().and_then(RunStore::kv) else {
            return;
        };
        let answer = crate::wait::invoke::answer(&self.shared.client, &kv, headers, result);
        if let Err(error) = self.keep_alive(delivery, answer).await {
            super::delivery::log!(delivery, warn, %error, "the invoking function cannot be answered; it wakes at its deadline");
        }
    }

    fn cancel_registrations(&self, delivery: &Delivery, run: &RunState) -> Vec<Registration> {
        registrations(
            &self.function.settings.cancel_on,
            &self.function.id,
            run.event_key(),
            &delivery.data,
            run.trigger_sequence,
        )
    }

    /// Registers the run's `cancel_on`s when its event comes from the log; `Some` settles
    /// the delivery (a cancelling event is already stored, or the store cannot be reached).
    pub(super) async fn register_cancels(
        &self,
        delivery: &Delivery,
        run: &RunState,
    ) -> Option<Outcome> {
        if self.function.settings.cancel_on.is_empty()
            || !delivery.subject().starts_with(&self.shared.events_prefix)
        {
            return None;
        }
        let kv = self.shared.runs.as_ref().and_then(RunStore::kv)?;
        let registrations = self.cancel_registrations(delivery, run);
        let done = Box::pin(register(&self.shared.client, &kv, &registrations));
        match self.keep_alive(delivery, done).await {
            Ok(None) => None,
            Ok(Some(reason)) => Some(Outcome::Cancelled(reason)),
            Err(error) => Some(Outcome::StoreUnavailable(format!(
                "the run's cancel_on cannot be registered: {error}"
            ))),
        }
    }

    /// What a run that ended leaves behind: its cron lock, its `cancel_on` registrations, an
    /// invoking caller waiting for its answer (`failed`: why the run did not succeed).
    pub(super) async fn after_run(
        &self,
        delivery: &Delivery,
        run: Option<&RunState>,
        failed: Option<&str>,
    ) {
        if !self.function.crons.is_empty() {
            Box::pin(self.release_tick(delivery, run)).await;
        }
        if self.function.settings.singleton.is_some() {
            Box::pin(self.release_single(delivery, run)).await;
        }
        if delivery
            .header(crate::wait::invoke::HEADER_CALLER)
            .is_some()
            && let Some(headers) = delivery.headers()
        {
            Box::pin(self.answer_caller(delivery, headers, run, failed)).await;
        }
        if !self.function.settings.cancel_on.is_empty()
            && let Some(run) = run
        {
            Box::pin(self.unregister_cancels(delivery, run)).await;
        }
    }

    /// Removes the run's `cancel_on` registrations. A separate future: the bucket's handle
    /// is large, and held across an await it would grow every delivery's future.
    async fn unregister_cancels(&self, delivery: &Delivery, run: &RunState) {
        if let Some(kv) = self.shared.runs.as_ref().and_then(RunStore::kv) {
            unregister(&kv, &self.cancel_registrations(delivery, run)).await;
        }
    }
}
