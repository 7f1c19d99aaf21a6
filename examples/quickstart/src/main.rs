//! Herald's quickstart: `cargo run -p quickstart`.
//!
//! Starts a local nats-server (installing it on first use) unless `NATS_URL` points at yours,
//! then runs an HTTP endpoint that publishes `source.connected` and a worker whose
//! `backfill-user-data` function does the slow part, and prints what happens: requests
//! answered at once, events processed, a retry and a dead letter. The namespace is
//! `herald` (or `HERALD_NAMESPACE`), so that `herald functions` and `herald dlq list` see it.

use herald_local_nats::NatsServer;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = NatsServer::from_env_or_start()?;
    let origin = if server.is_local() {
        "a local nats-server started for this demo"
    } else {
        "NATS_URL"
    };
    println!("NATS      {} ({origin})", server.url());
    let namespace = std::env::var("HERALD_NAMESPACE").unwrap_or_else(|_| "herald".to_owned());
    let summary = quickstart::run(&server.url(), &namespace).await?;
    println!(
        "summary   {} requests answered at once, {} events processed, {} retry, {} dead letter",
        summary.answered, summary.processed, summary.retries, summary.dead_letters
    );
    Ok(())
}
