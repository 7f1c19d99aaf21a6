//! Priority against a real nats-server: behind a concurrency limit of 1, a run with a
//! higher factor starts before the low-priority runs that parked less than its factor
//! earlier, after the ones that parked longer ago; without a limit, runs start in stream
//! order whatever their factor.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, FunctionBuilder, HandlerError, Worker};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.report")]
struct Report {
    name: String,
    factor: i64,
}

const WAIT: Duration = Duration::from_secs(90);

async fn send(client: &Client, name: &str, factor: i64) {
    let options = PublishOptions {
        id: Some(name.to_owned()),
        ..Default::default()
    };
    let event = Report {
        name: name.to_owned(),
        factor,
    };
    client
        .publish_with(&event, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The start of each run (and in Unix ms), in the order they started.
type Starts = Arc<Mutex<Vec<(String, Instant, u64)>>>;

fn function(
    id: &str,
    starts: Starts,
    busy: Duration,
    configure: impl FnOnce(FunctionBuilder<Report>) -> FunctionBuilder<Report>,
) -> Function {
    configure(Function::new(id).on::<Report>())
        .priority(|e: &Report| e.factor)
        .handler(move |e: Report, _ctx: Ctx| {
            let starts = starts.clone();
            async move {
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                starts.lock().push((e.name, Instant::now(), unix_ms));
                tokio::time::sleep(busy).await; // the report's work
                Ok::<(), HandlerError>(())
            }
        })
}

/// The parked entries, as a watch of the runs bucket sees them: event id → `since_ms`,
/// now (`current`) and ever (`seen`).
#[derive(Clone, Default)]
struct Parked {
    current: Arc<Mutex<HashMap<String, u64>>>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

impl Parked {
    async fn watch(client: &Client) -> Parked {
        let kv = client
            .jetstream()
            .get_key_value(client.namespace().runs_bucket())
            .await
            .unwrap();
        let mut watch = kv.watch_with_history("_parked.>").await.unwrap();
        let parked = Parked::default();
        let (current, seen) = (parked.current.clone(), parked.seen.clone());
        tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                let name = entry.key.rsplit('.').next().unwrap().to_owned();
                match serde_json::from_slice::<serde_json::Value>(&entry.value) {
                    Ok(value) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                        let since = value["since_ms"].as_u64().unwrap();
                        current.lock().insert(name.clone(), since);
                        seen.lock().insert(name, since);
                    }
                    _ => {
                        current.lock().remove(&name);
                    }
                }
            }
        });
        parked
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the condition
    }
}

#[tokio::test]
async fn high_priority_runs_start_before_the_low_ones_parked_less_than_their_factor_earlier() {
    let (_nats, client) = server_and_client().await;
    let starts: Starts = Arc::default();
    let busy = Duration::from_millis(400);
    let watch = Parked::watch(&client).await;
    let worker = Worker::builder(client.clone())
        .function(function("report", starts.clone(), busy, |f| {
            f.concurrency_limit(1)
        }))
        .start()
        .await
        .unwrap();
    // Low runs arrive at 10/s for 4 s, four times as fast as they run: a backlog builds
    // whose oldest runs have waited well over 2 s when the high ones come.
    const LOWS: usize = 40;
    for n in 0..LOWS {
        send(&client, &format!("low-{n:02}"), 0).await;
        tokio::time::sleep(Duration::from_millis(100)).await; // the arrival rate
    }
    // `high` overtakes every parked low run; `medium` only those parked less than 2 s
    // before it.
    let highs = [("high", 600), ("medium", 2)];
    for (name, factor) in highs {
        send(&client, name, factor).await;
    }
    wait_until("the high runs are parked or started", || async {
        let seen = watch.seen.lock().clone();
        let started: Vec<String> = starts.lock().iter().map(|(n, ..)| n.clone()).collect();
        highs
            .iter()
            .all(|(h, _)| seen.contains_key(*h) || started.iter().any(|s| s == h))
    })
    .await;
    let parked_at = Instant::now();
    wait_until("every run started", || async {
        starts.lock().len() == LOWS + highs.len()
    })
    .await;
    worker.shutdown().await;
    let starts = starts.lock().clone();
    // When each run parked; a run that found its slot free parked at its start.
    let mut since = watch.seen.lock().clone();
    for (name, _, unix_ms) in &starts {
        since.entry(name.clone()).or_insert(*unix_ms);
    }
    let position = |name: &str| starts.iter().position(|(n, ..)| n == name).unwrap();
    let factor = |name: &str| highs.iter().find(|(h, _)| *h == name).map_or(0, |h| h.1);
    let score = |name: &str| since[name] as i64 - factor(name) * 1000;
    // A low run that started well after the high ones parked was still parked: woken by
    // the release of a slot after theirs.
    let contested: Vec<&str> = starts
        .iter()
        .filter(|(n, at, _)| n.starts_with("low") && *at > parked_at + busy / 2)
        .map(|(n, ..)| n.as_str())
        .collect();
    assert!(
        contested.len() >= 5,
        "too few low runs were still waiting to tell: {contested:?}"
    );
    let mut checked = 0;
    for (high, _) in highs {
        for low in &contested {
            let (high_score, low_score) = (score(high), score(low));
            // Scores within 200 ms of each other are a tie the test cannot time.
            if (high_score - low_score).abs() < 200 {
                continue;
            }
            let high_first = high_score < low_score;
            assert_eq!(
                position(high) < position(low),
                high_first,
                "{high} (score {high_score}) and {low} (score {low_score}): start order {:?}",
                starts.iter().map(|(n, ..)| n).collect::<Vec<_>>()
            );
            checked += 1;
        }
    }
    // `medium` parked after low runs that had waited longer than 2 s (they went first)
    // and after some that had waited less (it went first): both sides were compared.
    let medium = score("medium");
    let before = contested.iter().filter(|l| score(l) < medium - 200).count();
    let after = contested.iter().filter(|l| score(l) > medium + 200).count();
    assert!(
        before >= 2 && after >= 2,
        "{before} low runs parked more than 2 s before medium, {after} less"
    );
    assert!(checked >= 10, "only {checked} pairs compared");
}

#[tokio::test]
async fn without_a_limit_runs_start_in_stream_order_whatever_their_priority() {
    let (_nats, client) = server_and_client().await;
    let starts: Starts = Arc::default();
    let names: Vec<String> = (0..20).map(|n| format!("run-{n:02}")).collect();
    for (n, name) in names.iter().enumerate() {
        // Alternating low and high factors: no backlog Herald holds, so no effect.
        let factor = if n % 2 == 0 { -600 } else { 600 };
        send(&client, name, factor).await;
    }
    let worker = Worker::builder(client.clone())
        .function(function(
            "plain",
            starts.clone(),
            Duration::from_millis(10),
            // One delivery in flight at a time: runs reach the handler in stream order.
            |f| {
                f.max_ack_pending(1)
                    .start_from(herald_worker::StartFrom::All)
            },
        ))
        .start()
        .await
        .unwrap();
    wait_until("every run started", || async {
        starts.lock().len() == names.len()
    })
    .await;
    worker.shutdown().await;
    let order: Vec<String> = starts.lock().iter().map(|(n, ..)| n.clone()).collect();
    assert_eq!(order, names, "start order is stream order");
}
