//! `herald bench steps`: what a durable step costs: storing its output and, on a later
//! attempt, looking it up; next to the raw KV operations and to a handler without steps.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use herald_worker::{Ctx, Function, HandlerError, StartFrom, Worker};

use crate::Target;
use crate::publish::{OrderPlaced, sample_event};

#[derive(Debug, Args)]
/// `herald bench steps`: its options.
pub struct StepsBench {
    /// Events per worker run.
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    /// Steps per event in the stepped runs.
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

impl StepsBench {
    pub(crate) async fn run(self, connection: &Target) -> anyhow::Result<ExitCode> {
        let (_local, url) = connection.server_or_local()?;
        let client = connection.options().validate(false).connect(&url).await?;
        client.provision().await?;
        println!(
            "steps benchmark: {} events, {} steps each, server {url}",
            self.count, self.steps
        );

        // 1. One store and one lookup, awaited one after the other: latency per operation.
        let kv = client
            .jetstream()
            .get_key_value(client.namespace().runs_bucket())
            .await?;
        let store = herald_worker::RunStore::open(&client).await?;
        let record = herald_worker::StepRecord::Ok {
            output: serde_json::json!({"account": "acct_0193", "plan": "trial"}),
            attempts: 1,
            duration_ms: 3,
            finished_at: "2026-11-25T08:00:00.000000Z".into(),
        };
        let bytes = bytes::Bytes::from(serde_json::to_vec(&record)?);
        let n = 2_000;
        let started = Instant::now();
        for i in 0..n {
            kv.put(format!("bench.raw.s.{i}"), bytes.clone()).await?;
        }
        let raw_put = started.elapsed() / n;
        let started = Instant::now();
        for i in 0..n {
            kv.get(format!("bench.raw.s.{i}")).await?;
        }
        let raw_get = started.elapsed() / n;
        let steps_store = herald_worker::RunStore::clone(&store);
        let started = Instant::now();
        for i in 0..n {
            steps_store
                .put_record(&format!("bench.herald.s.{i}"), &record)
                .await?;
        }
        let herald_put = started.elapsed() / n;
        let started = Instant::now();
        for i in 0..n {
            steps_store
                .get_record(&format!("bench.herald.s.{i}"))
                .await?;
        }
        let herald_get = started.elapsed() / n;
        println!(
            "{:<46} {:>12} {:>8}",
            "one operation, awaited", "µs", "vs raw"
        );
        println!(
            "{:<46} {:>12.1} {:>8.2}",
            "raw KV put",
            raw_put.as_secs_f64() * 1e6,
            1.0
        );
        println!(
            "{:<46} {:>12.1} {:>8.2}",
            "herald step store (first run)",
            herald_put.as_secs_f64() * 1e6,
            herald_put.as_secs_f64() / raw_put.as_secs_f64()
        );
        println!(
            "{:<46} {:>12.1} {:>8.2}",
            "raw KV get",
            raw_get.as_secs_f64() * 1e6,
            1.0
        );
        println!(
            "{:<46} {:>12.1} {:>8.2}",
            "herald step lookup (later attempt)",
            herald_get.as_secs_f64() * 1e6,
            herald_get.as_secs_f64() / raw_get.as_secs_f64()
        );

        // 2. Worker throughput with concurrency: no steps, the run record only, and steps.
        let event = sample_event();
        let mut rates = Vec::new();
        for (label, idempotent, steps) in [
            ("handler, no run record (idempotent off)", false, 0),
            ("handler + run record (default)", true, 0),
            ("handler + run record + steps", true, self.steps),
        ] {
            let stream = client
                .jetstream()
                .get_stream(client.namespace().events_stream())
                .await?;
            stream.purge().await?;
            let mut pending = Vec::new();
            for _ in 0..self.count {
                pending.push(client.publish(&event).await?);
            }
            for ack in pending {
                ack.await?;
            }
            let name = format!("bench-steps-{}", rates.len());
            let handled = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(tokio::sync::Notify::new());
            let (counter, notify, target) = (Arc::clone(&handled), Arc::clone(&done), self.count);
            let function = Function::new(&name)
                .on::<OrderPlaced>()
                .concurrency(200)
                .idempotent(idempotent)
                .start_from(StartFrom::All)
                .handler(move |_event: OrderPlaced, ctx: Ctx| {
                    let (counter, notify) = (Arc::clone(&counter), Arc::clone(&notify));
                    async move {
                        for step in 0..steps {
                            ctx.step(&format!("step {step}"), || async {
                                Ok::<_, HandlerError>(step)
                            })
                            .await?;
                        }
                        if counter.fetch_add(1, Ordering::Relaxed) + 1 == target {
                            notify.notify_one();
                        }
                        Ok(())
                    }
                });
            let started = Instant::now();
            let worker = Worker::builder(client.clone())
                .function(function)
                .sweeper(false)
                .start()
                .await?;
            tokio::time::timeout(Duration::from_secs(300), done.notified())
                .await
                .context("the worker did not finish within 300 s")?;
            let elapsed = started.elapsed();
            worker.shutdown().await;
            let stream = client.namespace().events_stream();
            crate::consumers::delete_function(client.jetstream(), &stream, &name).await;
            rates.push((label, self.count as f64 / elapsed.as_secs_f64()));
        }
        println!(
            "{:<46} {:>12} {:>8}",
            "worker, concurrency 200", "events/s", "vs plain"
        );
        for (label, rate) in &rates {
            println!("{label:<46} {rate:>12.0} {:>8.2}", rate / rates[0].1);
        }
        let per_step = (1.0 / rates[2].1 - 1.0 / rates[1].1) / self.steps.max(1) as f64;
        println!(
            "amortised cost of one step (store) with 200 runs in flight: {:.1} µs",
            per_step * 1e6
        );
        Ok(ExitCode::SUCCESS)
    }
}
