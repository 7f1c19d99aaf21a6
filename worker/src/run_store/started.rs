//! When a run first started (`F.<event-key>.t`), for its finish timeout.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Backend, Lifetime, RunStore, RunStoreError, store_error};

#[derive(Debug, Serialize, Deserialize)]
struct Started {
    started_ms: u64,
}

impl RunStore {
    /// The first start of the run whose start record is `key`: `now_ms` if this call is the
    /// first (it creates the record), else the stored time.
    pub(crate) async fn started_at(&self, key: &str, now_ms: u64) -> Result<u64, RunStoreError> {
        let value = Bytes::from(
            serde_json::to_vec(&Started { started_ms: now_ms })
                .map_err(store_error("encode", key))?,
        );
        let kv = match &self.backend {
            Backend::Bucket(bucket) => &bucket.kv,
            Backend::Memory(map) => {
                let mut map = map.lock();
                let stored = map.entry(key.to_owned()).or_insert(value);
                return Ok(
                    serde_json::from_slice::<Started>(stored).map_or(now_ms, |s| s.started_ms)
                );
            }
        };
        let created = match self.ttl_seconds(Lifetime::Retention) {
            Some(ttl) => {
                kv.create_with_ttl(key, value, Duration::from_secs(ttl))
                    .await
            }
            None => kv.create(key, value).await,
        };
        match created {
            Ok(_) => Ok(now_ms),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                let stored = kv.get(key).await.map_err(store_error("read", key))?;
                Ok(stored
                    .and_then(|bytes| serde_json::from_slice::<Started>(&bytes).ok())
                    .map_or(now_ms, |s| s.started_ms))
            }
            Err(error) => Err(store_error("create", key)(error)),
        }
    }
}
