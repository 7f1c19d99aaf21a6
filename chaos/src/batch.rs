//! The events and audit of the batching failure test (`tests/batch_cluster.rs`, binary
//! `batch-worker`).

use herald::{Event, Namespace};
use serde::{Deserialize, Serialize};

/// An item of one key, batched per key.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "batch.item")]
pub struct Item {
    /// The batch key.
    pub key: String,
    /// The item's number.
    pub n: u32,
}

/// The function's batch size.
pub const SIZE: u32 = 100;
/// The function's batch timeout, in seconds.
pub const TIMEOUT_S: u64 = 2;

/// One line of the audit a handler writes when a batch's handler finished its work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit {
    /// The batch (its run's event id).
    pub batch: String,
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// The items' keys, in the batch's order.
    pub keys: Vec<String>,
    /// The items' numbers, in the batch's order.
    pub items: Vec<u32>,
    /// Unix microseconds.
    pub at_us: u64,
    /// The worker process.
    pub pid: u32,
}

/// Where handlers audit their batches.
pub fn audit_subject(namespace: &Namespace) -> String {
    format!("{}.audit.batch", namespace.as_str())
}

/// The stream that keeps the audit.
pub const AUDIT_STREAM: &str = "BATCH_AUDIT";
