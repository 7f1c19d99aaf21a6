//! `herald schemas …`: the schema registry from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herald::registry::{CheckOutcome, Registry, RegistryError};
use serde_json::{Value, json};

use super::{Global, output};
use crate::exit::Failed;

#[derive(Debug, Args)]
pub(crate) struct Schemas {
    #[command(subcommand)]
    command: SchemasCommand,
}

#[derive(Debug, Subcommand)]
enum SchemasCommand {
    /// Register the schemas of a folder (`<dir>/<type>/<version>.json`) in the registry,
    /// oldest first; an incompatible schema is refused with the reasons (exit code 1).
    ///
    /// Example: `herald schemas push schemas/`
    Push {
        /// The schema folder.
        #[arg(default_value = "schemas")]
        dir: PathBuf,
    },
    /// What `push` would do, writing nothing: for the CI of services (exit code 1 when a
    /// schema would be refused).
    ///
    /// Example: `herald schemas check schemas/`
    Check {
        /// The schema folder.
        #[arg(default_value = "schemas")]
        dir: PathBuf,
    },
    /// Every registered type with its versions and compatibility mode.
    ///
    /// Example: `herald schemas list --json`
    List,
    /// One registered schema (the latest unless --version).
    ///
    /// Example: `herald schemas show user.signup --version 2`
    Show {
        /// The event type.
        event_type: String,
        /// The version.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Validate a JSON file against a registered schema and print every violation's path
    /// (exit code 1 when invalid).
    ///
    /// Example: `herald schemas validate user.signup signup.json`
    Validate {
        /// The event type.
        event_type: String,
        /// The JSON payload.
        file: PathBuf,
        /// The version (default: the latest).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Set the compatibility mode of a type (BACKWARD, FORWARD, FULL, their _TRANSITIVE
    /// forms, NONE).
    ///
    /// Example: `herald schemas mode user.signup BACKWARD`
    Mode {
        /// The event type.
        event_type: String,
        /// The mode.
        mode: herald::compat::CompatibilityMode,
    },
    /// Write an AsyncAPI 3.0 document of the registered types (channels = subjects).
    ///
    /// Example: `herald schemas asyncapi --out asyncapi.json`
    Asyncapi {
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The schema files of a folder: (type, file version, path), oldest version first per type.
pub(crate) fn schema_files(dir: &Path) -> anyhow::Result<Vec<(String, u32, PathBuf)>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the schema folder {}", dir.display()))?;
    for entry in entries {
        let type_dir = entry?.path();
        if !type_dir.is_dir() {
            continue;
        }
        let event_type = type_dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("a schema folder name is not UTF-8")?
            .to_owned();
        herald::EventType::new(&event_type)
            .with_context(|| format!("{} is not named after an event type", type_dir.display()))?;
        for file in std::fs::read_dir(&type_dir)? {
            let path = file?.path();
            let version = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(version) = version {
                files.push((event_type.clone(), version, path));
            }
        }
    }
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no schema files (<type>/<version>.json) in {}",
        dir.display()
    );
    Ok(files)
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

impl Schemas {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let registry = client.registry().await?;
        let json = global.json;
        match self.command {
            SchemasCommand::Push { dir } => push(registry, &dir, false, json).await,
            SchemasCommand::Check { dir } => push(registry, &dir, true, json).await,
            SchemasCommand::List => list(registry, json).await,
            SchemasCommand::Show {
                event_type,
                version,
            } => {
                let stored = match version {
                    Some(version) => registry.get(&event_type, version).await?,
                    None => registry.latest(&event_type).await?,
                }
                .ok_or_else(|| Failed::not_found(format!("{event_type} has no such version in the registry; see `herald schemas list`")))?;
                if json {
                    return output::json(&stored);
                }
                println!(
                    "# {} version {} (digest {}, registered {} by {})",
                    stored.event_type,
                    stored.version,
                    stored.digest,
                    stored.created_at,
                    stored.source
                );
                println!("{}", serde_json::to_string_pretty(&stored.schema)?);
                Ok(ExitCode::SUCCESS)
            }
            SchemasCommand::Validate {
                event_type,
                file,
                version,
            } => {
                let stored = match version {
                    Some(version) => registry.get(&event_type, version).await?,
                    None => registry.latest(&event_type).await?,
                }
                .ok_or_else(|| Failed::not_found(format!("{event_type} is not registered (or has no such version); push its schema first")))?;
                let payload = read_json(&file)?;
                let compiled = herald::schema::CompiledSchema::compile(&event_type, stored.schema)?;
                let outcome = compiled.validate(&payload);
                if json {
                    let violations: Vec<String> = match &outcome {
                        Ok(()) => Vec::new(),
                        Err(violations) => violations.iter().map(ToString::to_string).collect(),
                    };
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({
                            "type": event_type,
                            "version": stored.version,
                            "valid": outcome.is_ok(),
                            "violations": violations,
                        }))?
                    );
                    return Ok(if outcome.is_ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                match outcome {
                    Ok(()) => {
                        println!("valid against {event_type} version {}", stored.version);
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(violations) => {
                        println!("invalid against {event_type} version {}:", stored.version);
                        for violation in violations {
                            println!("  {violation}");
                        }
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            SchemasCommand::Mode { event_type, mode } => {
                registry.set_compatibility(&event_type, mode).await?;
                if json {
                    return output::json(
                        &json!({"type": event_type, "compatibility": mode.as_str()}),
                    );
                }
                println!("{event_type}: compatibility {mode}");
                Ok(ExitCode::SUCCESS)
            }
            SchemasCommand::Asyncapi { out } => {
                let document = herald::asyncapi::document(registry).await?;
                let text = serde_json::to_string_pretty(&document)? + "\n";
                match out {
                    Some(path) => {
                        std::fs::write(&path, text)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        if json {
                            return output::json(&json!({"wrote": path.display().to_string()}));
                        }
                        eprintln!("wrote {}", path.display());
                    }
                    None => print!("{text}"),
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

async fn push(
    registry: &Registry,
    dir: &Path,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut refused = 0;
    // With --json the lines are collected as {file, type, outcome} instead of printed.
    let mut results = Vec::new();
    for (event_type, _file_version, path) in schema_files(dir)? {
        let schema = read_json(&path)?;
        let label = format!("{event_type} ({})", path.display());
        let mut println = |line: String| {
            if json {
                results.push(json!({
                    "type": event_type,
                    "file": path.display().to_string(),
                    "outcome": line.trim_start_matches(&format!("{label}: ")),
                }));
            } else {
                println!("{line}");
            }
        };
        if dry_run {
            match registry.check(&event_type, &schema).await? {
                CheckOutcome::Registered(version) => {
                    println(format!("{label}: registered as version {version}"));
                }
                CheckOutcome::Compatible(version) => {
                    println(format!(
                        "{label}: compatible, would become version {version}"
                    ));
                }
                CheckOutcome::Incompatible(report) => {
                    refused += 1;
                    println(format!("{label}: would be refused, {report}"));
                }
                _ => {}
            }
            continue;
        }
        match registry.register(&event_type, &schema).await {
            Ok(registered) if registered.created => {
                println(format!(
                    "{label}: registered as version {}",
                    registered.version
                ));
            }
            Ok(registered) => println(format!(
                "{label}: already registered as version {}",
                registered.version
            )),
            Err(RegistryError::Incompatible { report, .. }) => {
                refused += 1;
                println(format!("{label}: refused, {report}"));
            }
            Err(error) => return Err(error.into()),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    if refused > 0 {
        eprintln!("{refused} schema(s) refused");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(registry: &Registry, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for event_type in registry.types().await? {
        let versions = registry.versions(&event_type).await?;
        let mode = registry.compatibility(&event_type).await?;
        rows.push((event_type, versions, mode));
    }
    if as_json {
        let items: Vec<Value> = rows
            .iter()
            .map(|(t, v, m)| json!({"type": t, "versions": v, "compatibility": m.as_str()}))
            .collect();
        return output::json(&items);
    }
    if rows.is_empty() {
        println!("no schemas registered; push some with `herald schemas push schemas/`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = output::table(["TYPE", "LATEST", "COMPATIBILITY"]);
    for (event_type, versions, mode) in rows {
        let latest = versions.last().map_or("-".to_owned(), ToString::to_string);
        table.add_row([event_type, latest, mode.as_str().to_owned()]);
    }
    output::print(&table);
    Ok(ExitCode::SUCCESS)
}
