//! [`Worker`]: runs functions on their durable pull consumers.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::{FutureExt, StreamExt};
use herald::Client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dead_letter::{self, DeadLetter, DeadLetterReason};
use crate::envelope::{self, Envelope};
use crate::function::{Ctx, Decoded, ErrorKind, Function, StartFrom};
use crate::steps::{FailureRecord, RunRecord, RunState, RunStore};
use crate::telemetry::{
    ConsumerStats, FunctionCounts, Metrics, RunOutcome, SharedStats, Spans, TraceMode,
    function_attribute, set_outcome,
};
use opentelemetry::KeyValue;

/// How long one pull request waits for messages before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The most messages asked for in one pull request.
const MAX_BATCH: usize = 256;
/// The delay of a NAK after a dead letter could not be published.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

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
    /// A function's consumer could not be created or updated.
    #[error("cannot create or update the consumer of function {function}: {source}")]
    Consumer {
        /// The function.
        function: String,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
}

/// Builds a [`Worker`]: the functions it runs and how it shuts down.
#[derive(Debug)]
#[must_use = "a worker does nothing until started or run"]
pub struct WorkerBuilder {
    client: Client,
    functions: Vec<Function>,
    shutdown_grace: Duration,
    sweeper: bool,
    meter: Option<opentelemetry::metrics::Meter>,
    trace_mode: TraceMode,
    tracer: Option<opentelemetry::global::BoxedTracer>,
    stats_interval: Duration,
    http: Option<std::net::SocketAddr>,
    prometheus: Option<prometheus::Registry>,
    log_payloads: bool,
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
///     .function(Function::new("backfill-user-data").on::<SourceConnected>().handler(backfill)?)
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

    /// Provisions the namespace, converges every function's consumer, and starts pulling.
    /// Returns once the consumers exist, so events published afterwards are seen.
    pub async fn start(self) -> Result<RunningWorker, WorkerError> {
        if self.functions.is_empty() {
            return Err(WorkerError::NoFunction);
        }
        let mut seen = HashSet::new();
        for function in &self.functions {
            if !seen.insert(function.id.clone()) {
                return Err(WorkerError::DuplicateFunction {
                    id: function.id.to_string(),
                });
            }
        }
        let report = self.client.provision().await?;
        for (name, drift) in report.drifted() {
            let list: Vec<String> = drift.iter().map(ToString::to_string).collect();
            tracing::warn!(resource = name, drift = %list.join("; "),
                "stream config differs from Herald's; run `herald provision --apply` to update it");
        }
        let stop = CancellationToken::new();
        let abandon = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut runtimes = Vec::new();
        let writer_schemas = Arc::new(WriterSchemas::new(self.client.clone()));
        let meter = self
            .meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter("herald"));
        let metrics = Metrics::new(&meter);
        let spans = Spans::new(
            self.tracer
                .unwrap_or_else(|| opentelemetry::global::tracer("herald")),
            self.trace_mode,
        );
        let runs = match RunStore::open(&self.client).await {
            Ok(store) => Some(store),
            Err(error) => {
                tracing::warn!(%error, "the runs bucket is not available: durable steps and idempotent runs are off");
                None
            }
        };
        if !self.client.supports_schedules() {
            tracing::warn!(
                server = %self.client.nats().server_info().version,
                "this nats-server has no scheduled messages (2.12+): ctx.sleep dead-letters the run and step retries stay within one delivery's budget"
            );
        }
        for function in self.functions {
            let runtime = Arc::new(FunctionRuntime::new(
                self.client.clone(),
                function,
                stop.clone(),
                abandon.clone(),
                tracker.clone(),
                Arc::clone(&writer_schemas),
                runs.clone(),
                metrics.clone(),
                spans.clone(),
                self.log_payloads,
            ));
            let consumer = runtime.converge().await?;
            runtimes.push((runtime, consumer));
        }
        let mut loops = Vec::new();
        let all: Vec<Arc<FunctionRuntime>> = runtimes.iter().map(|(r, _)| Arc::clone(r)).collect();
        loops.push(tokio::spawn(poll_stats(
            all.clone(),
            metrics.stats.clone(),
            self.stats_interval,
            stop.clone(),
        )));
        let mut http_address = None;
        if let Some(address) = self.http {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| WorkerError::Http { address, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| WorkerError::Http { address, source })?;
            http_address = Some(local);
            tracing::info!(address = %local, "serving /healthz, /readyz and /metrics");
            loops.push(tokio::spawn(crate::health::serve(
                listener,
                self.client.clone(),
                all.clone(),
                self.prometheus.clone(),
                stop.clone(),
            )));
        }
        for (runtime, consumer) in runtimes {
            loops.push(tokio::spawn(runtime.pull_loop(consumer)));
        }
        loops.push(tokio::spawn(
            Arc::clone(&writer_schemas).watch(stop.clone()),
        ));
        if self.sweeper {
            loops.push(tokio::spawn(dead_letter::sweep(
                self.client.clone(),
                stop.clone(),
            )));
        }
        tracing::info!(functions = loops.len(), "worker started");
        Ok(RunningWorker {
            http_address,
            client: self.client,
            stop,
            abandon,
            tracker,
            loops,
            grace: self.shutdown_grace,
        })
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), WorkerError> {
        let worker = self.start().await?;
        signal.await;
        worker.shutdown().await;
        Ok(())
    }

    /// Runs until SIGTERM or ctrl-c, then shuts down gracefully.
    pub async fn run(self) -> Result<(), WorkerError> {
        self.run_until(shutdown_signal()).await
    }
}

/// The event id of a delivery, for log events.
fn event_id(message: &jetstream::Message) -> &str {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(herald::headers::ID))
        .map_or("", |v| v.as_str())
}

/// The stream sequence of a delivery, for log events.
fn stream_seq(message: &jetstream::Message) -> u64 {
    message.info().map_or(0, |i| i.stream_sequence)
}

/// Polls every function's consumer info for the gauges.
async fn poll_stats(
    functions: Vec<Arc<FunctionRuntime>>,
    stats: SharedStats,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        for function in &functions {
            let consumer: Result<jetstream::consumer::PullConsumer, _> = function
                .client
                .jetstream()
                .get_consumer_from_stream(function.function.id.as_ref(), &function.events_stream)
                .await;
            if let Ok(mut consumer) = consumer
                && let Ok(info) = consumer.info().await
            {
                stats.write().insert(
                    function.function.id.to_string(),
                    ConsumerStats {
                        pending: info.num_pending,
                        ack_pending: info.num_ack_pending as u64,
                        redelivered: info.num_redelivered as u64,
                    },
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

impl FunctionRuntime {
    /// True while the function's consumer is bound (no re-creation pending).
    pub(crate) fn is_bound(&self) -> bool {
        !self.needs_converge.load(Ordering::SeqCst)
    }

    /// The function id.
    pub(crate) fn id(&self) -> &str {
        &self.function.id
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

/// A started worker; [`shutdown`](RunningWorker::shutdown) stops it.
#[derive(Debug)]
pub struct RunningWorker {
    http_address: Option<std::net::SocketAddr>,
    client: Client,
    stop: CancellationToken,
    abandon: CancellationToken,
    tracker: TaskTracker,
    loops: Vec<tokio::task::JoinHandle<()>>,
    grace: Duration,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True if every running handler finished within the grace period.
    pub finished_in_grace: bool,
}

impl RunningWorker {
    /// Where `/healthz`, `/readyz` and `/metrics` are served, with [`WorkerBuilder::http`].
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.http_address
    }

    /// Stops pulling, lets running handlers finish within the grace period, NAKs what is
    /// still running so another replica takes it at once, and flushes the connection.
    pub async fn shutdown(self) -> ShutdownReport {
        tracing::info!("shutdown: no more pulls");
        self.stop.cancel();
        for handle in self.loops {
            let _ = handle.await;
        }
        self.tracker.close();
        tracing::info!(in_flight = self.tracker.len(), grace = ?self.grace, "shutdown: waiting for running handlers");
        let finished_in_grace = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        if !finished_in_grace {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "shutdown: grace period over, handing the rest back"
            );
            self.abandon.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await;
        }
        if let Err(error) = self.client.nats().flush().await {
            tracing::warn!(%error, "shutdown: flushing the connection failed");
        }
        tracing::info!("shutdown: done");
        ShutdownReport { finished_in_grace }
    }
}

/// One function's runtime state.
pub(crate) struct FunctionRuntime {
    client: Client,
    function: Function,
    events_stream: String,
    events_prefix: String,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    abandon: CancellationToken,
    tracker: TaskTracker,
    needs_converge: AtomicBool,
    max_batch: usize,
    writer_schemas: Arc<WriterSchemas>,
    runs: Option<RunStore>,
    metrics: Metrics,
    /// The `function` attribute of the histograms.
    function_attribute: [KeyValue; 1],
    counts: Arc<FunctionCounts>,
    spans: Spans,
    log_payloads: bool,
}

/// How one attempt ended.
enum Outcome {
    Done,
    Failed(crate::function::HandlerError),
    Panicked(String),
    TimedOut,
    Abandoned,
}

impl FunctionRuntime {
    #[allow(clippy::too_many_arguments)]
    fn new(
        client: Client,
        function: Function,
        stop: CancellationToken,
        abandon: CancellationToken,
        tracker: TaskTracker,
        writer_schemas: Arc<WriterSchemas>,
        runs: Option<RunStore>,
        metrics: Metrics,
        spans: Spans,
        log_payloads: bool,
    ) -> FunctionRuntime {
        let namespace = client.namespace();
        let max_batch = function.settings.concurrency.clamp(1, MAX_BATCH);
        let function_id = Arc::clone(&function.id);
        let counts = metrics.counts(&function_id);
        FunctionRuntime {
            events_stream: namespace.events_stream(),
            events_prefix: format!("{}.events.", namespace.as_str()),
            permits: Arc::new(Semaphore::new(function.settings.concurrency)),
            client,
            function,
            stop,
            abandon,
            tracker,
            needs_converge: AtomicBool::new(false),
            max_batch,
            writer_schemas,
            runs,
            metrics,
            function_attribute: function_attribute(&function_id),
            counts,
            spans,
            log_payloads,
        }
    }

    /// The consumer config of protocol section 3.
    fn consumer_config(&self) -> pull::Config {
        let namespace = self.client.namespace();
        let settings = &self.function.settings;
        let mut filter_subjects: Vec<String> = self
            .function
            .triggers
            .iter()
            .map(|t| namespace.event_subject(t))
            .collect();
        filter_subjects.push(namespace.redrive_subject(&self.function.id));
        let deliver_policy = match settings.start {
            StartFrom::New => jetstream::consumer::DeliverPolicy::New,
            StartFrom::All => jetstream::consumer::DeliverPolicy::All,
            StartFrom::Time(time) => jetstream::consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(time),
            },
        };
        pull::Config {
            durable_name: Some(self.function.id.to_string()),
            filter_subjects,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: i64::from(settings.attempts) + 2,
            max_ack_pending: settings.max_ack_pending.unwrap_or(0),
            deliver_policy,
            ..Default::default()
        }
    }

    /// Creates the consumer, or updates it when the fields Herald sets differ.
    async fn converge(&self) -> Result<jetstream::consumer::PullConsumer, WorkerError> {
        let error = |source: async_nats::Error| WorkerError::Consumer {
            function: self.function.id.to_string(),
            source,
        };
        let want = self.consumer_config();
        let js = self.client.jetstream();
        match js
            .get_consumer_from_stream::<pull::Config, _, _>(
                self.function.id.as_ref(),
                &self.events_stream,
            )
            .await
        {
            Ok(mut consumer) => {
                let have = consumer
                    .info()
                    .await
                    .map_err(|e| error(e.into()))?
                    .config
                    .clone();
                let mut want_filters = want.filter_subjects.clone();
                let mut have_filters = have.filter_subjects.clone();
                if have_filters.is_empty() && !have.filter_subject.is_empty() {
                    have_filters.push(have.filter_subject.clone());
                }
                want_filters.sort();
                have_filters.sort();
                let same = want_filters == have_filters
                    && want.ack_wait == have.ack_wait
                    && want.max_deliver == have.max_deliver
                    && (want.max_ack_pending == 0 || want.max_ack_pending == have.max_ack_pending)
                    && have.ack_policy == jetstream::consumer::AckPolicy::Explicit;
                if same {
                    return Ok(consumer);
                }
                tracing::info!(function = %self.function.id, "consumer config differs; updating it");
                let updated = jetstream::consumer::Config {
                    filter_subjects: want.filter_subjects,
                    filter_subject: String::new(),
                    ack_wait: want.ack_wait,
                    max_deliver: want.max_deliver,
                    max_ack_pending: if want.max_ack_pending == 0 {
                        have.max_ack_pending
                    } else {
                        want.max_ack_pending
                    },
                    ..have
                };
                js.update_consumer_on_stream::<jetstream::consumer::Config, _>(
                    updated,
                    &self.events_stream,
                )
                .await
                .map_err(|e| error(e.into()))?;
                js.get_consumer_from_stream::<pull::Config, _, _>(
                    self.function.id.as_ref(),
                    &self.events_stream,
                )
                .await
                .map_err(|e| error(e.into()))
            }
            Err(lookup) => {
                tracing::debug!(function = %self.function.id, error = %lookup, "creating the consumer");
                js.create_consumer_on_stream(want, &self.events_stream)
                    .await
                    .map_err(|e| error(e.into()))
            }
        }
    }

    /// Takes permits, then pulls at most that many messages; never more than free permits.
    async fn pull_loop(self: Arc<Self>, mut consumer: jetstream::consumer::PullConsumer) {
        let mut failures: u32 = 0;
        loop {
            // Pull again once half a batch of permits is free (as nats.go's consumers do):
            // fewer, larger pull requests, while the open ones keep delivering.
            let threshold = (self.max_batch / 2).max(1) as u32;
            let permit = tokio::select! {
                permit = Arc::clone(&self.permits).acquire_many_owned(threshold) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = self.stop.cancelled() => return,
            };
            let mut permit = permit;
            let extra = self
                .permits
                .available_permits()
                .min(self.max_batch - permit.num_permits());
            if extra > 0
                && let Ok(more) = Arc::clone(&self.permits).try_acquire_many_owned(extra as u32)
            {
                permit.merge(more);
            }
            if self.needs_converge.swap(false, Ordering::SeqCst) {
                match self.converge().await {
                    Ok(fresh) => {
                        tracing::info!(function = %self.function.id, "consumer re-created or re-bound");
                        consumer = fresh;
                    }
                    Err(error) => {
                        drop(permit);
                        self.needs_converge.store(true, Ordering::SeqCst);
                        failures += 1;
                        tracing::warn!(function = %self.function.id, %error, "consumer not available; retrying");
                        if self.pause(failures).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let batch = consumer
                .batch()
                .max_messages(permit.num_permits())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            match batch {
                Ok(batch) => {
                    failures = 0;
                    let runtime = Arc::clone(&self);
                    self.tracker
                        .spawn(async move { runtime.drain(batch, permit).await });
                }
                Err(error) => {
                    drop(permit);
                    failures += 1;
                    self.needs_converge.store(true, Ordering::SeqCst);
                    tracing::warn!(function = %self.function.id, %error, "pull failed; retrying");
                    if self.pause(failures).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits before a retry; true if the worker is stopping.
    async fn pause(&self, failures: u32) -> bool {
        let pause = crate::backoff::Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter: 0.2,
        }
        .delay(failures);
        tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = self.stop.cancelled() => true,
        }
    }

    /// Runs the messages of one pull request concurrently, each holding one permit. They
    /// run as futures of this one task rather than a task each: no spawn and no cross-thread
    /// wake-up per message.
    async fn drain(self: Arc<Self>, mut batch: pull::Batch, permits: OwnedSemaphorePermit) {
        let mut permits = Some(permits);
        let mut running = futures::stream::FuturesUnordered::new();
        let mut pulling = true;
        loop {
            tokio::select! {
                biased;
                Some(()) = running.next(), if !running.is_empty() => {}
                () = self.stop.cancelled(), if pulling => {
                    // Hand back what already arrived so another replica takes it at once.
                    pulling = false;
                    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                    }
                }
                next = batch.next(), if pulling => match next {
                    Some(Ok(message)) => {
                        let permit = permits.as_mut().and_then(|p| p.split(1));
                        let runtime = Arc::clone(&self);
                        running.push(async move {
                            // A panic outside the handler (a Deserialize impl, say) must not
                            // take the other messages of the batch down with it.
                            let outcome = AssertUnwindSafe(runtime.process(message)).catch_unwind().await;
                            if let Err(panic) = outcome {
                                tracing::error!(function = %runtime.function.id, panic = %panic_message(&panic),
                                    "panic while handling a delivery; it comes back after ack_wait");
                            }
                            drop(permit);
                        });
                    }
                    Some(Err(error)) => {
                        tracing::warn!(function = %self.function.id, %error, "pull request ended with an error");
                        self.needs_converge.store(true, Ordering::SeqCst);
                        pulling = false;
                    }
                    None => pulling = false,
                },
            }
            if !pulling {
                // Permits of messages that never came go back now, not when the rest finish.
                permits = None;
                if running.is_empty() {
                    return;
                }
            }
        }
    }

    /// One delivery: validate, decode, run the handler, then ack, NAK or dead-letter, under
    /// the attempt's span (the current OpenTelemetry context while it runs).
    async fn process(&self, message: jetstream::Message) {
        use opentelemetry::trace::{FutureExt as _, TraceContextExt as _};
        let context = self
            .spans
            .attempt(&message, &self.events_prefix, &self.function.id);
        self.process_in(message, &context)
            .with_context(context.clone())
            .await;
        context.span().end();
    }

    async fn process_in(&self, message: jetstream::Message, trace: &opentelemetry::Context) {
        let settings = &self.function.settings;
        let (stream_sequence, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered.max(1) as u32),
            Err(error) => {
                tracing::warn!(function = %self.function.id, %error, "a message without JetStream metadata; terminated");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let subject = message.subject.to_string();
        let (meta, data) = match envelope::read(
            message.headers.as_ref(),
            &message.payload,
            &subject,
            &self.events_prefix,
            stream_sequence,
        ) {
            Ok(parts) => parts,
            Err(error) => {
                self.dead_letter(
                    &message,
                    DeadLetterReason::DecodeError,
                    &error,
                    delivered,
                    stream_sequence,
                    None,
                )
                .await;
                return;
            }
        };
        let meta = Arc::new(meta);
        if delivered > settings.attempts {
            let error = format!(
                "delivery {delivered} is beyond the {} attempts: the worker running attempt {} \
                 crashed, hung or lost its connection",
                settings.attempts,
                delivered - 1
            );
            self.dead_letter(
                &message,
                DeadLetterReason::MaxDeliveries,
                &error,
                settings.attempts,
                stream_sequence,
                None,
            )
            .await;
            return;
        }
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.to_string())
        };
        let run = match &self.runs {
            Some(store) => {
                // A replay (`herald replay`) is a fresh run of the same event.
                let run_id = match header("herald-replay") {
                    Some(replay) => format!("{}#replay:{replay}", meta.id),
                    None => meta.id.clone(),
                };
                let run_key = format!("{}.{}", self.function.id, crate::steps::event_key(&run_id));
                if settings.idempotent
                    && let Ok(Some(record)) = store.get::<RunRecord>(&run_key).await
                    && record.status == "ok"
                {
                    tracing::info!(function = %self.function.id, event_id = event_id(&message), stream_seq = stream_sequence,
                        "the run already finished; acking the redelivery without running it"
                    );
                    let _ = message.ack().await;
                    return;
                }
                let state = RunState {
                    store: store.clone(),
                    run_key,
                    max_step_output: settings.max_step_output,
                    counters: parking_lot::Mutex::new(std::collections::HashMap::new()),
                    position: parking_lot::Mutex::new((0, None)),
                    suspend_until: parking_lot::Mutex::new(None),
                    woken_for: header("herald-wake"),
                    failures_before: parking_lot::Mutex::new(None),
                };
                // A retry or a continuation may have a failure count to continue from.
                if delivered > 1 || header("herald-continuation").is_some() {
                    let epoch = header("herald-redrive-of").unwrap_or_default();
                    if let Ok(Some(record)) = store.get::<FailureRecord>(&state.failure_key()).await
                        && record.epoch == epoch
                    {
                        *state.failures_before.lock() = Some((record.position, record.failures));
                    }
                }
                Some(Arc::new(state))
            }
            None => None,
        };
        let ctx = Ctx {
            function: Arc::clone(&self.function.id),
            envelope: Arc::clone(&meta),
            attempt: delivered,
            max_attempts: settings.attempts,
            stream_sequence,
            trace: trace.clone(),
            spans: self.spans.clone(),
            run: run.clone(),
            client: Some(self.client.clone()),
        };
        let writer_schema = self
            .writer_schemas
            .resolve(meta.data_schema.as_deref(), &meta.event_type)
            .await;
        let future =
            match self
                .function
                .handler
                .prepare(data, message.headers.as_ref(), ctx, writer_schema)
            {
                Decoded::Ready(future) => future,
                Decoded::SchemaViolation(violations) => {
                    let error = format!(
                        "the payload breaks the schema of {}: {violations}",
                        meta.event_type
                    );
                    self.dead_letter(
                        &message,
                        DeadLetterReason::SchemaViolation,
                        &error,
                        delivered,
                        stream_sequence,
                        run.as_ref(),
                    )
                    .await;
                    return;
                }
                Decoded::DecodeError(error) => {
                    self.dead_letter(
                        &message,
                        DeadLetterReason::DecodeError,
                        &error,
                        delivered,
                        stream_sequence,
                        run.as_ref(),
                    )
                    .await;
                    return;
                }
            };
        if let Some(seconds) = meta
            .time
            .as_deref()
            .and_then(crate::telemetry::seconds_since)
        {
            self.metrics
                .latency
                .record(seconds, &self.function_attribute);
        }
        self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let outcome = self.run_attempt(&message, future).await;
        self.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64(), &self.function_attribute);
        let (reason, error, delay) = match outcome {
            Outcome::Done => {
                if let Some(run) = &run
                    && settings.idempotent
                {
                    let record = RunRecord {
                        status: "ok".to_owned(),
                        finished_at: herald::headers::format_time(std::time::SystemTime::now()),
                        detail: None,
                    };
                    if let Err(error) = run.store.put(&run.run_key, &record).await {
                        tracing::warn!(function = %self.function.id, event_id = event_id(&message), stream_seq = stream_sequence, %error, "recording the finished run failed");
                    }
                }
                if let Err(error) = message.ack().await {
                    tracing::warn!(function = %self.function.id, event_id = event_id(&message), stream_seq = stream_sequence, %error, "ack failed; the event will be redelivered");
                }
                self.counts.count(RunOutcome::Ok);
                set_outcome(trace, "ok", None);
                return;
            }
            Outcome::Abandoned => {
                set_outcome(trace, "handed_back", None);
                tracing::info!(function = %self.function.id, event_id = event_id(&message), stream_seq = stream_sequence, "shutdown: handing the event back");
                let _ = message.ack_with(AckKind::Nak(None)).await;
                return;
            }
            Outcome::TimedOut => (
                DeadLetterReason::Timeout,
                format!(
                    "the attempt ran longer than the timeout of {:?}",
                    settings.timeout
                ),
                None,
            ),
            Outcome::Panicked(panic) => (
                DeadLetterReason::HandlerError,
                format!("the handler panicked: {panic}"),
                None,
            ),
            Outcome::Failed(error) => match error.kind {
                ErrorKind::Suspend => {
                    set_outcome(trace, "sleeping", None);
                    self.suspend(&message, run.as_ref()).await;
                    return;
                }
                ErrorKind::Terminal => {
                    let step = run.as_ref().and_then(|r| r.position.lock().1.clone());
                    let text = match &step {
                        Some(step) => format!("step `{step}`: {}", error.message),
                        None => error.message.clone(),
                    };
                    self.dead_letter(
                        &message,
                        DeadLetterReason::TerminalError,
                        &text,
                        delivered,
                        stream_sequence,
                        run.as_ref(),
                    )
                    .await;
                    return;
                }
                ErrorKind::Retry(delay) => (DeadLetterReason::HandlerError, error.message, delay),
            },
        };
        // A run that reached steps counts failures per step (position), not per delivery.
        if let Some(run) = run.as_ref().filter(|r| r.position.lock().0 > 0) {
            self.step_failed(
                &message,
                run,
                reason,
                &error,
                delay,
                delivered,
                stream_sequence,
            )
            .await;
            return;
        }
        self.retry_or_dead_letter(
            &message,
            reason,
            &error,
            delay,
            delivered,
            stream_sequence,
            run.as_ref(),
        )
        .await;
    }

    /// A step (or the code after it) failed: count the failure for that position, then
    /// retry with the step's own budget or dead-letter naming the step.
    #[allow(clippy::too_many_arguments)]
    async fn step_failed(
        &self,
        message: &jetstream::Message,
        run: &Arc<RunState>,
        reason: DeadLetterReason,
        error: &str,
        delay: Option<Duration>,
        delivered: u32,
        stream_sequence: u64,
    ) {
        let settings = &self.function.settings;
        let (position, step) = run.position.lock().clone();
        let epoch = message
            .headers
            .as_ref()
            .and_then(|h| h.get("herald-redrive-of"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let previous = run
            .store
            .get::<FailureRecord>(&run.failure_key())
            .await
            .ok()
            .flatten()
            .filter(|r| r.position == position && r.epoch == epoch);
        let failures = previous.map_or(1, |r| r.failures + 1);
        let record = FailureRecord {
            position,
            step: step.clone(),
            failures,
            error: dead_letter::one_line(error),
            epoch,
        };
        if let Err(store_error) = run.store.put(&run.failure_key(), &record).await {
            // Without the count, fall back to the delivery count.
            tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %store_error, "recording the step failure failed");
            self.retry_or_dead_letter(
                message,
                reason,
                error,
                delay,
                delivered,
                stream_sequence,
                Some(run),
            )
            .await;
            return;
        }
        let place = match &step {
            Some(step) => format!("step `{step}`"),
            None => format!("the code after step {position}"),
        };
        if failures >= settings.attempts {
            let text = format!("{place} failed {failures} times: {error}");
            self.dead_letter(message, reason, &text, failures, stream_sequence, Some(run))
                .await;
            return;
        }
        let delay = delay.unwrap_or_else(|| settings.backoff.delay(failures));
        self.counts.count(RunOutcome::Retried);
        opentelemetry::Context::map_current(|trace| set_outcome(trace, "retried", Some(error)));
        tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error, failures, step = ?step, retry_in = ?delay, "step failed; will retry");
        if delivered < settings.attempts {
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            return;
        }
        // This delivery's budget was spent by earlier steps: continue in a fresh message.
        let at = crate::steps::now_ms() + delay.as_millis() as u64;
        match self.schedule_continuation(message, at, None).await {
            Ok(()) => {
                let _ = message.ack().await;
            }
            Err(schedule_error) => {
                tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %schedule_error, "scheduling the continuation failed; retrying this delivery");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// With `log_payloads`, the payload of a failed event at debug level.
    fn log_payload(&self, message: &jetstream::Message) {
        if self.log_payloads {
            tracing::debug!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_seq(message), payload = %String::from_utf8_lossy(&message.payload), "payload of the failed event");
        }
    }

    /// A durable sleep: schedule the wake-up, then let go of the message.
    async fn suspend(&self, message: &jetstream::Message, run: Option<&Arc<RunState>>) {
        let Some((wake_at_ms, step_key)) = run.and_then(|r| r.suspend_until.lock().clone()) else {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        };
        if !self.client.supports_schedules() {
            let error = "ctx.sleep needs nats-server 2.12 or newer (scheduled messages); this server cannot wake the run";
            let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            self.dead_letter(
                message,
                DeadLetterReason::TerminalError,
                error,
                1,
                stream_sequence,
                run,
            )
            .await;
            return;
        }
        match self
            .schedule_continuation(message, wake_at_ms, Some(&step_key))
            .await
        {
            Ok(()) => {
                tracing::info!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_seq(message), step = %step_key, "sleeping; the run continues when the schedule fires");
                let _ = message.ack().await;
            }
            Err(error) => {
                tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_seq(message), %error, "scheduling the wake-up failed; retrying");
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }

    /// Publishes a scheduled copy of the event to `ns.redrive.F` at `at_ms`, with a fresh
    /// delivery count (`Nats-Schedule`, nats-server 2.12+).
    async fn schedule_continuation(
        &self,
        message: &jetstream::Message,
        at_ms: u64,
        wake_step: Option<&str>,
    ) -> Result<(), async_nats::Error> {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                let text = name.to_string();
                if text.to_ascii_lowercase().starts_with("nats-") || text == "herald-wake" {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        // Whole seconds, rounded up, in RFC 3339.
        let seconds = at_ms.div_ceil(1000).max(crate::steps::now_ms() / 1000 + 1);
        let time =
            herald::headers::format_time(std::time::UNIX_EPOCH + Duration::from_secs(seconds));
        let at = format!("{}Z", &time[..19]);
        let namespace = self.client.namespace();
        let target = namespace.redrive_subject(&self.function.id);
        headers.insert("Nats-Schedule", format!("@at {at}"));
        headers.insert("Nats-Schedule-Target", target.as_str());
        headers.insert("herald-continuation", "1");
        if let Some(step) = wake_step {
            headers.insert("herald-wake", step);
        }
        let meta_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(herald::headers::ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let subject = format!("{target}.sched.{}", crate::steps::event_key(&meta_id));
        self.client
            .jetstream()
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(message.payload.clone())
                    .headers(headers),
            )
            .await?
            .await?;
        Ok(())
    }

    /// Runs the handler under its timeout, sending progress acks every `ack_wait / 3`.
    async fn run_attempt(
        &self,
        message: &jetstream::Message,
        future: crate::function::BoxFuture<Result<(), crate::function::HandlerError>>,
    ) -> Outcome {
        let settings = &self.function.settings;
        let handler = AssertUnwindSafe(future).catch_unwind();
        tokio::pin!(handler);
        // One timer per attempt: it fires for the next progress ack or the deadline,
        // whichever comes first.
        let started = tokio::time::Instant::now();
        let deadline = started + settings.timeout;
        let every = settings.ack_wait / 3;
        let mut next_progress = started + every;
        let timer = tokio::time::sleep_until(next_progress.min(deadline));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                result = &mut handler => {
                    return match result {
                        Err(panic) => Outcome::Panicked(panic_message(&panic)),
                        Ok(Err(error)) => Outcome::Failed(error),
                        Ok(Ok(())) => Outcome::Done,
                    };
                }
                () = &mut timer => {
                    if tokio::time::Instant::now() >= deadline {
                        return Outcome::TimedOut;
                    }
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_seq(message), %error, "progress ack failed");
                    }
                    next_progress += every;
                    timer.as_mut().reset(next_progress.min(deadline));
                }
                () = self.abandon.cancelled() => return Outcome::Abandoned,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn retry_or_dead_letter(
        &self,
        message: &jetstream::Message,
        reason: DeadLetterReason,
        error: &str,
        delay: Option<Duration>,
        attempt: u32,
        stream_sequence: u64,
        run: Option<&Arc<RunState>>,
    ) {
        let settings = &self.function.settings;
        if attempt >= settings.attempts {
            self.dead_letter(message, reason, error, attempt, stream_sequence, run)
                .await;
            return;
        }
        let delay = delay.unwrap_or_else(|| settings.backoff.delay(attempt));
        self.log_payload(message);
        self.counts.count(RunOutcome::Retried);
        opentelemetry::Context::map_current(|trace| set_outcome(trace, "retried", Some(error)));
        tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error, attempt, max_attempts = settings.attempts, retry_in = ?delay, "attempt failed; will retry");
        if let Err(nak) = message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %nak, "NAK failed; the event comes back after ack_wait");
        }
    }

    /// Publishes the dead letter, waits for its ack, then terminates the original; if the
    /// publish fails, NAKs so that the next delivery tries again.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: DeadLetterReason,
        error: &str,
        attempts: u32,
        stream_sequence: u64,
        run: Option<&Arc<RunState>>,
    ) {
        let subject = message.subject.to_string();
        let step = run.and_then(|r| r.position.lock().1.clone());
        let letter = DeadLetter {
            function: &self.function.id,
            reason,
            error,
            attempts,
            stream: &self.events_stream,
            stream_sequence,
            subject: &subject,
            step: step.as_deref(),
        };
        match dead_letter::publish(
            &self.client,
            message.headers.as_ref(),
            message.payload.clone(),
            &letter,
        )
        .await
        {
            Ok(()) => {
                tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, reason = reason.as_str(), error, attempts,
                    stream_seq = stream_sequence, "dead-lettered");
                self.log_payload(message);
                self.counts.count(RunOutcome::DeadLettered);
                self.metrics.dead_letters.add(
                    1,
                    &[
                        self.function_attribute[0].clone(),
                        KeyValue::new("reason", reason.as_str()),
                    ],
                );
                opentelemetry::Context::map_current(|trace| {
                    set_outcome(trace, "dead_lettered", Some(error));
                });
                if let Some(reply) = &message.reply {
                    let term = format!("+TERM {}", reason.as_str());
                    if let Err(term_error) =
                        self.client.nats().publish(reply.clone(), term.into()).await
                    {
                        tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %term_error, "terminating the original failed; a later delivery dead-letters it again (deduplicated)");
                    }
                }
                if let Some(run) = run {
                    let record = RunRecord {
                        status: "dead_lettered".to_owned(),
                        finished_at: herald::headers::format_time(std::time::SystemTime::now()),
                        detail: Some(format!(
                            "{}: {}",
                            reason.as_str(),
                            dead_letter::one_line(error)
                        )),
                    };
                    if let Err(store_error) = run.store.put(&run.run_key, &record).await {
                        tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %store_error, "recording the dead-lettered run failed");
                    }
                }
                self.call_on_failure(message, reason, error, attempts, stream_sequence, step, run)
                    .await;
            }
            Err(publish_error) => {
                tracing::error!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %publish_error,
                    "publishing the dead letter failed; the event stays and is tried again");
                let _ = message
                    .ack_with(AckKind::Nak(Some(DEAD_LETTER_RETRY)))
                    .await;
            }
        }
    }

    /// Runs the function's failure handler once per dead-lettered delivery (a marker in the
    /// runs bucket guards against a second call after a crash and redelivery).
    #[allow(clippy::too_many_arguments)]
    async fn call_on_failure(
        &self,
        message: &jetstream::Message,
        reason: DeadLetterReason,
        error: &str,
        attempts: u32,
        stream_sequence: u64,
        step: Option<String>,
        run: Option<&Arc<RunState>>,
    ) {
        let Some(handler) = &self.function.on_failure else {
            return;
        };
        if let Some(run) = run {
            let marker = format!("{}.x.{stream_sequence}", run.run_key);
            match run.store.create_marker(&marker).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(store_error) => {
                    tracing::warn!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %store_error, "failure handler skipped: its once-only marker cannot be written");
                    return;
                }
            }
        }
        let subject = message.subject.to_string();
        let Ok((meta, data)) = envelope::read(
            message.headers.as_ref(),
            &message.payload,
            &subject,
            &self.events_prefix,
            stream_sequence,
        ) else {
            return;
        };
        let failed = crate::function::FailedRun {
            event: Envelope {
                meta: Arc::new(meta),
                data,
                headers: message.headers.clone().unwrap_or_default(),
            },
            reason,
            error: error.to_owned(),
            attempts,
            step,
        };
        let call = AssertUnwindSafe(handler(failed)).catch_unwind();
        match tokio::time::timeout(self.function.settings.timeout, call).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(failure))) => {
                tracing::error!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, error = %failure, "the failure handler failed");
            }
            Ok(Err(panic)) => {
                tracing::error!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, panic = %panic_message(&panic), "the failure handler panicked");
            }
            Err(_) => {
                tracing::error!(function = %self.function.id, event_id = event_id(message), stream_seq = stream_sequence, "the failure handler timed out");
            }
        }
    }
}

/// The schema versions named by `ce-dataschema`, fetched from the registry once, compiled
/// and kept (versions are immutable). Events without the header, or naming a version the
/// registry does not have, are validated against the function's local schema; that is
/// logged once per event type.
struct WriterSchemas {
    client: Client,
    cache:
        parking_lot::RwLock<std::collections::HashMap<String, Arc<herald::schema::CompiledSchema>>>,
    warned: parking_lot::Mutex<HashSet<String>>,
    without_header: parking_lot::RwLock<HashSet<String>>,
}

impl WriterSchemas {
    fn new(client: Client) -> WriterSchemas {
        WriterSchemas {
            client,
            cache: parking_lot::RwLock::new(std::collections::HashMap::new()),
            warned: parking_lot::Mutex::new(HashSet::new()),
            without_header: parking_lot::RwLock::new(HashSet::new()),
        }
    }

    /// Compiles new versions as they are registered, so the first event naming one does
    /// not wait for the registry. Best effort: a version missed here is fetched on first use.
    async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let Ok(registry) = self.client.registry().await else {
            return;
        };
        let Ok(versions) = registry.watch_versions().await else {
            return;
        };
        let namespace = self.client.namespace().clone();
        let mut versions = std::pin::pin!(versions);
        loop {
            let version = tokio::select! {
                version = versions.next() => version,
                () = stop.cancelled() => return,
            };
            let Some(version) = version else { return };
            let urn =
                herald::registry::data_schema_urn(&namespace, &version.event_type, version.version);
            if let Ok(compiled) =
                herald::schema::CompiledSchema::compile(&version.event_type, version.schema)
            {
                tracing::debug!(data_schema = %urn, "new schema version cached");
                self.cache.write().insert(urn, Arc::new(compiled));
            }
        }
    }

    fn warn_once(&self, event_type: &str, reason: &str) {
        let key = format!("{event_type}\u{0}{reason}");
        if self.warned.lock().insert(key) {
            tracing::info!(event_type, reason, "validating against the local schema");
        }
    }

    async fn resolve(
        &self,
        data_schema: Option<&str>,
        event_type: &str,
    ) -> Option<Arc<herald::schema::CompiledSchema>> {
        let Some(data_schema) = data_schema else {
            // The common case without a registry: no allocation once warned.
            if !self.without_header.read().contains(event_type) {
                self.without_header.write().insert(event_type.to_owned());
                self.warn_once(event_type, "events arrive without ce-dataschema");
            }
            return None;
        };
        if let Some(schema) = self.cache.read().get(data_schema) {
            return Some(Arc::clone(schema));
        }
        let Some((schema_type, version)) =
            herald::registry::parse_data_schema(self.client.namespace(), data_schema)
        else {
            self.warn_once(
                event_type,
                "ce-dataschema is not a schema of this namespace's registry",
            );
            return None;
        };
        let registry = match self.client.registry().await {
            Ok(registry) => registry,
            Err(error) => {
                self.warn_once(
                    event_type,
                    &format!("the registry is not available: {error}"),
                );
                return None;
            }
        };
        match registry.get(&schema_type, version).await {
            Ok(Some(stored)) => {
                match herald::schema::CompiledSchema::compile(&schema_type, stored.schema) {
                    Ok(compiled) => {
                        let compiled = Arc::new(compiled);
                        self.cache
                            .write()
                            .insert(data_schema.to_owned(), Arc::clone(&compiled));
                        Some(compiled)
                    }
                    Err(error) => {
                        self.warn_once(
                            event_type,
                            &format!("{data_schema} does not compile: {error}"),
                        );
                        None
                    }
                }
            }
            Ok(None) => {
                self.warn_once(event_type, &format!("{data_schema} is not in the registry"));
                None
            }
            Err(error) => {
                self.warn_once(
                    event_type,
                    &format!("reading {data_schema} failed: {error}"),
                );
                None
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
