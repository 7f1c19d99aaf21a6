//! The commands and their shared options.

mod connection;
mod console;
mod dev;
mod dlq;
mod events;
mod functions;
mod keys;
mod output;
mod provision;
mod push;
mod replay;
mod runs;
mod schedules;
mod schemas;
mod serve;
mod streams;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) use connection::Global;

/// Typed, durable background functions on NATS JetStream.
///
/// The connection options (--server, --namespace, --user/--password, --token, --creds) and
/// --json go before or after the command: `herald --server URL dlq list` or `herald dlq
/// list --server URL`.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, after_long_help = crate::exit::HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure Herald against the raw async-nats client on your NATS.
    #[command(subcommand)]
    Bench(herald_bench::Bench),
    /// Create the namespace's streams and buckets, or check the ones that exist.
    ///
    /// Example: `herald provision --server nats://127.0.0.1:4222 --namespace staging`
    Provision(provision::Provision),
    /// The schema registry: push, check, list, show, validate, mode, asyncapi.
    Schemas(schemas::Schemas),
    /// The stored state of runs with durable steps.
    Runs(runs::Runs),
    /// Dead letters: list, show, redrive, purge.
    Dlq(dlq::Dlq),
    /// A local nats-server with the namespace provisioned and schemas pushed, until ctrl-c.
    ///
    /// Example: `herald dev --data-dir .herald`
    Dev(dev::Dev),
    /// Every function: triggers, consumer settings, lag, dead letters, pause, next cron
    /// tick, last activity; pause and resume one.
    ///
    /// Example: `herald functions --watch`, `herald functions pause send-email --for 30m`
    Functions(functions::Functions),
    /// Cron schedules: each function's schedules and next tick; delete a stale one.
    ///
    /// Example: `herald schedules --json`
    Schedules(schedules::Schedules),
    /// Events: tail them live or from a time, publish one.
    Events(events::Events),
    /// Run one function again over events of the retained log (backfill or incident replay);
    /// the other functions do not see them.
    ///
    /// Example: `herald replay --function send-email --since 2026-11-25T00:00:00Z --rate 100`
    Replay(replay::Replay),
    /// The namespace's streams and buckets: config, usage, drift from Herald's config.
    ///
    /// Example: `herald streams --json`
    Streams(streams::Streams),
    /// Serve the HTTP event gateway and/or run the push functions until ctrl-c or SIGTERM.
    ///
    /// Example: `herald serve --gateway 0.0.0.0:8288 --push`
    Serve(serve::Serve),
    /// Functions served over HTTP: add, list, remove.
    Push(push::Push),
    /// The HTTP gateway's API keys: create, list, revoke.
    Keys(keys::Keys),
    /// The web console: functions, runs, events, dead letters, schemas, live.
    ///
    /// Example: `herald console --listen 127.0.0.1:8289 --read-only`
    Console(console::Console),
    /// Print a shell completion script.
    ///
    /// Example: `herald completions bash > /etc/bash_completion.d/herald`
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the command line's command; a command that the server denies a permission ends at
/// once, refused (see `denied.rs`).
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if !cli.command.runs_until_stopped() {
        crate::denied::watch();
        return tokio::select! {
            result = Box::pin(command(cli)) => result,
            text = crate::denied::denied() => Err(crate::exit::Failed::refused(format!(
                "the NATS server denied a permission ({text}); ask for it, or use other \
                 credentials"
            ))
            .into()),
        };
    }
    command(cli).await
}

async fn command(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = &cli.global;
    if global.json && !cli.command.has_json() {
        return Err(crate::exit::Failed::usage(
            "this command has no JSON output; leave out --json",
        )
        .into());
    }
    match cli.command {
        Command::Bench(bench) => {
            let connection = &global.connection;
            let target = herald_bench::Target::new(connection.server.clone(), connection.options());
            Box::pin(bench.run(&target)).await
        }
        Command::Provision(provision) => provision.run(global).await,
        Command::Schemas(schemas) => schemas.run(global).await,
        Command::Runs(runs) => runs.run(global).await,
        Command::Dlq(dlq) => Box::pin(dlq.run(global)).await,
        Command::Dev(dev) => Box::pin(dev.run(global)).await,
        Command::Functions(functions) => Box::pin(functions.run(global)).await,
        Command::Events(events) => Box::pin(events.run(global)).await,
        Command::Schedules(schedules) => Box::pin(schedules.run(global)).await,
        Command::Replay(replay) => Box::pin(replay.run(global)).await,
        Command::Streams(streams) => Box::pin(streams.run(global)).await,
        Command::Serve(serve) => Box::pin(serve.run(global)).await,
        Command::Keys(keys) => Box::pin(keys.run(global)).await,
        Command::Push(push) => Box::pin(push.run(global)).await,
        Command::Console(console) => Box::pin(console.run(global)).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "herald", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl Command {
    /// Whether the command runs until ctrl-c (or measures): its permission errors are its
    /// own to handle, and `bench` installs its own `tracing` subscriber.
    fn runs_until_stopped(&self) -> bool {
        matches!(
            self,
            Command::Bench(_) | Command::Dev(_) | Command::Serve(_) | Command::Completions { .. }
        )
    }

    /// Whether the command prints JSON with --json (the others refuse the flag: long-running
    /// commands whose output is a report for people).
    fn has_json(&self) -> bool {
        !self.runs_until_stopped()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
