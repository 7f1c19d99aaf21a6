//! OTLP export of traces and metrics (feature `otlp`).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_subscriber::layer::SubscriberExt;
//! // OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318) names the collector.
//! let otlp = herald_worker::telemetry::otlp::install("backfill-worker")?;
//! let subscriber = tracing_subscriber::registry().with(otlp.layer());
//! tracing::subscriber::set_global_default(subscriber)?;
//! // … run the worker; on exit:
//! otlp.shutdown();
//! # Ok(()) }
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The installed providers; keep it alive and call [`shutdown`](Otlp::shutdown) on exit
/// so that buffered spans and metrics are sent.
#[derive(Debug)]
pub struct Otlp {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

/// Installing the exporters failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OTLP export: {0}")]
pub struct OtlpError(String);

/// Builds OTLP/HTTP exporters for traces and metrics (endpoint from the standard
/// `OTEL_EXPORTER_OTLP_*` variables) and installs them as the global providers.
pub fn install(service_name: &str) -> Result<Otlp, OtlpError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| OtlpError(e.to_string()))?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .build()
        .map_err(|e| OtlpError(e.to_string()))?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    Ok(Otlp {
        tracer_provider,
        meter_provider,
    })
}

impl Otlp {
    /// The `tracing` layer that turns spans into OpenTelemetry spans for this exporter.
    pub fn layer<S>(
        &self,
    ) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer_provider.tracer("herald"))
    }

    /// Flushes and stops both exporters.
    pub fn shutdown(self) {
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}
