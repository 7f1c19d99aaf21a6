//! W3C Trace Context over NATS headers: `traceparent` and `tracestate`.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The trace context to propagate, as (`traceparent`, `tracestate`): the current `tracing`
/// span's when an OpenTelemetry layer is installed and the span is sampled or recorded, else
/// the current OpenTelemetry context's (a Herald handler runs in its attempt's context);
/// `None` when neither holds a valid span.
pub fn current_trace_headers() -> Option<(String, Option<String>)> {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        let context = span.context();
        let span_ref = context.span();
        let span_context = span_ref.span_context();
        if span_context.is_valid() {
            return Some(format_trace_headers(span_context));
        }
    }
    opentelemetry::Context::map_current(|context| {
        let span_ref = context.span();
        let span_context = span_ref.span_context();
        span_context
            .is_valid()
            .then(|| format_trace_headers(span_context))
    })
}

/// Formats a span context as W3C (`traceparent`, `tracestate`).
pub fn format_trace_headers(span_context: &SpanContext) -> (String, Option<String>) {
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    );
    let state = span_context.trace_state().header();
    (traceparent, (!state.is_empty()).then_some(state))
}

/// Parses W3C `traceparent` (and `tracestate`) into a remote span context.
pub fn parse_trace_headers(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || version == "ff" || trace_id.len() != 32 || span_id.len() != 16 {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse_trace_headers(header, Some("congo=t61rcWkgMzE")).unwrap();
        assert!(context.is_sampled());
        assert!(context.is_remote());
        let (traceparent, tracestate) = format_trace_headers(&context);
        assert_eq!(traceparent, header);
        assert_eq!(tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    #[test]
    fn bad_traceparents_are_ignored() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_trace_headers(bad, None).is_none(), "{bad}");
        }
    }

    #[test]
    fn no_span_means_no_headers() {
        assert!(current_trace_headers().is_none());
    }

    #[test]
    fn the_current_opentelemetry_context_is_propagated_without_a_tracing_span() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let remote = parse_trace_headers(header, None).unwrap();
        let _attached = opentelemetry::Context::new()
            .with_remote_span_context(remote)
            .attach();
        assert_eq!(current_trace_headers(), Some((header.to_owned(), None)));
    }
}
