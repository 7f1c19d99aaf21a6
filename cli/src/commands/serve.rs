//! `herald serve`: the HTTP gateway (and later the push dispatcher), until ctrl-c or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald_gateway::GatewayConfig;
use herald_gateway::inngest::NameMapping;

use super::Connection;

#[derive(Debug, Args)]
pub(crate) struct Serve {
    #[command(flatten)]
    connection: Connection,
    /// Serve the HTTP event gateway on this address (CloudEvents on /v1/events, Inngest's
    /// /e/{key}, /healthz, /readyz, /openapi.json).
    #[arg(long, value_name = "ADDR")]
    gateway: SocketAddr,
    /// Accept requests without an API key (as an anonymous key for every type); for local
    /// development only.
    #[arg(long)]
    no_auth: bool,
    /// The most events in one request.
    #[arg(long, default_value_t = 100)]
    max_events: usize,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Map Inngest names with `/` to Herald types (`app/user.created` → `app.user.created`)
    /// instead of refusing them.
    #[arg(long)]
    inngest_slash_to_dot: bool,
}

impl Serve {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .connection_name("herald-gateway")
            .use_registry(true)
            .connect(self.connection.url()?)
            .await?;
        let config = GatewayConfig {
            require_keys: !self.no_auth,
            max_events: self.max_events,
            max_body_bytes: self.max_body_bytes,
            inngest_names: if self.inngest_slash_to_dot {
                NameMapping::SlashToDot
            } else {
                NameMapping::Strict
            },
            ..Default::default()
        };
        let router = herald_gateway::router(client, config)
            .await
            .context("starting the gateway (is the namespace provisioned? `herald provision`)")?;
        let listener = tokio::net::TcpListener::bind(self.gateway)
            .await
            .with_context(|| format!("cannot listen on {}", self.gateway))?;
        let address = listener.local_addr()?;
        println!("herald serve: gateway on http://{address} (POST /v1/events, /e/{{key}})");
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok(ExitCode::SUCCESS)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
