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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
        let local;
        let url = match &self.connection.server {
            Some(url) => url.clone(),
            None => {
                eprintln!("no --server or NATS_URL: starting a local nats-server");
                local = herald_local_nats::LocalNats::start()?;
                local.url()
            }
        };
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

        let mut results: Vec<(Mode, Vec<f64>)> =
            Mode::ALL.iter().map(|m| (*m, Vec::new())).collect();
        let bench = Arc::new(self);
        for round in 0..bench.rounds {
            for offset in 0..Mode::ALL.len() {
                let mode = Mode::ALL[(round + offset) % Mode::ALL.len()];
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
            })?;
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
