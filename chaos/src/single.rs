//! The events and audit of the singleton failure test (`tests/singleton_cluster.rs`, binary
//! `single-worker`).

use herald::{Event, Namespace};
use serde::{Deserialize, Serialize};

/// A request on one key, handled by two singleton functions: [`SKIP`] and [`CANCEL`].
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "single.request")]
pub struct Request {
    /// The singleton key.
    pub key: String,
    /// The publisher that sent it.
    pub publisher: u32,
    /// Its number at that publisher.
    pub n: u32,
}

/// The function in `SingletonMode::Skip`.
pub const SKIP: &str = "single_skip";
/// The function in `SingletonMode::Cancel`.
pub const CANCEL: &str = "single_cancel";
/// The steps of a run.
pub const STEPS: u32 = 4;
/// The work of a step, in milliseconds.
pub const STEP_MS: u64 = 250;

/// One line of the audit a handler writes: a step of a run started or ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Audit {
    /// The function: [`SKIP`] or [`CANCEL`].
    pub function: String,
    /// The run: its event id.
    pub run: String,
    /// The singleton key.
    pub key: String,
    /// The step (0 to [`STEPS`] - 1).
    pub step: u32,
    /// `true` at the start, `false` at the end.
    pub start: bool,
    /// Unix microseconds.
    pub at_us: u64,
    /// The worker process.
    pub worker: u32,
}

/// Where handlers audit their steps.
pub fn audit_subject(namespace: &Namespace) -> String {
    format!("{}.audit.single", namespace.as_str())
}

/// The stream that keeps the audit.
pub const AUDIT_STREAM: &str = "SINGLE_AUDIT";
