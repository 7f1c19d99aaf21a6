//! `herald console`: the web console (functions, runs, events, dead letters, schemas)
//! against any server, until ctrl-c or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct Console {
    /// The address to listen on; anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:8289")]
    listen: SocketAddr,
    /// A secret every request must carry: open the printed URL once and the browser keeps
    /// it in an HttpOnly cookie.
    #[arg(long, env = "HERALD_CONSOLE_TOKEN")]
    token: Option<String>,
    /// Hide and refuse every action (redrive, replay, cancel, send, purge).
    #[arg(long)]
    read_only: bool,
}

/// Serves the console for `client` on `listen` in the background; returns its URL.
pub(crate) async fn spawn(
    client: herald::Client,
    listen: SocketAddr,
    config: herald_console::ConsoleConfig,
) -> anyhow::Result<String> {
    config.check_listen(listen)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let url = config.url(listener.local_addr()?);
    let router = herald_console::router(client, config).await?;
    tokio::spawn(async move {
        if let Err(error) = herald_console::serve(listener, router, std::future::pending()).await {
            eprintln!("the console stopped: {error}");
        }
    });
    Ok(url)
}

impl Console {
    pub(crate) async fn run(self, global: &super::Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let config = herald_console::ConsoleConfig {
            read_only: self.read_only,
            token: self.token,
        };
        let url = spawn(client, self.listen, config).await?;
        println!(
            "herald console: {url}{}",
            if self.read_only { " (read-only)" } else { "" }
        );
        herald_worker::shutdown_signal().await;
        Ok(ExitCode::SUCCESS)
    }
}
