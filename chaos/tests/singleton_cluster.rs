//! The singleton failure test (issue 14): 20 concurrent publishers send 160 requests on one
//! key to two singleton functions, `single_skip` (`SingletonMode::Skip`) and `single_cancel`
//! (`SingletonMode::Cancel`), handled by `single-worker` processes on a 3-node cluster; a
//! worker is SIGKILLed while it is in the middle of a `single_skip` run (and replaced), and
//! the runs bucket's leader steps down twice. Each run does 4 steps of 250 ms, each step
//! auditing its start and end (run, key, step, start/end, worker).
//!
//! What a kill does to a held lock (protocol section 16, `worker/src/runtime/singleton.rs`):
//! the lock `_singleton.<F>.<key>` has no TTL and no lease, so the killed worker's run keeps
//! it. Its message comes back after `ack_wait` (5 s) to a surviving worker, which finds its
//! own run the holder and resumes it (the finished steps are not run again). Meanwhile:
//! - skip mode: every request on the key is recorded `skipped` (the holder's record is not
//!   final), so the audit shows no run at all between the kill and the resumed run;
//! - cancel mode: the next request cancels the dead holder (its cancel record) and takes the
//!   lock over at once; the dead run's redelivery is then settled `cancelled`.
//!
//! Asserted from the audit and the run records: in skip mode at most one run active at any
//! instant (a run counts as active from its first step's start to its last step's end, a
//! killed worker's open step until the kill), every request `ok` or `skipped` (detail
//! `singleton: …`), the run held by the killed worker resumed elsewhere and `ok`. In cancel
//! mode the new run starts at once and the replaced one may finish the step it is in
//! (section 16), so replaced runs' last steps may overlap the holder's (the most active at
//! once is printed, not bounded); asserted: a replaced run ends at most one step after its
//! replacement started, a run that did not end all its steps is recorded `cancelled` (detail
//! `singleton: replaced by run …`), every request `ok` or `cancelled`. No singleton lock is
//! left at the end.
#![allow(clippy::unwrap_used, missing_docs)]

use herald_chaos::now_us;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use herald::{Client, PublishOptions};
use herald_chaos::pace::{self, WorkerProcess, patiently, step_down, wait_for_consumer};
use herald_chaos::single::{
    AUDIT_STREAM, Audit, CANCEL, Request, SKIP, STEP_MS, STEPS, audit_subject,
};
use herald_local_nats::LocalNats;
use herald_worker::{RunRecord, RunStatus};

const PUBLISHERS: u32 = 20;
const EACH: u32 = 8;
const KEY: &str = "tenant-1";

/// A step of a run: start, end (Unix microseconds) and its number.
type Step = (u64, u64, u32);
/// A run (its event id) and its steps, in order.
type Run = (String, Vec<Step>);

fn worker(url: &str) -> WorkerProcess {
    WorkerProcess::start(env!("CARGO_BIN_EXE_single-worker"), url, &[]).unwrap()
}

fn id(publisher: u32, n: u32) -> String {
    format!("req-{publisher:02}-{n}")
}

/// One publisher: a request every 1.5 s, the publishers spread over the first 1.5 s.
async fn publish(client: Client, publisher: u32) {
    tokio::time::sleep(Duration::from_millis(u64::from(publisher) * 75)).await; // the spread
    for n in 0..EACH {
        let request = Request {
            key: KEY.to_owned(),
            publisher,
            n,
        };
        let options = PublishOptions {
            id: Some(id(publisher, n)),
            ..Default::default()
        };
        patiently("publishing", 30, || async {
            client.publish_with(&request, options.clone()).await?.await
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await; // the publisher's rate
    }
}

/// Every audit line so far (an ordered consumer read to the end).
async fn audit(js: &async_nats::jetstream::Context) -> Vec<Audit> {
    let read = || async {
        let stream = js.get_stream(AUDIT_STREAM).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let mut pending = consumer.cached_info().num_pending;
        let mut all = Vec::new();
        if pending == 0 {
            return Ok(all);
        }
        let mut messages = consumer.messages().await?;
        while pending > 0 {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next());
            let Ok(Some(message)) = next.await else {
                break;
            };
            let message = message?;
            pending = message.info()?.pending;
            all.push(serde_json::from_slice(&message.payload)?);
        }
        Ok::<_, async_nats::Error>(all)
    };
    patiently("reading the audit", 30, read).await.unwrap()
}

/// A run's step intervals (start, end) by the audit; a step left open by a killed worker
/// ends at the kill, one left open otherwise (an audit that failed, retried) at its start.
fn steps_of(lines: &[&Audit], killed: &HashMap<u32, u64>) -> Vec<Step> {
    let mut open: HashMap<(u32, u32), u64> = HashMap::new();
    let mut steps = Vec::new();
    let mut sorted = lines.to_vec();
    sorted.sort_by_key(|a| (a.at_us, a.start));
    for line in sorted {
        if line.start {
            if let Some(start) = open.insert((line.step, line.worker), line.at_us) {
                steps.push((start, start, line.step));
            }
        } else if let Some(start) = open.remove(&(line.step, line.worker)) {
            steps.push((start, line.at_us, line.step));
        }
    }
    for ((step, worker), start) in open {
        let end = killed.get(&worker).copied().unwrap_or(start).max(start);
        steps.push((start, end, step));
    }
    steps.sort_unstable();
    steps
}

/// Per run of `function`: its step intervals, ordered by the run's first start.
fn runs_of(lines: &[Audit], function: &str, killed: &HashMap<u32, u64>) -> Vec<Run> {
    let mut by_run: BTreeMap<&str, Vec<&Audit>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.function == function) {
        assert_eq!(line.key, KEY);
        by_run.entry(&line.run).or_default().push(line);
    }
    let mut runs: Vec<_> = by_run
        .into_iter()
        .map(|(run, lines)| (run.to_owned(), steps_of(&lines, killed)))
        .collect();
    runs.sort_by_key(|(_, steps)| steps[0].0);
    runs
}

/// The most runs active at once, each from its first step's start to its last step's end.
fn most_active(runs: &[Run]) -> usize {
    let mut events: Vec<(u64, i32)> = Vec::new();
    for (_, steps) in runs {
        let start = steps[0].0;
        let end = steps.iter().map(|s| s.1).max().unwrap();
        events.push((start, 1));
        events.push((end, -1));
    }
    // Ends before starts at the same instant.
    events.sort_unstable();
    let (mut now, mut most) = (0, 0);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_runs_one_at_a_time_through_a_kill_and_step_downs() {
    let cluster = tokio::task::spawn_blocking(|| LocalNats::cluster(3))
        .await
        .unwrap()
        .unwrap();
    let url = cluster.url();
    let client = Client::builder()
        .namespace("singlechaos")
        .connect(&url)
        .await
        .unwrap();
    patiently("provisioning", 60, || client.provision())
        .await
        .unwrap();
    let js = client.jetstream().clone();
    let config = async_nats::jetstream::stream::Config {
        name: AUDIT_STREAM.to_owned(),
        subjects: vec![audit_subject(client.namespace())],
        num_replicas: 3,
        ..Default::default()
    };
    patiently("the audit stream", 30, || {
        js.get_or_create_stream(config.clone())
    })
    .await
    .unwrap();
    let mut workers = vec![worker(&url), worker(&url)];
    for function in [SKIP, CANCEL] {
        wait_for_consumer(&js, "SINGLECHAOS_EVENTS", function)
            .await
            .unwrap();
    }
    let began = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| tokio::spawn(publish(client.clone(), p)))
        .collect();

    // The chaos while publishing: a kill of the worker in the middle of a `single_skip` run
    // (not in its last step) from 3 s on; step-downs of the runs bucket at 5 s and 9 s.
    let mut killed: HashMap<u32, u64> = HashMap::new();
    let mut victim_run: Option<String> = None;
    let mut step_downs = 0;
    loop {
        let elapsed = began.elapsed();
        assert!(elapsed < Duration::from_secs(60), "the chaos took too long");
        let publishing = publishers.iter().any(|p| !p.is_finished());
        if !publishing && victim_run.is_some() && step_downs >= 2 {
            break;
        }
        if step_downs < 2
            && elapsed >= Duration::from_secs(5 + 4 * step_downs)
            && step_down(&client, "KV_singlechaos-runs").await
        {
            step_downs += 1;
        }
        if victim_run.is_none() && elapsed >= Duration::from_secs(3) {
            let lines = audit(&js).await;
            let runs = runs_of(&lines, SKIP, &killed);
            let open = lines
                .iter()
                .filter(|l| l.function == SKIP && l.start)
                .find(|l| {
                    l.step + 1 < STEPS
                        && !lines.iter().any(|e| {
                            !e.start && e.run == l.run && e.step == l.step && e.worker == l.worker
                        })
                });
            if let Some(open) = open
                && let Some(at) = workers.iter().position(|w| w.pid() == open.worker)
            {
                let victim = workers.remove(at);
                killed.insert(victim.pid(), now_us());
                drop(victim); // SIGKILL in the middle of the run
                workers.push(worker(&url));
                victim_run = Some(open.run.clone());
                println!(
                    "killed worker {} in step {} of {} ({} runs so far)",
                    open.worker,
                    open.step,
                    open.run,
                    runs.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the chaos' pace
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let published_in = began.elapsed();
    let victim_run = victim_run.unwrap();

    // Settled: nothing pending or unacked on either function.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut settled = true;
        for function in [SKIP, CANCEL] {
            let (pending, ack_pending) = patiently("the consumer", 30, || {
                pace::backlog(&js, "SINGLECHAOS_EVENTS", function)
            })
            .await
            .unwrap();
            settled &= pending == 0 && ack_pending == 0;
        }
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "not settled within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await; // polling the consumers
    }
    let lines = audit(&js).await;

    let settled_in = began.elapsed();

    // Every request's run record (`<F>.<event id>` in the runs bucket).
    let kv = js
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let mut statuses: BTreeMap<(&str, String), (RunStatus, String)> = BTreeMap::new();
    for function in [SKIP, CANCEL] {
        for p in 0..PUBLISHERS {
            for n in 0..EACH {
                let id = id(p, n);
                let key = format!("{function}.{id}");
                let stored = patiently("reading a run record", 30, || kv.get(key.clone()))
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{key} has no record"));
                let record: RunRecord = serde_json::from_slice(&stored).unwrap();
                statuses.insert(
                    (function, id),
                    (record.status, record.detail.unwrap_or_default()),
                );
            }
        }
    }
    let count = |function: &str, status: RunStatus| {
        statuses
            .iter()
            .filter(|((f, _), (s, _))| *f == function && *s == status)
            .count()
    };

    // Skip mode: one run at a time; the rest skipped; the victim's run resumed elsewhere.
    let skip_runs = runs_of(&lines, SKIP, &killed);
    let skip_most = most_active(&skip_runs);
    for pair in skip_runs.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let end = before.1.iter().map(|s| s.1).max().unwrap();
        assert!(
            end <= after.1[0].0,
            "{} started while {} was active ({} us overlap)",
            after.0,
            before.0,
            end - after.1[0].0
        );
    }
    for ((function, id), (status, detail)) in &statuses {
        if *function != SKIP {
            continue;
        }
        let ran = skip_runs.iter().any(|(run, _)| run == id);
        match status {
            RunStatus::Ok => assert!(ran, "{id} is ok but never ran"),
            RunStatus::Skipped => {
                assert!(!ran, "{id} is skipped but ran");
                assert!(detail.starts_with("singleton: "), "{id}: {detail}");
            }
            other => panic!("{SKIP} {id} is {other:?}: {detail}"),
        }
    }
    let victim = lines
        .iter()
        .filter(|l| l.function == SKIP && l.run == victim_run)
        .collect::<Vec<_>>();
    let kill_at = *killed.values().next().unwrap();
    let resumed_at = victim
        .iter()
        .filter(|l| l.at_us > kill_at && !killed.contains_key(&l.worker))
        .map(|l| l.at_us)
        .min();
    let resumed_at = resumed_at.unwrap_or_else(|| panic!("{victim_run} did not resume"));
    assert_eq!(
        statuses[&(SKIP, victim_run.clone())].0,
        RunStatus::Ok,
        "{victim_run} did not finish"
    );

    // Cancel mode: a replaced run finishes at most the step it was in.
    let cancel_runs = runs_of(&lines, CANCEL, &killed);
    let cancel_most = most_active(&cancel_runs);
    let mut longest_overlap_us = 0;
    for (at, (run, steps)) in cancel_runs.iter().enumerate() {
        let ended = lines
            .iter()
            .filter(|l| l.function == CANCEL && l.run == *run && !l.start)
            .map(|l| l.step)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let all_ended = ended == STEPS as usize;
        let (status, detail) = &statuses[&(CANCEL, run.clone())];
        if !all_ended {
            assert_eq!(
                *status,
                RunStatus::Cancelled,
                "{run} ended {ended} steps: {detail}"
            );
        }
        let Some((next, next_steps)) = cancel_runs.get(at + 1) else {
            continue;
        };
        let replaced_at = next_steps[0].0;
        let after: Vec<_> = steps.iter().filter(|s| s.1 > replaced_at).collect();
        assert!(
            after.len() <= 1,
            "{run} ran {} steps after {next} replaced it: {after:?}",
            after.len()
        );
        if let Some(step) = after.first() {
            longest_overlap_us = longest_overlap_us.max(step.1 - replaced_at);
        }
    }
    for ((function, id), (status, detail)) in &statuses {
        if *function != CANCEL {
            continue;
        }
        match status {
            RunStatus::Ok => {
                assert!(
                    cancel_runs.iter().any(|(run, _)| run == id),
                    "{id} never ran"
                );
            }
            RunStatus::Cancelled => {
                assert!(
                    detail.contains("singleton: replaced by run"),
                    "{id}: {detail}"
                );
            }
            other => panic!("{CANCEL} {id} is {other:?}: {detail}"),
        }
    }

    let total = (PUBLISHERS * EACH) as usize;
    println!(
        "{total} requests from {PUBLISHERS} publishers in {published_in:?}, settled in {settled_in:?}; {} audit lines; killed {killed:?} \
         in {victim_run}, resumed {} ms later; {step_downs} step-downs; skip: {} ran ({} ok, {} skipped), most active \
         {skip_most}; cancel: {} ran ({} ok, {} cancelled), most active {cancel_most}, a replaced \
         run's longest overlap {} ms (a step is {STEP_MS} ms)",
        lines.len(),
        (resumed_at - kill_at) / 1000,
        skip_runs.len(),
        count(SKIP, RunStatus::Ok),
        count(SKIP, RunStatus::Skipped),
        cancel_runs.len(),
        count(CANCEL, RunStatus::Ok),
        count(CANCEL, RunStatus::Cancelled),
        longest_overlap_us / 1000
    );
    assert_eq!(skip_most, 1, "skip mode");
    assert_eq!(
        count(SKIP, RunStatus::Ok) + count(SKIP, RunStatus::Skipped),
        total
    );
    assert_eq!(
        count(CANCEL, RunStatus::Ok) + count(CANCEL, RunStatus::Cancelled),
        total
    );
    assert!(count(SKIP, RunStatus::Ok) >= 3, "skip mode ran too few");
    assert!(
        count(SKIP, RunStatus::Skipped) >= total / 2,
        "skip mode skipped too few"
    );
    assert!(
        count(CANCEL, RunStatus::Ok) >= 1,
        "no cancel-mode run finished"
    );
    assert!(
        count(CANCEL, RunStatus::Cancelled) >= 10,
        "cancel mode cancelled too few"
    );

    // No lock left.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut keys = kv.keys().await.unwrap();
        let mut locks = Vec::new();
        while let Some(Ok(key)) = keys.next().await {
            if key.starts_with("_singleton.") {
                locks.push(key);
            }
        }
        if locks.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "locks left: {locks:?}");
        tokio::time::sleep(Duration::from_millis(500)).await; // the last release
    }
}
