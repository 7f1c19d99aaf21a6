//! Run timeouts (protocol section 10): `start` (queued too long before the run first
//! started) and `finish` (running too long since its first start, sleeps and waits included).

use std::sync::atomic::Ordering;

use herald::protocol::header;

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::Delivery;
use crate::steps::RunState;

impl FunctionLoop {
    /// `Some` cancels the run: it waited too long to start, or has run too long.
    pub(super) async fn timed_out(&self, delivery: &Delivery, run: &RunState) -> Option<Outcome> {
        let settings = &self.function.settings;
        let now = crate::steps::now_ms();
        if let Some(start) = settings.start_timeout
            && delivery.delivered == 1
            && delivery.header(header::CONTINUATION).is_none()
            && delivery.subject().starts_with(&self.shared.events_prefix)
            && let Some(stored_ms) = delivery.published_ms()
        {
            let waited = now.saturating_sub(stored_ms);
            if waited > start.as_millis() as u64 {
                return Some(Outcome::Cancelled(format!(
                    "start timeout: the event waited {waited} ms to start, over {start:?}"
                )));
            }
        }
        let finish = settings.finish_timeout?;
        let key = format!("{}.t", run.run_key);
        let started = crate::run_store::until(run.deadline(), || run.store.started_at(&key, now));
        match self.keep_alive(delivery, started).await {
            Ok(started) => {
                let by = started + finish.as_millis() as u64;
                run.finish_by.store(by, Ordering::Relaxed);
                (now >= by).then(|| {
                    Outcome::Cancelled(format!(
                        "finish timeout: the run started {} ms ago, over {finish:?}",
                        now - started
                    ))
                })
            }
            Err(error) => Some(Outcome::StoreUnavailable(error.to_string())),
        }
    }
}
