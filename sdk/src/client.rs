//! [`Client`]: connecting, provisioning and publishing.

use std::any::TypeId;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use async_nats::header::HeaderValue;
use async_nats::jetstream;
use parking_lot::RwLock;

mod ack;
mod envelope;
mod errors;
mod options;
mod publish;

use crate::Event;
use crate::names::Namespace;
use crate::provision::{
    ProvisionError, ProvisionOptions, ProvisionReport, ServerFeatures, StreamSettings, provision,
};
use crate::registry::{Registry, RegistryError};

pub use ack::{AckFuture, PendingAck, PublishAck};
pub use errors::{ConnectError, PublishError};
pub use options::{Auth, ConnectOptions, DEFAULT_MAX_PENDING_ACKS, PublishOptions, TlsOptions};
use publish::{Known, TypeEntry, TypeIdHasher};

struct Inner {
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    namespace: Namespace,
    source: String,
    /// `source` as the `ce-source` header value (percent-encoded once).
    source_header: HeaderValue,
    /// The `ce-specversion` header value.
    spec_version_header: HeaderValue,
    validate: bool,
    max_pending_acks: usize,
    streams: StreamSettings,
    by_rust_type: RwLock<HashMap<TypeId, Arc<TypeEntry>, BuildHasherDefault<TypeIdHasher>>>,
    by_event_type: RwLock<HashMap<String, Arc<Known>>>,
    use_registry: bool,
    registry: tokio::sync::OnceCell<Registry>,
    published: opentelemetry::metrics::Counter<u64>,
}

/// A connection to NATS for one namespace: provisions it and publishes events. Cheap to
/// clone; clones share the connection.
///
/// ```no_run
/// # use herald::{Client, Event};
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, Event)]
/// # #[event(type = "user.signup")]
/// # struct UserSignup { email: String }
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::connect("nats://127.0.0.1:4222").await?;
/// client.provision().await?;
/// let ack = client.publish(&UserSignup { email: "a@example.com".into() }).await?.await?;
/// println!("stored as {} #{}", ack.stream, ack.sequence);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("namespace", &self.inner.namespace)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `url` with default options (namespace `herald`, validation on).
    pub async fn connect(url: &str) -> Result<Client, ConnectError> {
        ConnectOptions::default().connect(url).await
    }

    /// Options for connecting: namespace, credentials, TLS, source, validation.
    pub fn builder() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.inner.namespace
    }

    /// The `ce-source` of published events.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    /// The underlying JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// True when the connected server has scheduled messages (nats-server 2.12+), which
    /// durable sleeps and step continuations use.
    pub fn supports_schedules(&self) -> bool {
        self.server_at_least(2, 12)
    }

    /// True when the connected server has per-message TTLs (`Nats-TTL`, nats-server 2.11+),
    /// which let scheduled messages outlive `NS_EVENTS`' max age and run records carry
    /// their own expiry.
    pub fn supports_message_ttl(&self) -> bool {
        self.server_at_least(2, 11)
    }

    /// Whether the connected server's version is at least `major.minor`.
    fn server_at_least(&self, major: u32, minor: u32) -> bool {
        let version = self.inner.nats.server_info().version;
        let mut parts = version.trim_start_matches('v').split('.');
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0)
        };
        (next(), next()) >= (major, minor)
    }

    /// The stream settings used by [`provision`](Self::provision).
    pub fn stream_settings(&self) -> &StreamSettings {
        &self.inner.streams
    }

    /// Creates the namespace's streams and buckets, or checks those that exist.
    ///
    /// Replicas: [`StreamSettings::replicas`] when set, else `min(3, size of the JetStream
    /// cluster)`: 1 on a single server, 3 on a cluster of three or more. An ordinary account
    /// cannot ask for the cluster size, so the server's placement answers it: an existing
    /// `NS_EVENTS` on three or more servers, or a probe stream `NS_REPLICAS_PROBE` created
    /// with 3 (then 2) replicas and deleted at once. While a server of the cluster is
    /// offline the probe fails with [`ProvisionError::NoPlacement`], which
    /// [is transient](ProvisionError::is_transient): provisioning never falls back to fewer
    /// replicas because a server is down.
    ///
    /// An existing stream or bucket is changed only to turn on `allow_msg_ttl` and
    /// `allow_msg_schedules` where the server has them (Herald's timers need them, and they
    /// only add a capability); any other difference is reported in the
    /// [`ProvisionReport`] and applied only by [`provision_with`](Self::provision_with).
    pub async fn provision(&self) -> Result<ProvisionReport, ProvisionError> {
        self.provision_with(ProvisionOptions::default()).await
    }

    /// [`provision`](Self::provision), optionally updating what differs.
    pub async fn provision_with(
        &self,
        options: ProvisionOptions,
    ) -> Result<ProvisionReport, ProvisionError> {
        provision(
            &self.inner.jetstream,
            &self.inner.namespace,
            &self.inner.streams,
            options,
            ServerFeatures {
                schedules: self.supports_schedules(),
                message_ttl: self.supports_message_ttl(),
            },
        )
        .await
    }

    fn count_invalid(&self, event_type: opentelemetry::StringValue) {
        self.inner.published.add(
            1,
            &[
                opentelemetry::KeyValue::new("event_type", event_type),
                opentelemetry::KeyValue::new("outcome", "invalid"),
            ],
        );
    }

    /// Makes the schema of `E` known for untyped publishing of its type (and registers it,
    /// when the client uses the registry).
    pub async fn add_local_schema<E: Event>(&self) -> Result<(), PublishError> {
        let entry = self.type_entry::<E>();
        self.known::<E>(&entry).await.map(drop)
    }

    /// The namespace's schema registry (opened once per client).
    pub async fn registry(&self) -> Result<&Registry, RegistryError> {
        self.inner
            .registry
            .get_or_try_init(|| {
                Registry::open(
                    &self.inner.jetstream,
                    &self.inner.namespace,
                    &self.inner.source,
                )
            })
            .await
    }
}
