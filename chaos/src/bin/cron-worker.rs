//! `cron-worker`: one replica of the cron failure test's worker.
//!
//! Runs the function `every-second`, cron `*/1 * * * * *` in `Europe/Paris`. Each tick's
//! handler publishes an audit record `{run, due, next, pid, attempt}` to
//! `<namespace>.audit.cron` (no dedup id, so a tick handled twice shows twice) and awaits
//! its ack before returning. Same flags and exit behaviour as `chaos-worker`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use herald::Client;
use herald_worker::{Ctx, Function, HandlerError, Tick, Worker, shutdown_signal};

/// One replica of the cron failure test's worker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The NATS server(s), comma separated.
    #[arg(long, env = "NATS_URL")]
    server: String,
    /// The Herald namespace.
    #[arg(long, default_value = "cronchaos")]
    namespace: String,
    /// The function's ack_wait in seconds.
    #[arg(long, default_value_t = 5)]
    ack_wait: u64,
    /// Shut down when standard input closes.
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
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cron-worker {pid}: EXITING ON ITS OWN with an error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::builder()
        .namespace(&args.namespace)
        .connection_name(format!("cron-worker-{}", std::process::id()))
        .connect(&args.server)
        .await
        .context("connecting")?;
    let jetstream = client.jetstream().clone();
    let subject = herald_chaos::cron::audit_subject(client.namespace());
    let pid = std::process::id();
    let function = Function::new(herald_chaos::cron::FUNCTION_ID)
        .cron(herald_chaos::cron::PATTERN)
        .time_zone(herald_chaos::cron::ZONE)
        .ack_wait(Duration::from_secs(args.ack_wait))
        .handler(move |tick: Tick, ctx: Ctx| {
            let jetstream = jetstream.clone();
            let subject = subject.clone();
            async move {
                let audit = herald_chaos::cron::Audit {
                    run: ctx.event_id().to_owned(),
                    due: tick.scheduled_at,
                    next: tick.next,
                    pid,
                    attempt: ctx.attempt(),
                };
                let body = serde_json::to_vec(&audit).map_err(HandlerError::terminal)?;
                jetstream
                    .publish(subject, body.into())
                    .await
                    .map_err(|error| HandlerError::retry(format!("publishing the audit: {error}")))?
                    .await
                    .map_err(|error| {
                        HandlerError::retry(format!("the audit was not confirmed: {error}"))
                    })?;
                Ok(())
            }
        });
    function.check().context("defining the function")?;
    let exit_with_parent = args.exit_with_parent;
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = parent_gone(), if exit_with_parent => {}
        }
    };
    Worker::builder(client)
        .function(function)
        .run_until(stop)
        .await
        .context("the worker stopped")?;
    Ok(())
}

/// Completes when standard input reaches its end (or fails).
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
