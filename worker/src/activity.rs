//! Per-attempt activity records (protocol section 18): what a console needs to show when an
//! attempt started, how it ended and why, and which runs are in flight.
//!
//! A worker publishes an [`ActivityRecord`] when a handler is still running at its first
//! progress ack (`ack_wait / 3`) and one when the attempt is settled (except a first
//! attempt that succeeds before that: its run record tells it), on `ns.activity.<F>.<event-key>` into the stream `NS_ACTIVITY`, with a core
//! NATS publish that waits for nothing: a lost record costs observability, never
//! correctness. `WorkerBuilder::activity_records(false)` (or `HERALD_ACTIVITY=off`) turns
//! them off.

use serde::{Deserialize, Serialize};

/// The environment variable that turns activity records off when set to `off`, `0` or
/// `false`.
pub const ACTIVITY_ENV: &str = "HERALD_ACTIVITY";

/// Whether a record opens or closes an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivityKind {
    /// The handler started.
    Started,
    /// The attempt was settled (with or without running the handler).
    Finished,
}

/// One activity record: small JSON, one per attempt start and end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// Start or end of the attempt.
    pub kind: ActivityKind,
    /// The function.
    pub function: String,
    /// The run key, `F.<event-key>`.
    pub run: String,
    /// The event id (`ce-id`).
    pub event_id: String,
    /// The event type (`ce-type`).
    #[serde(default)]
    pub event_type: String,
    /// The delivery count of this attempt (1 for the first).
    pub attempt: u32,
    /// The event's sequence in `NS_EVENTS`.
    #[serde(default)]
    pub stream_seq: u64,
    /// When the record was made (Unix milliseconds).
    pub at_ms: u64,
    /// When the handler started (Unix milliseconds); on `finished` records of attempts that
    /// ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// How the attempt ended (`finished` only): `ok`, `retry`, `continued`, `sleeping`,
    /// `dead_lettered`, `cancelled`, `skipped`, `parked` or `handed_back`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The error of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the next attempt comes, for `retry` and `continued` (milliseconds from `at_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The step that failed or sleeps, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The attempt's OpenTelemetry trace id (32 hex digits), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// Whether the environment turns activity records off.
pub(crate) fn disabled_by_env() -> bool {
    std::env::var(ACTIVITY_ENV).is_ok_and(|value| {
        matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    })
}
