//! Authenticating requests: the keys a gateway has seen, kept current by a watch on
//! `ns-keys`, each with its own rate limiter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;

use crate::keys::{ApiKey, Keys, Rate, parse_token};

/// A key the gateway knows, with its limiter.
pub(crate) struct KnownKey {
    pub(crate) key: ApiKey,
    limiter: DefaultDirectRateLimiter,
}

impl KnownKey {
    fn new(key: ApiKey) -> KnownKey {
        let limiter = RateLimiter::direct(quota(key.rate));
        KnownKey { key, limiter }
    }

    /// Takes one request from the key's rate; `Err(wait)` when over it.
    pub(crate) fn take(&self) -> Result<(), Duration> {
        self.limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn quota(rate: Rate) -> Quota {
    let per_s = NonZeroU32::new(rate.per_s).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_s);
    Quota::per_second(per_s).allow_burst(burst)
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// Not a token, no such key, wrong secret, or revoked.
    Invalid(&'static str),
    /// The keys bucket cannot be read right now.
    Unavailable,
}

/// Cache entry: the last revision seen and the key at that revision (`None`: deleted).
struct Slot {
    revision: u64,
    key: Option<Arc<KnownKey>>,
}

/// The keys this gateway has seen. A key not yet seen is read from the bucket; the watch
/// applies every later change (revocations included) without a restart.
pub(crate) struct KeyCache {
    keys: Keys,
    slots: RwLock<HashMap<String, Slot>>,
}

impl KeyCache {
    pub(crate) fn new(keys: Keys) -> Arc<KeyCache> {
        Arc::new(KeyCache {
            keys,
            slots: RwLock::new(HashMap::new()),
        })
    }

    /// Applies a change if it is newer than what the cache holds.
    fn apply(&self, id: &str, revision: u64, key: Option<ApiKey>) {
        let mut slots = self.slots.write();
        if slots.get(id).is_some_and(|slot| slot.revision >= revision) {
            return;
        }
        let key = key.map(|key| Arc::new(KnownKey::new(key)));
        slots.insert(id.to_owned(), Slot { revision, key });
    }

    /// Watches the bucket for changes until the watch ends (then the caller restarts it);
    /// `watching` is true from the moment the watch is established.
    pub(crate) async fn watch(
        self: Arc<Self>,
        watching: &std::sync::atomic::AtomicBool,
    ) -> Result<(), async_nats::Error> {
        // With history: each key's latest revision first (changes made while no watch ran
        // among them), then every later change. Nothing cached is dropped: a key read at the
        // revision the watch replays keeps its limiter (a cleared cache gave a key in use a
        // fresh one, letting a request over its rate through).
        let mut watch = self.keys.store().watch_with_history(">").await?;
        watching.store(true, std::sync::atomic::Ordering::Relaxed);
        while let Some(entry) = watch.next().await {
            let entry = entry?;
            let key = match entry.operation {
                kv::Operation::Put => serde_json::from_slice::<ApiKey>(&entry.value).ok(),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            self.apply(&entry.key, entry.revision, key);
        }
        Ok(())
    }

    /// Authenticates a token.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Arc<KnownKey>, AuthFailure> {
        let (id, secret) = parse_token(token).ok_or(AuthFailure::Invalid("not a Herald token"))?;
        let cached = self.slots.read().get(id).map(|slot| slot.key.clone());
        let known = match cached {
            Some(known) => known,
            None => {
                let entry = self
                    .keys
                    .store()
                    .entry(id)
                    .await
                    .map_err(|_| AuthFailure::Unavailable)?;
                match entry {
                    Some(entry) => {
                        let key = match entry.operation {
                            kv::Operation::Put => {
                                serde_json::from_slice::<ApiKey>(&entry.value).ok()
                            }
                            _ => None,
                        };
                        self.apply(id, entry.revision, key);
                        self.slots.read().get(id).and_then(|slot| slot.key.clone())
                    }
                    None => None,
                }
            }
        };
        let known = known.ok_or(AuthFailure::Invalid("unknown key"))?;
        if !known.key.verify(secret) {
            return Err(AuthFailure::Invalid("wrong secret"));
        }
        if known.key.disabled {
            return Err(AuthFailure::Invalid("the key was revoked"));
        }
        Ok(known)
    }
}

/// The anonymous "key" of a gateway without authentication.
pub(crate) fn anonymous(rate: Rate) -> Arc<KnownKey> {
    Arc::new(KnownKey::new(ApiKey {
        id: "anonymous".to_owned(),
        name: "anonymous".to_owned(),
        secret_sha256: String::new(),
        scopes: vec![">".to_owned()],
        rate,
        allow_unregistered: false,
        disabled: false,
        created_at: String::new(),
    }))
}
