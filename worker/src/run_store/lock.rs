//! A lock in the runs bucket: one holder (a run key) at a time, created with KV create and
//! taken over, by compare-and-set on its revision, from a holder whose run has finished.
//! It has no TTL (its holder may sleep for days); a holder that died leaves it to be taken
//! over once that run is recorded finished or dead-lettered.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Backend, RunStore, RunStoreError, store_error};
use crate::steps::{RunRecord, RunStatus};

/// Conflicting writes tried again before reporting the lock as held.
const ROUNDS: usize = 5;

#[derive(Debug, Serialize, Deserialize)]
struct LockValue {
    holder: String,
}

/// What [`RunStore::lock`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The caller holds it (taken now, or already its own).
    Held,
    /// Another run holds it and has not finished.
    Busy(String),
}

impl RunStore {
    /// Takes the lock at `key` for the run `holder`.
    pub(crate) async fn lock(&self, key: &str, holder: &str) -> Result<Locked, RunStoreError> {
        let value = Bytes::from(
            serde_json::to_vec(&LockValue {
                holder: holder.to_owned(),
            })
            .map_err(store_error("encode", key))?,
        );
        let kv = match &self.backend {
            Backend::Bucket(bucket) => &bucket.kv,
            Backend::Memory(map) => {
                let mut map = map.lock();
                let current = map
                    .get(key)
                    .and_then(|v| serde_json::from_slice::<LockValue>(v).ok());
                return Ok(match current {
                    Some(current) if current.holder != holder => Locked::Busy(current.holder),
                    _ => {
                        map.insert(key.to_owned(), value);
                        Locked::Held
                    }
                });
            }
        };
        let mut busy = String::new();
        for _ in 0..ROUNDS {
            let entry = kv.entry(key).await.map_err(store_error("read", key))?;
            let current = entry.as_ref().filter(|e| e.operation == kv::Operation::Put);
            let Some(current) = current else {
                match kv.create(key, value.clone()).await {
                    Ok(_) => return Ok(Locked::Held),
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(error) => return Err(store_error("create", key)(error)),
                }
            };
            let owner = serde_json::from_slice::<LockValue>(&current.value)
                .map(|v| v.holder)
                .unwrap_or_default();
            if owner == holder {
                return Ok(Locked::Held);
            }
            // From the leader: a follower behind could still show a finished run going.
            let finished = match self.get_from_leader::<RunRecord>(&owner).await? {
                Some(record) => {
                    record.status.is_final() || record.status == RunStatus::DeadLettered
                }
                None => owner.is_empty(),
            };
            if !finished {
                return Ok(Locked::Busy(owner));
            }
            match kv.update(key, value.clone(), current.revision).await {
                Ok(_) => return Ok(Locked::Held),
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    busy = owner;
                }
                Err(error) => return Err(store_error("update", key)(error)),
            }
        }
        Ok(Locked::Busy(busy))
    }

    /// Takes the lock at `key` from `from` (whose run is being cancelled) for `holder`;
    /// true when `holder` holds it afterwards.
    pub(crate) async fn take_over(
        &self,
        key: &str,
        holder: &str,
        from: &str,
    ) -> Result<bool, RunStoreError> {
        let Backend::Bucket(bucket) = &self.backend else {
            return Ok(false);
        };
        let kv = &bucket.kv;
        let value = Bytes::from(
            serde_json::to_vec(&LockValue {
                holder: holder.to_owned(),
            })
            .map_err(store_error("encode", key))?,
        );
        let Some(entry) = kv.entry(key).await.map_err(store_error("read", key))? else {
            return Ok(false);
        };
        let owner = serde_json::from_slice::<LockValue>(&entry.value)
            .map(|v| v.holder)
            .unwrap_or_default();
        if entry.operation != kv::Operation::Put || owner != from {
            return Ok(owner == holder);
        }
        match kv.update(key, value, entry.revision).await {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(error) => Err(store_error("update", key)(error)),
        }
    }

    /// Releases the lock at `key` if `holder` holds it.
    pub(crate) async fn unlock(&self, key: &str, holder: &str) -> Result<(), RunStoreError> {
        let kv = match &self.backend {
            Backend::Bucket(bucket) => &bucket.kv,
            Backend::Memory(map) => {
                let mut map = map.lock();
                let mine = map
                    .get(key)
                    .and_then(|v| serde_json::from_slice::<LockValue>(v).ok())
                    .is_some_and(|v| v.holder == holder);
                if mine {
                    map.remove(key);
                }
                return Ok(());
            }
        };
        let Some(entry) = kv.entry(key).await.map_err(store_error("read", key))? else {
            return Ok(());
        };
        let mine = entry.operation == kv::Operation::Put
            && serde_json::from_slice::<LockValue>(&entry.value).is_ok_and(|v| v.holder == holder);
        if mine {
            // Lost to a newer holder in between: theirs now, nothing to release.
            let _ = kv.delete_expect_revision(key, Some(entry.revision)).await;
        }
        Ok(())
    }
}
