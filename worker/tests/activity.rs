//! Activity records (protocol section 18): a `finished` record for every attempt but a fast
//! first one that succeeds, a `started` record for handlers still running at their first
//! progress ack, on
//! `ns.activity.F.<event-key>`; none when turned off.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use common::{Job, server_and_client};
use futures::StreamExt;
use herald_worker::activity::{ActivityKind, ActivityRecord};
use herald_worker::{Backoff, Ctx, Function, HandlerError, Worker};

/// A function whose first attempt fails and whose second succeeds.
fn flaky(calls: Arc<AtomicU32>) -> Function {
    Function::new("flaky")
        .on::<Job>()
        .backoff(Backoff::fixed(Duration::from_millis(50)))
        .handler(move |_job: Job, _ctx: Ctx| {
            let calls = Arc::clone(&calls);
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(HandlerError::retry("first attempt fails"));
                }
                Ok(())
            }
        })
}

/// Every record in `NS_ACTIVITY` once `count` are there (or the deadline passes).
async fn records(client: &herald::Client, count: usize) -> Vec<ActivityRecord> {
    let stream = client
        .jetstream()
        .get_stream(client.namespace().activity_stream())
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut found = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while found.len() < count && Instant::now() < deadline {
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(500), messages.next()).await
        {
            found.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
        }
    }
    found
}

#[tokio::test]
async fn a_retried_run_publishes_the_end_of_each_attempt() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(flaky(Arc::clone(&calls)))
        .start()
        .await
        .unwrap();
    let ack = client
        .publish(&Job {
            n: 1,
            label: String::new(),
        })
        .await
        .unwrap()
        .await
        .unwrap();
    let found = records(&client, 2).await;
    worker.shutdown().await;
    let summary: Vec<(ActivityKind, u32, Option<&str>)> = found
        .iter()
        .map(|r| (r.kind, r.attempt, r.outcome.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (ActivityKind::Finished, 1, Some("retry")),
            (ActivityKind::Finished, 2, Some("ok")),
        ]
    );
    let retry = &found[0];
    assert_eq!(retry.error.as_deref(), Some("first attempt fails"));
    assert!(retry.retry_in_ms.is_some());
    assert!(retry.started_ms.is_some_and(|s| s <= retry.at_ms));
    for record in &found {
        assert_eq!(record.function, "flaky");
        assert_eq!(record.event_id, ack.event_id);
        assert_eq!(
            record.run,
            format!("flaky.{}", herald_worker::event_key(&ack.event_id))
        );
        assert_eq!(record.event_type, "test.job");
        assert_eq!(record.stream_seq, ack.sequence);
    }
}

#[tokio::test]
async fn records_can_be_turned_off() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(flaky(Arc::clone(&calls)))
        .activity_records(false)
        .start()
        .await
        .unwrap();
    let ack = client
        .publish(&Job {
            n: 2,
            label: String::new(),
        })
        .await
        .unwrap()
        .await
        .unwrap();
    // Wait for the run to be recorded finished, then look for records.
    let store = herald_worker::RunStore::open(&client).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store
        .inspect("flaky", &ack.event_id)
        .await
        .unwrap()
        .outcome
        .is_none()
    {
        assert!(Instant::now() < deadline, "the run never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.nats().flush().await.unwrap();
    worker.shutdown().await;
    let mut stream = client
        .jetstream()
        .get_stream(client.namespace().activity_stream())
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_slow_attempt_is_announced_while_it_runs() {
    let (_nats, client) = server_and_client().await;
    let slow = Function::new("slow")
        .on::<Job>()
        // The first progress ack comes at ack_wait / 3 = 1 s.
        .ack_wait(Duration::from_secs(3))
        .handler(|_job: Job, _ctx: Ctx| async move {
            // Long past the first progress ack, so that a late timer (a loaded machine)
            // still announces the attempt before it ends.
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            Ok::<_, HandlerError>(())
        });
    let worker = Worker::builder(client.clone())
        .function(slow)
        .start()
        .await
        .unwrap();
    client
        .publish(&Job {
            n: 3,
            label: String::new(),
        })
        .await
        .unwrap()
        .await
        .unwrap();
    let found = records(&client, 2).await;
    worker.shutdown().await;
    let summary: Vec<(ActivityKind, Option<&str>)> = found
        .iter()
        .map(|r| (r.kind, r.outcome.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (ActivityKind::Started, None),
            (ActivityKind::Finished, Some("ok"))
        ]
    );
    let (started, finished) = (found[0].at_ms, found[1].started_ms.unwrap());
    // `started` is the first progress ack's time less ack_wait / 3: a late timer moves it.
    assert!(started.abs_diff(finished) < 500, "{started} {finished}");
}

#[tokio::test]
async fn the_sweeper_publishes_the_end_of_a_run_whose_worker_died() {
    let (_nats, client) = server_and_client().await;
    let function = || {
        Function::new("orphan")
            .on::<Job>()
            .attempts(1)
            .handler(|_job: Job, _ctx: Ctx| async { Ok(()) })
    };
    // Create the function's consumer, then stop its worker.
    Worker::builder(client.clone())
        .function(function())
        .sweeper(false)
        .start()
        .await
        .unwrap()
        .shutdown()
        .await;
    let sequence = common::publish_jobs(&client, 0..1).await[0];
    // A "worker" that dies on every delivery: it takes each one (max_deliver = 3) and NAKs.
    let consumer: async_nats::jetstream::consumer::PullConsumer = client
        .jetstream()
        .get_consumer_from_stream("orphan", client.namespace().events_stream())
        .await
        .unwrap();
    for _ in 0..3 {
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .unwrap();
        let message = batch.next().await.unwrap().unwrap();
        message
            .ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    }
    // One more pull makes the server notice the exhausted delivery and raise the advisory.
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    assert!(batch.next().await.is_none(), "no fourth delivery");

    // A worker with its sweeper dead-letters the run and publishes the attempt's end.
    let worker = Worker::builder(client.clone())
        .function(function())
        .start()
        .await
        .unwrap();
    let found = records(&client, 1).await;
    worker.shutdown().await;
    assert_eq!(found.len(), 1, "{found:?}");
    let record = &found[0];
    assert_eq!(record.kind, ActivityKind::Finished);
    assert_eq!(record.outcome.as_deref(), Some("dead_lettered"));
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("max_deliveries: ")),
        "{record:?}"
    );
    assert_eq!(record.attempt, 3);
    assert_eq!(record.stream_seq, sequence);
    assert_eq!(record.function, "orphan");
    assert_eq!(record.started_ms, None);
    assert!(record.run.starts_with("orphan."), "{record:?}");
}

#[tokio::test]
async fn a_quick_redriven_run_publishes_its_end() {
    let (_nats, client) = server_and_client().await;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let function = {
        let broken = Arc::clone(&broken);
        Function::new("mended")
            .on::<Job>()
            .handler(move |_job: Job, _ctx: Ctx| {
                let broken = Arc::clone(&broken);
                async move {
                    if broken.load(Ordering::SeqCst) {
                        return Err(HandlerError::terminal("not yet"));
                    }
                    Ok(())
                }
            })
    };
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    client
        .publish(&Job {
            n: 1,
            label: String::new(),
        })
        .await
        .unwrap()
        .await
        .unwrap();
    let dead = records(&client, 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].outcome.as_deref(), Some("dead_lettered"));
    let letters = herald_worker::DeadLetters::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    let letter = loop {
        let listed = letters.list(&Default::default()).await.unwrap();
        if let Some(letter) = listed.into_iter().next() {
            break letter;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    broken.store(false, Ordering::SeqCst);
    letters.redrive(&letter, None).await.unwrap();
    // The redriven attempt is a first delivery, quick and ok, yet it continues a run whose
    // latest record says `dead_lettered`: its end is published.
    let found = records(&client, 2).await;
    worker.shutdown().await;
    let outcomes: Vec<Option<&str>> = found.iter().map(|r| r.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("dead_lettered"), Some("ok")]);
    assert_eq!(found[1].run, found[0].run);
    assert_eq!(found[1].attempt, 1);
}
