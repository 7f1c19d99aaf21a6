//! Creating and checking the streams and buckets of protocol section 3.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{self, RetentionPolicy, StorageType},
};

use crate::names::Namespace;

/// The settings of the streams and buckets Herald provisions. Defaults follow protocol
/// section 3; change them with `..Default::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long events are kept in `NS_EVENTS` (default 7 days).
    pub events_max_age: Duration,
    /// Deduplication window of `NS_EVENTS` (default 2 minutes).
    pub events_duplicate_window: Duration,
    /// How long dead letters are kept in `NS_DLQ` (default 30 days).
    pub dlq_max_age: Duration,
    /// Deduplication window of `NS_DLQ` (default 1 hour).
    pub dlq_duplicate_window: Duration,
    /// How long advisories are kept in `NS_ADVISORIES` (default 7 days).
    pub advisories_max_age: Duration,
    /// Replicas of every stream and bucket: 1 on a single server, 3 in a cluster.
    pub replicas: usize,
    /// File (default) or memory storage.
    pub storage: StorageType,
}

impl Default for StreamSettings {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        StreamSettings {
            events_max_age: 7 * DAY,
            events_duplicate_window: Duration::from_secs(120),
            dlq_max_age: 30 * DAY,
            dlq_duplicate_window: Duration::from_secs(3600),
            advisories_max_age: 7 * DAY,
            replicas: 1,
            storage: StorageType::File,
        }
    }
}

/// Whether [`Client::provision_with`](crate::Client::provision_with) may change what exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProvisionOptions {
    /// Update streams and buckets whose config differs (only fields the server can change).
    /// Off by default: a difference is reported, never applied silently.
    pub apply_changes: bool,
}

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
}

/// The result of provisioning a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisionReport {
    /// One entry per stream and bucket, in creation order.
    pub resources: Vec<ResourceReport>,
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
            write!(f, "{kind} {}: ", resource.name)?;
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

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A JetStream request failed.
    #[error("cannot {action} {name}: {source}")]
    JetStream {
        /// What was being done.
        action: &'static str,
        /// The stream or bucket.
        name: String,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
    /// Fields that the server cannot change differ.
    #[error(
        "{name} differs in fields the server cannot change ({fields}); delete and re-create it \
         (its data is lost) or change Herald's settings to match"
    )]
    Immutable {
        /// The stream or bucket.
        name: String,
        /// The differing immutable fields.
        fields: String,
    },
}

/// The desired config of one resource.
#[derive(Debug, Clone)]
pub(crate) enum Desired {
    Stream(Box<stream::Config>),
    Bucket(Box<jetstream::kv::Config>),
}

impl Desired {
    fn name(&self) -> String {
        match self {
            Desired::Stream(config) => config.name.clone(),
            Desired::Bucket(config) => config.bucket.clone(),
        }
    }
    fn stream_name(&self) -> String {
        match self {
            Desired::Stream(config) => config.name.clone(),
            Desired::Bucket(config) => format!("KV_{}", config.bucket),
        }
    }
    fn kind(&self) -> ResourceKind {
        match self {
            Desired::Stream(_) => ResourceKind::Stream,
            Desired::Bucket(_) => ResourceKind::Bucket,
        }
    }
}

/// The streams and buckets of a namespace, in the order they must be created
/// (`NS_ADVISORIES` before anything that could raise an advisory).
pub(crate) fn desired(
    namespace: &Namespace,
    settings: &StreamSettings,
    schedules: bool,
) -> Vec<Desired> {
    let stream = |name: String, subjects: Vec<String>, max_age, duplicate_window| {
        Desired::Stream(Box::new(stream::Config {
            name,
            subjects,
            retention: RetentionPolicy::Limits,
            storage: settings.storage,
            max_age,
            duplicate_window,
            num_replicas: settings.replicas,
            ..Default::default()
        }))
    };
    let bucket = |bucket: String, history: i64, max_age| {
        Desired::Bucket(Box::new(jetstream::kv::Config {
            bucket,
            history,
            max_age,
            storage: settings.storage,
            num_replicas: settings.replicas,
            ..Default::default()
        }))
    };
    vec![
        stream(
            namespace.advisories_stream(),
            vec![namespace.advisories_subject()],
            settings.advisories_max_age,
            Duration::from_secs(120),
        ),
        {
            let mut events = stream(
                namespace.events_stream(),
                vec![namespace.events_wildcard(), namespace.redrive_wildcard()],
                settings.events_max_age,
                settings.events_duplicate_window,
            );
            // Durable sleeps and step continuations are scheduled messages (2.12+).
            if let Desired::Stream(config) = &mut events {
                config.allow_message_schedules = schedules;
            }
            events
        },
        stream(
            namespace.dlq_stream(),
            vec![namespace.dlq_wildcard()],
            settings.dlq_max_age,
            settings.dlq_duplicate_window,
        ),
        bucket(namespace.schemas_bucket(), 1, Duration::ZERO),
        bucket(namespace.runs_bucket(), 1, settings.events_max_age),
    ]
}

/// The fields of `actual` that differ from `desired` (only the fields Herald sets), and
/// whether any of them cannot be changed by an update.
pub(crate) fn diff(desired: &Desired, actual: &stream::Config) -> (Vec<Drift>, bool) {
    let mut drift = Vec::new();
    let mut immutable = false;
    let mut check = |field: &'static str, expected: String, found: String, can_change: bool| {
        if expected != found {
            immutable |= !can_change;
            drift.push(Drift {
                field,
                expected,
                actual: found,
            });
        }
    };
    match desired {
        Desired::Stream(want) => {
            let mut want_subjects = want.subjects.clone();
            let mut have_subjects = actual.subjects.clone();
            want_subjects.sort();
            have_subjects.sort();
            check(
                "subjects",
                format!("{want_subjects:?}"),
                format!("{have_subjects:?}"),
                true,
            );
            check(
                "retention",
                format!("{:?}", want.retention),
                format!("{:?}", actual.retention),
                false,
            );
            check(
                "storage",
                format!("{:?}", want.storage),
                format!("{:?}", actual.storage),
                false,
            );
            check(
                "max_age",
                format!("{:?}", want.max_age),
                format!("{:?}", actual.max_age),
                true,
            );
            check(
                "duplicate_window",
                format!("{:?}", want.duplicate_window),
                format!("{:?}", actual.duplicate_window),
                true,
            );
            check(
                "num_replicas",
                want.num_replicas.to_string(),
                actual.num_replicas.to_string(),
                true,
            );
            if want.allow_message_schedules {
                check(
                    "allow_msg_schedules",
                    "true".to_owned(),
                    actual.allow_message_schedules.to_string(),
                    true,
                );
            }
        }
        Desired::Bucket(want) => {
            check(
                "history",
                want.history.to_string(),
                actual.max_messages_per_subject.to_string(),
                true,
            );
            check(
                "storage",
                format!("{:?}", want.storage),
                format!("{:?}", actual.storage),
                false,
            );
            check(
                "max_age",
                format!("{:?}", want.max_age),
                format!("{:?}", actual.max_age),
                true,
            );
            check(
                "num_replicas",
                want.num_replicas.to_string(),
                actual.num_replicas.to_string(),
                true,
            );
        }
    }
    (drift, immutable)
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

fn js_error(
    action: &'static str,
    name: &str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ProvisionError {
    let name = name.to_owned();
    move |source| ProvisionError::JetStream {
        action,
        name,
        source,
    }
}

pub(crate) async fn provision(
    js: &jetstream::Context,
    namespace: &Namespace,
    settings: &StreamSettings,
    options: ProvisionOptions,
    schedules: bool,
) -> Result<ProvisionReport, ProvisionError> {
    let mut report = ProvisionReport::default();
    for want in desired(namespace, settings, schedules) {
        let outcome = converge(js, &want, options).await?;
        report.resources.push(ResourceReport {
            name: want.name(),
            kind: want.kind(),
            outcome,
        });
    }
    Ok(report)
}

async fn converge(
    js: &jetstream::Context,
    want: &Desired,
    options: ProvisionOptions,
) -> Result<ProvisionOutcome, ProvisionError> {
    let name = want.name();
    let stream_name = want.stream_name();
    // Two processes may provision at once: a create that loses the race finds the winner's
    // stream on the second pass and compares with it.
    for _ in 0..2 {
        let existing = match js.get_stream(&stream_name).await {
            Ok(mut stream) => Some(
                stream
                    .info()
                    .await
                    .map_err(|e| js_error("read", &name)(e.into()))?
                    .config
                    .clone(),
            ),
            Err(error) if is_not_found(&error) => None,
            Err(error) => return Err(js_error("look up", &name)(error.into())),
        };
        let Some(actual) = existing else {
            let created = match want {
                Desired::Stream(config) => js
                    .create_stream(config.as_ref().clone())
                    .await
                    .map(drop)
                    .map_err(|e| -> async_nats::Error { e.into() }),
                Desired::Bucket(config) => js
                    .create_key_value(config.as_ref().clone())
                    .await
                    .map(drop)
                    .map_err(|e| -> async_nats::Error { e.into() }),
            };
            match created {
                Ok(()) => return Ok(ProvisionOutcome::Created),
                Err(error) if error.to_string().contains("already in use") => continue,
                Err(error) => return Err(js_error("create", &name)(error)),
            }
        };
        let (drift, immutable) = diff(want, &actual);
        if drift.is_empty() {
            return Ok(ProvisionOutcome::Unchanged);
        }
        if !options.apply_changes {
            return Ok(ProvisionOutcome::Drifted(drift));
        }
        if immutable {
            return Err(ProvisionError::Immutable {
                name,
                fields: drift
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        match want {
            Desired::Stream(config) => {
                // Keep what the server or an operator set on fields Herald does not own.
                let updated = stream::Config {
                    subjects: config.subjects.clone(),
                    max_age: config.max_age,
                    duplicate_window: config.duplicate_window,
                    num_replicas: config.num_replicas,
                    allow_message_schedules: config.allow_message_schedules
                        || actual.allow_message_schedules,
                    ..actual
                };
                js.update_stream(updated)
                    .await
                    .map_err(|e| js_error("update", &name)(e.into()))?;
            }
            Desired::Bucket(config) => {
                js.update_key_value(config.as_ref().clone())
                    .await
                    .map_err(|e| js_error("update", &name)(e.into()))?;
            }
        }
        return Ok(ProvisionOutcome::Updated(drift));
    }
    Err(ProvisionError::JetStream {
        action: "create",
        name,
        source: "it was created and deleted concurrently; try again".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_resources_follow_the_protocol() {
        let ns = Namespace::new("shop").unwrap();
        let all = desired(&ns, &StreamSettings::default(), true);
        let names: Vec<String> = all.iter().map(Desired::name).collect();
        assert_eq!(
            names,
            [
                "SHOP_ADVISORIES",
                "SHOP_EVENTS",
                "SHOP_DLQ",
                "shop-schemas",
                "shop-runs"
            ]
        );
        let Desired::Stream(events) = &all[1] else {
            panic!("events is a stream")
        };
        assert_eq!(events.subjects, ["shop.events.>", "shop.redrive.>"]);
        assert_eq!(events.retention, RetentionPolicy::Limits);
        assert_eq!(events.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(events.duplicate_window, Duration::from_secs(120));
        let Desired::Stream(advisories) = &all[0] else {
            panic!("advisories is a stream")
        };
        assert_eq!(
            advisories.subjects,
            ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SHOP_EVENTS.*"]
        );
        let Desired::Bucket(runs) = &all[4] else {
            panic!("runs is a bucket")
        };
        assert_eq!(runs.max_age, events.max_age);
    }

    #[test]
    fn diff_names_each_differing_field_and_spots_immutable_ones() {
        let ns = Namespace::default();
        let all = desired(&ns, &StreamSettings::default(), true);
        let Desired::Stream(events) = &all[1] else {
            panic!("events is a stream")
        };
        let same = events.as_ref().clone();
        assert_eq!(diff(&all[1], &same), (vec![], false));

        let mut reordered = events.as_ref().clone();
        reordered.subjects.reverse();
        assert!(
            diff(&all[1], &reordered).0.is_empty(),
            "subject order is irrelevant"
        );

        let changed = stream::Config {
            max_age: Duration::from_secs(60),
            num_replicas: 3,
            ..events.as_ref().clone()
        };
        let (drift, immutable) = diff(&all[1], &changed);
        let fields: Vec<&str> = drift.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["max_age", "num_replicas"]);
        assert!(!immutable);

        let memory = stream::Config {
            storage: StorageType::Memory,
            ..events.as_ref().clone()
        };
        let (drift, immutable) = diff(&all[1], &memory);
        assert_eq!(drift[0].field, "storage");
        assert!(immutable);
    }
}
