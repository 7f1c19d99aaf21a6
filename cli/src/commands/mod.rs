//! The commands and their shared options.

mod bench;
mod bench_consume;
mod bench_consumers;
mod bench_cpu;
mod bench_gateway;
mod bench_latency;
mod bench_steps;
mod bench_telemetry;
mod bench_validate;
mod console;
mod dev;
mod dlq;
mod events;
mod functions;
mod keys;
mod provision;
mod push;
mod replay;
mod runs;
mod schedules;
mod schemas;
mod serve;
mod streams;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

/// Typed, durable background functions on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure Herald against the raw async-nats client on your NATS.
    #[command(subcommand)]
    Bench(bench::Bench),
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

/// How to reach NATS; shared by every command.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
    /// NATS server URL(s), comma-separated.
    #[arg(long, short, env = "NATS_URL", global = true)]
    server: Option<String>,
    /// Herald namespace.
    #[arg(
        long,
        short,
        env = "HERALD_NAMESPACE",
        default_value = "herald",
        global = true
    )]
    namespace: String,
    /// User name (with --password).
    #[arg(long, env = "NATS_USER", global = true, requires = "password")]
    user: Option<String>,
    /// Password (with --user).
    #[arg(long, env = "NATS_PASSWORD", global = true, requires = "user")]
    password: Option<String>,
    /// Token.
    #[arg(long, env = "NATS_TOKEN", global = true)]
    token: Option<String>,
    /// Credentials file (JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS", global = true)]
    creds: Option<std::path::PathBuf>,
}

impl Connection {
    /// Client options for this connection.
    pub(crate) fn options(&self) -> herald::ConnectOptions {
        let mut options = herald::Client::builder()
            .namespace(&self.namespace)
            .connection_name("herald-cli");
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user, password);
        }
        if let Some(token) = &self.token {
            options = options.token(token);
        }
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds);
        }
        options
    }

    /// The server URL, or a local nats-server started for the command (kept alive by the
    /// returned handle) when none is given: for benchmarks.
    pub(crate) fn server_or_local(
        &self,
    ) -> anyhow::Result<(Option<herald_local_nats::LocalNats>, String)> {
        match &self.server {
            Some(url) => Ok((None, url.clone())),
            None => {
                eprintln!("no --server or NATS_URL: starting a local nats-server");
                let local = herald_local_nats::LocalNats::start()?;
                let url = local.url();
                Ok((Some(local), url))
            }
        }
    }

    /// The server URL, or an error that says how to give one.
    pub(crate) fn url(&self) -> anyhow::Result<&str> {
        self.server
            .as_deref()
            .context("no NATS server given: pass --server nats://HOST:4222 or set NATS_URL")
    }
}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
pub(crate) fn progress(label: &str, done: usize, total: usize) {
    use std::io::{IsTerminal, Write};
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() || total == 0 {
        return;
    }
    let width = 30;
    let filled = done * width / total;
    let _ = write!(
        stderr,
        "\r{label} [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    if done == total {
        let _ = writeln!(stderr);
    }
    let _ = stderr.flush();
}

pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Bench(bench) => Box::pin(bench.run()).await,
        Command::Provision(provision) => provision.run().await,
        Command::Schemas(schemas) => schemas.run().await,
        Command::Runs(runs) => runs.run().await,
        Command::Dlq(dlq) => Box::pin(dlq.run()).await,
        Command::Dev(dev) => Box::pin(dev.run()).await,
        Command::Functions(functions) => Box::pin(functions.run()).await,
        Command::Events(events) => Box::pin(events.run()).await,
        Command::Schedules(schedules) => Box::pin(schedules.run()).await,
        Command::Replay(replay) => Box::pin(replay.run()).await,
        Command::Streams(streams) => Box::pin(streams.run()).await,
        Command::Serve(serve) => Box::pin(serve.run()).await,
        Command::Keys(keys) => Box::pin(keys.run()).await,
        Command::Push(push) => Box::pin(push.run()).await,
        Command::Console(console) => Box::pin(console.run()).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "herald", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
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
