//! Reading what the run left behind: effects, dead letters, run records, consumer state.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use herald::Namespace;
use herald::protocol::header::{DLQ_REASON, DLQ_STREAM_SEQ};

use crate::ChaosError;
use crate::event::{EFFECTS_STREAM, Effect, FUNCTION_ID};

/// How long one message of a stream read may take to arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The KV header that marks a deleted or purged key (JetStream's key-value convention).
const KV_OPERATION: &str = "KV-Operation";

fn nats_error(action: impl Into<String>) -> impl FnOnce(String) -> ChaosError {
    let action = action.into();
    move |reason| ChaosError::Nats { action, reason }
}

/// Every message of `stream` matching `filter` (all subjects when empty), or only the last
/// per subject, through a short-lived pull consumer without acks.
pub(crate) async fn read_stream(
    jetstream: &jetstream::Context,
    stream: &str,
    filter: &str,
    last_per_subject: bool,
) -> Result<Vec<jetstream::Message>, ChaosError> {
    let action = format!("reading stream {stream}");
    let handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let mut consumer: jetstream::consumer::PullConsumer = handle
        .create_consumer(pull::Config {
            deliver_policy: if last_per_subject {
                DeliverPolicy::LastPerSubject
            } else {
                DeliverPolicy::All
            },
            ack_policy: AckPolicy::None,
            filter_subject: filter.to_owned(),
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let total = usize::try_from(info.num_pending).unwrap_or(usize::MAX);
    let name = info.name.clone();
    let mut out = Vec::with_capacity(total.min(1 << 20));
    if total > 0 {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(1000)
            .messages()
            .await
            .map_err(|e| nats_error(&action)(e.to_string()))?;
        loop {
            let next = tokio::time::timeout(READ_TIMEOUT, messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => return Err(nats_error(&action)(error.to_string())),
                Ok(None) => return Err(nats_error(&action)("the consumer ended".to_owned())),
                Err(_) => {
                    return Err(nats_error(&action)(format!(
                        "no message within {READ_TIMEOUT:?} after {} of {total}",
                        out.len()
                    )));
                }
            };
            let pending = message.info().map(|i| i.pending).unwrap_or(0);
            out.push(message);
            if pending == 0 {
                break;
            }
        }
    }
    let _ = handle.delete_consumer(&name).await;
    Ok(out)
}

/// The effects recorded so far: how many times each event id.
pub(crate) async fn effects(jetstream: &jetstream::Context) -> Result<Effects, ChaosError> {
    let messages = read_stream(jetstream, EFFECTS_STREAM, "", false).await?;
    let mut effects = Effects::default();
    for message in &messages {
        match serde_json::from_slice::<Effect>(&message.payload) {
            Ok(effect) => {
                if effect.attempt > 1 {
                    effects.redelivered.insert(effect.event_id.clone());
                }
                *effects.counts.entry(effect.event_id).or_insert(0) += 1;
            }
            Err(_) => effects.unreadable += 1,
        }
    }
    Ok(effects)
}

/// The effects stream read back.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Effects per event id.
    pub(crate) counts: HashMap<String, usize>,
    /// Effects that could not be read.
    pub(crate) unreadable: usize,
    /// Events with an effect of an attempt after the first (a redelivery ran the handler).
    pub(crate) redelivered: std::collections::HashSet<String>,
}

/// How many messages a stream holds.
pub(crate) async fn stream_messages(
    jetstream: &jetstream::Context,
    stream: &str,
) -> Result<u64, ChaosError> {
    let action = format!("reading the info of stream {stream}");
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let info = handle
        .info()
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    Ok(info.state.messages)
}

/// How many replicas a stream has.
pub(crate) async fn stream_replicas(
    jetstream: &jetstream::Context,
    stream: &str,
) -> Result<usize, ChaosError> {
    let action = format!("reading the info of stream {stream}");
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let info = handle
        .info()
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    Ok(info.config.num_replicas)
}

/// The server name of a stream's leader.
pub(crate) async fn stream_leader(
    jetstream: &jetstream::Context,
    stream: &str,
) -> Result<Option<String>, ChaosError> {
    let action = format!("reading the info of stream {stream}");
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let info = handle
        .info()
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    Ok(info.cluster.as_ref().and_then(|c| c.leader.clone()))
}

/// Moves the leadership of `stream` to the server `preferred`: asks the leader to step down
/// in its favour (nats-server 2.11+) and polls until it leads, within `within`.
pub(crate) async fn move_stream_leader(
    jetstream: &jetstream::Context,
    stream: &str,
    preferred: &str,
    within: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let request = serde_json::json!({ "placement": { "preferred": preferred } });
    loop {
        let last = match stream_leader(jetstream, stream).await {
            Ok(Some(leader)) if leader == preferred => return Ok(()),
            Ok(leader) => {
                let answer: Result<jetstream::response::Response<serde_json::Value>, _> = jetstream
                    .request(format!("STREAM.LEADER.STEPDOWN.{stream}"), &request)
                    .await;
                match answer {
                    Ok(jetstream::response::Response::Err { error }) => error.to_string(),
                    Ok(jetstream::response::Response::Ok(_)) => {
                        format!("the leader is still {leader:?}")
                    }
                    Err(error) => error.to_string(),
                }
            }
            Err(error) => error.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        // Polling for the new leader; the pause only spaces the attempts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One dead letter, as the harness sees it.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) reason: String,
}

/// The dead letters in `NS_DLQ`, by the original's stream sequence.
pub(crate) async fn dead_letters(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
) -> Result<(BTreeMap<u64, Vec<DeadLetter>>, usize), ChaosError> {
    let messages = read_stream(jetstream, &namespace.dlq_stream(), "", false).await?;
    let mut by_seq: BTreeMap<u64, Vec<DeadLetter>> = BTreeMap::new();
    let mut without_seq = 0;
    for message in &messages {
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let reason = header(DLQ_REASON).unwrap_or_default();
        match header(DLQ_STREAM_SEQ).and_then(|s| s.parse::<u64>().ok()) {
            Some(seq) => by_seq.entry(seq).or_default().push(DeadLetter { reason }),
            None => without_seq += 1,
        }
    }
    Ok((by_seq, without_seq))
}

/// The function's run records in `ns-runs`: run key → status (`ok`, `dead_lettered`, or
/// `deleted` for a deleted key, `unreadable` for a value that is not a run record).
pub(crate) async fn run_records(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
) -> Result<HashMap<String, String>, ChaosError> {
    let bucket = namespace.runs_bucket();
    let store = jetstream
        .get_key_value(&bucket)
        .await
        .map_err(|e| nats_error(format!("opening bucket {bucket}"))(e.to_string()))?;
    // Run records are `F.<event-key>`, one token after the function id; steps and failure
    // positions have more tokens and are left out.
    let filter = format!("{}{FUNCTION_ID}.*", store.prefix);
    let messages = read_stream(jetstream, &store.stream_name, &filter, true).await?;
    let mut records = HashMap::new();
    for message in &messages {
        let Some(key) = message.subject.as_str().strip_prefix(&store.prefix) else {
            continue;
        };
        let deleted = message
            .headers
            .as_ref()
            .and_then(|h| h.get(KV_OPERATION))
            .is_some();
        let status = if deleted {
            "deleted".to_owned()
        } else {
            serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "unreadable".to_owned())
        };
        records.insert(key.to_owned(), status);
    }
    Ok(records)
}

/// The function consumer's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerState {
    /// Messages not yet delivered.
    pub pending: u64,
    /// Messages delivered and not yet acked.
    pub ack_pending: usize,
    /// Messages delivered more than once.
    pub redelivered: usize,
    /// The stream sequence up to which every message is acknowledged.
    pub ack_floor: u64,
}

/// The function's consumer info: its counts (with its redrive consumer's) and its leader's
/// server name.
pub(crate) async fn consumer(
    jetstream: &jetstream::Context,
    namespace: &Namespace,
) -> Result<(ConsumerState, Option<String>), ChaosError> {
    let stream = namespace.events_stream();
    let action = format!("reading the info of consumer {FUNCTION_ID} on {stream}");
    let handle = jetstream
        .get_stream(&stream)
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let info = handle
        .consumer_info(FUNCTION_ID)
        .await
        .map_err(|e| nats_error(&action)(e.to_string()))?;
    let mut state = ConsumerState {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending,
        redelivered: info.num_redelivered,
        ack_floor: info.ack_floor.stream_sequence,
    };
    // The function's redrive consumer, where it has one (protocol section 3): what is
    // pending there is the function's too.
    if let Ok(redrive) = handle
        .consumer_info(herald::protocol::redrive_consumer(FUNCTION_ID))
        .await
    {
        state.pending += redrive.num_pending;
        state.ack_pending += redrive.num_ack_pending;
        state.redelivered += redrive.num_redelivered;
    }
    Ok((state, info.cluster.as_ref().and_then(|c| c.leader.clone())))
}
