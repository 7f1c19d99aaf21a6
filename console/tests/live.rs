//! The live feeds (server-sent events) resume after a dropped connection: each event's
//! `id:` is its place in the streams, and a reconnect with `Last-Event-ID` gets exactly
//! what it missed, then the live events, nothing twice. Against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::setup;
use futures::StreamExt;
use tower::ServiceExt;

/// The `(id, data)` of each complete server-sent event in `text`.
fn sse_events(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            Some((field("id:")?, field("data:").unwrap_or_default()))
        })
        .collect()
}

/// Reads `/live/events?type=user.*` resuming after `last_id`; once connected, publishes one
/// more event (which must come live), then reads until every id in `wanted` and that one
/// have come. Returns the events read and the live event published.
async fn resume_events(
    setup: &common::Setup,
    last_id: &str,
    wanted: &[String],
) -> (Vec<(String, String)>, (String, u64)) {
    let request = Request::get("/live/events?type=user.*").header("last-event-id", last_id);
    let response = setup
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let live = setup.publish("live@example.com", None).await;
    let mut body = response.into_body().into_data_stream();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !wanted
        .iter()
        .chain(std::iter::once(&live.0))
        .all(|id| seen.contains(id.as_str()))
    {
        assert!(Instant::now() < deadline, "never saw {wanted:?} in {seen}");
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), body.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    (sse_events(&seen), live)
}

#[tokio::test]
async fn the_live_tail_resumes_after_last_event_id_without_gap_or_repeat() {
    let setup = setup().await;
    // A first connection: its feed starts with the console, so publish until a row comes.
    let mut published: Vec<(String, u64)> = Vec::new();
    let first = {
        let response = setup
            .router
            .clone()
            .oneshot(
                Request::get("/live/events?type=user.*")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let mut body = response.into_body().into_data_stream();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = String::new();
        while sse_events(&seen).is_empty() {
            assert!(Instant::now() < deadline, "no live row came: {seen}");
            published.push(setup.publish("first@example.com", None).await);
            if let Ok(Some(Ok(chunk))) =
                tokio::time::timeout(Duration::from_millis(500), body.next()).await
            {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
        sse_events(&seen)
        // The connection drops here.
    };
    let (last_id, _) = first.last().unwrap().clone();
    // Published while nobody listens.
    for n in 0..3 {
        published.push(setup.publish(&format!("gap{n}@example.com"), None).await);
    }
    let last_seq: u64 = last_id.parse().unwrap();
    let mut expected: Vec<(String, u64)> = published
        .iter()
        .filter(|(_, seq)| *seq > last_seq)
        .cloned()
        .collect();
    let wanted: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    let (resumed, live) = resume_events(&setup, &last_id, &wanted).await;
    // What was missed, in order, then the live event: nothing lost, nothing twice.
    expected.push(live);
    let ids: Vec<u64> = resumed.iter().map(|(id, _)| id.parse().unwrap()).collect();
    let expected_ids: Vec<u64> = expected.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(ids, expected_ids, "the exact continuation after {last_id}");
    for ((_, data), (event_id, _)) in resumed.iter().zip(&expected) {
        assert!(data.contains(event_id.as_str()), "{data}");
    }
}

/// Opens `path` (with `Last-Event-ID: last_id` when given), runs `meanwhile`, and reads
/// until `enough` says the events read so far suffice.
async fn read_feed<F: Future<Output = ()>>(
    setup: &common::Setup,
    path: &str,
    last_id: Option<&str>,
    meanwhile: F,
    enough: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let mut request = Request::get(path);
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = setup
        .router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    meanwhile.await;
    let mut body = response.into_body().into_data_stream();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !enough(&sse_events(&seen)) {
        assert!(Instant::now() < deadline, "{path}: not enough came: {seen}");
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), body.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    sse_events(&seen)
}

#[tokio::test]
async fn change_notices_resume_after_last_event_id_without_gap_or_repeat() {
    let setup = setup().await;
    let path = "/live/changes?function=welcome";
    // A flaky run publishes two activity records: its first attempt's retry, then its ok.
    let first = read_feed(
        &setup,
        path,
        None,
        async {
            setup.publish("one@example.com", Some("flaky")).await;
        },
        |events| events.len() >= 2,
    )
    .await;
    let (last_id, _) = first[1].clone();
    let (activity, letters) = last_id.split_once('.').unwrap();
    let (activity, letters): (u64, u64) = (activity.parse().unwrap(), letters.parse().unwrap());
    // Another flaky run while nobody listens: its two records come on reconnect, once each.
    setup.publish("two@example.com", Some("flaky")).await;
    let resumed = read_feed(&setup, path, Some(&last_id), async {}, |events| {
        events.len() >= 2
    })
    .await;
    let ids: Vec<&str> = resumed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            format!("{}.{letters}", activity + 1),
            format!("{}.{letters}", activity + 2)
        ],
        "the exact continuation after {last_id}"
    );
    assert!(resumed.iter().all(|(_, data)| data == "welcome"));
}

#[tokio::test]
async fn a_page_more_than_500_events_behind_is_told_to_resync() {
    let setup = setup().await;
    let (_, first) = setup.publish("far@example.com", None).await;
    let mut pending = Vec::new();
    for n in 0..501 {
        let signup = common::Signup {
            email: format!("far{n}@example.com"),
            plan: None,
        };
        pending.push(setup.client.publish(&signup).await.unwrap());
    }
    for ack in pending {
        ack.await.unwrap();
    }
    let request = Request::get("/live/events?type=user.*")
        .header("last-event-id", first.to_string())
        .body(Body::empty())
        .unwrap();
    let response = setup.router.clone().oneshot(request).await.unwrap();
    let mut body = response.into_body().into_data_stream();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        assert!(Instant::now() < deadline, "nothing came: {seen}");
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), body.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let first_event = seen.split("\n\n").next().unwrap();
    assert!(first_event.contains("event: resync"), "{seen}");
    assert!(
        !seen.contains("event: event"),
        "no rows before the reload: {seen}"
    );
}

/// An event of another type than the tail's.
#[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
#[event(type = "order.placed")]
struct OrderPlaced {
    n: u32,
}

#[tokio::test]
async fn events_of_other_types_do_not_count_against_the_catch_up() {
    let setup = setup().await;
    let (_, first) = setup.publish("mine@example.com", None).await;
    let mut pending = Vec::new();
    for n in 0..501 {
        pending.push(setup.client.publish(&OrderPlaced { n }).await.unwrap());
    }
    for ack in pending {
        ack.await.unwrap();
    }
    let (wanted, sequence) = setup.publish("mine-too@example.com", None).await;
    let request = Request::get("/live/events?type=user.*")
        .header("last-event-id", first.to_string())
        .body(Body::empty())
        .unwrap();
    let response = setup.router.clone().oneshot(request).await.unwrap();
    let mut body = response.into_body().into_data_stream();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while sse_events(&seen).is_empty() && !seen.contains("resync") {
        assert!(Instant::now() < deadline, "nothing came: {seen}");
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), body.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(!seen.contains("resync"), "{seen}");
    let events = sse_events(&seen);
    assert_eq!(events[0].0, sequence.to_string());
    assert!(events[0].1.contains(wanted.as_str()), "{seen}");
}
