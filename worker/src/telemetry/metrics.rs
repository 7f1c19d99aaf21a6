//! The worker's instruments ([`Metrics`]), the consumer's polled state and event latency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    Counter, Histogram, Meter, ObservableCounter, ObservableUpDownCounter,
};

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
            // The function's consumer and its redrive consumer, where it has one (protocol
            // section 3): their counts add up.
            let mut sum: Option<ConsumerStats> = None;
            for name in [
                function.clone(),
                herald::protocol::redrive_consumer(function),
            ] {
                let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> = client
                    .jetstream()
                    .get_consumer_from_stream(name.as_str(), &events_stream)
                    .await;
                if let Ok(consumer) = consumer {
                    let info = consumer.cached_info();
                    let sum = sum.get_or_insert_with(ConsumerStats::default);
                    sum.pending += info.num_pending;
                    sum.ack_pending += info.num_ack_pending as u64;
                    sum.redelivered += info.num_redelivered as u64;
                }
            }
            if let Some(sum) = sum {
                stats.write().insert(function.clone(), sum);
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
