//! `flow-worker`: a replica of the concurrency failure test. Runs `limited` on `flow.job`
//! events, at most [`PER_KEY`] per key and [`SHARED`] in all: its handler audits its start
//! and its end to `<namespace>.audit.flow` (awaiting each ack) around 200 ms of work.

use herald_chaos::now_us;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_chaos::flow::{Audit, Job, PER_KEY, SHARED, audit_subject};
use herald_worker::{Ctx, Function, HandlerError, Worker, shutdown_signal};

/// A replica of the concurrency failure test.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s).
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "flowchaos")]
    namespace: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    herald_chaos::replica_main(
        "flow-worker",
        "warn,async_nats=error",
        Box::pin(run(Args::parse())),
    )
    .await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder()
        .namespace(&args.namespace)
        .connect(&args.server)
        .await
        .context("connecting")?;
    let jetstream = client.jetstream().clone();
    let subject = audit_subject(client.namespace());
    let function = Function::new("limited")
        .on::<Job>()
        // Kills hand their messages back within 15 s; on a crowded 2-core machine (three
        // servers, three workers) a delivery may wait its turn that long, so it is allowed
        // more deliveries than the default before it counts as lost.
        .ack_wait(Duration::from_secs(15))
        .attempts(20)
        .concurrency_limit(PER_KEY)
        .key(|job: &Job| job.key.clone())
        .shared_concurrency_limit("pool", SHARED)
        .handler(move |job: Job, _ctx: Ctx| {
            let (jetstream, subject) = (jetstream.clone(), subject.clone());
            async move {
                let audit = |start: bool| {
                    let line = Audit {
                        n: job.n,
                        key: job.key.clone(),
                        start,
                        at_us: now_us(),
                        pid: std::process::id(),
                    };
                    serde_json::to_vec(&line).unwrap_or_default()
                };
                let published = async {
                    jetstream
                        .publish(subject.clone(), audit(true).into())
                        .await?
                        .await?;
                    tokio::time::sleep(Duration::from_millis(200)).await; // the job's work
                    jetstream
                        .publish(subject.clone(), audit(false).into())
                        .await?
                        .await?;
                    Ok::<(), async_nats::Error>(())
                };
                published
                    .await
                    .map_err(|e| HandlerError::retry(format!("audit: {e}")))
            }
        });
    let worker = Worker::builder(client)
        .function(function)
        .start()
        .await
        .context("starting the worker")?;
    shutdown_signal().await;
    worker.shutdown().await;
    Ok(())
}
