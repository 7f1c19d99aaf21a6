//! W3C trace context from the HTTP request continues into the stored events.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_caller_trace_context_continues_into_the_event() {
    let s = setup().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut request = binary(&s.token, "traced", &json!({"email": "a@example.com"}));
    request
        .headers_mut()
        .insert("traceparent", parent.parse().unwrap());
    let answer = send(&s.router, request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let (headers, _) = stored(
        &s.client,
        answer.body["accepted"][0]["seq"].as_u64().unwrap(),
    )
    .await;
    // No OpenTelemetry layer in this test: the caller's context is passed on as is.
    assert_eq!(headers["traceparent"], parent);
}
