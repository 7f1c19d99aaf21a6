//! What a publish gives back: [`PublishAck`], awaited through [`PendingAck`] and
//! [`AckFuture`].

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use super::{Inner, PublishError};
use async_nats::jetstream::{self, context::PublishErrorKind};

/// The stream's acknowledgement of a published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// True if an event with this id was already stored within the duplicate window; then
    /// `sequence` is the first one's.
    pub duplicate: bool,
    /// The event id (`ce-id`).
    pub event_id: String,
}

/// A sent event waiting for its stream ack: `.await` it to get the [`PublishAck`]. Holding
/// many of these keeps many publishes in flight.
#[must_use = "the event is sent, but not confirmed until this is awaited"]
pub struct PendingAck {
    ack: jetstream::context::PublishAckFuture,
    event_type: opentelemetry::StringValue,
    event_id: String,
    client: Arc<Inner>,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck")
            .field("event_type", &self.event_type.as_str())
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl PendingAck {
    /// An event sent as `event_id`, of `event_type`, whose stream ack is `ack`.
    pub(super) fn new(
        ack: jetstream::context::PublishAckFuture,
        event_type: opentelemetry::StringValue,
        event_id: String,
        client: Arc<Inner>,
    ) -> PendingAck {
        PendingAck {
            ack,
            event_type,
            event_id,
            client,
        }
    }

    /// The id of the sent event.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
}

impl IntoFuture for PendingAck {
    type Output = Result<PublishAck, PublishError>;
    type IntoFuture = AckFuture;

    fn into_future(self) -> AckFuture {
        AckFuture {
            ack: self.ack.into_future(),
            event_type: self.event_type,
            event_id: self.event_id,
            client: self.client,
        }
    }
}

/// The future of a [`PendingAck`]: resolves to the stream's [`PublishAck`].
#[must_use = "futures do nothing unless awaited"]
pub struct AckFuture {
    ack: <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture,
    event_type: opentelemetry::StringValue,
    event_id: String,
    client: Arc<Inner>,
}

impl std::fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckFuture")
            .field("event_type", &self.event_type.as_str())
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl Future for AckFuture {
    type Output = Result<PublishAck, PublishError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let outcome = std::task::ready!(self.ack.as_mut().poll(cx));
        let event_id = std::mem::take(&mut self.event_id);
        let label = match &outcome {
            Ok(ack) if ack.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        self.client.published.add(
            1,
            &[
                opentelemetry::KeyValue::new("event_type", self.event_type.clone()),
                opentelemetry::KeyValue::new("outcome", label),
            ],
        );
        std::task::Poll::Ready(match outcome {
            Ok(ack) => Ok(PublishAck {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
                event_id,
            }),
            Err(error) => Err(map_publish_error(
                error,
                // Built only for the error: the event's subject.
                self.client
                    .namespace
                    .event_subject(self.event_type.as_str()),
                event_id,
                &self.client.nats,
                "",
                self.client.max_pending_acks,
            )),
        })
    }
}

pub(super) fn map_publish_error(
    error: jetstream::context::PublishError,
    subject: String,
    event_id: String,
    nats: &async_nats::Client,
    event_type: &str,
    max_pending: usize,
) -> PublishError {
    let connected = nats.connection_state() == async_nats::connection::State::Connected;
    match error.kind() {
        PublishErrorKind::StreamNotFound => PublishError::NoStream { subject },
        PublishErrorKind::MaxAckPending => PublishError::TooManyPending { limit: max_pending },
        PublishErrorKind::BrokenPipe => PublishError::Disconnected { subject, event_id },
        PublishErrorKind::TimedOut if !connected => {
            PublishError::Disconnected { subject, event_id }
        }
        PublishErrorKind::TimedOut => PublishError::Timeout { subject, event_id },
        PublishErrorKind::MaxPayloadExceeded => PublishError::PayloadTooLarge {
            event_type: event_type.to_owned(),
            size: 0,
            max: nats.server_info().max_payload,
        },
        _ => PublishError::Nats {
            subject,
            source: error,
        },
    }
}
