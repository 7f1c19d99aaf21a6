//! `herald functions`: every function with its consumer, lag and dead letters.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::{Global, output};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Functions {
    /// Refresh every few seconds until ctrl-c (with --json: one JSON line per refresh).
    #[arg(long)]
    watch: bool,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Pause a function: its events are kept and no replica gets them until it is resumed
    /// (or the pause ends).
    ///
    /// Example: `herald functions pause send-email --for 30m`
    Pause {
        /// The function.
        function: String,
        /// Until this time (RFC 3339).
        #[arg(long, conflicts_with = "for")]
        until: Option<String>,
        /// For this long (`90s`, `30m`, `2h`).
        #[arg(long = "for")]
        r#for: Option<humantime::Duration>,
    },
    /// Resume a paused function: its replicas get its events again at once.
    Resume {
        /// The function.
        function: String,
    },
}

impl Functions {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        if let Some(action) = self.action {
            return act(&client, action, global.json).await;
        }
        loop {
            let rows = collect(&client).await?;
            if global.json && self.watch {
                output::json_line(&rows)?;
            } else if global.json {
                return output::json(&rows);
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

async fn act(client: &herald::Client, action: Action, json: bool) -> anyhow::Result<ExitCode> {
    let (function, state) = match action {
        Action::Pause {
            function,
            until,
            r#for,
        } => {
            let until = match (until, r#for) {
                (Some(text), _) => Some(
                    time::OffsetDateTime::parse(&text, &Rfc3339)
                        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?
                        .into(),
                ),
                (None, Some(duration)) => Some(SystemTime::now() + *duration),
                (None, None) => None,
            };
            let state = herald_worker::pause_function(client, &function, until).await?;
            (function, state)
        }
        Action::Resume { function } => {
            let state = herald_worker::resume_function(client, &function).await?;
            (function, state)
        }
    };
    let until = state
        .until
        .map(|until| time::OffsetDateTime::from(until).format(&Rfc3339))
        .transpose()?;
    if json {
        return output::json(&json!({
            "function": function,
            "paused": state.paused,
            "paused_until": until,
        }));
    }
    match (state.paused, until) {
        (true, Some(until)) => println!("{function}: paused until {until}"),
        (true, None) => println!("{function}: paused until resumed"),
        (false, _) => println!("{function}: running"),
    }
    Ok(ExitCode::SUCCESS)
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
    let schedules = herald_worker::cron::list(client).await?;
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
        let paused = match (info.paused, info.config.pause_until) {
            (true, Some(until)) => match herald_worker::pause_end(until) {
                Some(end) => time::OffsetDateTime::from(end)
                    .format(&Rfc3339)
                    .unwrap_or_default(),
                None => "until resumed".to_owned(),
            },
            (true, None) => "until resumed".to_owned(),
            (false, _) => String::new(),
        };
        let crons: Vec<&herald_worker::cron::StoredSchedule> = schedules
            .iter()
            .filter(|s| s.function == info.name)
            .collect();
        let next_tick = crons.iter().filter_map(|s| s.next.clone()).min();
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
            "paused": info.paused,
            "paused_until": paused,
            "crons": crons.iter().map(|s| json!({"schedule": s.schedule, "time_zone": s.time_zone, "next": s.next})).collect::<Vec<_>>(),
            "next_tick": next_tick,
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
    let mut table = output::table([
        "FUNCTION",
        "TRIGGERS",
        "PENDING",
        "ACK-PEND",
        "REDEL",
        "WAITING",
        "DEAD LETTERS",
        "PAUSED",
        "NEXT TICK",
        "LAST ACTIVE",
    ]);
    for row in rows {
        let mut triggers: Vec<String> = row["triggers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(crons) = row["crons"].as_array() {
            triggers.extend(
                crons
                    .iter()
                    .map(|c| format!("cron({})", c["schedule"].as_str().unwrap_or_default())),
            );
        }
        let dead: Vec<String> = row["dead_letters"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        table.add_row([
            row["function"].as_str().unwrap_or("").to_owned(),
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
            match row["paused_until"].as_str() {
                Some("") | None => "-".to_owned(),
                Some(until) => until.to_owned(),
            },
            row["next_tick"].as_str().unwrap_or("-").to_owned(),
            row["last_active"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    output::align_right(&mut table, &[2, 3, 4, 5]);
    output::print(&table);
}
