//! Waits on a 3-node cluster while the leaders of the events stream and of the runs bucket
//! step down every 2 s: every wait resolves with its event, once (issue 13).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herald::{Client, Event, PublishOptions};
use herald_local_nats::LocalNats;
use herald_worker::{Ctx, Function, HandlerError, Match, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "cluster.order")]
struct Order {
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "cluster.payment")]
struct Payment {
    order_id: String,
    n: u32,
}

async fn send<E: Event>(client: &Client, event: &E, id: String) {
    // Retried: a publish during an election may time out.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let options = PublishOptions {
            id: Some(id.clone()),
            ..Default::default()
        };
        let sent = async { client.publish_with(event, options).await?.await };
        match sent.await {
            Ok(_) => return,
            Err(error) => {
                assert!(Instant::now() < deadline, "publish {id}: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await; // retry pacing
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_resolve_once_through_leader_step_downs() {
    let cluster = tokio::task::spawn_blocking(|| LocalNats::cluster(3))
        .await
        .unwrap()
        .unwrap();
    let client = Client::builder()
        .namespace("waitcluster")
        .connect(&cluster.url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = client.provision().await {
        assert!(Instant::now() < deadline, "provision: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await; // the cluster forming
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let after = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&after);
    let function = Function::new("await-payment")
        .on::<Order>()
        .concurrency(32)
        .handler(move |order: Order, ctx: Ctx| {
            let (tx, count) = (tx.clone(), Arc::clone(&count));
            async move {
                let paid = ctx
                    .wait_for_event::<Payment>(
                        "payment",
                        Match::field("/order_id", &order.id),
                        Duration::from_secs(300),
                    )
                    .await?;
                ctx.step("after", || async {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), HandlerError>(())
                })
                .await?;
                let _ = tx.send((order.id, paid.map(|p| p.n)));
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stepper = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let subjects = [
                "$JS.API.STREAM.LEADER.STEPDOWN.WAITCLUSTER_EVENTS".to_owned(),
                "$JS.API.STREAM.LEADER.STEPDOWN.KV_waitcluster-runs".to_owned(),
            ];
            let mut done = 0;
            while !stop.load(Ordering::SeqCst) {
                // The chaos' schedule: a step-down every 2 s.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let subject = subjects[done % 2].clone();
                if client.nats().request(subject, "".into()).await.is_ok() {
                    done += 1;
                }
            }
            done
        })
    };
    const ORDERS: u32 = 300;
    for n in 0..ORDERS {
        let id = format!("order-{n}");
        send(&client, &Order { id: id.clone() }, format!("o-{n}")).await;
        let gap = u64::from((n * 37) % 51);
        if gap > 0 {
            tokio::time::sleep(Duration::from_millis(gap)).await; // 0 to 50 ms after the order
        }
        send(&client, &Payment { order_id: id, n }, format!("p-{n}")).await;
    }
    let mut outcomes = BTreeMap::new();
    while outcomes.len() < ORDERS as usize {
        let Ok(Some((order, n))) = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await
        else {
            let missing: Vec<String> = (0..ORDERS)
                .map(|n| format!("order-{n}"))
                .filter(|order| !outcomes.contains_key(order))
                .collect();
            panic!("waits not resolved within 120 s: {missing:?}");
        };
        outcomes.insert(order, n);
    }
    stop.store(true, Ordering::SeqCst);
    let step_downs = stepper.await.unwrap();
    assert!(step_downs >= 3, "{step_downs} step-downs");
    for (order, n) in &outcomes {
        let expected: u32 = order.trim_start_matches("order-").parse().unwrap();
        assert_eq!(*n, Some(expected), "{order} got its payment");
    }
    assert_eq!(
        after.load(Ordering::SeqCst),
        ORDERS,
        "each run went on once"
    );
    worker.shutdown().await;
}
