//! [`Client`]: connecting, provisioning and publishing.

use std::any::TypeId;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::Subject;
use async_nats::header::HeaderValue;
use async_nats::jetstream::{self, context::PublishErrorKind};
use parking_lot::RwLock;

mod envelope;

use crate::headers;
use crate::names::{EventType, NameError, Namespace, check_event_id};
use crate::provision::{
    ProvisionError, ProvisionOptions, ProvisionReport, ServerFeatures, StreamSettings, provision,
};
use crate::registry::{Registry, RegistryError};
use crate::schema::{CompiledSchema, SchemaCompileError, SerializeError, Violation};
use crate::{Event, trace};
use envelope::{TypeHeaders, names};

/// How to log in to NATS.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// User and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An nkey seed (`SU…`).
    NKey(String),
    /// A `.creds` file (JWT and nkey seed).
    CredentialsFile(PathBuf),
}

/// TLS settings.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Require TLS even if the server does not ask for it.
    pub require: bool,
    /// PEM file of extra root certificates to trust.
    pub root_certificates: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// Options for [`Client`]; build with [`Client::builder`], then call
/// [`connect`](ConnectOptions::connect).
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    namespace: String,
    source: Option<String>,
    validate: bool,
    connection_name: Option<String>,
    auth: Auth,
    tls: TlsOptions,
    request_timeout: Option<Duration>,
    max_pending_acks: usize,
    streams: StreamSettings,
    use_registry: bool,
    meter: Option<opentelemetry::metrics::Meter>,
}

/// Default of [`ConnectOptions::max_pending_acks`].
pub const DEFAULT_MAX_PENDING_ACKS: usize = 65_536;

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            namespace: "herald".to_owned(),
            source: None,
            validate: true,
            connection_name: None,
            auth: Auth::None,
            tls: TlsOptions::default(),
            request_timeout: None,
            max_pending_acks: DEFAULT_MAX_PENDING_ACKS,
            streams: StreamSettings::default(),
            use_registry: false,
            meter: None,
        }
    }
}

impl ConnectOptions {
    /// The namespace (default `herald`); checked when connecting.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The `ce-source` of published events (default `urn:herald:service:<program name>`).
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Validate payloads against their schema before publishing (default on).
    pub fn validate(mut self, validate: bool) -> Self {
        self.validate = validate;
        self
    }

    /// The connection name shown by the server's monitoring.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Log in with a user and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.auth = Auth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Log in with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Log in with an nkey seed.
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.auth = Auth::NKey(seed.into());
        self
    }

    /// Log in with a credentials file.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = Auth::CredentialsFile(path.into());
        self
    }

    /// Any [`Auth`].
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// TLS settings.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// How long JetStream requests and publish acks may take (async-nats default otherwise).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How many sent events may wait for their ack at once on this client (default 65,536).
    /// A [`PendingAck`] counts until it is awaited or dropped; one more publish is refused
    /// with [`PublishError::TooManyPending`] rather than waiting for a slot that the caller
    /// itself may be holding.
    pub fn max_pending_acks(mut self, limit: usize) -> Self {
        self.max_pending_acks = limit.max(1);
        self
    }

    /// Use the schema registry (protocol section 5): the schema of each event type is
    /// registered (or found, when already registered) on first use, and every validated
    /// event says which version it was validated against in `ce-dataschema`. An
    /// incompatible schema is refused with [`PublishError::Registry`].
    pub fn use_registry(mut self, enabled: bool) -> Self {
        self.use_registry = enabled;
        self
    }

    /// The meter for `herald.events.published` (by `event_type` and `outcome`: ok,
    /// duplicate, invalid, error). Default: the global provider's `herald` meter, a no-op
    /// unless the application installs one.
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Settings of the streams and buckets that [`Client::provision`] creates.
    pub fn streams(mut self, streams: StreamSettings) -> Self {
        self.streams = streams;
        self
    }

    /// Connects to `url` (several servers separated by commas).
    pub async fn connect(self, url: &str) -> Result<Client, ConnectError> {
        let namespace = Namespace::new(&self.namespace)?;
        let source = match self.source {
            Some(source) => {
                if source.is_empty() || source.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ConnectError::InvalidSource { source_uri: source });
                }
                source
            }
            None => default_source(),
        };
        let mut options = match &self.auth {
            Auth::None => async_nats::ConnectOptions::new(),
            Auth::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Auth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            Auth::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
            Auth::CredentialsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| ConnectError::Credentials {
                    path: path.clone(),
                    source,
                })?,
        };
        if let Some(name) = &self.connection_name {
            options = options.name(name);
        }
        if self.tls.require {
            options = options.require_tls(true);
        }
        if let Some(roots) = &self.tls.root_certificates {
            options = options.add_root_certificates(roots.clone());
        }
        if let Some((cert, key)) = &self.tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(timeout) = self.request_timeout {
            options = options.request_timeout(Some(timeout));
        }
        options = options.event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                other => tracing::debug!(event = %other, "NATS connection event"),
            }
        });
        let servers: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let nats = options
            .connect(servers)
            .await
            .map_err(|source| ConnectError::from_nats(url, source))?;
        let mut js = jetstream::ContextBuilder::new()
            .max_ack_inflight(self.max_pending_acks)
            .backpressure_on_inflight(false);
        if let Some(timeout) = self.request_timeout {
            js = js.timeout(timeout);
        }
        let jetstream = js.build(nats.clone());
        Ok(Client {
            inner: Arc::new(Inner {
                nats,
                jetstream,
                namespace,
                source_header: HeaderValue::from(headers::encode_value(&source).into_owned()),
                spec_version_header: HeaderValue::from(headers::SPEC_VERSION_VALUE),
                source,
                validate: self.validate,
                max_pending_acks: self.max_pending_acks,
                streams: self.streams,
                by_rust_type: RwLock::new(HashMap::default()),
                by_event_type: RwLock::new(HashMap::new()),
                use_registry: self.use_registry,
                registry: tokio::sync::OnceCell::new(),
                published: self
                    .meter
                    .unwrap_or_else(|| opentelemetry::global::meter("herald"))
                    .u64_counter("herald.events.published")
                    .with_description("Events published, by type and outcome")
                    .build(),
            }),
        })
    }
}

fn default_source() -> String {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".to_owned());
    let program: String = program
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{}{program}", crate::protocol::DEFAULT_SOURCE_PREFIX)
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The namespace is not a valid name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The `ce-source` is not a URI-reference.
    #[error(
        "invalid source {source_uri:?}: a source is a URI-reference without spaces, e.g. urn:herald:service:api"
    )]
    InvalidSource {
        /// The refused value.
        source_uri: String,
    },
    /// The credentials file cannot be read.
    #[error("cannot read the credentials file {path}: {source}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the credentials.
    #[error(
        "the NATS server at {url} refused the credentials ({source}); check the user and password, \
         token, nkey or credentials file"
    )]
    Unauthorized {
        /// The server.
        url: String,
        /// The error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server cannot be reached.
    #[error(
        "cannot connect to NATS at {url}: {source}. Is a server running there? Start one with \
         `herald dev`, or point NATS_URL at yours"
    )]
    Unreachable {
        /// The server.
        url: String,
        /// The error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The URL cannot be parsed.
    #[error("invalid NATS URL {url:?}: {source}; expected e.g. nats://127.0.0.1:4222")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// TLS could not be set up.
    #[error("TLS setup for {url} failed: {source}")]
    Tls {
        /// The server.
        url: String,
        /// The error.
        #[source]
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    fn from_nats(url: &str, source: async_nats::ConnectError) -> ConnectError {
        use async_nats::ConnectErrorKind as Kind;
        let url = url.to_owned();
        match source.kind() {
            Kind::AuthorizationViolation | Kind::Authentication => {
                ConnectError::Unauthorized { url, source }
            }
            Kind::ServerParse => ConnectError::InvalidUrl { url, source },
            Kind::Tls => ConnectError::Tls { url, source },
            _ => ConnectError::Unreachable { url, source },
        }
    }
}

/// Publishing failed. Nothing was stored unless the error is about the acknowledgement
/// ([`Timeout`](PublishError::Timeout), [`Disconnected`](PublishError::Disconnected)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload breaks its schema; nothing was published.
    #[error("event {event_type} breaks its schema, nothing was published: {}", list_violations(.violations))]
    InvalidPayload {
        /// The event type.
        event_type: String,
        /// Every violation, with its JSON path.
        violations: Vec<Violation>,
    },
    /// The event type or event id is not valid.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// Untyped publish with validation on, for a type whose schema this client does not know.
    #[error(
        "no schema is known for event type {event_type}; publish it typed once, call \
         Client::add_local_schema::<YourType>(), or publish with validation off"
    )]
    UnknownSchema {
        /// The event type.
        event_type: String,
    },
    /// The event's schema does not compile.
    #[error(transparent)]
    Schema(#[from] SchemaCompileError),
    /// The event cannot be serialised to JSON.
    #[error("event {event_type} cannot be serialised to JSON: {source}")]
    Serialize {
        /// The event type.
        event_type: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// The message is larger than the server accepts.
    #[error(
        "event {event_type} is {size} bytes with headers, over the server's max_payload of {max} \
         bytes; store large data elsewhere and publish a reference to it"
    )]
    PayloadTooLarge {
        /// The event type.
        event_type: String,
        /// The message size with headers.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// No stream stores the subject.
    #[error(
        "no stream stores {subject}; provision the namespace first (Client::provision, or \
         `herald dev` locally)"
    )]
    NoStream {
        /// The subject.
        subject: String,
    },
    /// The stream's ack did not arrive in time; the event may or may not be stored.
    #[error(
        "no ack for {subject} in time; the event may or may not be stored: publish it again \
         with the same id (event id {event_id}) to be sure, the duplicate is dropped"
    )]
    Timeout {
        /// The subject.
        subject: String,
        /// The id to publish again with.
        event_id: String,
    },
    /// The connection is down; the event may or may not be stored.
    #[error(
        "disconnected from NATS while publishing to {subject} (event id {event_id}); publish \
         again with the same id once connected"
    )]
    Disconnected {
        /// The subject.
        subject: String,
        /// The id to publish again with.
        event_id: String,
    },
    /// Too many sent events are waiting for their ack; nothing was sent.
    #[error(
        "{limit} published events are waiting for their ack on this client, nothing was sent; \
         await (or drop) some PendingAcks first, or raise ConnectOptions::max_pending_acks"
    )]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The schema registry refused or failed (with [`ConnectOptions::use_registry`]).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Any other failure reported by the client or the server.
    #[error("publishing to {subject} failed: {source}")]
    Nats {
        /// The subject.
        subject: String,
        /// The error.
        #[source]
        source: jetstream::context::PublishError,
    },
}

fn list_violations(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Per-publish options; `..Default::default()` for the rest.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// A caller-chosen event id (idempotency key), 1 to 256 printable ASCII characters.
    /// Publishing the same id again within the duplicate window is reported as a duplicate.
    /// An event with a chosen id carries `ce-time` (default now).
    pub id: Option<String>,
    /// `ce-subject`: the entity the event is about (overrides `#[event(subject)]`).
    pub subject: Option<String>,
    /// `ce-time`: when it happened. Without it (and without `id`) no `ce-time` is written:
    /// the event happened when its UUIDv7 id was made, now.
    pub time: Option<SystemTime>,
    /// Validate against the schema: overrides the client's setting for this publish.
    pub validate: Option<bool>,
}

/// The stream's acknowledgement of a published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The stream that stored it.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// True if an event with this id was already stored within the duplicate window; then
    /// `sequence` is the first one's.
    pub duplicate: bool,
    /// The event id (`ce-id`).
    pub event_id: String,
}

/// A sent event waiting for its stream ack: `.await` it to get the [`PublishAck`]. Holding
/// many of these keeps many publishes in flight.
#[must_use = "the event is sent, but not confirmed until this is awaited"]
pub struct PendingAck {
    ack: jetstream::context::PublishAckFuture,
    event_type: opentelemetry::StringValue,
    event_id: String,
    client: Arc<Inner>,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck")
            .field("event_type", &self.event_type.as_str())
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl PendingAck {
    /// The id of the sent event.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }
}

impl IntoFuture for PendingAck {
    type Output = Result<PublishAck, PublishError>;
    type IntoFuture = AckFuture;

    fn into_future(self) -> AckFuture {
        AckFuture {
            ack: self.ack.into_future(),
            event_type: self.event_type,
            event_id: self.event_id,
            client: self.client,
        }
    }
}

/// The future of a [`PendingAck`]: resolves to the stream's [`PublishAck`].
#[must_use = "futures do nothing unless awaited"]
pub struct AckFuture {
    ack: <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture,
    event_type: opentelemetry::StringValue,
    event_id: String,
    client: Arc<Inner>,
}

impl std::fmt::Debug for AckFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckFuture")
            .field("event_type", &self.event_type.as_str())
            .field("event_id", &self.event_id)
            .finish_non_exhaustive()
    }
}

impl Future for AckFuture {
    type Output = Result<PublishAck, PublishError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let outcome = std::task::ready!(self.ack.as_mut().poll(cx));
        let event_id = std::mem::take(&mut self.event_id);
        let label = match &outcome {
            Ok(ack) if ack.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        self.client.published.add(
            1,
            &[
                opentelemetry::KeyValue::new("event_type", self.event_type.clone()),
                opentelemetry::KeyValue::new("outcome", label),
            ],
        );
        std::task::Poll::Ready(match outcome {
            Ok(ack) => Ok(PublishAck {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
                event_id,
            }),
            Err(error) => Err(map_publish_error(
                error,
                // Built only for the error: the event's subject.
                self.client
                    .namespace
                    .event_subject(self.event_type.as_str()),
                event_id,
                &self.client.nats,
                "",
                self.client.max_pending_acks,
            )),
        })
    }
}

fn map_publish_error(
    error: jetstream::context::PublishError,
    subject: String,
    event_id: String,
    nats: &async_nats::Client,
    event_type: &str,
    max_pending: usize,
) -> PublishError {
    let connected = nats.connection_state() == async_nats::connection::State::Connected;
    match error.kind() {
        PublishErrorKind::StreamNotFound => PublishError::NoStream { subject },
        PublishErrorKind::MaxAckPending => PublishError::TooManyPending { limit: max_pending },
        PublishErrorKind::BrokenPipe => PublishError::Disconnected { subject, event_id },
        PublishErrorKind::TimedOut if !connected => {
            PublishError::Disconnected { subject, event_id }
        }
        PublishErrorKind::TimedOut => PublishError::Timeout { subject, event_id },
        PublishErrorKind::MaxPayloadExceeded => PublishError::PayloadTooLarge {
            event_type: event_type.to_owned(),
            size: 0,
            max: nats.server_info().max_payload,
        },
        _ => PublishError::Nats {
            subject,
            source: error,
        },
    }
}

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

/// A schema this client validates against, and the registry version naming it.
struct Known {
    schema: Arc<CompiledSchema>,
    data_schema: Option<String>,
}

impl Known {
    /// The `ce-dataschema` header value, if the registry names the version.
    fn data_schema_header(&self) -> Option<HeaderValue> {
        self.data_schema.clone().map(HeaderValue::from)
    }
}

/// What a client keeps per Rust event type, so that a publish formats and looks up nothing
/// it already knows.
struct TypeEntry {
    /// `ns.events.T`, interned ([`interned_subject`]).
    subject: &'static str,
    /// `T` as the `ce-type` header value.
    type_header: HeaderValue,
    /// The headers every event of `T` carries alike, without `ce-dataschema`.
    headers: TypeHeaders,
    /// The same with `ce-dataschema`, once `known` is set and names a version.
    headers_with_schema: std::sync::OnceLock<Option<TypeHeaders>>,
    /// The length of the last payload of the type: the next one is serialised into a
    /// buffer of that size, which fits events of one size without growing.
    last_payload_len: AtomicUsize,
    /// The schema, compiled (and registered, with the registry) on the first validated
    /// publish; a failure leaves it unset for the next publish to try again.
    known: tokio::sync::OnceCell<Arc<Known>>,
}

/// `subject` as a `&'static str`, kept once per process for every client that publishes
/// to it. async-nats takes a subject by reference and clones it; a static one is cloned
/// without copying the bytes or touching a reference count that the connection's thread
/// also touches when it drops the subject. Only the subjects of typed events (`ns.events.T`
/// of a Rust type `T`) are interned, so there are as many as the program has event types
/// per namespace.
fn interned_subject(subject: String) -> &'static str {
    static SUBJECTS: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashSet<&'static str>>,
    > = std::sync::OnceLock::new();
    let mut subjects = SUBJECTS.get_or_init(Default::default).lock();
    if let Some(interned) = subjects.get(subject.as_str()) {
        return interned;
    }
    let interned: &'static str = Box::leak(subject.into_boxed_str());
    subjects.insert(interned);
    interned
}

/// An event about to be sent: what its subject and headers are made of, besides what each
/// publish adds (id, time, trace context).
struct Outgoing<'h> {
    /// The event type (also the `event_type` of the published-events counter).
    event_type: opentelemetry::StringValue,
    subject: Subject,
    /// The headers its type's events carry alike (`ce-type`, `ce-dataschema`, …).
    headers: &'h TypeHeaders,
    /// `ce-subject` from the event (`PublishOptions::subject` overrides it), not encoded.
    ce_subject: Option<String>,
}

/// A `TypeId` is already a hash of the type: hashing it again (SipHash) would cost more
/// than the rest of a map lookup.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

/// The envelope header names, built once (protocol section 4).
/// A new event id: a UUIDv7, hyphenated, lower case.
fn new_event_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// `value` percent-encoded for a header, reusing its allocation when nothing needs encoding.
fn encoded_header_value(value: String) -> String {
    match headers::encode_value(&value) {
        std::borrow::Cow::Owned(encoded) => encoded,
        std::borrow::Cow::Borrowed(_) => value,
    }
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

    /// The headers this client's events of one type carry alike.
    fn type_headers(
        &self,
        event_type: HeaderValue,
        data_schema: Option<HeaderValue>,
    ) -> TypeHeaders {
        TypeHeaders::new(
            self.inner.spec_version_header.clone(),
            self.inner.source_header.clone(),
            event_type,
            data_schema,
        )
    }

    /// This client's entry for the Rust type `E`, created on first use.
    fn type_entry<E: Event>(&self) -> Arc<TypeEntry> {
        let key = TypeId::of::<E>();
        if let Some(entry) = self.inner.by_rust_type.read().get(&key) {
            return Arc::clone(entry);
        }
        let entry = Arc::new(TypeEntry {
            subject: interned_subject(self.inner.namespace.event_subject(E::TYPE)),
            type_header: HeaderValue::from(E::TYPE),
            headers: self.type_headers(HeaderValue::from(E::TYPE), None),
            headers_with_schema: std::sync::OnceLock::new(),
            last_payload_len: AtomicUsize::new(256),
            known: tokio::sync::OnceCell::new(),
        });
        Arc::clone(self.inner.by_rust_type.write().entry(key).or_insert(entry))
    }

    /// The schema of `E`: compiled (and registered, with the registry) once.
    async fn known<'e, E: Event>(
        &self,
        entry: &'e TypeEntry,
    ) -> Result<&'e Arc<Known>, PublishError> {
        entry
            .known
            .get_or_try_init(|| async {
                let schema = Arc::new(CompiledSchema::of::<E>()?);
                let data_schema = if self.inner.use_registry {
                    let registry = self.registry().await?;
                    Some(
                        registry
                            .register(E::TYPE, schema.schema())
                            .await?
                            .data_schema,
                    )
                } else {
                    None
                };
                let known = Arc::new(Known {
                    schema,
                    data_schema,
                });
                self.inner
                    .by_event_type
                    .write()
                    .entry(E::TYPE.to_owned())
                    .or_insert_with(|| Arc::clone(&known));
                Ok(known)
            })
            .await
    }

    /// The schema for untyped publishing of `event_type`: a local one, else (with the
    /// registry on) the latest registered version.
    async fn known_by_type(&self, event_type: &str) -> Result<Option<Arc<Known>>, PublishError> {
        if let Some(known) = self.inner.by_event_type.read().get(event_type) {
            return Ok(Some(Arc::clone(known)));
        }
        if !self.inner.use_registry {
            return Ok(None);
        }
        let registry = self.registry().await?;
        let Some(latest) = registry.latest(event_type).await? else {
            return Ok(None);
        };
        let schema = Arc::new(CompiledSchema::compile(event_type, latest.schema)?);
        let known = Arc::new(Known {
            schema,
            data_schema: Some(crate::registry::data_schema_urn(
                &self.inner.namespace,
                event_type,
                latest.version,
            )),
        });
        self.inner
            .by_event_type
            .write()
            .insert(event_type.to_owned(), Arc::clone(&known));
        Ok(Some(known))
    }

    /// Publishes a typed event: serialises it, validates it against its schema (unless
    /// validation is off), sets the envelope headers and sends it. The first `.await` sends;
    /// awaiting the returned [`PendingAck`] waits for the stream's ack.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<PendingAck, PublishError> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// [`publish`](Self::publish) with an id, subject, time or validation of your choice.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<PendingAck, PublishError> {
        let entry = self.type_entry::<E>();
        let known = if !options.validate.unwrap_or(self.inner.validate) {
            None
        } else if let Some(known) = entry.known.get() {
            Some(known)
        } else {
            Some(self.known::<E>(&entry).await?)
        };
        // Serialised once: the bytes validated are the bytes sent.
        let mut payload = Vec::with_capacity(entry.last_payload_len.load(Ordering::Relaxed));
        let serialized = match known {
            Some(known) => known.schema.serialize_validated(event, &mut payload),
            None => serde_json::to_writer(&mut payload, event).map_err(SerializeError::Json),
        };
        match serialized {
            Ok(()) => {}
            Err(SerializeError::Invalid(violations)) => {
                self.count_invalid(E::TYPE.into());
                return Err(PublishError::InvalidPayload {
                    event_type: E::TYPE.to_owned(),
                    violations,
                });
            }
            Err(SerializeError::Json(source)) => {
                return Err(PublishError::Serialize {
                    event_type: E::TYPE.to_owned(),
                    source,
                });
            }
        }
        entry
            .last_payload_len
            .store(payload.len(), Ordering::Relaxed);
        let headers = known
            .and_then(|known| {
                entry
                    .headers_with_schema
                    .get_or_init(|| {
                        let data_schema = known.data_schema_header()?;
                        Some(self.type_headers(entry.type_header.clone(), Some(data_schema)))
                    })
                    .as_ref()
            })
            .unwrap_or(&entry.headers);
        let ce_subject = match &options.subject {
            Some(_) => None,
            None => event.ce_subject(),
        };
        let event = Outgoing {
            event_type: E::TYPE.into(),
            subject: Subject::from_static(entry.subject),
            headers,
            ce_subject,
        };
        self.send(event, payload, options).await
    }

    /// Publishes an untyped JSON payload as an event of `event_type`. With validation on, the
    /// type's schema must be known to this client (see [`add_local_schema`](Self::add_local_schema)).
    pub async fn publish_value(
        &self,
        event_type: &str,
        data: &serde_json::Value,
        options: PublishOptions,
    ) -> Result<PendingAck, PublishError> {
        let event_type = EventType::new(event_type)?;
        let mut data_schema = None;
        if options.validate.unwrap_or(self.inner.validate) {
            let known = self
                .known_by_type(event_type.as_str())
                .await?
                .ok_or_else(|| PublishError::UnknownSchema {
                    event_type: event_type.to_string(),
                })?;
            data_schema.clone_from(&known.data_schema);
            known.schema.validate(data).map_err(|violations| {
                self.count_invalid(event_type.to_string().into());
                PublishError::InvalidPayload {
                    event_type: event_type.to_string(),
                    violations,
                }
            })?;
        }
        let payload = serde_json::to_vec(data).map_err(|source| PublishError::Serialize {
            event_type: event_type.to_string(),
            source,
        })?;
        let subject = self.inner.namespace.event_subject(event_type.as_str());
        let headers = self.type_headers(
            HeaderValue::from(event_type.as_str()),
            data_schema.map(HeaderValue::from),
        );
        let event = Outgoing {
            event_type: event_type.to_string().into(),
            subject: Subject::from(subject),
            headers: &headers,
            ce_subject: None,
        };
        self.send(event, payload, options).await
    }

    async fn send(
        &self,
        event: Outgoing<'_>,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<PendingAck, PublishError> {
        let Outgoing {
            event_type: metric_type,
            subject,
            headers: type_headers,
            ce_subject,
        } = event;
        let event_type = metric_type.as_str();
        // `ce-time` only where the id does not say when the event happened: a UUIDv7 id
        // made now does (protocol section 4).
        let time = (options.id.is_some() || options.time.is_some())
            .then(|| headers::format_time(options.time.unwrap_or_else(SystemTime::now)));
        let event_id = match options.id {
            Some(id) => {
                check_event_id(&id)?;
                id
            }
            None => new_event_id(),
        };
        // `HeaderValue::from` checks a value for line breaks: the constant ones are built
        // (and checked) once per client or type.
        let mut headers = type_headers.event(HeaderValue::from(event_id.clone()));
        if let Some(time) = time {
            headers.put(names::TIME, HeaderValue::from(time));
        }
        if let Some(ce_subject) = options.subject.or(ce_subject) {
            headers.put(
                names::SUBJECT,
                HeaderValue::from(encoded_header_value(ce_subject)),
            );
        }
        if let Some((traceparent, tracestate)) = trace::current_trace_headers() {
            headers.put(names::TRACEPARENT, HeaderValue::from(traceparent));
            if let Some(tracestate) = tracestate {
                headers.put(names::TRACESTATE, HeaderValue::from(tracestate));
            }
        }
        let (map, header_bytes) = headers.finish();
        // "NATS/1.0\r\n" and the closing "\r\n". async-nats checks the limit before sending;
        // the size is kept for the error message.
        let size = payload.len() + header_bytes + 12;
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .headers(map);
        match self
            .inner
            .jetstream
            .send_publish(subject.clone(), message)
            .await
        {
            Ok(ack) => Ok(PendingAck {
                ack,
                event_type: metric_type.clone(),
                event_id,
                client: Arc::clone(&self.inner),
            }),
            Err(error) => Err(
                match map_publish_error(
                    error,
                    subject.to_string(),
                    event_id,
                    &self.inner.nats,
                    event_type,
                    self.inner.max_pending_acks,
                ) {
                    PublishError::PayloadTooLarge {
                        event_type, max, ..
                    } => PublishError::PayloadTooLarge {
                        event_type,
                        size,
                        max,
                    },
                    other => other,
                },
            ),
        }
    }
}
