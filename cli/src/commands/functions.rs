//! `herald functions`: every function with its consumer, lag, dead letters and flow control,
//! listed by `herald_worker::overview` (as the console lists them).

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_worker::overview::{
    FlowOverview, FunctionOverview, OverviewOptions, list_functions_with,
};
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
            let functions = collect(&client).await?;
            let rows: Vec<serde_json::Value> = functions.iter().map(row).collect();
            if global.json && self.watch {
                output::json_line(&rows)?;
            } else if global.json {
                return output::json(&rows);
            } else {
                if self.watch {
                    print!("\x1b[2J\x1b[H");
                }
                print_table(&functions);
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

/// Every function as `herald_worker::overview` lists it (the console's listing too), with its
/// dead letters and flow control, in this command's JSON shape.
async fn collect(client: &herald::Client) -> anyhow::Result<Vec<FunctionOverview>> {
    let options = OverviewOptions {
        dead_letters: true,
        flow: true,
    };
    Ok(list_functions_with(client, options).await?)
}

fn row(function: &FunctionOverview) -> serde_json::Value {
    let paused_until = match (function.paused, &function.paused_until) {
        (true, Some(until)) => until.clone(),
        (true, None) => "until resumed".to_owned(),
        (false, _) => String::new(),
    };
    let next_tick = function.crons.iter().filter_map(|c| c.next.clone()).min();
    json!({
        "function": function.function,
        "triggers": function.triggers,
        "attempts": function.attempts,
        "ack_wait_s": function.ack_wait_s,
        "max_ack_pending": function.max_ack_pending,
        "pending": function.pending,
        "ack_pending": function.ack_pending,
        "redelivered": function.redelivered,
        "waiting_pulls": function.waiting_pulls,
        "dead_letters": function.dead_letters,
        "last_active": function.last_active.as_deref().unwrap_or("never"),
        "paused": function.paused,
        "paused_until": paused_until,
        "crons": function.crons,
        "next_tick": next_tick,
        "flow": function.flow,
    })
}

/// The limits seen in use, as one cell: `concurrency(>=2)`, `shared:db(>=10)`, `throttle`,
/// `rate-limit`, `singleton`, `batch(1 open, 40 waiting, 300 batched)`.
fn limits_cell(flow: &FlowOverview) -> String {
    let mut parts: Vec<String> = flow
        .concurrency
        .iter()
        .map(|c| match &c.shared_name {
            Some(name) => format!("shared:{name}(>={})", c.limit_at_least),
            None => format!("concurrency(>={})", c.limit_at_least),
        })
        .collect();
    if flow.throttle_keys > 0 || flow.throttled_runs > 0 {
        parts.push("throttle".to_owned());
    }
    if flow.rate_limit_keys > 0 || flow.rate_limited_runs > 0 {
        parts.push("rate-limit".to_owned());
    }
    if flow.singleton_keys_held > 0 {
        parts.push("singleton".to_owned());
    }
    if flow.open_batches > 0 || flow.batched_events > 0 {
        parts.push(format!(
            "batch({} open, {} waiting, {} batched)",
            flow.open_batches, flow.events_in_open_batches, flow.batched_events
        ));
    }
    dash_if_empty(parts.join(" "))
}

/// Parked runs: the total, then the top keys (`scope/key` for a shared limit).
fn parked_cell(flow: &FlowOverview) -> String {
    if flow.parked == 0 {
        return "-".to_owned();
    }
    let keys: Vec<String> = flow
        .parked_top_keys
        .iter()
        .map(|k| match k.scope.strip_prefix("_shared-") {
            Some(name) => format!("{name}/{}={}", k.key, k.runs),
            None => format!("{}={}", k.key, k.runs),
        })
        .collect();
    format!("{} ({})", flow.parked, keys.join(" "))
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

fn print_table(functions: &[FunctionOverview]) {
    if functions.is_empty() {
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
        "LIMITS IN USE",
        "PARKED",
        "SKIPPED",
    ]);
    let mut partial = false;
    let no_flow = FlowOverview::default();
    for function in functions {
        let row = row(function);
        let mut triggers = function.triggers.clone();
        triggers.extend(
            function
                .crons
                .iter()
                .map(|c| format!("cron({})", c.schedule)),
        );
        let counts = |counts: &std::collections::BTreeMap<String, u64>| {
            let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            dash_if_empty(counts.join(" "))
        };
        let flow = function.flow.as_ref().unwrap_or(&no_flow);
        partial |= flow.partial;
        table.add_row([
            function.function.clone(),
            triggers.join(","),
            function.pending.to_string(),
            function.ack_pending.to_string(),
            function.redelivered.to_string(),
            function.waiting_pulls.to_string(),
            counts(&function.dead_letters),
            match row["paused_until"].as_str() {
                Some("") | None => "-".to_owned(),
                Some(until) => until.to_owned(),
            },
            row["next_tick"].as_str().unwrap_or("-").to_owned(),
            row["last_active"].as_str().unwrap_or("").to_owned(),
            limits_cell(flow),
            parked_cell(flow),
            counts(&flow.skipped),
        ]);
    }
    output::align_right(&mut table, &[2, 3, 4, 5]);
    output::print(&table);
    println!(
        "limits in use: as the runs bucket shows them now (slots held, parked runs, throttle and rate-limit state); \
         the limits' settings are in the workers' code, not stored in NATS"
    );
    if partial {
        println!(
            "flow control counted from the first {} keys of the runs bucket only",
            herald_worker::overview::FLOW_SCAN_LIMIT
        );
    }
}
