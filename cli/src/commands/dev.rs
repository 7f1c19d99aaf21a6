//! `herald dev`: a complete local setup in one command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub(crate) struct Dev {
    /// Client port of the local nats-server.
    #[arg(long, default_value_t = 4222)]
    port: u16,
    /// Keep the JetStream data in this folder (default: a temporary folder, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Schema folder to push if it exists.
    #[arg(long, default_value = "schemas")]
    schemas: PathBuf,
    /// Where the web console listens.
    #[arg(long, default_value = "127.0.0.1:8289")]
    console: std::net::SocketAddr,
}

impl Dev {
    pub(crate) async fn run(self, global: &super::Global) -> anyhow::Result<ExitCode> {
        let namespace = &global.connection.namespace;
        let mut builder = herald_local_nats::LocalNats::builder().port(self.port);
        if let Some(dir) = &self.data_dir {
            builder = builder.data_dir(dir);
        }
        let nats = tokio::task::spawn_blocking(move || builder.start()).await??;
        let url = nats.url();
        let client = herald::Client::builder()
            .namespace(namespace)
            .connect(&url)
            .await?;
        let report = client.provision().await?;
        let binary = nats.binary();
        println!(
            "herald dev: nats-server {} on {url} (JetStream; data {})",
            binary.version,
            self.data_dir.as_ref().map_or(
                "in a temporary folder, removed on exit".to_owned(),
                |d| format!("kept in {}", d.display())
            )
        );
        println!(
            "provisioned namespace {}: {} streams and buckets, replicas {} ({})",
            namespace,
            report.resources.len(),
            report.replicas,
            report.replicas_source
        );
        if self.schemas.is_dir() {
            let registry = client.registry().await?;
            let mut pushed = 0;
            // A folder without schema files is not an error for `dev`: nothing to push.
            let files = super::schemas::schema_files(&self.schemas).unwrap_or_else(|error| {
                println!("schemas not pushed: {error}");
                Vec::new()
            });
            for (event_type, _, path) in files {
                let schema: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path)?)?;
                match registry.register(&event_type, &schema).await {
                    Ok(_) => pushed += 1,
                    Err(error) => println!("schema {} not pushed: {error}", path.display()),
                }
            }
            println!(
                "pushed {pushed} schema version(s) from {}",
                self.schemas.display()
            );
        }
        // The server is what `dev` is for: a console that cannot listen is reported, not fatal.
        match super::console::spawn(client.clone(), self.console, Default::default()).await {
            Ok(console) => println!("console: {console}"),
            Err(error) => {
                println!("console not started ({error}); choose another --console address");
            }
        }
        println!();
        println!("  export NATS_URL={url}");
        println!();
        println!("next, in another terminal:");
        println!("  cargo run -p quickstart            # the demo: an endpoint and a worker");
        println!("  herald functions                   # every function, its lag and dead letters");
        println!("  herald dlq list                    # dead letters");
        println!("  herald events tail                 # events as they arrive");
        println!("ctrl-c stops the server");
        herald_worker::shutdown_signal().await;
        drop(client);
        tokio::task::spawn_blocking(move || drop(nats)).await?;
        println!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}
