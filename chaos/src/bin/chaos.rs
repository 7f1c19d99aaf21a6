//! `chaos`: runs Herald's failure test from the command line and prints its report.
//!
//! ```sh
//! cargo run -p herald-chaos --release --bin chaos -- --events 20000 --duration 120
//! ```
//!
//! Exits 0 when every check passed, 1 when one failed, 2 when the harness could not run or
//! was interrupted (ctrl-c stops every process it started).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use herald_chaos::{Config, run, worker_binary_next_to_current_exe};

/// Herald's failure test: a 3-node NATS cluster, worker replicas SIGKILLed and SIGTERMed,
/// the consumer's leader node SIGKILLed and restarted, while events are published; then a
/// check that nothing was lost and a report.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Example: cargo run -p herald-chaos --release --bin chaos -- --events 20000 --duration 120"
)]
struct Args {
    /// Valid events to publish.
    #[arg(long, default_value_t = 3000)]
    events: usize,
    /// Invalid events (breaking the schema) to publish.
    #[arg(long, default_value_t = 20)]
    invalid: usize,
    /// Seconds of chaos (publishing takes the first 80 %).
    #[arg(long, default_value_t = 45)]
    duration: u64,
    /// Seconds between two SIGKILLs of a random replica.
    #[arg(long, default_value_t = 6)]
    kill_interval: u64,
    /// Worker replicas running at any time.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Seed of the random choices (default: from the clock; the report prints it).
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds the consumer's leader node stays down.
    #[arg(long, default_value_t = 10)]
    outage: u64,
    /// Seconds to wait after the chaos for every event to be handled.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// The function's ack_wait in seconds.
    #[arg(long, default_value_t = 5)]
    ack_wait: u64,
    /// The namespace.
    #[arg(long, default_value = "chaos")]
    namespace: String,
    /// Keep the replicas' logs here (default: a temporary folder, kept if the run fails).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// The chaos-worker binary (default: next to this one).
    #[arg(long)]
    worker: Option<PathBuf>,
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
    match main_with(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_with(args: Args) -> anyhow::Result<bool> {
    let worker = match args.worker {
        Some(path) => path,
        None => worker_binary_next_to_current_exe()?,
    };
    let mut config = Config::new(worker);
    config.events = args.events;
    config.invalid = args.invalid;
    config.duration = Duration::from_secs(args.duration);
    config.kill_interval = Duration::from_secs(args.kill_interval);
    config.replicas = args.replicas;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.outage = Duration::from_secs(args.outage);
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    config.ack_wait = Duration::from_secs(args.ack_wait);
    config.namespace = args.namespace;
    config.log_dir = args.log_dir;
    // On ctrl-c the run is dropped, which kills every replica and node it started.
    let report = tokio::select! {
        report = run(config) => report?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process it started is stopped"),
    };
    println!("{report}");
    Ok(report.failures().is_empty())
}
