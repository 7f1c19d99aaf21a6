//! [`WriterSchemas`]: the registry's schema versions, compiled once and kept.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use herald::Client;
use tokio_util::sync::CancellationToken;

/// The schema versions named by `ce-dataschema`, fetched from the registry once, compiled
/// and kept (versions are immutable). Events without the header, or naming a version the
/// registry does not have, are validated against the function's local schema; that is
/// logged once per event type.
pub(crate) struct WriterSchemas {
    client: Client,
    /// Looked up for every delivery that names its schema (as `without_header` is for
    /// every other one): hashed with foldhash, as the standard SipHash of the name cost
    /// more than the rest of the look-up.
    cache: parking_lot::RwLock<
        std::collections::HashMap<
            String,
            Arc<herald::schema::CompiledSchema>,
            foldhash::fast::RandomState,
        >,
    >,
    warned: parking_lot::Mutex<HashSet<String>>,
    without_header: parking_lot::RwLock<HashSet<String, foldhash::fast::RandomState>>,
}

impl WriterSchemas {
    pub(crate) fn new(client: Client) -> WriterSchemas {
        WriterSchemas {
            client,
            cache: parking_lot::RwLock::new(std::collections::HashMap::default()),
            warned: parking_lot::Mutex::new(HashSet::new()),
            without_header: parking_lot::RwLock::new(HashSet::default()),
        }
    }

    /// Compiles new versions as they are registered, so the first event naming one does
    /// not wait for the registry. Best effort: a version missed here is fetched on first use.
    pub(crate) async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let Ok(registry) = self.client.registry().await else {
            return;
        };
        let Ok(versions) = registry.watch_versions().await else {
            return;
        };
        let namespace = self.client.namespace().clone();
        let mut versions = std::pin::pin!(versions);
        loop {
            let version = tokio::select! {
                version = versions.next() => version,
                () = stop.cancelled() => return,
            };
            let Some(version) = version else { return };
            let urn =
                herald::registry::data_schema_urn(&namespace, &version.event_type, version.version);
            if let Ok(compiled) =
                herald::schema::CompiledSchema::compile(&version.event_type, version.schema)
            {
                tracing::debug!(data_schema = %urn, "new schema version cached");
                self.cache.write().insert(urn, Arc::new(compiled));
            }
        }
    }

    fn warn_once(&self, event_type: &str, reason: &str) {
        let key = format!("{event_type}\u{0}{reason}");
        if self.warned.lock().insert(key) {
            tracing::info!(event_type, reason, "validating against the local schema");
        }
    }

    /// The writer's schema when it is known without I/O: `Some(None)` for an event without
    /// `ce-dataschema`, `Some(Some(_))` for a cached version, `None` when
    /// [`Self::resolve`] has to ask the registry. Synchronous, so that the common case adds
    /// nothing to a delivery's future.
    pub(crate) fn known(
        &self,
        data_schema: Option<&str>,
        event_type: &str,
    ) -> Option<Option<Arc<herald::schema::CompiledSchema>>> {
        let Some(data_schema) = data_schema else {
            // The common case without a registry: no allocation once warned.
            if !self.without_header.read().contains(event_type) {
                self.without_header.write().insert(event_type.to_owned());
                self.warn_once(event_type, "events arrive without ce-dataschema");
            }
            return Some(None);
        };
        self.cache
            .read()
            .get(data_schema)
            .map(|schema| Some(Arc::clone(schema)))
    }

    /// The writer's schema: [`Self::known`], else fetched from the registry, compiled and
    /// kept; `None` (validate against the local schema) when it cannot be had.
    pub(crate) async fn resolve(
        &self,
        data_schema: Option<&str>,
        event_type: &str,
    ) -> Option<Arc<herald::schema::CompiledSchema>> {
        if let Some(known) = self.known(data_schema, event_type) {
            return known;
        }
        let data_schema = data_schema?;
        let Some((schema_type, version)) =
            herald::registry::parse_data_schema(self.client.namespace(), data_schema)
        else {
            self.warn_once(
                event_type,
                "ce-dataschema is not a schema of this namespace's registry",
            );
            return None;
        };
        let registry = match self.client.registry().await {
            Ok(registry) => registry,
            Err(error) => {
                self.warn_once(
                    event_type,
                    &format!("the registry is not available: {error}"),
                );
                return None;
            }
        };
        match registry.get(&schema_type, version).await {
            Ok(Some(stored)) => {
                match herald::schema::CompiledSchema::compile(&schema_type, stored.schema) {
                    Ok(compiled) => {
                        let compiled = Arc::new(compiled);
                        self.cache
                            .write()
                            .insert(data_schema.to_owned(), Arc::clone(&compiled));
                        Some(compiled)
                    }
                    Err(error) => {
                        self.warn_once(
                            event_type,
                            &format!("{data_schema} does not compile: {error}"),
                        );
                        None
                    }
                }
            }
            Ok(None) => {
                self.warn_once(event_type, &format!("{data_schema} is not in the registry"));
                None
            }
            Err(error) => {
                self.warn_once(
                    event_type,
                    &format!("reading {data_schema} failed: {error}"),
                );
                None
            }
        }
    }
}
