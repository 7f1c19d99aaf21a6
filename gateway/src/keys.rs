//! API keys: stored hashed in the KV bucket `ns-keys` (protocol section 13), managed with
//! [`Keys`] (`herald keys create|list|revoke`).
//!
//! A token is `hrld_<id>_<secret>`. The bucket holds, under the key `<id>`, the
//! [`ApiKey`] record with the hex SHA-256 of the secret, never the secret itself.

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every token.
pub const TOKEN_PREFIX: &str = "hrld_";

/// How fast one key may send, per gateway replica: a GCRA rate with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_s: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            per_s: 100,
            burst: 200,
        }
    }
}

/// One API key as stored in `ns-keys` (the secret only as its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The key id, `[a-z0-9]{12}`; the KV key.
    pub id: String,
    /// A human label.
    #[serde(default)]
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// Event-type patterns this key may send (NATS subject wildcards: `user.*`,
    /// `billing.>`, `>` for all).
    pub scopes: Vec<String>,
    /// The key's rate.
    pub rate: Rate,
    /// Whether events of types without a registered schema are accepted (unvalidated).
    #[serde(default)]
    pub allow_unregistered: bool,
    /// A revoked key: refused with 401.
    #[serde(default)]
    pub disabled: bool,
    /// RFC 3339 creation time.
    pub created_at: String,
}

impl ApiKey {
    /// Whether `secret` is this key's secret.
    pub fn verify(&self, secret: &str) -> bool {
        let hash = hash_secret(secret);
        // Constant-time comparison of the two hex strings.
        hash.len() == self.secret_sha256.len()
            && hash
                .bytes()
                .zip(self.secret_sha256.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Whether this key may send events of `event_type`.
    pub fn allows(&self, event_type: &str) -> bool {
        self.scopes
            .iter()
            .any(|pattern| scope_matches(pattern, event_type))
    }
}

/// Whether the NATS-style pattern `pattern` (`*` one token, `>` the rest) matches
/// `event_type`.
pub fn scope_matches(pattern: &str, event_type: &str) -> bool {
    let mut tokens = event_type.split('.');
    for part in pattern.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (part, Some(token)) if part == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Whether `pattern` is a valid scope: tokens of event types, `*`, or a final `>`.
pub fn is_valid_scope(pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.iter().enumerate().all(|(index, part)| match *part {
        ">" => index + 1 == parts.len(),
        "*" => true,
        part => {
            !part.is_empty()
                && part.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || (i > 0 && (b == b'_' || b == b'-'))
                })
        }
    })
}

/// Hex SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Splits a token `hrld_<id>_<secret>` into (id, secret).
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (id_ok && !secret.is_empty()).then_some((id, secret))
}

/// What to create: `..Default::default()` for the rest.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// A human label.
    pub name: String,
    /// Event-type patterns (default `>`: every type).
    pub scopes: Vec<String>,
    /// The rate (default 100/s, burst 200).
    pub rate: Rate,
    /// Accept types without a registered schema.
    pub allow_unregistered: bool,
}

impl Default for NewKey {
    fn default() -> Self {
        NewKey {
            name: String::new(),
            scopes: vec![">".to_owned()],
            rate: Rate::default(),
            allow_unregistered: false,
        }
    }
}

/// A key just created: the token is shown once and stored nowhere.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored record.
    pub key: ApiKey,
    /// The token to hand to the sender: `hrld_<id>_<secret>`.
    pub token: String,
}

/// A key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The keys bucket does not exist.
    #[error(
        "the keys bucket {bucket} does not exist; provision the namespace first (`herald provision`)"
    )]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// A scope is not an event-type pattern.
    #[error(
        "invalid scope {scope:?}: use event-type tokens, `*` for one token, `>` at the end for the rest"
    )]
    InvalidScope {
        /// The refused scope.
        scope: String,
    },
    /// A rate of zero.
    #[error("a key's rate and burst must be at least 1")]
    InvalidRate,
    /// No key has this id.
    #[error("no key {id}")]
    NotFound {
        /// The id.
        id: String,
    },
    /// A stored record is not valid JSON of the expected shape.
    #[error("key record {id} is malformed: {source}")]
    Malformed {
        /// The id.
        id: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A KV operation failed.
    #[error("keys bucket {action} failed: {source}")]
    Kv {
        /// What was being done.
        action: &'static str,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
}

fn kv_error<E: Into<async_nats::Error>>(action: &'static str) -> impl FnOnce(E) -> KeyError {
    move |error| KeyError::Kv {
        action,
        source: error.into(),
    }
}

/// A handle on a namespace's keys bucket, for managing keys.
#[derive(Debug, Clone)]
pub struct Keys {
    kv: kv::Store,
}

impl Keys {
    /// Opens the keys bucket of `client`'s namespace.
    pub async fn open(client: &herald::Client) -> Result<Keys, KeyError> {
        let bucket = client.namespace().keys_bucket();
        let kv = client
            .jetstream()
            .get_key_value(&bucket)
            .await
            .map_err(|_| KeyError::NoBucket { bucket })?;
        Ok(Keys { kv })
    }

    /// The underlying KV store.
    pub fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// Creates a key and returns its token (shown once).
    pub async fn create(&self, new: NewKey) -> Result<CreatedKey, KeyError> {
        if let Some(scope) = new.scopes.iter().find(|s| !is_valid_scope(s)) {
            return Err(KeyError::InvalidScope {
                scope: scope.clone(),
            });
        }
        if new.rate.per_s == 0 || new.rate.burst == 0 {
            return Err(KeyError::InvalidRate);
        }
        let id: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let key = ApiKey {
            id: id.clone(),
            name: new.name,
            secret_sha256: hash_secret(&secret),
            scopes: new.scopes,
            rate: new.rate,
            allow_unregistered: new.allow_unregistered,
            disabled: false,
            created_at: herald::headers::format_time(std::time::SystemTime::now()),
        };
        let value = serde_json::to_vec(&key).map_err(|source| KeyError::Malformed {
            id: id.clone(),
            source,
        })?;
        self.kv
            .create(&id, value.into())
            .await
            .map_err(kv_error("create"))?;
        Ok(CreatedKey {
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
            key,
        })
    }

    /// One key, `None` if there is none with this id (or it was deleted).
    pub async fn get(&self, id: &str) -> Result<Option<ApiKey>, KeyError> {
        let entry = self.kv.entry(id).await.map_err(kv_error("read"))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(
                serde_json::from_slice(&entry.value).map_err(|source| KeyError::Malformed {
                    id: id.to_owned(),
                    source,
                })?,
            )),
            _ => Ok(None),
        }
    }

    /// Every key, revoked ones included, sorted by id.
    pub async fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        let mut names = self.kv.keys().await.map_err(kv_error("list"))?;
        let mut ids = Vec::new();
        while let Some(name) = names.next().await {
            ids.push(name.map_err(kv_error("list"))?);
        }
        ids.sort();
        let mut keys = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(key) = self.get(&id).await? {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Revokes a key: it stays listed as disabled, and every gateway refuses it within
    /// moments (they watch the bucket).
    pub async fn revoke(&self, id: &str) -> Result<ApiKey, KeyError> {
        let mut key = self
            .get(id)
            .await?
            .ok_or_else(|| KeyError::NotFound { id: id.to_owned() })?;
        key.disabled = true;
        let value = serde_json::to_vec(&key).map_err(|source| KeyError::Malformed {
            id: id.to_owned(),
            source,
        })?;
        self.kv
            .put(id, value.into())
            .await
            .map_err(kv_error("revoke"))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_match_like_nats_subjects() {
        assert!(scope_matches(">", "user.signup"));
        assert!(scope_matches("user.*", "user.signup"));
        assert!(!scope_matches("user.*", "user.signup.v2"));
        assert!(scope_matches("user.>", "user.signup.v2"));
        assert!(!scope_matches("user.>", "user"));
        assert!(scope_matches("user.signup", "user.signup"));
        assert!(!scope_matches("billing.*", "user.signup"));
        assert!(is_valid_scope("billing.>"));
        assert!(!is_valid_scope(">.x"));
        assert!(!is_valid_scope("User.*"));
    }

    #[test]
    fn tokens_parse_and_secrets_verify() {
        assert_eq!(
            parse_token("hrld_abc123_s3cr3t"),
            Some(("abc123", "s3cr3t"))
        );
        assert_eq!(parse_token("hrld__x"), None);
        assert_eq!(parse_token("bearer"), None);
        let key = ApiKey {
            id: "abc".into(),
            name: String::new(),
            secret_sha256: hash_secret("s3cr3t"),
            scopes: vec![">".into()],
            rate: Rate::default(),
            allow_unregistered: false,
            disabled: false,
            created_at: String::new(),
        };
        assert!(key.verify("s3cr3t"));
        assert!(!key.verify("s3cr3"));
    }
}
