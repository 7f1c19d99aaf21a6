//! API keys: 401 without or with a bad key, 403 outside the scopes, 429 over the rate,
//! revocation without a restart, unregistered types only for keys that allow them.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use herald_gateway::GatewayConfig;
use herald_gateway::keys::{NewKey, Rate};
use serde_json::json;

fn signup() -> serde_json::Value {
    json!({"email": "a@example.com"})
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401_and_outside_scopes_403() {
    let s = setup().await;
    let mut missing = binary("x", "k1", &signup());
    missing.headers_mut().remove("authorization");
    let answer = send(&s.router, missing).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");

    let wrong = format!("{}x", s.token);
    let answer = send(&s.router, binary(&wrong, "k2", &signup())).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["detail"], "wrong secret");
    let answer = send(&s.router, binary("hrld_000000000000_nope", "k3", &signup())).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    let billing = s
        .keys
        .create(NewKey {
            scopes: vec!["billing.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let answer = send(&s.router, binary(&billing.token, "k4", &signup())).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    assert_eq!(answer.body["index"], 0);

    // The webhook spec's query token works too.
    let mut query = binary("x", "k5", &signup());
    query.headers_mut().remove("authorization");
    *query.uri_mut() = format!("/v1/events?access_token={}", s.token)
        .parse()
        .unwrap();
    assert_eq!(send(&s.router, query).await.status, StatusCode::ACCEPTED);
    assert_eq!(stored_count(&s.client).await, 1);
}

#[tokio::test]
async fn a_key_over_its_rate_is_429_with_retry_after() {
    let s = setup().await;
    let slow = s
        .keys
        .create(NewKey {
            rate: Rate { per_s: 1, burst: 1 },
            ..Default::default()
        })
        .await
        .unwrap();
    let first = send(&s.router, binary(&slow.token, "r1", &signup())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = send(&s.router, binary(&slow.token, "r2", &signup())).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers["retry-after"], "1");
    assert_eq!(second.body["type"], "urn:herald:problem:rate-limited");
    // Another key is not affected.
    let other = send(&s.router, binary(&s.token, "r3", &signup())).await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_revoked_key_is_refused_without_a_restart() {
    let s = setup().await;
    let created = s.keys.create(NewKey::default()).await.unwrap();
    let answer = send(&s.router, binary(&created.token, "v1", &signup())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);

    let revoked = s.keys.revoke(&created.key.id).await.unwrap();
    assert!(revoked.disabled);
    let router = s.router.clone();
    let token = created.token.clone();
    wait_until(
        Duration::from_secs(5),
        "the revocation to reach the gateway",
        || {
            let router = router.clone();
            let token = token.clone();
            async move {
                send(&router, binary(&token, "v2", &signup())).await.status
                    == StatusCode::UNAUTHORIZED
            }
        },
    )
    .await;
    let listed = s.keys.list().await.unwrap();
    assert!(listed.iter().any(|k| k.id == created.key.id && k.disabled));
    // Until the revocation reached the gateway, "v2" may have been stored (once: its id
    // deduplicates); from then on nothing is.
    let stored = stored_count(&s.client).await;
    assert!(stored <= 2, "{stored} events stored");
    let refused = send(&s.router, binary(&token, "v3", &signup())).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        stored_count(&s.client).await,
        stored,
        "nothing stored after revocation"
    );
}

#[tokio::test]
async fn unregistered_types_need_a_key_that_allows_them() {
    let s = setup().await;
    let event = |id: &str| {
        Request::post("/v1/events")
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", "audit.logged")
            .header("ce-source", "urn:example:audit")
            .body(Body::from(r#"{"anything": true}"#))
    };
    let mut refused = event("a1").unwrap();
    refused.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.token).parse().unwrap(),
    );
    assert_eq!(
        send(&s.router, refused).await.status,
        StatusCode::BAD_REQUEST
    );
    let open = s
        .keys
        .create(NewKey {
            allow_unregistered: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut allowed = event("a2").unwrap();
    allowed.headers_mut().insert(
        "authorization",
        format!("Bearer {}", open.token).parse().unwrap(),
    );
    let answer = send(&s.router, allowed).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert!(answer.body["accepted"][0].get("dataschema").is_none());
}

#[tokio::test]
async fn without_required_keys_requests_are_anonymous() {
    let s = setup_with(GatewayConfig {
        require_keys: false,
        ..Default::default()
    })
    .await;
    let mut request = binary("x", "n1", &signup());
    request.headers_mut().remove("authorization");
    assert_eq!(send(&s.router, request).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_replica_at_its_in_flight_cap_answers_503_rather_than_queueing() {
    let s = setup_with(GatewayConfig {
        max_in_flight: 1,
        ..Default::default()
    })
    .await;
    // A request whose body is read only once admitted (so its slot is taken), and arrives
    // when released.
    let (reading, read_started) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let body = serde_json::to_vec(&signup()).unwrap();
    let slow_body = Body::from_stream(futures::stream::once(async move {
        let _ = reading.send(());
        let _ = released.await;
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(body))
    }));
    let mut slow = binary(&s.token, "slow", &signup());
    *slow.body_mut() = slow_body;
    let router = s.router.clone();
    let first = tokio::spawn(async move { send(&router, slow).await });
    read_started.await.unwrap();

    let second = send(&s.router, binary(&s.token, "second", &signup())).await;
    assert_eq!(
        second.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        second.body
    );
    assert_eq!(second.headers["retry-after"], "2");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().status, StatusCode::ACCEPTED);
    assert_eq!(
        send(&s.router, binary(&s.token, "third", &signup()))
            .await
            .status,
        StatusCode::ACCEPTED
    );
}
