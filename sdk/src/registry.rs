//! The schema registry in the bus (protocol section 5): KV bucket `ns-schemas`.
//!
//! Versions are immutable (`ver.T.N`, written with KV create); `latest.T` moves forward with
//! compare-and-swap; `digest.D` makes registration idempotent. Several processes may
//! register at once: versions come out 1, 2, 3… with no gap and no duplicate.

use std::time::SystemTime;

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::compat::{self, CompatibilityMode, CompatibilityReport};
use crate::names::{EventType, NameError, Namespace};
use crate::protocol::registry_keys as keys;
use crate::schema::digest;

/// One registered version of a type's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaVersion {
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version, from 1.
    pub version: u32,
    /// Hex SHA-256 of the canonical JSON of the schema without `$id`.
    pub digest: String,
    /// The schema, with `$id` = `urn:ns:schema:T:N`.
    pub schema: Value,
    /// RFC 3339 time of registration.
    pub created_at: String,
    /// Who registered it (the client's source).
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latest {
    version: u32,
    digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DigestEntry {
    #[serde(rename = "type")]
    event_type: String,
    version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct TypeConfig {
    #[serde(default)]
    compatibility: CompatibilityMode,
}

/// The result of a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The version the schema has.
    pub version: u32,
    /// Its digest.
    pub digest: String,
    /// False when the schema was already registered (same digest).
    pub created: bool,
    /// The `ce-dataschema` value naming it: `urn:ns:schema:T:N`.
    pub data_schema: String,
}

/// What registering would do (a dry run).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CheckOutcome {
    /// Already registered as this version.
    Registered(u32),
    /// Would become this version.
    Compatible(u32),
    /// Would be refused.
    Incompatible(CompatibilityReport),
}

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The event type is not valid.
    #[error(transparent)]
    InvalidType(#[from] NameError),
    /// The new schema is incompatible with existing versions; nothing was written.
    #[error("the schema of {event_type} was refused, nothing was written: {report}")]
    Incompatible {
        /// The event type.
        event_type: String,
        /// Why.
        report: CompatibilityReport,
    },
    /// The bucket does not exist.
    #[error(
        "the schema registry bucket {bucket} does not exist; provision the namespace first (Client::provision or `herald provision`)"
    )]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// A stored entry is not what the protocol says.
    #[error("registry entry {key} is malformed: {reason}")]
    Malformed {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A KV operation failed.
    #[error("registry {action} of {key} failed: {source}")]
    Kv {
        /// What was being done.
        action: &'static str,
        /// The key.
        key: String,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
}

fn kv_error<E: Into<async_nats::Error>>(
    action: &'static str,
    key: &str,
) -> impl FnOnce(E) -> RegistryError {
    let key = key.to_owned();
    move |error| RegistryError::Kv {
        action,
        key,
        source: error.into(),
    }
}

pub use crate::protocol::{data_schema_urn, parse_data_schema};

/// The schema without `$id` (the digest does not depend on the version it gets).
fn without_id(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(map) = schema.as_object_mut() {
        map.remove("$id");
    }
    schema
}

/// A handle on a namespace's schema registry.
#[derive(Debug, Clone)]
pub struct Registry {
    kv: kv::Store,
    namespace: Namespace,
    source: String,
}

impl Registry {
    /// Opens the registry bucket of `namespace`.
    pub async fn open(
        jetstream: &async_nats::jetstream::Context,
        namespace: &Namespace,
        source: &str,
    ) -> Result<Registry, RegistryError> {
        let bucket = namespace.schemas_bucket();
        let kv = jetstream
            .get_key_value(&bucket)
            .await
            .map_err(|_| RegistryError::NoBucket {
                bucket: bucket.clone(),
            })?;
        Ok(Registry {
            kv,
            namespace: namespace.clone(),
            source: source.to_owned(),
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    async fn read<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, RegistryError> {
        let Some(entry) = self.kv.entry(key).await.map_err(kv_error("read", key))? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let value = serde_json::from_slice(&entry.value).map_err(|e| RegistryError::Malformed {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some((value, entry.revision)))
    }

    /// Version `version` of `event_type`.
    pub async fn get(
        &self,
        event_type: &str,
        version: u32,
    ) -> Result<Option<SchemaVersion>, RegistryError> {
        let key = keys::version(event_type, version);
        Ok(self.read::<SchemaVersion>(&key).await?.map(|(v, _)| v))
    }

    /// The newest version of `event_type`.
    pub async fn latest(&self, event_type: &str) -> Result<Option<SchemaVersion>, RegistryError> {
        let versions = self.versions(event_type).await?;
        match versions.last() {
            Some(version) => self.get(event_type, *version).await,
            None => Ok(None),
        }
    }

    /// The registered versions of `event_type`, ascending.
    pub async fn versions(&self, event_type: &str) -> Result<Vec<u32>, RegistryError> {
        let prefix = keys::versions_of(event_type);
        let mut versions: Vec<u32> = self
            .keys()
            .await?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Every event type with at least one version, sorted.
    pub async fn types(&self) -> Result<Vec<String>, RegistryError> {
        let mut types: Vec<String> = self
            .keys()
            .await?
            .into_iter()
            .filter_map(|key| Some(keys::parse_version(&key)?.0.to_owned()))
            .collect();
        types.sort();
        types.dedup();
        Ok(types)
    }

    async fn keys(&self) -> Result<Vec<String>, RegistryError> {
        let mut keys = match self.kv.keys().await {
            Ok(keys) => keys,
            Err(error) => return Err(kv_error("list", "*")(error)),
        };
        let mut all = Vec::new();
        while let Some(key) = keys.next().await {
            all.push(key.map_err(kv_error("list", "*"))?);
        }
        Ok(all)
    }

    /// New versions as they are registered (from now on), for caches that want them before
    /// the first event that names them.
    pub async fn watch_versions(
        &self,
    ) -> Result<impl futures::Stream<Item = SchemaVersion> + Send + 'static, RegistryError> {
        let watch = self
            .kv
            .watch(keys::VERSIONS_WILDCARD)
            .await
            .map_err(kv_error("watch", keys::VERSIONS_WILDCARD))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            if entry.operation != kv::Operation::Put {
                return None;
            }
            serde_json::from_slice::<SchemaVersion>(&entry.value).ok()
        }))
    }

    /// The compatibility mode of `event_type` (default FULL_TRANSITIVE).
    pub async fn compatibility(
        &self,
        event_type: &str,
    ) -> Result<CompatibilityMode, RegistryError> {
        let key = keys::config(event_type);
        Ok(self
            .read::<TypeConfig>(&key)
            .await?
            .map(|(c, _)| c.compatibility)
            .unwrap_or_default())
    }

    /// Sets the compatibility mode of `event_type`.
    pub async fn set_compatibility(
        &self,
        event_type: &str,
        mode: CompatibilityMode,
    ) -> Result<(), RegistryError> {
        EventType::new(event_type)?;
        let key = keys::config(event_type);
        let value = serde_json::to_vec(&TypeConfig {
            compatibility: mode,
        })
        .unwrap_or_default();
        self.kv
            .put(&key, value.into())
            .await
            .map_err(kv_error("write", &key))?;
        Ok(())
    }

    /// What registering `schema` for `event_type` would do, without writing anything.
    pub async fn check(
        &self,
        event_type: &str,
        schema: &Value,
    ) -> Result<CheckOutcome, RegistryError> {
        EventType::new(event_type)?;
        let schema = without_id(schema);
        let digest = digest(&schema);
        if let Some(version) = self.version_of_digest(event_type, &digest).await? {
            return Ok(CheckOutcome::Registered(version));
        }
        let existing = self.all_versions(event_type).await?;
        let mode = self.compatibility(event_type).await?;
        let report = compat::check(mode, &schema, &existing);
        if !report.is_compatible() {
            return Ok(CheckOutcome::Incompatible(report));
        }
        Ok(CheckOutcome::Compatible(
            existing.last().map_or(1, |(v, _)| v + 1),
        ))
    }

    async fn version_of_digest(
        &self,
        event_type: &str,
        digest: &str,
    ) -> Result<Option<u32>, RegistryError> {
        let key = keys::digest(digest);
        Ok(self
            .read::<DigestEntry>(&key)
            .await?
            .filter(|(entry, _)| entry.event_type == event_type)
            .map(|(entry, _)| entry.version))
    }

    async fn all_versions(&self, event_type: &str) -> Result<Vec<(u32, Value)>, RegistryError> {
        let mut all = Vec::new();
        for version in self.versions(event_type).await? {
            if let Some(stored) = self.get(event_type, version).await? {
                all.push((version, without_id(&stored.schema)));
            }
        }
        Ok(all)
    }

    /// Registers `schema` for `event_type`: returns the existing version when the same
    /// schema (digest) is registered, else checks compatibility with the type's mode and
    /// writes the next version. Safe to call from many processes at once.
    pub async fn register(
        &self,
        event_type: &str,
        schema: &Value,
    ) -> Result<Registered, RegistryError> {
        EventType::new(event_type)?;
        let schema = without_id(schema);
        let digest = digest(&schema);
        let registered = |version: u32, created: bool| Registered {
            version,
            digest: digest.clone(),
            created,
            data_schema: data_schema_urn(&self.namespace, event_type, version),
        };
        if let Some(version) = self.version_of_digest(event_type, &digest).await? {
            return Ok(registered(version, false));
        }
        let mode = self.compatibility(event_type).await?;
        let mut existing = self.all_versions(event_type).await?;
        loop {
            // The same schema may have been written by a racing registrant meanwhile.
            if let Some((version, _)) = existing
                .iter()
                .find(|(_, s)| crate::schema::digest(s) == digest)
            {
                return Ok(registered(*version, false));
            }
            let report = compat::check(mode, &schema, &existing);
            if !report.is_compatible() {
                return Err(RegistryError::Incompatible {
                    event_type: event_type.to_owned(),
                    report,
                });
            }
            let version = existing.last().map_or(1, |(v, _)| v + 1);
            let mut published = schema.clone();
            if let Some(map) = published.as_object_mut() {
                map.insert(
                    "$id".to_owned(),
                    Value::String(data_schema_urn(&self.namespace, event_type, version)),
                );
            }
            let record = SchemaVersion {
                event_type: event_type.to_owned(),
                version,
                digest: digest.clone(),
                schema: published,
                created_at: crate::headers::format_time(SystemTime::now()),
                source: self.source.clone(),
            };
            let key = keys::version(event_type, version);
            let bytes = serde_json::to_vec(&record).unwrap_or_default();
            match self.kv.create(&key, bytes.into()).await {
                Ok(_) => {
                    self.advance_latest(event_type, version, &digest).await?;
                    let digest_key = keys::digest(&digest);
                    let entry = serde_json::to_vec(&DigestEntry {
                        event_type: event_type.to_owned(),
                        version,
                    })
                    .unwrap_or_default();
                    if let Err(error) = self.kv.create(&digest_key, entry.into()).await
                        && error.kind() != kv::CreateErrorKind::AlreadyExists
                    {
                        return Err(kv_error("write", &digest_key)(error));
                    }
                    return Ok(registered(version, true));
                }
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // Another registrant took this version: compare with what is there now.
                    existing = self.all_versions(event_type).await?;
                }
                Err(error) => return Err(kv_error("write", &key)(error)),
            }
        }
    }

    /// Moves `latest.T` forward to `version` with compare-and-swap (never backwards).
    async fn advance_latest(
        &self,
        event_type: &str,
        version: u32,
        digest: &str,
    ) -> Result<(), RegistryError> {
        let key = keys::latest(event_type);
        let value = serde_json::to_vec(&Latest {
            version,
            digest: digest.to_owned(),
        })
        .unwrap_or_default();
        loop {
            let current = self.read::<Latest>(&key).await?;
            let outcome = match current {
                Some((latest, _)) if latest.version >= version => return Ok(()),
                Some((_, revision)) => self
                    .kv
                    .update(&key, value.clone().into(), revision)
                    .await
                    .map(drop)
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                None => self
                    .kv
                    .create(&key, value.clone().into())
                    .await
                    .map(drop)
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(true) => continue, // lost the race: read again
                Err(false) => {
                    return Err(RegistryError::Kv {
                        action: "write",
                        key,
                        source: "compare-and-swap failed".into(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_schema_urns_round_trip() {
        let ns = Namespace::new("shop").unwrap();
        let urn = data_schema_urn(&ns, "order.placed", 3);
        assert_eq!(urn, "urn:shop:schema:order.placed:3");
        assert_eq!(
            parse_data_schema(&ns, &urn),
            Some(("order.placed".to_owned(), 3))
        );
        assert_eq!(parse_data_schema(&Namespace::default(), &urn), None);
        assert_eq!(
            parse_data_schema(&ns, "urn:shop:schema:order.placed:x"),
            None
        );
    }
}
