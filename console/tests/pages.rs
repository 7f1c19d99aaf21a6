//! Every page of the console at the HTTP level, against a real nats-server and a worker:
//! functions, runs with URL filters, a run's waterfall (long sleeps drawn short), cancel,
//! events and their runs, the live tail over SSE.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{count, setup, text};
use futures::StreamExt;
use tower::ServiceExt;

#[tokio::test]
async fn functions_runs_and_a_run_waterfall() {
    let setup = setup().await;
    let (ok_id, _) = setup.publish("ada@example.com", None).await;
    let (flaky_id, _) = setup.publish("bob@example.com", Some("flaky")).await;

    // The run list fills from the activity records; both runs end ok.
    let runs = setup
        .wait_for_page("/runs?status=ok&function=welcome", &flaky_id)
        .await;
    assert!(runs.contains(&ok_id), "{runs}");
    assert_eq!(count(&runs, "tr[data-status=ok]"), 2);

    // Filters in the URL: by event id, by status, by time, by function.
    let (_, one) = setup.get(&format!("/runs?event={ok_id}")).await;
    assert_eq!(count(&one, "tbody tr"), 1, "{one}");
    let (_, none) = setup.get("/runs?status=dead_lettered").await;
    assert_eq!(count(&none, "tbody tr"), 0);
    let (_, future) = setup.get("/runs?since=2999-01-01T00:00:00Z").await;
    assert_eq!(count(&future, "tbody tr"), 0);
    let (_, past) = setup
        .get("/runs?until=2000-01-01T00:00:00Z&function=welcome")
        .await;
    assert_eq!(count(&past, "tbody tr"), 0);
    let (status, _) = setup.get("/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The functions page: triggers, attempts, and a link to the function.
    let (status, functions) = setup.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        count(&functions, "tr[data-function=welcome]"),
        1,
        "{functions}"
    );
    assert!(functions.contains("user.signup"));
    assert!(functions.contains("href=\"/functions/welcome\""));

    // The function page: settings, recent runs, dead letters, replay's dry run.
    let (status, function) = setup.get("/functions/welcome").await;
    assert_eq!(status, StatusCode::OK);
    assert!(function.contains(&flaky_id));
    assert!(function.contains("No dead letters."));
    let (_, dry) = setup
        .get("/functions/welcome?since=2000-01-01T00:00:00Z")
        .await;
    assert_eq!(text(&dry, "#replay-count strong"), "2", "{dry}");
    let (status, _) = setup.get("/functions/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The flaky run's page: two attempts, two steps, the wait between the attempts.
    let (status, run) = setup.get(&format!("/runs/welcome/{flaky_id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&run, ".bar.attempt"), 2, "{run}");
    assert_eq!(count(&run, ".bar.step"), 2, "{run}");
    assert_eq!(count(&run, ".bar.sleep"), 1, "{run}");
    assert!(run.contains("the mail server is busy"));
    assert_eq!(
        text(&run, "#run-status").split_whitespace().next(),
        Some("ok")
    );
    // A finished run offers no cancel button.
    assert!(!run.contains("Cancel this run"));

    // A replay runs the function again over the log.
    let (status, location, _) = setup
        .post(
            "/functions/welcome/replay",
            &[("since", "2000-01-01T00:00:00Z"), ("rate", "100")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.contains("replaying%202%20events"), "{location}");
}

#[tokio::test]
async fn a_plain_run_without_a_record_is_listed_ok_from_the_consumers_ack_floor() {
    let setup = setup().await;
    // A function without steps: its plain first deliveries are acked without a run record
    // (protocol section 7).
    let plain = herald_worker::Function::new("plain")
        .on::<common::Signup>()
        .handler(|_signup: common::Signup, _ctx: herald_worker::Ctx| async {
            Ok::<(), herald_worker::HandlerError>(())
        });
    let worker = herald_worker::Worker::builder(setup.client.clone())
        .function(plain)
        .start()
        .await
        .unwrap();
    let (id, _) = setup.publish("fay@example.com", None).await;
    let runs = setup
        .wait_for_page("/runs?status=ok&function=plain", &id)
        .await;
    assert_eq!(count(&runs, "tr[data-status=ok]"), 1, "{runs}");
    let store = herald_worker::RunStore::open(&setup.client).await.unwrap();
    let report = store.inspect("plain", &id).await.unwrap();
    assert!(report.outcome.is_none(), "the run has a record: {report:?}");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_sleeping_run_is_cancelled_from_its_page() {
    let setup = setup().await;
    let (id, _) = setup.publish("cat@example.com", Some("nap")).await;
    let page = setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"sleeping\"")
        .await;
    assert!(page.contains("Cancel this run"), "{page}");
    let (status, location, _) = setup.post(&format!("/runs/welcome/{id}/cancel"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        location.starts_with(&format!("/runs/welcome/{id}?notice=cancelled")),
        "{location}"
    );
    setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"cancelled\"")
        .await;
}

#[tokio::test]
async fn events_are_listed_filtered_and_shown_with_their_runs() {
    let setup = setup().await;
    let (id, sequence) = setup.publish("dan@example.com", None).await;
    let (status, events) = setup.get("/events?type=user.*").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        count(&events, &format!("tr[data-id=\"{id}\"]")),
        1,
        "{events}"
    );
    let (_, other) = setup.get("/events?type=order.*").await;
    assert_eq!(count(&other, "#event-rows tr"), 0);
    let (_, by_id) = setup.get(&format!("/events?id={id}")).await;
    assert_eq!(count(&by_id, "#event-rows tr"), 1);
    let (status, _) = setup.get("/events?type=Not%20A%20Type").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let page = setup
        .wait_for_page(&format!("/events/{sequence}"), "data-status=\"ok\"")
        .await;
    assert_eq!(text(&page, "#event-id"), id);
    assert!(page.contains("dan@example.com"));
    assert_eq!(count(&page, "#event-runs tr[data-function=welcome]"), 1);
    let (status, _) = setup.get("/events/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_live_tail_streams_new_events_as_rows() {
    let setup = setup().await;
    let request = Request::get("/live/events?type=user.*")
        .body(Body::empty())
        .unwrap();
    let response = setup.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    // The feed starts with the console; publish until the row arrives (the first publish
    // may land before the feed's consumer exists).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    let mut published = Vec::new();
    while Instant::now() < deadline {
        let (id, _) = setup.publish("eve@example.com", None).await;
        published.push(id);
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), body.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        if published.iter().any(|id| seen.contains(id.as_str())) {
            break;
        }
    }
    assert!(seen.contains("event: event"), "{seen}");
    assert!(
        published.iter().any(|id| seen.contains(id.as_str())),
        "{seen}"
    );
    assert!(seen.contains("<tr id=\"event-"), "{seen}");
    drop(body);
}

#[tokio::test]
async fn assets_are_served_from_the_binary() {
    let setup = setup().await;
    let (status, htmx) = setup.get("/assets/htmx-2.0.11.min.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(htmx.contains("htmx"));
    let (status, license) = setup.get("/assets/htmx-ext-sse.LICENSE").await;
    assert_eq!(status, StatusCode::OK);
    assert!(license.contains("BSD"));
    let (status, _) = setup.get("/assets/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, page) = setup.get("/").await;
    assert!(page.contains("/assets/htmx-ext-sse-2.2.4.min.js"));
}

/// The `width:…%` of each element matching `selector`.
fn widths(html: &str, selector: &str) -> Vec<f64> {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(selector).unwrap();
    document
        .select(&selector)
        .filter_map(|e| e.value().attr("style"))
        .filter_map(|style| {
            let width = style.split("width:").nth(1)?;
            width.trim_end_matches(['%', ';']).parse().ok()
        })
        .collect()
}

#[tokio::test]
async fn a_long_sleep_is_drawn_as_a_labelled_break() {
    let setup = setup().await;
    let (id, _) = setup.publish("sloth@example.com", Some("nap")).await;
    // The sleep's bar comes from the run's activity records, the step's from the runs
    // bucket, stored when the run suspends: the page is live and may show one first.
    setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "bar sleep")
        .await;
    let page = setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "bar step")
        .await;
    // The ten-minute sleep is one broken bar with its real duration written on it ...
    assert_eq!(count(&page, ".bar.sleep.broken"), 1, "{page}");
    assert_eq!(text(&page, ".bar.sleep.broken .real"), "10.0 min", "{page}");
    assert_eq!(count(&page, ".axis .gap"), 1, "{page}");
    assert!(text(&page, ".axis .gap").contains("10.0 min"), "{page}");
    // ... so the attempt and its step, milliseconds long, keep most of the track.
    let attempt = widths(&page, ".bar.attempt");
    assert_eq!(attempt.len(), 1, "{page}");
    assert!(attempt[0] > 50.0, "the attempt is drawn {attempt:?}% wide");
    let sleep = widths(&page, ".bar.sleep");
    assert!(sleep[0] < 15.0, "the sleep is drawn {sleep:?}% wide");
    assert_eq!(count(&page, ".bar.step"), 1, "{page}");
}

#[tokio::test]
async fn the_functions_page_shows_limits_in_use_and_parked_runs_per_key() {
    use herald_worker::{Ctx, Function, HandlerError, Worker};
    let setup = setup().await;
    // `limited`: one run at a time per plan; each run holds its slot until released.
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = std::sync::Arc::clone(&release);
    let limited = Function::new("limited")
        .on::<common::Signup>()
        .concurrency_limit(1)
        .key(|s: &common::Signup| s.plan.clone().unwrap_or_default())
        .handler(move |_s: common::Signup, _ctx: Ctx| {
            let held = std::sync::Arc::clone(&held);
            async move {
                let _permit = held.acquire().await;
                Ok::<_, HandlerError>(())
            }
        });
    let worker = Worker::builder(setup.client.clone())
        .function(limited)
        .start()
        .await
        .unwrap();
    for n in 0..3 {
        setup
            .publish(&format!("gold{n}@example.com"), Some("gold"))
            .await;
    }
    // One run holds the key's slot, two park.
    let page = setup.wait_for_page("/", "<code>gold</code>=2").await;
    let row = "tr[data-function=limited]";
    assert!(
        text(&page, &format!("{row} td.parked")).starts_with("2 "),
        "{page}"
    );
    assert_eq!(
        text(&page, &format!("{row} td.limits")).trim(),
        "concurrency ≥1"
    );
    assert_eq!(text(&page, "tr[data-function=welcome] td.parked"), "0");
    assert!(page.contains("not stored in NATS"));
    // The function's own page shows the same.
    let (_, function) = setup.get("/functions/limited").await;
    assert!(
        text(&function, "#flow-parked").contains("gold"),
        "{function}"
    );
    assert_eq!(text(&function, "#flow-limits").trim(), "concurrency ≥1");
    release.add_permits(10);
    worker.shutdown().await;
}
