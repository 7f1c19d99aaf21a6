//! # herald-chaos: Herald's own failure test
//!
//! Herald promises that nothing is lost and nothing degrades silently, on one server or on
//! a cluster. This crate checks that promise under failure, with real processes:
//!
//! 1. it starts a 3-node nats-server cluster on 127.0.0.1 (`herald-local-nats`), provisions
//!    the namespace with every stream and bucket R3, and creates the stream `CHAOS_EFFECTS`;
//! 2. it starts K replicas of `chaos-worker` (the binary of this crate) as child processes:
//!    each runs the plain function `backfill-user-data` on `chaos.job` events, whose handler
//!    publishes an effect `{event_id, n, pid, attempt}` to `CHAOS_EFFECTS` and awaits its ack
//!    (no dedup id, so an event handled twice shows as two effects);
//! 3. while it publishes the valid events (`Client::publish`, pipelined) and the invalid ones
//!    (`{"n":"x"}`, with the raw client and CloudEvents headers), spread over the first 80 %
//!    of the chaos phase, it SIGKILLs a random replica every kill interval and starts a
//!    replacement, SIGTERMs one replica at 20 % of the phase (it must exit 0) and replaces
//!    it, and at 35 % SIGKILLs the node that leads the function's consumer, restarting it
//!    after the outage (10 s);
//! 4. it then polls, with a deadline, until every valid event has an effect, every invalid
//!    one is in `NS_DLQ` and the consumer has nothing pending or unacked, and checks:
//!    every valid event handled, a run record `backfill-user-data.<event-key>` with status
//!    `ok` in `ns-runs` for each, every invalid event dead-lettered exactly once with reason
//!    `schema_violation`, no replica exited on its own, every replica exits 0 on SIGTERM.
//!    Duplicate effects are counted and printed, not failed: delivery is at least once.
//!
//! [`run`] returns a [`Report`]; [`Report::failures`] lists what broke, and printing it
//! gives a table, the timeline and the failures. Every child process is killed by its pid
//! when the harness is dropped, also when a test panics.
//!
//! ## Running it
//!
//! The test `tests/failure.rs` runs 3,000 valid and 20 invalid events through 45 s of chaos
//! (`cargo test -p herald-chaos --test failure -- --nocapture` prints the report). Longer,
//! from the command line, against your own build:
//!
//! ```sh
//! cargo run -p herald-chaos --release --bin chaos -- --events 20000 --duration 120
//! cargo run -p herald-chaos --release --bin chaos -- --help   # every flag
//! ```
//!
//! Flags: `--events N --invalid M --duration S --kill-interval S --replicas K --seed X`,
//! `--outage S`, `--drain-timeout S`, `--ack-wait S`, `--log-dir DIR`. The `chaos` binary
//! exits 1 when a check failed. Replica logs go to `--log-dir`, or to a temporary folder
//! that is kept (and named in the report) when the run fails or `HERALD_CHAOS_KEEP_LOGS`
//! is set. The nats-server comes from `herald-local-nats` (`NATS_SERVER_BIN` to use your
//! own).
//!
//! The flow-control cluster tests (`tests/{concurrency,rate_limit,throttle,singleton}_cluster.rs`)
//! discard their workers' output; `HERALD_CHAOS_LOGS=/some/dir RUST_LOG=herald_worker=debug`
//! appends it to `/some/dir/workers.log` instead.

pub mod batch;
pub mod cron;
pub mod event;
pub mod flow;
mod harness;
pub mod invoke;
pub mod pace;
mod publisher;
mod replica_main;
mod replicas;
mod report;
pub mod single;
mod verify;

pub use replica_main::{now_us, replica_main};

use std::path::PathBuf;

pub use harness::{Config, run, worker_binary_next_to_current_exe};
pub use replicas::{SelfExit, TermOutcome};
pub use report::{Outage, Report};
pub use verify::ConsumerState;

/// Set (to anything) to keep the replicas' logs of a run that passed.
pub const LOGS_KEPT_ENV: &str = "HERALD_CHAOS_KEEP_LOGS";

/// Why the harness itself could not run (Herald's own failures are in
/// [`Report::failures`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChaosError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The `chaos-worker` binary is not there.
    #[error(
        "the chaos-worker binary is not at {0}; build it with `cargo build -p herald-chaos --bins` \
         (with --release for a release run)"
    )]
    WorkerBinaryMissing(PathBuf),
    /// Starting or restarting a nats-server failed.
    #[error("local nats-server: {0}")]
    Cluster(#[from] herald_local_nats::Error),
    /// Connecting the harness's client failed.
    #[error("connecting to the cluster: {0}")]
    Connect(#[from] herald::ConnectError),
    /// A NATS operation of the harness failed.
    #[error("{action}: {reason}")]
    Nats {
        /// What the harness was doing.
        action: String,
        /// What went wrong.
        reason: String,
    },
    /// A replica could not be started.
    #[error("starting a chaos-worker replica ({binary}): {source}")]
    SpawnWorker {
        /// The binary.
        binary: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The replicas did not create the function's consumer in time.
    #[error("the replicas did not create the consumer in time: {reason}; their logs:\n{logs}")]
    WorkersNotReady {
        /// The last error looking the consumer up.
        reason: String,
        /// The last lines of each replica's log.
        logs: String,
    },
    /// A file operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What the harness was doing.
        action: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A task of the harness failed.
    #[error("a harness task failed: {0}")]
    Task(String),
}
