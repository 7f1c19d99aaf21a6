//! Resuming a live feed after a dropped connection. Every server-sent event carries an `id:`
//! naming where it stands in its streams; a browser that reconnects sends it back as
//! `Last-Event-ID`, and the feed first replays, from the stream itself, what was stored
//! after that point, then goes on with the live broadcast, dropping what the replay already
//! sent. The replay stops at [`CATCH_UP_LIMIT`] messages: past that the page gets `resync`
//! and reloads.

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use axum::http::HeaderMap;

use crate::error::PageError;

/// The most messages a reconnecting page is sent from a stream before it is told to reload.
pub(crate) const CATCH_UP_LIMIT: usize = 500;

/// The `Last-Event-ID` a reconnecting browser sent, if any.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// What was stored in a stream after a point.
pub(crate) struct CatchUp {
    /// The messages, in stream order (empty when `truncated`).
    pub(crate) messages: Vec<jetstream::Message>,
    /// The stream sequence read up to: a live message at or below it was replayed already.
    pub(crate) read_to: u64,
    /// More than [`CATCH_UP_LIMIT`] messages: the page must reload instead.
    pub(crate) truncated: bool,
}

/// The messages of `stream` on `subject` stored after sequence `after`, read to the end of
/// the stream as it is now.
pub(crate) async fn catch_up(
    client: &herald::Client,
    stream: &str,
    subject: String,
    after: u64,
) -> Result<CatchUp, PageError> {
    let messages = crate::data::read_bounded(
        client,
        stream,
        subject,
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
        CATCH_UP_LIMIT + 1,
    )
    .await?;
    if messages.len() > CATCH_UP_LIMIT {
        return Ok(CatchUp {
            messages: Vec::new(),
            read_to: after,
            truncated: true,
        });
    }
    let read_to = messages
        .last()
        .and_then(|m| m.info().ok().map(|i| i.stream_sequence))
        .unwrap_or(after)
        .max(after);
    Ok(CatchUp {
        messages,
        read_to,
        truncated: false,
    })
}

/// The last sequence stored in `stream` (0 when empty or unreadable: a feed started there
/// replays from the start on reconnect, bounded by [`CATCH_UP_LIMIT`]).
pub(crate) async fn last_sequence(client: &herald::Client, stream: &str) -> u64 {
    match client.jetstream().get_stream(stream).await {
        Ok(mut stream) => match stream.info().await {
            Ok(info) => info.state.last_sequence,
            Err(_) => 0,
        },
        Err(_) => 0,
    }
}

/// A position in the two streams a page's change notices come from: `<activity>.<dlq>`,
/// the last `NS_ACTIVITY` and `NS_DLQ` sequences the page has been told about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChangePosition {
    pub(crate) activity: u64,
    pub(crate) dead_letters: u64,
}

impl ChangePosition {
    /// Parses `<activity>.<dlq>`.
    pub(crate) fn parse(id: &str) -> Option<ChangePosition> {
        let (activity, dead_letters) = id.split_once('.')?;
        Some(ChangePosition {
            activity: activity.parse().ok()?,
            dead_letters: dead_letters.parse().ok()?,
        })
    }

    /// The SSE id.
    pub(crate) fn id(self) -> String {
        format!("{}.{}", self.activity, self.dead_letters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_position_round_trips() {
        let position = ChangePosition {
            activity: 12,
            dead_letters: 3,
        };
        assert_eq!(ChangePosition::parse(&position.id()), Some(position));
        assert_eq!(ChangePosition::parse("12"), None);
        assert_eq!(ChangePosition::parse("a.b"), None);
    }
}
