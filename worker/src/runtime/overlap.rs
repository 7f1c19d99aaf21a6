//! Cron ticks that would overlap (protocol section 8): with [`Overlap::Skip`] a tick runs
//! only while it holds its trigger's lock in the runs bucket (`F.cron-<cron-id>.lock`); a
//! tick that finds another tick's run still going is recorded `skipped`.

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::function::Overlap;
use crate::run_store::Locked;
use crate::steps::RunState;

impl FunctionLoop {
    /// The lock of the tick's trigger, when ticks of this function must not overlap.
    fn tick_lock(&self, delivery: &Delivery) -> Option<String> {
        if self.function.settings.overlap != Overlap::Skip {
            return None;
        }
        let (cron_id, _) = delivery.headers().and_then(crate::cron::tick_of)?;
        Some(crate::cron::lock_key(&self.function.id, cron_id))
    }

    /// Takes the trigger's lock for this tick; `Some` settles the delivery (skipped, or the
    /// store cannot be read).
    pub(super) async fn overlapping_tick(
        &self,
        delivery: &Delivery,
        run: &RunState,
    ) -> Option<Outcome> {
        let key = self.tick_lock(delivery)?;
        let take = crate::run_store::until(run.deadline(), || run.store.lock(&key, &run.run_key));
        match self.keep_alive(delivery, take).await {
            Ok(Locked::Held) => None,
            Ok(Locked::Busy(holder)) => Some(Outcome::Skipped(format!(
                "overlap: the previous tick's run {holder} still runs"
            ))),
            Err(error) => Some(Outcome::StoreUnavailable(error.to_string())),
        }
    }

    /// Releases the trigger's lock once the tick's run is over (finished or dead-lettered).
    pub(super) async fn release_tick(&self, delivery: &Delivery, run: Option<&RunState>) {
        let (Some(key), Some(run)) = (self.tick_lock(delivery), run) else {
            return;
        };
        let release =
            crate::run_store::until(run.deadline(), || run.store.unlock(&key, &run.run_key));
        if let Err(error) = self.keep_alive(delivery, release).await {
            // The next tick takes it over once it sees this run recorded.
            log!(delivery, warn, %error, "the cron tick's lock cannot be released");
        }
    }
}
