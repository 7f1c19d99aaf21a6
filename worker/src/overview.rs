//! Every function of a namespace as an operator sees it: its consumer's settings and
//! counters, its dead letters by reason, its pause and its cron schedules. Read from the
//! server alone (consumer info on `NS_EVENTS`, `NS_DLQ`, the cron schedules), so any process
//! with the namespace's credentials can show it: the console, `herald functions`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures::StreamExt;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::{DeadLetterFilter, DeadLetters};

mod flow;

pub use flow::{
    ConcurrencyInUse, FLOW_SCAN_LIMIT, FlowOverview, FlowScan, ParkedKey, TOP_PARKED_KEYS,
    scan_flow,
};

/// Reading the functions failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverviewError {
    /// `NS_EVENTS` or its consumers cannot be read (not provisioned, or NATS is away).
    #[error("cannot read the functions' consumers on {stream}: {source}")]
    Consumers {
        /// The events stream.
        stream: String,
        /// What NATS said.
        #[source]
        source: async_nats::Error,
    },
    /// The dead letters cannot be read.
    #[error(transparent)]
    DeadLetters(#[from] crate::DeadLetterError),
    /// The cron schedules cannot be read.
    #[error(transparent)]
    Schedules(#[from] crate::cron::ScheduleAdminError),
    /// The runs bucket cannot be read (for flow control).
    #[error("cannot read the runs bucket's stream {stream}: {source}")]
    Runs {
        /// The bucket's stream.
        stream: String,
        /// What NATS said.
        #[source]
        source: async_nats::Error,
    },
}

/// What [`list_functions_with`] reads besides the functions' consumers and schedules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverviewOptions {
    /// Count the dead letters by reason (reads `NS_DLQ`).
    pub dead_letters: bool,
    /// Read the flow-control state of the runs bucket ([`scan_flow`]; reads every run
    /// record, so costlier on a large bucket).
    pub flow: bool,
}

/// One cron trigger of a function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CronSummary {
    /// The pattern as the function gave it.
    pub schedule: String,
    /// The IANA zone, `None` for UTC.
    pub time_zone: Option<String>,
    /// The next tick (RFC 3339), when known.
    pub next: Option<String>,
}

/// One function: what its consumer says, its dead letters and schedules.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionOverview {
    /// The function id (its durable consumer's name).
    pub function: String,
    /// Its event types or patterns (the consumer's filters, without `ns.events.`).
    pub triggers: Vec<String>,
    /// Attempts per event (from `max_deliver`).
    pub attempts: u32,
    /// The consumer's `ack_wait`, in seconds.
    pub ack_wait_s: f64,
    /// Its cluster-wide concurrency (`max_ack_pending`).
    pub max_ack_pending: i64,
    /// Events stored and not yet delivered (the lag). This and the next three add up the
    /// function's consumer and its redrive consumer (protocol section 3).
    pub pending: u64,
    /// Delivered and not yet settled.
    pub ack_pending: usize,
    /// Delivered more than once and not yet settled.
    pub redelivered: usize,
    /// Open pull requests (idle workers).
    pub waiting_pulls: usize,
    /// The last `NS_EVENTS` sequence delivered to it (to compute events per second).
    pub delivered_stream_seq: u64,
    /// Its dead letters, by reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// When it last delivered (RFC 3339), if ever.
    pub last_active: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// When the pause ends (RFC 3339); `None` while paused means until resumed.
    pub paused_until: Option<String>,
    /// Its cron triggers.
    pub crons: Vec<CronSummary>,
    /// What the runs bucket shows of its flow control (limits in use, parked runs per key,
    /// skipped runs), when asked for ([`OverviewOptions::flow`]). Its limits' settings are
    /// set in its workers' code and are not stored in NATS.
    pub flow: Option<FlowOverview>,
}

impl FunctionOverview {
    /// Its dead letters, all reasons.
    pub fn dead_letter_count(&self) -> u64 {
        self.dead_letters.values().sum()
    }
}

fn format(time: impl Into<time::OffsetDateTime>) -> Option<String> {
    time.into().format(&Rfc3339).ok()
}

/// Every function of `client`'s namespace, by id. With `with_dead_letters` false the dead
/// letters are not read (cheaper, for a frequent refresh); flow control is not read.
pub async fn list_functions(
    client: &herald::Client,
    with_dead_letters: bool,
) -> Result<Vec<FunctionOverview>, OverviewError> {
    list_functions_with(
        client,
        OverviewOptions {
            dead_letters: with_dead_letters,
            flow: false,
        },
    )
    .await
}

/// Every function of `client`'s namespace, by id, with what `options` asks for.
pub async fn list_functions_with(
    client: &herald::Client,
    options: OverviewOptions,
) -> Result<Vec<FunctionOverview>, OverviewError> {
    let with_dead_letters = options.dead_letters;
    let namespace = client.namespace();
    let prefix = herald::protocol::events_prefix(namespace);
    let stream_name = namespace.events_stream();
    let consumers_error = |source: async_nats::Error| OverviewError::Consumers {
        stream: stream_name.clone(),
        source,
    };
    let stream = client
        .jetstream()
        .get_stream(&stream_name)
        .await
        .map_err(|e| consumers_error(e.into()))?;
    let mut letters: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    if with_dead_letters {
        let all = DeadLetters::new(client.clone())
            .list(&DeadLetterFilter::default())
            .await?;
        for letter in all {
            *letters
                .entry(letter.function)
                .or_default()
                .entry(letter.reason)
                .or_default() += 1;
        }
    }
    let schedules = crate::cron::list(client).await?;
    let mut flow = if options.flow {
        let scan = scan_flow(client).await?;
        let partial = !scan.complete;
        Some((scan.functions, partial))
    } else {
        None
    };
    let mut consumers = stream.consumers();
    let mut infos = Vec::new();
    // A function's redrive consumer (protocol section 3) is counted in its function's row.
    let mut redrives = std::collections::HashMap::new();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| consumers_error(e.into()))?;
        // Functions own durable consumers; ephemeral ones (a tail, a replay) are not.
        if info.config.durable_name.is_none() {
            continue;
        }
        match herald::protocol::redrive_consumer_function(&info.name) {
            Some(function) => {
                redrives.insert(function.to_owned(), info);
            }
            None => infos.push(info),
        }
    }
    let mut rows = Vec::new();
    for mut info in infos {
        if let Some(redrive) = redrives.remove(&info.name) {
            info.num_pending += redrive.num_pending;
            info.num_ack_pending += redrive.num_ack_pending;
            info.num_redelivered += redrive.num_redelivered;
            info.num_waiting += redrive.num_waiting;
            if redrive.delivered.last_active > info.delivered.last_active {
                info.delivered.last_active = redrive.delivered.last_active;
            }
        }
        let config = &info.config;
        let paused_until = match (info.paused, config.pause_until) {
            (true, Some(until)) => crate::pause_end(until).and_then(|end: SystemTime| format(end)),
            _ => None,
        };
        rows.push(FunctionOverview {
            triggers: config
                .filter_subjects
                .iter()
                .chain(std::iter::once(&config.filter_subject))
                .filter_map(|s| s.strip_prefix(&prefix).map(str::to_owned))
                .collect(),
            attempts: herald::protocol::attempts_of_max_deliver(config.max_deliver).unwrap_or(0),
            ack_wait_s: config.ack_wait.as_secs_f64(),
            max_ack_pending: config.max_ack_pending,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            waiting_pulls: info.num_waiting,
            delivered_stream_seq: info.delivered.stream_sequence,
            dead_letters: letters.remove(&info.name).unwrap_or_default(),
            last_active: info.delivered.last_active.and_then(format),
            paused: info.paused,
            paused_until,
            crons: schedules
                .iter()
                .filter(|s| s.function == info.name)
                .map(|s| CronSummary {
                    schedule: s.schedule.clone(),
                    time_zone: s.time_zone.clone(),
                    next: s.next.clone(),
                })
                .collect(),
            flow: flow.as_mut().map(|(functions, partial)| FlowOverview {
                partial: *partial,
                ..functions.remove(&info.name).unwrap_or_default()
            }),
            function: info.name.clone(),
        });
    }
    rows.sort_by(|a, b| a.function.cmp(&b.function));
    Ok(rows)
}
