//! Batching against a real nats-server: events of a key run together in batches of at most
//! the size, a partial batch starts by its first event plus the timeout, a retried batch
//! gets the same events, and an event that breaks its schema is dead-lettered alone.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event};
use herald_worker::{Ctx, Function, HandlerError, RunStatus, Worker};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.view")]
struct View {
    site: String,
    n: u32,
}

/// One handler call: the batch (run) id, its attempt, the views and when it started.
#[derive(Debug, Clone)]
struct Call {
    batch: String,
    attempt: u32,
    views: Vec<View>,
    at: Instant,
}

type Calls = Arc<Mutex<Vec<Call>>>;

fn batched(id: &str, size: u32, timeout: Duration, calls: Calls, fail_first: bool) -> Function {
    Function::new(id)
        .on::<View>()
        .attempts(3)
        .backoff(herald_worker::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
            jitter: 0.0,
        })
        .batch(size, timeout)
        .key(|v: &View| v.site.clone())
        .handler(move |views: Vec<View>, ctx: Ctx| {
            let calls = calls.clone();
            async move {
                calls.lock().push(Call {
                    batch: ctx.event_id().to_owned(),
                    attempt: ctx.attempt(),
                    views,
                    at: Instant::now(),
                });
                if fail_first && ctx.attempt() == 1 {
                    return Err(HandlerError::from("the warehouse is busy"));
                }
                Ok::<(), HandlerError>(())
            }
        })
}

async fn publish(client: &Client, site: &str, n: u32) {
    client
        .publish(&View {
            site: site.to_owned(),
            n,
        })
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn wait_until(what: &str, deadline: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the condition
    }
}

/// The views handled, by (site, n), with the batches each was in (first attempts only).
fn memberships(calls: &[Call]) -> BTreeMap<(String, u32), BTreeSet<String>> {
    let mut seen: BTreeMap<(String, u32), BTreeSet<String>> = BTreeMap::new();
    for call in calls {
        for view in &call.views {
            seen.entry((view.site.clone(), view.n))
                .or_default()
                .insert(call.batch.clone());
        }
    }
    seen
}

#[tokio::test]
async fn events_of_a_key_run_together_in_batches_of_at_most_the_size() {
    let (_nats, client) = server_and_client().await;
    let calls: Calls = Arc::default();
    let worker = Worker::builder(client.clone())
        .function(batched(
            "store-views",
            5,
            Duration::from_secs(2),
            calls.clone(),
            false,
        ))
        .start()
        .await
        .unwrap();
    // 23 views of one site and 9 of another, interleaved.
    let mut expected = BTreeSet::new();
    for n in 0..23 {
        publish(&client, "acme", n).await;
        expected.insert(("acme".to_owned(), n));
        if n < 9 {
            publish(&client, "globex", n).await;
            expected.insert(("globex".to_owned(), n));
        }
    }
    wait_until("every view was handled", Duration::from_secs(30), || {
        memberships(&calls.lock()).len() == expected.len()
    })
    .await;
    worker.shutdown().await;
    let calls = calls.lock().clone();
    let seen = memberships(&calls);
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for (view, batches) in &seen {
        assert_eq!(batches.len(), 1, "{view:?} was in batches {batches:?}");
    }
    let mut batches = BTreeSet::new();
    for call in &calls {
        assert!(
            !call.views.is_empty() && call.views.len() <= 5,
            "a batch of {} views",
            call.views.len()
        );
        let sites: BTreeSet<&str> = call.views.iter().map(|v| v.site.as_str()).collect();
        assert_eq!(sites.len(), 1, "batch {} mixes sites {sites:?}", call.batch);
        assert!(
            batches.insert(call.batch.clone()),
            "batch {} ran twice",
            call.batch
        );
    }
    // Full batches (23 = 4 × 5 + 3, 9 = 5 + 4) need no timeout: at most two partial ones.
    let full = calls.iter().filter(|c| c.views.len() == 5).count();
    assert!(full >= 5, "only {full} full batches among {}", calls.len());
}

#[tokio::test]
async fn a_partial_batch_starts_by_its_first_event_plus_the_timeout() {
    let (_nats, client) = server_and_client().await;
    let calls: Calls = Arc::default();
    let worker = Worker::builder(client.clone())
        .function(batched(
            "store-views",
            100,
            Duration::from_secs(2),
            calls.clone(),
            false,
        ))
        .start()
        .await
        .unwrap();
    let first = Instant::now();
    for n in 0..3 {
        publish(&client, "acme", n).await;
    }
    wait_until("the partial batch ran", Duration::from_secs(30), || {
        !calls.lock().is_empty()
    })
    .await;
    let call = calls.lock()[0].clone();
    let after = call.at - first;
    assert_eq!(call.views.len(), 3, "{call:?}");
    // The timer fires in whole seconds: between 1 s and 3 s after the first event, plus
    // the time to deliver it.
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_millis(4500),
        "the batch started {after:?} after its first event"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_retried_batch_gets_the_same_events() {
    let (_nats, client) = server_and_client().await;
    let calls: Calls = Arc::default();
    let worker = Worker::builder(client.clone())
        .function(batched(
            "store-views",
            4,
            Duration::from_secs(1),
            calls.clone(),
            true,
        ))
        .start()
        .await
        .unwrap();
    for n in 0..4 {
        publish(&client, "acme", n).await;
    }
    wait_until("the batch ran twice", Duration::from_secs(30), || {
        calls.lock().len() >= 2
    })
    .await;
    let calls = calls.lock().clone();
    assert_eq!(calls[0].batch, calls[1].batch);
    assert_eq!((calls[0].attempt, calls[1].attempt), (1, 2));
    let ns = |c: &Call| c.views.iter().map(|v| v.n).collect::<Vec<_>>();
    assert_eq!(ns(&calls[0]), vec![0, 1, 2, 3]);
    assert_eq!(ns(&calls[0]), ns(&calls[1]));
    // The batch's run is recorded ok.
    let batch_run = format!("store-views.{}", calls[0].batch);
    wait_until_recorded(&client, &batch_run, RunStatus::Ok).await;
    worker.shutdown().await;
}

async fn wait_until_recorded(client: &Client, run: &str, status: RunStatus) {
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = kv.get(run).await.unwrap();
        let stored = record
            .and_then(|v| serde_json::from_slice::<herald_worker::RunRecord>(&v).ok())
            .map(|r| r.status);
        if stored == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{run} never recorded {status}: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the record
    }
}

#[tokio::test]
async fn an_event_that_breaks_its_schema_is_dead_lettered_alone() {
    let (_nats, client) = server_and_client().await;
    let calls: Calls = Arc::default();
    let mut dead = DeadLetters::watch(&client, "store-views").await;
    let worker = Worker::builder(client.clone())
        .function(batched(
            "store-views",
            3,
            Duration::from_secs(1),
            calls.clone(),
            false,
        ))
        .start()
        .await
        .unwrap();
    publish(&client, "acme", 0).await;
    publish_raw(&client, "test.view", &serde_json::json!({"site": "acme"})).await;
    publish(&client, "acme", 1).await;
    publish(&client, "acme", 2).await;
    let (headers, _) = dead.next(Duration::from_secs(20)).await;
    assert_eq!(
        headers.get("herald-dlq-reason").map(String::as_str),
        Some("schema_violation")
    );
    wait_until("the three valid views ran", Duration::from_secs(30), || {
        memberships(&calls.lock()).len() == 3
    })
    .await;
    let calls = calls.lock().clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    worker.shutdown().await;
}

#[test]
fn batch_settings_out_of_range_or_combined_with_per_event_limits_are_refused() {
    let handler = |_: Vec<View>, _: Ctx| async { Ok::<(), HandlerError>(()) };
    let error = Function::new("store-views")
        .on::<View>()
        .batch(0, Duration::from_secs(2))
        .handler(handler)
        .check()
        .unwrap_err();
    assert!(error.to_string().contains("1 to 1000"), "{error}");
    let error = Function::new("store-views")
        .on::<View>()
        .throttle(10, Duration::from_secs(1))
        .batch(10, Duration::from_secs(2))
        .handler(handler)
        .check()
        .unwrap_err();
    assert!(error.to_string().contains("throttle"), "{error}");
}
