//! Pausing a function: its events accumulate while paused and are all handled after resume.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use common::*;
use herald_worker::{Ctx, Function, HandlerError, PauseError, Worker};
use tokio::sync::mpsc;

#[tokio::test]
async fn events_published_while_paused_are_all_handled_after_resume() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("pausable")
        .on::<Job>()
        .handler(move |job: Job, _: Ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(job.n);
                Ok::<(), HandlerError>(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let state = herald_worker::pause_function(&client, "pausable", None)
        .await
        .unwrap();
    assert!(state.paused);
    assert_eq!(state.until, None, "paused until resumed");
    publish_jobs(&client, 0..1000).await;
    // All 1,000 stay pending at the server: none is delivered to the running worker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (pending, ack_pending, _) = consumer_state(&client, "pausable").await;
        if pending == 1000 {
            assert_eq!(ack_pending, 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pending} pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rx.try_recv().is_err(), "no handler ran while paused");
    let state = herald_worker::resume_function(&client, "pausable")
        .await
        .unwrap();
    assert!(!state.paused);
    let mut seen = BTreeSet::new();
    while seen.len() < 1000 {
        let n = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("every event handled after resume")
            .unwrap();
        seen.insert(n);
    }
    wait_consumer_drained(&client, "pausable").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_timed_pause_ends_by_itself_and_bad_requests_say_why() {
    let (_nats, client) = server_and_client().await;
    let function = Function::new("timed")
        .on::<Job>()
        .handler(|_: Job, _: Ctx| async { Ok::<(), HandlerError>(()) });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let until = SystemTime::now() + Duration::from_secs(2);
    let state = herald_worker::pause_function(&client, "timed", Some(until))
        .await
        .unwrap();
    assert!(state.paused);
    let end = state.until.unwrap();
    let off = end.duration_since(until).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(1), "until {end:?} vs {until:?}");
    publish_jobs(&client, 0..10).await;
    // The pause ends by itself: the events are handled without a resume.
    wait_consumer_drained(&client, "timed").await;

    let error = herald_worker::pause_function(&client, "no-such-function", None)
        .await
        .unwrap_err();
    assert!(matches!(error, PauseError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains("herald functions"), "{error}");
    let past = SystemTime::now() - Duration::from_secs(1);
    let error = herald_worker::pause_function(&client, "timed", Some(past))
        .await
        .unwrap_err();
    assert!(matches!(error, PauseError::InThePast { .. }), "{error}");
    worker.shutdown().await;
}
