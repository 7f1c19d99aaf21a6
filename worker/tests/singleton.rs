//! Singleton functions against a real nats-server: one run per key at a time; the others
//! are skipped, or cancel the running one; the key frees when its run ends.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, RunStatus, RunStore, SingletonMode, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.reindex")]
struct Reindex {
    tenant: String,
    n: u32,
}

const WAIT: Duration = Duration::from_secs(30);

async fn send(client: &Client, tenant: &str, n: u32) {
    let options = PublishOptions {
        id: Some(format!("{tenant}-{n}")),
        ..Default::default()
    };
    let event = Reindex {
        tenant: tenant.to_owned(),
        n,
    };
    client
        .publish_with(&event, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn outcome(store: &RunStore, function: &str, run_id: &str) -> (RunStatus, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let report = store.inspect(function, run_id).await.unwrap();
        if let Some(outcome) = report.outcome
            && outcome.status.is_final()
        {
            return (outcome.status, outcome.detail.unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "{run_id} has no final record");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling the bucket
    }
}

/// A handler that reports its start, then holds until `gate` lets it go, between two steps.
fn held(
    id: &str,
    mode: SingletonMode,
    started: mpsc::UnboundedSender<(String, u32)>,
    finished: mpsc::UnboundedSender<(String, u32)>,
    gate: Arc<Semaphore>,
) -> Function {
    Function::new(id)
        .on::<Reindex>()
        .singleton(mode)
        .key(|e: &Reindex| e.tenant.clone())
        .handler(move |e: Reindex, ctx: Ctx| {
            let (started, finished, gate) = (started.clone(), finished.clone(), gate.clone());
            async move {
                ctx.step("start", || async {
                    let _ = started.send((e.tenant.clone(), e.n));
                    Ok::<(), HandlerError>(())
                })
                .await?;
                gate.acquire().await.unwrap().forget();
                ctx.step("finish", || async {
                    let _ = finished.send((e.tenant.clone(), e.n));
                    Ok::<(), HandlerError>(())
                })
                .await?;
                Ok(())
            }
        })
}

#[tokio::test]
async fn a_busy_key_skips_new_runs_and_frees_when_its_run_ends() {
    let (_nats, client) = server_and_client().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let function = held(
        "one-per-tenant",
        SingletonMode::Skip,
        started_tx,
        finished_tx,
        gate.clone(),
    );
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    send(&client, "acme", 0).await;
    let first = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, ("acme".to_owned(), 0));
    for n in 1..4 {
        send(&client, "acme", n).await;
    }
    send(&client, "globex", 0).await;
    let store = RunStore::open(&client).await.unwrap();
    for n in 1..4 {
        let (status, detail) = outcome(&store, "one-per-tenant", &format!("acme-{n}")).await;
        assert_eq!(status, RunStatus::Skipped, "acme-{n}");
        assert!(detail.contains("singleton"), "{detail}");
    }
    let other = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        other,
        ("globex".to_owned(), 0),
        "another key runs meanwhile"
    );
    // The first run ends: its key is free again.
    gate.add_permits(2);
    assert_eq!(
        outcome(&store, "one-per-tenant", "acme-0").await.0,
        RunStatus::Ok
    );
    send(&client, "acme", 4).await;
    let next = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, ("acme".to_owned(), 4));
    gate.add_permits(1);
    assert_eq!(
        outcome(&store, "one-per-tenant", "acme-4").await.0,
        RunStatus::Ok
    );
    let mut done = Vec::new();
    while let Ok(Some(run)) =
        tokio::time::timeout(Duration::from_millis(200), finished.recv()).await
    {
        done.push(run.1);
    }
    assert!(!done.contains(&1) && !done.contains(&2) && !done.contains(&3));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_new_run_cancels_the_running_one_in_cancel_mode() {
    let (_nats, client) = server_and_client().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));
    let function = held(
        "latest-wins",
        SingletonMode::Cancel,
        started_tx,
        finished_tx,
        gate.clone(),
    );
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    send(&client, "acme", 0).await;
    let first = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.1, 0);
    send(&client, "acme", 1).await;
    let second = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.1, 1, "the new run starts at once");
    // Both held runs go on: the old one is refused its next step.
    gate.add_permits(2);
    let store = RunStore::open(&client).await.unwrap();
    let (status, detail) = outcome(&store, "latest-wins", "acme-0").await;
    assert_eq!(status, RunStatus::Cancelled);
    assert!(detail.contains("singleton"), "{detail}");
    assert_eq!(
        outcome(&store, "latest-wins", "acme-1").await.0,
        RunStatus::Ok
    );
    let done = tokio::time::timeout(WAIT, finished.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.1, 1, "only the new run finished");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), finished.recv())
            .await
            .is_err(),
        "the cancelled run ran no further step"
    );
    worker.shutdown().await;
}
