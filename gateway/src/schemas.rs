//! The registry's schemas as the gateway validates against them: compiled once per
//! version (versions are immutable), the latest version per type kept current by a watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald::Namespace;
use herald::registry::{Registry, SchemaVersion, data_schema_urn, parse_data_schema};
use herald::schema::CompiledSchema;
use parking_lot::RwLock;

/// How long "no schema registered for this type" is believed before asking again.
const UNKNOWN_TYPE_TTL: Duration = Duration::from_secs(1);

/// A schema to validate one event against.
pub(crate) struct Resolved {
    pub(crate) schema: Arc<CompiledSchema>,
    /// `urn:ns:schema:T:N`, stamped as `ce-dataschema`.
    pub(crate) urn: String,
}

/// Why no schema was found.
#[derive(Debug)]
pub(crate) enum Unresolved {
    /// The type has no registered schema.
    Unregistered,
    /// `ce-dataschema` names something the registry does not have, or another type.
    BadDataSchema(String),
    /// The registry cannot be read now.
    Unavailable(String),
}

#[derive(Clone, Copy)]
enum Latest {
    Version(u32),
    None(Instant),
}

/// The gateway's schema cache.
pub(crate) struct Schemas {
    registry: Registry,
    namespace: Namespace,
    versions: RwLock<HashMap<(String, u32), Arc<CompiledSchema>>>,
    latest: RwLock<HashMap<String, Latest>>,
}

impl Schemas {
    pub(crate) fn new(registry: Registry, namespace: Namespace) -> Arc<Schemas> {
        Arc::new(Schemas {
            registry,
            namespace,
            versions: RwLock::new(HashMap::new()),
            latest: RwLock::new(HashMap::new()),
        })
    }

    /// Follows new registrations until the watch ends.
    pub(crate) async fn watch(self: Arc<Self>) -> Result<(), herald::registry::RegistryError> {
        let mut versions = Box::pin(self.registry.watch_versions().await?);
        while let Some(version) = versions.next().await {
            let event_type = version.event_type.clone();
            let number = version.version;
            if self.insert(version).is_some() {
                let mut latest = self.latest.write();
                let newer = match latest.get(&event_type) {
                    Some(Latest::Version(current)) => number > *current,
                    _ => true,
                };
                if newer {
                    latest.insert(event_type, Latest::Version(number));
                }
            }
        }
        Ok(())
    }

    fn insert(&self, version: SchemaVersion) -> Option<Arc<CompiledSchema>> {
        let key = (version.event_type.clone(), version.version);
        if let Some(found) = self.versions.read().get(&key) {
            return Some(Arc::clone(found));
        }
        let compiled = Arc::new(CompiledSchema::compile(&version.event_type, version.schema).ok()?);
        self.versions.write().insert(key, Arc::clone(&compiled));
        Some(compiled)
    }

    /// The schema for an event of `event_type`, the version its `ce-dataschema` names or
    /// the latest.
    pub(crate) async fn resolve(
        &self,
        event_type: &str,
        data_schema: Option<&str>,
    ) -> Result<Resolved, Unresolved> {
        let version = match data_schema {
            Some(urn) => {
                let (named_type, version) =
                    parse_data_schema(&self.namespace, urn).ok_or_else(|| {
                        Unresolved::BadDataSchema(format!(
                            "{urn:?} is not a schema of this namespace: expected {}",
                            data_schema_urn(&self.namespace, event_type, 1).replace(":1", ":N")
                        ))
                    })?;
                if named_type != event_type {
                    return Err(Unresolved::BadDataSchema(format!(
                        "{urn} is a schema of {named_type}, not of {event_type}"
                    )));
                }
                version
            }
            None => self.latest_version(event_type).await?,
        };
        let schema = self.version(event_type, version).await?.ok_or_else(|| {
            Unresolved::BadDataSchema(format!(
                "version {version} of {event_type} is not registered"
            ))
        })?;
        Ok(Resolved {
            schema,
            urn: data_schema_urn(&self.namespace, event_type, version),
        })
    }

    async fn latest_version(&self, event_type: &str) -> Result<u32, Unresolved> {
        match self.latest.read().get(event_type) {
            Some(Latest::Version(version)) => return Ok(*version),
            Some(Latest::None(at)) if at.elapsed() < UNKNOWN_TYPE_TTL => {
                return Err(Unresolved::Unregistered);
            }
            _ => {}
        }
        let versions = self
            .registry
            .versions(event_type)
            .await
            .map_err(|error| Unresolved::Unavailable(error.to_string()))?;
        let mut latest = self.latest.write();
        match versions.last() {
            Some(found) => {
                let version = match latest.get(event_type) {
                    Some(Latest::Version(known)) => (*known).max(*found),
                    _ => *found,
                };
                latest.insert(event_type.to_owned(), Latest::Version(version));
                Ok(version)
            }
            None => {
                latest.insert(event_type.to_owned(), Latest::None(Instant::now()));
                Err(Unresolved::Unregistered)
            }
        }
    }

    async fn version(
        &self,
        event_type: &str,
        version: u32,
    ) -> Result<Option<Arc<CompiledSchema>>, Unresolved> {
        if let Some(found) = self.versions.read().get(&(event_type.to_owned(), version)) {
            return Ok(Some(Arc::clone(found)));
        }
        let stored = self
            .registry
            .get(event_type, version)
            .await
            .map_err(|error| Unresolved::Unavailable(error.to_string()))?;
        Ok(stored.and_then(|stored| self.insert(stored)))
    }
}
