//! [`ConnectOptions`] (how to connect, log in and what to check) and [`PublishOptions`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Client, ConnectError, Inner};
use crate::headers;
use crate::names::Namespace;
use crate::provision::StreamSettings;
use async_nats::header::HeaderValue;
use async_nats::jetstream;
use parking_lot::RwLock;

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
    /// A [`PendingAck`](crate::PendingAck) counts until it is awaited or dropped; one more publish is refused
    /// with [`PublishError::TooManyPending`](crate::PublishError::TooManyPending) rather than waiting for a slot that the caller
    /// itself may be holding.
    pub fn max_pending_acks(mut self, limit: usize) -> Self {
        self.max_pending_acks = limit.max(1);
        self
    }

    /// Use the schema registry (protocol section 5): the schema of each event type is
    /// registered (or found, when already registered) on first use, and every validated
    /// event says which version it was validated against in `ce-dataschema`. An
    /// incompatible schema is refused with [`PublishError::Registry`](crate::PublishError::Registry).
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
