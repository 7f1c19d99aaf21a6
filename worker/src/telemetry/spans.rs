//! The attempt's span ([`Spans`]) and its outcome, made through the OpenTelemetry API.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue, Value};
use std::borrow::Cow;

/// How an attempt's span relates to the producer's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TraceMode {
    /// The attempt is a child of the producer's span: one trace from request to handler.
    #[default]
    Child,
    /// The attempt starts its own trace, linked to the producer's span.
    Link,
}

/// The attributes of an attempt's span, its outcome included.
const ATTEMPT_ATTRIBUTES: usize = 9;

/// Makes the spans of attempts and steps through the OpenTelemetry API.
#[derive(Clone)]
pub(crate) struct Spans {
    tracer: Arc<BoxedTracer>,
    mode: TraceMode,
    /// Learned from the first attempt without a producer's span: the tracer makes no spans
    /// at all (the no-op provider, whose spans have no valid context), so an attempt
    /// without a producer's span needs none built (a tracer is fixed once made).
    no_op: Arc<std::sync::atomic::AtomicU8>,
}

/// [`Spans::no_op`] values.
const NO_OP_UNKNOWN: u8 = 0;
const NO_OP: u8 = 1;
const RECORDS: u8 = 2;

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spans").field("mode", &self.mode).finish()
    }
}

impl Spans {
    pub(crate) fn new(tracer: BoxedTracer, mode: TraceMode) -> Spans {
        Spans {
            tracer: Arc::new(tracer),
            mode,
            no_op: Arc::default(),
        }
    }

    /// The context of one attempt: a `process <type>` span, child of (or linked to) the
    /// producer's span in the delivery's `traceparent` (not searched for when `traced` is
    /// false: the delivery's reading saw none). Attributes are built only when the sampler
    /// records the span.
    pub(crate) fn attempt(
        &self,
        message: &async_nats::Message,
        events_prefix: &str,
        function: &Arc<str>,
        traced: bool,
    ) -> Context {
        let headers = message.headers.as_ref();
        let remote = headers.filter(|_| traced).and_then(|h| {
            let traceparent = crate::envelope::find(h, herald::headers::TRACEPARENT)?;
            herald::trace::parse_trace_headers(
                traceparent.as_str(),
                crate::envelope::find(h, herald::headers::TRACESTATE).map(|v| v.as_str()),
            )
        });
        let without_producer = remote.is_none();
        if without_producer && self.no_op.load(Ordering::Relaxed) == NO_OP {
            return Context::new();
        }
        // Room for the attributes set below and the outcome, so that a recorded span's
        // attributes are one allocation (the SDK keeps the builder's vector).
        let builder = opentelemetry::trace::SpanBuilder {
            attributes: Some(Vec::with_capacity(ATTEMPT_ATTRIBUTES)),
            ..self
                .tracer
                .span_builder("process")
                .with_kind(SpanKind::Consumer)
        };
        let (parent, builder) = match (self.mode, remote) {
            (TraceMode::Child, Some(remote)) => {
                (Context::new().with_remote_span_context(remote), builder)
            }
            (TraceMode::Link, Some(remote)) => (
                Context::new(),
                builder.with_links(vec![Link::with_context(remote)]),
            ),
            (_, None) => (Context::new(), builder),
        };
        let mut span = builder.start_with_context(&*self.tracer, &parent);
        if without_producer && self.no_op.load(Ordering::Relaxed) == NO_OP_UNKNOWN {
            let no_op = !span.is_recording() && !span.span_context().is_valid();
            self.no_op
                .store(if no_op { NO_OP } else { RECORDS }, Ordering::Relaxed);
        }
        if span.is_recording() {
            let header = |name: &str| {
                headers
                    .and_then(|h| crate::envelope::find(h, name))
                    .map(|v| v.as_str())
            };
            let subject = message.subject.as_str();
            let event_type = header(herald::headers::TYPE)
                .unwrap_or_else(|| subject.strip_prefix(events_prefix).unwrap_or(subject));
            // An event subject names its type: its names are interned once and shared by
            // every span (no allocation, no reference count); anything else is copied.
            let interned = subject
                .strip_prefix(events_prefix)
                .filter(|&suffix| suffix == event_type)
                .and_then(|_| intern_names(subject, event_type));
            let (name, subject, event_type): (Cow<'static, str>, Value, Value) = match interned {
                Some(names) => (
                    Cow::Borrowed(names.span_name),
                    names.subject.into(),
                    names.event_type.into(),
                ),
                None => (
                    Cow::Owned(format!("process {event_type}")),
                    subject.to_owned().into(),
                    event_type.to_owned().into(),
                ),
            };
            let function: Value = match intern(function) {
                Some(function) => function.into(),
                None => Arc::clone(function).into(),
            };
            let (attempt, stream_sequence) = message
                .reply
                .as_deref()
                .and_then(crate::runtime::ack_subject::read)
                .map_or((0, 0), |(sequence, delivered)| {
                    (
                        i64::try_from(delivered).unwrap_or(i64::MAX),
                        sequence as i64,
                    )
                });
            span.update_name(name);
            span.set_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", subject),
                KeyValue::new(
                    "messaging.message.id",
                    header(herald::headers::ID).unwrap_or_default().to_owned(),
                ),
                KeyValue::new("messaging.consumer.group.name", function),
                KeyValue::new("herald.event_type", event_type),
                KeyValue::new("herald.attempt", attempt),
                KeyValue::new("herald.stream_sequence", stream_sequence),
            ]);
        }
        parent.with_span(span)
    }

    /// The context of a `step <name>` span, child of the attempt's.
    pub(crate) fn step(&self, attempt: &Context, name: &str) -> Context {
        let mut span = self
            .tracer
            .span_builder("step")
            .with_kind(SpanKind::Internal)
            .start_with_context(&*self.tracer, attempt);
        if span.is_recording() {
            span.update_name(format!("step {name}"));
            span.set_attribute(KeyValue::new("herald.step", name.to_owned()));
        }
        attempt.with_span(span)
    }
}

/// At most this many strings are interned for span names and attributes (a few per function
/// and event type); past it, names are allocated per span.
const MAX_INTERNED: usize = 4096;

/// The interned names of attempts on one event subject.
#[derive(Debug)]
struct AttemptNames {
    span_name: &'static str,
    subject: &'static str,
    event_type: &'static str,
}

type Interned<T> = parking_lot::RwLock<std::collections::HashMap<Box<str>, T>>;

static NAMES: std::sync::OnceLock<Interned<&'static AttemptNames>> = std::sync::OnceLock::new();
static STRINGS: std::sync::OnceLock<Interned<&'static str>> = std::sync::OnceLock::new();

/// `value` as a string that lives as long as the process, or `None` once
/// [`MAX_INTERNED`] strings are held. The memory is bounded and never freed.
fn intern(value: &str) -> Option<&'static str> {
    let strings = STRINGS.get_or_init(Default::default);
    if let Some(found) = strings.read().get(value) {
        return Some(found);
    }
    let mut strings = strings.write();
    if let Some(found) = strings.get(value) {
        return Some(found);
    }
    if strings.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static str = Box::leak(value.into());
    strings.insert(value.into(), leaked);
    Some(leaked)
}

/// The interned names of attempts on `subject` (whose type is `event_type`).
fn intern_names(subject: &str, event_type: &str) -> Option<&'static AttemptNames> {
    let names = NAMES.get_or_init(Default::default);
    if let Some(found) = names.read().get(subject) {
        return Some(found);
    }
    let names_for = AttemptNames {
        span_name: intern(&format!("process {event_type}"))?,
        subject: intern(subject)?,
        event_type: intern(event_type)?,
    };
    let mut names = names.write();
    if let Some(found) = names.get(subject) {
        return Some(found);
    }
    if names.len() >= MAX_INTERNED {
        return None;
    }
    let leaked: &'static AttemptNames = Box::leak(Box::new(names_for));
    names.insert(subject.into(), leaked);
    Some(leaked)
}

/// Records how an attempt ended on its span; a failure also sets status error.
pub(crate) fn set_outcome(context: &Context, outcome: &'static str, error: Option<&str>) {
    let span = context.span();
    if !span.is_recording() {
        return;
    }
    span.set_attribute(KeyValue::new("herald.outcome", outcome));
    if let Some(error) = error {
        span.set_status(Status::error(error.to_owned()));
    }
}

/// Marks a step's span failed.
pub(crate) fn set_error(context: &Context, error: &str) {
    let span = context.span();
    if span.is_recording() {
        span.set_status(Status::error(error.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn interned_names_are_shared() {
        let a = super::intern_names("herald.events.order.placed", "order.placed").unwrap();
        let b = super::intern_names("herald.events.order.placed", "order.placed").unwrap();
        assert!(std::ptr::eq(a, b), "one entry per subject");
        assert_eq!(a.span_name, "process order.placed");
        assert_eq!(a.subject, "herald.events.order.placed");
        assert_eq!(a.event_type, "order.placed");
        let name = super::intern("backfill-user-data").unwrap();
        assert!(std::ptr::eq(
            name,
            super::intern("backfill-user-data").unwrap()
        ));
    }
}
