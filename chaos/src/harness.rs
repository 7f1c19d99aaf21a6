//! The chaos run: a 3-node cluster, worker replicas as child processes, events published
//! while replicas and the consumer's leader node are killed, then the checks.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use herald::protocol::{self, runs};
use herald::{Client, Namespace};
use herald_local_nats::LocalNats;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinHandle;

use crate::event::{EFFECTS_STREAM, EFFECTS_SUBJECTS, FUNCTION_ID};
use crate::publisher::{self, Published};
use crate::replicas::{ReplicaSpec, Replicas};
use crate::report::{Outage, Report};
use crate::verify;
use crate::{ChaosError, LOGS_KEPT_ENV};

/// Nodes in the cluster.
const NODES: usize = 3;
/// How often the chaos loop looks at the replicas and the schedule.
const TICK: Duration = Duration::from_millis(100);
/// How often the drain is polled.
const DRAIN_POLL: Duration = Duration::from_millis(250);
/// How long setting up (provisioning, the consumer's creation) may take.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);
/// The SIGTERM of one replica, as a fraction of the chaos phase.
const SIGTERM_AT: f64 = 0.2;
/// The start of the leader outage, as a fraction of the chaos phase.
const OUTAGE_AT: f64 = 0.35;
/// Publishing ends at this fraction of the chaos phase, so the last events meet chaos too.
const PUBLISH_WINDOW: f64 = 0.8;
/// How long after its planned start the outage may still look for the consumer's leader.
const LEADER_LOOKUP: Duration = Duration::from_secs(15);

/// What a chaos run does; [`Config::new`] gives the defaults of the test.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Valid events to publish (each must get an effect and a run record).
    pub events: usize,
    /// Invalid events to publish (each must be dead-lettered exactly once).
    pub invalid: usize,
    /// The chaos phase: publishing (its first 80 %), SIGKILLs, the SIGTERM and the outage.
    pub duration: Duration,
    /// Time between two SIGKILLs of a random replica (each replaced at once).
    pub kill_interval: Duration,
    /// Replicas of the worker running at any time.
    pub replicas: usize,
    /// Seed of the random choices (which replica to kill).
    pub seed: u64,
    /// How long the consumer's leader node stays down.
    pub outage: Duration,
    /// How long to wait, after the chaos, for every event to be handled.
    pub drain_timeout: Duration,
    /// The namespace.
    pub namespace: String,
    /// The `chaos-worker` binary.
    pub worker_binary: PathBuf,
    /// Where replica logs go; a temporary folder (kept if the run fails) when `None`.
    pub log_dir: Option<PathBuf>,
    /// The function's `ack_wait`.
    pub ack_wait: Duration,
}

impl Config {
    /// 3,000 valid and 20 invalid events, 45 s of chaos, a SIGKILL every 6 s, 3 replicas,
    /// a 10 s outage, a 60 s drain timeout, `ack_wait` 5 s, namespace `chaos`, a seed from
    /// the clock.
    pub fn new(worker_binary: impl Into<PathBuf>) -> Config {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Config {
            events: 3000,
            invalid: 20,
            duration: Duration::from_secs(45),
            kill_interval: Duration::from_secs(6),
            replicas: 3,
            seed,
            outage: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(60),
            namespace: "chaos".to_owned(),
            worker_binary: worker_binary.into(),
            log_dir: None,
            ack_wait: Duration::from_secs(5),
        }
    }

    fn check(&self) -> Result<(), ChaosError> {
        let bad = |reason: String| Err(ChaosError::Config(reason));
        if self.replicas == 0 {
            return bad("at least one replica is needed".to_owned());
        }
        if self.kill_interval.is_zero() {
            return bad("the kill interval must be longer than 0".to_owned());
        }
        if self.duration.mul_f64(1.0 - OUTAGE_AT) < self.outage {
            return bad(format!(
                "the outage ({:?}) starts at {:.0} % of the chaos phase and must end within it: \
                 use a duration of at least {:.0} s",
                self.outage,
                OUTAGE_AT * 100.0,
                (self.outage.as_secs_f64() / (1.0 - OUTAGE_AT)).ceil()
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return bad("ack_wait must be at least 1 s".to_owned());
        }
        Ok(())
    }
}

/// The `chaos-worker` binary next to the running executable (as cargo builds them).
pub fn worker_binary_next_to_current_exe() -> Result<PathBuf, ChaosError> {
    let exe = std::env::current_exe().map_err(|source| ChaosError::Io {
        action: "finding the current executable".to_owned(),
        source,
    })?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let binary = dir.join(format!("chaos-worker{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(ChaosError::WorkerBinaryMissing(binary))
    }
}

fn task_error(error: &tokio::task::JoinError) -> ChaosError {
    ChaosError::Task(error.to_string())
}

fn lock(cluster: &Mutex<LocalNats>) -> Result<std::sync::MutexGuard<'_, LocalNats>, ChaosError> {
    cluster
        .lock()
        .map_err(|_| ChaosError::Task("the cluster's lock was poisoned".to_owned()))
}

/// Polls `attempt` until it succeeds or `deadline` passes; the last error on timeout.
async fn until_ok<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => return Err(error),
            // Polling with a deadline; the pause only spaces the attempts.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The leader outage, step by step.
enum OutageState {
    Waiting,
    Down {
        node: usize,
        since: Instant,
    },
    Restarting {
        since: Instant,
        handle: JoinHandle<Result<(), herald_local_nats::Error>>,
    },
    Finished,
}

/// Runs the chaos test and returns what it measured. An `Err` means the harness itself could
/// not run (no cluster, no worker binary, …); Herald's failures are in
/// [`Report::failures`].
pub async fn run(config: Config) -> Result<Report, ChaosError> {
    config.check()?;
    let namespace =
        Namespace::new(&config.namespace).map_err(|e| ChaosError::Config(e.to_string()))?;
    if !config.worker_binary.is_file() {
        return Err(ChaosError::WorkerBinaryMissing(
            config.worker_binary.clone(),
        ));
    }
    let cluster = tokio::task::spawn_blocking(|| LocalNats::cluster(NODES))
        .await
        .map_err(|e| task_error(&e))??;
    let url = cluster.url();
    let mut node_names = Vec::with_capacity(NODES);
    for index in 0..NODES {
        let node_url = cluster.node_url(index)?;
        let connection = async_nats::connect(&node_url)
            .await
            .map_err(|e| ChaosError::Nats {
                action: format!("connecting to node {index} at {node_url}"),
                reason: e.to_string(),
            })?;
        node_names.push(connection.server_info().server_name);
    }
    tracing::info!(url, nodes = ?node_names, "3-node cluster up");
    let cluster = Arc::new(Mutex::new(cluster));

    // Default stream settings: the SDK provisions min(3, cluster size) replicas, R3 here,
    // which is checked below rather than set, so a regression of that default shows.
    let client = Client::builder()
        .namespace(namespace.as_str())
        .source("urn:herald:service:chaos")
        .connect(&url)
        .await?;
    let jetstream = client.jetstream().clone();
    let setup_deadline = Instant::now() + SETUP_DEADLINE;
    until_ok(setup_deadline, || async {
        client.provision().await.map_err(|e| e.to_string())
    })
    .await
    .map_err(|reason| ChaosError::Nats {
        action: format!("provisioning namespace {namespace}"),
        reason,
    })?;
    let mut stream_replicas = Vec::new();
    for name in [
        namespace.advisories_stream(),
        namespace.events_stream(),
        namespace.dlq_stream(),
        protocol::kv_stream(&namespace.schemas_bucket()),
        protocol::kv_stream(&namespace.runs_bucket()),
    ] {
        let replicas = verify::stream_replicas(&jetstream, &name).await?;
        stream_replicas.push((name, replicas));
    }
    until_ok(setup_deadline, || async {
        jetstream
            .get_or_create_stream(stream::Config {
                name: EFFECTS_STREAM.to_owned(),
                subjects: vec![EFFECTS_SUBJECTS.to_owned()],
                num_replicas: NODES,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|reason| ChaosError::Nats {
        action: format!("creating stream {EFFECTS_STREAM}"),
        reason,
    })?;

    let (log_dir, temp_logs) = match &config.log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| ChaosError::Io {
                action: format!("creating {}", dir.display()),
                source,
            })?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("herald-chaos-")
                .tempdir()
                .map_err(|source| ChaosError::Io {
                    action: "creating a temporary log folder".to_owned(),
                    source,
                })?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let mut replicas = Replicas::new(ReplicaSpec {
        binary: config.worker_binary.clone(),
        server_url: url.clone(),
        namespace: namespace.as_str().to_owned(),
        ack_wait: config.ack_wait,
        log_dir: log_dir.clone(),
    });
    for _ in 0..config.replicas {
        replicas.start()?;
    }
    // The consumer delivers new events only: publish once it exists.
    loop {
        replicas.check();
        match verify::consumer(&jetstream, &namespace).await {
            Ok(_) => break,
            Err(error) if Instant::now() >= setup_deadline => {
                return Err(ChaosError::WorkersNotReady {
                    reason: error.to_string(),
                    logs: replicas.live_log_tails(),
                });
            }
            // Polling with a deadline; the pause only spaces the attempts.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }

    let mut report = Report {
        events: config.events,
        invalid: config.invalid,
        replicas: config.replicas,
        seed: config.seed,
        duration: config.duration,
        kill_interval: config.kill_interval,
        drain_timeout: config.drain_timeout,
        stream_replicas,
        ..Default::default()
    };
    let start = Instant::now();
    let mut timeline = Vec::new();
    let mut note = |text: String| {
        tracing::info!(at = ?start.elapsed(), "{text}");
        timeline.push((start.elapsed(), text));
    };
    note(format!(
        "{} replicas ready; publishing {} valid and {} invalid events over {:.1} s",
        config.replicas,
        config.events,
        config.invalid,
        config.duration.mul_f64(PUBLISH_WINDOW).as_secs_f64()
    ));
    let mut publisher = tokio::spawn(publisher::publish(
        client.clone(),
        publisher::plan(config.events, config.invalid),
        config.duration.mul_f64(PUBLISH_WINDOW),
    ));

    // The chaos phase. The sleeps here are the schedule of the chaos, not synchronisation.
    let mut rng = StdRng::seed_from_u64(config.seed);
    let end = start + config.duration;
    let mut next_kill = start + config.kill_interval;
    let term_at = start + config.duration.mul_f64(SIGTERM_AT);
    let outage_at = start + config.duration.mul_f64(OUTAGE_AT);
    let mut termed = false;
    let mut outage = Outage::default();
    let mut state = OutageState::Waiting;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for _ in 0..replicas.check() {
            let (number, pid) = replicas.start()?;
            note(format!(
                "a replica EXITED ON ITS OWN; started replica {number} (pid {pid}) instead"
            ));
        }
        let now = Instant::now();
        if now >= next_kill && now < end {
            next_kill += config.kill_interval;
            if let Some((killed, killed_pid)) = replicas.kill_random(&mut rng) {
                let (number, pid) = replicas.start()?;
                note(format!(
                    "SIGKILL replica {killed} (pid {killed_pid}); started replica {number} (pid {pid})"
                ));
            }
        }
        if !termed && now >= term_at {
            termed = true;
            if let Some((termed_replica, termed_pid)) = replicas.term_random(&mut rng) {
                let (number, pid) = replicas.start()?;
                note(format!(
                    "SIGTERM replica {termed_replica} (pid {termed_pid}); started replica {number} (pid {pid})"
                ));
            }
        }
        state = match state {
            OutageState::Waiting if now >= outage_at => {
                match leader_node(&jetstream, &namespace, &node_names).await {
                    Ok(node) => {
                        for (stream, problem) in
                            colocate(&jetstream, &namespace, &node_names[node]).await
                        {
                            note(format!(
                                "could not move the leader of {stream} to {}: {problem}",
                                node_names[node]
                            ));
                        }
                        outage.led = led_by(&jetstream, &namespace, &node_names[node]).await;
                        let pid = lock(&cluster)?.pids().get(node).copied().flatten();
                        match pid {
                            Some(pid) => {
                                let signalled = i32::try_from(pid)
                                    .map_err(|_| nix::errno::Errno::ESRCH)
                                    .and_then(|raw| kill(Pid::from_raw(raw), Signal::SIGKILL));
                                if let Err(error) = signalled {
                                    tracing::warn!(pid, %error, "SIGKILL of a node failed");
                                }
                                // Reaps the killed process (it is gone, so this is quick).
                                lock(&cluster)?.stop_node(node)?;
                                let name = node_names[node].clone();
                                note(format!(
                                    "SIGKILL node {name} (pid {pid}), leader of consumer {FUNCTION_ID}"
                                ));
                                outage.node = Some(name);
                                OutageState::Down {
                                    node,
                                    since: Instant::now(),
                                }
                            }
                            None => {
                                outage.problem = Some(format!("node {node} was not running"));
                                OutageState::Finished
                            }
                        }
                    }
                    Err(error) if now < outage_at + LEADER_LOOKUP => {
                        tracing::info!(%error, "looking for the consumer's leader");
                        OutageState::Waiting
                    }
                    Err(error) => {
                        outage.problem = Some(format!(
                            "the consumer's leader was not found within {LEADER_LOOKUP:?}: {error}"
                        ));
                        OutageState::Finished
                    }
                }
            }
            OutageState::Down { node, since } if now >= since + config.outage => {
                note(format!("restarting node {}", node_names[node]));
                let cluster = Arc::clone(&cluster);
                let handle = tokio::task::spawn_blocking(move || match cluster.lock() {
                    Ok(mut cluster) => cluster.start_node(node),
                    Err(poisoned) => poisoned.into_inner().start_node(node),
                });
                OutageState::Restarting { since, handle }
            }
            OutageState::Restarting { since, handle } if handle.is_finished() => {
                match handle.await.map_err(|e| task_error(&e))? {
                    Ok(()) => {
                        let took = since.elapsed();
                        outage.duration = Some(took);
                        note(format!(
                            "node back and ready, {:.1} s after its SIGKILL",
                            took.as_secs_f64()
                        ));
                    }
                    Err(error) => {
                        outage.problem = Some(format!("restarting the node failed: {error}"));
                    }
                }
                OutageState::Finished
            }
            other => other,
        };
        if now >= end && matches!(state, OutageState::Finished) {
            break;
        }
    }
    report.chaos_time = start.elapsed();
    note("chaos over; waiting for the drain".to_owned());

    // The drain: poll until every valid event has an effect, every invalid one a dead
    // letter, and the consumer has nothing pending.
    let drain_start = Instant::now();
    let drain_deadline = drain_start + config.drain_timeout;
    let published = match tokio::time::timeout_at(drain_deadline.into(), &mut publisher).await {
        Ok(result) => result.map_err(|e| task_error(&e))?,
        Err(_) => {
            publisher.abort();
            Published {
                failures: vec![format!(
                    "publishing had not finished {:?} after the chaos",
                    config.drain_timeout
                )],
                ..Default::default()
            }
        }
    };
    note(format!(
        "publishing had taken {:.1} s: {} valid, {} invalid stored, {} retried tries",
        published.took.as_secs_f64(),
        published.valid.len(),
        published.invalid.len(),
        published.retries
    ));
    let valid_ids: Vec<String> = (0..config.events as u64).map(publisher::valid_id).collect();
    let invalid_by_seq: HashMap<u64, String> = published
        .invalid
        .iter()
        .map(|(id, seq)| (*seq, id.clone()))
        .collect();
    let mut effects_seen = 0;
    let mut effects_done = false;
    let mut dead_letters_seen = 0;
    let mut dead_letters_done = invalid_by_seq.is_empty();
    loop {
        for _ in 0..replicas.check() {
            let (number, pid) = replicas.start()?;
            note(format!(
                "a replica EXITED ON ITS OWN; started replica {number} (pid {pid}) instead"
            ));
        }
        if !effects_done
            && let Ok(count) = verify::stream_messages(&jetstream, EFFECTS_STREAM).await
            && count >= config.events as u64
            && count != effects_seen
            && let Ok(read) = verify::effects(&jetstream).await
        {
            effects_seen = count;
            effects_done = valid_ids.iter().all(|id| read.counts.contains_key(id));
        }
        if !dead_letters_done
            && let Ok(count) = verify::stream_messages(&jetstream, &namespace.dlq_stream()).await
            && count >= invalid_by_seq.len() as u64
            && count != dead_letters_seen
            && let Ok((by_seq, _)) = verify::dead_letters(&jetstream, &namespace).await
        {
            dead_letters_seen = count;
            dead_letters_done = invalid_by_seq.keys().all(|seq| by_seq.contains_key(seq));
        }
        let idle = matches!(verify::consumer(&jetstream, &namespace).await,
            Ok((state, _)) if state.pending == 0 && state.ack_pending == 0);
        if effects_done && dead_letters_done && idle {
            report.drain_time = Some(drain_start.elapsed());
            note("drained: every event handled, the consumer idle".to_owned());
            break;
        }
        if Instant::now() >= drain_deadline {
            note(format!(
                "NOT drained within {:?} (effects complete: {effects_done}, dead letters complete: \
                 {dead_letters_done}, consumer idle: {idle})",
                config.drain_timeout
            ));
            break;
        }
        // Polling with a deadline; the pause only spaces the polls.
        tokio::time::sleep(DRAIN_POLL).await;
    }

    // The checks, on fresh reads.
    let read_deadline = Instant::now() + Duration::from_secs(30);
    let verify::Effects {
        counts: effects,
        unreadable,
        redelivered,
    } = until_ok(read_deadline, || async {
        verify::effects(&jetstream).await.map_err(|e| e.to_string())
    })
    .await
    .map_err(|reason| ChaosError::Nats {
        action: "reading the effects".to_owned(),
        reason,
    })?;
    let (dead_letters, dead_letters_without_seq) = until_ok(read_deadline, || async {
        verify::dead_letters(&jetstream, &namespace)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|reason| ChaosError::Nats {
        action: "reading the dead letters".to_owned(),
        reason,
    })?;
    let records = until_ok(read_deadline, || async {
        verify::run_records(&jetstream, &namespace)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|reason| ChaosError::Nats {
        action: "reading the run records".to_owned(),
        reason,
    })?;
    if let Ok((state, _)) = verify::consumer(&jetstream, &namespace).await {
        report.consumer = state;
    }

    let valid_set: HashSet<&str> = valid_ids.iter().map(String::as_str).collect();
    let seq_of: HashMap<&str, u64> = published
        .valid
        .iter()
        .map(|(id, seq)| (id.as_str(), *seq))
        .collect();
    report.effects_total = effects.values().sum();
    report.unknown_effects = unreadable
        + effects
            .iter()
            .filter(|(id, _)| !valid_set.contains(id.as_str()))
            .map(|(_, n)| n)
            .sum::<usize>();
    for id in &valid_ids {
        match effects.get(id) {
            Some(&count) => {
                report.effects_distinct += 1;
                if count > 1 {
                    report.events_with_duplicates += 1;
                    report.duplicate_effects += count - 1;
                }
            }
            None => report.missing_effects.push(id.clone()),
        }
        let key = runs::run_key(FUNCTION_ID, &runs::event_key(id));
        match records.get(&key).map(String::as_str) {
            Some("ok") => report.run_records_ok += 1,
            Some(status) => report
                .run_records_other
                .push((id.clone(), status.to_owned())),
            // A plain first delivery that succeeded is acked without a record (protocol
            // section 7): its proof is the consumer's ack floor, and no redelivery of it
            // ran the handler.
            None if effects.get(id) == Some(&1)
                && !redelivered.contains(id)
                && seq_of
                    .get(id.as_str())
                    .is_some_and(|seq| *seq <= report.consumer.ack_floor) =>
            {
                report.plain_runs_acked += 1;
            }
            None => report.run_records_missing.push(id.clone()),
        }
    }
    let valid_by_seq: HashMap<u64, &str> = published
        .valid
        .iter()
        .map(|(id, seq)| (*seq, id.as_str()))
        .collect();
    report.dead_letters =
        dead_letters.values().map(Vec::len).sum::<usize>() + dead_letters_without_seq;
    report.unknown_dead_letters = dead_letters_without_seq;
    for (seq, letters) in &dead_letters {
        if let Some(id) = valid_by_seq.get(seq) {
            let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
            report
                .valid_dead_lettered
                .push(((*id).to_owned(), reasons.join(",")));
        } else if !invalid_by_seq.contains_key(seq) {
            report.unknown_dead_letters += letters.len();
        }
    }
    let mut invalid: Vec<(&u64, &String)> = invalid_by_seq.iter().collect();
    invalid.sort();
    for (seq, id) in invalid {
        let letters = dead_letters.get(seq).map(Vec::as_slice).unwrap_or_default();
        match letters.len() {
            0 => report.invalid_missing.push(id.clone()),
            1 if letters[0].reason == herald_worker::DeadLetterReason::SchemaViolation.as_str() => {
                report.invalid_dead_lettered_once += 1;
            }
            1 => report
                .invalid_wrong_reason
                .push((id.clone(), letters[0].reason.clone())),
            n => report.invalid_duplicated.push((id.clone(), n)),
        }
    }
    report.published_valid = published.valid.len();
    report.published_invalid = published.invalid.len();
    report.publish_retries = published.retries;
    report.publish_failures = published.failures;

    // Every replica is stopped with SIGTERM and must exit 0.
    replicas.term_all();
    while !replicas.all_stopped() {
        replicas.check();
        // Polling the children's exit; TERM_DEADLINE bounds it.
        tokio::time::sleep(TICK).await;
    }
    note("every replica stopped".to_owned());
    report.kills = replicas.kills;
    report.replicas_started = replicas.started();
    report.self_exits = std::mem::take(&mut replicas.self_exits);
    report.sigterm = std::mem::take(&mut replicas.terms);
    report.final_stop = std::mem::take(&mut replicas.final_terms);
    report.outage = outage;
    report.timeline = timeline;
    report.log_dir = match temp_logs {
        Some(temp)
            if !report.failures().is_empty() || std::env::var_os(LOGS_KEPT_ENV).is_some() =>
        {
            Some(temp.keep())
        }
        Some(_) => None,
        None => Some(log_dir),
    };
    Ok(report)
}

/// Moves the leaders of the events stream and the runs bucket to `node`, the consumer's
/// leader about to be killed, so the outage puts the event's stream, its consumer and its
/// run records through a leader election at once. Returns what could not be moved.
async fn colocate(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
    node: &str,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for stream in [
        namespace.events_stream(),
        protocol::kv_stream(&namespace.runs_bucket()),
    ] {
        if let Err(problem) =
            verify::move_stream_leader(jetstream, &stream, node, Duration::from_secs(10)).await
        {
            problems.push((stream, problem));
        }
    }
    problems
}

/// What `node` leads: the function's consumer and which of the namespace's streams.
async fn led_by(jetstream: &jetstream::Context, namespace: &Namespace, node: &str) -> Vec<String> {
    let mut led = Vec::new();
    if let Ok((_, Some(leader))) = verify::consumer(jetstream, namespace).await
        && leader == node
    {
        led.push(format!("consumer {FUNCTION_ID}"));
    }
    for stream in [
        namespace.events_stream(),
        protocol::kv_stream(&namespace.runs_bucket()),
        namespace.dlq_stream(),
        namespace.advisories_stream(),
        EFFECTS_STREAM.to_owned(),
    ] {
        if let Ok(Some(leader)) = verify::stream_leader(jetstream, &stream).await
            && leader == node
        {
            led.push(stream);
        }
    }
    led
}

/// The index of the node that leads the function's consumer.
async fn leader_node(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
    node_names: &[String],
) -> Result<usize, String> {
    let lookup = verify::consumer(jetstream, namespace);
    let (_, leader) = tokio::time::timeout(Duration::from_secs(3), lookup)
        .await
        .map_err(|_| "the consumer info did not come within 3 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let leader = leader.ok_or_else(|| "the consumer has no leader right now".to_owned())?;
    node_names
        .iter()
        .position(|name| *name == leader)
        .ok_or_else(|| format!("the leader {leader} is none of the nodes {node_names:?}"))
}
