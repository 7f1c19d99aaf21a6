//! Idempotent runs in bulk against a real nats-server: the run records of a pull's messages
//! are read in one request, and that read must still skip exactly the finished runs.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use herald_worker::{Ctx, Function, StartFrom, Worker};

/// Publishes event `id` by hand with its own `Nats-Msg-Id`, so JetStream's deduplication
/// does not drop a copy of an event published before.
async fn publish_copy(client: &herald::Client, id: &str, n: u32, msg_id: &str) {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-type", "test.job"),
        ("ce-source", "urn:x"),
        ("Nats-Msg-Id", msg_id),
    ] {
        headers.insert(name, value);
    }
    client
        .jetstream()
        .publish_with_headers(
            "herald.events.test.job",
            headers,
            format!(r#"{{"n":{n},"label":""}}"#).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn copies_of_finished_runs_among_new_events_run_only_the_new_ones() {
    let (_nats, client) = server_and_client().await;
    let runs: Arc<parking_lot::Mutex<HashMap<u32, u32>>> = Arc::default();
    let seen = Arc::clone(&runs);
    let function = Function::new("bulk-once")
        .on::<Job>()
        .start_from(StartFrom::All)
        .handler(move |job: Job, _ctx: Ctx| {
            *seen.lock().entry(job.n).or_default() += 1;
            async { Ok(()) }
        });

    // 300 events, handled once each.
    for n in 0..300 {
        publish_copy(&client, &format!("job-{n}"), n, &format!("first-{n}")).await;
    }
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    wait_for(|| runs.lock().len() == 300).await;
    wait_consumer_drained(&client, "bulk-once").await;

    // Then, in one burst while the worker runs: copies of the 300 finished runs
    // interleaved with 100 new events, so that pulls mix found and missing records.
    for n in 0..400 {
        let id = format!("job-{n}");
        publish_copy(&client, &id, n, &format!("second-{n}")).await;
    }
    wait_for(|| runs.lock().len() == 400).await;
    wait_consumer_drained(&client, "bulk-once").await;
    let runs = runs.lock().clone();
    let repeated: Vec<_> = runs.iter().filter(|(_, count)| **count != 1).collect();
    assert!(
        repeated.is_empty(),
        "every run ran exactly once; these did not: {repeated:?}"
    );
    worker.shutdown().await;
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 30 s"
        );
        // Polling interval of a condition with a deadline.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
