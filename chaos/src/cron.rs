//! The cron failure test: a cron trigger firing every second on a 3-node cluster while
//! worker replicas are SIGKILLed and replaced and the events stream's leader steps down.
//!
//! Every replica runs [`FUNCTION_ID`] (`*/1 * * * * *` in `Europe/Paris`; the binary
//! `cron-worker`), whose handler appends an [`Audit`] to `<ns>.audit.cron`. Afterwards the
//! harness reads every tick's run record and the audit, and reports, for each second of the
//! run: the tick's run is recorded (`ok`, or `skipped` because the previous tick's run was on
//! a killed replica), and how many times its handler ran; and the offset of every due time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use herald::{Client, Namespace};
use herald_local_nats::LocalNats;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::ChaosError;
use crate::replicas::{ReplicaSpec, Replicas};

/// The function every replica runs.
pub const FUNCTION_ID: &str = "every-second";
/// Its cron pattern.
pub const PATTERN: &str = "*/1 * * * * *";
/// Its time zone.
pub const ZONE: &str = "Europe/Paris";
/// The stream of audit records.
pub const AUDIT_STREAM: &str = "CRON_AUDIT";

/// What a tick's handler records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Audit {
    /// The run id (`ctx.event_id()`).
    pub run: String,
    /// The tick's due time, RFC 3339 with the zone's offset.
    pub due: String,
    /// The server's next fire time.
    pub next: String,
    /// The replica's pid.
    pub pid: u32,
    /// The attempt.
    pub attempt: u32,
}

/// The audit subject of a namespace.
pub fn audit_subject(namespace: &Namespace) -> String {
    format!("{}.audit.cron", namespace.as_str())
}

/// How the cron test runs.
#[derive(Debug, Clone)]
pub struct CronConfig {
    /// The `cron-worker` binary.
    pub worker_binary: PathBuf,
    /// How long ticks are checked.
    pub duration: Duration,
    /// Replicas running at once.
    pub replicas: usize,
    /// A replica is SIGKILLed and replaced this often.
    pub kill_interval: Duration,
    /// The events stream's leader steps down this often.
    pub step_down_interval: Duration,
    /// The seed of the choice of replicas.
    pub seed: u64,
}

/// What the cron test saw.
#[derive(Debug, Clone, Default)]
pub struct CronReport {
    /// Seconds checked (ticks due).
    pub ticks: usize,
    /// Ticks recorded `ok`.
    pub ok: usize,
    /// Ticks recorded `skipped` (the previous tick's run was still going), with the detail.
    pub skipped: Vec<(i64, String)>,
    /// Due seconds with no run record.
    pub missing: Vec<i64>,
    /// Runs whose handler ran more than once (run, times).
    pub repeated: Vec<(String, usize)>,
    /// Audit records whose due time has the wrong offset for the zone.
    pub wrong_offsets: Vec<String>,
    /// Replicas SIGKILLed.
    pub kills: usize,
    /// Leader step-downs that succeeded.
    pub step_downs: usize,
}

impl CronReport {
    /// What broke.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.missing.is_empty() {
            failures.push(format!(
                "{} of {} ticks have no run record: {:?}",
                self.missing.len(),
                self.ticks,
                self.missing
            ));
        }
        if !self.wrong_offsets.is_empty() {
            failures.push(format!(
                "due times in the wrong offset: {:?}",
                self.wrong_offsets
            ));
        }
        failures
    }
}

fn nats(action: &str) -> impl Fn(String) -> ChaosError + '_ {
    move |reason| ChaosError::Nats {
        action: action.to_owned(),
        reason,
    }
}

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

/// Runs the cron test.
pub async fn run(config: CronConfig) -> Result<CronReport, ChaosError> {
    let cluster = tokio::task::spawn_blocking(|| LocalNats::cluster(3))
        .await
        .map_err(|e| ChaosError::Task(e.to_string()))??;
    let url = cluster.url();
    let namespace = Namespace::new("cronchaos").map_err(|e| ChaosError::Config(e.to_string()))?;
    let client = Client::builder()
        .namespace(namespace.as_str())
        .connect(&url)
        .await?;
    let js = client.jetstream().clone();
    let setup = Instant::now() + Duration::from_secs(60);
    until_ok(setup, || async {
        client.provision().await.map_err(|e| e.to_string())
    })
    .await
    .map_err(nats("provisioning"))?;
    until_ok(setup, || async {
        js.get_or_create_stream(stream::Config {
            name: AUDIT_STREAM.to_owned(),
            subjects: vec![audit_subject(&namespace)],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(nats("creating the audit stream"))?;
    let logs = tempfile::Builder::new()
        .prefix("herald-cron-chaos-")
        .tempdir()
        .map_err(|source| ChaosError::Io {
            action: "creating a log folder".to_owned(),
            source,
        })?;
    let mut replicas = Replicas::new(ReplicaSpec {
        binary: config.worker_binary.clone(),
        server_url: url.clone(),
        namespace: namespace.as_str().to_owned(),
        ack_wait: Duration::from_secs(5),
        log_dir: logs.path().to_path_buf(),
    });
    for _ in 0..config.replicas {
        replicas.start()?;
    }
    until_ok(setup, || async {
        match herald_worker::cron::list(&client).await {
            Ok(list) if !list.is_empty() => Ok(()),
            Ok(_) => Err("no schedule yet".to_owned()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await
    .map_err(|reason| ChaosError::WorkersNotReady {
        reason,
        logs: replicas.live_log_tails(),
    })?;

    let mut report = CronReport::default();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let first_due = chrono::Utc::now().timestamp() + 2;
    let start = Instant::now();
    let mut next_kill = start + config.kill_interval;
    let mut next_step_down = start + config.step_down_interval;
    let events = namespace.events_stream();
    // The schedule of the chaos; these sleeps space actions, they synchronise nothing.
    while start.elapsed() < config.duration {
        let now = Instant::now();
        if now >= next_kill {
            if replicas.kill_random(&mut rng).is_some() {
                report.kills += 1;
            }
            replicas.start()?;
            next_kill += config.kill_interval;
        }
        if now >= next_step_down {
            let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{events}");
            let answer = client.nats().request(subject, "".into()).await;
            if answer.is_ok_and(|m| !String::from_utf8_lossy(&m.payload).contains("error")) {
                report.step_downs += 1;
            }
            next_step_down += config.step_down_interval;
        }
        replicas.check();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_due = chrono::Utc::now().timestamp() - 2;
    report.ticks = usize::try_from(last_due - first_due + 1).unwrap_or(0);

    // Runs of killed replicas come back after ack_wait (5 s): wait until every tick in the
    // window has a record, or 30 s.
    let cron_id = herald_worker::CronTrigger::new(PATTERN, Some(ZONE))
        .map_err(|e| ChaosError::Config(e.to_string()))?
        .id();
    let runs = js
        .get_key_value(namespace.runs_bucket())
        .await
        .map_err(|e| nats("opening the runs bucket")(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut records = BTreeMap::new();
    loop {
        for due in first_due..=last_due {
            if records.contains_key(&due) {
                continue;
            }
            // The run id names the next fire: one second after the due time.
            let run_id = format!("cron-{cron_id}-{}", due + 1);
            let key = herald::protocol::runs::run_key(FUNCTION_ID, &run_id);
            if let Ok(Some(value)) = runs.get(&key).await
                && let Ok(outcome) = serde_json::from_slice::<herald_worker::RunRecord>(&value)
            {
                records.insert(due, outcome);
            }
        }
        if records.len() >= report.ticks || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    replicas.term_all();
    let stop = Instant::now() + Duration::from_secs(60);
    while !replicas.all_stopped() && Instant::now() < stop {
        replicas.check();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for due in first_due..=last_due {
        match records.get(&due) {
            None => report.missing.push(due),
            Some(record) if record.status == herald_worker::RunStatus::Ok => report.ok += 1,
            Some(record) => report
                .skipped
                .push((due, record.detail.clone().unwrap_or_default())),
        }
    }
    let audits = read_audits(&js).await?;
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    let zone: chrono_tz::Tz = ZONE
        .parse()
        .map_err(|_| ChaosError::Config(ZONE.to_owned()))?;
    for audit in &audits {
        *runs.entry(audit.run.clone()).or_default() += 1;
        let Ok(due) = chrono::DateTime::parse_from_rfc3339(&audit.due) else {
            report.wrong_offsets.push(audit.due.clone());
            continue;
        };
        let expected = due
            .with_timezone(&zone)
            .fixed_offset()
            .offset()
            .local_minus_utc();
        if due.offset().local_minus_utc() != expected {
            report.wrong_offsets.push(audit.due.clone());
        }
    }
    report.repeated = runs.into_iter().filter(|(_, n)| *n > 1).collect();
    drop(cluster);
    Ok(report)
}

async fn read_audits(js: &jetstream::Context) -> Result<Vec<Audit>, ChaosError> {
    let mut stream = js
        .get_stream(AUDIT_STREAM)
        .await
        .map_err(|e| nats("reading the audit")(e.to_string()))?;
    let total = stream
        .info()
        .await
        .map_err(|e| nats("reading the audit")(e.to_string()))?
        .state
        .messages;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .map_err(|e| nats("reading the audit")(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| nats("reading the audit")(e.to_string()))?;
    let mut audits = Vec::new();
    let mut read = 0;
    while read < total {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(Ok(message))) = next else {
            return Err(nats("reading the audit")(format!(
                "read {read} of {total} records"
            )));
        };
        read += 1;
        if let Ok(audit) = serde_json::from_slice(&message.payload) {
            audits.push(audit);
        }
    }
    Ok(audits)
}
