//! `cancel_on` against a real nats-server: a cancelling event 0 ms after the trigger, during
//! a sleep and during a step ends the run `cancelled` with no later step run.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, RunStatus, RunStore, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.signup")]
struct Signup {
    user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.account_deleted")]
struct AccountDeleted {
    user_id: String,
}

#[derive(Default)]
struct Counts {
    welcome: AtomicU32,
    follow_up: AtomicU32,
}

fn onboarding(counts: Arc<Counts>, gate: Option<Arc<tokio::sync::Semaphore>>) -> Function {
    Function::new("onboarding")
        .on::<Signup>()
        .concurrency(32)
        .cancel_on::<AccountDeleted, _>("/user_id", |s: &Signup| s.user_id.clone())
        .handler(move |_: Signup, ctx: Ctx| {
            let counts = Arc::clone(&counts);
            let gate = gate.clone();
            async move {
                ctx.step("welcome", || async {
                    counts.welcome.fetch_add(1, Ordering::SeqCst);
                    if let Some(gate) = gate {
                        // Held until the test lets it go: the cancel arrives meanwhile.
                        let _ = gate.acquire().await;
                    }
                    Ok::<(), HandlerError>(())
                })
                .await?;
                ctx.sleep("a day", Duration::from_secs(24 * 3600)).await?;
                ctx.step("follow-up", || async {
                    counts.follow_up.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                })
                .await?;
                Ok(())
            }
        })
}

async fn send<E: Event>(client: &Client, event: &E, id: &str) {
    let options = PublishOptions {
        id: Some(id.to_owned()),
        ..Default::default()
    };
    client
        .publish_with(event, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn wait_cancelled(store: &RunStore, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = 0;
        for id in ids {
            let outcome = store.inspect("onboarding", id).await.unwrap().outcome;
            done += usize::from(outcome.is_some_and(|o| o.status == RunStatus::Cancelled));
        }
        if done == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} cancelled",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_zero_ms_after_the_trigger_cancels() {
    let (_nats, client) = server_and_client().await;
    let counts = Arc::new(Counts::default());
    let worker = Worker::builder(client.clone())
        .function(onboarding(Arc::clone(&counts), None))
        .start()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        let user_id = format!("user-{n}");
        let id = format!("signup-{n}");
        send(
            &client,
            &Signup {
                user_id: user_id.clone(),
            },
            &id,
        )
        .await;
        send(
            &client,
            &AccountDeleted { user_id },
            &format!("deleted-{n}"),
        )
        .await;
        ids.push(id);
    }
    let store = RunStore::open(&client).await.unwrap();
    wait_cancelled(&store, &ids).await;
    assert_eq!(counts.follow_up.load(Ordering::SeqCst), 0);
    wait_consumer_drained(&client, "onboarding").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_cancel_during_the_sleep_or_during_a_step_ends_the_run() {
    let (_nats, client) = server_and_client().await;
    let counts = Arc::new(Counts::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let worker = Worker::builder(client.clone())
        .function(onboarding(Arc::clone(&counts), Some(Arc::clone(&gate))))
        .start()
        .await
        .unwrap();
    let store = RunStore::open(&client).await.unwrap();
    // During a step: the welcome step is held while the cancel arrives.
    send(
        &client,
        &Signup {
            user_id: "in-step".into(),
        },
        "s-step",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts.welcome.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
    }
    send(
        &client,
        &AccountDeleted {
            user_id: "in-step".into(),
        },
        "d-step",
    )
    .await;
    // The cancel record is stored by the matcher before the step is let go.
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    while kv.get("onboarding.s-step.c").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the matcher stored no cancel record"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
    }
    gate.add_permits(1000);
    wait_cancelled(&store, &["s-step".to_owned()]).await;
    // During the sleep: woken and cancelled at once, not in a day.
    send(
        &client,
        &Signup {
            user_id: "asleep".into(),
        },
        "s-sleep",
    )
    .await;
    loop {
        let report = store.inspect("onboarding", "s-sleep").await.unwrap();
        if report
            .steps
            .iter()
            .any(|(_, r)| matches!(r, herald_worker::StepRecord::Sleeping { .. }))
        {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(20),
            "never slept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // polling a condition
    }
    send(
        &client,
        &AccountDeleted {
            user_id: "asleep".into(),
        },
        "d-sleep",
    )
    .await;
    wait_cancelled(&store, &["s-sleep".to_owned()]).await;
    assert_eq!(
        counts.follow_up.load(Ordering::SeqCst),
        0,
        "no step after a cancel"
    );
    worker.shutdown().await;
}

#[test]
fn a_cancel_on_pointer_outside_the_schema_is_refused() {
    let function = Function::new("bad")
        .on::<Signup>()
        .cancel_on::<AccountDeleted, _>("/userId", |s: &Signup| s.user_id.clone())
        .handler(|_: Signup, _: Ctx| async { Ok::<(), HandlerError>(()) });
    let error = function.check().unwrap_err().to_string();
    assert!(error.contains("no property \"userId\""), "{error}");
}
