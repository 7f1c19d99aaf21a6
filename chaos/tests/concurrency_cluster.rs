//! The concurrency failure test (issue 14): 300 jobs over 10 keys, at most 3 per key and
//! 10 in all, handled by 3 `flow-worker` processes on a 3-node cluster while a worker is
//! SIGKILLed (and replaced) at 1.5 s, 3 s, then every 5 s, and the leaders of the runs
//! bucket and the events stream step down at 0.75 s, 2.25 s, then every 3 s. From the audit
//! the handlers write: never more than the limits active at any instant, every job done, and no slot left once the leases of the
//! killed workers ran out. At the issue's full scale (about 23 minutes here, passed with 165 kills):
//!
//! ```sh
//! HERALD_FLOW_JOBS=20000 HERALD_FLOW_KEYS=50 HERALD_FLOW_WORKERS=4 HERALD_FLOW_KILLS=1000 \
//!   FLOW_PROGRESS=1 cargo test --release -p herald-chaos --test concurrency_cluster -- --nocapture
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use herald_chaos::now_us;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use herald::{Client, PublishOptions};
use herald_chaos::flow::{Audit, Job, PER_KEY, SHARED, audit_subject};
use herald_chaos::pace::WorkerProcess;
use herald_local_nats::LocalNats;

/// The test's scale: `HERALD_FLOW_JOBS` (300), `HERALD_FLOW_KEYS` (10),
/// `HERALD_FLOW_WORKERS` (3), `HERALD_FLOW_KILLS` (at most 8 kills; the issue's full scale
/// is 20,000 jobs, 50 keys, 4 workers and a kill every 5 s throughout).
fn scale(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn worker(url: &str) -> WorkerProcess {
    WorkerProcess::start(env!("CARGO_BIN_EXE_flow-worker"), url, &[]).unwrap()
}

/// The audit read so far, from one ordered consumer: each call reads what was added.
struct AuditLog {
    messages: async_nats::jetstream::consumer::pull::Ordered,
    lines: Vec<Audit>,
    ended: HashSet<u32>,
}

impl AuditLog {
    async fn open(js: &async_nats::jetstream::Context) -> AuditLog {
        let stream = js.get_stream("FLOW_AUDIT").await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        AuditLog {
            messages: consumer.messages().await.unwrap(),
            lines: Vec::new(),
            ended: HashSet::new(),
        }
    }

    /// Reads the lines stored since the last call (until none comes for 200 ms).
    async fn read_new(&mut self) {
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(200), self.messages.next()).await
        {
            let line: Audit = serde_json::from_slice(&message.payload).unwrap();
            if !line.start {
                self.ended.insert(line.n);
            }
            self.lines.push(line);
        }
    }
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
    let (jobs, keys) = (
        scale("HERALD_FLOW_JOBS", 300),
        scale("HERALD_FLOW_KEYS", 10),
    );
    let (replicas, kills) = (
        scale("HERALD_FLOW_WORKERS", 3),
        scale("HERALD_FLOW_KILLS", 8),
    );
    let mut workers: Vec<WorkerProcess> = (0..replicas).map(|_| worker(&url)).collect();
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
    // Paused while the jobs are published, so that every job runs after the chaos begins
    // (published one by one on a loaded machine, most could be done before it).
    herald_worker::pause_function(&client, "limited", None)
        .await
        .unwrap();
    for n in 0..jobs {
        let job = Job {
            key: format!("k{}", n % keys),
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
    herald_worker::resume_function(&client, "limited")
        .await
        .unwrap();
    let mut killed: HashMap<u32, u64> = HashMap::new();
    let began = Instant::now();
    // The first two kills and step-downs 1.5 s apart, then a kill every 5 s and a step-down
    // every 3 s: at the default scale the jobs take at least 6 s (the shared limit of 10 at
    // 200 ms a job), so two of each happen while jobs run however fast the machine is.
    let (mut next_kill, mut next_step_down, mut step_downs) = (
        began + Duration::from_millis(1_500),
        began + Duration::from_millis(750),
        0,
    );
    let subjects = [
        "$JS.API.STREAM.LEADER.STEPDOWN.KV_flowchaos-runs",
        "$JS.API.STREAM.LEADER.STEPDOWN.FLOWCHAOS_EVENTS",
    ];
    // 300 s, or 10 jobs/s for a larger run: the shared limit of 10 at 200 ms a job is 50
    // jobs/s, and a worker killed every 5 s keeps about half of it in dead leases (10 s).
    let limit = Duration::from_secs(300.max(u64::from(jobs) / 10));
    let mut audit = AuditLog::open(&js).await;
    let done = loop {
        let now = Instant::now();
        assert!(
            now - began < limit,
            "not every job was done within {limit:?}: {} done",
            audit.ended.len()
        );
        if now >= next_kill && killed.len() < kills as usize {
            let victim = workers.remove(killed.len() % workers.len());
            killed.insert(victim.pid(), now_us());
            drop(victim);
            workers.push(worker(&url));
            next_kill = now
                + if killed.len() < 2 {
                    Duration::from_millis(1_500)
                } else {
                    Duration::from_secs(5)
                };
        }
        if now >= next_step_down {
            let subject = subjects[step_downs % 2].to_owned();
            let stepped = client.nats().request(subject, "".into()).await.is_ok();
            if stepped {
                step_downs += 1;
            }
            next_step_down = now
                + match (stepped, step_downs) {
                    (false, _) => Duration::from_millis(500),
                    (true, 0..2) => Duration::from_millis(1_500),
                    (true, _) => Duration::from_secs(3),
                };
        }
        audit.read_new().await;
        if audit.ended.len() == jobs as usize {
            break std::mem::take(&mut audit.lines);
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
                audit.ended.len()
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
    // No slot left once the killed workers' leases (10 s) ran out.
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
