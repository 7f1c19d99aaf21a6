//! `herald provision`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::Global;
use crate::exit::Exit;

#[derive(Debug, Args)]
pub(crate) struct Provision {
    /// Update streams and buckets whose config differs from Herald's.
    #[arg(long)]
    apply: bool,
    /// Replicas of every stream and bucket [default: min(3, size of the JetStream cluster),
    /// 1 on a single server].
    #[arg(long)]
    replicas: Option<usize>,
}

impl Provision {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        let connection = &global.connection;
        let options = connection.options().streams(herald::StreamSettings {
            replicas: self.replicas,
            ..Default::default()
        });
        let client = connection.connect_with(options).await?;
        let report = client
            .provision_with(herald::ProvisionOptions {
                apply_changes: self.apply,
            })
            .await?;
        if global.json {
            let resources: Vec<serde_json::Value> =
                report.resources.iter().map(resource_json).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "namespace": client.namespace().as_str(),
                    "replicas": report.replicas,
                    "replicas_source": report.replicas_source.to_string(),
                    "converged": report.is_converged(),
                    "resources": resources,
                }))?
            );
        } else {
            println!("replicas {} ({})", report.replicas, report.replicas_source);
            println!("{report}");
        }
        // Drift that was reported but not applied is a failure for scripts and CI.
        Ok(if report.is_converged() {
            ExitCode::SUCCESS
        } else {
            Exit::Drift.into()
        })
    }
}

/// One stream or bucket of a provisioning report, as JSON.
fn resource_json(resource: &herald::ResourceReport) -> serde_json::Value {
    let (outcome, drift) = match &resource.outcome {
        herald::ProvisionOutcome::Created => ("created", &[][..]),
        herald::ProvisionOutcome::Unchanged => ("unchanged", &[][..]),
        herald::ProvisionOutcome::Drifted(drift) => ("drifted", drift.as_slice()),
        herald::ProvisionOutcome::Updated(drift) => ("updated", drift.as_slice()),
        _ => ("other", &[][..]),
    };
    json!({
        "name": resource.name,
        "kind": match resource.kind {
            herald::ResourceKind::Stream => "stream",
            _ => "bucket",
        },
        "outcome": outcome,
        "replicas": resource.replicas,
        "drift": drift
            .iter()
            .map(|d| json!({"field": d.field, "expected": d.expected, "actual": d.actual}))
            .collect::<Vec<_>>(),
    })
}
