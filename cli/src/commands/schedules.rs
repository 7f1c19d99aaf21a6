//! `herald schedules`: the cron schedules stored in the namespace, their next tick, and
//! deleting one that an earlier version of a function left.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Global, output};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Schedules {
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
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        if let Some(Action::Delete { function, cron_id }) = self.action {
            herald_worker::cron::delete(&client, &function, &cron_id).await?;
            if global.json {
                return output::json(&serde_json::json!({
                    "function": function,
                    "cron_id": cron_id,
                    "deleted": true,
                }));
            }
            println!("deleted cron schedule {cron_id} of function {function}");
            return Ok(ExitCode::SUCCESS);
        }
        let schedules = herald_worker::cron::list(&client).await?;
        if global.json {
            return output::json(&schedules);
        }
        if schedules.is_empty() {
            println!(
                "no cron schedules: a worker writes them when it starts a function with .cron(..)"
            );
            return Ok(ExitCode::SUCCESS);
        }
        let mut table = output::table(["FUNCTION", "CRON ID", "SCHEDULE", "ZONE", "NEXT TICK"]);
        for schedule in &schedules {
            table.add_row([
                schedule.function.as_str(),
                schedule.cron_id.as_str(),
                schedule.schedule.as_str(),
                schedule.time_zone.as_deref().unwrap_or("UTC"),
                schedule.next.as_deref().unwrap_or("-"),
            ]);
        }
        output::print(&table);
        Ok(ExitCode::SUCCESS)
    }
}
