//! Traces across the bus, metrics and health endpoints, against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use herald_worker::{Backoff, Ctx, Function, HandlerError, TraceMode, Worker};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(30);

/// A tracing subscriber exporting to memory, for this test's thread (current-thread runtime).
fn traced() -> (
    InMemorySpanExporter,
    SdkTracerProvider,
    tracing::subscriber::DefaultGuard,
) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tests")));
    let guard = tracing::subscriber::set_default(subscriber);
    (exporter, provider, guard)
}

/// Publishes one job inside a `POST /api/jobs` span; returns that span's context.
async fn publish_in_request(client: &herald::Client) -> opentelemetry::trace::SpanContext {
    let request = tracing::info_span!("POST /api/jobs");
    let producer = request.context().span().span_context().clone();
    async { publish_jobs(client, 0..1).await }
        .instrument(request)
        .await;
    producer
}

fn spans_named(exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.name == name)
        .collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn each_attempt_is_a_child_of_the_producer_span_and_steps_are_children_of_the_attempt() {
    let (exporter, provider, _guard) = traced();
    let (_nats, client) = server_and_client().await;
    let tries = Arc::new(AtomicU32::new(0));
    let t = Arc::clone(&tries);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let function = Function::new("traced")
        .on::<Job>()
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .handler(move |_job: Job, ctx: Ctx| {
            let (t, done_tx) = (Arc::clone(&t), done_tx.clone());
            async move {
                ctx.step("load", || async { Ok::<_, HandlerError>(1) })
                    .await?;
                // A span of the handler's own, through tracing-opentelemetry.
                tracing::info_span!("user work").in_scope(|| {});
                if t.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::retry("first attempt fails"));
                }
                done_tx.send(()).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .tracer_provider(&provider)
        .start()
        .await
        .unwrap();

    let producer = publish_in_request(&client).await;
    tokio::time::timeout(WAIT, done_rx.recv()).await.unwrap();
    wait_consumer_drained(&client, "traced").await;
    worker.shutdown().await;
    provider.force_flush().unwrap();

    let attempts = spans_named(&exporter, "process test.job");
    let names: Vec<String> = exporter
        .get_finished_spans()
        .unwrap()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(attempts.len(), 2, "one span per attempt: {names:?}");
    for attempt in &attempts {
        assert_eq!(
            attempt.span_context.trace_id(),
            producer.trace_id(),
            "same trace as the request"
        );
        assert_eq!(
            attempt.parent_span_id,
            producer.span_id(),
            "child of the producer span"
        );
        assert_eq!(attempt.span_kind, opentelemetry::trace::SpanKind::Consumer);
        assert_eq!(
            attribute(attempt, "messaging.system").as_deref(),
            Some("nats")
        );
        assert_eq!(
            attribute(attempt, "messaging.destination.name").as_deref(),
            Some("herald.events.test.job")
        );
        assert_eq!(
            attribute(attempt, "messaging.consumer.group.name").as_deref(),
            Some("traced")
        );
    }
    let outcomes: Vec<Option<String>> = attempts
        .iter()
        .map(|a| attribute(a, "herald.outcome"))
        .collect();
    assert!(
        outcomes.contains(&Some("retried".into())) && outcomes.contains(&Some("ok".into())),
        "{outcomes:?}"
    );
    let failed = attempts
        .iter()
        .find(|a| attribute(a, "herald.outcome").as_deref() == Some("retried"))
        .unwrap();
    assert_eq!(
        failed.status,
        opentelemetry::trace::Status::error("first attempt fails"),
        "a failed attempt's span has status error with the error"
    );
    assert_eq!(
        attribute(failed, "herald.attempt").as_deref(),
        Some("1"),
        "the first delivery is attempt 1"
    );
    let user = spans_named(&exporter, "user work");
    assert_eq!(user.len(), 2, "the handler's own span, once per attempt");
    for span in &user {
        assert!(
            attempts
                .iter()
                .any(|a| a.span_context.span_id() == span.parent_span_id),
            "a span the handler opens is a child of its attempt"
        );
    }
    let steps = spans_named(&exporter, "step load");
    assert_eq!(steps.len(), 1, "the step ran once; the retry replayed it");
    assert!(
        attempts
            .iter()
            .any(|a| a.span_context.span_id() == steps[0].parent_span_id),
        "the step is a child of an attempt"
    );
}

#[tokio::test]
async fn a_dead_letter_and_its_redrive_stay_in_the_producers_trace() {
    let (exporter, provider, _guard) = traced();
    let (_nats, client) = server_and_client().await;
    let fixed = Arc::new(AtomicU32::new(0));
    let f = Arc::clone(&fixed);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let function =
        Function::new("redriven")
            .on::<Job>()
            .attempts(1)
            .handler(move |_job: Job, _ctx: Ctx| {
                let (f, done_tx) = (Arc::clone(&f), done_tx.clone());
                async move {
                    if f.load(Ordering::SeqCst) == 0 {
                        return Err(HandlerError::retry("broken"));
                    }
                    done_tx.send(()).unwrap();
                    Ok(())
                }
            });
    let mut dead = DeadLetters::watch(&client, "redriven").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .tracer_provider(&provider)
        .start()
        .await
        .unwrap();
    let producer = publish_in_request(&client).await;
    let (headers, payload) = dead.next(WAIT).await;
    assert!(
        headers["traceparent"].contains(&producer.trace_id().to_string()),
        "the dead letter keeps the trace"
    );

    fixed.store(1, Ordering::SeqCst);
    let mut redrive = async_nats::HeaderMap::new();
    for (name, value) in &headers {
        if !name.starts_with("herald-dlq-") && !name.starts_with("Nats-") {
            redrive.insert(name.as_str(), value.as_str());
        }
    }
    redrive.insert("Nats-Msg-Id", "redrive:redriven:1");
    redrive.insert("herald-redrive-of", "1");
    client
        .jetstream()
        .publish_with_headers("herald.redrive.redriven", redrive, payload)
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::timeout(WAIT, done_rx.recv()).await.unwrap();
    worker.shutdown().await;
    provider.force_flush().unwrap();
    let attempts = spans_named(&exporter, "process test.job");
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|a| a.span_context.trace_id() == producer.trace_id()),
        "both in the producer's trace"
    );
    let outcomes: Vec<Option<String>> = attempts
        .iter()
        .map(|a| attribute(a, "herald.outcome"))
        .collect();
    assert!(
        outcomes.contains(&Some("dead_lettered".into())),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn an_event_a_handler_publishes_continues_the_attempts_trace() {
    let (exporter, provider, _guard) = traced();
    let (_nats, client) = server_and_client().await;
    let mut others = client
        .nats()
        .subscribe("herald.events.test.other")
        .await
        .unwrap();
    let function = Function::new("relay")
        .on::<Job>()
        .handler(|job: Job, ctx: Ctx| async move {
            ctx.send_event("notify", &Other { n: job.n }).await?;
            Ok(())
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .tracer_provider(&provider)
        .start()
        .await
        .unwrap();
    let producer = publish_in_request(&client).await;
    let sent = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut others))
        .await
        .unwrap()
        .unwrap();
    wait_consumer_drained(&client, "relay").await;
    worker.shutdown().await;
    provider.force_flush().unwrap();
    let attempts = spans_named(&exporter, "process test.job");
    assert_eq!(attempts.len(), 1);
    let traceparent = sent
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .unwrap()
        .to_string();
    // send_event is a step: the event's parent is the step's span, inside the attempt.
    let steps = spans_named(&exporter, "step notify");
    assert_eq!(steps.len(), 1);
    assert_eq!(
        steps[0].parent_span_id,
        attempts[0].span_context.span_id(),
        "the step is a child of the attempt"
    );
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            producer.trace_id(),
            steps[0].span_context.span_id()
        ),
        "the published event continues the producer's trace from inside the attempt"
    );
}

#[tokio::test]
async fn in_link_mode_an_attempt_starts_its_own_trace_linked_to_the_producer() {
    let (exporter, provider, _guard) = traced();
    let (_nats, client) = server_and_client().await;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let function = Function::new("linked")
        .on::<Job>()
        .handler(move |_job: Job, _ctx: Ctx| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(()).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .tracer_provider(&provider)
        .trace_mode(TraceMode::Link)
        .start()
        .await
        .unwrap();
    let producer = publish_in_request(&client).await;
    tokio::time::timeout(WAIT, done_rx.recv()).await.unwrap();
    wait_consumer_drained(&client, "linked").await;
    worker.shutdown().await;
    provider.force_flush().unwrap();
    let attempts = spans_named(&exporter, "process test.job");
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_ne!(
        attempt.span_context.trace_id(),
        producer.trace_id(),
        "a trace of its own"
    );
    assert_eq!(
        attempt.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    let links: Vec<_> = attempt
        .links
        .iter()
        .map(|l| l.span_context.span_id())
        .collect();
    assert_eq!(
        links,
        vec![producer.span_id()],
        "linked to the producer span"
    );
    assert_eq!(attribute(attempt, "herald.outcome").as_deref(), Some("ok"));
}

/// The value of the first sample of `metric` whose labels contain every `label`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(metric) && line[metric.len()..].starts_with('{'))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_scenario_and_health_follows_the_server() {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(exporter)
        .build();
    let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "herald");

    let mut nats = herald_local_nats::LocalNats::start().unwrap();
    let client = connect(&nats).await;
    // 5 ok at once, 3 retried once then ok, 2 dead-lettered (terminal).
    publish_jobs(&client, 0..10).await;
    let seen = Arc::new(parking_lot::Mutex::new(std::collections::HashSet::new()));
    let s = Arc::clone(&seen);
    let function = Function::new("counted")
        .on::<Job>()
        .start_from(herald_worker::StartFrom::All)
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .concurrency(2)
        .handler(move |job: Job, _ctx: Ctx| {
            let first = s.lock().insert(job.n);
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await; // the work, slow enough to see lag
                match job.n {
                    0..5 => Ok(()),
                    5..8 if first => Err(HandlerError::retry("once")),
                    5..8 => Ok(()),
                    _ => Err(HandlerError::terminal("never")),
                }
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .meter(meter)
        .prometheus(registry)
        .stats_interval(Duration::from_millis(100))
        .http("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let address = worker.http_address().unwrap();
    assert_eq!(http_get(address, "/healthz").await.0, 200);
    assert_eq!(http_get(address, "/readyz").await.0, 200);

    // Lag is visible, then falls to zero as the worker drains.
    let deadline = Instant::now() + WAIT;
    let mut saw_lag = false;
    let mut most_running: f64 = 0.0;
    loop {
        let (_, text) = http_get(address, "/metrics").await;
        let pending = sample(&text, "herald_consumer_pending", &["function=\"counted\""]);
        let ack_pending = sample(
            &text,
            "herald_consumer_ack_pending",
            &["function=\"counted\""],
        );
        let ok = sample(
            &text,
            "herald_runs_total",
            &["function=\"counted\"", "outcome=\"ok\""],
        )
        .unwrap_or(0.0);
        saw_lag |= pending.is_some_and(|p| p > 0.0);
        let running = sample(
            &text,
            "herald_handlers_in_flight",
            &["function=\"counted\""],
        );
        most_running = most_running.max(running.unwrap_or(0.0));
        if ok == 8.0 && pending == Some(0.0) && ack_pending == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "metrics did not settle:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the endpoint
    }
    assert!(saw_lag, "pending was above zero before the worker drained");
    assert!(
        most_running > 0.0 && most_running <= 2.0,
        "handlers in flight stay within the concurrency of 2 (most seen: {most_running})"
    );
    let (_, text) = http_get(address, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            "herald_handlers_in_flight",
            &["function=\"counted\""]
        ),
        Some(0.0),
        "no handler runs once drained: {text}"
    );
    assert_eq!(
        sample(&text, "herald_runs_total", &["outcome=\"retried\""]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "herald_runs_total", &["outcome=\"dead_lettered\""]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "herald_dead_letters_total",
            &["reason=\"terminal_error\""]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(text.contains("herald_handler_duration"), "{text}");

    // Readiness follows the server.
    nats.stop_node(0).unwrap();
    let deadline = Instant::now() + WAIT;
    while http_get(address, "/readyz").await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready with the server down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http_get(address, "/healthz").await.0,
        200,
        "alive, just not ready"
    );
    nats.start_node(0).unwrap();
    let deadline = Instant::now() + WAIT;
    while http_get(address, "/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
}
