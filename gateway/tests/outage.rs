//! NATS unavailable: 503 with Retry-After, readiness follows the connection, and a request
//! cut by an outage can be sent again whole without storing anything twice.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use herald_gateway::GatewayConfig;
use serde_json::json;

fn batch(range: std::ops::Range<u32>) -> serde_json::Value {
    json!(
        range
            .map(|n| structured_event(&format!("o-{n}"), json!({"email": "a@example.com"})))
            .collect::<Vec<_>>()
    )
}

fn batch_request(token: &str, body: &serde_json::Value) -> Request<Body> {
    json_request(
        "/v1/events",
        Some(token),
        "application/cloudevents-batch+json",
        body,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_is_503_with_retry_after_and_a_cut_request_is_safe_to_send_again() {
    let mut s = setup_with(GatewayConfig {
        publish_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let readyz = || Request::get("/readyz").body(Body::empty()).unwrap();
    // A first request makes the gateway know the schema and the key.
    let warm = send(
        &s.router,
        binary(&s.token, "warm", &json!({"email": "a@example.com"})),
    )
    .await;
    assert_eq!(warm.status, StatusCode::ACCEPTED);

    // Requests in flight while the server stops: each is stored whole, or answered 503.
    let body = batch(0..100);
    let router = s.router.clone();
    let token = s.token.clone();
    let racing = {
        let body = body.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..20 {
                let answer = send(&router, batch_request(&token, &body)).await;
                statuses.push(answer.status);
                if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                    assert!(answer.headers.contains_key("retry-after"));
                    break;
                }
            }
            statuses
        })
    };
    tokio::task::block_in_place(|| s.nats.stop_node(0)).unwrap();
    let statuses = racing.await.unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );

    let router = s.router.clone();
    wait_until(Duration::from_secs(10), "a 503 from readyz", || {
        let router = router.clone();
        async move { send(&router, readyz()).await.status == StatusCode::SERVICE_UNAVAILABLE }
    })
    .await;
    let down = send(&s.router, batch_request(&s.token, &body)).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        down.body
    );
    assert_eq!(down.headers["retry-after"], "2");
    assert_eq!(down.body["type"], "urn:herald:problem:unavailable");

    tokio::task::block_in_place(|| s.nats.start_node(0)).unwrap();
    let router = s.router.clone();
    wait_until(
        Duration::from_secs(15),
        "readiness after the restart",
        || {
            let router = router.clone();
            async move { send(&router, readyz()).await.status == StatusCode::OK }
        },
    )
    .await;
    // The client retries the whole request, as a 503 asks: nothing is stored twice.
    let again = send(&s.router, batch_request(&s.token, &body)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    assert_eq!(
        stored_count(&s.client).await,
        101,
        "warm-up plus 100 distinct ids"
    );
}

#[tokio::test]
async fn a_missing_events_stream_is_503_and_nothing_is_claimed_stored() {
    let s = setup().await;
    s.client
        .jetstream()
        .delete_stream(s.client.namespace().events_stream())
        .await
        .unwrap();
    let answer = send(&s.router, batch_request(&s.token, &batch(0..3))).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );
    assert!(answer.headers.contains_key("retry-after"));
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("not provisioned"),
        "{:?}",
        answer.body
    );
    assert!(answer.body.get("accepted").is_none(), "{:?}", answer.body);
}
