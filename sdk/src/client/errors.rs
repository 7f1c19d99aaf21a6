//! What connecting and publishing can fail with: [`ConnectError`], [`PublishError`].

use std::path::PathBuf;

use crate::names::NameError;
use crate::registry::RegistryError;
use crate::schema::{SchemaCompileError, Violation};
use async_nats::jetstream;

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
    pub(super) fn from_nats(url: &str, source: async_nats::ConnectError) -> ConnectError {
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
    /// The schema registry refused or failed (with [`ConnectOptions::use_registry`](crate::ConnectOptions::use_registry)).
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
