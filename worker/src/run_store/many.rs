//! Reading the records of many runs in one request: a direct get with `multi_last`, which
//! the runs bucket's replicas answer with the last message of each subject that has one,
//! then an end-of-batch status.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::{Backend, RunStore, RunStoreError};

/// The most subjects one request may name (the server answers 413 beyond 1,024).
const MAX_KEYS: usize = 1024;

#[derive(Serialize)]
struct MultiLast<'a> {
    multi_last: &'a [String],
}

/// `herald::protocol`'s KV operation header: a delete or purge marker is no record.
const KV_OPERATION: &str = "KV-Operation";

impl RunStore {
    /// The stored value of each of `keys` that has one (deleted keys have none), read in
    /// one request answered within `answer_within`. At most [`MAX_KEYS`] keys.
    pub(crate) async fn get_many(
        &self,
        keys: &[&str],
        answer_within: Duration,
    ) -> Result<HashMap<String, Bytes>, RunStoreError> {
        let mut found = HashMap::new();
        let bucket = match &self.backend {
            Backend::Bucket(bucket) => bucket,
            Backend::Memory(map) => {
                let map = map.lock();
                for key in keys {
                    if let Some(value) = map.get(*key).filter(|v| !v.is_empty()) {
                        found.insert((*key).to_owned(), value.clone());
                    }
                }
                return Ok(found);
            }
        };
        if keys.is_empty() {
            return Ok(found);
        }
        if !bucket.many_keys.load(Ordering::Relaxed) {
            return Err(RunStoreError {
                action: "read",
                key: format!("{} keys from {}", keys.len(), keys[0]),
                source: "the server does not read many keys at once (nats-server 2.11+)".into(),
            });
        }
        let fail = |source: async_nats::Error| RunStoreError {
            action: "read",
            key: format!("{} keys from {}", keys.len(), keys[0]),
            source,
        };
        if keys.len() > MAX_KEYS {
            return Err(fail(
                format!("{} keys in one read; at most {MAX_KEYS}", keys.len()).into(),
            ));
        }
        let kv = &bucket.kv;
        let subjects: Vec<String> = keys.iter().map(|k| format!("{}{k}", kv.prefix)).collect();
        let body = serde_json::to_vec(&MultiLast {
            multi_last: &subjects,
        })
        .map_err(|e| fail(e.into()))?;
        let client = bucket.js.client();
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| fail(e.into()))?;
        client
            .publish_with_reply(
                herald::protocol::direct_get_subject(&kv.stream_name),
                inbox,
                Bytes::from(body),
            )
            .await
            .map_err(|e| fail(e.into()))?;
        let deadline = tokio::time::Instant::now() + answer_within;
        loop {
            let answer = tokio::time::timeout_at(deadline, answers.next())
                .await
                .map_err(|_| fail(format!("no answer within {answer_within:?}").into()))?
                .ok_or_else(|| fail("the subscription ended".into()))?;
            if let Some(status) = answer.status {
                return match status.as_u16() {
                    // End of batch: every found record was sent.
                    204 => Ok(found),
                    // None of the keys has a record.
                    404 => Ok(found),
                    // A server before 2.11 does not know `multi_last`: an empty request.
                    408 => {
                        bucket.many_keys.store(false, Ordering::Relaxed);
                        tracing::info!(
                            "the runs bucket's server does not read many keys at once (nats-server 2.11+); each run reads its own record"
                        );
                        Err(fail("multi_last not supported".into()))
                    }
                    _ => Err(fail(
                        format!(
                            "direct get answered {status} {}",
                            answer.description.unwrap_or_default()
                        )
                        .into(),
                    )),
                };
            }
            let headers = answer.headers.as_ref();
            let deleted = headers
                .and_then(|h| h.get(KV_OPERATION))
                .is_some_and(|op| op.as_str() != "PUT");
            let Some(key) = headers
                .and_then(|h| h.get(async_nats::header::NATS_SUBJECT))
                .and_then(|subject| subject.as_str().strip_prefix(kv.prefix.as_str()))
            else {
                continue;
            };
            if !deleted && !answer.payload.is_empty() {
                found.insert(key.to_owned(), answer.payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::run_store::Lifetime;

    const WITHIN: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn one_request_returns_the_stored_records_and_skips_missing_and_deleted_keys() {
        let nats = herald_local_nats::LocalNats::start().unwrap();
        let client = herald::Client::connect(&nats.url()).await.unwrap();
        client.provision().await.unwrap();
        let store = RunStore::open(&client).await.unwrap();
        for key in ["f.a", "f.b", "f.gone"] {
            store
                .put_bytes(
                    key,
                    Bytes::from(format!("{{\"k\":\"{key}\"}}")),
                    Lifetime::Retention,
                )
                .await
                .unwrap();
        }
        let Backend::Bucket(bucket) = &store.backend else {
            panic!("a bucket store");
        };
        bucket.kv.delete("f.gone").await.unwrap();

        let found = store
            .get_many(&["f.a", "f.missing", "f.b", "f.gone", "g.a"], WITHIN)
            .await
            .unwrap();
        let mut keys: Vec<_> = found.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["f.a", "f.b"]);
        assert_eq!(found["f.b"], Bytes::from_static(b"{\"k\":\"f.b\"}"));

        let none = store.get_many(&["x.1", "x.2"], WITHIN).await.unwrap();
        assert!(none.is_empty());
        let too_many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k.{i}")).collect();
        let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
        assert!(store.get_many(&too_many, WITHIN).await.is_err());
    }
}
