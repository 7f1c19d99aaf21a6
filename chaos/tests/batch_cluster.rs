//! The batching failure test (issue 14): 10,000 items over 50 keys, batched per key by 100
//! or every 2 s, handled by 3 `batch-worker` processes on a 3-node cluster while a worker is
//! SIGKILLed (and replaced) every 5 s and the leaders of the runs bucket and the events
//! stream step down every 3 s (the items are published in three parts, the second after
//! the first kill and step-down, the third after the second: on a machine fast enough to
//! finish before the clock brings two of each, the chaos comes when the publisher waits). From the audit the handlers write after each batch's work:
//! every item in exactly one batch, no batch over the size, one key per batch, and a rerun
//! of a batch (its worker killed) with the same items. The scale is set by
//! `HERALD_BATCH_ITEMS` and `HERALD_BATCH_KEYS`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use herald::{Client, PublishOptions};
use herald_chaos::batch::{AUDIT_STREAM, Audit, Item, SIZE, audit_subject};
use herald_chaos::pace::{WorkerProcess, patiently, step_down, wait_for_consumer};
use herald_local_nats::LocalNats;

fn scale(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn worker(url: &str) -> WorkerProcess {
    WorkerProcess::start(env!("CARGO_BIN_EXE_batch-worker"), url, &[]).unwrap()
}

/// The audit read so far, from one ordered consumer: each call reads what was added.
struct AuditLog {
    messages: consumer::pull::Ordered,
    lines: Vec<Audit>,
    items: BTreeSet<u32>,
}

impl AuditLog {
    async fn open(js: &async_nats::jetstream::Context) -> AuditLog {
        let stream = js.get_stream(AUDIT_STREAM).await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        AuditLog {
            messages: consumer.messages().await.unwrap(),
            lines: Vec::new(),
            items: BTreeSet::new(),
        }
    }

    /// Reads the lines stored since the last call (until none comes for 200 ms, for at most
    /// a second: the chaos goes on meanwhile).
    async fn read_new(&mut self) {
        let until = Instant::now() + Duration::from_secs(1);
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(200), self.messages.next()).await
        {
            let line: Audit = serde_json::from_slice(&message.payload).unwrap();
            self.items.extend(line.items.iter().copied());
            self.lines.push(line);
            if Instant::now() >= until {
                break;
            }
        }
    }
}

/// Where the publisher waits for the chaos: it publishes the items in three parts, the
/// second once a worker was killed and a leader stepped down, the third once two of each
/// were; so at least two of each land while batches run, however fast the machine is.
#[derive(Clone)]
struct Gate {
    /// The chaos done so far (kills, step-downs), sent by the test's loop.
    done: tokio::sync::watch::Receiver<(usize, usize)>,
    /// How many of each the publisher waits for (0 while it publishes).
    waiting: Arc<AtomicUsize>,
}

impl Gate {
    async fn pass(&mut self, part: usize) {
        self.waiting.store(part, Ordering::SeqCst);
        self.done
            .wait_for(|&(kills, step_downs)| kills >= part && step_downs >= part)
            .await
            .unwrap();
        self.waiting.store(0, Ordering::SeqCst);
    }
}

fn item(n: u32, keys: u32) -> (Item, PublishOptions) {
    let item = Item {
        key: format!("k{}", n % keys),
        n,
    };
    let options = PublishOptions {
        id: Some(format!("item-{n}")),
        ..Default::default()
    };
    (item, options)
}

/// Sends item `n` (its id makes a second send a duplicate the stream drops), retrying for
/// 30 s through elections.
async fn send(client: &Client, n: u32, keys: u32) -> herald::PendingAck {
    let (item, options) = item(n, keys);
    patiently(&format!("publishing item {n}"), 30, || {
        client.publish_with(&item, options.clone())
    })
    .await
    .unwrap()
}

/// Awaits the acks of `pending`; an item whose ack was lost (in an election) is sent again
/// until it is acked, for 30 s.
async fn confirm(client: &Client, pending: &mut Vec<(u32, herald::PendingAck)>, keys: u32) {
    for (n, ack) in pending.drain(..) {
        if ack.await.is_err() {
            let (item, options) = item(n, keys);
            patiently(&format!("item {n} acked"), 30, || async {
                client.publish_with(&item, options.clone()).await?.await
            })
            .await
            .unwrap();
        }
    }
}

async fn publish_all(client: &Client, items: u32, keys: u32, mut gate: Gate) {
    let mut pending = Vec::new();
    for n in 0..items {
        if n > 0 && (n == items / 3 || n == 2 * items / 3) {
            // What was sent is stored before the chaos comes.
            confirm(client, &mut pending, keys).await;
            gate.pass(if n == items / 3 { 1 } else { 2 }).await;
        }
        pending.push((n, send(client, n, keys).await));
        if pending.len() >= 256 || n + 1 == items {
            confirm(client, &mut pending, keys).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_lands_in_exactly_one_batch_through_worker_kills_and_step_downs() {
    let cluster = tokio::task::spawn_blocking(|| LocalNats::cluster(3))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.url();
    let client = Client::builder()
        .namespace("batchchaos")
        .connect(&url)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = client.provision().await {
        assert!(Instant::now() < deadline, "provision: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await; // the cluster forming
    }
    let js = client.jetstream().clone();
    js.get_or_create_stream(stream::Config {
        name: AUDIT_STREAM.to_owned(),
        subjects: vec![audit_subject(client.namespace())],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let (items, keys) = (
        scale("HERALD_BATCH_ITEMS", 10_000),
        scale("HERALD_BATCH_KEYS", 50),
    );
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| worker(&url)).collect();
    wait_for_consumer(&js, "BATCHCHAOS_EVENTS", "batched")
        .await
        .unwrap();
    let began = Instant::now();
    let (chaos_done, done) = tokio::sync::watch::channel((0, 0));
    let gate = Gate {
        done,
        waiting: Arc::new(AtomicUsize::new(0)),
    };
    // Published while the chaos goes on: batches fill and run meanwhile.
    let publisher = {
        let client = client.clone();
        let gate = gate.clone();
        tokio::spawn(async move { publish_all(&client, items, keys, gate).await })
    };
    let (mut next_kill, mut next_step_down) = (
        began + Duration::from_secs(5),
        began + Duration::from_secs(3),
    );
    let (mut kills, mut step_downs) = (0, 0);
    let leaders = ["KV_batchchaos-runs", "BATCHCHAOS_EVENTS"];
    let limit = Duration::from_secs(300);
    let mut audit = AuditLog::open(&js).await;
    loop {
        let now = Instant::now();
        assert!(
            now - began < limit,
            "not every item was in an executed batch within {limit:?}: {} of {items}",
            audit.items.len()
        );
        // The chaos follows the clock (a kill every 5 s, a step-down every 3 s) and, where the
        // work goes faster than that, the publisher waiting at its gate.
        let waiting = gate.waiting.load(Ordering::SeqCst);
        let (kill_due, step_down_due) = (kills < waiting, step_downs < waiting);
        if now >= next_kill || kill_due {
            let victim = workers.remove(kills % workers.len());
            drop(victim);
            kills += 1;
            workers.push(worker(&url));
            next_kill = now + Duration::from_secs(5);
        }
        if now >= next_step_down || step_down_due {
            if step_down(&client, leaders[step_downs % 2]).await {
                step_downs += 1;
            }
            next_step_down = now + Duration::from_secs(3);
        }
        chaos_done.send_replace((kills, step_downs));
        audit.read_new().await;
        if audit.items.len() == items as usize {
            break;
        }
        if std::env::var_os("BATCH_PROGRESS").is_some() {
            println!(
                "{:?}: {} items in batches",
                began.elapsed(),
                audit.items.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // the chaos' pace
    }
    publisher.await.unwrap();
    // Late reruns of batches whose workers were killed: read them too.
    audit.read_new().await;
    let lines = std::mem::take(&mut audit.lines);
    drop(workers);

    // Each batch: its items and key, the same on every attempt.
    let mut batches: BTreeMap<String, (Vec<u32>, Vec<String>)> = BTreeMap::new();
    let mut reruns = 0;
    for line in &lines {
        assert!(
            !line.items.is_empty() && line.items.len() <= SIZE as usize,
            "batch {} had {} items",
            line.batch,
            line.items.len()
        );
        let keys: BTreeSet<&String> = line.keys.iter().collect();
        assert_eq!(keys.len(), 1, "batch {} mixes keys {keys:?}", line.batch);
        match batches.get(&line.batch) {
            Some((items, _)) => {
                assert_eq!(
                    items, &line.items,
                    "batch {} changed on a rerun",
                    line.batch
                );
                reruns += 1;
            }
            None => {
                batches.insert(line.batch.clone(), (line.items.clone(), line.keys.clone()));
            }
        }
    }
    // Every item in exactly one batch.
    let mut owner: HashMap<u32, &str> = HashMap::new();
    for (batch, (items, _)) in &batches {
        for n in items {
            if let Some(other) = owner.insert(*n, batch) {
                panic!("item {n} is in batches {other} and {batch}");
            }
        }
    }
    assert_eq!(owner.len(), items as usize, "items in no batch");
    let full = batches
        .values()
        .filter(|(i, _)| i.len() == SIZE as usize)
        .count();
    println!(
        "{items} items in {} batches ({full} full), {reruns} reruns, {} lines, {kills} kills, {step_downs} step-downs, {:?}",
        batches.len(),
        lines.len(),
        began.elapsed()
    );
    assert!(kills >= 2, "{kills} kills");
    assert!(step_downs >= 2, "{step_downs} step-downs");
    // No batch is left open: each batch's run removed its key's record.
    let kv = js
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut names = kv.keys().await.unwrap();
        let mut open = Vec::new();
        while let Some(Ok(name)) = names.next().await {
            if name.starts_with("_batch.") {
                open.push(name);
            }
        }
        if open.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "batches left open: {open:?}");
        tokio::time::sleep(Duration::from_millis(500)).await; // the last runs closing theirs
    }
    // No item was dead-lettered.
    let dlq = js
        .get_stream("BATCHCHAOS_DLQ")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(dlq, 0, "dead letters");
}
