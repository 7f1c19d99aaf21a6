//! CloudEvents and Inngest ingest against a real nats-server: every row of the status table
//! in `docs/gateway.md` that does not need keys or an outage.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use herald::PublishOptions;
use serde_json::json;

#[tokio::test]
async fn a_binary_mode_event_is_stored_exactly_as_a_rust_producer_stores_it() {
    let s = setup().await;
    let data = json!({"email": "ada@example.com", "plan": "pro"});
    let answer = send(&s.router, binary(&s.token, "signup-1", &data)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let accepted = &answer.body["accepted"][0];
    assert_eq!(accepted["id"], "signup-1");
    assert_eq!(accepted["duplicate"], false);
    assert_eq!(accepted["dataschema"], "urn:herald:schema:user.signup:1");
    let (gateway_headers, gateway_payload) =
        stored(&s.client, accepted["seq"].as_u64().unwrap()).await;

    let ack = s
        .client
        .publish_value(
            "user.signup",
            &data,
            PublishOptions {
                id: Some("signup-2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let (sdk_headers, sdk_payload) = stored(&s.client, ack.sequence).await;

    assert_eq!(gateway_payload, sdk_payload);
    let names = |h: &std::collections::BTreeMap<String, String>| {
        h.keys().map(|k| k.to_ascii_lowercase()).collect::<Vec<_>>()
    };
    assert_eq!(names(&gateway_headers), names(&sdk_headers));
    assert!(
        !gateway_headers.contains_key("ce-datacontenttype"),
        "absent means JSON"
    );
    for same in ["ce-specversion", "ce-type", "ce-dataschema"] {
        assert_eq!(gateway_headers[same], sdk_headers[same], "{same}");
    }
    assert_eq!(gateway_headers["Nats-Msg-Id"], "signup-1");
    assert_eq!(gateway_headers["ce-source"], "urn:example:service:signup");
    // Stamped in the SDK's fixed form: 2026-11-25T07:31:01.490068Z.
    assert_eq!(gateway_headers["ce-time"].len(), 27);
}

#[tokio::test]
async fn structured_and_batch_modes_store_every_event_and_mark_duplicates() {
    let s = setup().await;
    let event = structured_event("one", json!({"email": "a@example.com"}));
    let answer = send(
        &s.router,
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents+json",
            &event,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let first_seq = answer.body["accepted"][0]["seq"].clone();

    let mut with_extension = structured_event("two", json!({"email": "b@example.com"}));
    with_extension["tenant"] = json!("acme");
    with_extension["time"] = json!("2026-11-25T08:31:01+01:00");
    with_extension["subject"] = json!("José García");
    let batch = json!([event, with_extension]);
    let answer = send(
        &s.router,
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents-batch+json",
            &batch,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let accepted = answer.body["accepted"].as_array().unwrap();
    assert_eq!(accepted[0]["duplicate"], true);
    assert_eq!(accepted[0]["seq"], first_seq);
    assert_eq!(accepted[1]["duplicate"], false);
    let (headers, _) = stored(&s.client, accepted[1]["seq"].as_u64().unwrap()).await;
    assert_eq!(headers["ce-tenant"], "acme");
    assert_eq!(headers["ce-time"], "2026-11-25T07:31:01.000000Z");
    assert_eq!(headers["ce-subject"], "Jos%C3%A9%20Garc%C3%ADa");
    assert_eq!(stored_count(&s.client).await, 2);

    let empty = send(
        &s.router,
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents-batch+json",
            &json!([]),
        ),
    )
    .await;
    assert_eq!(empty.status, StatusCode::ACCEPTED);
    assert_eq!(empty.body["accepted"], json!([]));
}

#[tokio::test]
async fn a_batch_with_one_invalid_event_stores_none_and_names_its_path() {
    let s = setup().await;
    let batch = json!([
        structured_event("ok-1", json!({"email": "a@example.com"})),
        structured_event("bad-1", json!({"plan": "pro"})),
        structured_event("ok-2", json!({"email": "c@example.com"})),
    ]);
    let answer = send(
        &s.router,
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents-batch+json",
            &batch,
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(
        answer.body["title"],
        "1 of 3 events are invalid; none was stored"
    );
    let error = &answer.body["errors"][0];
    assert_eq!(error["index"], 1);
    assert_eq!(error["id"], "bad-1");
    assert_eq!(error["schema"], "urn:herald:schema:user.signup:1");
    assert_eq!(error["violations"][0]["path"], "$");
    assert!(
        error["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("email"),
        "{error}"
    );
    assert_eq!(stored_count(&s.client).await, 0);
}

#[tokio::test]
async fn malformed_requests_are_400_with_json_paths() {
    let s = setup().await;
    let cases: Vec<(Request<Body>, &str)> = vec![
        (
            Request::post("/v1/events")
                .header("authorization", format!("Bearer {}", s.token))
                .header("content-type", "application/cloudevents+json")
                .body(Body::from("{not json"))
                .unwrap(),
            "$",
        ),
        (
            json_request(
                "/v1/events",
                Some(&s.token),
                "application/cloudevents-batch+json",
                &json!([structured_event("x", json!({})), {"specversion": "1.0", "id": "y",
                    "source": "s", "data": {}}]),
            ),
            "$[1].type",
        ),
        (
            json_request(
                "/v1/events",
                Some(&s.token),
                "application/cloudevents+json",
                &json!({"specversion": "1.0", "id": "z", "type": "User Signup", "source": "s"}),
            ),
            "$.type",
        ),
        (
            {
                let mut request = binary(&s.token, "u", &json!({"email": "a@example.com"}));
                request
                    .headers_mut()
                    .insert("ce-type", "user.unknown".parse().unwrap());
                request
            },
            "type",
        ),
        (
            {
                let mut request = binary(&s.token, "v", &json!({"email": "a@example.com"}));
                request.headers_mut().insert(
                    "ce-dataschema",
                    "urn:herald:schema:user.signup:9".parse().unwrap(),
                );
                request
            },
            "dataschema",
        ),
        (
            {
                let mut request = binary(&s.token, "w", &json!({"email": "a@example.com"}));
                request.headers_mut().remove("ce-source");
                request
            },
            "ce-source",
        ),
    ];
    for (request, path) in cases {
        let answer = send(&s.router, request).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{path}: {:?}",
            answer.body
        );
        let errors = answer.body["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e["violations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["path"] == path)),
            "{path}: {:?}",
            answer.body
        );
    }
    assert_eq!(stored_count(&s.client).await, 0);
}

#[tokio::test]
async fn wrong_media_types_are_415_and_oversized_requests_413() {
    let s = setup().await;
    let mut text = binary(&s.token, "t", &json!({}));
    text.headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    let mut base64 = structured_event("b", json!(null));
    base64["data_base64"] = json!("aGVsbG8=");
    let cases = vec![
        text,
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents+json",
            &base64,
        ),
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents+xml",
            &json!({}),
        ),
    ];
    for request in cases {
        let answer = send(&s.router, request).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{:?}",
            answer.body
        );
    }

    let batch: Vec<_> = (0..101)
        .map(|n| structured_event(&format!("e{n}"), json!({"email": "a@example.com"})))
        .collect();
    let answer = send(
        &s.router,
        json_request(
            "/v1/events",
            Some(&s.token),
            "application/cloudevents-batch+json",
            &json!(batch),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["index"], 100);

    let big = "x".repeat(2 * 1024 * 1024);
    let answer = send(
        &s.router,
        binary(
            &s.token,
            "big",
            &json!({"email": "a@example.com", "plan": big}),
        ),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body["index"], 0);

    let huge = "x".repeat(5 * 1024 * 1024);
    let answer = send(&s.router, binary(&s.token, "huge", &json!({"plan": huge}))).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.body["type"], "urn:herald:problem:body-too-large");
    assert_eq!(stored_count(&s.client).await, 0);
}

#[tokio::test]
async fn inngest_clients_send_one_event_or_an_array_and_seeded_retries_deduplicate() {
    let s = setup().await;
    let path = format!("/e/{}", s.token);
    let answer = send(
        &s.router,
        json_request(
            &path,
            None,
            "application/json",
            &json!({"name": "user.signup", "data": {"email": "a@example.com"}, "id": "inn-1",
                "ts": 1_764_055_861_000u64}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body, json!({"ids": ["inn-1"], "status": 200}));
    let (headers, _) = stored(&s.client, 1).await;
    assert_eq!(headers["ce-time"], "2025-11-25T07:31:01.000000Z");
    assert!(headers["ce-source"].starts_with("urn:herald:gateway:inngest:"));

    let seeded = || {
        Request::post(&path)
            .header("content-type", "application/json")
            .header("x-inngest-event-id-seed", "1764055861000,AAECAwQFBgcICQ==")
            .body(Body::from(
                serde_json::to_vec(&json!([
                    {"name": "user.signup", "data": {"email": "b@example.com"}},
                    {"name": "user.signup", "data": {"email": "c@example.com"}}
                ]))
                .unwrap(),
            ))
            .unwrap()
    };
    let first = send(&s.router, seeded()).await;
    let again = send(&s.router, seeded()).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, again.body);
    assert_eq!(
        stored_count(&s.client).await,
        3,
        "the retry was deduplicated"
    );

    let answer = send(
        &s.router,
        json_request(
            &path,
            None,
            "application/json",
            &json!({"name": "app/user.created", "data": {}}),
        ),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body["ids"], json!([]));
    assert_eq!(answer.body["status"], 400);
    assert!(answer.body["error"].as_str().unwrap().contains("$.name"));
}

#[tokio::test]
async fn handshake_health_readiness_and_openapi_answer() {
    let s = setup().await;
    let answer = send(
        &s.router,
        Request::options("/v1/events")
            .header("webhook-request-origin", "eventemitter.example.com")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers["webhook-allowed-origin"],
        "eventemitter.example.com"
    );
    assert_eq!(answer.headers["webhook-allowed-rate"], "*");
    assert_eq!(answer.headers["allow"], "POST, OPTIONS");

    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(
        send(&s.router, get("/healthz")).await.status,
        StatusCode::OK
    );
    wait_until(std::time::Duration::from_secs(5), "readiness", || async {
        send(&s.router, get("/readyz")).await.status == StatusCode::OK
    })
    .await;
    let openapi = send(&s.router, get("/openapi.json")).await;
    assert_eq!(openapi.status, StatusCode::OK);
    assert_eq!(openapi.body["openapi"], "3.1.0");
    assert!(openapi.body["paths"]["/v1/events"]["post"]["responses"]["429"].is_object());
}
