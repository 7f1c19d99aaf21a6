//! `ctx.wait_for_event` against a real nats-server: an awaited event published right after
//! the trigger is never missed, a timeout resolves once, and events before the trigger do
//! not count.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, Match, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.order_placed")]
struct OrderPlaced {
    order_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.payment_received")]
struct PaymentReceived {
    order_id: String,
    amount: u32,
}

/// A function waiting for the payment of each order; sends (order, amount or None).
fn awaiting(
    timeout: Duration,
    outcomes: mpsc::UnboundedSender<(String, Option<u32>)>,
    after_wait: Arc<AtomicU32>,
) -> Function {
    Function::new("await-payment")
        .on::<OrderPlaced>()
        .concurrency(64)
        .handler(move |order: OrderPlaced, ctx: Ctx| {
            let outcomes = outcomes.clone();
            let after_wait = Arc::clone(&after_wait);
            async move {
                let paid = ctx
                    .wait_for_event::<PaymentReceived>(
                        "payment",
                        Match::field("/order_id", &order.order_id),
                        timeout,
                    )
                    .await?;
                ctx.step("after", || async {
                    after_wait.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                })
                .await?;
                let _ = outcomes.send((order.order_id, paid.map(|p| p.amount)));
                Ok::<(), HandlerError>(())
            }
        })
}

async fn send<E: Event>(client: &Client, event: &E, id: String) {
    let options = PublishOptions {
        id: Some(id),
        ..Default::default()
    };
    client
        .publish_with(event, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_sent_right_after_the_order_is_never_missed() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let after = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(awaiting(Duration::from_secs(120), tx, Arc::clone(&after)))
        .start()
        .await
        .unwrap();
    const ORDERS: u32 = 1000;
    const SENDERS: u32 = 10;
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let client = client.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..ORDERS / SENDERS {
                let n = sender * 1000 + i;
                let order_id = format!("order-{n}");
                send(
                    &client,
                    &OrderPlaced {
                        order_id: order_id.clone(),
                    },
                    format!("o-{n}"),
                )
                .await;
                // 0 to 50 ms between the trigger and the awaited event.
                let gap = u64::from((n * 7919) % 51);
                if gap > 0 {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                }
                send(
                    &client,
                    &PaymentReceived {
                        order_id,
                        amount: n,
                    },
                    format!("p-{n}"),
                )
                .await;
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut outcomes = BTreeMap::new();
    while outcomes.len() < ORDERS as usize {
        let (order, amount) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("every wait resolves")
            .unwrap();
        outcomes.insert(order, amount);
    }
    let missed: Vec<_> = outcomes.iter().filter(|(_, a)| a.is_none()).collect();
    assert!(
        missed.is_empty(),
        "waits that missed their payment: {missed:?}"
    );
    for (order, amount) in &outcomes {
        let n: u32 = order.trim_start_matches("order-").parse().unwrap();
        assert_eq!(*amount, Some(n), "{order} got its own payment");
    }
    wait_consumer_drained(&client, "await-payment").await;
    assert_eq!(
        after.load(Ordering::SeqCst),
        ORDERS,
        "each run went on once"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_wait_times_out_once_and_earlier_events_do_not_count() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let after = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(awaiting(Duration::from_secs(2), tx, Arc::clone(&after)))
        .start()
        .await
        .unwrap();
    // A payment stored before the order: not "after the trigger".
    send(
        &client,
        &PaymentReceived {
            order_id: "early".into(),
            amount: 1,
        },
        "p-early".into(),
    )
    .await;
    send(
        &client,
        &OrderPlaced {
            order_id: "early".into(),
        },
        "o-early".into(),
    )
    .await;
    let (order, amount) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((order.as_str(), amount), ("early", None), "timed out");
    // A payment after the timeout changes nothing.
    send(
        &client,
        &PaymentReceived {
            order_id: "early".into(),
            amount: 2,
        },
        "p-late".into(),
    )
    .await;
    wait_consumer_drained(&client, "await-payment").await;
    assert!(rx.try_recv().is_err(), "one outcome");
    assert_eq!(after.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
}

#[test]
fn a_pointer_outside_the_schema_is_a_terminal_error() {
    let worker =
        herald_worker::TestWorker::new(Function::new("bad-wait").on::<OrderPlaced>().handler(
            |_: OrderPlaced, ctx: Ctx| async move {
                ctx.wait_for_event::<PaymentReceived>(
                    "payment",
                    Match::field("/orderId", "x"),
                    Duration::from_secs(1),
                )
                .await?;
                Ok::<(), HandlerError>(())
            },
        ))
        .unwrap();
    let run = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(worker.run(&OrderPlaced {
            order_id: "x".into(),
        }));
    let text = format!("{:?}", run.outcome);
    assert!(text.contains("no property \\\"orderId\\\""), "{text}");
}

#[tokio::test]
async fn a_parked_wait_is_woken_by_the_matcher() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let after = Arc::new(AtomicU32::new(0));
    let worker = Worker::builder(client.clone())
        .function(awaiting(Duration::from_secs(3600), tx, Arc::clone(&after)))
        .start()
        .await
        .unwrap();
    send(
        &client,
        &OrderPlaced {
            order_id: "late".into(),
        },
        "o-late".into(),
    )
    .await;
    // Parked: its registration is stored and its delivery acked.
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        use futures::StreamExt;
        let mut keys = kv.keys().await.unwrap();
        let mut registered = false;
        while let Some(Ok(key)) = keys.next().await {
            registered |= key.starts_with("_wait.test/payment_received.");
        }
        if registered {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no registration");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling a condition
    }
    wait_consumer_drained(&client, "await-payment").await;
    let started = std::time::Instant::now();
    send(
        &client,
        &PaymentReceived {
            order_id: "late".into(),
            amount: 7,
        },
        "p-late".into(),
    )
    .await;
    let (order, amount) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((order.as_str(), amount), ("late", Some(7)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woken promptly, not at the timeout"
    );
    worker.shutdown().await;
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.order_cancelled")]
struct OrderCancelled {
    order_id: String,
}

#[tokio::test]
async fn a_wait_for_any_gets_the_first_of_several_events() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("paid-or-cancelled")
        .on::<OrderPlaced>()
        .handler(move |order: OrderPlaced, ctx: Ctx| {
            let tx = tx.clone();
            async move {
                let first = ctx
                    .wait_for_any(
                        "paid or cancelled",
                        vec![
                            herald_worker::Awaited::of::<PaymentReceived>(Match::field(
                                "/order_id",
                                &order.order_id,
                            )),
                            herald_worker::Awaited::of::<OrderCancelled>(Match::field(
                                "/order_id",
                                &order.order_id,
                            )),
                        ],
                        Duration::from_secs(60),
                    )
                    .await?;
                let _ = tx.send((order.order_id, first.map(|e| e.event_type)));
                Ok::<(), HandlerError>(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    // One right after its order (the look-back), one once the run is parked (the matcher).
    send(
        &client,
        &OrderPlaced {
            order_id: "a".into(),
        },
        "o-a".into(),
    )
    .await;
    send(
        &client,
        &OrderCancelled {
            order_id: "a".into(),
        },
        "c-a".into(),
    )
    .await;
    send(
        &client,
        &OrderPlaced {
            order_id: "b".into(),
        },
        "o-b".into(),
    )
    .await;
    let mut got = BTreeMap::new();
    let (order, kind) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    got.insert(order, kind);
    wait_consumer_drained(&client, "paid-or-cancelled").await;
    send(
        &client,
        &PaymentReceived {
            order_id: "b".into(),
            amount: 3,
        },
        "p-b".into(),
    )
    .await;
    // A second awaited event of "a" changes nothing: its wait is resolved.
    send(
        &client,
        &PaymentReceived {
            order_id: "a".into(),
            amount: 4,
        },
        "p-a".into(),
    )
    .await;
    while got.len() < 2 {
        let (order, kind) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.insert(order, kind);
    }
    assert_eq!(got["a"].as_deref(), Some("test.order_cancelled"));
    assert_eq!(got["b"].as_deref(), Some("test.payment_received"));
    wait_consumer_drained(&client, "paid-or-cancelled").await;
    assert!(rx.try_recv().is_err(), "one outcome per wait");
    worker.shutdown().await;
}
