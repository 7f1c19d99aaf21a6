//! Runs parked for a concurrency slot (protocol section 17): each writes an entry with its
//! score; a freed slot wakes the best-scored one, and with a [priority] a run that finds a
//! slot while a better one is parked hands the slot over.
//!
//! [priority]: crate::FunctionBuilder::priority

use std::time::Duration;

use herald::protocol::{header, runs};
use serde::{Deserialize, Serialize};

use super::FunctionLoop;
use super::concurrency::Full;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::flow::concurrency::{
    FALLBACK, SLOT_WAKE, parked_key, parked_pattern, score_ms, wake_order,
};
use crate::flow::metrics::Held;
use crate::run_store::{RunStore, RunStoreError};
use crate::steps::RunState;

/// The most better-scored parked runs a run with a free slot tries to wake when it hands the
/// slot over (their continuations may be in flight already).
const HANDOVER_TRIES: usize = 4;

/// A parked run: `{"function", "event_key", "wake", "since_ms", "score_ms"}`.
#[derive(Debug, Serialize, Deserialize)]
struct Parked {
    function: String,
    event_key: String,
    wake: String,
    since_ms: u64,
    /// `since_ms` less the priority factor; absent in entries of workers before priority.
    #[serde(default)]
    score_ms: Option<i64>,
}

impl Parked {
    /// The run's place in the wake order: (score, since, entry key).
    fn rank<'a>(&self, key: &'a str) -> (i64, u64, &'a str) {
        (
            self.score_ms.unwrap_or(self.since_ms as i64),
            self.since_ms,
            key,
        )
    }
}

/// A key's parked entries that decode, with their entry keys.
async fn entries(
    store: &RunStore,
    scope: &str,
    token: &str,
) -> Result<Vec<(String, Parked)>, RunStoreError> {
    let pattern = parked_pattern(scope, token);
    let parked = store.get_many(&[&pattern], Duration::from_secs(2)).await?;
    Ok(parked
        .into_iter()
        .filter_map(|(key, v)| Some((key, serde_json::from_slice(&v).ok()?)))
        .collect())
}

impl FunctionLoop {
    /// Early-fires the continuation of the key's best parked run that is still waiting.
    pub(super) async fn wake_parked(&self, store: &RunStore, scope: &str, token: &str) {
        let Ok(mut parked) = entries(store, scope, token).await else {
            return;
        };
        wake_order(&mut parked, |(key, p)| p.rank(key));
        for (_, waiting) in parked {
            if self.fire(&waiting).await {
                return;
            }
        }
    }

    async fn fire(&self, waiting: &Parked) -> bool {
        let fired = crate::cancel::fire_now(
            &self.shared.client,
            &waiting.function,
            &waiting.event_key,
            None,
            Some(&waiting.wake),
        )
        .await;
        let woken = matches!(fired, Ok(true));
        if woken {
            self.flow_metrics()
                .woken(&waiting.function, Held::Concurrency);
        }
        woken
    }

    /// The flow-control instruments.
    pub(super) fn flow_metrics(&self) -> &crate::flow::metrics::FlowMetrics {
        &self.shared.metrics.flow
    }

    /// With a priority: the limit whose slot the run just took while a better-scored run
    /// of the key is parked, after waking that run to take it (`None`: the run keeps its
    /// slots). A better run that cannot be woken is on its way (woken already) or, left by
    /// a crashed worker, holds the key back until its entry's TTL (30 s) ends.
    pub(super) async fn yield_slot(&self, delivery: &Delivery, run: &RunState) -> Option<Full<'_>> {
        let priority = self.function.settings.priority.as_ref()?;
        let factor = priority.factor(&delivery.data);
        let event_key = runs::event_key(delivery.event_id());
        let held: Vec<(String, String)> = run
            .slots
            .lock()
            .iter()
            .map(|s| (s.scope.clone(), s.token.clone()))
            .collect();
        for (scope, token) in held {
            let Ok(mut parked) = entries(&run.store, &scope, &token).await else {
                continue;
            };
            let own = parked_key(&scope, &token, &self.function.id, &event_key);
            let now = crate::steps::now_ms();
            let own_rank = match parked.iter().find(|(key, _)| *key == own) {
                Some((key, entry)) => entry.rank(key),
                None => (score_ms(now, factor), now, own.as_str()),
            };
            let own_rank = (own_rank.0, own_rank.1, own_rank.2.to_owned());
            parked.retain(|(key, p)| {
                let (score, since, key) = p.rank(key);
                (score, since, key) < (own_rank.0, own_rank.1, own_rank.2.as_str())
            });
            if parked.is_empty() {
                continue;
            }
            // A better run whose continuation is not pending any more is on its way to the
            // slot (woken a moment ago): it gets the slot all the same.
            wake_order(&mut parked, |(key, p)| p.rank(key));
            for (_, better) in parked.iter().take(HANDOVER_TRIES) {
                if self.fire(better).await {
                    break;
                }
            }
            let limit = self
                .function
                .settings
                .concurrency_limits
                .iter()
                .find(|l| l.scope(&self.function.id) == scope)?;
            log!(delivery, debug, key = %token, "a better parked run takes the slot; parked");
            return Some(Full {
                limit,
                scope,
                token,
            });
        }
        None
    }

    /// Parks the run until a slot of `full`'s key frees (or the fallback fires); with
    /// `retry`, takes the slots after all if one freed while the entry was written.
    pub(super) async fn park(
        &self,
        delivery: &Delivery,
        run: &RunState,
        full: &Full<'_>,
        retry: bool,
    ) -> Result<Option<Outcome>, RunStoreError> {
        let event_key = runs::event_key(delivery.event_id());
        let own = parked_key(&full.scope, &full.token, &self.function.id, &event_key);
        let pattern = parked_pattern(&full.scope, &full.token);
        // Its own entry only (a run parked before keeps its place), not the key's queue.
        let earlier = run.store.get_many(&[&own], Duration::from_secs(2)).await?;
        let since_ms = earlier
            .get(&own)
            .and_then(|v| serde_json::from_slice::<Parked>(v).ok())
            .map_or_else(crate::steps::now_ms, |p| p.since_ms);
        let factor = self
            .function
            .settings
            .priority
            .as_ref()
            .map_or(0, |p| p.factor(&delivery.data));
        let wake = delivery
            .header(header::WAKE)
            .unwrap_or(SLOT_WAKE)
            .to_owned();
        let entry = serde_json::to_vec(&Parked {
            function: self.function.id.to_string(),
            event_key,
            wake: wake.clone(),
            since_ms,
            score_ms: Some(score_ms(since_ms, factor)),
        })
        .unwrap_or_default();
        let revision = run.store.put_for(&own, entry.into(), 3 * FALLBACK).await?;
        // The cap: the entries read after writing its own are the runs parked before it and
        // those parking at once, and the oldest `max` stay.
        if let Some(max) = full.limit.max_parked
            && !earlier.contains_key(&own)
        {
            let parked = run
                .store
                .get_many_revised(&[&pattern], Duration::from_secs(2))
                .await?;
            let rank = parked
                .iter()
                .filter(|(key, _)| **key != own)
                .filter(|(_, (value, written))| {
                    let since = serde_json::from_slice::<Parked>(value).map_or(0, |p| p.since_ms);
                    parked_before((since, *written), (since_ms, revision))
                })
                .count();
            if rank >= max as usize {
                let _ = run.store.remove(&own).await;
                return Ok(Some(Outcome::QueueFull(format!(
                    "{rank} runs of the key are parked waiting for a concurrency slot (max_parked {max})"
                ))));
            }
        }
        // A slot freed between the first try and the entry would wake no one: try once more.
        // The freed slot's releaser has woken the key's best parked run already; with a
        // priority, a better-scored one than this run gets the slot (the run stays parked).
        if retry {
            if self.try_slots(delivery, run).await?.is_none() {
                if self.yield_slot(delivery, run).await.is_none() {
                    self.unpark(delivery, run, true).await;
                    return Ok(None);
                }
                self.give_back_quietly(run).await;
            } else {
                self.give_back(run).await;
            }
        }
        log!(delivery, debug, key = %full.token, "no concurrency slot free; parked");
        self.flow_metrics()
            .parked(&self.function.id, Held::Concurrency);
        let jitter = (crate::backoff::random_unit() * 2000.0) as u64;
        Ok(Some(Outcome::Delayed {
            at_ms: crate::steps::now_ms() + FALLBACK.as_millis() as u64 + jitter,
            wake,
        }))
    }

    /// Removes the run's parked entries once it holds its slots.
    /// (Only a continuation can have parked before, unless `parked_now`.)
    pub(super) async fn unpark(&self, delivery: &Delivery, run: &RunState, parked_now: bool) {
        if !parked_now && delivery.header(header::CONTINUATION).is_none() {
            return;
        }
        // A run woken from its park for a slot (not one that found a slot on its second try).
        if delivery.header(header::WAKE) == Some(SLOT_WAKE) {
            self.flow_metrics().started_after_wait(
                &self.function.id,
                Held::Concurrency,
                delivery.meta.time(),
            );
        }
        let event_key = runs::event_key(delivery.event_id());
        let keys: Vec<(String, String)> = run
            .slots
            .lock()
            .iter()
            .map(|s| (s.scope.clone(), s.token.clone()))
            .collect();
        for (scope, token) in keys {
            let _ = run
                .store
                .remove(&parked_key(&scope, &token, &self.function.id, &event_key))
                .await;
        }
    }
}

/// Whether an entry `(since_ms, revision)` parked before another: the older `since_ms`,
/// and of two with the same millisecond the one written first. Not the entry key (the
/// event's): a run that read the key's entries before a run of the same millisecond wrote
/// its own counted without it, and must stay ahead of it.
fn parked_before(entry: (u64, u64), other: (u64, u64)) -> bool {
    entry < other
}

#[cfg(test)]
mod tests {
    use super::parked_before;

    #[test]
    fn the_older_or_first_written_entry_parked_before() {
        assert!(parked_before((10, 9), (11, 2)));
        assert!(!parked_before((11, 2), (10, 9)));
        // The same millisecond: the order the entries were written, whatever their keys.
        assert!(parked_before((10, 3), (10, 4)));
        assert!(!parked_before((10, 4), (10, 3)));
    }
}
