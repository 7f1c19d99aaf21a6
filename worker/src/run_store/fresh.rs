//! Reading a record from the bucket's leader: for the reads that must see a write another
//! worker made just before it woke this one.
//!
//! A bucket's ordinary reads are direct gets, which any replica may answer, a follower a
//! little behind included: a run woken because its wait was resolved could read the
//! outcome as missing, wait again, and sleep until its timeout.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use serde::Deserialize;

use super::{Backend, RunStore, RunStoreError, store_error};

/// The `KV-Operation` header of a delete or purge marker.
const KV_OPERATION: &str = "KV-Operation";

/// Reads `key` of `kv` from the bucket's stream leader (`None` when absent or deleted).
pub(crate) async fn leader_get(
    kv: &async_nats::jetstream::kv::Store,
    key: &str,
) -> Result<Option<Bytes>, async_nats::Error> {
    let subject = format!("{}{key}", kv.prefix);
    match kv.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => {
            let deleted = message
                .headers
                .get(KV_OPERATION)
                .is_some_and(|op| op.as_str() != "PUT");
            Ok((!deleted).then_some(message.payload))
        }
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

impl RunStore {
    /// Reads `key` from the bucket's stream leader (`None` when absent or deleted).
    pub(crate) async fn get_from_leader<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<T>, RunStoreError> {
        let bytes = match &self.backend {
            Backend::Memory(map) => map.lock().get(key).cloned(),
            Backend::Bucket(bucket) => leader_get(&bucket.kv, key)
                .await
                .map_err(store_error("read", key))?,
        };
        Ok(bytes
            .filter(|b| !b.is_empty())
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }
}
