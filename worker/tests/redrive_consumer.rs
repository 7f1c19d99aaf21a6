//! A function's redrive consumer (protocol section 3): the redrive subject moves off the
//! function's own consumer without losing a redrive, pauses with the function, and goes back
//! (drained, then deleted) when the function sets its own `max_ack_pending`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{PullConsumer, pull};
use common::*;
use futures::StreamExt;
use herald::Client;
use herald_worker::Worker;
use tokio::sync::mpsc;

const STREAM: &str = "HERALD_EVENTS";
const WAIT: Duration = Duration::from_secs(20);

/// The filter subjects of consumer `name`, sorted; `None` when it does not exist.
async fn filters(client: &Client, name: &str) -> Option<Vec<String>> {
    let consumer: PullConsumer = client
        .jetstream()
        .get_consumer_from_stream(name, STREAM)
        .await
        .ok()?;
    let config = &consumer.cached_info().config;
    let mut filters = config.filter_subjects.clone();
    if !config.filter_subject.is_empty() {
        filters.push(config.filter_subject.clone());
    }
    filters.sort();
    Some(filters)
}

/// Publishes a copy of the stored job at `seq` to the redrive subject of `function`, as a
/// new event `n` with its own `ce-id` (a redrive of a run that never finished).
async fn redrive(client: &Client, function: &str, seq: u64, n: u32) -> u64 {
    let stream = client.jetstream().get_stream(STREAM).await.unwrap();
    let stored = stream.get_raw_message(seq).await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    for (name, values) in stored.headers.iter() {
        let name = name.to_string();
        if name.starts_with("Nats-") || name == "ce-id" {
            continue;
        }
        for value in values {
            headers.append(name.as_str(), value.as_str());
        }
    }
    let id = format!("redriven-{n}");
    headers.insert("ce-id", id.as_str());
    headers.insert("Nats-Msg-Id", id.as_str());
    let payload = serde_json::to_vec(&Job {
        n,
        label: String::new(),
    })
    .unwrap();
    client
        .jetstream()
        .publish_with_headers(
            client.namespace().redrive_subject(function),
            headers,
            payload.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// What the handler received until the function is drained: each `n`, how many times.
async fn handled_until_drained(
    client: &Client,
    function: &str,
    rx: &mut mpsc::UnboundedReceiver<u32>,
    expected: usize,
) -> BTreeMap<u32, usize> {
    let mut seen = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.values().sum::<usize>() < expected {
        let n = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} handled within {WAIT:?}"))
            .unwrap();
        *seen.entry(n).or_default() += 1;
    }
    wait_consumer_drained(client, function).await;
    while let Ok(n) = rx.try_recv() {
        *seen.entry(n).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn a_function_that_ran_with_one_consumer_loses_no_redrive_when_its_redrive_subject_moves() {
    let (_nats, client) = server_and_client().await;
    let js = client.jetstream();
    // The function's consumer as workers before the redrive consumer made it: both subjects.
    let old = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("moving".into()),
                filter_subjects: vec![
                    "herald.events.test.job".into(),
                    "herald.redrive.moving".into(),
                ],
                ack_wait: Duration::from_secs(3),
                max_deliver: 7,
                max_ack_pending: 16 * 1024,
                ..Default::default()
            },
            STREAM,
        )
        .await
        .unwrap();
    // Jobs 0 and 1 handled and acked by an earlier worker.
    let seqs = publish_jobs(&client, 0..2).await;
    let mut earlier = old.fetch().max_messages(2).messages().await.unwrap();
    for _ in 0..2 {
        earlier.next().await.unwrap().unwrap().ack().await.unwrap();
    }
    drop(earlier);
    // A redrive delivered to that worker and not acked when it stopped.
    redrive(&client, "moving", seqs[0], 100).await;
    let mut in_flight = old.fetch().max_messages(1).messages().await.unwrap();
    let held = in_flight.next().await.unwrap().unwrap();
    assert!(held.subject.starts_with("herald.redrive."));
    drop(in_flight);
    // Two redrives and a job stored and not yet delivered.
    redrive(&client, "moving", seqs[0], 101).await;
    publish_jobs(&client, 2..3).await;
    redrive(&client, "moving", seqs[1], 102).await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(job_function("moving", tx, |f| {
            f.ack_wait(Duration::from_secs(3))
        }))
        .start()
        .await
        .unwrap();
    assert_eq!(
        filters(&client, "moving").await.unwrap(),
        ["herald.events.test.job"]
    );
    assert_eq!(
        filters(&client, "moving_REDRIVE").await.unwrap(),
        ["herald.redrive.moving"]
    );
    let seen = handled_until_drained(&client, "moving", &mut rx, 4).await;
    assert_eq!(
        seen,
        BTreeMap::from([(2, 1), (100, 1), (101, 1), (102, 1)]),
        "each redrive and the new job once; the acked jobs not again"
    );
    // Redrives from now on reach the redrive consumer alone.
    redrive(&client, "moving", seqs[1], 103).await;
    let seen = handled_until_drained(&client, "moving", &mut rx, 1).await;
    assert_eq!(seen, BTreeMap::from([(103, 1)]));
    drop(held);
    worker.shutdown().await;
}

#[tokio::test]
async fn pausing_a_function_pauses_its_redrive_consumer_too() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(job_function("pausable", tx, |f| f))
        .start()
        .await
        .unwrap();
    let seqs = publish_jobs(&client, 0..1).await;
    assert_eq!(
        handled_until_drained(&client, "pausable", &mut rx, 1)
            .await
            .len(),
        1
    );
    herald_worker::pause_function(&client, "pausable", None)
        .await
        .unwrap();
    let stream = client.jetstream().get_stream(STREAM).await.unwrap();
    for name in ["pausable", "pausable_REDRIVE"] {
        assert!(stream.consumer_info(name).await.unwrap().paused, "{name}");
    }
    redrive(&client, "pausable", seqs[0], 200).await;
    // Nothing is delivered while paused: the redrive stays pending on the redrive consumer.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (pending, _, _) = consumer_state(&client, "pausable").await;
        if pending == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the redrive was not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
    }
    assert!(rx.try_recv().is_err(), "nothing runs while paused");
    herald_worker::resume_function(&client, "pausable")
        .await
        .unwrap();
    let seen = handled_until_drained(&client, "pausable", &mut rx, 1).await;
    assert_eq!(seen, BTreeMap::from([(200, 1)]));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_redrive_consumer_no_longer_wanted_is_read_until_empty_then_deleted() {
    let (_nats, client) = server_and_client().await;
    let js = client.jetstream();
    // A function that had two consumers, with a redrive pending on the second; the first
    // has handled job 0 and looked past the redrive (a fetch looks for more until the end).
    let mut consumers = Vec::new();
    for (name, filter) in [
        ("shrinking", "herald.events.test.job"),
        ("shrinking_REDRIVE", "herald.redrive.shrinking"),
    ] {
        let consumer = js
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some(name.into()),
                    filter_subject: filter.into(),
                    ..Default::default()
                },
                STREAM,
            )
            .await
            .unwrap();
        consumers.push(consumer);
    }
    let seqs = publish_jobs(&client, 0..1).await;
    redrive(&client, "shrinking", seqs[0], 300).await;
    let mut earlier = consumers[0]
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .unwrap();
    let mut fetched = 0;
    while let Some(message) = earlier.next().await {
        message.unwrap().ack().await.unwrap();
        fetched += 1;
    }
    assert_eq!(fetched, 1);
    // Now it bounds its messages in flight: one consumer holds them all.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(job_function("shrinking", tx, |f| f.max_ack_pending(64)))
        .start()
        .await
        .unwrap();
    assert_eq!(
        filters(&client, "shrinking").await.unwrap(),
        ["herald.events.test.job", "herald.redrive.shrinking"]
    );
    let n = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 300);
    let deadline = tokio::time::Instant::now() + WAIT;
    while filters(&client, "shrinking_REDRIVE").await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the empty redrive consumer was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
    }
    // Redrives from now on reach the function's consumer.
    redrive(&client, "shrinking", seqs[0], 301).await;
    let seen = handled_until_drained(&client, "shrinking", &mut rx, 1).await;
    assert_eq!(
        seen,
        BTreeMap::from([(301, 1)]),
        "the redrive once, nothing again"
    );
    worker.shutdown().await;
}
