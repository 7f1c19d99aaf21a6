//! Storing validated events exactly as a Rust producer does (protocol section 4): the same
//! headers in the same form, `Nats-Msg-Id` = `ce-id`, pipelined, acks awaited together.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use herald::headers::{self, encode_value};

use crate::event::Incoming;
use crate::problem::{Accepted, Problem};

/// One event ready to store.
pub(crate) struct Outgoing {
    pub(crate) event: Incoming,
    /// The registry version it was validated against.
    pub(crate) data_schema: Option<String>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: HeaderMap,
    /// Body plus headers, as the server counts them against `max_payload`.
    pub(crate) size: usize,
}

/// Builds the message of one event; `trace` is the trace context to write.
pub(crate) fn build(
    event: Incoming,
    data_schema: Option<String>,
    trace: Option<&(String, Option<String>)>,
) -> Outgoing {
    let payload = serde_json::to_vec(&event.data).unwrap_or_default();
    let mut map = HeaderMap::new();
    let mut header_bytes = 0;
    let mut put = |name: HeaderName, value: &str| {
        header_bytes += AsRef::<str>::as_ref(&name).len() + value.len() + 4;
        map.insert(name, value);
    };
    put(
        HeaderName::from_static(headers::SPEC_VERSION),
        headers::SPEC_VERSION_VALUE,
    );
    put(HeaderName::from_static(headers::ID), &event.id);
    put(HeaderName::from_static(headers::TYPE), &event.event_type);
    put(
        HeaderName::from_static(headers::SOURCE),
        &encode_value(&event.source),
    );
    // The caller chose the id, so the time is written (protocol section 4); no
    // `ce-datacontenttype`: absent means JSON, as the SDK writes it.
    put(HeaderName::from_static(headers::TIME), &event.time);
    if let Some(data_schema) = &data_schema {
        put(HeaderName::from_static(headers::DATA_SCHEMA), data_schema);
    }
    if let Some(subject) = &event.subject {
        put(
            HeaderName::from_static(headers::SUBJECT),
            &encode_value(subject),
        );
    }
    put(HeaderName::from_static(headers::NATS_MSG_ID), &event.id);
    if let Some((traceparent, tracestate)) = trace {
        put(HeaderName::from_static(headers::TRACEPARENT), traceparent);
        if let Some(tracestate) = tracestate {
            put(HeaderName::from_static(headers::TRACESTATE), tracestate);
        }
    }
    for (name, value) in &event.extensions {
        // Extension names are lower-case letters and digits, so `ce-<name>` can never be
        // a `Nats-*` or `herald-*` header.
        if let Ok(name) = format!("ce-{name}").parse::<HeaderName>() {
            put(name, &encode_value(value));
        }
    }
    // "NATS/1.0\r\n" and the closing "\r\n", as the SDK counts them.
    let size = payload.len() + header_bytes + 12;
    Outgoing {
        event,
        data_schema,
        payload,
        headers: map,
        size,
    }
}

/// Stores every event: all are sent before any ack is awaited. On failure answers 503 with
/// the events that were stored (a retry of the whole request deduplicates them).
pub(crate) async fn store(
    client: &herald::Client,
    events: Vec<Outgoing>,
    timeout: Duration,
    retry_after: u64,
) -> Result<Vec<Accepted>, Problem> {
    if client.nats().connection_state() != async_nats::connection::State::Connected {
        return Err(Problem::unavailable(
            "not connected to NATS; nothing was stored",
            retry_after,
        ));
    }
    let jetstream = client.jetstream();
    let mut pending = Vec::with_capacity(events.len());
    let mut first_error = None;
    for outgoing in events {
        let subject = client.namespace().event_subject(&outgoing.event.event_type);
        let message = PublishMessage::build()
            .payload(outgoing.payload.into())
            .headers(outgoing.headers);
        let ack = match jetstream.send_publish(subject, message).await {
            Ok(ack) => Some(ack),
            Err(error) => {
                first_error.get_or_insert_with(|| describe(error.kind()));
                None
            }
        };
        pending.push((outgoing.event, outgoing.data_schema, ack));
        if first_error.is_some() {
            break;
        }
    }
    let acks = futures::future::join_all(pending.into_iter().map(
        |(event, data_schema, ack)| async move {
            let Some(ack) = ack else {
                return (event, data_schema, Err("not sent".to_owned()));
            };
            let outcome = match tokio::time::timeout(timeout, ack).await {
                Ok(Ok(ack)) => Ok(ack),
                Ok(Err(error)) => Err(describe(error.kind())),
                Err(_) => Err("no ack in time".to_owned()),
            };
            (event, data_schema, outcome)
        },
    ))
    .await;
    let mut accepted = Vec::with_capacity(acks.len());
    for (event, dataschema, outcome) in acks {
        match outcome {
            Ok(ack) => accepted.push(Accepted {
                id: event.id,
                event_type: event.event_type,
                seq: ack.sequence,
                duplicate: ack.duplicate,
                dataschema,
            }),
            Err(reason) => {
                first_error.get_or_insert(reason);
            }
        }
    }
    match first_error {
        None => Ok(accepted),
        Some(reason) => {
            let mut problem = Problem::unavailable(
                format!(
                    "{reason}; {} event(s) were stored (listed in accepted), send the whole \
                     request again: stored ids are deduplicated",
                    accepted.len()
                ),
                retry_after,
            );
            problem.accepted = accepted;
            Err(problem)
        }
    }
}

fn describe(kind: PublishErrorKind) -> String {
    match kind {
        PublishErrorKind::StreamNotFound => {
            "no stream stores the events: the namespace is not provisioned".to_owned()
        }
        PublishErrorKind::TimedOut => "no ack in time".to_owned(),
        PublishErrorKind::BrokenPipe => "the NATS connection broke".to_owned(),
        PublishErrorKind::MaxAckPending => "too many publishes waiting for acks".to_owned(),
        other => format!("the stream refused the event ({other})"),
    }
}
