//! # herald-worker: functions on NATS JetStream
//!
//! A [`Function`] is a named async handler triggered by event types. A [`Worker`] runs
//! functions: each owns a durable pull consumer (protocol section 3), shared by every replica
//! running it, so replicas split the work and several functions on one type each get every
//! event.
//!
//! Per delivery the worker takes a concurrency permit *before* pulling (no message waits in a
//! buffer while its ack timer runs), validates the payload against the event's schema,
//! decodes it, and runs the handler under its timeout while sending progress acks. Then:
//!
//! - `Ok` acks;
//! - an error (any `?`) NAKs with the backoff delay (1 s doubling, ±20 %), until the last
//!   attempt, which is dead-lettered with reason `handler_error`;
//! - [`HandlerError::terminal`], a schema violation or an undecodable payload are
//!   dead-lettered at once;
//! - a panic or a timeout is a failed attempt;
//! - a delivery beyond the attempts (the worker of the last attempt crashed) is dead-lettered
//!   without running the handler.
//!
//! A dead letter is published to `ns.dlq.<function>` and confirmed before the original is
//! terminated (protocol section 6).
//!
//! ```no_run
//! use herald_worker::{Ctx, Function, HandlerError, Worker};
//! # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
//! # #[event(type = "source.connected")]
//! # struct SourceConnected { source_id: String }
//!
//! async fn backfill(event: SourceConnected, ctx: Ctx) -> Result<(), HandlerError> {
//!     if event.source_id.is_empty() {
//!         return Err(HandlerError::terminal("no source id"));
//!     }
//!     tracing::info!(attempt = ctx.attempt(), "backfilling {}", event.source_id);
//!     Ok(())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = herald::Client::connect("nats://127.0.0.1:4222").await?;
//! Worker::builder(client)
//!     .function(
//!         Function::new("backfill-user-data")
//!             .on::<SourceConnected>()
//!             .attempts(5)
//!             .handler(backfill),
//!     )
//!     .run() // until SIGTERM or ctrl-c, then a graceful shutdown
//!     .await?;
//! # Ok(()) }
//! ```

pub mod activity;
mod backoff;
pub mod cancel;
pub mod cron;
mod dead_letter;
mod dlq;
mod envelope;
pub mod flow;
mod function;
mod health;
pub mod overview;
mod pause;
mod replay;
mod run_store;
mod runtime;
mod state;
mod steps;
pub mod telemetry;
mod test_worker;
pub mod wait;

pub use backoff::Backoff;
pub use cancel::{BulkCancel, BulkCancelReport, CancelError, CancelOutcome, cancel_run};
pub use cron::{CronError, CronTrigger, Tick};
pub use dead_letter::{DeadLetterReason, MAX_ERROR_BYTES};
pub use dlq::{DeadLetterEntry, DeadLetterError, DeadLetterFilter, DeadLetters};
pub use envelope::Envelope;
pub use function::{
    BatchBuilder, Ctx, FailedRun, Function, FunctionBuilder, FunctionError, HandlerError, Overlap,
    SingletonMode, StartFrom, check_function_id,
};
pub use herald::protocol::header::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_FUNCTION, DLQ_REASON, DLQ_STEP, DLQ_STREAM, DLQ_STREAM_SEQ,
    DLQ_SUBJECT, DLQ_TIME,
};
pub use herald::protocol::runs::{event_key, step_key_base};
pub use pause::{PauseError, PauseState, pause_end, pause_function, resume_function};
pub use replay::{Replay, ReplayError, ReplayOutcome, ReplayProgress};
pub use run_store::{RunReport, RunStore, RunStoreError};
pub use runtime::{
    RunningWorker, ShutdownReport, Worker, WorkerBuilder, WorkerError, shutdown_signal,
};
pub use state::{State, StatefulBuilder};
pub use steps::{FailureRecord, RunRecord, RunStatus, StepRecord};
pub use telemetry::TraceMode;
pub use test_worker::{SentEvent, TestOutcome, TestRun, TestWorker};
pub use wait::{AnyEvent, Awaited, Match};
