//! Singleton functions (protocol section 16): a run takes its key's lock in the runs bucket
//! when it starts and releases it when it ends; an event whose key is held is skipped, or
//! cancels the holder and takes the lock over.

use herald::protocol::header;

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::SingletonMode;
use crate::flow::debounce::key_token;
use crate::flow::limits::singleton_lock;
use crate::run_store::Locked;
use crate::steps::RunState;

/// Takeovers tried again when the lock changed hands in between.
const ROUNDS: usize = 5;

impl FunctionLoop {
    /// The singleton key's lock, when the function has one.
    fn singleton_key(&self, delivery: &Delivery) -> Option<String> {
        let singleton = self.function.settings.singleton.as_ref()?;
        let token = match &singleton.key {
            // An event that does not decode is dead-lettered by the handler's path.
            Some(key_of) => key_token(&key_of(&delivery.data).ok()?),
            None => "_".to_owned(),
        };
        Some(singleton_lock(&self.function.id, &token))
    }

    /// Takes the key's lock for the run; `Some` settles the delivery (skipped, or the store
    /// cannot be reached).
    pub(super) async fn single(&self, delivery: &Delivery, run: &RunState) -> Option<Outcome> {
        // A continuation belongs to a run that holds (or held) the lock already.
        if delivery.header(header::CONTINUATION).is_some() {
            return None;
        }
        let singleton = self.function.settings.singleton.as_ref()?;
        let key = self.singleton_key(delivery)?;
        let take = async {
            for _ in 0..ROUNDS {
                let holder = match crate::run_store::until(run.deadline(), || {
                    run.store.lock(&key, &run.run_key)
                })
                .await?
                {
                    Locked::Held => return Ok(None),
                    Locked::Busy(holder) => holder,
                };
                if singleton.mode == SingletonMode::Skip {
                    self.flow_metrics()
                        .skipped(&self.function.id, crate::flow::metrics::Skip::Singleton);
                    return Ok(Some(Outcome::Skipped(format!(
                        "singleton: run {holder} of the same key is still going"
                    ))));
                }
                let Some(kv) = run.store.kv() else {
                    return Ok(None);
                };
                let event_key = holder.split_once('.').map_or("", |(_, k)| k);
                let reason = format!("singleton: replaced by run {}", run.run_key);
                if let Err(error) = crate::cancel::cancel_key(
                    &self.shared.client,
                    &kv,
                    &self.function.id,
                    event_key,
                    &reason,
                )
                .await
                {
                    log!(delivery, warn, %error, holder, "the singleton's running run cannot be cancelled");
                }
                if run.store.take_over(&key, &run.run_key, &holder).await? {
                    return Ok(None);
                }
            }
            Ok(Some(Outcome::StoreUnavailable(
                "the singleton's lock kept changing hands".to_owned(),
            )))
        };
        match self.keep_alive(delivery, take).await {
            Ok(outcome) => outcome,
            Err::<_, crate::RunStoreError>(error) => Some(Outcome::StoreUnavailable(format!(
                "the singleton's lock cannot be taken: {error}"
            ))),
        }
    }

    /// Releases the key's lock once the run is over (finished, dead-lettered, cancelled).
    pub(super) async fn release_single(&self, delivery: &Delivery, run: Option<&RunState>) {
        let (Some(key), Some(run)) = (self.singleton_key(delivery), run) else {
            return;
        };
        let release =
            crate::run_store::until(run.deadline(), || run.store.unlock(&key, &run.run_key));
        if let Err(error) = self.keep_alive(delivery, release).await {
            // The next run takes it over once it sees this run recorded.
            log!(delivery, warn, %error, "the singleton's lock cannot be released");
        }
    }
}
