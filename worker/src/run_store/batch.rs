//! Writes that land together or not at all: an atomic batch (nats-server 2.12+,
//! `allow_atomic` on the runs bucket), each write conditional on its key's last sequence.

use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;

use super::{Backend, RunStore, RunStoreError, store_error};

/// One write of an atomic batch.
#[derive(Debug, Clone)]
pub(crate) struct Write<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: Bytes,
    /// The key's last sequence the write expects (0: the key must not exist).
    pub(crate) expected: u64,
    /// How long the record lives (`Nats-TTL`), where the bucket has per-record TTLs.
    pub(crate) ttl: Option<Duration>,
}

/// Why an atomic batch was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BatchError {
    /// A key's last sequence was not the one expected: another writer came first.
    #[error("another writer changed a key first")]
    Conflict,
    /// The server refused the batch or could not be reached.
    #[error(transparent)]
    Failed(#[from] RunStoreError),
}

/// The error code of `wrong last sequence`.
const WRONG_LAST_SEQUENCE: u64 = 10071;

impl RunStore {
    /// A key's last message on the bucket's leader: its sequence (for a conditional write)
    /// and its value (`None` when deleted); `None` when the key has no message.
    pub(crate) async fn read_versioned(
        &self,
        key: &str,
    ) -> Result<Option<(u64, Option<Bytes>)>, RunStoreError> {
        let Backend::Bucket(bucket) = &self.backend else {
            return Err(store_error("read", key)(
                "flow control needs the runs bucket",
            ));
        };
        let subject = format!("{}{key}", bucket.kv.prefix);
        match bucket
            .kv
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => {
                let deleted = message
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() != "PUT");
                Ok(Some((
                    message.sequence,
                    (!deleted).then_some(message.payload),
                )))
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(store_error("read", key)(error)),
        }
    }

    /// Stores `writes` in one atomic batch: all of them, or none when a key's last sequence
    /// is not the expected one ([`BatchError::Conflict`]) or the batch fails.
    /// Returns the stream sequence of the last write.
    pub(crate) async fn write_atomically(&self, writes: &[Write<'_>]) -> Result<u64, BatchError> {
        let Backend::Bucket(bucket) = &self.backend else {
            return Err(
                store_error("write", "a batch")("flow control needs the runs bucket").into(),
            );
        };
        let Some(last) = writes.len().checked_sub(1) else {
            return Ok(0);
        };
        let mut sequence = 0;
        let client = bucket.js.client();
        let prefix = bucket.kv.put_prefix.as_ref().unwrap_or(&bucket.kv.prefix);
        let batch_id = uuid::Uuid::new_v4().simple().to_string();
        for (index, write) in writes.iter().enumerate() {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (index + 1).to_string().as_str());
            if index == last {
                headers.insert("Nats-Batch-Commit", "1");
            }
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                write.expected.to_string().as_str(),
            );
            if self.ttl
                && let Some(ttl) = write.ttl
            {
                headers.insert(
                    herald::protocol::header::NATS_TTL,
                    ttl.as_secs().max(1).to_string().as_str(),
                );
            }
            let subject = format!("{prefix}{}", write.key);
            let reply = client
                .request_with_headers(subject, headers, write.value.clone())
                .await
                .map_err(store_error("write", write.key))?;
            if let Some(code) = error_code(&reply.payload) {
                return Err(if code.0 == WRONG_LAST_SEQUENCE {
                    BatchError::Conflict
                } else {
                    store_error("write", write.key)(format!(
                        "the server refused the atomic batch: {} (run `herald provision` for allow_atomic on the runs bucket; nats-server 2.12+)",
                        code.1
                    ))
                    .into()
                });
            }
            if index == last {
                sequence = serde_json::from_slice::<serde_json::Value>(&reply.payload)
                    .ok()
                    .and_then(|ack| ack.get("seq").and_then(serde_json::Value::as_u64))
                    .unwrap_or(0);
            }
        }
        Ok(sequence)
    }
}

/// The error code and description of an API reply, if it is an error.
fn error_code(payload: &[u8]) -> Option<(u64, String)> {
    if payload.is_empty() {
        return None;
    }
    let reply: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let error = reply.get("error")?;
    Some((
        error.get("err_code").and_then(|c| c.as_u64()).unwrap_or(0),
        error
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or("unknown error")
            .to_owned(),
    ))
}

impl RunStore {
    /// Deletes `key` if its last sequence is still `sequence` (a slot's lease): a delete
    /// marker that itself expires after a second, so the key is soon as if never written.
    /// False when the key changed meanwhile.
    pub(crate) async fn delete_if(&self, key: &str, sequence: u64) -> Result<bool, RunStoreError> {
        let Backend::Bucket(bucket) = &self.backend else {
            return Ok(false);
        };
        let prefix = bucket.kv.put_prefix.as_ref().unwrap_or(&bucket.kv.prefix);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("KV-Operation", "DEL");
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            sequence.to_string().as_str(),
        );
        if self.ttl {
            headers.insert(herald::protocol::header::NATS_TTL, "1");
        }
        let sent = bucket
            .js
            .publish_with_headers(format!("{prefix}{key}"), headers, Bytes::new())
            .await
            .map_err(store_error("delete", key))?
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(error)
                if error.kind()
                    == async_nats::jetstream::context::PublishErrorKind::WrongLastSequence =>
            {
                Ok(false)
            }
            Err(error) => Err(store_error("delete", key)(error)),
        }
    }
}

impl RunStore {
    /// Stores `value` at `key` for `ttl` (where the bucket has per-record TTLs).
    pub(crate) async fn put_for(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), RunStoreError> {
        let Backend::Bucket(bucket) = &self.backend else {
            return Err(store_error("write", key)(
                "flow control needs the runs bucket",
            ));
        };
        let prefix = bucket.kv.put_prefix.as_ref().unwrap_or(&bucket.kv.prefix);
        let mut headers = async_nats::HeaderMap::new();
        if self.ttl {
            headers.insert(
                herald::protocol::header::NATS_TTL,
                ttl.as_secs().max(1).to_string().as_str(),
            );
        }
        bucket
            .js
            .publish_with_headers(format!("{prefix}{key}"), headers, value)
            .await
            .map_err(store_error("write", key))?
            .await
            .map_err(store_error("write", key))?;
        Ok(())
    }

    /// Deletes `key` with a marker that expires after a second.
    pub(crate) async fn remove(&self, key: &str) -> Result<(), RunStoreError> {
        if let Some((sequence, Some(_))) = self.read_versioned(key).await? {
            self.delete_if(key, sequence).await?;
        }
        Ok(())
    }
}
