//! Creating and checking the streams and buckets of protocol section 3.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{self, StorageType},
};

use crate::names::Namespace;

mod desired;
mod error;
mod report;

pub(crate) use desired::ServerFeatures;
use desired::{CAPABILITY_FIELDS, Desired, desired, diff, updated_config, with_capabilities};
pub use error::ProvisionError;
pub use report::{
    Drift, ProvisionOutcome, ProvisionReport, ReplicasSource, ResourceKind, ResourceReport,
};

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
    use async_nats::jetstream::stream::RetentionPolicy;

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
