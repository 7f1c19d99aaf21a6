//! The look-back of a wait: the events of a type stored after the run's trigger and up to
//! a watermark, read in order, the first that matches wins.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt;
use herald::protocol::header;

/// An event read from the log: its id and its JSON data.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) id: String,
    pub(crate) data: Bytes,
    /// Its stream sequence (0 when not known).
    pub(crate) sequence: u64,
}

/// The id and JSON data of a stored event, binary or structured mode.
pub(crate) fn read_event(
    headers: Option<&async_nats::HeaderMap>,
    payload: &Bytes,
) -> Option<Found> {
    let structured = headers
        .and_then(|h| h.get(header::CONTENT_TYPE))
        .is_some_and(|v| v.as_str().starts_with(header::STRUCTURED_CONTENT_TYPE));
    if structured {
        let body: serde_json::Value = serde_json::from_slice(payload).ok()?;
        let id = body.get("id")?.as_str()?.to_owned();
        let data = serde_json::to_vec(body.get("data")?).ok()?;
        return Some(Found {
            id,
            data: data.into(),
            sequence: 0,
        });
    }
    let id = headers?.get(header::ID)?.as_str().to_owned();
    Some(Found {
        id,
        data: payload.clone(),
        sequence: 0,
    })
}

/// Whether the JSON data carries `value` at `pointer`.
pub(crate) fn matches(data: &[u8], pointer: &str, value: &serde_json::Value) -> bool {
    serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|data| data.pointer(pointer).map(|found| found == value))
        .unwrap_or(false)
}

/// The first event of `event_type` with sequence in `(after, watermark]` whose `pointer`
/// equals `value`.
///
/// Read in two passes. An ordered consumer reads fast, but it is a one-replica consumer the
/// server places on any of the stream's peers, and a follower a little behind the leader
/// ends its view before the watermark (the leader's last sequence when the wait
/// registered): an event stored just before would be missed, and the matcher, which saw
/// it before the registration, would not resolve it either. So what that pass did not
/// reach is read from the leader, one message at a time (usually one request that finds
/// nothing more).
pub(crate) async fn scan(
    client: &herald::Client,
    event_type: &str,
    pointer: &str,
    value: &serde_json::Value,
    after: u64,
    watermark: u64,
) -> Result<Option<Found>, async_nats::Error> {
    if watermark <= after {
        return Ok(None);
    }
    let namespace = client.namespace();
    let subject = namespace.event_subject(event_type);
    let stream = client
        .jetstream()
        .get_stream_no_info(namespace.events_stream())
        .await?;
    let reached = match scan_consumer(&stream, &subject, pointer, value, after, watermark).await? {
        Pass::Found(found) => return Ok(Some(found)),
        Pass::Reached(sequence) => sequence,
    };
    let mut next = reached.max(after) + 1;
    while next <= watermark {
        let message = match stream
            .get_first_raw_message_by_subject(&subject, next)
            .await
        {
            Ok(message) => message,
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if message.sequence > watermark {
            return Ok(None);
        }
        if let Some(found) = read_event(Some(&message.headers), &message.payload)
            && matches(&found.data, pointer, value)
        {
            return Ok(Some(Found {
                sequence: message.sequence,
                ..found
            }));
        }
        next = message.sequence + 1;
    }
    Ok(None)
}

/// What the ordered consumer's pass ended with.
enum Pass {
    /// A match.
    Found(Found),
    /// No match up to this sequence (the last it read; 0 for none).
    Reached(u64),
}

/// The fast pass: an ordered consumer from `after + 1`, until the watermark or the end of
/// what its replica holds.
async fn scan_consumer(
    stream: &async_nats::jetstream::stream::Stream<()>,
    subject: &str,
    pointer: &str,
    value: &serde_json::Value,
    after: u64,
    watermark: u64,
) -> Result<Pass, async_nats::Error> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(Pass::Reached(0));
    }
    let mut messages = consumer.messages().await?;
    let mut reached = 0;
    loop {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            // Stalled: the leader reads the rest.
            return Ok(Pass::Reached(reached));
        };
        let message = message?;
        let info = message.info()?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if sequence > watermark {
            return Ok(Pass::Reached(watermark));
        }
        if let Some(found) = read_event(message.headers.as_ref(), &message.payload)
            && matches(&found.data, pointer, value)
        {
            return Ok(Pass::Found(Found { sequence, ..found }));
        }
        reached = sequence;
        if pending == 0 || sequence == watermark {
            return Ok(Pass::Reached(reached));
        }
    }
}
