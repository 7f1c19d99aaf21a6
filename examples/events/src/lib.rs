//! The event types of Herald's examples, shared by the quickstart and the other examples.
//!
//! Their JSON Schemas are committed under `schemas/` at the repository root; after changing a
//! type, regenerate them with `cargo run -p example-events --bin export-schemas` and review
//! the diff. A test fails while the committed files differ from what the types generate.

use herald::Event;
use herald::schema::EventSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user connected a data source; its data must now be backfilled in the background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(type = "source.connected")]
pub struct SourceConnected {
    /// The connected source.
    pub source_id: Uuid,
    /// The user who connected it.
    #[event(subject)]
    pub user_id: Uuid,
    /// Which kind of source it is.
    pub kind: SourceKind,
}

/// Kinds of data sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A Google Drive folder.
    GoogleDrive,
    /// A GitHub repository.
    Github,
    /// A Postgres database.
    Postgres,
}

/// A user signed up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(type = "user.signup")]
pub struct UserSignup {
    /// The new user.
    #[event(subject)]
    pub user_id: Uuid,
    /// Their e-mail address.
    #[schemars(email)]
    pub email: String,
    /// The plan they chose, if any.
    #[serde(default)]
    pub plan: Option<String>,
}

/// The schemas of every example event, for export and for the freshness test.
pub fn schemas() -> Vec<EventSchema> {
    vec![
        EventSchema::of::<SourceConnected>(),
        EventSchema::of::<UserSignup>(),
    ]
}

/// The `schemas/` folder at the repository root.
pub fn schema_dir() -> herald::schema::SchemaDir {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.ancestors().nth(2).unwrap_or(manifest);
    herald::schema::SchemaDir::new(root.join("schemas"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schemas_match_the_types() {
        let stale = super::schema_dir().check(&super::schemas()).unwrap();
        assert!(
            stale.is_empty(),
            "{}\nRegenerate with `cargo run -p example-events --bin export-schemas` and review the diff.",
            stale
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
