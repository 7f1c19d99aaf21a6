//! Durable steps against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use herald_worker::{Backoff, Ctx, FailedRun, Function, HandlerError, Worker};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Counters {
    one: AtomicU32,
    two: AtomicU32,
    three: AtomicU32,
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("within the deadline")
        .expect("open")
}

#[tokio::test]
async fn a_third_step_failing_twice_reruns_only_itself() {
    let (_nats, client) = server_and_client().await;
    let counters = Arc::new(Counters::default());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let c = Arc::clone(&counters);
    let function = Function::new("three-steps")
        .on::<Job>()
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .handler(move |_job: Job, ctx: Ctx| {
            let (c, done_tx) = (Arc::clone(&c), done_tx.clone());
            async move {
                let a: u32 = ctx
                    .step("one", || async {
                        Ok::<_, HandlerError>(c.one.fetch_add(1, Ordering::SeqCst) + 10)
                    })
                    .await?;
                let b: u32 = ctx
                    .step("two", || async {
                        Ok::<_, HandlerError>(c.two.fetch_add(1, Ordering::SeqCst) + a)
                    })
                    .await?;
                ctx.step("three", || async {
                    if c.three.fetch_add(1, Ordering::SeqCst) < 2 {
                        return Err(HandlerError::retry("not yet"));
                    }
                    Ok(())
                })
                .await?;
                done_tx.send((a, b)).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;
    assert_eq!(
        recv(&mut done_rx).await,
        (10, 10),
        "outputs come back from the store"
    );
    wait_consumer_drained(&client, "three-steps").await;
    assert_eq!(counters.one.load(Ordering::SeqCst), 1);
    assert_eq!(counters.two.load(Ordering::SeqCst), 1);
    assert_eq!(counters.three.load(Ordering::SeqCst), 3);
    assert_eq!(dlq_count(&client).await, 0);

    // Run inspection: which steps ran, with what outcome, how many attempts.
    let store = herald_worker::RunStore::open(&client).await.unwrap();
    let event_id = {
        let stream = client
            .jetstream()
            .get_stream("HERALD_EVENTS")
            .await
            .unwrap();
        let message = stream.get_raw_message(1).await.unwrap();
        message.headers.get("ce-id").unwrap().to_string()
    };
    let report = store.inspect("three-steps", &event_id).await.unwrap();
    assert_eq!(report.outcome.unwrap().status, herald_worker::RunStatus::Ok);
    let steps: Vec<(&str, u32)> = report
        .steps
        .iter()
        .map(|(key, record)| match record {
            herald_worker::StepRecord::Ok { attempts, .. } => (key.as_str(), *attempts),
            herald_worker::StepRecord::Sleeping { .. } => (key.as_str(), 0),
        })
        .collect();
    assert_eq!(steps, [("one", 1), ("three", 3), ("two", 1)]);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_dead_lettered_step_is_named_and_a_redrive_resumes_after_the_steps_that_succeeded() {
    let (_nats, client) = server_and_client().await;
    let counters = Arc::new(Counters::default());
    let fixed = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (c, f, failed) = (
        Arc::clone(&counters),
        Arc::clone(&fixed),
        Arc::clone(&failures),
    );
    let function = Function::new("charge")
        .on::<Job>()
        .attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .on_failure(move |run: FailedRun| {
            let failed = Arc::clone(&failed);
            async move {
                assert_eq!(run.step.as_deref(), Some("charge card"));
                failed.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .handler(move |_job: Job, ctx: Ctx| {
            let (c, f, done_tx) = (Arc::clone(&c), Arc::clone(&f), done_tx.clone());
            async move {
                ctx.step("reserve stock", || async {
                    Ok::<_, HandlerError>(c.one.fetch_add(1, Ordering::SeqCst))
                })
                .await?;
                ctx.step("charge card", || async {
                    c.two.fetch_add(1, Ordering::SeqCst);
                    if f.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err(HandlerError::retry("card declined"))
                    }
                })
                .await?;
                ctx.step("ship", || async {
                    Ok::<_, HandlerError>(c.three.fetch_add(1, Ordering::SeqCst))
                })
                .await?;
                done_tx.send(()).unwrap();
                Ok(())
            }
        });
    let mut dead = DeadLetters::watch(&client, "charge").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;

    let (headers, payload) = dead.next(WAIT).await;
    assert_eq!(headers["herald-dlq-step"], "charge card");
    assert_eq!(headers["herald-dlq-attempts"], "3");
    assert!(
        headers["herald-dlq-error"].contains("step `charge card` failed 3 times: card declined"),
        "{}",
        headers["herald-dlq-error"]
    );
    assert_eq!(counters.one.load(Ordering::SeqCst), 1);
    assert_eq!(counters.two.load(Ordering::SeqCst), 3);

    // Fix the cause, then redrive as protocol section 6 says.
    fixed.store(true, Ordering::SeqCst);
    let dlq = client.jetstream().get_stream("HERALD_DLQ").await.unwrap();
    let letter = dlq
        .get_last_raw_message_by_subject("herald.dlq.charge")
        .await
        .unwrap();
    let mut redrive_headers = async_nats::HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let text = name.to_string();
        if text.starts_with("herald-dlq-") || text.starts_with("Nats-") {
            continue;
        }
        redrive_headers.insert(name.clone(), values[0].clone());
    }
    redrive_headers.insert("Nats-Msg-Id", format!("redrive:charge:{}", letter.sequence));
    redrive_headers.insert("herald-redrive-of", letter.sequence.to_string());
    client
        .jetstream()
        .publish_with_headers("herald.redrive.charge", redrive_headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();
    recv(&mut done_rx).await;
    wait_consumer_drained(&client, "charge").await;
    assert_eq!(
        counters.one.load(Ordering::SeqCst),
        1,
        "step 1 did not run again"
    );
    assert_eq!(counters.two.load(Ordering::SeqCst), 4);
    assert_eq!(counters.three.load(Ordering::SeqCst), 1);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        1,
        "on_failure ran once for the dead-lettered run"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn each_step_has_its_own_attempts_budget() {
    let (_nats, client) = server_and_client().await;
    let counters = Arc::new(Counters::default());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let c = Arc::clone(&counters);
    // attempts 3: steps 1 and 2 each fail twice (attempts − 1); 4 failures in all.
    let function = Function::new("budgets")
        .on::<Job>()
        .attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .handler(move |_job: Job, ctx: Ctx| {
            let (c, done_tx) = (Arc::clone(&c), done_tx.clone());
            async move {
                ctx.step("one", || async {
                    if c.one.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(HandlerError::retry("one fails"))
                    } else {
                        Ok(())
                    }
                })
                .await?;
                ctx.step("two", || async {
                    if c.two.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(HandlerError::retry("two fails"))
                    } else {
                        Ok(())
                    }
                })
                .await?;
                done_tx.send(ctx.attempt()).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;
    // Deliveries 1-3 spent on step 1 and the first failure of step 2; a continuation with
    // a fresh delivery count carried step 2 to success on its second delivery.
    assert_eq!(recv(&mut done_rx).await, 2);
    wait_consumer_drained(&client, "budgets").await;
    assert_eq!(counters.one.load(Ordering::SeqCst), 3);
    assert_eq!(counters.two.load(Ordering::SeqCst), 3);
    assert_eq!(dlq_count(&client).await, 0, "the run completed");
    worker.shutdown().await;
}

#[tokio::test]
async fn send_event_in_a_retried_run_publishes_exactly_one_event() {
    let (_nats, client) = server_and_client().await;
    let tries = Arc::new(AtomicU32::new(0));
    let t = Arc::clone(&tries);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let function = Function::new("follow-up")
        .on::<Job>()
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .handler(move |job: Job, ctx: Ctx| {
            let (t, done_tx) = (Arc::clone(&t), done_tx.clone());
            async move {
                ctx.send_event("welcome", &Other { n: job.n }).await?;
                if t.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(HandlerError::retry("fails after sending"));
                }
                done_tx.send(()).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;
    recv(&mut done_rx).await;
    assert_eq!(tries.load(Ordering::SeqCst), 3);
    let stream = client
        .jetstream()
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap();
    let info = stream
        .info_with_subjects("herald.events.test.other")
        .await
        .unwrap()
        .collect::<Vec<_>>()
        .await;
    let count: u64 = info.into_iter().map(|r| r.unwrap().1 as u64).sum();
    assert_eq!(count, 1, "one follow-up event");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_durable_sleep_holds_nothing_and_survives_a_worker_restart() {
    let (_nats, client) = server_and_client().await;
    let before = Arc::new(AtomicU32::new(0));
    let after = Arc::new(AtomicU32::new(0));
    let running = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let (slept_tx, mut slept_rx) = mpsc::unbounded_channel();
    let build = |done_tx: mpsc::UnboundedSender<()>, slept_tx: mpsc::UnboundedSender<()>| {
        let (before, after, running) = (
            Arc::clone(&before),
            Arc::clone(&after),
            Arc::clone(&running),
        );
        Function::new("trial")
            .on::<Job>()
            .handler(move |_job: Job, ctx: Ctx| {
                let (before, after, running) = (
                    Arc::clone(&before),
                    Arc::clone(&after),
                    Arc::clone(&running),
                );
                let (done_tx, slept_tx) = (done_tx.clone(), slept_tx.clone());
                async move {
                    running.fetch_add(1, Ordering::SeqCst);
                    let outcome = async {
                        ctx.step("start trial", || async {
                            Ok::<_, HandlerError>(before.fetch_add(1, Ordering::SeqCst))
                        })
                        .await?;
                        let slept = ctx
                            .sleep("wait for trial end", Duration::from_secs(3))
                            .await;
                        if slept.is_err() {
                            let _ = slept_tx.send(());
                        }
                        slept?;
                        ctx.step("end trial", || async {
                            Ok::<_, HandlerError>(after.fetch_add(1, Ordering::SeqCst))
                        })
                        .await?;
                        done_tx.send(()).unwrap();
                        Ok(())
                    }
                    .await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    outcome
                }
            })
    };
    let worker_a = Worker::builder(client.clone())
        .function(build(done_tx.clone(), slept_tx.clone()))
        .start()
        .await
        .unwrap();
    let published = Instant::now();
    publish_jobs(&client, 0..1).await;
    recv(&mut slept_rx).await;
    // Asleep: no handler runs and the consumer has nothing unacknowledged.
    wait_consumer_drained(&client, "trial").await;
    assert_eq!(
        running.load(Ordering::SeqCst),
        0,
        "no handler held during the sleep"
    );
    worker_a.shutdown().await;

    let worker_b = Worker::builder(client.clone())
        .function(build(done_tx, slept_tx))
        .start()
        .await
        .unwrap();
    recv(&mut done_rx).await;
    assert!(
        published.elapsed() >= Duration::from_secs(3),
        "woke after the sleep: {:?}",
        published.elapsed()
    );
    wait_consumer_drained(&client, "trial").await;
    assert_eq!(before.load(Ordering::SeqCst), 1);
    assert_eq!(after.load(Ordering::SeqCst), 1, "woke up once");
    worker_b.shutdown().await;
}

#[tokio::test]
async fn a_finished_runs_event_redelivered_by_hand_does_not_run_again() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    // A run that reaches a step is recorded (a plain run without steps is not: its copies
    // are dropped by the stream's deduplication, protocol section 7).
    let function = Function::new("once")
        .on::<Job>()
        .handler(move |_job: Job, ctx: Ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                ctx.step("work", || async { Ok::<_, HandlerError>(()) })
                    .await?;
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let options = || herald::PublishOptions {
        id: Some("job-once".into()),
        ..Default::default()
    };
    client
        .publish_with(
            &Job {
                n: 1,
                label: String::new(),
            },
            options(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    wait_consumer_drained(&client, "once").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The same event again, past JetStream's dedup (another Nats-Msg-Id, same ce-id).
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "job-once"),
        ("ce-type", "test.job"),
        ("ce-source", "urn:x"),
        ("Nats-Msg-Id", "by-hand"),
    ] {
        headers.insert(name, value);
    }
    client
        .jetstream()
        .publish_with_headers(
            "herald.events.test.job",
            headers,
            r#"{"n":1,"label":""}"#.into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    wait_consumer_drained(&client, "once").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the handler did not run again"
    );
    let run: serde_json::Value = serde_json::from_slice(
        &client
            .jetstream()
            .get_key_value("herald-runs")
            .await
            .unwrap()
            .get("once.job-once")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(run["status"], "ok");
    worker.shutdown().await;
}

#[tokio::test]
async fn on_failure_runs_once_per_dead_lettered_run() {
    let (_nats, client) = server_and_client().await;
    let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
    let function = Function::new("alerts")
        .on::<Job>()
        .attempts(2)
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .on_failure(move |run: FailedRun| {
            let failed_tx = failed_tx.clone();
            async move {
                failed_tx
                    .send((run.event.id().to_owned(), run.reason, run.attempts))
                    .unwrap();
                // Its own failure is logged, never retried.
                Err(HandlerError::retry("the alerting service is down"))
            }
        })
        .handler(|job: Job, _ctx: Ctx| async move {
            if job.n == 0 {
                Err::<(), _>(HandlerError::terminal("bad job"))
            } else {
                Err(HandlerError::retry("flaky"))
            }
        });
    let mut dead = DeadLetters::watch(&client, "alerts").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..2).await;
    dead.next(WAIT).await;
    dead.next(WAIT).await;
    wait_consumer_drained(&client, "alerts").await;
    let mut calls = [recv(&mut failed_rx).await, recv(&mut failed_rx).await];
    calls.sort_by_key(|c| c.2);
    assert_eq!(calls[0].1, herald_worker::DeadLetterReason::TerminalError);
    assert_eq!(calls[1].1, herald_worker::DeadLetterReason::HandlerError);
    assert_eq!(calls[1].2, 2);
    worker.shutdown().await;
    assert!(failed_rx.try_recv().is_err(), "exactly once each");
}

/// Regression: a durable sleep longer than the events stream's `max_age` never woke (its
/// schedule was removed like any old message), and the run's step records expired with the
/// bucket's age.
#[tokio::test]
async fn a_sleep_longer_than_the_events_max_age_wakes_with_its_steps_intact() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let client = herald::Client::builder()
        .streams(herald::StreamSettings {
            events_max_age: Duration::from_secs(2),
            events_duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    let before = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let counter = Arc::clone(&before);
    let function = Function::new("long-sleep")
        .on::<Job>()
        .handler(move |_job: Job, ctx: Ctx| {
            let (counter, done_tx) = (Arc::clone(&counter), done_tx.clone());
            async move {
                let first: u32 = ctx
                    .step("before", || async {
                        Ok::<_, HandlerError>(counter.fetch_add(1, Ordering::SeqCst))
                    })
                    .await?;
                ctx.sleep("past max age", Duration::from_secs(5)).await?;
                done_tx.send(first).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let published = Instant::now();
    publish_jobs(&client, 0..1).await;
    let first = recv(&mut done_rx).await;
    assert!(
        published.elapsed() >= Duration::from_secs(4),
        "woke after the sleep, not before"
    );
    assert_eq!(first, 0, "the step's stored output came back");
    assert_eq!(
        before.load(Ordering::SeqCst),
        1,
        "the step before the sleep ran once: its record outlived the 2 s max age"
    );
    worker.shutdown().await;
}
