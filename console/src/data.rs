//! Reads the pages need beyond the library's stores: activity records (protocol section
//! 15) and events of `NS_EVENTS`, each a bounded read of an ordered consumer.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use herald::protocol::header;
use herald_worker::activity::ActivityRecord;

use crate::error::PageError;

/// How long one message of a bounded read may take before the read stops.
const NEXT_WITHIN: Duration = Duration::from_secs(2);

/// One stored event.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) event_type: String,
    pub(crate) id: String,
    pub(crate) time: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

impl StoredEvent {
    pub(crate) fn new(
        sequence: u64,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> StoredEvent {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let id = text(header::ID);
        let time =
            herald::headers::event_time(Some(text(header::TIME)).filter(|t| !t.is_empty()), &id)
                .unwrap_or_default();
        StoredEvent {
            sequence,
            subject,
            event_type: text(header::TYPE),
            id,
            time,
            headers,
            payload,
        }
    }

    /// From a message of an ordered consumer on `NS_EVENTS`.
    pub(crate) fn from_message(message: &jetstream::Message) -> StoredEvent {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        StoredEvent::new(
            sequence,
            message.subject.to_string(),
            message.headers.clone().unwrap_or_default(),
            message.payload.clone(),
        )
    }
}

/// Reads an ordered consumer on `stream` until nothing is pending (or `limit` messages).
pub(crate) async fn read_bounded(
    client: &herald::Client,
    stream: &str,
    filter_subject: String,
    deliver_policy: DeliverPolicy,
    limit: usize,
) -> Result<Vec<jetstream::Message>, PageError> {
    let stream = client.jetstream().get_stream(stream).await?;
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject,
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let pending = consumer.info().await?.num_pending;
    let mut found = Vec::new();
    if pending == 0 {
        return Ok(found);
    }
    let mut messages = consumer.messages().await?;
    while found.len() < limit {
        let Ok(Some(message)) = tokio::time::timeout(NEXT_WITHIN, messages.next()).await else {
            break;
        };
        let message = message.map_err(PageError::nats)?;
        let last = message.info().map_or(true, |i| i.pending == 0);
        found.push(message);
        if last {
            break;
        }
    }
    Ok(found)
}

/// The latest activity record of every run (of `function`, or of all).
pub(crate) async fn latest_activity(
    client: &herald::Client,
    function: Option<&str>,
) -> Result<Vec<ActivityRecord>, PageError> {
    let namespace = client.namespace();
    let subject = match function {
        Some(function) => namespace.activity_subject(function, ">"),
        None => namespace.activity_wildcard(),
    };
    let messages = read_bounded(
        client,
        &namespace.activity_stream(),
        subject,
        DeliverPolicy::LastPerSubject,
        50_000,
    )
    .await?;
    Ok(messages
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect())
}

/// The latest state of every run (of `function`, or of all): its newest activity record,
/// or its run record in `ns-runs` (`F.<event-key>`) when that is newer. Fast first attempts
/// that succeed publish no activity (protocol section 18): their run record tells them, or
/// for a plain run with none, the consumer's ack floor ([`plain_runs`]).
pub(crate) async fn latest_runs(
    client: &herald::Client,
    function: Option<&str>,
) -> Result<Vec<ActivityRecord>, PageError> {
    let mut latest: std::collections::HashMap<String, ActivityRecord> =
        latest_activity(client, function)
            .await?
            .into_iter()
            .map(|r| (r.run.clone(), r))
            .collect();
    let bucket = client.namespace().runs_bucket();
    let subject = format!("$KV.{bucket}.{}.*", function.unwrap_or("*"));
    let prefix = format!("$KV.{bucket}.");
    let messages = read_bounded(
        client,
        &herald::protocol::kv_stream(&bucket),
        subject,
        DeliverPolicy::LastPerSubject,
        50_000,
    )
    .await?;
    for message in messages {
        let Ok(record) = serde_json::from_slice::<herald_worker::RunRecord>(&message.payload)
        else {
            continue;
        };
        let Some(run) = message.subject.as_str().strip_prefix(&prefix) else {
            continue;
        };
        let Some((function, event_key)) = run.split_once('.') else {
            continue;
        };
        let at_ms = crate::util::parse_ms(&record.finished_at).unwrap_or(0);
        if latest.get(run).is_some_and(|a| a.at_ms > at_ms) {
            continue;
        }
        let previous = latest.remove(run);
        let status = serde_json::to_value(record.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        latest.insert(
            run.to_owned(),
            ActivityRecord {
                kind: herald_worker::activity::ActivityKind::Finished,
                function: function.to_owned(),
                run: run.to_owned(),
                // A hashed event key (`h-…`) is not the id; the activity record knows it.
                event_id: previous
                    .as_ref()
                    .map_or_else(|| event_key.to_owned(), |p| p.event_id.clone()),
                event_type: previous
                    .as_ref()
                    .map(|p| p.event_type.clone())
                    .unwrap_or_default(),
                attempt: previous.as_ref().map_or(1, |p| p.attempt),
                stream_seq: previous.as_ref().map_or(0, |p| p.stream_seq),
                at_ms,
                started_ms: None,
                outcome: status,
                error: record.detail,
                retry_in_ms: None,
                step: None,
                trace_id: previous.and_then(|p| p.trace_id),
            },
        );
    }
    plain_runs(client, function, &mut latest).await?;
    Ok(latest.into_values().collect())
}

/// The newest events below a function's ack floor scanned for plain runs.
const PLAIN_SCAN: u64 = 5_000;

/// Adds the plain runs (protocol section 7) among the newest events its consumer has acked
/// up to its ack floor that have neither an activity record nor a run record: a plain first
/// delivery whose handler succeeded without steps is acked without a record, so the ack
/// floor is what tells that it finished. At most [`PLAIN_SCAN`] events per function.
async fn plain_runs(
    client: &herald::Client,
    function: Option<&str>,
    latest: &mut std::collections::HashMap<String, ActivityRecord>,
) -> Result<(), PageError> {
    let namespace = client.namespace();
    let events = namespace.events_stream();
    let stream = client.jetstream().get_stream(&events).await?;
    let names: Vec<String> = match function {
        Some(function) => vec![function.to_owned()],
        None => {
            let mut names = Vec::new();
            let mut listed = stream.consumer_names();
            while let Some(name) = listed.next().await {
                names.push(name.map_err(PageError::nats)?);
            }
            names
        }
    };
    let prefix = herald::protocol::events_prefix(namespace);
    for name in names {
        let Ok(mut consumer) = stream.get_consumer::<pull::Config>(&name).await else {
            continue;
        };
        let info = consumer.info().await?;
        let floor = info.ack_floor.stream_sequence;
        let config = &info.config;
        let mut filters = config.filter_subjects.clone();
        if !config.filter_subject.is_empty() {
            filters.push(config.filter_subject.clone());
        }
        // Function consumers only: durable, acked one by one, filtering event subjects
        // (a tail or a replay reads through an ephemeral one).
        if floor == 0
            || config.durable_name.is_none()
            || config.ack_policy != jetstream::consumer::AckPolicy::Explicit
            || !filters.iter().any(|f| f.starts_with(&prefix))
        {
            continue;
        }
        let start = floor.saturating_sub(PLAIN_SCAN - 1).max(1);
        let messages = read_bounded(
            client,
            &events,
            namespace.events_wildcard(),
            DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            usize::try_from(floor - start + 1).unwrap_or(usize::MAX),
        )
        .await?;
        for message in &messages {
            let event = StoredEvent::from_message(message);
            if event.sequence > floor {
                break;
            }
            if event.id.is_empty()
                || !filters
                    .iter()
                    .any(|f| crate::util::pattern_matches(f, &event.subject))
            {
                continue;
            }
            let run = herald::protocol::runs::run_key(
                &name,
                &herald::protocol::runs::event_key(&event.id),
            );
            if latest.contains_key(&run) {
                continue;
            }
            let at_ms = message.info().map_or(0, |i| {
                u64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
            });
            latest.insert(
                run.clone(),
                ActivityRecord {
                    kind: herald_worker::activity::ActivityKind::Finished,
                    function: name.clone(),
                    run,
                    event_id: event.id,
                    event_type: event.event_type,
                    attempt: 1,
                    stream_seq: event.sequence,
                    at_ms,
                    started_ms: None,
                    outcome: Some("ok".to_owned()),
                    error: None,
                    retry_in_ms: None,
                    step: None,
                    trace_id: None,
                },
            );
        }
    }
    Ok(())
}

/// Every activity record of one run, oldest first.
pub(crate) async fn run_activity(
    client: &herald::Client,
    function: &str,
    event_key: &str,
) -> Result<Vec<ActivityRecord>, PageError> {
    let namespace = client.namespace();
    let messages = read_bounded(
        client,
        &namespace.activity_stream(),
        namespace.activity_subject(function, event_key),
        DeliverPolicy::All,
        1_000,
    )
    .await?;
    Ok(messages
        .iter()
        .filter_map(|m| serde_json::from_slice(&m.payload).ok())
        .collect())
}

/// The last `limit` events whose type matches `pattern` among the last `scan` stored
/// events, newest first; with `id`, only events with that `ce-id`.
pub(crate) async fn recent_events(
    client: &herald::Client,
    pattern: &str,
    id: Option<&str>,
    limit: usize,
    scan: u64,
) -> Result<Vec<StoredEvent>, PageError> {
    let namespace = client.namespace();
    let name = namespace.events_stream();
    let mut stream = client.jetstream().get_stream(&name).await?;
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok(Vec::new());
    }
    let start = last.saturating_sub(scan).max(1);
    let messages = read_bounded(
        client,
        &name,
        namespace.event_subject(pattern),
        DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        scan as usize,
    )
    .await?;
    let mut events: Vec<StoredEvent> = messages
        .iter()
        .map(StoredEvent::from_message)
        .filter(|e| id.is_none_or(|id| e.id == id))
        .collect();
    events.reverse();
    events.truncate(limit);
    Ok(events)
}

/// One event by its `NS_EVENTS` sequence.
pub(crate) async fn event_at(
    client: &herald::Client,
    sequence: u64,
) -> Result<StoredEvent, PageError> {
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await?;
    let message = stream
        .get_raw_message(sequence)
        .await
        .map_err(|e| PageError::not_found(format!("no event #{sequence}: {e}")))?;
    Ok(StoredEvent::new(
        sequence,
        message.subject.to_string(),
        message.headers,
        message.payload,
    ))
}
