//! What every ingest request goes through once its events are read: scopes, validation of
//! every event before any is stored, sizes, trace context, storing.

use axum::http::{HeaderMap, StatusCode};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::KnownKey;
use crate::event::Incoming;
use crate::problem::{Accepted, EventProblem, PathMessage, Problem};
use crate::publish::{self, Outgoing};
use crate::schemas::Unresolved;
use crate::state::AppState;

/// Checks, validates and stores the events of one request: all or nothing up to storing.
pub(crate) async fn ingest(
    state: &AppState,
    key: &KnownKey,
    request_headers: &HeaderMap,
    events: Vec<Incoming>,
) -> Result<Vec<Accepted>, Problem> {
    if let Some((index, event)) = events
        .iter()
        .enumerate()
        .find(|(_, event)| !key.key.allows(&event.event_type))
    {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "out-of-scope",
            format!("this key may not send events of type {}", event.event_type),
        )
        .detail(format!("the key's scopes: {}", key.key.scopes.join(", ")))
        .index(index));
    }
    let total = events.len();
    let mut problems = Vec::new();
    let mut checked = Vec::with_capacity(total);
    for (index, event) in events.into_iter().enumerate() {
        let problem = |schema: Option<String>, path: &str, message: String| EventProblem {
            index,
            id: Some(event.id.clone()),
            event_type: Some(event.event_type.clone()),
            schema,
            violations: vec![PathMessage {
                path: path.to_owned(),
                message,
            }],
        };
        match state
            .schemas
            .resolve(&event.event_type, event.data_schema.as_deref())
            .await
        {
            Ok(resolved) => match resolved.schema.validate(&event.data) {
                Ok(()) => checked.push((event, Some(resolved.urn))),
                Err(violations) => problems.push(EventProblem {
                    index,
                    id: Some(event.id.clone()),
                    event_type: Some(event.event_type.clone()),
                    schema: Some(resolved.urn),
                    violations: violations
                        .into_iter()
                        .map(|v| PathMessage {
                            path: v.path,
                            message: v.message,
                        })
                        .collect(),
                }),
            },
            Err(Unresolved::Unregistered) if key.key.allow_unregistered => {
                checked.push((event, None));
            }
            Err(Unresolved::Unregistered) => problems.push(problem(
                None,
                "type",
                format!(
                    "no schema is registered for {}; register it (`herald schemas push`) \
                     or use a key that allows unregistered types",
                    event.event_type
                ),
            )),
            Err(Unresolved::BadDataSchema(message)) => {
                problems.push(problem(None, "dataschema", message));
            }
            Err(Unresolved::Unavailable(reason)) => {
                return Err(Problem::unavailable(
                    format!("the schema registry cannot be read ({reason}); nothing was stored"),
                    state.config.retry_after_secs,
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Problem::invalid(problems, total));
    }
    let span = request_span(request_headers);
    let request_trace = span
        .in_scope(herald::trace::current_trace_headers)
        .or_else(|| {
            // No OpenTelemetry layer is installed: pass the caller's context on unchanged.
            request_headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(|parent| {
                    let state = request_headers
                        .get("tracestate")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    (parent.to_owned(), state)
                })
        });
    let max_payload = state.client.nats().server_info().max_payload;
    let mut outgoing: Vec<Outgoing> = Vec::with_capacity(total);
    for (index, (event, data_schema)) in checked.into_iter().enumerate() {
        let trace = event.trace.clone().or_else(|| request_trace.clone());
        let built = publish::build(event, data_schema, trace.as_ref());
        if max_payload > 0 && built.size > max_payload {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event-too-large",
                format!(
                    "event {index} is {} bytes with headers, over the server's limit of \
                     {max_payload}; nothing was stored",
                    built.size
                ),
            )
            .index(index));
        }
        outgoing.push(built);
    }
    publish::store(
        &state.client,
        outgoing,
        state.config.publish_timeout,
        state.config.retry_after_secs,
    )
    .instrument(span)
    .await
}

/// The request's span, continuing the caller's W3C trace context when it sent one.
fn request_span(headers: &HeaderMap) -> tracing::Span {
    let span = tracing::info_span!("herald.gateway.request");
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|parent| {
            herald::trace::parse_trace_headers(
                parent,
                headers.get("tracestate").and_then(|v| v.to_str().ok()),
            )
        });
    if let Some(parent) = parent {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    span
}
