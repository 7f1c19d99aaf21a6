//! [`ProvisionError`], and which failures pass by themselves (retried while a cluster
//! forms).

use async_nats::jetstream::{self};

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
