//! Traces and metrics of the worker, through the OpenTelemetry API.
//!
//! Spans follow the OpenTelemetry messaging conventions: one `process <event type>` span
//! (kind consumer) per attempt, child of the producer's span taken from `traceparent` (or
//! linked to it, [`TraceMode::Link`]), with `messaging.system = nats`,
//! `messaging.destination.name`, `messaging.operation.name = process`,
//! `messaging.message.id` (the event id), `messaging.consumer.group.name` (the function),
//! and Herald's `herald.event_type`, `herald.attempt`, `herald.stream_sequence`,
//! `herald.outcome` (`ok`, `retried`, `dead_lettered`, `skipped`, `cancelled`, `sleeping`, `handed_back`); a failed
//! attempt has status error with the error's text. Steps are `step <name>` child spans.
//!
//! The worker makes these spans with the OpenTelemetry API directly, from the tracer provider
//! given to [`WorkerBuilder::tracer_provider`](crate::WorkerBuilder::tracer_provider), else
//! the global one (a no-op unless the application installs one), so that the sampler decides
//! before any attribute is built and an unsampled attempt costs next to nothing. While a
//! handler runs, its span is the current OpenTelemetry context: `tracing` spans the handler
//! opens nest under it through `tracing-opentelemetry` (its default context activation),
//! events it publishes carry its `traceparent`, and [`Ctx::trace_context`](crate::Ctx::trace_context)
//! hands it to work the handler spawns. Herald's own log events carry `function`, `event_id`
//! and `stream_seq` as fields.
//!
//! Metrics (instrument names as below) go to the meter given to
//! [`WorkerBuilder::meter`](crate::WorkerBuilder::meter), else the global provider's
//! (a no-op unless the application installs one):
//!
//! | instrument | kind | attributes |
//! | --- | --- | --- |
//! | `herald.runs` | counter (observed) | `function`, `outcome` = ok, retried, dead_lettered, skipped, cancelled |
//! | `herald.dead_letters` | counter | `function`, `reason` |
//! | `herald.handler.duration` | histogram (s) | `function` |
//! | `herald.event.latency` | histogram (s), event time to handler start | `function` |
//! | `herald.handlers.in_flight` | up-down counter (observed) | `function` |
//! | `herald.consumer.pending` | gauge, polled from consumer info | `function` |
//! | `herald.consumer.ack_pending` | gauge | `function` |
//! | `herald.consumer.redelivered` | gauge | `function` |
//! | `herald.flow.parked` | counter | `function`, `reason` = concurrency, throttle |
//! | `herald.flow.woken` | counter, a parked run woken by a freed slot or its throttle's schedule | `function`, `reason` |
//! | `herald.flow.wait` | histogram (s), event time to the start of a run parked or delayed | `function`, `reason` |
//! | `herald.flow.skipped` | counter | `function`, `reason` = rate_limited, singleton |
//!
//! A singleton never parks a run (it skips it, or cancels the one running), so it only
//! appears in `herald.flow.skipped`.

mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod spans;

pub(crate) use metrics::{
    FunctionCounts, Metrics, RunOutcome, function_attribute, poll_stats, seconds_since,
};
pub use spans::TraceMode;
pub(crate) use spans::{Spans, set_error, set_outcome};
