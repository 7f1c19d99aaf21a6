//! The config each stream and bucket should have ([`desired`]), and how a config that
//! exists differs from it ([`diff`]).

use std::time::Duration;

use async_nats::jetstream::{
    kv,
    stream::{self, RetentionPolicy},
};

use crate::names::Namespace;
use crate::protocol;

use super::{Drift, ResourceKind, StreamSettings};

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
    pub(super) fn name(&self) -> String {
        match self {
            Desired::Stream(config) => config.name.clone(),
            Desired::Bucket { config, .. } => config.bucket.clone(),
        }
    }
    pub(super) fn stream_name(&self) -> String {
        match self {
            Desired::Stream(config) => config.name.clone(),
            Desired::Bucket { config, .. } => protocol::kv_stream(&config.bucket),
        }
    }
    pub(super) fn kind(&self) -> ResourceKind {
        match self {
            Desired::Stream(_) => ResourceKind::Stream,
            Desired::Bucket { .. } => ResourceKind::Bucket,
        }
    }
    pub(super) fn replicas(&self) -> usize {
        match self {
            Desired::Stream(config) => config.num_replicas,
            Desired::Bucket { config, .. } => config.num_replicas,
        }
    }
    pub(super) fn allow_message_ttl(&self) -> bool {
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
    pub(super) fn allow_atomic(&self) -> bool {
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
pub(super) const CAPABILITY_FIELDS: [&str; 3] =
    ["allow_msg_schedules", "allow_msg_ttl", "allow_atomic"];

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
pub(super) fn updated_config(want: &Desired, actual: &stream::Config) -> stream::Config {
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
pub(super) fn with_capabilities(want: &Desired, config: &mut stream::Config) {
    config.allow_message_schedules |= want.allow_message_schedules();
    config.allow_message_ttl |= want.allow_message_ttl();
    config.allow_atomic_publish |= want.allow_atomic();
}
