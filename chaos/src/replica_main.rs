//! The `main` of the worker binaries of the flow-control tests (`flow-worker`,
//! `pace-worker`, `single-worker`, `invoke-worker`): logs to stderr, filtered by `RUST_LOG`,
//! then the binary's own `run`, whose error is printed with the binary's name.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

/// Sets up logging (`RUST_LOG`, else `default_filter`), awaits `run`, and turns its result
/// into the process's exit code, printing `<name>: <error>` on failure.
pub async fn replica_main<E: Display>(
    name: &str,
    default_filter: &str,
    run: impl Future<Output = Result<(), E>>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .init();
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The time in Unix µs, as the audits of the flow-control tests record it (0 if the clock
/// is before 1970).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
