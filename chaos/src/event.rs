//! What the chaos worker runs and what it leaves behind: the event, the function id and
//! the effect record.

use herald::Namespace;
use serde::{Deserialize, Serialize};

/// The id of the one function the chaos worker runs.
pub const FUNCTION_ID: &str = "backfill-user-data";

/// The stream where the handler records its effects, one message per successful attempt.
/// It has no duplicate detection: an effect recorded twice is two messages, so duplicates
/// are countable.
pub const EFFECTS_STREAM: &str = "CHAOS_EFFECTS";

/// The event the harness publishes. `n` is a required integer, so `{"n":"x"}` breaks the
/// schema and is dead-lettered with reason `schema_violation` without running the handler.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, herald::Event)]
#[event(type = "chaos.job")]
pub struct ChaosJob {
    /// The job's number, 0 to N-1.
    pub n: u64,
}

/// What the handler records for each successful attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The event id (`ce-id`).
    pub event_id: String,
    /// The job's number.
    pub n: u64,
    /// The process id of the replica that ran the attempt.
    pub pid: u32,
    /// The attempt, from 1.
    pub attempt: u32,
}

/// The subject effects of namespace `namespace` are published to: `chaos.effects.<ns>`.
pub fn effects_subject(namespace: &Namespace) -> String {
    format!("chaos.effects.{}", namespace.as_str())
}

/// The subjects of [`EFFECTS_STREAM`].
pub const EFFECTS_SUBJECTS: &str = "chaos.effects.>";
