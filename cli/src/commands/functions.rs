//! `herald functions`: every function with its consumer, lag and dead letters.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::json;

use super::Connection;

#[derive(Debug, Args)]
pub(crate) struct Functions {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Refresh every few seconds until ctrl-c.
    #[arg(long)]
    watch: bool,
}

impl Functions {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .connect(self.connection.url()?)
            .await?;
        loop {
            let rows = collect(&client).await?;
            if self.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                if self.watch {
                    print!("\x1b[2J\x1b[H");
                }
                print_table(&rows);
            }
            if !self.watch {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = herald_worker::shutdown_signal() => return Ok(ExitCode::SUCCESS),
            }
        }
    }
}

async fn collect(client: &herald::Client) -> anyhow::Result<Vec<serde_json::Value>> {
    let namespace = client.namespace();
    let prefix = herald::protocol::events_prefix(namespace);
    let stream = client
        .jetstream()
        .get_stream(namespace.events_stream())
        .await?;
    let mut consumers = stream.consumers();
    let letters = herald_worker::DeadLetters::new(client.clone());
    let mut rows = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info?;
        let config = &info.config;
        // Functions own durable consumers; ephemeral ones (a tail, a replay) are not functions.
        if config.durable_name.is_none() {
            continue;
        }
        let triggers: Vec<String> = config
            .filter_subjects
            .iter()
            .filter_map(|s| s.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        let filter = herald_worker::DeadLetterFilter {
            function: Some(info.name.clone()),
            ..Default::default()
        };
        for letter in letters.list(&filter).await? {
            *reasons.entry(letter.reason).or_default() += 1;
        }
        let last_active = info
            .delivered
            .last_active
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "never".to_owned());
        rows.push(json!({
            "function": info.name,
            "triggers": triggers,
            "attempts": herald::protocol::attempts_of_max_deliver(config.max_deliver).unwrap_or(0),
            "ack_wait_s": config.ack_wait.as_secs_f64(),
            "max_ack_pending": config.max_ack_pending,
            "pending": info.num_pending,
            "ack_pending": info.num_ack_pending,
            "redelivered": info.num_redelivered,
            "waiting_pulls": info.num_waiting,
            "dead_letters": reasons,
            "last_active": last_active,
        }));
    }
    rows.sort_by(|a, b| a["function"].as_str().cmp(&b["function"].as_str()));
    Ok(rows)
}

fn print_table(rows: &[serde_json::Value]) {
    if rows.is_empty() {
        println!("no functions: start a worker (for example `cargo run -p quickstart`)");
        return;
    }
    println!(
        "{:<24} {:<28} {:>8} {:>8} {:>6} {:>8}  {:<24} LAST ACTIVE",
        "FUNCTION", "TRIGGERS", "PENDING", "ACK-PEND", "REDEL", "WAITING", "DEAD LETTERS"
    );
    for row in rows {
        let triggers: Vec<&str> = row["triggers"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        let dead: Vec<String> = row["dead_letters"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:<28} {:>8} {:>8} {:>6} {:>8}  {:<24} {}",
            row["function"].as_str().unwrap_or(""),
            triggers.join(","),
            row["pending"].to_string(),
            row["ack_pending"].to_string(),
            row["redelivered"].to_string(),
            row["waiting_pulls"].to_string(),
            if dead.is_empty() {
                "-".to_owned()
            } else {
                dead.join(" ")
            },
            row["last_active"].as_str().unwrap_or("")
        );
    }
}
