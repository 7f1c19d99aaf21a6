//! `herald push`: functions served over HTTP (add, list, remove); `herald serve --push` runs them.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald_gateway::push::{PushFunction, PushFunctions, sign};

use super::{Global, output};

#[derive(Debug, Args)]
pub(crate) struct Push {
    #[command(subcommand)]
    command: PushCommand,
}

#[derive(Debug, Subcommand)]
enum PushCommand {
    /// Add (or replace) a push function: its events are POSTed to URL, signed (with --json:
    /// its id, and its secret when one was made).
    ///
    /// Example: `herald push add send-welcome --on user.signup --url https://app.example/api/herald --secret-file whsec.txt`
    Add {
        /// The function id.
        name: String,
        /// An event type or pattern; repeatable.
        #[arg(long = "on", required = true)]
        on: Vec<String>,
        /// The receiver's URL.
        #[arg(long)]
        url: String,
        /// Attempts before the event is dead-lettered.
        #[arg(long, default_value_t = 5)]
        attempts: u32,
        /// How long one call may take (`500ms`, `30s`, `2m`).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        timeout: Duration,
        /// Calls in flight at once, across every replica.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        /// A file holding the Standard Webhooks secret (`whsec_…`); without it a new secret
        /// is made and printed once.
        #[arg(long)]
        secret_file: Option<std::path::PathBuf>,
    },
    /// Every push function (never its secret).
    List,
    /// Remove a push function (its consumer and dead letters stay).
    Remove {
        /// The function id.
        name: String,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 30s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: use ms, s or m")),
    }
}

impl Push {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let store = PushFunctions::open(&client).await?;
        match self.command {
            PushCommand::Add {
                name,
                on,
                url,
                attempts,
                timeout,
                concurrency,
                secret_file,
            } => {
                let (secret, generated) = match &secret_file {
                    Some(path) => (
                        std::fs::read_to_string(path)
                            .with_context(|| format!("cannot read {}", path.display()))?
                            .trim()
                            .to_owned(),
                        false,
                    ),
                    None => (sign::new_secret(), true),
                };
                let function = PushFunction {
                    id: name.clone(),
                    on,
                    url,
                    attempts,
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    concurrency,
                    secret: secret.clone(),
                    updated_at: herald::headers::format_time(std::time::SystemTime::now()),
                };
                store.put(&function).await?;
                if global.json {
                    return output::json(&serde_json::json!({
                        "id": name,
                        "secret": generated.then_some(secret),
                    }));
                }
                println!("push function {name} stored; `herald serve --push` replicas run it");
                if generated {
                    println!("its signing secret (shown once; give it to the receiver):");
                    println!("{secret}");
                }
            }
            PushCommand::List => {
                let functions = store.list().await?;
                if global.json {
                    let rows: Vec<_> = functions
                        .iter()
                        .map(|f| {
                            serde_json::json!({"id": f.id, "on": f.on, "url": f.url,
                                "attempts": f.attempts, "timeout_ms": f.timeout_ms,
                                "concurrency": f.concurrency, "updated_at": f.updated_at})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    let mut table =
                        output::table(["FUNCTION", "ON", "ATT", "TIMEOUT", "CONC", "URL"]);
                    for f in functions {
                        table.add_row([
                            f.id,
                            f.on.join(","),
                            f.attempts.to_string(),
                            format!("{}ms", f.timeout_ms),
                            f.concurrency.to_string(),
                            f.url,
                        ]);
                    }
                    output::align_right(&mut table, &[2, 3, 4]);
                    output::print(&table);
                }
            }
            PushCommand::Remove { name } => {
                store.remove(&name).await?;
                if global.json {
                    return output::json(&serde_json::json!({"id": name, "removed": true}));
                }
                println!("push function {name} removed");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse() {
        use std::time::Duration;
        assert_eq!(
            super::parse_duration("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(super::parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(super::parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(super::parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(super::parse_duration("soon").is_err());
    }
}
