//! Plain first deliveries (protocol section 7) against a real nats-server: acked without a
//! run record when their ack is confirmed, recorded when it may be lost, and recorded
//! always when the events stream's duplicate window does not cover its retention.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use herald::{Client, PublishOptions, StreamSettings};
use herald_worker::{Ctx, Function, HandlerError, RunStatus, RunStore, Worker};
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

/// Polls until `condition` holds (deadline [`WAIT`]).
async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        // Polling interval of a condition with a deadline.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status of a run's record once it has one (deadline [`WAIT`]).
async fn recorded(store: &RunStore, function: &str, run_id: &str) -> RunStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(outcome) = store.inspect(function, run_id).await.unwrap().outcome {
            return outcome.status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{function}.{run_id} has no record"
        );
        // Polling interval of a condition with a deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn counting(name: &str, runs: &Arc<AtomicU32>) -> Function {
    let runs = Arc::clone(runs);
    Function::new(name)
        .on::<Job>()
        .handler(move |_job: Job, _ctx: Ctx| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
}

async fn publish_with_id(client: &Client, n: u32, id: &str) -> herald::PublishAck {
    let job = Job {
        n,
        label: String::new(),
    };
    let options = PublishOptions {
        id: Some(id.to_owned()),
        ..Default::default()
    };
    client
        .publish_with(&job, options)
        .await
        .unwrap()
        .await
        .unwrap()
}

#[tokio::test]
async fn plain_runs_are_acked_without_a_record_and_a_republished_id_does_not_run_again() {
    let (_nats, client) = server_and_client().await;
    let runs = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(counting("plain", &runs))
        .start()
        .await
        .unwrap();
    for n in 0..50 {
        publish_with_id(&client, n, &format!("plain-{n}")).await;
    }
    wait_for("50 runs", || runs.load(Ordering::SeqCst) == 50).await;
    wait_consumer_drained(&client, "plain").await;
    let store = RunStore::open(&client).await.unwrap();
    for n in 0..50 {
        let report = store.inspect("plain", &format!("plain-{n}")).await.unwrap();
        assert!(
            report.outcome.is_none(),
            "plain-{n} was recorded: {:?}",
            report.outcome
        );
    }
    // The stream drops every copy within its window, which provisioning makes its max age.
    for n in 0..50 {
        let again = publish_with_id(&client, n, &format!("plain-{n}")).await;
        assert!(again.duplicate, "plain-{n} was stored again");
    }
    wait_consumer_drained(&client, "plain").await;
    assert_eq!(runs.load(Ordering::SeqCst), 50);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_plain_run_that_reached_steps_is_recorded() {
    let (_nats, client) = server_and_client().await;
    let function = Function::new("stepped")
        .on::<Job>()
        .handler(|job: Job, ctx: Ctx| async move {
            ctx.step("double", || async move { Ok::<_, HandlerError>(job.n * 2) })
                .await?;
            Ok(())
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_with_id(&client, 1, "stepped-1").await;
    let store = RunStore::open(&client).await.unwrap();
    assert_eq!(
        recorded(&store, "stepped", "stepped-1").await,
        RunStatus::Ok
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_run_whose_ack_cannot_be_confirmed_is_recorded() {
    let (_nats, client) = server_and_client().await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (started_tx, release_rx) = (Arc::clone(&started), Arc::clone(&release));
    let function = Function::new("unconfirmed")
        .on::<Job>()
        .handler(move |_job: Job, _ctx: Ctx| {
            let (started, release) = (Arc::clone(&started_tx), Arc::clone(&release_rx));
            async move {
                started.notify_one();
                release.notified().await;
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_with_id(&client, 1, "lost-ack-1").await;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .unwrap();
    // The consumer goes away while the handler runs: its ack reaches no consumer that
    // delivered it (the workers make a new one), so no confirmation comes.
    client
        .jetstream()
        .delete_consumer_from_stream("unconfirmed", client.namespace().events_stream())
        .await
        .unwrap();
    release.notify_one();
    let store = RunStore::open(&client).await.unwrap();
    assert_eq!(
        recorded(&store, "unconfirmed", "lost-ack-1").await,
        RunStatus::Ok
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn with_a_duplicate_window_shorter_than_the_retention_every_run_is_recorded() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let client = Client::builder()
        .source("urn:herald:service:worker-tests")
        .streams(StreamSettings {
            events_duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(counting("short-window", &runs))
        .start()
        .await
        .unwrap();
    for n in 0..5 {
        publish_with_id(&client, n, &format!("short-{n}")).await;
    }
    let store = RunStore::open(&client).await.unwrap();
    for n in 0..5 {
        let id = format!("short-{n}");
        assert_eq!(recorded(&store, "short-window", &id).await, RunStatus::Ok);
    }
    worker.shutdown().await;
}
