//! `herald provision`.

use std::process::ExitCode;

use clap::Args;

use super::Connection;

#[derive(Debug, Args)]
pub(crate) struct Provision {
    #[command(flatten)]
    connection: Connection,
    /// Update streams and buckets whose config differs from Herald's.
    #[arg(long)]
    apply: bool,
    /// Replicas of every stream and bucket [default: min(3, size of the JetStream cluster),
    /// 1 on a single server].
    #[arg(long)]
    replicas: Option<usize>,
}

impl Provision {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .streams(herald::StreamSettings {
                replicas: self.replicas,
                ..Default::default()
            })
            .connect(self.connection.url()?)
            .await?;
        let report = client
            .provision_with(herald::ProvisionOptions {
                apply_changes: self.apply,
            })
            .await?;
        println!("replicas {} ({})", report.replicas, report.replicas_source);
        println!("{report}");
        // Drift that was reported but not applied is a failure for scripts and CI.
        Ok(if report.is_converged() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
    }
}
