//! `chaos-worker`: one replica of the chaos test's worker.
//!
//! Runs the plain function `backfill-user-data` on `chaos.job` events. For each event the
//! handler publishes an [`Effect`] (`{event_id, n, pid, attempt}`) to the stream
//! `CHAOS_EFFECTS` and waits for the stream's ack before returning `Ok`, so an effect is
//! durable before the event is acked, and an effect recorded twice shows as two messages.
//!
//! Logs go to stderr. On SIGTERM or ctrl-c the worker shuts down gracefully and exits 0.
//! If it stops on its own (a start-up error, a worker error) it says so on stderr and exits
//! 1, which the harness counts as a failure.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_chaos::event::{ChaosJob, Effect, FUNCTION_ID, effects_subject};
use herald_worker::{Ctx, Function, HandlerError, Worker, shutdown_signal};

/// One replica of the chaos test's worker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s), comma separated.
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "chaos")]
    namespace: String,
    /// The function's ack_wait in seconds.
    #[arg(long, default_value_t = 5)]
    ack_wait: u64,
    /// Shut down when standard input closes: the harness holds its write end, so a replica
    /// never outlives a harness that was killed.
    #[arg(long)]
    exit_with_parent: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .init();
    let args = Args::parse();
    let pid = std::process::id();
    match run(args).await {
        Ok(()) => {
            tracing::info!(pid, "chaos-worker: stopped after a graceful shutdown");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(
                pid,
                error = format!("{error:#}"),
                "chaos-worker: exiting on its own"
            );
            eprintln!("chaos-worker {pid}: EXITING ON ITS OWN with an error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Default stream settings: on a cluster the SDK provisions min(3, cluster size) replicas.
    let client = Client::builder()
        .namespace(&args.namespace)
        .source("urn:herald:service:chaos-worker")
        .connection_name(format!("chaos-worker-{}", std::process::id()))
        .connect(&args.server)
        .await
        .context("connecting")?;
    let jetstream = client.jetstream().clone();
    let subject = effects_subject(client.namespace());
    let pid = std::process::id();
    let function = Function::new(FUNCTION_ID)
        .on::<ChaosJob>()
        // Shorter than the default 30 s: the messages a SIGKILLed replica held come back to
        // the others after ack_wait, so a short one keeps the test's drain within seconds.
        .ack_wait(Duration::from_secs(args.ack_wait))
        .handler(move |job: ChaosJob, ctx: Ctx| {
            let jetstream = jetstream.clone();
            let subject = subject.clone();
            async move {
                let effect = Effect {
                    event_id: ctx.event_id().to_owned(),
                    n: job.n,
                    pid,
                    attempt: ctx.attempt(),
                };
                let body = serde_json::to_vec(&effect).map_err(HandlerError::terminal)?;
                // No Nats-Msg-Id: a second effect of the same event must be visible.
                jetstream
                    .publish(subject, body.into())
                    .await
                    .map_err(|error| {
                        HandlerError::retry(format!("publishing the effect: {error}"))
                    })?
                    .await
                    .map_err(|error| {
                        HandlerError::retry(format!("the effect was not confirmed: {error}"))
                    })?;
                Ok(())
            }
        });
    function.check().context("defining the function")?;
    let exit_with_parent = args.exit_with_parent;
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = parent_gone(), if exit_with_parent => {
                tracing::warn!("standard input closed: the harness is gone, shutting down");
            }
        }
    };
    tracing::info!(pid, namespace = args.namespace, "chaos-worker starting");
    Worker::builder(client)
        .function(function)
        .run_until(stop)
        .await
        .context("the worker stopped")?;
    Ok(())
}

/// Completes when standard input reaches its end (or fails).
///
/// The blocking read runs on a detached thread of its own: a read on tokio's blocking pool
/// would keep the runtime, and so the process, from ending after a graceful shutdown.
async fn parent_gone() {
    let (done, gone) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = [0_u8; 64];
        while let Ok(1..) = std::io::Read::read(&mut stdin, &mut buffer) {}
        let _ = done.send(());
    });
    let _ = gone.await;
}
