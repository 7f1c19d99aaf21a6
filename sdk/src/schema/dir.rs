//! The reviewed `schemas/` folder: [`SchemaDir`] exports each event type's schema as
//! `<type>/<version>.json` and finds the ones that are stale.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Event;

/// The schema of one event type, as exported to or checked against the `schemas/` folder.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The event type.
    pub event_type: String,
    /// The Rust type it was generated from (for messages).
    pub rust_type: &'static str,
    /// The schema.
    pub schema: Value,
}

impl EventSchema {
    /// The generated schema of `E`.
    pub fn of<E: Event>() -> EventSchema {
        EventSchema {
            event_type: E::TYPE.to_owned(),
            rust_type: std::any::type_name::<E>(),
            schema: E::schema(),
        }
    }
}

/// What [`SchemaDir::export`] did for one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportOutcome {
    /// The newest committed version already equals the generated schema.
    Unchanged {
        /// The file.
        path: PathBuf,
    },
    /// A new version file was written.
    Written {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
}

/// An error reading or writing the `schemas/` folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaDirError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A committed file is not JSON.
    #[error("{path} is not valid JSON: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// A committed schema that is missing or differs from what its type generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleSchema {
    /// The event type.
    pub event_type: String,
    /// The Rust type.
    pub rust_type: &'static str,
    /// The newest committed file, if any.
    pub path: Option<PathBuf>,
}

impl fmt::Display for StaleSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(
                f,
                "{} differs from the schema that {} generates for {}",
                path.display(),
                self.rust_type,
                self.event_type
            ),
            None => write!(
                f,
                "no schema file for {} ({}) is committed",
                self.event_type, self.rust_type
            ),
        }
    }
}

/// The reviewed schema folder: `<root>/<type>/<version>.json`, versions 1, 2, 3…
#[derive(Debug, Clone)]
pub struct SchemaDir {
    root: PathBuf,
}

impl SchemaDir {
    /// A schema folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> SchemaDir {
        SchemaDir { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The newest committed version of a type: its number, path and schema.
    pub fn latest(
        &self,
        event_type: &str,
    ) -> Result<Option<(u32, PathBuf, Value)>, SchemaDirError> {
        let dir = self.root.join(event_type);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SchemaDirError::Io { path: dir, source }),
        };
        let mut newest: Option<(u32, PathBuf)> = None;
        for entry in entries {
            let entry = entry.map_err(|source| SchemaDirError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            let version = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(version) = version
                && newest.as_ref().is_none_or(|(v, _)| version > *v)
            {
                newest = Some((version, path));
            }
        }
        let Some((version, path)) = newest else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SchemaDirError::Io {
            path: path.clone(),
            source,
        })?;
        let schema = serde_json::from_str(&text).map_err(|source| SchemaDirError::Parse {
            path: path.clone(),
            source,
        })?;
        Ok(Some((version, path, schema)))
    }

    /// Writes each schema as a new version unless the newest committed one equals it.
    pub fn export(&self, schemas: &[EventSchema]) -> Result<Vec<ExportOutcome>, SchemaDirError> {
        let mut outcomes = Vec::with_capacity(schemas.len());
        for item in schemas {
            let latest = self.latest(&item.event_type)?;
            if let Some((_, path, committed)) = &latest
                && committed == &item.schema
            {
                outcomes.push(ExportOutcome::Unchanged { path: path.clone() });
                continue;
            }
            let version = latest.map_or(1, |(v, _, _)| v + 1);
            let dir = self.root.join(&item.event_type);
            std::fs::create_dir_all(&dir).map_err(|source| SchemaDirError::Io {
                path: dir.clone(),
                source,
            })?;
            let path = dir.join(format!("{version}.json"));
            let mut text = serde_json::to_string_pretty(&item.schema).map_err(|source| {
                SchemaDirError::Parse {
                    path: path.clone(),
                    source,
                }
            })?;
            text.push('\n');
            std::fs::write(&path, text).map_err(|source| SchemaDirError::Io {
                path: path.clone(),
                source,
            })?;
            outcomes.push(ExportOutcome::Written { path, version });
        }
        Ok(outcomes)
    }

    /// The schemas whose newest committed version is missing or differs from `schemas`.
    pub fn check(&self, schemas: &[EventSchema]) -> Result<Vec<StaleSchema>, SchemaDirError> {
        let mut stale = Vec::new();
        for item in schemas {
            match self.latest(&item.event_type)? {
                Some((_, _, committed)) if committed == item.schema => {}
                latest => stale.push(StaleSchema {
                    event_type: item.event_type.clone(),
                    rust_type: item.rust_type,
                    path: latest.map(|(_, path, _)| path),
                }),
            }
        }
        Ok(stale)
    }
}
