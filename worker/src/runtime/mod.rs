//! The worker runtime: per function and consumer, a lane task feeds deliveries to [`FunctionLoop::handle`],
//! which reads each message once, decides its fate as a value and settles it in one place.
//!
//! ```text
//! pull.rs      one task per consumer: request.rs takes places in the window (concurrency
//!              + what the pace says the handlers finish within a second) and asks for at
//!              most that many; every answer comes to one inbox (inbox.rs); each delivery
//!              one future of the task; plain acks confirmed within 100 ms
//! group.rs     messages that arrived together: read once (delivery.rs), their run records
//!              in one read (run_store/many.rs), plain first deliveries left out (no run of
//!              theirs can exist yet)
//! delivery.rs  Delivery::read: delivery count, stream sequence, envelope (once)
//! attempt.rs   prepare: budget, finished run, run state, handler permit, decode -> Outcome
//!              run: handler under its timeout, progress acks, shutdown -> Outcome
//!              count_failure: a failure inside steps is counted per step (runs bucket)
//! decide.rs    decide(Outcome, Facts) -> Settlement        (pure, table-tested)
//! settle.rs    settle(Delivery, Settlement): the only code that acks, NAKs, terms or
//!              dead-letters; the sweeper settles through it too
//! confirm.rs   one confirmed ack for the plain runs of a pull request, or their records
//! ```
//!
//! `worker.rs` starts everything (and waits out outages at start-up), `consumer.rs` keeps
//! each function's consumer as configured, `shutdown.rs` stops it, `continuation.rs`
//! schedules continuations and wake-ups, `sweeper.rs` dead-letters what ran out of
//! deliveries with no worker alive, `writer_schemas.rs` caches the registry's schemas.

pub(crate) mod ack_subject;
mod activity;
mod attempt;
mod batch;
mod cancel_on;
pub(crate) mod concurrency;
mod confirm;
mod consumer;
pub(crate) mod continuation;
mod converge;
mod debounce;
pub(crate) mod decide;
mod deliveries;
mod delivery;
pub(crate) mod failures;
mod group;
mod inbox;
mod limits;
mod overlap;
mod pace;
mod parked;
mod pull;
mod request;
mod settle;
mod shutdown;
mod singleton;
mod stall;
mod start;
mod sweeper;
mod timeouts;
pub(crate) mod turnstile;
mod worker;
mod writer_schemas;

use std::sync::Arc;
use std::time::Duration;

use herald::Client;
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::function::Function;
use crate::steps::RunStore;
use crate::telemetry::{FunctionCounts, Metrics, Spans};

pub use shutdown::{RunningWorker, ShutdownReport, shutdown_signal};
pub(crate) use start::Readiness;
pub use worker::{Worker, WorkerBuilder, WorkerError};

/// What every function of a worker shares.
pub(crate) struct Shared {
    client: Client,
    events_stream: String,
    events_prefix: String,
    stop: CancellationToken,
    abandon: CancellationToken,
    /// The tasks that run deliveries: lanes and large groups. Shutdown waits for them.
    tracker: TaskTracker,
    writer_schemas: Arc<writer_schemas::WriterSchemas>,
    runs: Option<RunStore>,
    metrics: Metrics,
    spans: Spans,
    log_payloads: bool,
    /// The server has scheduled messages (2.12+).
    schedules: bool,
    /// `NS_EVENTS` accepts `Nats-TTL`, so schedules can outlive its `max_age`.
    schedules_ttl: bool,
    /// `NS_EVENTS`' duplicate window is at least its `max_age` (neither zero): a republished
    /// event is dropped for as long as its run record would be kept, so plain first
    /// deliveries need no record (protocol section 7).
    dedup_covers_retention: bool,
    /// Where activity records go (protocol section 18); `None` when they are off.
    activity: Option<activity::Activity>,
}

/// One function's runtime: its consumer binding, permits and counters.
pub(crate) struct FunctionLoop {
    shared: Arc<Shared>,
    function: Function,
    /// The function's own consumer: its binding and window.
    events: consumer::Lane,
    /// Its redrive consumer's, used when it has one (protocol section 3).
    redrive: consumer::Lane,
    /// Handler permits: the function's concurrency, shared by both consumers' deliveries.
    permits: Arc<Semaphore>,
    /// How long handlers have been taking, which sets how far ahead the loop pulls.
    pace: pace::Pace,
    /// Set while finished runs cannot be recorded: no handler starts meanwhile.
    stall: stall::Stall,
    /// The `function` attribute of the histograms.
    function_attribute: [KeyValue; 1],
    counts: Arc<FunctionCounts>,
    /// The function's cancelled runs (followed from their cancel records).
    cancelled: Arc<crate::cancel::watch::Cancelled>,
    /// With a throttle or rate limit: paced decisions in arrival order.
    turnstile: Option<Arc<turnstile::Turnstile>>,
    /// The consumer's leader elections, against which plain acks are confirmed.
    leadership: confirm::Leadership,
}

/// The most messages a function's worker may hold at once, unless its concurrency is higher;
/// fewer while its handlers are slow or its messages large ([`pace::Pace::target`]).
const MIN_WINDOW: usize = 1024;

/// The messages a function's worker may hold at once: `max(1024, concurrency)`.
pub(crate) fn window_size(concurrency: usize) -> usize {
    concurrency.max(1).max(MIN_WINDOW)
}

impl FunctionLoop {
    fn new(shared: Arc<Shared>, function: Function) -> FunctionLoop {
        let concurrency = function.settings.concurrency.max(1);
        let window_size = window_size(concurrency);
        let counts = shared.metrics.counts(&function.id);
        FunctionLoop {
            events: consumer::Lane::new(&function.id, window_size),
            redrive: consumer::Lane::new(
                &herald::protocol::redrive_consumer(&function.id),
                window_size,
            ),
            permits: Arc::new(Semaphore::new(concurrency)),
            pace: pace::Pace::default(),
            stall: stall::Stall::default(),
            function_attribute: crate::telemetry::function_attribute(&function.id),
            counts,
            cancelled: Arc::default(),
            turnstile: (function.settings.throttle.is_some()
                || function.settings.rate_limit.is_some())
            .then(Arc::default),
            leadership: confirm::Leadership::default(),
            function,
            shared,
        }
    }

    /// The binding and window of one of the function's consumers.
    fn lane(&self, kind: consumer::LaneKind) -> &consumer::Lane {
        match kind {
            consumer::LaneKind::Events => &self.events,
            consumer::LaneKind::Redrive => &self.redrive,
        }
    }

    /// How long a record write or read may keep retrying while the delivery is kept alive
    /// with progress acks: twice `ack_wait`, at least 10 s (a leader election takes a few).
    fn patience(&self) -> Duration {
        (self.function.settings.ack_wait * 2).max(Duration::from_secs(10))
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
