//! Dead letters (protocol section 6): building and publishing them.

use std::fmt;
use std::time::SystemTime;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use herald::protocol::header::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_FUNCTION, DLQ_REASON, DLQ_STEP, DLQ_STREAM, DLQ_STREAM_SEQ,
    DLQ_SUBJECT, DLQ_TIME,
};
use herald::protocol::{self, header, msg_id};
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
    /// A throttle would have started the run later than its `max_delay`.
    ThrottledTooLong,
    /// Too many runs of the event's key were parked waiting for a concurrency slot.
    QueueFull,
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
            DeadLetterReason::ThrottledTooLong => "throttled_too_long",
            DeadLetterReason::QueueFull => "queue_full",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    let mut map = match original {
        Some(original) => {
            let mut copy = protocol::copy_headers_except_transport(original, &[]);
            crate::cron::keep_tick(original, &mut copy);
            copy
        }
        None => HeaderMap::new(),
    };
    map.insert(
        header::NATS_MSG_ID,
        msg_id::dead_letter(letter.function, letter.stream, letter.stream_sequence),
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
