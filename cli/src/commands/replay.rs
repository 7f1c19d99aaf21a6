//! `herald replay`: run one function again over events of the retained log.

use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use clap::Args;

use super::{Global, output};

#[derive(Debug, Args)]
pub(crate) struct Replay {
    /// The function to run again (only it sees the replayed events).
    #[arg(long)]
    function: String,
    /// Events published at or after this RFC 3339 time.
    #[arg(long)]
    since: String,
    /// Events published before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only this event type (default: the function's triggers).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Show what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// At most this many per second.
    #[arg(long)]
    rate: Option<f64>,
}

fn parse_time(text: &str) -> anyhow::Result<SystemTime> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok(time.into())
}

impl Replay {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let mut replay =
            herald_worker::Replay::new(client, &self.function, parse_time(&self.since)?);
        if let Some(until) = &self.until {
            replay = replay.until(parse_time(until)?);
        }
        if let Some(event_type) = &self.event_type {
            replay = replay.event_type(event_type);
        }
        if let Some(rate) = self.rate {
            replay = replay.rate(rate);
        }
        if self.dry_run {
            let count = replay.count().await?;
            if global.json {
                return output::json(&serde_json::json!({
                    "dry_run": true,
                    "function": self.function,
                    "would_replay": count,
                }));
            }
            println!(
                "dry run: {count} event(s) would be replayed to {}, nothing changed",
                self.function
            );
            return Ok(ExitCode::SUCCESS);
        }
        let started = Instant::now();
        let bar = output::progress("replay", 0, global.json);
        let outcome = replay
            .run(|progress| {
                bar.set_length(progress.replayed + progress.remaining);
                bar.set_position(progress.replayed);
            })
            .await?;
        bar.finish_and_clear();
        if global.json {
            return output::json(&serde_json::json!({
                "function": self.function,
                "replay_id": outcome.replay_id,
                "replayed": outcome.replayed,
                "seconds": started.elapsed().as_secs_f64(),
            }));
        }
        println!(
            "replayed {} event(s) to {} (replay {}) in {:.1}s",
            outcome.replayed,
            self.function,
            outcome.replay_id,
            started.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    }
}
