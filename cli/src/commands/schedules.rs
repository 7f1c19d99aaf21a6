//! `herald schedules`: the cron schedules stored in the namespace, their next tick, and
//! deleting one that an earlier version of a function left.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Connection;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Schedules {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Delete a cron schedule: no tick fires from it afterwards. A worker whose function
    /// still has this trigger writes it again when it starts.
    ///
    /// Example: `herald schedules delete weekly-report 3f2a9c0d1e4b5a69`
    Delete {
        /// The function.
        function: String,
        /// The schedule's id (the CRON ID column of `herald schedules`).
        cron_id: String,
    },
}

impl Schedules {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .connect(self.connection.url()?)
            .await?;
        if let Some(Action::Delete { function, cron_id }) = self.action {
            herald_worker::cron::delete(&client, &function, &cron_id).await?;
            println!("deleted cron schedule {cron_id} of function {function}");
            return Ok(ExitCode::SUCCESS);
        }
        let schedules = herald_worker::cron::list(&client).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&schedules)?);
            return Ok(ExitCode::SUCCESS);
        }
        if schedules.is_empty() {
            println!(
                "no cron schedules: a worker writes them when it starts a function with .cron(..)"
            );
            return Ok(ExitCode::SUCCESS);
        }
        let mut table = comfy_table::Table::new();
        table.load_style(comfy_table::presets::NOTHING);
        table.set_header(["FUNCTION", "CRON ID", "SCHEDULE", "ZONE", "NEXT TICK"]);
        for schedule in &schedules {
            table.add_row([
                schedule.function.as_str(),
                schedule.cron_id.as_str(),
                schedule.schedule.as_str(),
                schedule.time_zone.as_deref().unwrap_or("UTC"),
                schedule.next.as_deref().unwrap_or("-"),
            ]);
        }
        println!("{table}");
        Ok(ExitCode::SUCCESS)
    }
}
