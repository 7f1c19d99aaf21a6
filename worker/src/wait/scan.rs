//! The look-back of a wait: the events of a type stored after the run's trigger and up to
//! a watermark, read in order, the first that matches wins.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
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
    let stream = client
        .jetstream()
        .get_stream_no_info(namespace.events_stream())
        .await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: namespace.event_subject(event_type),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(None);
    }
    let mut messages = consumer.messages().await?;
    loop {
        let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        else {
            return Err("the look-back read stalled".into());
        };
        let message = message?;
        let info = message.info()?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        if sequence > watermark {
            return Ok(None);
        }
        if let Some(found) = read_event(message.headers.as_ref(), &message.payload)
            && matches(&found.data, pointer, value)
        {
            return Ok(Some(Found { sequence, ..found }));
        }
        if pending == 0 || sequence == watermark {
            return Ok(None);
        }
    }
}
