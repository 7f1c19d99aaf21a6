//! `herald dlq list | show | redrive | purge`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_worker::{DeadLetterEntry, DeadLetterFilter, DeadLetters};
use serde_json::json;

use super::{Global, output};
use crate::exit::Failed;

#[derive(Debug, Args)]
pub(crate) struct Dlq {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Clone, Args)]
struct Filter {
    /// Only this function's dead letters.
    #[arg(long, short)]
    function: Option<String>,
    /// Only this reason (handler_error, terminal_error, schema_violation, decode_error,
    /// timeout, max_deliveries).
    #[arg(long)]
    reason: Option<String>,
    /// Only this event type.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only dead-lettered at or after this RFC 3339 UTC time.
    #[arg(long)]
    since: Option<String>,
    /// Only dead-lettered before this RFC 3339 UTC time.
    #[arg(long)]
    until: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
}

impl Filter {
    fn to_filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            function: self.function.clone(),
            reason: self.reason.clone(),
            event_type: self.event_type.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            limit: self.limit,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first.
    ///
    /// Example: `herald dlq list --function backfill-user-data --reason handler_error`
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Headers, error and payload of one dead letter.
    ///
    /// Example: `herald dlq show 42`
    Show {
        /// Its sequence in the dead-letter stream.
        sequence: u64,
    },
    /// Send dead letters back to their function (only that function sees them, with a fresh
    /// attempt count), then delete them. Safe to run again after an interruption.
    ///
    /// Example: `herald dlq redrive --function backfill-user-data --rate 50`
    Redrive {
        #[command(flatten)]
        filter: Filter,
        /// Show what would be redriven; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Replace the payload with this file's JSON (validated against the event's schema
        /// in the registry when one is registered).
        #[arg(long)]
        payload: Option<PathBuf>,
    },
    /// Delete dead letters.
    ///
    /// Example: `herald dlq purge --function backfill-user-data --yes`
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// Do not ask for confirmation (without it, and without a terminal to ask on, nothing
        /// is deleted and the exit code is 4).
        #[arg(long)]
        yes: bool,
    },
}

fn entry_json(entry: &DeadLetterEntry, with_payload: bool) -> serde_json::Value {
    let mut value = json!({
        "sequence": entry.sequence,
        "function": entry.function,
        "reason": entry.reason,
        "error": entry.error,
        "attempts": entry.attempts,
        "step": entry.step,
        "time": entry.time,
        "event_type": entry.event_type,
        "event_id": entry.event_id,
        "event_time": entry.event_time,
    });
    if with_payload {
        let headers: serde_json::Map<String, serde_json::Value> = entry
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v[0].to_string())))
            .collect();
        value["headers"] = serde_json::Value::Object(headers);
        value["payload"] = serde_json::from_slice(&entry.payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&entry.payload)));
    }
    value
}

impl Dlq {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let letters = DeadLetters::new(client.clone());
        match self.command {
            DlqCommand::List { filter } => {
                let found = letters.list(&filter.to_filter()).await?;
                if global.json {
                    let items: Vec<_> = found.iter().map(|e| entry_json(e, false)).collect();
                    println!("{}", serde_json::to_string_pretty(&items)?);
                    return Ok(ExitCode::SUCCESS);
                }
                if found.is_empty() {
                    println!("no dead letters");
                    return Ok(ExitCode::SUCCESS);
                }
                let mut table =
                    output::table(["SEQ", "FUNCTION", "REASON", "ATT", "TIME", "ERROR"]);
                for entry in &found {
                    let mut error = entry.error.clone();
                    if error.len() > 60 {
                        let cut = (0..=60)
                            .rev()
                            .find(|i| error.is_char_boundary(*i))
                            .unwrap_or(0);
                        error.truncate(cut);
                        error.push('…');
                    }
                    table.add_row([
                        entry.sequence.to_string(),
                        entry.function.clone(),
                        entry.reason.clone(),
                        entry.attempts.to_string(),
                        entry.time.clone(),
                        error,
                    ]);
                }
                output::align_right(&mut table, &[0, 3]);
                output::print(&table);
                println!("{} dead letter(s)", found.len());
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Show { sequence } => {
                let entry = letters.get(sequence).await?;
                if global.json {
                    return output::json(&entry_json(&entry, true));
                }
                println!("dead letter {} of {}", entry.sequence, entry.function);
                println!("  reason    {}", entry.reason);
                println!("  error     {}", entry.error);
                println!("  attempts  {}", entry.attempts);
                println!("  at        {}", entry.time);
                println!(
                    "  event     {} {} at {}",
                    entry.event_type,
                    entry.event_id,
                    entry.event_time.as_deref().unwrap_or("(no time)")
                );
                if let Some(step) = &entry.step {
                    println!("  step      {step}");
                }
                println!("  headers");
                let mut headers: Vec<(String, String)> = entry
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v[0].to_string()))
                    .collect();
                headers.sort();
                for (name, value) in headers {
                    println!("    {name}: {value}");
                }
                println!("  payload   {}", String::from_utf8_lossy(&entry.payload));
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Redrive {
                filter,
                dry_run,
                rate,
                payload,
            } => {
                let found = letters.list(&filter.to_filter()).await?;
                let replacement = match &payload {
                    Some(path) => {
                        let text = std::fs::read_to_string(path)
                            .with_context(|| format!("cannot read {}", path.display()))?;
                        let value: serde_json::Value = serde_json::from_str(&text)
                            .with_context(|| format!("{} is not valid JSON", path.display()))?;
                        Some((value, bytes::Bytes::from(text.into_bytes())))
                    }
                    None => None,
                };
                // A replacement payload is checked against each type's registered schema first.
                if let Some((value, _)) = &replacement
                    && let Ok(registry) = client.registry().await
                {
                    let mut types: Vec<&str> =
                        found.iter().map(|e| e.event_type.as_str()).collect();
                    types.sort_unstable();
                    types.dedup();
                    for event_type in types {
                        if let Some(latest) = registry.latest(event_type).await? {
                            let compiled =
                                herald::schema::CompiledSchema::compile(event_type, latest.schema)?;
                            if let Err(violations) = compiled.validate(value) {
                                let list: Vec<String> =
                                    violations.iter().map(ToString::to_string).collect();
                                anyhow::bail!(
                                    "the replacement payload breaks {event_type} version {}: {}; nothing was redriven",
                                    latest.version,
                                    list.join("; ")
                                );
                            }
                        }
                    }
                }
                if dry_run && global.json {
                    let items: Vec<_> = found.iter().map(|e| entry_json(e, false)).collect();
                    return output::json(&json!({"dry_run": true, "would_redrive": items}));
                }
                if dry_run {
                    for entry in &found {
                        println!(
                            "would redrive {} ({} {}) to {}",
                            entry.sequence,
                            entry.event_type,
                            entry.event_id,
                            client.namespace().redrive_subject(&entry.function)
                        );
                    }
                    println!(
                        "dry run: {} dead letter(s) would be redriven, nothing changed",
                        found.len()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                let interval = rate
                    .filter(|r| *r > 0.0)
                    .map(|r| Duration::from_secs_f64(1.0 / r));
                let started = Instant::now();
                let total = found.len();
                let mut done = 0;
                let bar = output::progress("redrive", total as u64, global.json);
                for entry in &found {
                    if let Some(interval) = interval {
                        let due = started + interval * done as u32;
                        tokio::time::sleep_until(due.into()).await; // the rate limit
                    }
                    letters
                        .redrive(entry, replacement.as_ref().map(|(_, bytes)| bytes.clone()))
                        .await?;
                    done += 1;
                    bar.inc(1);
                }
                bar.finish_and_clear();
                if global.json {
                    return output::json(&json!({"redriven": done}));
                }
                println!(
                    "redrove {done} dead letter(s) in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Purge { filter, yes } => {
                let found = letters.list(&filter.to_filter()).await?;
                if found.is_empty() && !global.json {
                    println!("no dead letters to purge");
                    return Ok(ExitCode::SUCCESS);
                }
                if !yes && !found.is_empty() {
                    if !std::io::stdin().is_terminal() {
                        return Err(Failed::refused(format!(
                            "not purging {} dead letter(s) without confirmation: pass --yes",
                            found.len()
                        ))
                        .into());
                    }
                    eprint!(
                        "delete {} dead letter(s)? type yes to confirm: ",
                        found.len()
                    );
                    let _ = std::io::stderr().flush();
                    let mut answer = String::new();
                    std::io::stdin().lock().read_line(&mut answer)?;
                    if answer.trim() != "yes" {
                        return Err(Failed::refused("not confirmed; nothing deleted").into());
                    }
                }
                for entry in &found {
                    letters.delete(entry.sequence).await?;
                }
                if global.json {
                    return output::json(&json!({"purged": found.len()}));
                }
                println!("purged {} dead letter(s)", found.len());
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
