//! `herald bench consume --telemetry-overhead`: the Herald worker with tracing and metrics
//! off, then on, in alternating rounds.

use anyhow::Context as _;

use crate::consumers::Setup;

/// A span exporter that drops everything: the cost measured is Herald's and the SDK's.
#[derive(Debug)]
struct DropSpans;

impl opentelemetry_sdk::trace::SpanExporter for DropSpans {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// Herald worker rounds (`idempotent(false)`) with telemetry off, then the same with a
/// tracing subscriber and a meter provider installed globally; prints the ratio.
pub(crate) async fn telemetry_overhead(
    setup: &Setup,
    client: &herald::Client,
    rounds: usize,
    sample_ratio: f64,
) -> anyhow::Result<()> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN)
    };
    // One global subscriber whose OpenTelemetry layer is switched on and off per round
    // (a reload layer), and the global tracer and meter providers swapped likewise (a
    // worker takes them when it starts), so that the rounds with and without telemetry
    // can alternate.
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    let (layer, switch) = tracing_subscriber::reload::Layer::new(None::<Boxed>);
    // Info level, as a service runs: the debug events of the NATS client stay out.
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::filter::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber)
        .context("installing the tracing subscriber")?;
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(sample_ratio),
        )))
        .with_batch_exporter(DropSpans)
        .build();
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()?;
    let meter_provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(exporter)
        .build();
    let tracing_on = std::env::var_os("HERALD_BENCH_NO_TRACING").is_none();
    let metrics_on = std::env::var_os("HERALD_BENCH_NO_METRICS").is_none();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        let enabled = round % 2 == 1;
        let layer: Option<Boxed> = (enabled && tracing_on).then(|| {
            Box::new(
                tracing_opentelemetry::layer().with_tracer(tracer_provider.tracer("herald-bench")),
            ) as Boxed
        });
        switch
            .reload(layer)
            .context("switching the tracing layer")?;
        if enabled && tracing_on {
            opentelemetry::global::set_tracer_provider(tracer_provider.clone());
        } else {
            opentelemetry::global::set_tracer_provider(
                opentelemetry::trace::noop::NoopTracerProvider::new(),
            );
        }
        if enabled && metrics_on {
            opentelemetry::global::set_meter_provider(meter_provider.clone());
        } else {
            opentelemetry::global::set_meter_provider(
                opentelemetry::metrics::noop::NoopMeterProvider::new(),
            );
        }
        let name = format!("bench-telemetry-{round}");
        let (task_setup, task_client, task_name) = (setup.clone(), client.clone(), name.clone());
        // Run on a worker thread, as a service's tasks do.
        let elapsed = tokio::spawn(async move {
            task_setup
                .herald(std::slice::from_ref(&task_client), &task_name, false)
                .await
        })
        .await??
        .elapsed;
        let stream = client.namespace().events_stream();
        crate::consumers::delete_function(client.jetstream(), &stream, &name).await;
        let rate = setup.count as f64 / elapsed.as_secs_f64();
        if enabled {
            on.push(rate);
        } else {
            off.push(rate);
        }
    }
    let (off, on) = (median(off), median(on));
    println!(
        "{:<48} {:>15} {:>8}",
        "herald worker, idempotent(false)", "msgs/s (median)", "vs off"
    );
    println!(
        "{:<48} {:>15.0} {:>8.2}",
        "tracing and metrics off", off, 1.0
    );
    println!(
        "{:<48} {:>15.0} {:>8.2}",
        format!(
            "tracing (sampling {:.0} %) and metrics on",
            sample_ratio * 100.0
        ),
        on,
        on / off
    );
    println!("overhead: {:.1} %", (1.0 - on / off) * 100.0);
    Ok(())
}
