//! `herald streams`: the namespace's streams and buckets, their usage, and drift.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::Global;
use super::output;
use crate::exit::Exit;

#[derive(Debug, Args)]
pub(crate) struct Streams {}

impl Streams {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let client = global.connection.connect().await?;
        let namespace = client.namespace();
        // Provisioning without applying reports what exists and how it differs (the
        // namespace is known to be provisioned: nothing is created but a missing part).
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
        if global.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print_table(namespace, &report, &rows);
        }
        Ok(if report.is_converged() {
            ExitCode::SUCCESS
        } else {
            Exit::Drift.into()
        })
    }
}

fn print_table(
    namespace: &herald::Namespace,
    report: &herald::ProvisionReport,
    rows: &[serde_json::Value],
) {
    println!(
        "namespace {namespace}: replicas {} ({})",
        report.replicas, report.replicas_source
    );
    let mut table = output::table(["NAME", "KIND", "MESSAGES", "BYTES", "R", "MAX AGE", "DRIFT"]);
    for row in rows {
        let drift: Vec<&str> = row["drift"]
            .as_array()
            .map(|d| d.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        table.add_row([
            row["name"].as_str().unwrap_or("").to_owned(),
            row["kind"].as_str().unwrap_or("").to_owned(),
            row["messages"].to_string(),
            row["bytes"].to_string(),
            row["replicas"].to_string(),
            format!("{}h", row["max_age_s"].as_u64().unwrap_or(0) / 3600),
            if drift.is_empty() {
                "none".to_owned()
            } else {
                drift.join("; ")
            },
        ]);
    }
    output::align_right(&mut table, &[2, 3, 4, 5]);
    output::print(&table);
}
