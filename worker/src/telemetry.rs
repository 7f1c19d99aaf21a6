//! Traces and metrics of the worker, through the OpenTelemetry API.
//!
//! Spans follow the OpenTelemetry messaging conventions: one `process <event type>` span
//! (kind consumer) per attempt, child of the producer's span taken from `traceparent` (or
//! linked to it, [`TraceMode::Link`]), with `messaging.system = nats`,
//! `messaging.destination.name`, `messaging.operation.name = process`,
//! `messaging.message.id` (the event id), `messaging.consumer.group.name` (the function),
//! and Herald's `herald.event_type`, `herald.attempt`, `herald.stream_sequence`,
//! `herald.outcome` (`ok`, `retried`, `dead_lettered`, `skipped`, `cancelled`, `sleeping`, `handed_back`); a failed
//! attempt has status error with the error's text. Steps are `step <name>` child spans.
//!
//! The worker makes these spans with the OpenTelemetry API directly, from the tracer provider
//! given to [`WorkerBuilder::tracer_provider`](crate::WorkerBuilder::tracer_provider), else
//! the global one (a no-op unless the application installs one), so that the sampler decides
//! before any attribute is built and an unsampled attempt costs next to nothing. While a
//! handler runs, its span is the current OpenTelemetry context: `tracing` spans the handler
//! opens nest under it through `tracing-opentelemetry` (its default context activation),
//! events it publishes carry its `traceparent`, and [`Ctx::trace_context`](crate::Ctx::trace_context)
//! hands it to work the handler spawns. Herald's own log events carry `function`, `event_id`
//! and `stream_seq` as fields.
//!
//! Metrics (instrument names as below) go to the meter given to
//! [`WorkerBuilder::meter`](crate::WorkerBuilder::meter), else the global provider's
//! (a no-op unless the application installs one):
//!
//! | instrument | kind | attributes |
//! | --- | --- | --- |
//! | `herald.runs` | counter (observed) | `function`, `outcome` = ok, retried, dead_lettered, skipped, cancelled |
//! | `herald.dead_letters` | counter | `function`, `reason` |
//! | `herald.handler.duration` | histogram (s) | `function` |
//! | `herald.event.latency` | histogram (s), event time to handler start | `function` |
//! | `herald.handlers.in_flight` | up-down counter (observed) | `function` |
//! | `herald.consumer.pending` | gauge, polled from consumer info | `function` |
//! | `herald.consumer.ack_pending` | gauge | `function` |
//! | `herald.consumer.redelivered` | gauge | `function` |
//! | `herald.flow.parked` | counter | `function`, `reason` = concurrency, throttle |
//! | `herald.flow.woken` | counter, a parked run woken by a freed slot or its throttle's schedule | `function`, `reason` |
//! | `herald.flow.wait` | histogram (s), event time to the start of a run parked or delayed | `function`, `reason` |
//! | `herald.flow.skipped` | counter | `function`, `reason` = rate_limited, singleton |
//!
//! A singleton never parks a run (it skips it, or cancels the one running), so it only
//! appears in `herald.flow.skipped`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_nats::jetstream;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{
    Counter, Histogram, Meter, ObservableCounter, ObservableUpDownCounter,
};
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use std::borrow::Cow;

/// How an attempt's span relates to the producer's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TraceMode {
    /// The attempt is a child of the producer's span: one trace from request to handler.
    #[default]
    Child,
    /// The attempt starts its own trace, linked to the producer's span.
    Link,
}

/// The attributes of an attempt's span, its outcome included.
const ATTEMPT_ATTRIBUTES: usize = 9;

/// Makes the spans of attempts and steps through the OpenTelemetry API.
#[derive(Clone)]
pub(crate) struct Spans {
    tracer: Arc<BoxedTracer>,
    mode: TraceMode,
    /// Learned from the first attempt without a producer's span: the tracer makes no spans
    /// at all (the no-op provider, whose spans have no valid context), so an attempt
    /// without a producer's span needs none built (a tracer is fixed once made).
    no_op: Arc<std::sync::atomic::AtomicU8>,
}

/// [`Spans::no_op`] values.
const NO_OP_UNKNOWN: u8 = 0;
const NO_OP: u8 = 1;
const RECORDS: u8 = 2;

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spans").field("mode", &self.mode).finish()
    }
}

impl Spans {
    pub(crate) fn new(tracer: BoxedTracer, mode: TraceMode) -> Spans {
        Spans {
            tracer: Arc::new(tracer),
            mode,
            no_op: Arc::default(),
        }
    }

    /// The context of one attempt: a `process <type>` span, child of (or linked to) the
    /// producer's span in the delivery's `traceparent` (not searched for when `traced` is
    /// false: the delivery's reading saw none). Attributes are built only when the sampler
    /// records the span.
    pub(crate) fn attempt(
        &self,
        message: &jetstream::Message,
        events_prefix: &str,
        function: &Arc<str>,
        traced: bool,
    ) -> Context {
        let headers = message.headers.as_ref();
        let remote = headers.filter(|_| traced).and_then(|h| {
            let traceparent = crate::envelope::find(h, herald::headers::TRACEPARENT)?;
            herald::trace::parse_trace_headers(
                traceparent.as_str(),
                crate::envelope::find(h, herald::headers::TRACESTATE).map(|v| v.as_str()),
            )
        });
        let without_producer = remote.is_none();
        if without_producer && self.no_op.load(Ordering::Relaxed) == NO_OP {
            return Context::new();
        }
        // Room for the attributes set below and the outcome, so that a recorded span's
        // attributes are one allocation (the SDK keeps the builder's vector).
        let builder = opentelemetry::trace::SpanBuilder {
            attributes: Some(Vec::with_capacity(ATTEMPT_ATTRIBUTES)),
            ..self
                .tracer
                .span_builder("process")
                .with_kind(SpanKind::Consumer)
        };
        let (parent, builder) = match (self.mode, remote) {
            (TraceMode::Child, Some(remote)) => {
                (Context::new().with_remote_span_context(remote), builder)
            }
            (TraceMode::Link, Some(remote)) => (
                Context::new(),
                builder.with_links(vec![Link::with_context(remote)]),
            ),
            (_, None) => (Context::new(), builder),
        };
        let mut span = builder.start_with_context(&*self.tracer, &parent);
        if without_producer && self.no_op.load(Ordering::Relaxed) == NO_OP_UNKNOWN {
            let no_op = !span.is_recording() && !span.span_context().is_valid();
            self.no_op
                .store(if no_op { NO_OP } else { RECORDS }, Ordering::Relaxed);
        }
        if span.is_recording() {
            let header = |name: &str| {
                headers
                    .and_then(|h| crate::envelope::find(h, name))
                    .map(|v| v.as_str())
            };
            let subject = message.subject.as_str();
            let event_type = header(herald::headers::TYPE)
                .unwrap_or_else(|| subject.strip_prefix(events_prefix).unwrap_or(subject));
            // An event subject names its type: its names are interned once and shared by
            // every span (no allocation, no reference count); anything else is copied.
            let interned = subject
                .strip_prefix(events_prefix)
                .filter(|&suffix| suffix == event_type)
                .and_then(|_| intern_names(subject, event_type));
            let (name, subject, event_type): (Cow<'static, str>, Value, Value) = match interned {
                Some(names) => (
                    Cow::Borrowed(names.span_name),
                    names.subject.into(),
                    names.event_type.into(),
                ),
                None => (
                    Cow::Owned(format!("process {event_type}")),
                    subject.to_owned().into(),
                    event_type.to_owned().into(),
                ),
            };
            let function: Value = match intern(function) {
                Some(function) => function.into(),
                None => Arc::clone(function).into(),
            };
            let (attempt, stream_sequence) = message
                .info()
                .map_or((0, 0), |i| (i.delivered.max(0), i.stream_sequence as i64));
            span.update_name(name);
            span.set_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", subject),
                KeyValue::new(
                    "messaging.message.id",
                    header(herald::headers::ID).unwrap_or_default().to_owned(),
                ),
                KeyValue::new("messaging.consumer.group.name", function),
                KeyValue::new("herald.event_type", event_type),
                KeyValue::new("herald.attempt", attempt),
                KeyValue::new("herald.stream_sequence", stream_sequence),
            ]);
        }
        parent.with_span(span)
    }

    /// The context of a `step <name>` span, child of the attempt's.
    pub(crate) fn step(&self, attempt: &Context, name: &str) -> Context {
        let mut span = self
            .tracer
            .span_builder("step")
            .with_kind(SpanKind::Internal)
            .start_with_context(&*self.tracer, attempt);
        if span.is_recording() {
            span.update_name(format!("step {name}"));
            span.set_attribute(KeyValue::new("herald.step", name.to_owned()));
        }
        attempt.with_span(span)
    }
}

/// At most this many strings are interned for span names and attributes (a few per function
/// and event type); past it, names are allocated per span.
const MAX_INTERNED: usize = 4096;

/// The interned names of attempts on one event subject.
#[derive(Debug)]
struct AttemptNames {
    span_name: &'static str,
    subject: &'static str,
    event_type: &'static str,
}

type Interned<T> = parking_lot::RwLock<std::collections::HashMap<Box<str>, T>>;

static NAMES: std::sync::OnceLock<Interned<&'static AttemptNames>> = std::sync::OnceLock::new();
static STRINGS: std::sync::OnceLock<Interned<&'static str>> = std::sync::OnceLock::new();

/// `value` as a string that lives as long as the process, or `None` once
/// [`MAX_INTERNED`] strings are held. The memory is bounded and never freed.
fn intern(value: &str) -> Option<&'static str> {
    let strings = STRINGS.get_or_init(Default::default);
    if let Some(found) = strings.read().get(value) {
        return Some(found);
    }
    let mut strings = strings.write();
    if let Some(found) = strings.get(value) {
        return Some(found);
    }
    if strings.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static str = Box::leak(value.into());
    strings.insert(value.into(), leaked);
    Some(leaked)
}

/// The interned names of attempts on `subject` (whose type is `event_type`).
fn intern_names(subject: &str, event_type: &str) -> Option<&'static AttemptNames> {
    let names = NAMES.get_or_init(Default::default);
    if let Some(found) = names.read().get(subject) {
        return Some(found);
    }
    let names_for = AttemptNames {
        span_name: intern(&format!("process {event_type}"))?,
        subject: intern(subject)?,
        event_type: intern(event_type)?,
    };
    let mut names = names.write();
    if let Some(found) = names.get(subject) {
        return Some(found);
    }
    if names.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static AttemptNames = Box::leak(Box::new(names_for));
    names.insert(subject.into(), leaked);
    Some(leaked)
}

/// Records how an attempt ended on its span; a failure also sets status error.
pub(crate) fn set_outcome(context: &Context, outcome: &'static str, error: Option<&str>) {
    let span = context.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new("herald.outcome", outcome));
    if let Some(error) = error {
        span.set_status(Status::error(error.to_owned()));
    }
}

/// Marks a step's span failed.
pub(crate) fn set_error(context: &Context, error: &str) {
    let span = context.span();
    if span.is_recording() {
        span.set_status(Status::error(error.to_owned()));
    }
}

/// The consumer numbers polled for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ConsumerStats {
    pub(crate) pending: u64,
    pub(crate) ack_pending: u64,
    pub(crate) redelivered: u64,
}

pub(crate) type SharedStats = Arc<parking_lot::RwLock<BTreeMap<String, ConsumerStats>>>;

/// The counts of one function that the hot path keeps in atomics; the `herald.runs` and
/// `herald.handlers.in_flight` instruments read them when the metrics are collected, so
/// that an attempt touches no instrument for them.
#[derive(Debug, Default)]
pub(crate) struct FunctionCounts {
    pub(crate) in_flight: AtomicI64,
    pub(crate) ok: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl FunctionCounts {
    /// One more run with this outcome.
    pub(crate) fn count(&self, outcome: RunOutcome) {
        let counter = match outcome {
            RunOutcome::Ok => &self.ok,
            RunOutcome::Retried => &self.retried,
            RunOutcome::DeadLettered => &self.dead_lettered,
            RunOutcome::Skipped => &self.skipped,
            RunOutcome::Cancelled => &self.cancelled,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Polls every function's consumer info for the gauges.
pub(crate) async fn poll_stats(
    functions: Vec<String>,
    client: herald::Client,
    stats: SharedStats,
    interval: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let events_stream = client.namespace().events_stream();
    loop {
        for function in &functions {
            let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> = client
                .jetstream()
                .get_consumer_from_stream(function.as_str(), &events_stream)
                .await;
            if let Ok(mut consumer) = consumer
                && let Ok(info) = consumer.info().await
            {
                stats.write().insert(
                    function.clone(),
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

/// The outcomes `herald.runs` counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RunOutcome {
    Ok,
    Retried,
    DeadLettered,
    Skipped,
    Cancelled,
}

type Counts = Arc<parking_lot::RwLock<BTreeMap<String, Arc<FunctionCounts>>>>;

/// The worker's instruments.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) dead_letters: Counter<u64>,
    /// Run, step or failure records that could not be written within the patience.
    pub(crate) record_failures: Counter<u64>,
    pub(crate) duration: Histogram<f64>,
    pub(crate) latency: Histogram<f64>,
    /// Parked, woken, waited and skipped runs (flow control).
    pub(crate) flow: crate::flow::metrics::FlowMetrics,
    counts: Counts,
    pub(crate) stats: SharedStats,
    _gauges: Arc<Vec<opentelemetry::metrics::ObservableGauge<u64>>>,
    _runs: Arc<ObservableCounter<u64>>,
    _in_flight: Arc<ObservableUpDownCounter<i64>>,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Metrics {
        let stats: SharedStats = Arc::default();
        let counts: Counts = Arc::default();
        let gauge =
            |name: &'static str, description: &'static str, pick: fn(&ConsumerStats) -> u64| {
                let stats = Arc::clone(&stats);
                meter
                    .u64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |observer| {
                        for (function, numbers) in stats.read().iter() {
                            observer.observe(
                                pick(numbers),
                                &[KeyValue::new("function", function.clone())],
                            );
                        }
                    })
                    .build()
            };
        let gauges = vec![
            gauge(
                "herald.consumer.pending",
                "Events not yet delivered to the function (lag)",
                |s| s.pending,
            ),
            gauge(
                "herald.consumer.ack_pending",
                "Events delivered and not yet acknowledged",
                |s| s.ack_pending,
            ),
            gauge(
                "herald.consumer.redelivered",
                "Events delivered more than once and not yet acknowledged",
                |s| s.redelivered,
            ),
        ];
        let runs = meter
            .u64_observable_counter("herald.runs")
            .with_description("Attempts by outcome")
            .with_callback({
                let counts = Arc::clone(&counts);
                move |observer| {
                    for (function, counts) in counts.read().iter() {
                        for (outcome, counter) in [
                            ("ok", &counts.ok),
                            ("retried", &counts.retried),
                            ("dead_lettered", &counts.dead_lettered),
                            ("skipped", &counts.skipped),
                            ("cancelled", &counts.cancelled),
                        ] {
                            observer.observe(
                                counter.load(Ordering::Relaxed),
                                &[
                                    KeyValue::new("function", function.clone()),
                                    KeyValue::new("outcome", outcome),
                                ],
                            );
                        }
                    }
                }
            })
            .build();
        let in_flight = meter
            .i64_observable_up_down_counter("herald.handlers.in_flight")
            .with_description("Handlers running")
            .with_callback({
                let counts = Arc::clone(&counts);
                move |observer| {
                    for (function, counts) in counts.read().iter() {
                        observer.observe(
                            counts.in_flight.load(Ordering::Relaxed),
                            &[KeyValue::new("function", function.clone())],
                        );
                    }
                }
            })
            .build();
        Metrics {
            dead_letters: meter
                .u64_counter("herald.dead_letters")
                .with_description("Events dead-lettered, by reason")
                .build(),
            record_failures: meter
                .u64_counter("herald.run_records.failed")
                .with_description("Run records that could not be stored in time, by kind (the delivery was NAKed, or for a dead letter terminated without it)")
                .build(),
            duration: meter
                .f64_histogram("herald.handler.duration")
                .with_unit("s")
                .with_description("Handler duration per attempt")
                .build(),
            latency: meter
                .f64_histogram("herald.event.latency")
                .with_unit("s")
                .with_description("From the event's time to the handler's start")
                .build(),
            flow: crate::flow::metrics::FlowMetrics::new(meter),
            counts,
            stats,
            _gauges: Arc::new(gauges),
            _runs: Arc::new(runs),
            _in_flight: Arc::new(in_flight),
        }
    }

    /// The counts of `function` (`herald.runs`, `herald.handlers.in_flight`).
    pub(crate) fn counts(&self, function: &str) -> Arc<FunctionCounts> {
        Arc::clone(self.counts.write().entry(function.to_owned()).or_default())
    }
}

/// The `function` attribute of one function, prebuilt so that recording allocates nothing.
pub(crate) fn function_attribute(function: &Arc<str>) -> [KeyValue; 1] {
    [KeyValue::new("function", Arc::clone(function))]
}

/// Seconds from an RFC 3339 `ce-time` to now, if it parses.
///
/// Events published within one second share their `YYYY-MM-DDTHH:MM:SS` prefix, so the
/// second of the last UTC (`Z`) time parsed on this thread is kept and only the fraction is
/// read for the next one.
pub(crate) fn seconds_since(time: &str) -> Option<f64> {
    use std::cell::RefCell;
    thread_local! {
        static LAST_SECOND: RefCell<(String, i64)> = const { RefCell::new((String::new(), 0)) };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let bytes = time.as_bytes();
    if bytes.len() >= 20 && bytes[bytes.len() - 1] == b'Z' && matches!(bytes[19], b'.' | b'Z') {
        let (prefix, rest) = time.split_at(19);
        let fraction = match rest.strip_prefix('.') {
            Some(digits) => {
                let digits = &digits[..digits.len() - 1];
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return seconds_since_parsed(time, now);
                }
                let value: u64 = digits.parse().ok()?;
                value as f64 / 10f64.powi(digits.len() as i32)
            }
            None => 0.0,
        };
        let cached = LAST_SECOND.with(|cell| {
            let last = cell.borrow();
            (last.0 == prefix).then_some(last.1)
        });
        let second = match cached {
            Some(second) => second,
            None => {
                let parsed = time::OffsetDateTime::parse(
                    &format!("{prefix}Z"),
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()?
                .unix_timestamp();
                LAST_SECOND.with(|cell| *cell.borrow_mut() = (prefix.to_owned(), parsed));
                parsed
            }
        };
        return Some((now - (second as f64 + fraction)).max(0.0));
    }
    seconds_since_parsed(time, now)
}

/// [`seconds_since`] for any RFC 3339 time (offsets, unusual fractions).
fn seconds_since_parsed(time: &str, now: f64) -> Option<f64> {
    let parsed =
        time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339).ok()?;
    let event = parsed.unix_timestamp_nanos() as f64 / 1e9;
    Some((now - event).max(0.0))
}

/// OTLP export of traces and metrics (feature `otlp`).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tracing_subscriber::layer::SubscriberExt;
/// // OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318) names the collector.
/// let otlp = herald_worker::telemetry::otlp::install("backfill-worker")?;
/// let subscriber = tracing_subscriber::registry().with(otlp.layer());
/// tracing::subscriber::set_global_default(subscriber)?;
/// // … run the worker; on exit:
/// otlp.shutdown();
/// # Ok(()) }
/// ```
#[cfg(feature = "otlp")]
pub mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// The installed providers; keep it alive and call [`shutdown`](Otlp::shutdown) on exit
    /// so that buffered spans and metrics are sent.
    #[derive(Debug)]
    pub struct Otlp {
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
    }

    /// Installing the exporters failed.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot set up OTLP export: {0}")]
    pub struct OtlpError(String);

    /// Builds OTLP/HTTP exporters for traces and metrics (endpoint from the standard
    /// `OTEL_EXPORTER_OTLP_*` variables) and installs them as the global providers.
    pub fn install(service_name: &str) -> Result<Otlp, OtlpError> {
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(tracer_provider.clone());
        opentelemetry::global::set_meter_provider(meter_provider.clone());
        Ok(Otlp {
            tracer_provider,
            meter_provider,
        })
    }

    impl Otlp {
        /// The `tracing` layer that turns spans into OpenTelemetry spans for this exporter.
        pub fn layer<S>(
            &self,
        ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
        where
            S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
        {
            tracing_opentelemetry::layer().with_tracer(self.tracer_provider.tracer("herald"))
        }

        /// Flushes and stops both exporters.
        pub fn shutdown(self) {
            let _ = self.tracer_provider.shutdown();
            let _ = self.meter_provider.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn latency_from_event_time() {
        let now = herald::headers::format_time(
            std::time::SystemTime::now() - std::time::Duration::from_secs(2),
        );
        let seconds = super::seconds_since(&now).unwrap();
        assert!((1.9..3.0).contains(&seconds), "{seconds}");
        assert!(super::seconds_since("yesterday").is_none());
    }

    #[test]
    fn interned_names_are_shared() {
        let a = super::intern_names("herald.events.order.placed", "order.placed").unwrap();
        let b = super::intern_names("herald.events.order.placed", "order.placed").unwrap();
        assert!(std::ptr::eq(a, b), "one entry per subject");
        assert_eq!(a.span_name, "process order.placed");
        assert_eq!(a.subject, "herald.events.order.placed");
        assert_eq!(a.event_type, "order.placed");
        let name = super::intern("backfill-user-data").unwrap();
        assert!(std::ptr::eq(
            name,
            super::intern("backfill-user-data").unwrap()
        ));
    }

    #[test]
    fn the_cached_second_and_the_full_parse_agree() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let cases = [
            "2026-11-25T09:14:14.250Z",
            "2026-11-25T09:14:14.5Z",
            "2026-11-25T09:14:14.123456789Z",
            "2026-11-25T09:14:14Z",
            "2026-11-25T09:14:15.000001Z",
            "2026-11-25T10:14:14.250+01:00",
            "2024-02-29T23:59:59.999Z",
        ];
        for time in cases {
            // Twice: the first fills this thread's cache, the second reads it.
            for _ in 0..2 {
                let fast = super::seconds_since(time).unwrap();
                let full = super::seconds_since_parsed(time, now).unwrap();
                assert!((fast - full).abs() < 0.05, "{time}: {fast} vs {full}");
            }
        }
        assert!(super::seconds_since("2026-11-25T09:14:14.Z").is_none());
        assert!(super::seconds_since("2026-13-25T09:14:14.1Z").is_none());
        assert!(super::seconds_since("2026-11-25T09:14:14.x1Z").is_none());
    }
}
