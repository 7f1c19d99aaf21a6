//! Reading, redriving and purging dead letters (protocol section 6).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::pull};
use bytes::Bytes;
use futures::StreamExt;
use herald::Client;

use herald::protocol::header::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_FUNCTION, DLQ_REASON, DLQ_STEP, DLQ_TIME,
};

/// One dead letter as stored in `NS_DLQ`.
#[derive(Debug, Clone)]
pub struct DeadLetterEntry {
    /// Its sequence in `NS_DLQ`.
    pub sequence: u64,
    /// The function it was dead-lettered for.
    pub function: String,
    /// `herald-dlq-reason`.
    pub reason: String,
    /// `herald-dlq-error`, decoded.
    pub error: String,
    /// `herald-dlq-attempts`.
    pub attempts: String,
    /// `herald-dlq-step`, if any.
    pub step: Option<String>,
    /// `herald-dlq-time`.
    pub time: String,
    /// `ce-type` of the event.
    pub event_type: String,
    /// `ce-id` of the event.
    pub event_id: String,
    /// When the event happened: its `ce-time`, else the time its UUIDv7 `ce-id` was made
    /// (protocol section 4); `None` for an event with neither.
    pub event_time: Option<String>,
    /// Every header.
    pub headers: HeaderMap,
    /// The event's body.
    pub payload: Bytes,
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this function's.
    pub function: Option<String>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only dead-lettered at or after this RFC 3339 time (text comparison of UTC times).
    pub since: Option<String>,
    /// Only dead-lettered before this RFC 3339 time.
    pub until: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl DeadLetterFilter {
    fn matches(&self, entry: &DeadLetterEntry) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == entry.reason)
            && self
                .event_type
                .as_ref()
                .is_none_or(|t| *t == entry.event_type)
            && self
                .since
                .as_ref()
                .is_none_or(|s| entry.time.as_str() >= s.as_str())
            && self
                .until
                .as_ref()
                .is_none_or(|u| entry.time.as_str() < u.as_str())
    }
}

/// A dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
#[error("dead letters: cannot {action}: {source}")]
pub struct DeadLetterError {
    action: String,
    #[source]
    source: async_nats::Error,
}

fn dlq_error<E: Into<async_nats::Error>>(
    action: impl Into<String>,
) -> impl FnOnce(E) -> DeadLetterError {
    let action = action.into();
    move |source| DeadLetterError {
        action,
        source: source.into(),
    }
}

fn text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| herald::headers::decode_value(v.as_str()).unwrap_or_else(|| v.to_string()))
        .unwrap_or_default()
}

fn entry(sequence: u64, headers: HeaderMap, payload: Bytes) -> DeadLetterEntry {
    DeadLetterEntry {
        sequence,
        function: text(&headers, DLQ_FUNCTION),
        reason: text(&headers, DLQ_REASON),
        error: text(&headers, DLQ_ERROR),
        attempts: text(&headers, DLQ_ATTEMPTS),
        step: headers.get(DLQ_STEP).map(|v| v.to_string()),
        time: text(&headers, DLQ_TIME),
        event_type: text(&headers, herald::headers::TYPE),
        event_id: text(&headers, herald::headers::ID),
        event_time: herald::headers::event_time(
            headers
                .get(herald::headers::TIME)
                .map(|time| time.as_str().to_owned()),
            &text(&headers, herald::headers::ID),
        ),
        headers,
        payload,
    }
}

/// The dead letters of a namespace.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    client: Client,
}

impl DeadLetters {
    /// The dead letters of `client`'s namespace.
    pub fn new(client: Client) -> DeadLetters {
        DeadLetters { client }
    }

    fn subject(&self, function: Option<&str>) -> String {
        match function {
            Some(function) => self.client.namespace().dlq_subject(function),
            None => self.client.namespace().dlq_wildcard(),
        }
    }

    /// The dead letters matching `filter`, oldest first.
    pub async fn list(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<DeadLetterEntry>, DeadLetterError> {
        let js = self.client.jetstream();
        let stream_name = self.client.namespace().dlq_stream();
        let subject = self.subject(filter.function.as_deref());
        let stream = js
            .get_stream(&stream_name)
            .await
            .map_err(dlq_error(format!("open {stream_name}")))?;
        let mut counts = stream
            .info_with_subjects(&subject)
            .await
            .map_err(dlq_error("count dead letters"))?;
        let mut total = 0usize;
        while let Some(count) = counts.next().await {
            total += count.map_err(dlq_error("count dead letters"))?.1;
        }
        let mut found = Vec::new();
        if total == 0 {
            return Ok(found);
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject.clone(),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(dlq_error("read dead letters"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(dlq_error("read dead letters"))?;
        let mut read = 0;
        while read < total {
            let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
            let Ok(Some(message)) = next else { break };
            let message = message.map_err(dlq_error("read dead letters"))?;
            read += 1;
            let Ok(info) = message.info() else { continue };
            let sequence = info.stream_sequence;
            let pending = info.pending;
            let item = entry(
                sequence,
                message.headers.clone().unwrap_or_default(),
                message.payload.clone(),
            );
            if filter.matches(&item) {
                found.push(item);
                if filter.limit.is_some_and(|limit| found.len() >= limit) {
                    break;
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(found)
    }

    /// One dead letter by its `NS_DLQ` sequence.
    pub async fn get(&self, sequence: u64) -> Result<DeadLetterEntry, DeadLetterError> {
        let stream_name = self.client.namespace().dlq_stream();
        let stream = self
            .client
            .jetstream()
            .get_stream(&stream_name)
            .await
            .map_err(dlq_error(format!("open {stream_name}")))?;
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(dlq_error(format!("read dead letter {sequence}")))?;
        Ok(entry(sequence, message.headers, message.payload))
    }

    /// Redrives one dead letter: publishes its body (or `replacement`) and original headers
    /// to `ns.redrive.F` with `Nats-Msg-Id: redrive:F:<seq>` and `herald-redrive-of`, waits
    /// for the ack, then deletes the dead letter. Run again after an interruption, it
    /// neither loses nor duplicates (the redrive is deduplicated by its message id).
    pub async fn redrive(
        &self,
        letter: &DeadLetterEntry,
        replacement: Option<Bytes>,
    ) -> Result<(), DeadLetterError> {
        let mut headers = herald::protocol::copy_headers_except_transport(
            &letter.headers,
            &herald::protocol::header::DLQ_HEADERS,
        );
        headers.insert(
            herald::protocol::header::NATS_MSG_ID,
            herald::protocol::msg_id::redrive(&letter.function, letter.sequence),
        );
        headers.insert(
            herald::protocol::header::REDRIVE_OF,
            letter.sequence.to_string(),
        );
        let subject = self.client.namespace().redrive_subject(&letter.function);
        let payload = replacement.unwrap_or_else(|| letter.payload.clone());
        self.client
            .jetstream()
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(headers),
            )
            .await
            .map_err(dlq_error(format!(
                "redrive dead letter {}",
                letter.sequence
            )))?
            .await
            .map_err(dlq_error(format!(
                "redrive dead letter {}",
                letter.sequence
            )))?;
        self.delete(letter.sequence).await
    }

    /// Deletes one dead letter.
    pub async fn delete(&self, sequence: u64) -> Result<(), DeadLetterError> {
        let stream_name = self.client.namespace().dlq_stream();
        let stream = self
            .client
            .jetstream()
            .get_stream(&stream_name)
            .await
            .map_err(dlq_error(format!("open {stream_name}")))?;
        match stream.delete_message(sequence).await {
            Ok(_) => Ok(()),
            // Already gone (a previous, interrupted run deleted it): nothing to do.
            Err(error) if error.to_string().contains("no message found") => Ok(()),
            Err(error) => Err(dlq_error(format!("delete dead letter {sequence}"))(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(event_headers: &[(&str, &str)]) -> DeadLetterEntry {
        let mut headers = HeaderMap::new();
        for (name, value) in event_headers {
            headers.insert(*name, *value);
        }
        headers.insert(DLQ_FUNCTION, "billing");
        headers.insert(DLQ_TIME, "2026-11-26T09:00:00.000000Z");
        entry(7, headers, Bytes::from_static(b"{}"))
    }

    /// Events of current SDKs carry no `ce-time` (their UUIDv7 id tells it), older ones and
    /// events with a chosen id do; a dead letter tells the event's time either way.
    #[test]
    fn a_dead_letter_tells_when_its_event_happened() {
        // A UUIDv7 made at 2026-11-25T07:31:01.490Z.
        let id = "01a2119d-74f2-7a1c-9f0e-2b3c4d5e6f70";
        let current = dead_letter(&[("ce-id", id), ("ce-type", "order.placed")]);
        assert_eq!(
            current.event_time.as_deref(),
            Some("2026-11-25T07:31:01.490000Z")
        );
        assert_eq!(current.time, "2026-11-26T09:00:00.000000Z");
        let older = dead_letter(&[
            ("ce-id", id),
            ("ce-time", "2026-11-25T07:31:01.490068Z"),
            ("ce-datacontenttype", "application/json"),
        ]);
        assert_eq!(
            older.event_time.as_deref(),
            Some("2026-11-25T07:31:01.490068Z")
        );
        let chosen = dead_letter(&[("ce-id", "signup-42")]);
        assert_eq!(chosen.event_time, None);
    }
}
