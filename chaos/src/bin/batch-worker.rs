//! `batch-worker`: a replica of the batching failure test. Runs `batched` on `batch.item`
//! events, in batches of [`SIZE`] per key or every [`TIMEOUT_S`] s: each batch works 400 ms,
//! then audits its members to `<namespace>.audit.batch` (awaiting the ack).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_chaos::batch::{Audit, Item, SIZE, TIMEOUT_S, audit_subject};
use herald_chaos::now_us;
use herald_worker::{Ctx, Function, HandlerError, Worker, shutdown_signal};

/// A replica of the batching failure test.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s).
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "batchchaos")]
    namespace: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    herald_chaos::replica_main(
        "batch-worker",
        "warn,async_nats=error",
        Box::pin(run(Args::parse())),
    )
    .await
}

fn function(jetstream: &async_nats::jetstream::Context, subject: &str) -> Function {
    let (jetstream, subject) = (jetstream.clone(), subject.to_owned());
    // A killed worker's deliveries come back after ack_wait; on a crowded 2-core machine a
    // delivery may wait its turn a while, so it gets more deliveries than the default.
    Function::new("batched")
        .on::<Item>()
        .ack_wait(Duration::from_secs(5))
        .attempts(20)
        .concurrency(64)
        .batch(SIZE, Duration::from_secs(TIMEOUT_S))
        .key(|item: &Item| item.key.clone())
        .handler(move |items: Vec<Item>, ctx: Ctx| {
            let (jetstream, subject) = (jetstream.clone(), subject.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(400)).await; // the work
                let line = Audit {
                    batch: ctx.event_id().to_owned(),
                    attempt: ctx.attempt(),
                    keys: items.iter().map(|i| i.key.clone()).collect(),
                    items: items.iter().map(|i| i.n).collect(),
                    at_us: now_us(),
                    pid: std::process::id(),
                };
                let payload = serde_json::to_vec(&line).map_err(HandlerError::terminal)?;
                let published = async {
                    jetstream.publish(subject, payload.into()).await?.await?;
                    Ok::<(), async_nats::Error>(())
                };
                published
                    .await
                    .map_err(|e| HandlerError::retry(format!("audit: {e}")))
            }
        })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder()
        .namespace(&args.namespace)
        .connect(&args.server)
        .await
        .context("connecting")?;
    let subject = audit_subject(client.namespace());
    let worker = Worker::builder(client.clone())
        .function(function(client.jetstream(), &subject))
        .start()
        .await
        .context("starting the worker")?;
    shutdown_signal().await;
    worker.shutdown().await;
    Ok(())
}
