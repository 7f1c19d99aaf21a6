//! One trace across the bus: `cargo run -p tracing-example`.
//!
//! A request span publishes `user.signup`; the `welcome` function fails its first attempt
//! and succeeds on the second. Spans are exported to memory and printed to stdout as a
//! tree: the request, then both attempts as its children (W3C trace context travels in the
//! event's `traceparent` header), with the step and the handler's own `tracing` span inside
//! each attempt. The setup is the usual one: an OpenTelemetry tracer provider installed
//! globally (the worker takes its spans from it) and a `tracing-opentelemetry` layer for the
//! application's `tracing` spans. To send them to your tracing backend instead, install an
//! exporter (for example OTLP, `herald_worker::telemetry::otlp` with the `otlp` feature) in
//! place of the in-memory one; nothing in Herald changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use example_events::UserSignup;
use herald::Client;
use herald_worker::{Backoff, Ctx, Function, HandlerError, Worker};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-example")));
    tracing::subscriber::set_global_default(subscriber)?;
    opentelemetry::global::set_tracer_provider(provider.clone());

    let server = herald_local_nats::NatsServer::from_env_or_start()?;
    let client = Client::builder()
        .namespace("tracing-demo")
        .connect(&server.url())
        .await?;
    client.provision().await?;
    let attempts = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let function = Function::new("welcome")
        .on::<UserSignup>()
        .backoff(Backoff::fixed(Duration::from_millis(100)))
        .handler(move |signup: UserSignup, ctx: Ctx| {
            let (attempts, done_tx) = (Arc::clone(&attempts), done_tx.clone());
            async move {
                ctx.step("render mail", || async {
                    Ok::<_, HandlerError>(format!("Welcome, {}!", signup.email))
                })
                .await?;
                let sending = tracing::info_span!("send mail", to = %signup.email);
                let first = sending.in_scope(|| attempts.fetch_add(1, Ordering::SeqCst) == 0);
                if first {
                    return Err(HandlerError::retry("the mail provider timed out"));
                }
                done_tx.send(()).ok();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await?;

    let request = tracing::info_span!("POST /api/signup");
    async {
        let signup = UserSignup {
            user_id: uuid::Uuid::now_v7(),
            email: "ada@example.com".into(),
            plan: None,
        };
        client.publish(&signup).await?.await
    }
    .instrument(request)
    .await?;
    tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await?;
    worker.shutdown().await;
    provider.force_flush()?;

    let spans = exporter.get_finished_spans()?;
    let mut children: BTreeMap<String, Vec<&SpanData>> = BTreeMap::new();
    for span in &spans {
        children
            .entry(span.parent_span_id.to_string())
            .or_default()
            .push(span);
    }
    let roots: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "POST /api/signup")
        .collect();
    for root in roots {
        println!("trace {}", root.span_context.trace_id());
        print_tree(root, &children, 1);
    }
    Ok(())
}

fn print_tree(span: &SpanData, children: &BTreeMap<String, Vec<&SpanData>>, depth: usize) {
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| format!(" {key}={}", kv.value))
            .unwrap_or_default()
    };
    println!(
        "{}{} [{}]{}{}",
        "  ".repeat(depth),
        span.name,
        span.span_context.span_id(),
        attribute("herald.attempt"),
        attribute("herald.outcome")
    );
    let mut kids: Vec<&&SpanData> = children
        .get(&span.span_context.span_id().to_string())
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    kids.sort_by_key(|s| s.start_time);
    for child in kids {
        print_tree(child, children, depth + 1);
    }
}
