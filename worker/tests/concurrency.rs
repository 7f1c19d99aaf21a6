//! Concurrency limits per key against a real nats-server: never more than the limit active
//! per key, shared limits across functions, a busy key does not hold back the others, no
//! slot left behind, and a cap on parked runs.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, Worker};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.export")]
struct Export {
    tenant: String,
    n: u32,
}

const WAIT: Duration = Duration::from_secs(60);

async fn send(client: &Client, tenant: &str, n: u32) {
    let options = PublishOptions {
        id: Some(format!("{tenant}-{n}")),
        ..Default::default()
    };
    let event = Export {
        tenant: tenant.to_owned(),
        n,
    };
    client
        .publish_with(&event, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Active runs per key (and in all), and the most seen at once.
#[derive(Default)]
struct Audit {
    active: HashMap<String, u32>,
    most: HashMap<String, u32>,
}

impl Audit {
    fn enter(&mut self, key: &str) {
        let active = self.active.entry(key.to_owned()).or_default();
        *active += 1;
        let most = self.most.entry(key.to_owned()).or_default();
        *most = (*most).max(*active);
    }
    fn leave(&mut self, key: &str) {
        *self.active.get_mut(key).unwrap() -= 1;
    }
}

/// A handler that is active for `busy` per run, audited by tenant and in all (`*`).
fn handler(
    audit: Arc<Mutex<Audit>>,
    done: mpsc::UnboundedSender<(String, u32, Instant)>,
    busy: Duration,
) -> impl Fn(Export, Ctx) -> futures::future::BoxFuture<'static, Result<(), HandlerError>>
+ Send
+ Sync
+ Clone
+ 'static {
    move |e: Export, _ctx: Ctx| {
        let (audit, done) = (audit.clone(), done.clone());
        Box::pin(async move {
            audit.lock().enter(&e.tenant);
            audit.lock().enter("*");
            tokio::time::sleep(busy).await; // the handler's work
            audit.lock().leave(&e.tenant);
            audit.lock().leave("*");
            let _ = done.send((e.tenant, e.n, Instant::now()));
            Ok(())
        })
    }
}

async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(String, u32, Instant)>,
    count: usize,
) -> Vec<(String, u32, Instant)> {
    let mut all = Vec::new();
    while all.len() < count {
        let one = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {count} runs finished", all.len()))
            .unwrap();
        all.push(one);
    }
    all
}

/// Slot leases and parked entries left in the runs bucket.
async fn leftovers(client: &Client) -> Vec<String> {
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let mut keys = kv.keys().await.unwrap();
    let mut left = Vec::new();
    use futures::StreamExt;
    while let Some(Ok(key)) = keys.next().await {
        if key.starts_with("_slot.") || key.starts_with("_parked.") {
            left.push(key);
        }
    }
    left
}

#[tokio::test]
async fn never_more_than_the_limit_per_key_and_no_slot_left_behind() {
    let (_nats, client) = server_and_client().await;
    let audit = Arc::new(Mutex::new(Audit::default()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("export")
        .on::<Export>()
        .concurrency_limit(2)
        .key(|e: &Export| e.tenant.clone())
        .shared_concurrency_limit("warehouse", 4)
        .handler(handler(audit.clone(), tx, Duration::from_millis(150)));
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    for n in 0..12 {
        for tenant in ["a", "b", "c"] {
            send(&client, tenant, n).await;
        }
    }
    let done = collect(&mut rx, 36).await;
    assert_eq!(done.len(), 36, "every event completes");
    let most = audit.lock().most.clone();
    for tenant in ["a", "b", "c"] {
        assert!(
            most[tenant] <= 2,
            "{} runs of {tenant} at once (limit 2)",
            most[tenant]
        );
        assert_eq!(most[tenant], 2, "the limit is used");
    }
    assert!(most["*"] <= 4, "{} at once (shared limit 4)", most["*"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(&client).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await; // slots given back after acks
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn a_saturated_key_does_not_hold_back_another() {
    // The scale: 2,000 runs of one key queued behind a limit of 1, then 10 of
    // another key, which all finish within seconds.
    const BUSY: u32 = 2000;
    const QUIET: u32 = 10;
    let (_nats, client) = server_and_client().await;
    let audit = Arc::new(Mutex::new(Audit::default()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("import")
        .on::<Export>()
        .concurrency_limit(1)
        .key(|e: &Export| e.tenant.clone())
        .handler(handler(audit.clone(), tx, Duration::from_millis(100)));
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for n in 0..BUSY {
        let event = Export {
            tenant: "busy".to_owned(),
            n,
        };
        pending.push(client.publish(&event).await.unwrap());
    }
    for ack in pending {
        ack.await.unwrap();
    }
    let quiet_sent = Instant::now();
    for n in 0..QUIET {
        send(&client, "quiet", n).await;
    }
    // Every quiet run finishes; the busy key goes on at one at a time meanwhile.
    let mut quiet_done = Vec::new();
    let mut busy_done = 0;
    while quiet_done.len() < QUIET as usize {
        let (tenant, _, at) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{} quiet runs finished", quiet_done.len()))
            .unwrap();
        if tenant == "quiet" {
            quiet_done.push(at - quiet_sent);
        } else {
            busy_done += 1;
        }
    }
    let quiet_last = quiet_done.iter().max().copied().unwrap_or_default();
    assert!(
        quiet_last < Duration::from_secs(10),
        "the quiet key's 10 runs finished {quiet_last:?} after they were sent, behind {BUSY} busy ones"
    );
    assert!(
        (busy_done as u32) < BUSY / 4,
        "{busy_done} busy runs finished first: the busy key was not saturated"
    );
    assert_eq!(audit.lock().most["busy"], 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn runs_beyond_max_parked_are_dead_lettered_queue_full() {
    let (_nats, client) = server_and_client().await;
    let audit = Arc::new(Mutex::new(Audit::default()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let function = Function::new("capped")
        .on::<Export>()
        .concurrency_limit(1)
        .max_parked(2)
        .handler(handler(audit.clone(), tx, Duration::from_secs(3)));
    let mut letters = DeadLetters::watch(&client, "capped").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    for n in 0..6 {
        send(&client, "t", n).await;
    }
    // One runs, two park, three are beyond the cap.
    for _ in 0..3 {
        let (headers, _) = letters.next(WAIT).await;
        assert_eq!(headers["herald-dlq-reason"], "queue_full");
    }
    let done = collect(&mut rx, 3).await;
    assert_eq!(done.len(), 3);
    worker.shutdown().await;
}
