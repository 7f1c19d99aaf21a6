//! Concurrency limits per key (protocol section 17): an attempt takes a slot of each of its
//! function's limits before it runs and gives them back when it is settled; a run that
//! finds no slot parks (`parked.rs`), and a freed slot wakes the key's best parked run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::Delivery;
use crate::flow::concurrency::{ConcurrencyLimit, LEASE, RENEW, slot_key};
use crate::flow::debounce::key_token;
use crate::run_store::{RunStore, RunStoreError, Write, WriteError};
use crate::steps::RunState;

/// A slot lease: `{"run": "F.<event-key>"}`.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    run: String,
}

/// A slot an attempt holds, refreshed in the background until given back.
#[derive(Debug)]
pub(crate) struct HeldSlot {
    key: String,
    /// The scope and key token, to wake the key's parked runs when it is given back.
    pub(super) scope: String,
    pub(super) token: String,
    /// The lease's current sequence in the bucket's stream.
    sequence: Arc<AtomicU64>,
    refresher: tokio::task::AbortHandle,
}

/// A limit whose key has no slot free (or whose slot goes to a better parked run): its
/// scope and key token.
pub(super) struct Full<'a> {
    pub(super) limit: &'a ConcurrencyLimit,
    pub(super) scope: String,
    pub(super) token: String,
}

impl FunctionLoop {
    /// A slot of each of the function's concurrency limits, or the run parks; `Some`
    /// settles the delivery.
    pub(super) async fn take_slots(&self, delivery: &Delivery, run: &RunState) -> Option<Outcome> {
        let taken = self
            .keep_alive(delivery, self.try_slots(delivery, run))
            .await;
        let full = match taken {
            Ok(None) => match self
                .keep_alive(delivery, self.yield_slot(delivery, run))
                .await
            {
                // A better parked run was woken to take the slot: this one parks.
                Some(full) => {
                    self.give_back_quietly(run).await;
                    let park = self.park(delivery, run, &full, false);
                    return match self.keep_alive(delivery, park).await {
                        Ok(outcome) => outcome,
                        Err(error) => Some(Outcome::StoreUnavailable(format!(
                            "the run cannot be parked for a concurrency slot: {error}"
                        ))),
                    };
                }
                None => {
                    self.unpark(delivery, run, false).await;
                    return None;
                }
            },
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
        let park = self.park(delivery, run, &full, true);
        match self.keep_alive(delivery, park).await {
            Ok(outcome) => outcome,
            Err(error) => Some(Outcome::StoreUnavailable(format!(
                "the run cannot be parked for a concurrency slot: {error}"
            ))),
        }
    }

    /// Takes a slot of every limit, in order; the first limit without one, if any.
    pub(super) async fn try_slots<'a>(
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
                match run.store.write_if(&write).await {
                    Ok(sequence) => {
                        self.hold(run, key, scope, token, sequence);
                        return Ok(true);
                    }
                    Err(WriteError::Conflict) => match run.store.read_versioned(key).await? {
                        Some((marker, None)) if marker != expected => expected = marker,
                        _ => break,
                    },
                    Err(WriteError::Failed(error)) => return Err(error),
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

    /// Gives back every slot the run holds, then wakes the best parked run of each key.
    pub(super) async fn give_back(&self, run: &RunState) {
        self.release(run, true).await;
    }

    /// Gives back every slot the run holds, waking no one (a run handing its slot to a
    /// parked run it woke itself).
    pub(super) async fn give_back_quietly(&self, run: &RunState) {
        self.release(run, false).await;
    }

    async fn release(&self, run: &RunState, wake: bool) {
        let held: Vec<HeldSlot> = std::mem::take(&mut *run.slots.lock());
        for slot in held {
            slot.refresher.abort();
            let sequence = slot.sequence.load(Ordering::SeqCst);
            if let Err(error) = run.store.delete_if(&slot.key, sequence).await {
                // Its lease runs out by itself.
                tracing::warn!(function = %self.function.id, slot = %slot.key, %error, "a concurrency slot cannot be given back; it frees when its lease ends");
            }
            if wake {
                self.wake_parked(&run.store, &slot.scope, &slot.token).await;
            }
        }
    }
}

/// Renews a lease every [`RENEW`] while its attempt runs.
async fn refresh(store: RunStore, key: String, run_key: String, sequence: Arc<AtomicU64>) {
    let lease = serde_json::to_vec(&Lease { run: run_key }).unwrap_or_default();
    loop {
        tokio::time::sleep(RENEW).await;
        let write = Write {
            key: &key,
            value: lease.clone().into(),
            expected: sequence.load(Ordering::SeqCst),
            ttl: Some(LEASE),
        };
        match store.write_if(&write).await {
            Ok(renewed) => sequence.store(renewed, Ordering::SeqCst),
            Err(WriteError::Conflict) => {
                tracing::warn!(slot = %key, "a concurrency slot's lease was lost (the worker paused past it); the limit may be exceeded by one");
                return;
            }
            Err(WriteError::Failed(error)) => {
                tracing::debug!(slot = %key, %error, "a concurrency slot's lease cannot be renewed now; trying again");
            }
        }
    }
}
