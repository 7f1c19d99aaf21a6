//! The consumer a worker makes for a function: `max_ack_pending` by default, within the
//! server's limits, and as the function sets it (protocol section 3).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use common::*;
use herald::Client;
use herald_worker::{Worker, WorkerError};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

async fn max_ack_pending(client: &Client, id: &str) -> i64 {
    let mut consumer: PullConsumer = client
        .jetstream()
        .get_consumer_from_stream(id, "HERALD_EVENTS")
        .await
        .unwrap();
    consumer.info().await.unwrap().config.max_ack_pending
}

async fn received(rx: &mut mpsc::UnboundedReceiver<u32>) -> u32 {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no event handled in time")
        .unwrap()
}

#[tokio::test]
async fn replicas_get_room_for_sixteen_windows_unless_the_function_sets_it() {
    let (_nats, client) = server_and_client().await;
    // A consumer made earlier with the server's default of 1,000 is raised too.
    client
        .jetstream()
        .create_consumer_on_stream(
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("roomy".into()),
                filter_subjects: vec![
                    "herald.events.test.job".into(),
                    "herald.redrive.roomy".into(),
                ],
                ..Default::default()
            },
            "HERALD_EVENTS",
        )
        .await
        .unwrap();
    assert_eq!(max_ack_pending(&client, "roomy").await, 1000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(job_function("roomy", tx.clone(), |f| f))
        .function(job_function("wide", tx.clone(), |f| f.concurrency(2000)))
        .function(job_function("capped", tx, |f| f.max_ack_pending(7)))
        .start()
        .await
        .unwrap();
    assert_eq!(max_ack_pending(&client, "roomy").await, 16 * 1024);
    assert_eq!(max_ack_pending(&client, "wide").await, 16 * 2000);
    assert_eq!(max_ack_pending(&client, "capped").await, 7);
    publish_jobs(&client, 0..1).await;
    for _ in 0..3 {
        assert_eq!(received(&mut rx).await, 0);
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_limit_below_the_default_leaves_the_servers_default_and_refuses_a_setting_above_it() {
    let (_nats, client) = server_and_client().await;
    let js = client.jetstream();
    let mut stream = js.get_stream("HERALD_EVENTS").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.consumer_limits = Some(async_nats::jetstream::stream::ConsumerLimits {
        max_ack_pending: 500,
        ..Default::default()
    });
    js.update_stream(config).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = tokio::time::timeout(
        WAIT,
        Worker::builder(client.clone())
            .function(job_function("limited", tx.clone(), |f| f))
            .start(),
    )
    .await
    .expect("the worker waits for a consumer the limits refuse")
    .unwrap();
    assert_eq!(max_ack_pending(&client, "limited").await, 500);
    publish_jobs(&client, 0..1).await;
    assert_eq!(received(&mut rx).await, 0);
    worker.shutdown().await;

    let refused = tokio::time::timeout(
        WAIT,
        Worker::builder(client.clone())
            .function(job_function("greedy", tx, |f| f.max_ack_pending(501)))
            .start(),
    )
    .await
    .expect("a refused setting must fail the start, not wait");
    match refused {
        Err(WorkerError::AckPendingAboveLimit {
            function, wanted, ..
        }) => {
            assert_eq!((function.as_str(), wanted), ("greedy", 501));
        }
        other => panic!("expected AckPendingAboveLimit, got {:?}", other.map(drop)),
    }
}
