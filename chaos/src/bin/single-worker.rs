//! `single-worker`: a replica of the singleton failure test. Runs `single_skip`
//! (`SingletonMode::Skip`) and `single_cancel` (`SingletonMode::Cancel`) on `single.request`
//! events, keyed by the request's key: each run does [`STEPS`] steps of [`STEP_MS`] ms, and
//! each step audits its start and its end to `<namespace>.audit.single` (awaiting each ack).

use herald_chaos::now_us;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_chaos::single::{Audit, CANCEL, Request, SKIP, STEP_MS, STEPS, audit_subject};
use herald_worker::{Ctx, Function, HandlerError, SingletonMode, Worker, shutdown_signal};

/// A replica of the singleton failure test.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s).
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "singlechaos")]
    namespace: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    herald_chaos::replica_main(
        "single-worker",
        "warn,async_nats=error",
        Box::pin(run(Args::parse())),
    )
    .await
}

/// Audits one line, awaiting the ack.
async fn audit(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    line: Audit,
) -> Result<(), HandlerError> {
    let payload = serde_json::to_vec(&line).map_err(HandlerError::terminal)?;
    let published = async {
        jetstream
            .publish(subject.to_owned(), payload.into())
            .await?
            .await?;
        Ok::<(), async_nats::Error>(())
    };
    published
        .await
        .map_err(|e| HandlerError::retry(format!("audit: {e}")))
}

fn function(
    name: &str,
    mode: SingletonMode,
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
) -> Function {
    let (jetstream, subject) = (jetstream.clone(), subject.to_owned());
    // A killed worker's deliveries come back after ack_wait; on a crowded 2-core machine a
    // delivery may wait its turn a while, so it gets more deliveries than the default.
    Function::new(name)
        .on::<Request>()
        .ack_wait(Duration::from_secs(5))
        .attempts(20)
        .singleton(mode)
        .key(|request: &Request| request.key.clone())
        .handler(move |request: Request, ctx: Ctx| {
            let (jetstream, subject) = (jetstream.clone(), subject.clone());
            async move {
                for step in 0..STEPS {
                    let line = |start: bool| Audit {
                        function: ctx.function().to_owned(),
                        run: ctx.event_id().to_owned(),
                        key: request.key.clone(),
                        step,
                        start,
                        at_us: now_us(),
                        worker: std::process::id(),
                    };
                    ctx.step(&format!("work-{step}"), || async {
                        audit(&jetstream, &subject, line(true)).await?;
                        tokio::time::sleep(Duration::from_millis(STEP_MS)).await; // the work
                        audit(&jetstream, &subject, line(false)).await
                    })
                    .await?;
                }
                Ok(())
            }
        })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder()
        .namespace(&args.namespace)
        .connect(&args.server)
        .await
        .context("connecting")?;
    let jetstream = client.jetstream().clone();
    let subject = audit_subject(client.namespace());
    let worker = Worker::builder(client)
        .function(function(SKIP, SingletonMode::Skip, &jetstream, &subject))
        .function(function(
            CANCEL,
            SingletonMode::Cancel,
            &jetstream,
            &subject,
        ))
        .start()
        .await
        .context("starting the worker")?;
    shutdown_signal().await;
    worker.shutdown().await;
    Ok(())
}
