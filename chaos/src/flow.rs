//! The events and audit of the concurrency failure test (`tests/concurrency_cluster.rs`,
//! binary `flow-worker`).

use herald::{Event, Namespace};
use serde::{Deserialize, Serialize};

/// A job of one key, limited per key and by a shared limit.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "flow.job")]
pub struct Job {
    /// The tenant: the concurrency key.
    pub key: String,
    /// The job's number.
    pub n: u32,
}

/// The per-key limit of the test's function.
pub const PER_KEY: u32 = 3;
/// The shared limit of the test's function.
pub const SHARED: u32 = 10;

/// One line of the audit a handler writes: a run started or ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit {
    /// The job's number.
    pub n: u32,
    /// Its key.
    pub key: String,
    /// `true` at the start, `false` at the end.
    pub start: bool,
    /// Unix microseconds.
    pub at_us: u64,
    /// The worker process.
    pub pid: u32,
}

/// Where handlers audit their runs.
pub fn audit_subject(namespace: &Namespace) -> String {
    format!("{}.audit.flow", namespace.as_str())
}
