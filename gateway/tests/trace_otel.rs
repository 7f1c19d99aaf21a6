//! With an OpenTelemetry layer installed, the gateway's request span continues the caller's
//! trace and is the stored event's parent. Alone in its test binary: `tracing` caches a
//! span's interest process-wide, so a test without a subscriber running beside it could
//! leave the gateway's span disabled here.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

#[tokio::test]
async fn with_opentelemetry_the_gateway_span_is_a_child_of_the_caller_and_the_events_parent() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway-tests")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = setup().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = binary(&s.token, "traced-otel", &json!({"email": "a@example.com"}));
    request.headers_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let answer = send(&s.router, request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let (headers, _) = stored(
        &s.client,
        answer.body["accepted"][0]["seq"].as_u64().unwrap(),
    )
    .await;
    let parts: Vec<&str> = headers["traceparent"].split('-').collect();
    assert_eq!(parts[1], trace_id, "the caller's trace continues");
    assert_ne!(
        parts[2], caller_span,
        "the gateway's own span is the event's parent"
    );
    assert_eq!(parts[3], "01");
}
