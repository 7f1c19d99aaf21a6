//! Push functions as stored in the KV bucket `ns-push` (protocol section 14), and
//! [`PushFunctions`] to manage them (`herald push add|list|remove`).

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// A function served over HTTP: the events of its triggers are POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushFunction {
    /// The function id (`[a-z0-9][a-z0-9_-]{0,63}`): the durable consumer's name, as for a
    /// Rust function.
    pub id: String,
    /// Event types or patterns (`user.signup`, `billing.>`).
    pub on: Vec<String>,
    /// The receiver: `http://` or `https://`.
    pub url: String,
    /// Attempts before the event is dead-lettered.
    pub attempts: u32,
    /// How long one call may take, in milliseconds; then the attempt is a `timeout`.
    pub timeout_ms: u64,
    /// Calls in flight at once, across every replica (the consumer's `max_ack_pending`).
    pub concurrency: u32,
    /// The Standard Webhooks signing secret, `whsec_<base64>`.
    pub secret: String,
    /// RFC 3339 time it was added or last changed.
    pub updated_at: String,
}

impl PushFunction {
    /// The call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A push function operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The bucket does not exist.
    #[error(
        "the push functions bucket {bucket} does not exist; provision the namespace first (`herald provision`)"
    )]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// The function is not valid.
    #[error("invalid push function {id}: {reason}")]
    Invalid {
        /// The function id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// No function has this id.
    #[error("no push function {id}")]
    NotFound {
        /// The id.
        id: String,
    },
    /// A stored record is not valid JSON of the expected shape.
    #[error("push function record {id} is malformed: {source}")]
    Malformed {
        /// The id.
        id: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A KV operation failed.
    #[error("push functions bucket {action} failed: {source}")]
    Kv {
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
}

fn kv_error<E: Into<async_nats::Error>>(action: &'static str) -> impl FnOnce(E) -> PushError {
    move |error| PushError::Kv {
        action,
        source: error.into(),
    }
}

/// Checks a push function before it is stored.
pub fn check(function: &PushFunction) -> Result<(), PushError> {
    let invalid = |reason: String| PushError::Invalid {
        id: function.id.clone(),
        reason,
    };
    herald_worker::check_function_id(&function.id).map_err(|e| invalid(e.to_string()))?;
    if function.on.is_empty() {
        return Err(invalid("it needs at least one trigger (--on TYPE)".into()));
    }
    let url = reqwest::Url::parse(&function.url)
        .map_err(|e| invalid(format!("url {:?}: {e}", function.url)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!(
            "url {:?} is not an http(s) URL with a host",
            function.url
        )));
    }
    if function.attempts == 0 || function.concurrency == 0 || function.timeout_ms == 0 {
        return Err(invalid(
            "attempts, concurrency and timeout must be at least 1".into(),
        ));
    }
    crate::push::sign::secret_key(&function.secret).map_err(invalid)?;
    Ok(())
}

/// A handle on a namespace's push functions bucket.
#[derive(Debug, Clone)]
pub struct PushFunctions {
    kv: kv::Store,
}

impl PushFunctions {
    /// Opens the bucket `ns-push` of `client`'s namespace.
    pub async fn open(client: &herald::Client) -> Result<PushFunctions, PushError> {
        let bucket = client.namespace().push_bucket();
        let kv = client
            .jetstream()
            .get_key_value(&bucket)
            .await
            .map_err(|_| PushError::NoBucket { bucket })?;
        Ok(PushFunctions { kv })
    }

    /// The underlying KV store.
    pub fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// Adds or replaces a function (checked first).
    pub async fn put(&self, function: &PushFunction) -> Result<(), PushError> {
        check(function)?;
        let value = serde_json::to_vec(function).map_err(|source| PushError::Malformed {
            id: function.id.clone(),
            source,
        })?;
        self.kv
            .put(&function.id, value.into())
            .await
            .map_err(kv_error("put"))?;
        Ok(())
    }

    /// Every function, sorted by id (malformed records are skipped with a warning).
    pub async fn list(&self) -> Result<Vec<PushFunction>, PushError> {
        let mut names = self.kv.keys().await.map_err(kv_error("list"))?;
        let mut ids = Vec::new();
        while let Some(name) = names.next().await {
            ids.push(name.map_err(kv_error("list"))?);
        }
        ids.sort();
        let mut functions = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(entry) = self.kv.entry(&id).await.map_err(kv_error("read"))? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match serde_json::from_slice(&entry.value) {
                Ok(function) => functions.push(function),
                Err(error) => tracing::warn!(%id, %error, "skipping a malformed push function"),
            }
        }
        Ok(functions)
    }

    /// Removes a function (its consumer stays until deleted by hand, as for Rust functions).
    pub async fn remove(&self, id: &str) -> Result<(), PushError> {
        if self
            .kv
            .entry(id)
            .await
            .map_err(kv_error("read"))?
            .is_none_or(|entry| entry.operation != kv::Operation::Put)
        {
            return Err(PushError::NotFound { id: id.to_owned() });
        }
        self.kv.delete(id).await.map_err(kv_error("remove"))
    }
}
