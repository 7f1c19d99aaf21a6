//! `herald runs show`: the stored state of one run; `herald runs cancel`: cancel one run,
//! or a function's runs in a time range.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_worker::{RunStore, StepRecord};

use super::{Global, output};
use crate::exit::Failed;

#[derive(Debug, Args)]
pub(crate) struct Runs {
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
    },
    /// Cancel a run (by event id), or every unfinished run of a function whose event was
    /// published in a time range: no further step runs, and a sleeping run ends now.
    ///
    /// Examples: `herald runs cancel send-email 01936f2b-…`,
    /// `herald runs cancel send-email --since 2026-11-26T00:00:00Z --dry-run`
    Cancel {
        /// The function id.
        function: String,
        /// The event id (`ce-id`) of the one run to cancel.
        #[arg(conflicts_with_all = ["since", "until", "all"])]
        event_id: Option<String>,
        /// Runs of events published at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Runs of events published before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Every unfinished run of the function.
        #[arg(long)]
        all: bool,
        /// Only count the runs that would be cancelled.
        #[arg(long)]
        dry_run: bool,
        /// The reason recorded.
        #[arg(long, default_value = "cancelled by hand")]
        reason: String,
    },
}

fn parse_time(text: &str) -> anyhow::Result<std::time::SystemTime> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok(time.into())
}

async fn cancel(
    client: &herald::Client,
    function: String,
    event_id: Option<String>,
    range: (Option<String>, Option<String>, bool),
    dry_run: bool,
    reason: String,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(event_id) = event_id {
        use herald_worker::CancelOutcome;
        let outcome = herald_worker::cancel_run(client, &function, &event_id, &reason).await?;
        if json {
            let (state, detail) = match &outcome {
                CancelOutcome::Cancelled { woken } => ("cancelled", serde_json::json!(woken)),
                CancelOutcome::AlreadyCancelled(first) => {
                    ("already_cancelled", serde_json::json!(first))
                }
                CancelOutcome::AlreadyFinished(status) => {
                    ("already_finished", serde_json::json!(status.to_string()))
                }
                other => ("other", serde_json::json!(format!("{other:?}"))),
            };
            return output::json(&serde_json::json!({
                "function": function,
                "event_id": event_id,
                "outcome": state,
                "detail": detail,
            }));
        }
        match outcome {
            CancelOutcome::Cancelled { woken: true } => {
                println!("cancelled; the run was waiting and ends now");
            }
            CancelOutcome::Cancelled { .. } => println!("cancelled"),
            CancelOutcome::AlreadyCancelled(first) => println!("already cancelled: {first}"),
            CancelOutcome::AlreadyFinished(status) => {
                println!("the run already finished ({status}); nothing to cancel");
            }
            other => println!("{other:?}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (since, until, all) = range;
    if since.is_none() && until.is_none() && !all {
        anyhow::bail!(
            "say which runs to cancel: an event id, --since/--until, or --all for every unfinished run"
        );
    }
    let bulk = herald_worker::BulkCancel {
        function,
        since: since.as_deref().map(parse_time).transpose()?,
        until: until.as_deref().map(parse_time).transpose()?,
        dry_run,
        reason,
    };
    let report = bulk.run(client).await?;
    if json {
        return output::json(&serde_json::json!({
            "dry_run": dry_run,
            "matched": report.matched,
            "cancelled": report.cancelled,
            "woken": report.woken,
            "already_cancelled": report.already_cancelled,
        }));
    }
    if dry_run {
        println!("{} unfinished runs would be cancelled", report.matched);
    } else {
        println!(
            "cancelled {} runs ({} were waiting and end now; {} were cancelled before)",
            report.cancelled, report.woken, report.already_cancelled
        );
    }
    Ok(ExitCode::SUCCESS)
}

impl Runs {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let store = RunStore::open(&client)
            .await
            .context("the runs bucket is not there; provision the namespace first")?;
        let json = global.json;
        let (function, event_id) = match self.command {
            RunsCommand::Show { function, event_id } => (function, event_id),
            RunsCommand::Cancel {
                function,
                event_id,
                since,
                until,
                all,
                dry_run,
                reason,
            } => {
                return cancel(
                    &client,
                    function,
                    event_id,
                    (since, until, all),
                    dry_run,
                    reason,
                    json,
                )
                .await;
            }
        };
        let report = store.inspect(&function, &event_id).await?;
        if report.outcome.is_none() && report.failure.is_none() && report.steps.is_empty() {
            return Err(Failed::not_found(format!(
                "no stored state for run {} (never ran, expired, or a plain first delivery that succeeded without steps, which is acked without a record: protocol section 7)",
                report.run_key
            ))
            .into());
        }
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
        let mut table = output::table(["STEP", "STATUS", "ATTEMPTS", "DURATION"]);
        for (key, record) in &report.steps {
            match record {
                StepRecord::Ok {
                    attempts,
                    duration_ms,
                    ..
                } => {
                    table.add_row([
                        key.clone(),
                        "ok".to_owned(),
                        attempts.to_string(),
                        format!("{duration_ms}ms"),
                    ]);
                }
                StepRecord::Sleeping { wake_at_ms } => {
                    let wake = herald::headers::format_time(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(*wake_at_ms),
                    );
                    table.add_row([
                        key.clone(),
                        "sleeping".to_owned(),
                        String::new(),
                        format!("wakes at {wake}"),
                    ]);
                }
            }
        }
        output::align_right(&mut table, &[2]);
        output::print(&table);
        Ok(ExitCode::SUCCESS)
    }
}
