//! Creating and checking the streams and buckets of protocol section 3.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{
    self, kv,
    stream::{self, RetentionPolicy, StorageType},
};

use crate::names::Namespace;
use crate::protocol;

/// The settings of the streams and buckets Herald provisions. Defaults follow protocol
/// section 3; change them with `..Default::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// How long events are kept in `NS_EVENTS` (default 7 days).
    pub events_max_age: Duration,
    /// Deduplication window of `NS_EVENTS` (default 7 days, at most `events_max_age`:
    /// provisioning uses the smaller of the two). While it covers `events_max_age`, an event
    /// published again with the same id is dropped for as long as it could be redelivered,
    /// and workers need no run record for a plain first delivery (protocol section 7); a
    /// shorter window makes them record every finished run (a stored message per event).
    pub events_duplicate_window: Duration,
    /// How long dead letters are kept in `NS_DLQ` (default 30 days).
    pub dlq_max_age: Duration,
    /// Deduplication window of `NS_DLQ` (default 1 hour).
    pub dlq_duplicate_window: Duration,
    /// How long advisories are kept in `NS_ADVISORIES` (default 7 days).
    pub advisories_max_age: Duration,
    /// Replicas of every stream and bucket. `None` (the default): `min(3, size of the
    /// JetStream cluster)`, learned when provisioning (1 on a single server); see
    /// [`Client::provision`](crate::Client::provision).
    pub replicas: Option<usize>,
    /// File (default) or memory storage.
    pub storage: StorageType,
}

impl Default for StreamSettings {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        StreamSettings {
            events_max_age: 7 * DAY,
            events_duplicate_window: 7 * DAY,
            dlq_max_age: 30 * DAY,
            dlq_duplicate_window: Duration::from_secs(3600),
            advisories_max_age: 7 * DAY,
            replicas: None,
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
    /// The replicas it has on the server now.
    pub replicas: usize,
}

/// How provisioning chose the replicas of the streams and buckets it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicasSource {
    /// [`StreamSettings::replicas`] was set.
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

/// Provisioning failed. [`is_transient`](Self::is_transient) tells an outage that passes
/// (retry with backoff) from a configuration the server refuses (fix it first).
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
    /// The JetStream cluster cannot place a stream with the replicas Herald needs, so the
    /// replica count cannot be chosen (or the stream not created) now.
    #[error(
        "the JetStream cluster cannot place a stream with {replicas} replicas: {detail}. If a \
         server is down or restarting, provisioning succeeds once it is back; otherwise check \
         the servers' placement tags and storage, or choose the replicas yourself \
         (StreamSettings::replicas, herald provision --replicas)"
    )]
    NoPlacement {
        /// The replicas asked for.
        replicas: usize,
        /// What the server said.
        detail: String,
    },
}

impl ProvisionError {
    /// True for errors that pass by themselves: a request that timed out or found no
    /// responder, a closed connection, a cluster electing a leader, a peer that is offline,
    /// insufficient resources while a peer is down. False for configuration errors (bad
    /// permissions seen as a refusal, JetStream not enabled, a retention or storage mismatch,
    /// an invalid config), which a retry does not fix.
    pub fn is_transient(&self) -> bool {
        match self {
            ProvisionError::JetStream { source, .. } => is_transient_error(source.as_ref()),
            ProvisionError::Immutable { .. } => false,
            ProvisionError::NoPlacement { detail, .. } => placement_is_transient(detail),
        }
    }
}

/// Whether a "no suitable peers for placement" answer is about a peer being offline (or
/// not heard from yet) rather than about tags or storage.
fn placement_is_transient(detail: &str) -> bool {
    detail.contains("peer offline")
        || detail.contains("miscellaneous issue")
        || detail.contains("fewer take part in JetStream")
}

/// JetStream API error codes that describe a passing state of the cluster.
const TRANSIENT_API_ERRORS: [jetstream::ErrorCode; 8] = [
    jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE,
    jetstream::ErrorCode::CLUSTER_NOT_LEADER,
    jetstream::ErrorCode::INSUFFICIENT_RESOURCES,
    jetstream::ErrorCode::STREAM_OFFLINE,
    jetstream::ErrorCode::CONSUMER_OFFLINE,
    jetstream::ErrorCode::STREAM_OFFLINE_REASON,
    jetstream::ErrorCode::CONSUMER_OFFLINE_REASON,
    jetstream::ErrorCode::CLUSTER_SERVER_MEMBER_CHANGE_INFLIGHT,
];

fn api_error_is_transient(error: &jetstream::Error) -> bool {
    let code = error.error_code();
    TRANSIENT_API_ERRORS.contains(&code)
        || (code == jetstream::ErrorCode::CLUSTER_NO_PEERS
            && placement_is_transient(&error.to_string()))
}

/// Walks an error and its sources for one that says the failure passes by itself.
fn is_transient_error(error: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::context::{
        CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
        GetStreamError, GetStreamErrorKind, RequestError, RequestErrorKind,
    };
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<CreateStreamError>() {
            match error.kind() {
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
                    return true;
                }
                CreateStreamErrorKind::JetStream(api) => return api_error_is_transient(&api),
                _ => {}
            }
        } else if let Some(error) = error.downcast_ref::<GetStreamError>() {
            if let GetStreamErrorKind::JetStream(api) = error.kind() {
                return api_error_is_transient(&api);
            }
        } else if let Some(error) = error.downcast_ref::<CreateKeyValueError>() {
            if error.kind() == CreateKeyValueErrorKind::TimedOut {
                return true;
            }
        } else if let Some(error) = error.downcast_ref::<RequestError>() {
            if matches!(
                error.kind(),
                RequestErrorKind::TimedOut | RequestErrorKind::NoResponders
            ) {
                return true;
            }
        } else if let Some(error) = error.downcast_ref::<async_nats::RequestError>() {
            if matches!(
                error.kind(),
                async_nats::RequestErrorKind::TimedOut | async_nats::RequestErrorKind::NoResponders
            ) {
                return true;
            }
        } else if let Some(error) = error.downcast_ref::<jetstream::Error>() {
            return api_error_is_transient(error);
        } else if let Some(error) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            return matches!(
                error.kind(),
                ErrorKind::TimedOut
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::ConnectionRefused
                    | ErrorKind::BrokenPipe
                    | ErrorKind::NotConnected
                    | ErrorKind::UnexpectedEof
            );
        }
        next = error.source();
    }
    false
}

/// What the connected server supports, which decides optional stream fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerFeatures {
    /// Scheduled messages (nats-server 2.12+): `allow_msg_schedules` on `NS_EVENTS`.
    pub(crate) schedules: bool,
    /// Per-message TTLs (nats-server 2.11+): `allow_msg_ttl` on `NS_EVENTS` and `ns-runs`.
    pub(crate) message_ttl: bool,
}

/// The desired config of one resource.
#[derive(Debug, Clone)]
pub(crate) enum Desired {
    Stream(Box<stream::Config>),
    Bucket {
        config: Box<kv::Config>,
        /// `allow_msg_ttl` on the bucket's stream (per-key TTLs).
        allow_message_ttl: bool,
        /// `allow_atomic` on the bucket's stream (atomic batch publish, nats-server 2.12+):
        /// flow control stores a decision and a limit's state together.
        allow_atomic: bool,
    },
}

impl Desired {
    fn name(&self) -> String {
        match self {
            Desired::Stream(config) => config.name.clone(),
            Desired::Bucket { config, .. } => config.bucket.clone(),
        }
    }
    fn stream_name(&self) -> String {
        match self {
            Desired::Stream(config) => config.name.clone(),
            Desired::Bucket { config, .. } => protocol::kv_stream(&config.bucket),
        }
    }
    fn kind(&self) -> ResourceKind {
        match self {
            Desired::Stream(_) => ResourceKind::Stream,
            Desired::Bucket { .. } => ResourceKind::Bucket,
        }
    }
    fn replicas(&self) -> usize {
        match self {
            Desired::Stream(config) => config.num_replicas,
            Desired::Bucket { config, .. } => config.num_replicas,
        }
    }
    fn allow_message_ttl(&self) -> bool {
        match self {
            Desired::Stream(config) => config.allow_message_ttl,
            Desired::Bucket {
                allow_message_ttl, ..
            } => *allow_message_ttl,
        }
    }
    fn allow_message_schedules(&self) -> bool {
        match self {
            Desired::Stream(config) => config.allow_message_schedules,
            Desired::Bucket { .. } => false,
        }
    }
    fn allow_atomic(&self) -> bool {
        match self {
            Desired::Stream(config) => config.allow_atomic_publish,
            Desired::Bucket { allow_atomic, .. } => *allow_atomic,
        }
    }
}

/// The most activity records `NS_ACTIVITY` keeps per run (per subject).
pub(crate) const ACTIVITY_PER_RUN: i64 = 64;

/// The streams and buckets of a namespace, in the order they must be created
/// (`NS_ADVISORIES` before anything that could raise an advisory).
pub(crate) fn desired(
    namespace: &Namespace,
    settings: &StreamSettings,
    replicas: usize,
    features: ServerFeatures,
) -> Vec<Desired> {
    let stream = |name: String, subjects: Vec<String>, max_age, duplicate_window| stream::Config {
        name,
        subjects,
        retention: RetentionPolicy::Limits,
        storage: settings.storage,
        max_age,
        duplicate_window,
        num_replicas: replicas,
        ..Default::default()
    };
    let bucket =
        |bucket: String, history: i64, max_age, allow_message_ttl, allow_atomic| Desired::Bucket {
            config: Box::new(kv::Config {
                bucket,
                history,
                max_age,
                storage: settings.storage,
                num_replicas: replicas,
                ..Default::default()
            }),
            allow_message_ttl,
            allow_atomic,
        };
    // The server refuses a duplicate window longer than the max age.
    let events_window = if settings.events_max_age.is_zero() {
        settings.events_duplicate_window
    } else {
        settings
            .events_duplicate_window
            .min(settings.events_max_age)
    };
    let events = stream::Config {
        // Durable sleeps and step continuations are scheduled messages (2.12+) that must
        // outlive max_age: they carry `Nats-TTL: never`, which needs allow_msg_ttl (2.11+).
        allow_message_schedules: features.schedules,
        allow_message_ttl: features.message_ttl,
        ..stream(
            namespace.events_stream(),
            vec![namespace.events_wildcard(), namespace.redrive_wildcard()],
            settings.events_max_age,
            events_window,
        )
    };
    // Run records carry their own TTL where the server has per-message TTLs; without them
    // the bucket keeps records as long as the events stream keeps events.
    let runs_max_age = if features.message_ttl {
        Duration::ZERO
    } else {
        settings.events_max_age
    };
    vec![
        Desired::Stream(Box::new(stream(
            namespace.advisories_stream(),
            vec![namespace.advisories_subject()],
            settings.advisories_max_age,
            Duration::from_secs(120),
        ))),
        Desired::Stream(Box::new(events)),
        Desired::Stream(Box::new(stream(
            namespace.dlq_stream(),
            vec![namespace.dlq_wildcard()],
            settings.dlq_max_age,
            settings.dlq_duplicate_window,
        ))),
        bucket(namespace.schemas_bucket(), 1, Duration::ZERO, false, false),
        // Flow control writes a decision and its limit's state in one atomic batch (2.12+).
        bucket(
            namespace.runs_bucket(),
            1,
            runs_max_age,
            features.message_ttl,
            features.schedules,
        ),
        bucket(namespace.keys_bucket(), 1, Duration::ZERO, false, false),
        bucket(namespace.push_bucket(), 1, Duration::ZERO, false, false),
        // Activity records (protocol section 18): observability only, kept as long as the
        // events they describe, the last 64 records of a run.
        Desired::Stream(Box::new(stream::Config {
            max_messages_per_subject: ACTIVITY_PER_RUN,
            ..stream(
                namespace.activity_stream(),
                vec![namespace.activity_wildcard()],
                settings.events_max_age,
                events_window,
            )
        })),
    ]
}

/// Fields that only add a capability, which provisioning turns on by itself in existing
/// streams: Herald's timers need them, and the server never lets them be turned off again.
const CAPABILITY_FIELDS: [&str; 3] = ["allow_msg_schedules", "allow_msg_ttl", "allow_atomic"];

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
    let (storage, max_age, replicas) = match desired {
        Desired::Stream(want) => (want.storage, want.max_age, want.num_replicas),
        Desired::Bucket { config, .. } => (config.storage, config.max_age, config.num_replicas),
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
        }
        Desired::Bucket { config, .. } => check(
            "history",
            config.history.to_string(),
            actual.max_messages_per_subject.to_string(),
            true,
        ),
    }
    check(
        "storage",
        format!("{storage:?}"),
        format!("{:?}", actual.storage),
        false,
    );
    check(
        "max_age",
        format!("{max_age:?}"),
        format!("{:?}", actual.max_age),
        true,
    );
    if let Desired::Stream(want) = desired {
        check(
            "duplicate_window",
            format!("{:?}", want.duplicate_window),
            format!("{:?}", actual.duplicate_window),
            true,
        );
    }
    check(
        "num_replicas",
        replicas.to_string(),
        actual.num_replicas.to_string(),
        true,
    );
    // Capabilities are only ever asked for, never asked to be off.
    if desired.allow_message_schedules() {
        check(
            "allow_msg_schedules",
            "true".to_owned(),
            actual.allow_message_schedules.to_string(),
            true,
        );
    }
    if desired.allow_message_ttl() {
        check(
            "allow_msg_ttl",
            "true".to_owned(),
            actual.allow_message_ttl.to_string(),
            true,
        );
    }
    if desired.allow_atomic() {
        check(
            "allow_atomic",
            "true".to_owned(),
            actual.allow_atomic_publish.to_string(),
            true,
        );
    }
    (drift, immutable)
}

/// `actual` with every field Herald owns set as `want` says (capabilities only turned on).
fn updated_config(want: &Desired, actual: &stream::Config) -> stream::Config {
    let mut updated = match want {
        Desired::Stream(config) => stream::Config {
            subjects: config.subjects.clone(),
            max_age: config.max_age,
            duplicate_window: config.duplicate_window,
            num_replicas: config.num_replicas,
            ..actual.clone()
        },
        Desired::Bucket { config, .. } => stream::Config {
            max_messages_per_subject: config.history,
            max_age: config.max_age,
            num_replicas: config.num_replicas,
            ..actual.clone()
        },
    };
    with_capabilities(want, &mut updated);
    updated
}

/// Turns on the capabilities `want` asks for, keeping any already on.
fn with_capabilities(want: &Desired, config: &mut stream::Config) {
    config.allow_message_schedules |= want.allow_message_schedules();
    config.allow_message_ttl |= want.allow_message_ttl();
    config.allow_atomic_publish |= want.allow_atomic();
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

/// A create refused for placement becomes [`ProvisionError::NoPlacement`]; any other error
/// stays a JetStream error.
fn create_error(
    name: &str,
    replicas: usize,
    error: Box<dyn std::error::Error + Send + Sync>,
) -> ProvisionError {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(current) = next {
        if let Some(create) = current.downcast_ref::<jetstream::context::CreateStreamError>()
            && let jetstream::context::CreateStreamErrorKind::JetStream(api) = create.kind()
            && api.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS
        {
            return ProvisionError::NoPlacement {
                replicas,
                detail: api.to_string(),
            };
        }
        next = current.source();
    }
    js_error("create", name)(error)
}

pub(crate) async fn provision(
    js: &jetstream::Context,
    namespace: &Namespace,
    settings: &StreamSettings,
    options: ProvisionOptions,
    features: ServerFeatures,
) -> Result<ProvisionReport, ProvisionError> {
    let (replicas, replicas_source) = choose_replicas(js, namespace, settings).await?;
    let mut report = ProvisionReport {
        resources: Vec::new(),
        replicas,
        replicas_source,
    };
    let wanted = desired(namespace, settings, replicas, features);
    // Every resource looked up at once (on a running system all of them exist); what is
    // missing is then created in order.
    let found =
        futures::future::join_all(wanted.iter().map(|want| look_up(js, want.stream_name()))).await;
    let mut changed = false;
    for (want, found) in wanted.into_iter().zip(found) {
        // Once an earlier resource was created or updated, the rest are looked up again.
        let found = (!changed).then_some(found);
        let (outcome, replicas) = converge(js, &want, options, found).await?;
        changed |= outcome != ProvisionOutcome::Unchanged;
        report.resources.push(ResourceReport {
            name: want.name(),
            kind: want.kind(),
            outcome,
            replicas,
        });
    }
    Ok(report)
}

/// The replicas of every stream and bucket: the configured count, or `min(3, cluster
/// size)`. The cluster size is not visible to an ordinary account, so the server's own
/// placement answers: an existing `NS_EVENTS` spread over three or more servers, else a
/// probe stream created with 3 (then 2) replicas and deleted. A single server refuses
/// replicas outright; a cluster with too few servers says "no suitable peers"; a cluster
/// with a peer offline is an error that passes, never a quiet downgrade.
async fn choose_replicas(
    js: &jetstream::Context,
    namespace: &Namespace,
    settings: &StreamSettings,
) -> Result<(usize, ReplicasSource), ProvisionError> {
    const MOST: usize = 3;
    if let Some(replicas) = settings.replicas {
        return Ok((replicas, ReplicasSource::Configured));
    }
    let events = namespace.events_stream();
    match js.get_stream(&events).await {
        Ok(stream) => {
            if let Some(cluster) = &stream.cached_info().cluster
                && cluster.replicas.len() + 1 >= MOST
            {
                return Ok((MOST, ReplicasSource::Cluster));
            }
        }
        Err(error) if is_not_found(&error) => {}
        Err(error) => return Err(js_error("look up", &events)(error.into())),
    }
    let probe = namespace.replicas_probe_stream();
    let mut replicas = MOST;
    let mut cleared = false;
    // The servers this one knows of (its INFO's client URLs, its own included). A cluster
    // that was just started may not have every server in its JetStream group yet: placement
    // then fails with no reason given, which must not be read as "fewer servers".
    let known = js.client().server_info().connect_urls.len();
    let forming_since = std::time::Instant::now();
    let mut forming_tries = 0;
    while replicas > 1 {
        let config = stream::Config {
            name: probe.clone(),
            subjects: vec![probe.clone()],
            storage: settings.storage,
            num_replicas: replicas,
            max_bytes: 1024,
            max_age: Duration::from_secs(60),
            ..Default::default()
        };
        let Err(error) = js.create_stream(config).await else {
            if let Err(error) = js.delete_stream(&probe).await {
                tracing::warn!(stream = %probe, %error, "could not delete the replicas probe");
            }
            return Ok((replicas, ReplicasSource::Cluster));
        };
        let jetstream::context::CreateStreamErrorKind::JetStream(api) = error.kind() else {
            return Err(js_error("create the replicas probe", &probe)(error.into()));
        };
        let code = api.error_code();
        if code == jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED {
            return Ok((1, ReplicasSource::SingleServer));
        }
        if code == jetstream::ErrorCode::STREAM_NAME_EXIST && !cleared {
            // A probe left by an interrupted provisioning, with other replicas.
            cleared = true;
            js.delete_stream(&probe)
                .await
                .map_err(|e| js_error("delete the replicas probe", &probe)(e.into()))?;
            continue;
        }
        let detail = api.to_string();
        if code == jetstream::ErrorCode::CLUSTER_NO_PEERS
            && !detail.contains("no suitable peers for placement,")
        {
            if replicas <= known {
                // As many servers are known: the group is still forming. Wait for it.
                if forming_since.elapsed() < CLUSTER_FORMING {
                    forming_tries += 1;
                    let pause = Duration::from_millis(100 * (1 << forming_tries.min(4)));
                    tokio::time::sleep(pause).await;
                    continue;
                }
                return Err(ProvisionError::NoPlacement {
                    replicas,
                    detail: format!(
                        "{detail}; {known} servers are known to the cluster but fewer take                          part in JetStream (set StreamSettings::replicas to choose)"
                    ),
                });
            }
            // Nothing offline, no tag or storage issue: the cluster has fewer servers.
            replicas -= 1;
            continue;
        }
        if code == jetstream::ErrorCode::CLUSTER_NO_PEERS {
            return Err(ProvisionError::NoPlacement { replicas, detail });
        }
        return Err(js_error("create the replicas probe", &probe)(error.into()));
    }
    Ok((1, ReplicasSource::Cluster))
}

/// How long a probe waits for a just-started cluster's JetStream group to take in every
/// server it knows of.
const CLUSTER_FORMING: Duration = Duration::from_secs(10);

/// The configuration of the stream `name`, or `None` when there is none.
async fn look_up(
    js: &jetstream::Context,
    name: String,
) -> Result<Option<stream::Config>, jetstream::context::GetStreamError> {
    match js.get_stream(&name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Creates `want`, or compares it with what exists and updates it as allowed. `found` is a
/// look-up of its stream already made, if any. Returns the outcome and the replicas the
/// resource has now.
async fn converge(
    js: &jetstream::Context,
    want: &Desired,
    options: ProvisionOptions,
    mut found: Option<Result<Option<stream::Config>, jetstream::context::GetStreamError>>,
) -> Result<(ProvisionOutcome, usize), ProvisionError> {
    let name = want.name();
    let stream_name = want.stream_name();
    // Two processes may provision at once: a create that loses the race finds the winner's
    // stream on the second pass and compares with it.
    for _ in 0..2 {
        let looked_up = match found.take() {
            Some(found) => found,
            None => look_up(js, stream_name.clone()).await,
        };
        let existing = looked_up.map_err(|error| js_error("look up", &name)(error.into()))?;
        let Some(actual) = existing else {
            let created = match want {
                Desired::Stream(config) => js
                    .create_stream(config.as_ref().clone())
                    .await
                    .map(drop)
                    .map_err(|e| create_error(&name, want.replicas(), e.into())),
                Desired::Bucket { config, .. } => js
                    .create_key_value(config.as_ref().clone())
                    .await
                    .map(drop)
                    .map_err(|e| create_error(&name, want.replicas(), e.into())),
            };
            match created {
                Ok(()) => {
                    if (want.allow_message_ttl() || want.allow_atomic())
                        && matches!(want, Desired::Bucket { .. })
                    {
                        // A bucket is created without per-key TTLs or atomic batches; turn
                        // them on.
                        let stream = js
                            .get_stream(&stream_name)
                            .await
                            .map_err(|e| js_error("read", &name)(e.into()))?;
                        let mut config = stream.cached_info().config.clone();
                        with_capabilities(want, &mut config);
                        js.update_stream(config)
                            .await
                            .map_err(|e| js_error("update", &name)(e.into()))?;
                    }
                    return Ok((ProvisionOutcome::Created, want.replicas()));
                }
                Err(error) if error.to_string().contains("already in use") => continue,
                Err(error) => return Err(error),
            }
        };
        let (drift, immutable) = diff(want, &actual);
        if drift.is_empty() {
            return Ok((ProvisionOutcome::Unchanged, actual.num_replicas));
        }
        if options.apply_changes {
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
            let updated = updated_config(want, &actual);
            let replicas = updated.num_replicas;
            js.update_stream(updated)
                .await
                .map_err(|e| js_error("update", &name)(e.into()))?;
            return Ok((ProvisionOutcome::Updated(drift), replicas));
        }
        let (capabilities, rest): (Vec<Drift>, Vec<Drift>) = drift
            .into_iter()
            .partition(|d| CAPABILITY_FIELDS.contains(&d.field));
        if !capabilities.is_empty() {
            let mut updated = actual.clone();
            with_capabilities(want, &mut updated);
            js.update_stream(updated)
                .await
                .map_err(|e| js_error("turn on message TTLs and schedules in", &name)(e.into()))?;
            tracing::info!(
                resource = %name,
                fields = ?capabilities.iter().map(|d| d.field).collect::<Vec<_>>(),
                "turned on capabilities Herald's timers need"
            );
        }
        let outcome = if rest.is_empty() {
            ProvisionOutcome::Updated(capabilities)
        } else {
            ProvisionOutcome::Drifted(rest)
        };
        return Ok((outcome, actual.num_replicas));
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

    const ALL_FEATURES: ServerFeatures = ServerFeatures {
        schedules: true,
        message_ttl: true,
    };

    #[test]
    fn the_events_duplicate_window_is_at_most_the_max_age() {
        let ns = Namespace::new("shop").unwrap();
        let window = |max_age: u64, window: u64| {
            let settings = StreamSettings {
                events_max_age: Duration::from_secs(max_age),
                events_duplicate_window: Duration::from_secs(window),
                ..Default::default()
            };
            let all = desired(&ns, &settings, 1, ALL_FEATURES);
            let Desired::Stream(events) = &all[1] else {
                panic!("events is a stream")
            };
            events.duplicate_window.as_secs()
        };
        assert_eq!(window(86_400, 7 * 86_400), 86_400);
        assert_eq!(window(86_400, 120), 120);
        // No max age: the window as given.
        assert_eq!(window(0, 7 * 86_400), 7 * 86_400);
    }

    #[test]
    fn desired_resources_follow_the_protocol() {
        let ns = Namespace::new("shop").unwrap();
        let all = desired(&ns, &StreamSettings::default(), 3, ALL_FEATURES);
        let names: Vec<String> = all.iter().map(Desired::name).collect();
        assert_eq!(
            names,
            [
                "SHOP_ADVISORIES",
                "SHOP_EVENTS",
                "SHOP_DLQ",
                "shop-schemas",
                "shop-runs",
                "shop-keys",
                "shop-push",
                "SHOP_ACTIVITY"
            ]
        );
        let Desired::Stream(events) = &all[1] else {
            panic!("events is a stream")
        };
        assert_eq!(events.subjects, ["shop.events.>", "shop.redrive.>"]);
        assert_eq!(events.retention, RetentionPolicy::Limits);
        assert_eq!(events.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(events.duplicate_window, Duration::from_secs(7 * 86_400));
        let Desired::Stream(advisories) = &all[0] else {
            panic!("advisories is a stream")
        };
        assert_eq!(
            advisories.subjects,
            ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.SHOP_EVENTS.*"]
        );
        assert!(events.allow_message_ttl && events.allow_message_schedules);
        assert!(all.iter().all(|d| d.replicas() == 3));
        let Desired::Bucket {
            config: runs,
            allow_message_ttl,
            allow_atomic,
        } = &all[4]
        else {
            panic!("runs is a bucket")
        };
        assert_eq!(runs.max_age, Duration::ZERO, "records carry their own TTL");
        assert!(allow_message_ttl);
        assert!(allow_atomic, "flow control's decisions are atomic batches");

        // A server without per-message TTLs (before 2.11): the bucket keeps the old age.
        let old = desired(
            &ns,
            &StreamSettings::default(),
            1,
            ServerFeatures {
                schedules: false,
                message_ttl: false,
            },
        );
        let Desired::Bucket {
            config: runs,
            allow_message_ttl,
            allow_atomic,
        } = &old[4]
        else {
            panic!("runs is a bucket")
        };
        assert_eq!(runs.max_age, events.max_age);
        assert!(!allow_message_ttl && !allow_atomic);
        let Desired::Stream(events) = &old[1] else {
            panic!("events is a stream")
        };
        assert!(!events.allow_message_ttl && !events.allow_message_schedules);
    }

    #[test]
    fn diff_names_each_differing_field_and_spots_immutable_ones() {
        let ns = Namespace::default();
        let all = desired(&ns, &StreamSettings::default(), 1, ALL_FEATURES);
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
            allow_message_ttl: false,
            ..events.as_ref().clone()
        };
        let (drift, immutable) = diff(&all[1], &changed);
        let fields: Vec<&str> = drift.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["max_age", "num_replicas", "allow_msg_ttl"]);
        assert!(!immutable);
        let updated = updated_config(&all[1], &changed);
        assert!(updated.allow_message_ttl && updated.allow_message_schedules);
        assert_eq!(updated.max_age, events.max_age);

        // A capability already on is never asked to be turned off.
        let more = stream::Config {
            allow_message_ttl: true,
            ..events.as_ref().clone()
        };
        let none = desired(
            &ns,
            &StreamSettings::default(),
            1,
            ServerFeatures {
                schedules: false,
                message_ttl: false,
            },
        );
        assert_eq!(diff(&none[1], &more), (vec![], false));
        assert!(updated_config(&none[1], &more).allow_message_ttl);

        // A runs bucket made before per-record TTLs: a bucket-wide age, no TTLs.
        let old_runs = stream::Config {
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(7 * 86_400),
            storage: StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        let fields: Vec<&str> = diff(&all[4], &old_runs).0.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["max_age", "allow_msg_ttl", "allow_atomic"]);

        let memory = stream::Config {
            storage: StorageType::Memory,
            ..events.as_ref().clone()
        };
        let (drift, immutable) = diff(&all[1], &memory);
        assert_eq!(drift[0].field, "storage");
        assert!(immutable);
    }

    fn api_error(code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 503,
            "err_code": code,
            "description": description,
        }))
        .unwrap()
    }

    fn create_failed(api: jetstream::Error) -> ProvisionError {
        use jetstream::context::{CreateStreamError, CreateStreamErrorKind};
        ProvisionError::JetStream {
            action: "create",
            name: "NS_EVENTS".into(),
            source: CreateStreamError::new(CreateStreamErrorKind::JetStream(api)).into(),
        }
    }

    #[test]
    fn outages_are_transient_and_configuration_is_not() {
        use jetstream::context::{
            CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
            GetStreamError, GetStreamErrorKind, RequestError, RequestErrorKind,
        };
        let failed = |source: async_nats::Error| ProvisionError::JetStream {
            action: "look up",
            name: "NS_EVENTS".into(),
            source,
        };
        // Timeouts and missing responders, however deep in the chain.
        assert!(
            failed(CreateStreamError::new(CreateStreamErrorKind::TimedOut).into()).is_transient()
        );
        assert!(failed(RequestError::new(RequestErrorKind::NoResponders).into()).is_transient());
        assert!(
            failed(
                GetStreamError::with_source(
                    GetStreamErrorKind::Request,
                    RequestError::new(RequestErrorKind::TimedOut)
                )
                .into()
            )
            .is_transient()
        );
        assert!(
            failed(
                CreateKeyValueError::with_source(
                    CreateKeyValueErrorKind::BucketCreate,
                    CreateStreamError::new(CreateStreamErrorKind::TimedOut)
                )
                .into()
            )
            .is_transient()
        );
        assert!(
            failed(async_nats::RequestError::new(async_nats::RequestErrorKind::TimedOut).into())
                .is_transient()
        );
        // A connection that closed.
        let closed = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed");
        assert!(failed(closed.into()).is_transient());
        // Leader elections, offline peers, resources missing while a peer is down.
        for (code, text) in [
            (10008, "JetStream system temporarily unavailable"),
            (10023, "insufficient resources"),
            (10118, "stream is offline"),
            (10005, "no suitable peers for placement, peer offline"),
        ] {
            assert!(
                create_failed(api_error(code, text)).is_transient(),
                "{text}"
            );
        }
        // Configuration: JetStream off, invalid config, a name taken, tags that match no server.
        for (code, text) in [
            (10039, "JetStream not enabled for account"),
            (10052, "stream configuration invalid"),
            (
                10058,
                "stream name already in use with a different configuration",
            ),
            (
                10005,
                "no suitable peers for placement, tags not matched ['ssd']",
            ),
        ] {
            assert!(
                !create_failed(api_error(code, text)).is_transient(),
                "{text}"
            );
        }
        assert!(
            !failed(GetStreamError::new(GetStreamErrorKind::InvalidStreamName).into())
                .is_transient()
        );
        assert!(!failed("permissions violation".into()).is_transient());
        let immutable = ProvisionError::Immutable {
            name: "NS_EVENTS".into(),
            fields: "retention".into(),
        };
        assert!(!immutable.is_transient());
        let offline = ProvisionError::NoPlacement {
            replicas: 3,
            detail: "no suitable peers for placement, peer offline (code 400, error code 10005)"
                .into(),
        };
        assert!(offline.is_transient());
        assert!(
            offline.to_string().contains("StreamSettings::replicas"),
            "{offline}"
        );
        let tags = ProvisionError::NoPlacement {
            replicas: 3,
            detail: "no suitable peers for placement, insufficient storage".into(),
        };
        assert!(!tags.is_transient());
    }

    #[test]
    fn placement_refusals_become_no_placement() {
        use jetstream::context::{CreateStreamError, CreateStreamErrorKind};
        let error = create_error(
            "NS_EVENTS",
            3,
            CreateStreamError::new(CreateStreamErrorKind::JetStream(api_error(
                10005,
                "no suitable peers for placement, peer offline",
            )))
            .into(),
        );
        assert!(
            matches!(error, ProvisionError::NoPlacement { replicas: 3, .. }),
            "{error}"
        );
        let other = create_error(
            "NS_EVENTS",
            3,
            CreateStreamError::new(CreateStreamErrorKind::TimedOut).into(),
        );
        assert!(matches!(other, ProvisionError::JetStream { .. }), "{other}");
    }
}
