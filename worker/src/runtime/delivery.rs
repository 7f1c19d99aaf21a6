//! [`Delivery`]: one delivered message, read once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;

use crate::envelope;
use crate::function::EnvelopeMeta;

/// Where a delivery came from, which decides how it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// An event delivered by the function's consumer.
    Consumer,
    /// An event read back by the sweeper for a MAX_DELIVERIES advisory: settling it settles
    /// the advisory.
    Sweeper,
}

/// Logs an event in the delivery's span, which names the function, the event id and the
/// stream sequence: `log!(delivery, warn, %error, "what happened")`.
macro_rules! log {
    ($delivery:expr, $level:ident, $($arg:tt)+) => {
        $delivery.span().in_scope(|| tracing::$level!($($arg)+))
    };
}
pub(crate) use log;

/// One delivery: the message that settles it and the facts read from it once.
pub(crate) struct Delivery {
    /// The function it is delivered to.
    function: Arc<str>,
    /// Its `delivery` span, made when something is first logged (nothing to pay otherwise).
    span: std::sync::OnceLock<tracing::Span>,
    /// The message whose ack settles the delivery (the event, or the sweeper's advisory).
    message: async_nats::Message,
    /// The client that settles it (a clone of an `Arc`; a `jetstream::Message` would clone
    /// the whole JetStream context per message).
    client: herald::Client,
    pub(crate) source: Source,
    /// For the sweeper: the stored event (for a consumer, the event is `message`).
    original: Option<Box<StreamMessage>>,
    /// The event's sequence in `NS_EVENTS`.
    pub(crate) stream_sequence: u64,
    /// The delivery count (1 for the first).
    pub(crate) delivered: u32,
    /// The envelope's attributes and data, when readable.
    pub(crate) meta: Arc<EnvelopeMeta>,
    pub(crate) data: Bytes,
    /// A plain first delivery (protocol section 7): no run of its event can exist yet, so
    /// its run is neither looked up nor, once its ack is confirmed, recorded. Set by the
    /// function's loop.
    pub(crate) plain: bool,
    /// Whether any header is one of Herald's own (`herald-…`); most events carry none.
    herald_headers: bool,
    /// Whether `Nats-Msg-Id` is the event id, as the protocol's publishers send it.
    pub(crate) msg_id_is_id: bool,
    /// Whether the event may carry a producer's `traceparent`.
    pub(crate) traced: bool,
}

/// A delivery whose envelope cannot be read; it is dead-lettered as a `decode_error`.
#[allow(clippy::large_enum_variant)] // always boxed: `Result<Box<Delivery>, Box<Unreadable>>`
pub(crate) enum Unreadable {
    /// No JetStream metadata (not from a consumer): terminated.
    NoMetadata(async_nats::Message, String),
    /// The envelope is broken.
    Envelope(Box<Delivery>, String),
}

impl Delivery {
    /// Reads a message delivered by a function's consumer.
    pub(crate) fn read(
        function: &Arc<str>,
        message: async_nats::Message,
        client: &herald::Client,
        events_prefix: &str,
    ) -> Result<Box<Delivery>, Box<Unreadable>> {
        let read = message.reply.as_deref().and_then(super::ack_subject::read);
        let (stream_sequence, delivered) = match read {
            Some((sequence, delivered)) => (
                sequence,
                u32::try_from(delivered.max(1)).unwrap_or(u32::MAX),
            ),
            None => {
                // The client says what is wrong with the subject.
                let message = jetstream::Message {
                    message,
                    context: client.jetstream().clone(),
                };
                let error = match message.info() {
                    Ok(_) => "an acknowledgement subject this worker cannot read".to_owned(),
                    Err(error) => error.to_string(),
                };
                return Err(Box::new(Unreadable::NoMetadata(message.message, error)));
            }
        };
        Delivery::build(
            function,
            message,
            client,
            None,
            stream_sequence,
            delivered,
            events_prefix,
        )
    }

    /// A stored event the sweeper dead-letters; settling it settles `advisory`.
    pub(crate) fn swept(
        function: &Arc<str>,
        advisory: async_nats::Message,
        client: &herald::Client,
        original: StreamMessage,
        deliveries: u32,
        events_prefix: &str,
    ) -> Result<Box<Delivery>, Box<Unreadable>> {
        let stream_sequence = original.sequence;
        Delivery::build(
            function,
            advisory,
            client,
            Some(Box::new(original)),
            stream_sequence,
            deliveries,
            events_prefix,
        )
    }

    fn build(
        function: &Arc<str>,
        message: async_nats::Message,
        client: &herald::Client,
        original: Option<Box<StreamMessage>>,
        stream_sequence: u64,
        delivered: u32,
        events_prefix: &str,
    ) -> Result<Box<Delivery>, Box<Unreadable>> {
        let source = if original.is_some() {
            Source::Sweeper
        } else {
            Source::Consumer
        };
        let (headers, payload, subject) = match &original {
            Some(original) => (
                Some(&original.headers),
                &original.payload,
                original.subject.as_str(),
            ),
            None => (
                message.headers.as_ref(),
                &message.payload,
                message.subject.as_str(),
            ),
        };
        let read = envelope::read(headers, payload, subject, events_prefix, stream_sequence);
        let (read, error) = match read {
            Ok(mut read) => {
                // A cron tick is its own run: its id comes from the tick's time, as the
                // schedule's `ce-id` is copied into every tick.
                if let Some(tick) = headers
                    .filter(|_| read.herald_headers)
                    .and_then(|headers| crate::cron::tick_of(headers))
                {
                    read.meta.id = crate::cron::tick_run_id(tick.0, tick.1);
                    read.msg_id_is_id = false;
                    if let Ok(tick) = crate::cron::Tick::read(&read.data, headers) {
                        read.meta.set_time(tick.scheduled_at);
                    }
                }
                (read, None)
            }
            Err(error) => {
                let unread = envelope::Read {
                    meta: EnvelopeMeta::default(),
                    data: Bytes::new(),
                    herald_headers: true,
                    msg_id_is_id: false,
                    traced: true,
                };
                (unread, Some(error))
            }
        };
        // Boxed where it is made: a delivery is moved from its read to its future, and a
        // box moves as a pointer.
        let delivery = Box::new(Delivery {
            function: Arc::clone(function),
            span: std::sync::OnceLock::new(),
            message,
            client: client.clone(),
            source,
            original,
            stream_sequence,
            delivered,
            meta: Arc::new(read.meta),
            data: read.data,
            plain: false,
            herald_headers: read.herald_headers,
            msg_id_is_id: read.msg_id_is_id,
            // The sweeper's span reads the advisory's headers, not the event's.
            traced: read.traced || source == Source::Sweeper,
        });
        match error {
            None => Ok(delivery),
            Some(error) => Err(Box::new(Unreadable::Envelope(delivery, error))),
        }
    }

    /// The delivery's span: `delivery{function, event_id, stream_seq}`.
    pub(crate) fn span(&self) -> &tracing::Span {
        self.span.get_or_init(|| {
            tracing::info_span!("delivery", function = %self.function,
                event_id = %self.meta.id, stream_seq = self.stream_sequence)
        })
    }

    /// The event id (`ce-id`), empty when unreadable.
    pub(crate) fn event_id(&self) -> &str {
        &self.meta.id
    }

    /// The event's headers.
    pub(crate) fn headers(&self) -> Option<&HeaderMap> {
        match &self.original {
            Some(original) => Some(&original.headers),
            None => self.message.headers.as_ref(),
        }
    }

    /// The event's body.
    pub(crate) fn payload(&self) -> &Bytes {
        match &self.original {
            Some(original) => &original.payload,
            None => &self.message.payload,
        }
    }

    /// The event's subject.
    pub(crate) fn subject(&self) -> &str {
        match &self.original {
            Some(original) => original.subject.as_str(),
            None => self.message.subject.as_str(),
        }
    }

    /// Whether the delivery carries one of Herald's own headers: a redrive, a
    /// continuation, a wake-up, a cron tick, a replay; an event as a producer published it
    /// carries none.
    pub(crate) fn continues_a_run(&self) -> bool {
        self.herald_headers
    }

    /// The first value of a header.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        if !self.herald_headers && name.starts_with("herald-") {
            return None;
        }
        self.headers()
            .and_then(|h| envelope::find(h, name))
            .map(|v| v.as_str())
    }

    /// The message the delivery's acks settle (for the sweeper, the advisory), which the
    /// attempt's span reads.
    pub(crate) fn message(&self) -> &async_nats::Message {
        &self.message
    }

    /// When the event was stored, in ms since the epoch, as the client reads it from the ack
    /// subject (the publish time, which [`super::ack_subject::read`] skips).
    pub(crate) fn published_ms(&self) -> Option<u64> {
        let nanos = super::ack_subject::published_nanos(self.message.reply.as_deref()?)?;
        u64::try_from(nanos / 1_000_000).ok()
    }

    /// The subject its ack was sent to, kept when the delivery is done with.
    pub(crate) fn into_reply(self: Box<Self>) -> Option<async_nats::Subject> {
        self.message.reply
    }

    /// Sends `payload` to the message's ack subject.
    async fn send(&self, payload: Bytes) -> Result<(), async_nats::Error> {
        let reply = self.message.reply.as_ref().ok_or_else(no_reply)?;
        self.client.nats().publish(reply.clone(), payload).await?;
        Ok(())
    }

    /// Acknowledges.
    ///
    /// Outside tokio's cooperative budget: an ack is one write into the client's command
    /// channel (it waits only when the channel is full), and the drain that starts each
    /// delivery where it reads it ([`super::pull`]) would otherwise run out of budget at
    /// the acks of a large group, and finish every delivery after that through its set.
    pub(crate) async fn ack(&self) {
        let ack = self.send(Bytes::new());
        if let Err(error) = tokio::task::coop::unconstrained(ack).await {
            log!(self, warn, %error, "ack failed; the event will be redelivered (and acked as finished)");
        }
    }

    /// NAKs, with a delay or at once.
    pub(crate) async fn nak(&self, delay: Option<Duration>) {
        if let Err(error) = self.send(AckKind::Nak(delay).into()).await {
            log!(self, warn, %error, "NAK failed; the event comes back after ack_wait");
        }
    }

    /// Tells the server the delivery is still being worked on.
    pub(crate) async fn progress(&self) {
        if let Err(error) = self.send(AckKind::Progress.into()).await {
            log!(self, debug, %error, "progress ack failed");
        }
    }

    /// Terminates the delivery with a reason (`+TERM <reason>`); for the sweeper, acks the
    /// advisory.
    pub(crate) async fn term(&self, reason: &str) {
        let result = match self.source {
            Source::Consumer => self.send(format!("+TERM {reason}").into()).await,
            Source::Sweeper => self.send(Bytes::new()).await,
        };
        if let Err(error) = result {
            log!(self, warn, %error, "terminating the original failed; a later delivery dead-letters it again (deduplicated)");
        }
    }
}

/// Terminates a message that no function consumer delivered.
pub(crate) async fn terminate_foreign(
    client: &async_nats::Client,
    message: &async_nats::Message,
    error: &str,
) {
    tracing::warn!(%error, "a message without JetStream metadata; terminated");
    settle_raw(client, message, b"+TERM").await;
}

/// Sends `payload` to a message's ack subject, if it has one; a failure is only logged
/// (the server delivers the message again after `ack_wait`).
pub(crate) async fn settle_raw(
    client: &async_nats::Client,
    message: &async_nats::Message,
    payload: &'static [u8],
) {
    if let Some(reply) = &message.reply
        && let Err(error) = client
            .publish(reply.clone(), Bytes::from_static(payload))
            .await
    {
        tracing::debug!(%error, "settling a message failed; the server delivers it again after ack_wait");
    }
}

/// The error of settling a message without an ack subject.
fn no_reply() -> async_nats::Error {
    Box::new(std::io::Error::other(
        "no reply subject: not a JetStream message",
    ))
}
