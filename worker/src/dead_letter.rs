//! Dead letters (protocol section 6): building and publishing them, and the advisory sweeper.

use std::fmt;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use herald::{Client, headers};

/// Why an event was dead-lettered (`herald-dlq-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The last attempt returned an error.
    HandlerError,
    /// The handler returned a terminal error.
    TerminalError,
    /// The payload broke the event's schema.
    SchemaViolation,
    /// The payload is not JSON or not the handler's type.
    DecodeError,
    /// The last attempt ran out of time.
    Timeout,
    /// A delivery beyond the attempts budget (the worker crashed or hung on the last one).
    MaxDeliveries,
}

impl DeadLetterReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::HandlerError => "handler_error",
            DeadLetterReason::TerminalError => "terminal_error",
            DeadLetterReason::SchemaViolation => "schema_violation",
            DeadLetterReason::DecodeError => "decode_error",
            DeadLetterReason::Timeout => "timeout",
            DeadLetterReason::MaxDeliveries => "max_deliveries",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `herald-dlq-function`.
pub const DLQ_FUNCTION: &str = "herald-dlq-function";
/// `herald-dlq-reason`.
pub const DLQ_REASON: &str = "herald-dlq-reason";
/// `herald-dlq-error`.
pub const DLQ_ERROR: &str = "herald-dlq-error";
/// `herald-dlq-attempts`.
pub const DLQ_ATTEMPTS: &str = "herald-dlq-attempts";
/// `herald-dlq-stream`.
pub const DLQ_STREAM: &str = "herald-dlq-stream";
/// `herald-dlq-stream-seq`.
pub const DLQ_STREAM_SEQ: &str = "herald-dlq-stream-seq";
/// `herald-dlq-subject`.
pub const DLQ_SUBJECT: &str = "herald-dlq-subject";
/// `herald-dlq-time`.
pub const DLQ_TIME: &str = "herald-dlq-time";
/// `herald-dlq-step`: the step that failed, for runs with durable steps.
pub const DLQ_STEP: &str = "herald-dlq-step";

/// The most bytes of `herald-dlq-error`.
pub const MAX_ERROR_BYTES: usize = 1024;

/// One line of at most [`MAX_ERROR_BYTES`] bytes, cut at a character boundary.
pub(crate) fn one_line(error: &str) -> String {
    let mut line: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

/// What a dead letter says about the delivery it replaces.
#[derive(Debug)]
pub(crate) struct DeadLetter<'a> {
    pub(crate) function: &'a str,
    pub(crate) reason: DeadLetterReason,
    pub(crate) error: &'a str,
    pub(crate) attempts: u32,
    pub(crate) stream: &'a str,
    pub(crate) stream_sequence: u64,
    pub(crate) subject: &'a str,
    pub(crate) step: Option<&'a str>,
}

/// The headers of a dead letter: the original's minus `Nats-*`, plus `herald-dlq-*` and the
/// dead letter's own `Nats-Msg-Id`.
pub(crate) fn dead_letter_headers(
    original: Option<&HeaderMap>,
    letter: &DeadLetter<'_>,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    if let Some(original) = original {
        for (name, values) in original.iter() {
            let text = name.to_string();
            if text.len() >= 5 && text[..5].eq_ignore_ascii_case("nats-") {
                continue;
            }
            for value in values {
                map.append(name.clone(), value.clone());
            }
        }
    }
    map.insert(
        headers::NATS_MSG_ID,
        format!(
            "dlq:{}:{}:{}",
            letter.function, letter.stream, letter.stream_sequence
        ),
    );
    map.insert(DLQ_FUNCTION, letter.function);
    map.insert(DLQ_REASON, letter.reason.as_str());
    map.insert(
        DLQ_ERROR,
        headers::encode_text(&one_line(letter.error)).as_ref(),
    );
    map.insert(DLQ_ATTEMPTS, letter.attempts.to_string());
    map.insert(DLQ_STREAM, letter.stream);
    map.insert(DLQ_STREAM_SEQ, letter.stream_sequence.to_string());
    map.insert(DLQ_SUBJECT, letter.subject);
    map.insert(DLQ_TIME, headers::format_time(SystemTime::now()));
    if let Some(step) = letter.step {
        map.insert(DLQ_STEP, headers::encode_text(step).as_ref());
    }
    map
}

/// Publishes a dead letter and waits for the DLQ stream's ack.
pub(crate) async fn publish(
    client: &Client,
    original_headers: Option<&HeaderMap>,
    payload: Bytes,
    letter: &DeadLetter<'_>,
) -> Result<(), async_nats::Error> {
    let map = dead_letter_headers(original_headers, letter);
    let subject = client.namespace().dlq_subject(letter.function);
    let ack = client
        .jetstream()
        .send_publish(
            subject,
            PublishMessage::build().payload(payload).headers(map),
        )
        .await?;
    ack.await?;
    Ok(())
}

/// The JSON of a MAX_DELIVERIES advisory (the fields the sweeper needs).
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveriesAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

/// The advisory sweeper: dead-letters events that ran out of deliveries while no worker
/// could (protocol section 6). Runs until `stop` is cancelled.
pub(crate) async fn sweep(client: Client, stop: tokio_util::sync::CancellationToken) {
    use futures::StreamExt;
    let namespace = client.namespace().clone();
    let stream_name = namespace.advisories_stream();
    let events_stream = namespace.events_stream();
    let config = jetstream::consumer::pull::Config {
        durable_name: Some("herald-sweeper".to_owned()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: std::time::Duration::from_secs(30),
        ..Default::default()
    };
    let mut failures: u32 = 0;
    while !stop.is_cancelled() {
        let round = async {
            let consumer = client
                .jetstream()
                .create_consumer_on_stream(config.clone(), &stream_name)
                .await?;
            let mut batch = consumer
                .batch()
                .max_messages(16)
                .expires(std::time::Duration::from_secs(5))
                .messages()
                .await?;
            while let Some(advisory) = batch.next().await {
                let advisory = advisory?;
                handle_advisory(&client, &events_stream, &advisory).await;
            }
            Ok::<(), async_nats::Error>(())
        };
        let outcome = tokio::select! {
            outcome = round => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "dead-letter sweeper: pulling advisories failed; retrying");
                let pause = crate::backoff::Backoff {
                    initial: std::time::Duration::from_millis(100),
                    max: std::time::Duration::from_secs(5),
                    jitter: 0.2,
                }
                .delay(failures);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

async fn handle_advisory(client: &Client, events_stream: &str, message: &jetstream::Message) {
    use jetstream::AckKind;
    let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(&message.payload) {
        Ok(advisory) => advisory,
        Err(error) => {
            tracing::warn!(%error, "dead-letter sweeper: an advisory that is not JSON; dropped");
            let _ = message.ack().await;
            return;
        }
    };
    if advisory.stream != events_stream {
        let _ = message.ack().await;
        return;
    }
    let stream = match client.jetstream().get_stream(events_stream).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%error, "dead-letter sweeper: cannot open the events stream");
            let _ = message
                .ack_with(AckKind::Nak(Some(std::time::Duration::from_secs(5))))
                .await;
            return;
        }
    };
    let original = match stream.get_raw_message(advisory.stream_seq).await {
        Ok(original) => original,
        Err(error) => {
            // Gone from the log (max age): there is nothing left to dead-letter.
            tracing::warn!(%error, seq = advisory.stream_seq, function = %advisory.consumer,
                "dead-letter sweeper: the event that ran out of deliveries is no longer in the log");
            let _ = message.ack().await;
            return;
        }
    };
    let letter = DeadLetter {
        function: &advisory.consumer,
        reason: DeadLetterReason::MaxDeliveries,
        error: "ran out of deliveries (max_deliver) with no worker left to dead-letter it",
        attempts: advisory.deliveries.min(u64::from(u32::MAX)) as u32,
        stream: events_stream,
        stream_sequence: advisory.stream_seq,
        subject: original.subject.as_str(),
        step: None,
    };
    match publish(
        client,
        Some(&original.headers),
        original.payload.clone(),
        &letter,
    )
    .await
    {
        Ok(()) => {
            tracing::warn!(function = %advisory.consumer, seq = advisory.stream_seq,
                reason = "max_deliveries", "dead-lettered by the sweeper");
            let _ = message.ack().await;
        }
        Err(error) => {
            tracing::warn!(%error, "dead-letter sweeper: publishing the dead letter failed; will retry");
            let _ = message
                .ack_with(AckKind::Nak(Some(std::time::Duration::from_secs(5))))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        let long = "é".repeat(1000);
        let line = one_line(&long);
        assert!(line.len() <= MAX_ERROR_BYTES);
        assert!(line.ends_with("..."));
    }

    #[test]
    fn headers_drop_nats_controls_and_add_the_dlq_set() {
        let mut original = HeaderMap::new();
        original.insert("ce-id", "e1");
        original.insert("Nats-Msg-Id", "e1");
        original.insert("Nats-Expected-Stream", "X");
        let letter = DeadLetter {
            function: "f",
            reason: DeadLetterReason::Timeout,
            error: "took too long",
            attempts: 3,
            stream: "NS_EVENTS",
            stream_sequence: 9,
            subject: "ns.events.a",
            step: None,
        };
        let map = dead_letter_headers(Some(&original), &letter);
        assert_eq!(map.get("ce-id").unwrap().as_str(), "e1");
        assert_eq!(
            map.get("Nats-Msg-Id").unwrap().as_str(),
            "dlq:f:NS_EVENTS:9"
        );
        assert!(map.get("Nats-Expected-Stream").is_none());
        assert_eq!(map.get(DLQ_REASON).unwrap().as_str(), "timeout");
        assert_eq!(map.get(DLQ_ERROR).unwrap().as_str(), "took too long");
        assert_eq!(map.get(DLQ_ATTEMPTS).unwrap().as_str(), "3");
        assert_eq!(map.get(DLQ_STREAM_SEQ).unwrap().as_str(), "9");
        assert_eq!(map.get(DLQ_SUBJECT).unwrap().as_str(), "ns.events.a");
    }
}
