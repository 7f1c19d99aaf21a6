//! Concurrency limits per key (protocol section 17): an attempt takes a slot of each of its
//! function's limits before it runs and gives them back when it is settled; a run that
//! finds no slot parks, and a freed slot wakes the key's oldest parked run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald::protocol::{header, runs};
use serde::{Deserialize, Serialize};

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::flow::concurrency::{
    ConcurrencyLimit, FALLBACK, LEASE, SLOT_WAKE, parked_key, parked_pattern, slot_key,
};
use crate::flow::debounce::key_token;
use crate::run_store::{BatchError, RunStore, RunStoreError, Write};
use crate::steps::RunState;

/// A slot lease: `{"run": "F.<event-key>"}`.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    run: String,
}

/// A parked run: `{"function", "event_key", "wake", "since_ms"}`.
#[derive(Debug, Serialize, Deserialize)]
struct Parked {
    function: String,
    event_key: String,
    wake: String,
    since_ms: u64,
}

/// A slot an attempt holds, refreshed in the background until given back.
#[derive(Debug)]
pub(crate) struct HeldSlot {
    key: String,
    /// The scope and key token, to wake the key's parked runs when it is given back.
    scope: String,
    token: String,
    /// The lease's current sequence in the bucket's stream.
    sequence: Arc<AtomicU64>,
    refresher: tokio::task::AbortHandle,
}

/// A limit whose key has no slot free: its scope and key token.
struct Full<'a> {
    limit: &'a ConcurrencyLimit,
    scope: String,
    token: String,
}

impl FunctionLoop {
    /// A slot of each of the function's concurrency limits, or the run parks; `Some`
    /// settles the delivery.
    pub(super) async fn take_slots(&self, delivery: &Delivery, run: &RunState) -> Option<Outcome> {
        let taken = self
            .keep_alive(delivery, self.try_slots(delivery, run))
            .await;
        let full = match taken {
            Ok(None) => {
                self.unpark(delivery, run, false).await;
                return None;
            }
            Ok(Some(full)) => full,
            Err(error) => {
                self.give_back(run).await;
                return Some(Outcome::StoreUnavailable(format!(
                    "a concurrency slot cannot be taken: {error}"
                )));
            }
        };
        // Whatever was taken goes back: a parked run holds nothing.
        self.give_back(run).await;
        let park = self.park(delivery, run, &full);
        match self.keep_alive(delivery, park).await {
            Ok(outcome) => outcome,
            Err(error) => Some(Outcome::StoreUnavailable(format!(
                "the run cannot be parked for a concurrency slot: {error}"
            ))),
        }
    }

    /// Takes a slot of every limit, in order; the first limit without one, if any.
    async fn try_slots<'a>(
        &'a self,
        delivery: &Delivery,
        run: &RunState,
    ) -> Result<Option<Full<'a>>, RunStoreError> {
        for limit in &self.function.settings.concurrency_limits {
            let scope = limit.scope(&self.function.id);
            let token = match &limit.key {
                // An event that does not decode is dead-lettered by the handler's path.
                Some(key_of) => match key_of(&delivery.data) {
                    Ok(key) => key_token(&key),
                    Err(_) => return Ok(None),
                },
                None => "_".to_owned(),
            };
            if !self.take_slot(run, limit, &scope, &token).await? {
                return Ok(Some(Full {
                    limit,
                    scope,
                    token,
                }));
            }
        }
        Ok(None)
    }

    /// Takes a free slot of the key (or this run's own lease, left by a crashed attempt).
    async fn take_slot(
        &self,
        run: &RunState,
        limit: &ConcurrencyLimit,
        scope: &str,
        token: &str,
    ) -> Result<bool, RunStoreError> {
        let keys: Vec<String> = (0..limit.limit)
            .map(|i| slot_key(scope, token, i))
            .collect();
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let held = run.store.get_many(&names, Duration::from_secs(2)).await?;
        let lease = serde_json::to_vec(&Lease {
            run: run.run_key.clone(),
        })
        .unwrap_or_default();
        for (key, value) in &held {
            let own = serde_json::from_slice::<Lease>(value).is_ok_and(|l| l.run == run.run_key);
            if own && let Some((sequence, Some(_))) = run.store.read_versioned(key).await? {
                self.hold(run, key, scope, token, sequence);
                return Ok(true);
            }
        }
        for key in keys.iter().filter(|k| !held.contains_key(k.as_str())) {
            // Free, or given back a moment ago (a delete marker, which the lease replaces).
            let mut expected = 0;
            for _ in 0..2 {
                let write = Write {
                    key,
                    value: lease.clone().into(),
                    expected,
                    ttl: Some(LEASE),
                };
                match run.store.write_atomically(&[write]).await {
                    Ok(sequence) => {
                        self.hold(run, key, scope, token, sequence);
                        return Ok(true);
                    }
                    Err(BatchError::Conflict) => match run.store.read_versioned(key).await? {
                        Some((marker, None)) if marker != expected => expected = marker,
                        _ => break,
                    },
                    Err(BatchError::Failed(error)) => return Err(error),
                }
            }
        }
        Ok(false)
    }

    /// Records a slot as held by the run and refreshes its lease until given back.
    fn hold(&self, run: &RunState, key: &str, scope: &str, token: &str, sequence: u64) {
        let sequence = Arc::new(AtomicU64::new(sequence));
        let refresher = tokio::spawn(refresh(
            run.store.clone(),
            key.to_owned(),
            run.run_key.clone(),
            Arc::clone(&sequence),
        ))
        .abort_handle();
        run.slots.lock().push(HeldSlot {
            key: key.to_owned(),
            scope: scope.to_owned(),
            token: token.to_owned(),
            sequence,
            refresher,
        });
    }

    /// Gives back every slot the run holds, then wakes the oldest parked run of each key.
    pub(super) async fn give_back(&self, run: &RunState) {
        let held: Vec<HeldSlot> = std::mem::take(&mut *run.slots.lock());
        for slot in held {
            slot.refresher.abort();
            let sequence = slot.sequence.load(Ordering::SeqCst);
            if let Err(error) = run.store.delete_if(&slot.key, sequence).await {
                // Its lease runs out by itself.
                tracing::warn!(function = %self.function.id, slot = %slot.key, %error, "a concurrency slot cannot be given back; it frees when its lease ends");
            }
            self.wake_parked(&run.store, &slot.scope, &slot.token).await;
        }
    }

    /// Fires the continuation of the key's oldest parked run that is still waiting.
    async fn wake_parked(&self, store: &RunStore, scope: &str, token: &str) {
        let pattern = parked_pattern(scope, token);
        let Ok(parked) = store.get_many(&[&pattern], Duration::from_secs(2)).await else {
            return;
        };
        let mut parked: Vec<Parked> = parked
            .values()
            .filter_map(|v| serde_json::from_slice(v).ok())
            .collect();
        parked.sort_by_key(|p| p.since_ms);
        for waiting in parked {
            let fired = crate::cancel::fire_now(
                &self.shared.client,
                &waiting.function,
                &waiting.event_key,
                None,
                Some(&waiting.wake),
            )
            .await;
            if matches!(fired, Ok(true)) {
                return;
            }
        }
    }

    /// Parks the run until a slot of `full`'s key frees (or the fallback fires).
    async fn park(
        &self,
        delivery: &Delivery,
        run: &RunState,
        full: &Full<'_>,
    ) -> Result<Option<Outcome>, RunStoreError> {
        let event_key = runs::event_key(delivery.event_id());
        let own = parked_key(&full.scope, &full.token, &self.function.id, &event_key);
        let pattern = parked_pattern(&full.scope, &full.token);
        let parked = run
            .store
            .get_many(&[&pattern], Duration::from_secs(2))
            .await?;
        let since_ms = parked
            .get(&own)
            .and_then(|v| serde_json::from_slice::<Parked>(v).ok())
            .map_or_else(crate::steps::now_ms, |p| p.since_ms);
        let wake = delivery
            .header(header::WAKE)
            .unwrap_or(SLOT_WAKE)
            .to_owned();
        let entry = serde_json::to_vec(&Parked {
            function: self.function.id.to_string(),
            event_key,
            wake: wake.clone(),
            since_ms,
        })
        .unwrap_or_default();
        run.store.put_for(&own, entry.into(), 3 * FALLBACK).await?;
        // The cap: runs parking at once all count each other, and the oldest `max` stay.
        if let Some(max) = full.limit.max_parked
            && !parked.contains_key(&own)
        {
            let parked = run
                .store
                .get_many(&[&pattern], Duration::from_secs(2))
                .await?;
            let mut order: Vec<(u64, &String)> = parked
                .iter()
                .map(|(key, v)| {
                    let since = serde_json::from_slice::<Parked>(v).map_or(0, |p| p.since_ms);
                    (since, key)
                })
                .collect();
            order.sort();
            let rank = order.iter().position(|(_, key)| **key == own).unwrap_or(0);
            if rank >= max as usize {
                let _ = run.store.remove(&own).await;
                return Ok(Some(Outcome::QueueFull(format!(
                    "{rank} runs of the key are parked waiting for a concurrency slot (max_parked {max})"
                ))));
            }
        }
        // A slot freed between the first try and the entry would wake no one: try once more.
        if self.try_slots(delivery, run).await?.is_none() {
            self.unpark(delivery, run, true).await;
            return Ok(None);
        }
        self.give_back(run).await;
        log!(delivery, debug, key = %full.token, "no concurrency slot free; parked");
        let jitter = (crate::backoff::random_unit() * 2000.0) as u64;
        Ok(Some(Outcome::Delayed {
            at_ms: crate::steps::now_ms() + FALLBACK.as_millis() as u64 + jitter,
            wake,
        }))
    }

    /// Removes the run's parked entries once it holds its slots.
    /// (Only a continuation can have parked before, unless `parked_now`.)
    async fn unpark(&self, delivery: &Delivery, run: &RunState, parked_now: bool) {
        if !parked_now && delivery.header(header::CONTINUATION).is_none() {
            return;
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

/// Renews a lease every third of its life while its attempt runs.
async fn refresh(store: RunStore, key: String, run_key: String, sequence: Arc<AtomicU64>) {
    let lease = serde_json::to_vec(&Lease { run: run_key }).unwrap_or_default();
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let write = Write {
            key: &key,
            value: lease.clone().into(),
            expected: sequence.load(Ordering::SeqCst),
            ttl: Some(LEASE),
        };
        match store.write_atomically(&[write]).await {
            Ok(renewed) => sequence.store(renewed, Ordering::SeqCst),
            Err(BatchError::Conflict) => {
                tracing::warn!(slot = %key, "a concurrency slot's lease was lost (the worker paused past it); the limit may be exceeded by one");
                return;
            }
            Err(BatchError::Failed(error)) => {
                tracing::debug!(slot = %key, %error, "a concurrency slot's lease cannot be renewed now; trying again");
            }
        }
    }
}
