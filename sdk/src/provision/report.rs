//! What provisioning did or would do: [`ProvisionReport`], one [`ResourceReport`] per
//! stream or bucket, with its [`Drift`].

use std::fmt;

/// A stream or a KV bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceKind {
    /// A JetStream stream.
    Stream,
    /// A JetStream key-value bucket.
    Bucket,
}

/// One config field that differs from what Herald expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The field, as named in the JetStream config (`max_age`, `num_replicas`, …).
    pub field: &'static str,
    /// What Herald expects.
    pub expected: String,
    /// What the server has.
    pub actual: String,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.field, self.expected, self.actual
        )
    }
}

/// What provisioning did with one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProvisionOutcome {
    /// It did not exist and was created.
    Created,
    /// It exists with the expected config.
    Unchanged,
    /// It exists with a different config, left as it is.
    Drifted(Vec<Drift>),
    /// It existed with a different config and was updated.
    Updated(Vec<Drift>),
}

/// What provisioning did with one stream or bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceReport {
    /// Stream or bucket name.
    pub name: String,
    /// Stream or bucket.
    pub kind: ResourceKind,
    /// What happened.
    pub outcome: ProvisionOutcome,
    /// The replicas it has on the server now.
    pub replicas: usize,
}

/// How provisioning chose the replicas of the streams and buckets it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicasSource {
    /// [`StreamSettings::replicas`](crate::StreamSettings::replicas) was set.
    Configured,
    /// JetStream runs on a single server (not clustered): 1.
    SingleServer,
    /// JetStream is clustered: `min(3, servers that can hold a replica)`.
    Cluster,
}

impl fmt::Display for ReplicasSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicasSource::Configured => "as configured",
            ReplicasSource::SingleServer => "single server",
            ReplicasSource::Cluster => "min(3, cluster size)",
        })
    }
}

/// The result of provisioning a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionReport {
    /// One entry per stream and bucket, in creation order.
    pub resources: Vec<ResourceReport>,
    /// The replicas Herald expects of every stream and bucket (and gives those it creates).
    pub replicas: usize,
    /// How [`replicas`](Self::replicas) was chosen.
    pub replicas_source: ReplicasSource,
}

impl ProvisionReport {
    /// True when nothing differs from the expected config (after any update).
    pub fn is_converged(&self) -> bool {
        self.resources
            .iter()
            .all(|r| !matches!(r.outcome, ProvisionOutcome::Drifted(_)))
    }

    /// The resources whose config differs and was left alone.
    pub fn drifted(&self) -> impl Iterator<Item = (&str, &[Drift])> {
        self.resources.iter().filter_map(|r| match &r.outcome {
            ProvisionOutcome::Drifted(drift) => Some((r.name.as_str(), drift.as_slice())),
            _ => None,
        })
    }
}

impl fmt::Display for ProvisionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, resource) in self.resources.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            let kind = match resource.kind {
                ResourceKind::Stream => "stream",
                ResourceKind::Bucket => "bucket",
            };
            write!(f, "{kind} {} (R{}): ", resource.name, resource.replicas)?;
            let list = |drift: &[Drift]| {
                drift
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            match &resource.outcome {
                ProvisionOutcome::Created => write!(f, "created")?,
                ProvisionOutcome::Unchanged => write!(f, "unchanged")?,
                ProvisionOutcome::Drifted(drift) => write!(
                    f,
                    "differs, left as is ({}); provision with apply_changes to update it",
                    list(drift)
                )?,
                ProvisionOutcome::Updated(drift) => write!(f, "updated ({})", list(drift))?,
            }
        }
        Ok(())
    }
}
