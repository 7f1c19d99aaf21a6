//! Throttle and rate limit against a real nats-server: a throttle delays starts to its pace
//! and burst, in arrival order, per key, dropping none, and dead-letters beyond its
//! max_delay; a rate limit admits its limit and burst per key, records the rest `skipped`,
//! and keeps its decision for a redelivered event.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, RunStatus, RunStore, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.call")]
struct Call {
    owner: String,
    n: u32,
}

const WAIT: Duration = Duration::from_secs(30);

async fn send(client: &Client, owner: &str, n: u32) {
    let options = PublishOptions {
        id: Some(format!("{owner}-{n}")),
        ..Default::default()
    };
    let call = Call {
        owner: owner.to_owned(),
        n,
    };
    client
        .publish_with(&call, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Runs started, as (owner, n, when), in the order they started.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(String, u32, Instant)>,
    count: usize,
) -> Vec<(String, u32, Instant)> {
    let mut starts = Vec::new();
    while starts.len() < count {
        let start = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {count} runs started", starts.len()))
            .unwrap();
        starts.push(start);
    }
    starts
}

fn recorder(
    tx: mpsc::UnboundedSender<(String, u32, Instant)>,
) -> impl Fn(Call, Ctx) -> std::future::Ready<Result<(), HandlerError>> + Clone {
    move |call: Call, _ctx: Ctx| {
        let _ = tx.send((call.owner, call.n, Instant::now()));
        std::future::ready(Ok(()))
    }
}

#[tokio::test]
async fn a_throttle_paces_starts_per_key_in_order_and_drops_none() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("paced")
        .on::<Call>()
        .throttle(10, Duration::from_secs(1))
        .burst(5)
        .key(|c: &Call| c.owner.clone())
        .handler(recorder(tx));
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    // 30 calls for one owner (beyond the burst: about 2.4 s of pace, the last ones parked
    // on the server) and 5 for another, whose pace is its own.
    for n in 0..30 {
        send(&client, "octo", n).await;
    }
    for n in 0..5 {
        send(&client, "other", n).await;
    }
    let starts = collect(&mut rx, 35).await;
    let mut by_owner: BTreeMap<&str, Vec<(u32, Instant)>> = BTreeMap::new();
    for (owner, n, at) in &starts {
        by_owner.entry(owner.as_str()).or_default().push((*n, *at));
    }
    let octo = &by_owner["octo"];
    assert_eq!(octo.len(), 30, "none dropped");
    let order: Vec<u32> = octo.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        order,
        (0..30).collect::<Vec<_>>(),
        "starts in arrival order"
    );
    // Within the bound in every window: burst + ceil(W / 100 ms). A start is never early,
    // but a late one (a busy machine) lands nearer the next: 150 ms of slack for that.
    let times: Vec<Instant> = octo.iter().map(|(_, at)| *at).collect();
    for window in [Duration::from_millis(500), Duration::from_secs(1)] {
        let bound = 5 + window.as_millis().div_ceil(100) as usize;
        for (i, from) in times.iter().enumerate() {
            let inside = times[i..]
                .iter()
                .take_while(|at| **at < *from + window - Duration::from_millis(150))
                .count();
            assert!(
                inside <= bound,
                "{inside} starts in {window:?} (bound {bound})"
            );
        }
    }
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::from_millis(2300),
        "30 starts at 10/s with a burst of 5 take about 2.4 s, took {span:?}"
    );
    // The other owner was not held behind the first.
    let other = &by_owner["other"];
    assert_eq!(other.len(), 5);
    assert!(
        other
            .iter()
            .all(|(_, at)| *at < times[0] + Duration::from_secs(1)),
        "another key starts at its own pace"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_throttle_dead_letters_beyond_its_max_delay() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("bounded")
        .on::<Call>()
        .throttle(1, Duration::from_secs(10))
        .max_delay(Duration::from_secs(15))
        .handler(recorder(tx));
    let mut letters = DeadLetters::watch(&client, "bounded").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    // Starts at 0 s, 10 s, 20 s: the third is beyond 15 s.
    for n in 0..3 {
        send(&client, "octo", n).await;
    }
    let (headers, _) = letters.next(WAIT).await;
    assert_eq!(headers["herald-dlq-reason"], "throttled_too_long");
    assert_eq!(headers["ce-id"], "octo-2");
    let first = collect(&mut rx, 1).await;
    assert_eq!(first[0].1, 0);
    worker.shutdown().await;
}

/// The status and detail of a run's record, once it has one.
async fn run_outcome(store: &RunStore, function: &str, run_id: &str) -> (RunStatus, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let report = store.inspect(function, run_id).await.unwrap();
        if let Some(outcome) = report.outcome {
            return (outcome.status, outcome.detail.unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "{run_id} has no record");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the bucket
    }
}

#[tokio::test]
async fn a_rate_limit_admits_its_limit_and_burst_per_key_and_skips_the_rest() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("limited")
        .on::<Call>()
        .rate_limit(2, Duration::from_secs(60))
        .burst(1)
        .key(|c: &Call| c.owner.clone())
        .handler(recorder(tx));
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    for n in 0..20 {
        send(&client, "octo", n).await;
        send(&client, "other", n).await;
    }
    let store = RunStore::open(&client).await.unwrap();
    let mut admitted: BTreeMap<String, u32> = BTreeMap::new();
    for owner in ["octo", "other"] {
        for n in 0..20 {
            let (status, detail) = run_outcome(&store, "limited", &format!("{owner}-{n}")).await;
            match status {
                RunStatus::Ok => *admitted.entry(owner.to_owned()).or_default() += 1,
                RunStatus::Skipped => assert!(detail.contains("rate_limited"), "{detail}"),
                other => panic!("{owner}-{n}: {other:?}"),
            }
        }
    }
    // One now, plus a burst of one; the next only 30 s later.
    assert_eq!(admitted["octo"], 2);
    assert_eq!(admitted["other"], 2);
    let starts = collect(&mut rx, 4).await;
    assert_eq!(starts.len(), 4);
    assert!(rx.try_recv().is_err(), "no skipped event ran");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_event_keeps_its_rate_limit_decision() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let failed_once = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let function = Function::new("kept")
        .on::<Call>()
        .rate_limit(1, Duration::from_secs(60))
        .backoff(herald_worker::Backoff::fixed(Duration::from_millis(500)))
        .handler(move |call: Call, _ctx: Ctx| {
            let (tx, failed_once) = (tx.clone(), failed_once.clone());
            async move {
                // The admitted event fails its first attempt: by its redelivery the key is
                // beyond its limit, yet the event keeps the decision it got.
                if !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return Err(HandlerError::retry("first attempt fails"));
                }
                let _ = tx.send((call.owner, call.n, Instant::now()));
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    send(&client, "octo", 0).await;
    send(&client, "octo", 1).await;
    let store = RunStore::open(&client).await.unwrap();
    assert_eq!(
        run_outcome(&store, "kept", "octo-1").await.0,
        RunStatus::Skipped
    );
    assert_eq!(run_outcome(&store, "kept", "octo-0").await.0, RunStatus::Ok);
    let ran = collect(&mut rx, 1).await;
    assert_eq!(ran[0].1, 0, "the admitted event ran on its redelivery");
    worker.shutdown().await;
}

#[test]
fn misused_flow_settings_are_refused() {
    let handler = |_: Call, _: Ctx| async { Ok::<(), HandlerError>(()) };
    let keyless = Function::new("f")
        .on::<Call>()
        .key(|c: &Call| c.owner.clone())
        .handler(handler);
    assert!(
        keyless
            .check()
            .unwrap_err()
            .to_string()
            .contains("needs throttle")
    );
    let zero = Function::new("f")
        .on::<Call>()
        .throttle(0, Duration::from_secs(1))
        .handler(handler);
    assert!(zero.check().unwrap_err().to_string().contains("at least 1"));
    let short = Function::new("f")
        .on::<Call>()
        .rate_limit(1, Duration::from_millis(10))
        .handler(handler);
    assert!(short.check().unwrap_err().to_string().contains("period"));
}
