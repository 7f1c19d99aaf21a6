//! `herald serve`: the HTTP gateway and the push dispatcher, each behind a flag, until
//! ctrl-c or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use herald_gateway::GatewayConfig;
use herald_gateway::inngest::NameMapping;

use super::Global;

#[derive(Debug, Args)]
pub(crate) struct Serve {
    /// Serve the HTTP event gateway on this address (CloudEvents on /v1/events, Inngest's
    /// /e/{key}, /healthz, /readyz, /openapi.json).
    #[arg(long, value_name = "ADDR", required_unless_present = "push")]
    gateway: Option<SocketAddr>,
    /// Run the push functions (`herald push add`): POST their events to their URLs.
    #[arg(long)]
    push: bool,
    /// Allow push targets on private, loopback and link-local addresses.
    #[arg(long, requires = "push")]
    allow_private_targets: bool,
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
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let connection = &global.connection;
        let client = connection
            .connect_checked(
                connection
                    .options()
                    .connection_name("herald-gateway")
                    .use_registry(true),
            )
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
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
            let mut receiver = stop.subscribe();
            async move {
                let _ = receiver.recv().await;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(address) = self.gateway {
            let router = herald_gateway::router(client.clone(), config)
                .await
                .context(
                    "starting the gateway (is the namespace provisioned? `herald provision`)",
                )?;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?;
            let address = listener.local_addr()?;
            println!("herald serve: gateway on http://{address} (POST /v1/events, /e/{{key}})");
            let until = stopped(&stop);
            tasks.spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(until)
                    .await
                    .context("the gateway stopped")
            });
        }
        if self.push {
            let options = herald_gateway::push::PushOptions {
                allow_private_targets: self.allow_private_targets,
                ..Default::default()
            };
            println!("herald serve: running push functions");
            let until = stopped(&stop);
            let client = client.clone();
            tasks.spawn(async move {
                herald_gateway::push::run(client, options, until)
                    .await
                    .context("the push dispatcher stopped")
            });
        }
        tokio::select! {
            () = shutdown_signal() => {}
            Some(finished) = tasks.join_next() => {
                finished??;
            }
        }
        let _ = stop.send(());
        // A second signal stops at once, without waiting for the graceful shutdown.
        tokio::select! {
            () = shutdown_signal() => return Ok(ExitCode::FAILURE),
            finished = async {
                while let Some(finished) = tasks.join_next().await {
                    finished??;
                }
                anyhow::Ok(())
            } => finished?,
        }
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
