//! Cancelling runs against a real nats-server: while asleep (ended at once), during a step
//! (no later step runs), before the run starts, a thousand sleeping runs in bulk, and a
//! waiting run dated by its event for a bulk cancel.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use herald::Client;
use herald_worker::{
    BulkCancel, CancelOutcome, Ctx, Function, HandlerError, RunStatus, RunStore, Worker,
};

const WAIT: Duration = Duration::from_secs(30);

async fn status(store: &RunStore, function: &str, event_id: &str) -> Option<RunStatus> {
    store
        .inspect(function, event_id)
        .await
        .unwrap()
        .outcome
        .map(|o| o.status)
}

async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
    }
}

async fn event_id_of(client: &Client, n: u32) -> String {
    // The ids of published jobs are read back from the stream.
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    let seq = publish_jobs(client, n..n + 1).await[0];
    let message = stream.get_raw_message(seq).await.unwrap();
    message.headers.get("ce-id").unwrap().as_str().to_owned()
}

#[tokio::test]
async fn a_sleeping_run_ends_cancelled_at_once_and_runs_no_later_step() {
    let (_nats, client) = server_and_client().await;
    let after = Arc::new(AtomicU32::new(0));
    let later = Arc::clone(&after);
    let function = Function::new("sleepy")
        .on::<Job>()
        .handler(move |_: Job, ctx: Ctx| {
            let later = Arc::clone(&later);
            async move {
                ctx.step("first", || async { Ok::<u32, HandlerError>(1) })
                    .await?;
                ctx.sleep("a long nap", Duration::from_secs(3600)).await?;
                ctx.step("after", || async {
                    later.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, HandlerError>(2)
                })
                .await?;
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let store = RunStore::open(&client).await.unwrap();
    let id = event_id_of(&client, 1).await;
    wait_for("the run sleeps", || async {
        let report = store.inspect("sleepy", &id).await.unwrap();
        report
            .steps
            .iter()
            .any(|(_, r)| matches!(r, herald_worker::StepRecord::Sleeping { .. }))
    })
    .await;
    let outcome = herald_worker::cancel_run(&client, "sleepy", &id, "customer left")
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::Cancelled { woken: true });
    // Within seconds, not at the wake time an hour away.
    wait_for("the run is recorded cancelled", || async {
        status(&store, "sleepy", &id).await == Some(RunStatus::Cancelled)
    })
    .await;
    let report = store.inspect("sleepy", &id).await.unwrap();
    assert_eq!(
        report.outcome.unwrap().detail.as_deref(),
        Some("customer left")
    );
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "no step after the sleep ran"
    );
    let again = herald_worker::cancel_run(&client, "sleepy", &id, "twice")
        .await
        .unwrap();
    assert_eq!(again, CancelOutcome::AlreadyFinished(RunStatus::Cancelled));
    wait_consumer_drained(&client, "sleepy").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_run_cancelled_during_a_step_runs_no_later_step() {
    let (_nats, client) = server_and_client().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let after = Arc::new(AtomicU32::new(0));
    let (s, r, a) = (
        Arc::clone(&started),
        Arc::clone(&release),
        Arc::clone(&after),
    );
    let function = Function::new("stepper")
        .on::<Job>()
        .handler(move |_: Job, ctx: Ctx| {
            let (s, r, a) = (Arc::clone(&s), Arc::clone(&r), Arc::clone(&a));
            async move {
                ctx.step("slow", || async {
                    s.notify_one();
                    r.notified().await;
                    Ok::<u32, HandlerError>(1)
                })
                .await?;
                ctx.step("after", || async {
                    a.fetch_add(1, Ordering::SeqCst);
                    Ok::<u32, HandlerError>(2)
                })
                .await?;
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let store = RunStore::open(&client).await.unwrap();
    let id = event_id_of(&client, 1).await;
    tokio::time::timeout(WAIT, started.notified())
        .await
        .unwrap();
    let outcome = herald_worker::cancel_run(&client, "stepper", &id, "stop")
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::Cancelled { woken: false });
    // The worker follows cancel records; give the step its end once the record is in.
    wait_for("the cancel record is stored", || async {
        let report = store.entries(&format!("stepper.{id}")).await.unwrap();
        report.iter().any(|(key, _)| key.ends_with(".c"))
    })
    .await;
    release.notify_one();
    wait_for("the run is recorded cancelled", || async {
        status(&store, "stepper", &id).await == Some(RunStatus::Cancelled)
    })
    .await;
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "the step after the cancel never ran"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_run_cancelled_before_it_starts_never_enters_the_handler() {
    let (_nats, client) = server_and_client().await;
    let entered = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&entered);
    let function = Function::new("early")
        .on::<Job>()
        .handler(move |_: Job, _: Ctx| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), HandlerError>(()) }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    herald_worker::pause_function(&client, "early", None)
        .await
        .unwrap();
    let id = event_id_of(&client, 1).await;
    let outcome = herald_worker::cancel_run(&client, "early", &id, "not needed")
        .await
        .unwrap();
    assert_eq!(outcome, CancelOutcome::Cancelled { woken: false });
    herald_worker::resume_function(&client, "early")
        .await
        .unwrap();
    let store = RunStore::open(&client).await.unwrap();
    wait_for("the run is recorded cancelled", || async {
        status(&store, "early", &id).await == Some(RunStatus::Cancelled)
    })
    .await;
    assert_eq!(entered.load(Ordering::SeqCst), 0);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sleeping_runs_cancelled_in_bulk_never_reenter_the_handler() {
    let (_nats, client) = server_and_client().await;
    let entered = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&entered);
    let function = Function::new("nappers")
        .on::<Job>()
        .concurrency(64)
        .handler(move |_: Job, ctx: Ctx| {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                ctx.sleep("nap", Duration::from_secs(3600)).await?;
                Ok::<(), HandlerError>(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let since = std::time::SystemTime::now() - Duration::from_secs(1);
    publish_jobs(&client, 0..1000).await;
    wait_for("every run sleeps", || async {
        entered.load(Ordering::SeqCst) >= 1000
    })
    .await;
    wait_consumer_drained(&client, "nappers").await;
    let dry = BulkCancel {
        function: "nappers".to_owned(),
        since: Some(since),
        until: None,
        dry_run: true,
        reason: "bulk".to_owned(),
    };
    assert_eq!(
        dry.run(&client).await.unwrap().matched,
        1000,
        "the dry run counts them"
    );
    let report = BulkCancel {
        dry_run: false,
        ..dry
    }
    .run(&client)
    .await
    .unwrap();
    assert_eq!(report.cancelled, 1000);
    assert_eq!(report.woken, 1000, "every sleeping run ends now");
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    wait_for("every run is recorded cancelled", || async {
        let mut keys = kv.keys().await.unwrap();
        let mut cancelled = 0;
        use futures::StreamExt;
        let mut runs = Vec::new();
        while let Some(Ok(key)) = keys.next().await {
            if key.starts_with("nappers.") && key.matches('.').count() == 1 {
                runs.push(key);
            }
        }
        for key in runs {
            if let Ok(Some(v)) = kv.get(&key).await
                && serde_json::from_slice::<herald_worker::RunRecord>(&v)
                    .unwrap()
                    .status
                    == RunStatus::Cancelled
            {
                cancelled += 1;
            }
        }
        cancelled == 1000
    })
    .await;
    wait_consumer_drained(&client, "nappers").await;
    assert_eq!(
        entered.load(Ordering::SeqCst),
        1000,
        "no run re-entered the handler"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn run_timeouts_cancel_a_run_queued_or_running_too_long() {
    let (_nats, client) = server_and_client().await;
    let entered = Arc::new(AtomicU32::new(0));
    let after = Arc::new(AtomicU32::new(0));
    let (count, later) = (Arc::clone(&entered), Arc::clone(&after));
    let queued = Function::new("queued")
        .on::<Job>()
        .start_timeout(Duration::from_secs(1))
        .handler(move |_: Job, _: Ctx| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), HandlerError>(()) }
        });
    let long = Function::new("long")
        .on::<Job>()
        .finish_timeout(Duration::from_secs(2))
        .handler(move |_: Job, ctx: Ctx| {
            let later = Arc::clone(&later);
            async move {
                ctx.sleep("an hour", Duration::from_secs(3600)).await?;
                ctx.step("after", || async {
                    later.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                })
                .await?;
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(queued)
        .function(long)
        .start()
        .await
        .unwrap();
    herald_worker::pause_function(&client, "queued", None)
        .await
        .unwrap();
    let id = event_id_of(&client, 1).await;
    let published = Instant::now();
    // The event waits in the paused function longer than its start timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    herald_worker::resume_function(&client, "queued")
        .await
        .unwrap();
    let store = RunStore::open(&client).await.unwrap();
    wait_for("the queued run is cancelled", || async {
        status(&store, "queued", &id).await == Some(RunStatus::Cancelled)
    })
    .await;
    let detail = store
        .inspect("queued", &id)
        .await
        .unwrap()
        .outcome
        .unwrap()
        .detail
        .unwrap();
    assert!(detail.starts_with("start timeout"), "{detail}");
    assert_eq!(entered.load(Ordering::SeqCst), 0);
    // The sleeping run ends at its finish timeout, not in an hour.
    wait_for("the long run is cancelled", || async {
        status(&store, "long", &id).await == Some(RunStatus::Cancelled)
    })
    .await;
    assert!(published.elapsed() < Duration::from_secs(20));
    let detail = store
        .inspect("long", &id)
        .await
        .unwrap()
        .outcome
        .unwrap()
        .detail
        .unwrap();
    assert!(detail.starts_with("finish timeout"), "{detail}");
    assert_eq!(
        after.load(Ordering::SeqCst),
        0,
        "no step after the deadline"
    );
    worker.shutdown().await;
}

/// A run waiting in a continuation is in a bulk cancel's range by its event's time, which
/// for an event without `ce-time` is its UUIDv7 id's (protocol section 4), not when the
/// continuation was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_dates_a_waiting_run_by_its_event_id_without_ce_time() {
    use herald::Event;
    use herald::protocol::header;
    let (_nats, client) = server_and_client().await;
    let entered = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&entered);
    let function = Function::new("dozers")
        .on::<Job>()
        .handler(move |_: Job, ctx: Ctx| {
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                ctx.sleep("nap", Duration::from_secs(3600)).await?;
                Ok::<(), HandlerError>(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    // An event whose UUIDv7 id was made an hour ago, published now without `ce-time`, as a
    // producer in another language may.
    let made = (std::time::SystemTime::now() - Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        made.as_secs(),
        made.subsec_nanos(),
    ))
    .to_string();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::SPEC_VERSION, header::SPEC_VERSION_VALUE);
    headers.insert(header::ID, id.as_str());
    headers.insert(header::TYPE, Job::TYPE);
    headers.insert(header::SOURCE, "urn:example:service:elsewhere");
    headers.insert(header::NATS_MSG_ID, id.as_str());
    client
        .jetstream()
        .publish_with_headers(
            client.namespace().event_subject(Job::TYPE),
            headers,
            serde_json::to_vec(&Job {
                n: 1,
                label: String::new(),
            })
            .unwrap()
            .into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for("the run sleeps", || async {
        entered.load(Ordering::SeqCst) >= 1
    })
    .await;
    wait_consumer_drained(&client, "dozers").await;
    // Until half an hour ago: the event (an hour old by its id) is in the range; the event
    // message and the continuation were both stored just now.
    let report = BulkCancel {
        function: "dozers".to_owned(),
        since: None,
        until: Some(std::time::SystemTime::now() - Duration::from_secs(1800)),
        dry_run: true,
        reason: "old".to_owned(),
    }
    .run(&client)
    .await
    .unwrap();
    assert_eq!(report.matched, 1, "{report:?}");
    worker.shutdown().await;
}
