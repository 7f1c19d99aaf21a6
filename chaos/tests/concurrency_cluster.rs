//! The concurrency failure test (issue 14): 300 jobs over 10 keys, at most 3 per key and
//! 10 in all, handled by 3 `flow-worker` processes on a 3-node cluster while a worker is
//! SIGKILLed (and replaced) every 5 s and the leaders of the runs bucket and the events
//! stream step down every 3 s. From the audit the handlers write: never more than the
//! limits active at any instant, every job done, and no slot left once the leases of the
//! killed workers ran out.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use herald::{Client, PublishOptions};
use herald_chaos::flow::{Audit, Job, PER_KEY, SHARED, audit_subject};
use herald_chaos::pace::WorkerProcess;
use herald_local_nats::LocalNats;

const JOBS: u32 = 300;
const KEYS: u32 = 10;

fn worker(url: &str) -> WorkerProcess {
    WorkerProcess::start(env!("CARGO_BIN_EXE_flow-worker"), url, &[]).unwrap()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn audits(js: &async_nats::jetstream::Context) -> Vec<Audit> {
    let stream = js.get_stream("FLOW_AUDIT").await.unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut pending = consumer.cached_info().num_pending;
    let mut all = Vec::new();
    if pending == 0 {
        return all;
    }
    let mut messages = consumer.messages().await.unwrap();
    while pending > 0 {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await
        else {
            break;
        };
        pending = message.info().unwrap().pending;
        all.push(serde_json::from_slice(&message.payload).unwrap());
    }
    all
}

/// The most runs active at once, per key and in all (`*`): each start until its end, or
/// until its worker was killed.
fn most_active(audits: &[Audit], killed: &HashMap<u32, u64>) -> (BTreeMap<String, u32>, usize) {
    let mut events: Vec<(u64, i32, String)> = Vec::new();
    let mut unpaired = 0;
    let mut by_run: HashMap<(u32, u32), Vec<&Audit>> = HashMap::new();
    for audit in audits {
        by_run.entry((audit.n, audit.pid)).or_default().push(audit);
    }
    for lines in by_run.values_mut() {
        lines.sort_by_key(|a| (a.at_us, !a.start));
        let mut open: Option<u64> = None;
        for line in lines.iter() {
            match (line.start, open) {
                (true, None) => open = Some(line.at_us),
                (false, Some(start)) => {
                    events.push((start, 1, line.key.clone()));
                    events.push((line.at_us, -1, line.key.clone()));
                    open = None;
                }
                (true, Some(start)) => {
                    // An attempt whose end was not audited (its audit failed): a retry.
                    unpaired += 1;
                    events.push((start, 1, line.key.clone()));
                    events.push((line.at_us, -1, line.key.clone()));
                    open = Some(line.at_us);
                }
                (false, None) => {}
            }
        }
        if let Some(start) = open {
            let end = killed
                .get(&lines[0].pid)
                .copied()
                .unwrap_or(start + 100_000);
            if !killed.contains_key(&lines[0].pid) {
                unpaired += 1;
            }
            events.push((start, 1, lines[0].key.clone()));
            events.push((end.max(start), -1, lines[0].key.clone()));
        }
    }
    // Ends before starts at the same instant.
    events.sort_by_key(|(at, delta, _)| (*at, *delta));
    let mut active: HashMap<String, i32> = HashMap::new();
    let mut most: BTreeMap<String, u32> = BTreeMap::new();
    for (_, delta, key) in events {
        for key in [key.as_str(), "*"] {
            let now = active.entry(key.to_owned()).or_default();
            *now += delta;
            let top = most.entry(key.to_owned()).or_default();
            *top = (*top).max(*now as u32);
        }
    }
    (most, unpaired)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_hold_through_worker_kills_and_step_downs() {
    let cluster = tokio::task::spawn_blocking(|| LocalNats::cluster(3))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.url();
    let client = Client::builder()
        .namespace("flowchaos")
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
        name: "FLOW_AUDIT".to_owned(),
        subjects: vec![audit_subject(client.namespace())],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| worker(&url)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stream = js.get_stream("FLOWCHAOS_EVENTS").await.unwrap();
        if stream
            .get_consumer::<consumer::pull::Config>("limited")
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the workers made no consumer");
        tokio::time::sleep(Duration::from_millis(200)).await; // the workers starting
    }
    for n in 0..JOBS {
        let job = Job {
            key: format!("k{}", n % KEYS),
            n,
        };
        let options = PublishOptions {
            id: Some(format!("job-{n}")),
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sent = async { client.publish_with(&job, options.clone()).await?.await };
            match sent.await {
                Ok(_) => break,
                Err(error) => {
                    assert!(Instant::now() < deadline, "publish {n}: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await; // an election
                }
            }
        }
    }
    // The chaos, until every job was done.
    let mut killed: HashMap<u32, u64> = HashMap::new();
    let began = Instant::now();
    let (mut next_kill, mut next_step_down, mut step_downs) = (
        began + Duration::from_secs(5),
        began + Duration::from_secs(3),
        0,
    );
    let subjects = [
        "$JS.API.STREAM.LEADER.STEPDOWN.KV_flowchaos-runs",
        "$JS.API.STREAM.LEADER.STEPDOWN.FLOWCHAOS_EVENTS",
    ];
    let done = loop {
        let now = Instant::now();
        assert!(
            now - began < Duration::from_secs(300),
            "not every job was done within 300 s"
        );
        if now >= next_kill && killed.len() < 8 {
            let victim = workers.remove(killed.len() % workers.len());
            killed.insert(victim.pid(), now_us());
            drop(victim);
            workers.push(worker(&url));
            next_kill = now + Duration::from_secs(5);
        }
        if now >= next_step_down {
            let subject = subjects[step_downs % 2].to_owned();
            if client.nats().request(subject, "".into()).await.is_ok() {
                step_downs += 1;
            }
            next_step_down = now + Duration::from_secs(3);
        }
        let lines = audits(&js).await;
        let ended: HashSet<u32> = lines.iter().filter(|a| !a.start).map(|a| a.n).collect();
        if ended.len() == JOBS as usize {
            break lines;
        }
        // FLOW_PROGRESS=1 prints the progress (with --nocapture).
        if std::env::var_os("FLOW_PROGRESS").is_some() {
            let dlq = js
                .get_stream("FLOWCHAOS_DLQ")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages;
            println!(
                "{:?}: {} done, {dlq} dead letters",
                began.elapsed(),
                ended.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // the chaos' pace
    };
    let (most, unpaired) = most_active(&done, &killed);
    println!(
        "{} audit lines, {} workers killed, {step_downs} step-downs, {unpaired} unpaired starts, most active: {most:?}",
        done.len(),
        killed.len()
    );
    assert!(killed.len() >= 2, "{} kills", killed.len());
    assert!(step_downs >= 2, "{step_downs} step-downs");
    for (key, top) in &most {
        let limit = if key == "*" { SHARED } else { PER_KEY };
        assert!(*top <= limit, "{top} runs of {key} at once (limit {limit})");
    }
    // The limits were under pressure, not idle.
    assert!(
        most.iter().any(|(key, top)| key != "*" && *top == PER_KEY),
        "no key reached its limit: {most:?}"
    );
    // No slot left once the killed workers' leases (30 s) ran out.
    let kv = js
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut keys = kv.keys().await.unwrap();
        let mut slots = Vec::new();
        while let Some(Ok(key)) = keys.next().await {
            if key.starts_with("_slot.") {
                slots.push(key);
            }
        }
        if slots.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "slots left: {slots:?}");
        tokio::time::sleep(Duration::from_secs(1)).await; // leases running out
    }
}
