//! `herald streams`: the namespace's streams and buckets, their usage, and drift.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::Connection;

#[derive(Debug, Args)]
pub(crate) struct Streams {
    #[command(flatten)]
    connection: Connection,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Streams {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .connect(self.connection.url()?)
            .await?;
        let namespace = client.namespace();
        // Provisioning without applying reports what exists and how it differs.
        let report = client.provision().await?;
        let mut rows = Vec::new();
        for resource in &report.resources {
            let stream_name = match resource.kind {
                herald::ResourceKind::Stream => resource.name.clone(),
                _ => herald::protocol::kv_stream(&resource.name),
            };
            let mut stream = client.jetstream().get_stream(&stream_name).await?;
            let info = stream.info().await?;
            let drift: Vec<String> = match &resource.outcome {
                herald::ProvisionOutcome::Drifted(drift) => {
                    drift.iter().map(ToString::to_string).collect()
                }
                _ => Vec::new(),
            };
            rows.push(json!({
                "name": resource.name,
                "kind": if stream_name == resource.name { "stream" } else { "bucket" },
                "subjects": info.config.subjects,
                "max_age_s": info.config.max_age.as_secs(),
                "replicas": info.config.num_replicas,
                "storage": format!("{:?}", info.config.storage).to_lowercase(),
                "messages": info.state.messages,
                "bytes": info.state.bytes,
                "consumers": info.state.consumer_count,
                "drift": drift,
                "created_now": matches!(resource.outcome, herald::ProvisionOutcome::Created),
            }));
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "namespace {namespace}: replicas {} ({})",
            report.replicas, report.replicas_source
        );
        println!(
            "{:<22} {:<7} {:>10} {:>12} {:>4} {:>9}  DRIFT",
            "NAME", "KIND", "MESSAGES", "BYTES", "R", "MAX AGE"
        );
        for row in &rows {
            let drift: Vec<&str> = row["drift"]
                .as_array()
                .map(|d| d.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<22} {:<7} {:>10} {:>12} {:>4} {:>8}h  {}",
                row["name"].as_str().unwrap_or(""),
                row["kind"].as_str().unwrap_or(""),
                row["messages"].to_string(),
                row["bytes"].to_string(),
                row["replicas"].to_string(),
                row["max_age_s"].as_u64().unwrap_or(0) / 3600,
                if drift.is_empty() {
                    "none".to_owned()
                } else {
                    drift.join("; ")
                }
            );
        }
        Ok(if report.is_converged() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
    }
}
