//! `pace-worker`: a replica of the throttle and rate-limit failure tests. Runs `throttled`
//! on `pace.call` events and `rated` on `pace.hit` events (one key each, paced as
//! `herald_chaos::pace` says); each handler audits its start to `<namespace>.audit.pace`,
//! awaiting the ack. With `--stall`, a hit marked `stall` holds its first attempt for a
//! minute, so the test can kill the worker between the decision and the ack.

use herald_chaos::now_us;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_chaos::pace::{
    Call, Hit, RATE_BURST, RATE_LIMIT, RATE_PERIOD_S, Start, THROTTLE_BURST, THROTTLE_IN_FLIGHT,
    THROTTLE_PER_S, audit_subject,
};
use herald_worker::{Ctx, Function, HandlerError, Worker, shutdown_signal};

/// A replica of the throttle and rate-limit failure tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s).
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "pacechaos")]
    namespace: String,
    /// Hold the first attempt of a hit marked `stall` for a minute.
    #[arg(long)]
    stall: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    herald_chaos::replica_main(
        "pace-worker",
        "warn,async_nats=error",
        Box::pin(run(Args::parse())),
    )
    .await
}

/// Audits a start, awaiting the ack; a failure is a retry.
async fn audit(
    jetstream: &async_nats::jetstream::Context,
    subject: &str,
    ctx: &Ctx,
) -> Result<(), HandlerError> {
    let line = Start {
        function: ctx.function().to_owned(),
        event_id: ctx.event_id().to_owned(),
        attempt: ctx.attempt(),
        at_us: now_us(),
        pid: std::process::id(),
    };
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

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder()
        .namespace(&args.namespace)
        .connect(&args.server)
        .await
        .context("connecting")?;
    let jetstream = client.jetstream().clone();
    let subject = audit_subject(client.namespace());
    let (js, at) = (jetstream.clone(), subject.clone());
    // A killed worker's deliveries come back after ack_wait; on a crowded 2-core machine a
    // delivery may wait its turn a while, so it gets more deliveries than the default.
    let throttled = Function::new("throttled")
        .on::<Call>()
        .ack_wait(Duration::from_secs(5))
        .attempts(20)
        .max_ack_pending(THROTTLE_IN_FLIGHT)
        .throttle(THROTTLE_PER_S, Duration::from_secs(1))
        .burst(THROTTLE_BURST)
        .handler(move |_call: Call, ctx: Ctx| {
            let (js, at) = (js.clone(), at.clone());
            async move { audit(&js, &at, &ctx).await }
        });
    let stall = args.stall;
    let rated = Function::new("rated")
        .on::<Hit>()
        .ack_wait(Duration::from_secs(5))
        .attempts(20)
        .rate_limit(RATE_LIMIT, Duration::from_secs(RATE_PERIOD_S))
        .burst(RATE_BURST)
        .handler(move |hit: Hit, ctx: Ctx| {
            let (jetstream, subject) = (jetstream.clone(), subject.clone());
            async move {
                audit(&jetstream, &subject, &ctx).await?;
                if stall && hit.stall && ctx.attempt() == 1 {
                    // Decided and started, not acked: the test kills this worker now.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(())
            }
        });
    let worker = Worker::builder(client)
        .function(throttled)
        .function(rated)
        .start()
        .await
        .context("starting the worker")?;
    shutdown_signal().await;
    worker.shutdown().await;
    Ok(())
}
