//! The console's actions at the HTTP level, against a real nats-server and a worker: send
//! with schema errors by JSON path, dead letters (filters, inspect, redrive, edit and
//! redrive, redrive all, purge), schemas (versions, diff, consumers, AsyncAPI), and the
//! safety rules (token, origin, read-only).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{answer, count, post_to, setup, setup_with, text};
use herald_console::ConsoleConfig;

#[tokio::test]
async fn send_shows_errors_by_path_then_publishes() {
    let setup = setup().await;
    let (status, form) = setup.get("/send?type=user.signup").await;
    assert_eq!(status, StatusCode::OK);
    // The skeleton holds the required field.
    assert!(text(&form, "textarea").contains("\"email\""), "{form}");

    let (status, _, refused) = setup
        .post(
            "/send",
            &[("type", "user.signup"), ("payload", r#"{"plan": 7}"#)],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        count(&refused, "#errors li[data-path=\"$.plan\"]") == 1,
        "{refused}"
    );
    assert!(refused.contains("email"), "{refused}");
    let (status, _, broken) = setup
        .post("/send", &[("type", "user.signup"), ("payload", "{nope")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count(&broken, "#errors li[data-path=\"$\"]"), 1);

    let (status, location, _) = setup
        .post(
            "/send",
            &[
                ("type", "user.signup"),
                ("payload", r#"{"email": "fay@example.com"}"#),
                ("id", "console-send-1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with("/events/"), "{location}");
    let page = setup.wait_for_page(&location, "data-status=\"ok\"").await;
    assert_eq!(text(&page, "#event-id"), "console-send-1");

    let (status, _) = setup.get("/send?type=no.such.type").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dead_letters_are_filtered_inspected_edited_and_redriven() {
    let setup = setup().await;
    let (id, _) = setup.publish("gus@example.com", Some("fail")).await;
    let list = setup.wait_for_page("/dlq?function=welcome", &id).await;
    assert_eq!(count(&list, "tr[data-seq]"), 1);
    let sequence: String = {
        let document = scraper::Html::parse_document(&list);
        let selector = scraper::Selector::parse("tr[data-seq]").unwrap();
        let row = document.select(&selector).next().unwrap();
        row.value().attr("data-seq").unwrap().to_owned()
    };
    // Filters in the URL.
    let (_, by_reason) = setup.get("/dlq?reason=terminal_error").await;
    assert_eq!(count(&by_reason, "tr[data-seq]"), 1);
    let (_, other_reason) = setup.get("/dlq?reason=timeout").await;
    assert_eq!(count(&other_reason, "tr[data-seq]"), 0);
    let (_, other_type) = setup.get("/dlq?type=order.placed").await;
    assert_eq!(count(&other_type, "tr[data-seq]"), 0);
    // The functions page counts it by reason, linked to the filtered list.
    let (_, functions) = setup.get("/").await;
    assert!(
        functions.contains("/dlq?function=welcome&amp;reason=terminal_error"),
        "{functions}"
    );
    // The run's page says it was dead-lettered.
    setup
        .wait_for_page(
            &format!("/runs/welcome/{id}"),
            "data-status=\"dead_lettered\"",
        )
        .await;

    // Inspect, then an edit that breaks the schema is refused with its path.
    let (status, letter) = setup.get(&format!("/dlq/{sequence}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(letter.contains("this plan does not exist"));
    let (status, _, refused) = setup
        .post(
            &format!("/dlq/{sequence}/redrive"),
            &[("payload", r#"{"email": 5}"#)],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        count(&refused, "#errors li[data-path=\"$.email\"]"),
        1,
        "{refused}"
    );

    // A valid edit is redriven, and the run turns ok.
    let (status, location, _) = setup
        .post(
            &format!("/dlq/{sequence}/redrive"),
            &[("payload", r#"{"email": "gus@example.com", "plan": "pro"}"#)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        location.starts_with(&format!("/runs/welcome/{id}")),
        "{location}"
    );
    setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"ok\"")
        .await;
    let (_, empty) = setup.get("/dlq").await;
    assert_eq!(count(&empty, "tr[data-seq]"), 0);

    // Redrive all at a rate: the fixed handler turns them ok.
    let (first, _) = setup.publish("hal@example.com", Some("fail")).await;
    let (second, _) = setup.publish("ida@example.com", Some("fail")).await;
    setup.wait_for_page("/dlq", &second).await;
    setup.wait_for_page("/dlq", &first).await;
    setup.broken.store(false, Ordering::SeqCst);
    let (status, location, _) = setup
        .post("/dlq/redrive", &[("function", "welcome"), ("rate", "50")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.contains("redriving%202"), "{location}");
    for id in [&first, &second] {
        setup
            .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"ok\"")
            .await;
    }

    // Purge asks first, then deletes.
    setup.broken.store(true, Ordering::SeqCst);
    let (third, _) = setup.publish("jo@example.com", Some("fail")).await;
    setup.wait_for_page("/dlq", &third).await;
    let (_, confirm) = setup.get("/dlq/purge?function=welcome").await;
    assert_eq!(text(&confirm, "#purge-count"), "1");
    let (status, _, _) = setup
        .post("/dlq/purge", &[("function", "welcome"), ("confirm", "yes")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = setup
        .post(
            "/dlq/purge",
            &[("function", "welcome"), ("confirm", "purge")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, gone) = setup.get("/dlq").await;
    assert_eq!(count(&gone, "tr[data-seq]"), 0);
}

#[tokio::test]
async fn schemas_show_versions_diff_consumers_and_asyncapi() {
    let setup = setup().await;
    let mut v2 = herald::schema::schema_for::<common::Signup>();
    v2["properties"]["referrer"] = serde_json::json!({"type": ["string", "null"]});
    let registry = setup.client.registry().await.unwrap();
    registry.register("user.signup", &v2).await.unwrap();

    let (status, list) = setup.get("/schemas").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains("FULL_TRANSITIVE"));
    assert!(list.contains("href=\"/functions/welcome\""), "{list}");
    let (status, page) = setup.get("/schemas/user.signup?from=1&to=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&page, "#versions tbody tr"), 2);
    let added: String = {
        let document = scraper::Html::parse_document(&page);
        let selector = scraper::Selector::parse("#diff .add").unwrap();
        document.select(&selector).flat_map(|e| e.text()).collect()
    };
    assert!(added.contains("referrer"), "{page}");
    let (status, _) = setup.get("/schemas/no.such").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let request = Request::get("/schemas/asyncapi.json")
        .body(Body::empty())
        .unwrap();
    let (status, document) = answer(&setup.router, request).await;
    assert_eq!(status, StatusCode::OK);
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(
        document["channels"]["user.signup"]["address"],
        "herald.events.user.signup"
    );
}

#[tokio::test]
async fn read_only_hides_and_refuses_every_action() {
    let setup = setup_with(ConsoleConfig {
        read_only: true,
        ..Default::default()
    })
    .await;
    let (id, _) = setup.publish("kim@example.com", Some("fail")).await;
    let list = setup.wait_for_page("/dlq", &id).await;
    assert!(!list.contains("Redrive"), "{list}");
    assert!(!list.contains("Purge"));
    assert!(list.contains("read-only"));
    let (status, _) = setup.get("/send").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = setup.get("/dlq/purge").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in [
        "/dlq/redrive",
        "/dlq/purge",
        "/send",
        "/functions/welcome/replay",
    ] {
        let (status, _, _) = setup.post(path, &[("confirm", "purge")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _, _) = setup.post(&format!("/runs/welcome/{id}/cancel"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, dlq) = setup.get("/dlq").await;
    assert_eq!(count(&dlq, "tr[data-seq]"), 1, "nothing was changed");
}

#[tokio::test]
async fn a_token_is_required_and_kept_in_an_http_only_cookie() {
    let setup = setup_with(ConsoleConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let (status, _) = setup.get("/").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = setup.get("/?token=wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = tower::ServiceExt::oneshot(
        setup.router.clone(),
        Request::get("/runs?token=s3cret")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/runs");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let value = cookie.split(';').next().unwrap().to_owned();
    let request = Request::get("/")
        .header("cookie", &value)
        .body(Body::empty())
        .unwrap();
    let (status, _) = answer(&setup.router, request).await;
    assert_eq!(status, StatusCode::OK);
    let request = Request::get("/")
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let (status, _) = answer(&setup.router, request).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn state_changing_requests_from_other_sites_are_refused() {
    let setup = setup().await;
    let form = [
        ("type", "user.signup"),
        ("payload", r#"{"email":"x@example.com"}"#),
    ];
    let (status, _, _) = post_to(
        &setup.router,
        "/send",
        &form,
        &[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8289"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post_to(
        &setup.router,
        "/send",
        &form,
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post_to(
        &setup.router,
        "/send",
        &form,
        &[
            ("origin", "http://127.0.0.1:8289"),
            ("host", "127.0.0.1:8289"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}
