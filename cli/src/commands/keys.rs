//! `herald keys`: the HTTP gateway's API keys (create, list, revoke).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use herald_gateway::keys::{Keys as KeyStore, NewKey, Rate};

use super::{Global, output};

#[derive(Debug, Args)]
pub(crate) struct Keys {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its token (shown once, stored only as a hash; with --json, the
    /// key as JSON with its token).
    ///
    /// Example: `herald keys create --name billing --scope 'billing.>' --rate 50`
    Create {
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Event-type patterns the key may send (`user.*`, `billing.>`); repeatable.
        #[arg(long = "scope", default_value = ">")]
        scopes: Vec<String>,
        /// Requests per second per gateway replica.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Requests allowed at once above the rate.
        #[arg(long, default_value_t = 200)]
        burst: u32,
        /// Accept event types without a registered schema (stored unvalidated).
        #[arg(long)]
        allow_unregistered: bool,
    },
    /// Every key (never a secret).
    List,
    /// Revoke a key: gateways refuse it from their next request, without a restart.
    Revoke {
        /// The key id (the part after `hrld_` in the token).
        id: String,
    },
}

impl Keys {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let store = KeyStore::open(&client).await?;
        match self.command {
            KeysCommand::Create {
                name,
                scopes,
                rate,
                burst,
                allow_unregistered,
            } => {
                let created = store
                    .create(NewKey {
                        name,
                        scopes,
                        rate: Rate { per_s: rate, burst },
                        allow_unregistered,
                    })
                    .await?;
                if global.json {
                    let mut value = serde_json::to_value(&created.key)?;
                    value["token"] = created.token.into();
                    println!("{}", serde_json::to_string_pretty(&value)?);
                } else {
                    println!("key {} created; its token (shown once):", created.key.id);
                    println!("{}", created.token);
                }
            }
            KeysCommand::List => {
                let keys = store.list().await?;
                if global.json {
                    return output::json(&keys);
                }
                let mut table = output::table(["ID", "NAME", "STATE", "RATE/BURST", "SCOPES"]);
                for key in keys {
                    table.add_row([
                        key.id,
                        key.name,
                        if key.disabled { "revoked" } else { "active" }.to_owned(),
                        format!("{}/{}", key.rate.per_s, key.rate.burst),
                        key.scopes.join(","),
                    ]);
                }
                output::print(&table);
            }
            KeysCommand::Revoke { id } => {
                let key = store.revoke(&id).await?;
                if global.json {
                    return output::json(&key);
                }
                println!("key {id} revoked");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
