//! [`Worker`] and [`WorkerBuilder`]: what a worker runs and how; `start.rs` starts it.

use std::future::Future;
use std::time::Duration;

use herald::Client;

use super::shutdown::shutdown_signal;
use crate::function::Function;
use crate::telemetry::TraceMode;

/// The worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Two functions share an id.
    #[error("two functions are named {id}; function ids are unique in a namespace")]
    DuplicateFunction {
        /// The id.
        id: String,
    },
    /// No function was added.
    #[error("the worker has no function; add one with .function(..)")]
    NoFunction,
    /// The namespace's streams could not be provisioned.
    #[error(transparent)]
    Provision(#[from] herald::ProvisionError),
    /// The HTTP endpoint could not listen.
    #[error("cannot serve health and metrics on {address}: {source}")]
    Http {
        /// The address.
        address: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The runs bucket cannot be opened.
    #[error(transparent)]
    Runs(#[from] crate::RunStoreError),
    /// The worker was stopped before it finished starting.
    #[error("the worker was stopped while it was starting")]
    Stopped,
    /// A function was described wrongly (an invalid id or trigger, a bad setting).
    #[error(transparent)]
    Function(#[from] crate::FunctionError),
    /// A function's cron schedule could not be put in place.
    #[error(transparent)]
    Schedule(#[from] crate::cron::ScheduleError),
    /// A function's consumer could not be created or updated.
    #[error("cannot create or update the consumer of function {function}: {source}")]
    Consumer {
        /// The function.
        function: String,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
    /// A function's `max_ack_pending` is above what the server, the account or the events
    /// stream allows.
    #[error(
        "function {function} asks for max_ack_pending {wanted}, which the server's limits refuse ({source}); \
         set Function::max_ack_pending within the limit, or leave it unset for the server's default"
    )]
    AckPendingAboveLimit {
        /// The function.
        function: String,
        /// The `max_ack_pending` it sets.
        wanted: i64,
        /// The server's refusal.
        #[source]
        source: async_nats::Error,
    },
}

/// Builds a [`Worker`]: the functions it runs and how it shuts down.
#[derive(Debug)]
#[must_use = "a worker does nothing until started or run"]
pub struct WorkerBuilder {
    pub(super) client: Client,
    pub(super) functions: Vec<Function>,
    pub(super) shutdown_grace: Duration,
    pub(super) sweeper: bool,
    pub(super) meter: Option<opentelemetry::metrics::Meter>,
    pub(super) trace_mode: TraceMode,
    pub(super) tracer: Option<opentelemetry::global::BoxedTracer>,
    pub(super) stats_interval: Duration,
    pub(super) http: Option<std::net::SocketAddr>,
    pub(super) prometheus: Option<prometheus::Registry>,
    pub(super) log_payloads: bool,
    pub(super) activity: bool,
}

/// The worker runtime: one pull loop per function, handlers under a per-replica concurrency
/// limit, retries with backoff, dead letters, graceful shutdown.
///
/// ```no_run
/// # use herald_worker::{Ctx, Function, HandlerError, Worker};
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
/// # #[event(type = "source.connected")]
/// # struct SourceConnected { source_id: String }
/// # async fn backfill(event: SourceConnected, ctx: Ctx) -> Result<(), HandlerError> { Ok(()) }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = herald::Client::connect("nats://127.0.0.1:4222").await?;
/// Worker::builder(client)
///     .function(Function::new("backfill-user-data").on::<SourceConnected>().handler(backfill))
///     .run() // until SIGTERM or ctrl-c
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Worker;

impl Worker {
    /// Starts describing a worker that uses `client`.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder {
            client,
            functions: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            sweeper: true,
            meter: None,
            trace_mode: TraceMode::Child,
            tracer: None,
            stats_interval: Duration::from_secs(10),
            http: None,
            prometheus: None,
            log_payloads: false,
            activity: true,
        }
    }
}

impl WorkerBuilder {
    /// Adds a function.
    pub fn function(mut self, function: Function) -> Self {
        self.functions.push(function);
        self
    }

    /// How long running handlers may finish after shutdown begins (default 30 s); what is
    /// still running then is NAKed so that another replica takes it at once.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Run the advisory sweeper, the backstop that dead-letters events that ran out of
    /// deliveries with no worker alive (default on).
    pub fn sweeper(mut self, enabled: bool) -> Self {
        self.sweeper = enabled;
        self
    }

    /// The meter for the worker's metrics (default: the global meter provider's `herald`
    /// meter, a no-op unless the application installs a provider).
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Whether an attempt's span is a child of the producer's span (default) or links to it.
    pub fn trace_mode(mut self, mode: TraceMode) -> Self {
        self.trace_mode = mode;
        self
    }

    /// The tracer provider of the worker's spans (default: the global provider at
    /// [`start`](Self::start), a no-op unless the application installs one). The sampler
    /// decides before Herald builds any attribute, so unsampled attempts cost next to nothing.
    pub fn tracer_provider<P>(mut self, provider: &P) -> Self
    where
        P: opentelemetry::trace::TracerProvider,
        P::Tracer: Send + Sync + 'static,
        <P::Tracer as opentelemetry::trace::Tracer>::Span: Send + Sync + 'static,
    {
        self.tracer = Some(opentelemetry::global::BoxedTracer::new(Box::new(
            provider.tracer("herald"),
        )));
        self
    }

    /// How often the consumer gauges (pending, ack pending, redelivered) are polled from the
    /// server (default 10 s).
    pub fn stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Serves `/healthz` (the process is alive), `/readyz` (connected, every consumer bound)
    /// and, with [`prometheus`](Self::prometheus), `/metrics` over HTTP on `address`.
    pub fn http(mut self, address: std::net::SocketAddr) -> Self {
        self.http = Some(address);
        self
    }

    /// The Prometheus registry `/metrics` serves (the one an `opentelemetry-prometheus`
    /// exporter writes to).
    pub fn prometheus(mut self, registry: prometheus::Registry) -> Self {
        self.prometheus = Some(registry);
        self
    }

    /// Log the payload of failed and dead-lettered events at debug level (off by default:
    /// payloads may hold personal data). For debugging only.
    pub fn log_payloads(mut self, enabled: bool) -> Self {
        self.log_payloads = enabled;
        self
    }

    /// Publish per-attempt activity records (protocol section 18), which the console shows
    /// as attempts and in-flight runs. On by default; `HERALD_ACTIVITY=off` also turns them
    /// off. They are fire-and-forget: turning them off changes nothing else.
    pub fn activity_records(mut self, enabled: bool) -> Self {
        self.activity = enabled;
        self
    }

    /// Runs until `signal` completes, then shuts down gracefully. A signal that comes while
    /// the worker is still starting (waiting for the cluster) stops it at once.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let mut signal = std::pin::pin!(signal);
        let worker = tokio::select! {
            worker = self.start() => worker?,
            () = &mut signal => {
                tracing::info!("stopped before the worker was ready");
                return Ok(());
            }
        };
        signal.await;
        worker.shutdown().await;
        Ok(())
    }

    /// Runs until SIGTERM or ctrl-c, then shuts down gracefully.
    pub async fn run(self) -> Result<(), WorkerError> {
        self.run_until(shutdown_signal()).await
    }
}
