//! `herald bench consume`: a Herald worker against the raw async-nats pull consumer, on the
//! same stored events, one after the other in one process against one server.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use clap::Args;
use futures::StreamExt;
use herald_worker::{Ctx, Function, HandlerError, StartFrom, Worker};

use super::Connection;
use super::bench::{OrderPlaced, sample_event};

#[derive(Debug, Args)]
pub(crate) struct ConsumeBench {
    #[command(flatten)]
    connection: Connection,
    /// Events per run.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Pull batch of the raw client, and concurrency of the Herald function (its pull batch).
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Rounds; each runs every mode once in rotating order. The median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these modes (comma-separated; the first is the reference of the ratio).
    #[arg(long, value_delimiter = ',', value_enum)]
    modes: Vec<Mode>,
    /// Instead: measure the Herald worker with tracing and metrics off, then on (an SDK
    /// tracer provider installed globally, sampling every span into a batch exporter that
    /// drops them, a tracing-opentelemetry layer, and an SDK meter provider), and print the
    /// ratio.
    #[arg(long)]
    telemetry_overhead: bool,
    /// With --telemetry-overhead: the share of traces sampled (parent-based ratio sampler).
    #[arg(long, default_value_t = 1.0)]
    sample_ratio: f64,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Raw,
    RawDecode,
    Herald,
    HeraldRecorded,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Raw,
        Mode::RawDecode,
        Mode::Herald,
        Mode::HeraldRecorded,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::Raw => "raw async-nats (pull, ack)",
            Mode::RawDecode => "raw async-nats (pull, serde_json decode, ack)",
            Mode::Herald => "herald worker, idempotent(false)",
            Mode::HeraldRecorded => "herald worker, default (runs recorded)",
        }
    }
}

impl ConsumeBench {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.count > 0 && self.batch > 0 && self.rounds > 0,
            "--count, --batch and --rounds must be positive"
        );
        let (_local, url) = self.connection.server_or_local()?;
        let client = self
            .connection
            .options()
            .validate(false)
            .connect(&url)
            .await?;
        client.provision().await?;
        let js = client.jetstream().clone();
        let stream_name = client.namespace().events_stream();
        let stream = js.get_stream(&stream_name).await?;
        stream.purge().await?;
        let event = sample_event();
        let mut in_flight = Vec::with_capacity(1024);
        for _ in 0..self.count {
            in_flight.push(client.publish(&event).await?);
            if in_flight.len() == 1024 {
                for ack in in_flight.drain(..) {
                    ack.await?;
                }
            }
        }
        for ack in in_flight.drain(..) {
            ack.await?;
        }
        println!(
            "consume benchmark: {} stored events, batch {}, {} rounds, server {url}",
            self.count, self.batch, self.rounds
        );

        let bench = Arc::new(self);
        if bench.telemetry_overhead {
            return bench.telemetry_overhead(&client).await;
        }
        let modes = if bench.modes.is_empty() {
            Mode::ALL.to_vec()
        } else {
            bench.modes.clone()
        };
        let mut results: Vec<(Mode, Vec<f64>)> = modes.iter().map(|m| (*m, Vec::new())).collect();
        for round in 0..bench.rounds {
            for offset in 0..modes.len() {
                let mode = modes[(round + offset) % modes.len()];
                let name = format!("bench-consume-{round}-{offset}");
                let runner = Arc::clone(&bench);
                let (task_client, task_js, task_stream) =
                    (client.clone(), js.clone(), stream_name.clone());
                // Run on a worker thread, as a service's tasks do.
                let elapsed = tokio::spawn(async move {
                    match mode {
                        Mode::Raw => runner.raw(&task_js, &task_stream, &name, false).await,
                        Mode::RawDecode => runner.raw(&task_js, &task_stream, &name, true).await,
                        Mode::Herald => runner.herald(&task_client, &name, false).await,
                        Mode::HeraldRecorded => runner.herald(&task_client, &name, true).await,
                    }
                })
                .await??;
                js.delete_consumer_from_stream(
                    &format!("bench-consume-{round}-{offset}"),
                    &stream_name,
                )
                .await
                .ok();
                if let Some((_, rates)) = results.iter_mut().find(|(m, _)| *m == mode) {
                    rates.push(bench.count as f64 / elapsed.as_secs_f64());
                }
            }
        }
        let median = |rates: &[f64]| {
            let mut sorted = rates.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        let raw_rate = median(&results[0].1);
        println!("{:<48} {:>15} {:>8}", "mode", "msgs/s (median)", "vs raw");
        for (mode, rates) in &results {
            let rate = median(rates);
            println!(
                "{:<48} {:>15.0} {:>8.2}",
                mode.label(),
                rate,
                rate / raw_rate
            );
        }
        js.get_stream(&stream_name).await?.purge().await?;
        Ok(ExitCode::SUCCESS)
    }

    /// Herald worker rounds with telemetry off, then the same with a tracing subscriber
    /// and a meter provider installed globally.
    async fn telemetry_overhead(
        self: &Arc<Self>,
        client: &herald::Client,
    ) -> anyhow::Result<ExitCode> {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let median = |mut rates: Vec<f64>| {
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
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
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(self.sample_ratio),
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
        for round in 0..self.rounds * 2 {
            let enabled = round % 2 == 1;
            let layer: Option<Boxed> = (enabled && tracing_on).then(|| {
                Box::new(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer_provider.tracer("herald-bench")),
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
            let runner = Arc::clone(self);
            let task_client = client.clone();
            let task_name = name.clone();
            let elapsed =
                tokio::spawn(async move { runner.herald(&task_client, &task_name, false).await })
                    .await??;
            client
                .jetstream()
                .delete_consumer_from_stream(&name, client.namespace().events_stream())
                .await
                .ok();
            let rate = self.count as f64 / elapsed.as_secs_f64();
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
                self.sample_ratio * 100.0
            ),
            on,
            on / off
        );
        println!("overhead: {:.1} %", (1.0 - on / off) * 100.0);
        Ok(ExitCode::SUCCESS)
    }

    /// Pull batches of `--batch` with the raw client and ack each message.
    async fn raw(
        &self,
        js: &jetstream::Context,
        stream_name: &str,
        name: &str,
        decode: bool,
    ) -> anyhow::Result<Duration> {
        let consumer = js
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some(name.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ..Default::default()
                },
                stream_name,
            )
            .await?;
        let started = Instant::now();
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .messages()
            .await?;
        let mut handled = 0;
        while handled < self.count {
            let message = tokio::time::timeout(Duration::from_secs(30), messages.next())
                .await
                .context("no message within 30 s")?
                .context("the message stream ended")?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if decode {
                let event: OrderPlaced = serde_json::from_slice(&message.payload)?;
                std::hint::black_box(event);
            }
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            handled += 1;
        }
        Ok(started.elapsed())
    }

    /// A Herald worker with one function whose handler only counts.
    async fn herald(
        &self,
        client: &herald::Client,
        name: &str,
        idempotent: bool,
    ) -> anyhow::Result<Duration> {
        let handled = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let (counter, notify, target) = (Arc::clone(&handled), Arc::clone(&done), self.count);
        let function = Function::new(name)
            .on::<OrderPlaced>()
            .concurrency(self.batch)
            .idempotent(idempotent)
            .start_from(StartFrom::All)
            .handler(move |event: OrderPlaced, _ctx: Ctx| {
                std::hint::black_box(event);
                if counter.fetch_add(1, Ordering::Relaxed) + 1 == target {
                    notify.notify_one();
                }
                async { Ok::<(), HandlerError>(()) }
            });
        let started = Instant::now();
        let worker = Worker::builder(client.clone())
            .function(function)
            .sweeper(false)
            .start()
            .await?;
        tokio::time::timeout(Duration::from_secs(120), done.notified())
            .await
            .context("the worker did not handle every event within 120 s")?;
        let elapsed = started.elapsed();
        worker.shutdown().await;
        Ok(elapsed)
    }
}
