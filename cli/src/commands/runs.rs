//! `herald runs show`: the stored state of one run.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_worker::{RunStore, StepRecord};

use super::Connection;

#[derive(Debug, Args)]
pub(crate) struct Runs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: RunsCommand,
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Which steps of a run ran, with what outcome, how long and how many attempts.
    ///
    /// Example: `herald runs show signup-flow 01936f2b-7c2e-7a1c-9f0e-2b3c4d5e6f70`
    Show {
        /// The function id.
        function: String,
        /// The event id (`ce-id`).
        event_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Runs {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .connect(self.connection.url()?)
            .await?;
        let store = RunStore::open(&client)
            .await
            .context("the runs bucket is not there; provision the namespace first")?;
        let RunsCommand::Show {
            function,
            event_id,
            json,
        } = self.command;
        let report = store.inspect(&function, &event_id).await?;
        if json {
            let steps: Vec<serde_json::Value> = report
                .steps
                .iter()
                .map(|(key, record)| serde_json::json!({"step": key, "record": record}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "run": report.run_key,
                    "outcome": report.outcome,
                    "failure": report.failure,
                    "steps": steps,
                }))?
            );
            return Ok(ExitCode::SUCCESS);
        }
        if report.outcome.is_none() && report.failure.is_none() && report.steps.is_empty() {
            println!(
                "no stored state for run {} (never ran, or expired)",
                report.run_key
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("run {}", report.run_key);
        match &report.outcome {
            Some(outcome) => println!(
                "  outcome   {} at {}{}",
                outcome.status,
                outcome.finished_at,
                outcome
                    .detail
                    .as_ref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
            None => println!("  outcome   not finished"),
        }
        if let Some(failure) = &report.failure {
            println!(
                "  failing   {} failed {} time(s): {}",
                failure
                    .step
                    .as_deref()
                    .map_or(format!("after step {}", failure.position), |s| format!(
                        "step `{s}`"
                    )),
                failure.failures,
                failure.error
            );
        }
        println!(
            "  {:<32} {:<10} {:>9} {:>10}",
            "STEP", "STATUS", "ATTEMPTS", "DURATION"
        );
        for (key, record) in &report.steps {
            match record {
                StepRecord::Ok {
                    attempts,
                    duration_ms,
                    ..
                } => {
                    println!(
                        "  {key:<32} {:<10} {:>9} {:>8}ms",
                        "ok", attempts, duration_ms
                    );
                }
                StepRecord::Sleeping { wake_at_ms } => {
                    let wake = herald::headers::format_time(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(*wake_at_ms),
                    );
                    println!("  {key:<32} {:<10} wakes at {wake}", "sleeping");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
