//! Delivery semantics of the worker against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use herald_worker::{Backoff, Ctx, Envelope, Function, HandlerError, Worker};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the handler ran within the deadline")
        .expect("channel open")
}

#[tokio::test]
async fn a_handler_failing_twice_runs_three_times_with_backoff_delays() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(10),
        jitter: 0.2,
    };
    let function = Function::new("flaky")
        .on::<Job>()
        .attempts(5)
        .backoff(backoff)
        .handler(move |_job: Job, ctx: Ctx| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.attempt(), Instant::now())).unwrap();
                if ctx.attempt() < 3 {
                    return Err(HandlerError::retry(format!("fail {}", ctx.attempt())));
                }
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;

    let (a1, t1) = recv(&mut rx).await;
    let (a2, t2) = recv(&mut rx).await;
    let (a3, t3) = recv(&mut rx).await;
    assert_eq!((a1, a2, a3), (1, 2, 3));
    // Backoff: 300 ms then 600 ms, each ±20 %, plus delivery latency (up to 1.5 s on a CI
    // machine whose two cores run the other tests of this binary meanwhile).
    let first = t2 - t1;
    let second = t3 - t2;
    assert!(
        first >= Duration::from_millis(240) && first < Duration::from_millis(360 + 1_500),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(480) && second < Duration::from_millis(720 + 1_500),
        "{second:?}"
    );

    wait_consumer_drained(&client, "flaky").await;
    assert!(rx.try_recv().is_err(), "exactly 3 runs");
    assert_eq!(dlq_count(&client).await, 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_handler_that_always_fails_is_dead_lettered_after_its_attempts() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let function = Function::new("always-fails")
        .on::<Job>()
        .attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(50)))
        .handler(move |job: Job, _ctx: Ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Err::<(), _>(HandlerError::retry(format!(
                    "cannot process job {}\nsecond line",
                    job.n
                )))
            }
        });
    let mut dead = DeadLetters::watch(&client, "always-fails").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let ack = client
        .publish_with(
            &Job {
                n: 7,
                label: "x".into(),
            },
            herald::PublishOptions {
                id: Some("job-7".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let (headers, payload) = dead.next(WAIT).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3, "three attempts");
    assert_eq!(headers["herald-dlq-function"], "always-fails");
    assert_eq!(headers["herald-dlq-reason"], "handler_error");
    assert_eq!(
        headers["herald-dlq-error"],
        "cannot process job 7 second line"
    );
    assert_eq!(headers["herald-dlq-attempts"], "3");
    assert_eq!(headers["herald-dlq-stream"], "HERALD_EVENTS");
    assert_eq!(headers["herald-dlq-stream-seq"], ack.sequence.to_string());
    assert_eq!(headers["herald-dlq-subject"], "herald.events.test.job");
    assert_eq!(
        headers["herald-dlq-time"].len(),
        "2026-11-25T07:31:01.490068Z".len()
    );
    assert_eq!(
        headers["Nats-Msg-Id"],
        format!("dlq:always-fails:HERALD_EVENTS:{}", ack.sequence)
    );
    assert_eq!(headers["ce-id"], "job-7", "the original headers are kept");
    assert_eq!(headers["ce-type"], "test.job");
    let nats_headers: Vec<&String> = headers.keys().filter(|k| k.starts_with("Nats-")).collect();
    assert_eq!(
        nats_headers,
        ["Nats-Msg-Id"],
        "other Nats-* control headers are dropped"
    );
    // The event's bytes as published: fields in the struct's order.
    assert_eq!(&payload[..], br#"{"n":7,"label":"x"}"#);

    wait_consumer_drained(&client, "always-fails").await;
    assert_eq!(dlq_count(&client).await, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    worker.shutdown().await;
}

#[tokio::test]
async fn terminal_errors_and_bad_payloads_are_dead_lettered_after_one_attempt() {
    let (_nats, client) = server_and_client().await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let function =
        Function::new("strict")
            .on::<Job>()
            .attempts(5)
            .handler(move |job: Job, _ctx: Ctx| {
                log.lock().push(job.n);
                async move { Err::<(), _>(HandlerError::terminal("job is malformed")) }
            });
    let mut dead = DeadLetters::watch(&client, "strict").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();

    publish_jobs(&client, 1..2).await;
    let (headers, _) = dead.next(WAIT).await;
    assert_eq!(headers["herald-dlq-reason"], "terminal_error");
    assert_eq!(headers["herald-dlq-attempts"], "1");
    assert_eq!(headers["herald-dlq-error"], "job is malformed");

    // Breaks the schema (n must be an integer): the handler never sees it.
    publish_raw(&client, "test.job", &serde_json::json!({"n": "seven"})).await;
    let (headers, payload) = dead.next(WAIT).await;
    assert_eq!(headers["herald-dlq-reason"], "schema_violation");
    assert_eq!(headers["herald-dlq-attempts"], "1");
    assert!(
        headers["herald-dlq-error"].contains("$.n"),
        "{}",
        headers["herald-dlq-error"]
    );
    assert_eq!(&payload[..], br#"{"n":"seven"}"#);

    // Not JSON at all.
    client
        .jetstream()
        .publish("herald.events.test.job", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (headers, _) = dead.next(WAIT).await;
    assert_eq!(headers["herald-dlq-reason"], "decode_error");
    assert!(
        headers["herald-dlq-error"].contains("not JSON"),
        "{}",
        headers["herald-dlq-error"]
    );

    wait_consumer_drained(&client, "strict").await;
    assert_eq!(
        *seen.lock(),
        [1],
        "the handler saw only the valid event, once"
    );
    assert_eq!(dlq_count(&client).await, 3);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_panic_is_a_failed_attempt_and_a_timeout_too() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let panics = Function::new("panics-once")
        .on::<Job>()
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .handler(move |_job: Job, ctx: Ctx| {
            let tx = tx.clone();
            async move {
                tx.send(ctx.attempt()).unwrap();
                if ctx.attempt() == 1 {
                    panic!("boom on the first attempt");
                }
                Ok(())
            }
        });
    let slow = Function::new("too-slow")
        .on::<Job>()
        .attempts(2)
        .timeout(Duration::from_millis(200))
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .handler(|_job: Job, _ctx: Ctx| async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
    let mut dead = DeadLetters::watch(&client, "too-slow").await;
    let worker = Worker::builder(client.clone())
        .function(panics)
        .function(slow)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;

    assert_eq!(recv(&mut rx).await, 1);
    assert_eq!(
        recv(&mut rx).await,
        2,
        "the worker survived the panic and retried"
    );
    let (headers, _) = dead.next(WAIT).await;
    assert_eq!(headers["herald-dlq-reason"], "timeout");
    assert_eq!(headers["herald-dlq-attempts"], "2");
    wait_consumer_drained(&client, "panics-once").await;
    assert_eq!(dlq_count(&client).await, 1, "the panic did not dead-letter");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_handler_longer_than_ack_wait_is_not_redelivered() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("long-running")
        .on::<Job>()
        .ack_wait(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .handler(move |_job: Job, _ctx: Ctx| {
            counter.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            async move {
                // The work itself: three times the ack wait.
                tokio::time::sleep(Duration::from_secs(3)).await;
                tx.send(()).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;
    recv(&mut rx).await;
    wait_consumer_drained(&client, "long-running").await;
    let (_, _, redelivered) = consumer_state(&client, "long-running").await;
    assert_eq!(redelivered, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
}

#[test]
fn a_worker_killed_on_the_last_attempt_still_dead_letters_exactly_once() {
    let main = tokio::runtime::Runtime::new().unwrap();
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let client = main.block_on(connect(&nats));
    let mut dead = main.block_on(DeadLetters::watch(&client, "crashy"));
    let build = |attempt_tx: std::sync::mpsc::Sender<u32>| {
        Function::new("crashy")
            .on::<Job>()
            .attempts(2)
            .ack_wait(Duration::from_secs(1))
            .backoff(Backoff::fixed(Duration::from_millis(20)))
            .handler(move |_job: Job, ctx: Ctx| {
                let attempt_tx = attempt_tx.clone();
                async move {
                    attempt_tx.send(ctx.attempt()).unwrap();
                    if ctx.attempt() == 1 {
                        return Err(HandlerError::retry("first attempt fails"));
                    }
                    // The last attempt hangs until the process dies.
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
    };

    // Worker A in its own runtime, dropped mid-handler as if the process died.
    let (attempt_tx, attempt_rx) = std::sync::mpsc::channel();
    let runtime_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let function = build(attempt_tx);
    let worker_a = runtime_a.block_on(async move {
        let client = herald::Client::connect(&url).await.unwrap();
        Worker::builder(client)
            .function(function)
            .sweeper(false)
            .start()
            .await
            .unwrap()
    });
    main.block_on(publish_jobs(&client, 0..1));
    assert_eq!(attempt_rx.recv_timeout(WAIT).unwrap(), 1);
    assert_eq!(attempt_rx.recv_timeout(WAIT).unwrap(), 2);
    std::mem::forget(worker_a);
    runtime_a.shutdown_background();

    // Worker B gets delivery 3, beyond the 2 attempts: dead-lettered without running.
    let (attempt_tx, attempt_rx) = std::sync::mpsc::channel();
    main.block_on(async {
        let worker_b = Worker::builder(client.clone())
            .function(build(attempt_tx))
            .start()
            .await
            .unwrap();
        let (headers, _) = dead.next(WAIT).await;
        assert_eq!(headers["herald-dlq-reason"], "max_deliveries");
        assert_eq!(headers["herald-dlq-attempts"], "2");
        wait_consumer_drained(&client, "crashy").await;
        assert_eq!(dlq_count(&client).await, 1);
        worker_b.shutdown().await;
    });
    assert!(
        attempt_rx.try_recv().is_err(),
        "worker B never ran the handler"
    );
}

#[tokio::test]
async fn two_functions_on_one_type_each_get_every_event() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let make = |id: &'static str, tx: mpsc::UnboundedSender<(&'static str, u32)>| {
        Function::new(id)
            .on::<Job>()
            .concurrency(64)
            .handler(move |job: Job, _ctx: Ctx| {
                let tx = tx.clone();
                async move {
                    tx.send((id, job.n)).unwrap();
                    Ok(())
                }
            })
    };
    let worker = Worker::builder(client.clone())
        .function(make("index-search", tx.clone()))
        .function(make("send-email", tx))
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1000).await;
    let mut seen = HashSet::new();
    for _ in 0..2000 {
        assert!(seen.insert(recv(&mut rx).await), "no event handled twice");
    }
    for id in ["index-search", "send-email"] {
        assert_eq!(seen.iter().filter(|(f, _)| *f == id).count(), 1000);
        wait_consumer_drained(&client, id).await;
    }
    assert!(rx.try_recv().is_err());
    worker.shutdown().await;
}

#[tokio::test]
async fn three_replicas_split_ten_thousand_events_with_none_lost_or_repeated() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let client = connect(&nats).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for replica in 0..3u32 {
        let tx = tx.clone();
        let function = Function::new("replicated")
            .on::<Job>()
            .concurrency(32)
            .handler(move |job: Job, _ctx: Ctx| {
                let tx = tx.clone();
                async move {
                    tx.send((replica, job.n)).unwrap();
                    Ok(())
                }
            });
        let replica_client = connect(&nats).await;
        workers.push(
            Worker::builder(replica_client)
                .function(function)
                .start()
                .await
                .unwrap(),
        );
    }
    publish_jobs(&client, 0..10_000).await;
    let mut events = HashSet::new();
    let mut per_replica = [0u32; 3];
    for _ in 0..10_000 {
        let (replica, n) = recv(&mut rx).await;
        assert!(events.insert(n), "event {n} handled twice");
        per_replica[replica as usize] += 1;
    }
    wait_consumer_drained(&client, "replicated").await;
    assert!(rx.try_recv().is_err(), "nothing handled twice");
    assert!(
        per_replica.iter().all(|&n| n > 0),
        "every replica took work: {per_replica:?}"
    );
    for worker in workers {
        worker.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_hands_fifty_in_flight_events_to_another_replica() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let client = connect(&nats).await;
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let stuck = Function::new("handover")
        .on::<Job>()
        .concurrency(64)
        .handler(move |job: Job, _ctx: Ctx| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(job.n).unwrap();
                // Work longer than the grace period.
                tokio::time::sleep(Duration::from_secs(120)).await;
                Ok(())
            }
        });
    let worker_a = Worker::builder(connect(&nats).await)
        .function(stuck)
        .shutdown_grace(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..50).await;
    for _ in 0..50 {
        recv(&mut started_rx).await;
    }

    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let quick = Function::new("handover")
        .on::<Job>()
        .concurrency(64)
        .handler(move |job: Job, _ctx: Ctx| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(job.n).unwrap();
                Ok(())
            }
        });
    let worker_b = Worker::builder(connect(&nats).await)
        .function(quick)
        .start()
        .await
        .unwrap();
    let shutdown_started = Instant::now();
    let report = worker_a.shutdown().await;
    assert!(!report.finished_in_grace);
    let mut done = HashSet::new();
    for _ in 0..50 {
        done.insert(recv(&mut done_rx).await);
    }
    assert_eq!(done.len(), 50, "every event finished on the other replica");
    assert!(
        shutdown_started.elapsed() < Duration::from_secs(15),
        "handed back at once, not after ack_wait"
    );
    wait_consumer_drained(&client, "handover").await;
    assert_eq!(dlq_count(&client).await, 0, "nothing dead-lettered");
    worker_b.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_running_handlers_finish_within_the_grace_period() {
    let (_nats, client) = server_and_client().await;
    let (started_tx, mut started_rx) = mpsc::unbounded_channel();
    let finished = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&finished);
    let function = Function::new("finishes")
        .on::<Job>()
        .concurrency(64)
        .handler(move |_job: Job, _ctx: Ctx| {
            let started_tx = started_tx.clone();
            let counter = Arc::clone(&counter);
            async move {
                started_tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .shutdown_grace(Duration::from_secs(10))
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..50).await;
    for _ in 0..50 {
        recv(&mut started_rx).await;
    }
    let report = worker.shutdown().await;
    assert!(report.finished_in_grace);
    assert_eq!(finished.load(Ordering::SeqCst), 50);
    wait_consumer_drained(&client, "finishes").await;
}

#[tokio::test]
async fn a_server_restart_mid_run_loses_nothing() {
    let mut nats = herald_local_nats::LocalNats::start().unwrap();
    let client = connect(&nats).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // An ack in flight when the server stops is lost (acks are fire-and-forget); its event
    // comes back after ack_wait and is acked then, so the consumer must drain well within
    // the test's deadline.
    let function = Function::new("survives-restart")
        .on::<Job>()
        .concurrency(8)
        .ack_wait(Duration::from_secs(2))
        .handler(move |job: Job, _ctx: Ctx| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..500).await;
    let mut seen = HashSet::new();
    while seen.len() < 100 {
        seen.insert(recv(&mut rx).await);
    }
    nats.restart().unwrap();
    // Published after the restart, through the reconnected client.
    let deadline = Instant::now() + WAIT;
    let mut published = 500;
    while published < 1000 {
        let job = Job {
            n: published,
            label: String::new(),
        };
        let outcome = match client.publish(&job).await {
            Ok(pending) => pending.await.map(drop),
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => published += 1,
            Err(_) => {
                assert!(Instant::now() < deadline, "the client did not reconnect");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    while seen.len() < 1000 {
        seen.insert(recv(&mut rx).await);
    }
    assert_eq!(seen.len(), 1000);
    wait_consumer_drained(&client, "survives-restart").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_deleted_consumer_is_recreated_and_work_continues() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("phoenix")
        .on::<Job>()
        .handler(move |job: Job, _ctx: Ctx| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).unwrap();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    publish_jobs(&client, 0..1).await;
    assert_eq!(recv(&mut rx).await, 0);

    let js = client.jetstream();
    js.delete_consumer_from_stream("phoenix", "HERALD_EVENTS")
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Result<async_nats::jetstream::consumer::PullConsumer, _> = js
            .get_consumer_from_stream("phoenix", "HERALD_EVENTS")
            .await;
        if found.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the consumer was not re-created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish_jobs(&client, 1..2).await;
    assert_eq!(recv(&mut rx).await, 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_untyped_function_receives_the_envelope_for_a_wildcard() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("audit-log").on_types(["test.*"]).handler(
        move |event: Envelope, ctx: Ctx| {
            let tx = tx.clone();
            async move {
                let data: serde_json::Value = event.json()?;
                tx.send((
                    event.event_type().to_owned(),
                    ctx.event_id().to_owned(),
                    data,
                ))
                .unwrap();
                Ok(())
            }
        },
    );
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let job = client
        .publish(&Job {
            n: 1,
            label: "a".into(),
        })
        .await
        .unwrap()
        .await
        .unwrap();
    client
        .publish(&Other { n: 2 })
        .await
        .unwrap()
        .await
        .unwrap();
    let (t1, id1, d1) = recv(&mut rx).await;
    let (t2, _, d2) = recv(&mut rx).await;
    assert_eq!((t1.as_str(), t2.as_str()), ("test.job", "test.other"));
    assert_eq!(id1, job.event_id);
    assert_eq!(d1["label"], "a");
    assert_eq!(d2["n"], 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn bad_function_definitions_are_refused_when_checked_and_at_start() {
    let error = Function::new("Bad Id")
        .on::<Job>()
        .handler(|_: Job, _: Ctx| async { Ok(()) })
        .check()
        .unwrap_err();
    assert!(error.to_string().contains("invalid function id"), "{error}");
    let error = Function::new("ok")
        .on::<Job>()
        .attempts(0)
        .handler(|_: Job, _: Ctx| async { Ok(()) })
        .check()
        .unwrap_err();
    assert!(error.to_string().contains("attempts"), "{error}");
    let error = Function::new("ok")
        .on_types(["a.>.b"])
        .handler(|_: Envelope, _: Ctx| async { Ok(()) })
        .check()
        .unwrap_err();
    assert!(error.to_string().contains("invalid trigger"), "{error}");

    let (_nats, client) = server_and_client().await;
    // Refused by start() before anything is provisioned, with the function's own message.
    let error = Worker::builder(client.clone())
        .function(
            Function::new("Bad Id")
                .on::<Job>()
                .handler(|_: Job, _: Ctx| async { Ok(()) }),
        )
        .start()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid function id"), "{error}");
    let f = || {
        Function::new("twice")
            .on::<Job>()
            .handler(|_: Job, _: Ctx| async { Ok(()) })
    };
    let error = Worker::builder(client)
        .function(f())
        .function(f())
        .start()
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("two functions are named twice"),
        "{error}"
    );
}

#[tokio::test]
async fn the_sweeper_dead_letters_events_that_ran_out_of_deliveries_without_a_worker() {
    use futures::StreamExt;
    let (_nats, client) = server_and_client().await;
    let function = || {
        Function::new("swept")
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
    let sequence = publish_jobs(&client, 0..1).await[0];

    // Something other than a Herald worker takes every delivery (max_deliver = 3) and NAKs it.
    let consumer: async_nats::jetstream::consumer::PullConsumer = client
        .jetstream()
        .get_consumer_from_stream("swept", "HERALD_EVENTS")
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

    let mut dead = DeadLetters::watch(&client, "swept").await;
    let worker = Worker::builder(client.clone())
        .function(function())
        .start()
        .await
        .unwrap();
    let (headers, payload) = dead.next(WAIT).await;
    assert_eq!(headers["herald-dlq-reason"], "max_deliveries");
    assert_eq!(headers["herald-dlq-attempts"], "3");
    assert_eq!(
        headers["Nats-Msg-Id"],
        format!("dlq:swept:HERALD_EVENTS:{sequence}")
    );
    assert_eq!(headers["ce-type"], "test.job");
    assert_eq!(&payload[..], br#"{"n":0,"label":""}"#);
    assert_eq!(dlq_count(&client).await, 1);
    worker.shutdown().await;
}
