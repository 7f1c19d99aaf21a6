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
        let found = self.get_many_revised(keys, answer_within).await?;
        Ok(found
            .into_iter()
            .map(|(key, (value, _))| (key, value))
            .collect())
    }

    /// [`Self::get_many`] with each record's revision (its sequence in the bucket's stream:
    /// the order the records were written; 0 in memory).
    pub(crate) async fn get_many_revised(
        &self,
        keys: &[&str],
        answer_within: Duration,
    ) -> Result<HashMap<String, (Bytes, u64)>, RunStoreError> {
        let mut found = HashMap::new();
        let bucket = match &self.backend {
            Backend::Bucket(bucket) => bucket,
            Backend::Memory(map) => {
                let map = map.lock();
                for key in keys {
                    if let Some(value) = map.get(*key).filter(|v| !v.is_empty()) {
                        found.insert((*key).to_owned(), (value.clone(), 0));
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
        let deadline = tokio::time::Instant::now() + answer_within;
        let page = match direct_get(bucket, body, deadline, &mut found).await {
            Ok(page) => page,
            Err(DirectGetError::Failed(error)) => return Err(fail(error)),
            // A lone wildcard matching more than the server answers at once: read its
            // subjects page by page in stream order (each has one message, history 1).
            Err(DirectGetError::TooMany) if keys.len() == 1 && keys[0].ends_with('>') => {
                return scan(bucket, &subjects[0], deadline, found)
                    .await
                    .map_err(fail);
            }
            Err(DirectGetError::TooMany) => {
                return Err(fail(
                    "more than 1,024 keys match; the server does not answer that many at once"
                        .into(),
                ));
            }
        };
        if page.status == 408 {
            bucket.many_keys.store(false, Ordering::Relaxed);
            tracing::info!(
                "the runs bucket's server does not read many keys at once (nats-server 2.11+); each run reads its own record"
            );
            return Err(fail("multi_last not supported".into()));
        }
        Ok(found)
    }
}

/// Every record under a wildcard `subject`, read in pages of [`MAX_KEYS`] messages
/// (`next_by_subj` from a sequence, `batch`), for a pattern that matches more keys than
/// one `multi_last` answers.
async fn scan(
    bucket: &super::Bucket,
    subject: &str,
    deadline: tokio::time::Instant,
    mut found: HashMap<String, (Bytes, u64)>,
) -> Result<HashMap<String, (Bytes, u64)>, async_nats::Error> {
    let mut from = 1;
    loop {
        let body = serde_json::to_vec(&serde_json::json!({
            "seq": from,
            "next_by_subj": subject,
            "batch": MAX_KEYS,
        }))?;
        let page = direct_get(bucket, body, deadline, &mut found)
            .await
            .map_err(|e| match e {
                DirectGetError::Failed(error) => error,
                DirectGetError::TooMany => "the server answered 413 to a page".into(),
            })?;
        if page.count < MAX_KEYS {
            return Ok(found);
        }
        from = page.last_sequence + 1;
    }
}

/// What one direct-get request answered, besides the records it put in `found`.
struct Page {
    /// Messages received.
    count: usize,
    /// The stream sequence of the last message.
    last_sequence: u64,
    /// The closing status (204 end of batch, 404 nothing found, 408 not understood).
    status: u16,
}

enum DirectGetError {
    /// 413: more subjects match than the server answers in one request.
    TooMany,
    Failed(async_nats::Error),
}

/// Sends one direct-get request `body` to the runs bucket and collects the live records it
/// answers into `found`, with their sequences (delete and purge markers are left out).
async fn direct_get(
    bucket: &super::Bucket,
    body: Vec<u8>,
    deadline: tokio::time::Instant,
    found: &mut HashMap<String, (Bytes, u64)>,
) -> Result<Page, DirectGetError> {
    let kv = &bucket.kv;
    let client = bucket.js.client();
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| DirectGetError::Failed(e.into()))?;
    client
        .publish_with_reply(
            herald::protocol::direct_get_subject(&kv.stream_name),
            inbox,
            Bytes::from(body),
        )
        .await
        .map_err(|e| DirectGetError::Failed(e.into()))?;
    let mut page = Page {
        count: 0,
        last_sequence: 0,
        status: 0,
    };
    loop {
        let answer = tokio::time::timeout_at(deadline, answers.next())
            .await
            .map_err(|_| {
                DirectGetError::Failed(
                    "no answer in time (the bucket's leader may be changing)".into(),
                )
            })?
            .ok_or_else(|| DirectGetError::Failed("the subscription ended".into()))?;
        if let Some(status) = answer.status {
            page.status = status.as_u16();
            return match page.status {
                // End of batch: every found record was sent; or none was found; or (a
                // server before 2.11) the request was not understood.
                204 | 404 | 408 => Ok(page),
                413 => Err(DirectGetError::TooMany),
                _ => Err(DirectGetError::Failed(
                    format!(
                        "direct get answered {status} {}",
                        answer.description.unwrap_or_default()
                    )
                    .into(),
                )),
            };
        }
        page.count += 1;
        let headers = answer.headers.as_ref();
        let sequence = headers
            .and_then(|h| h.get(async_nats::header::NATS_SEQUENCE))
            .and_then(|s| s.as_str().parse().ok());
        if let Some(sequence) = sequence {
            page.last_sequence = sequence;
        }
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
            found.insert(key.to_owned(), (answer.payload, sequence.unwrap_or(0)));
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

    #[tokio::test]
    async fn a_wildcard_matching_more_than_one_answer_holds_is_read_in_pages() {
        let nats = herald_local_nats::LocalNats::start().unwrap();
        let client = herald::Client::connect(&nats.url()).await.unwrap();
        client.provision().await.unwrap();
        let store = RunStore::open(&client).await.unwrap();
        let Backend::Bucket(bucket) = &store.backend else {
            panic!("a bucket store");
        };
        // 2,500 keys: more than the server's 1,024 per answer, and not a page multiple.
        let mut acks = Vec::new();
        for i in 0..2_500 {
            let subject = format!("{}wide.k{i}", bucket.kv.prefix);
            acks.push(
                bucket
                    .js
                    .publish(subject, Bytes::from(format!("{i}")))
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
        bucket.kv.delete("wide.k7").await.unwrap();
        store
            .put_bytes("other.k1", Bytes::from_static(b"x"), Lifetime::Retention)
            .await
            .unwrap();

        let found = store.get_many(&["wide.>"], WITHIN).await.unwrap();
        assert_eq!(found.len(), 2_499);
        assert!(!found.contains_key("wide.k7"), "a deleted key was read");
        assert_eq!(found["wide.k2499"], Bytes::from_static(b"2499"));
        assert!(!found.contains_key("other.k1"));
    }
}
