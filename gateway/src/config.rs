//! [`GatewayConfig`]: limits and behaviour, a plain struct with defaults.

use std::time::Duration;

use crate::inngest::NameMapping;
use crate::keys::Rate;

/// How a gateway behaves; `..Default::default()` for the rest.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Require an API key on every request (default true). Without it every request is
    /// accepted as the anonymous key: every type, [`anonymous_rate`](Self::anonymous_rate),
    /// registered types only.
    pub require_keys: bool,
    /// The rate of anonymous requests when keys are not required.
    pub anonymous_rate: Rate,
    /// The largest body read, in bytes (default 4 MiB); larger is 413.
    pub max_body_bytes: usize,
    /// The most events in one request (default 100); more is 413.
    pub max_events: usize,
    /// Requests handled at once by this replica (default 1024); more are answered 503 with
    /// `Retry-After` rather than queued.
    pub max_in_flight: usize,
    /// How long the stream's acks may take (default 5 s); then 503.
    pub publish_timeout: Duration,
    /// `Retry-After` of a 503, in seconds (default 2).
    pub retry_after_secs: u64,
    /// How Inngest event names map to Herald types (default: strict).
    pub inngest_names: NameMapping,
    /// `WebHook-Allowed-Rate` answered to the CloudEvents webhook handshake (requests per
    /// minute; default `*`, no stated limit beyond the keys' own rates).
    pub webhook_allowed_rate: Option<u32>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            require_keys: true,
            anonymous_rate: Rate::default(),
            max_body_bytes: 4 * 1024 * 1024,
            max_events: 100,
            max_in_flight: 1024,
            publish_timeout: Duration::from_secs(5),
            retry_after_secs: 2,
            inngest_names: NameMapping::Strict,
            webhook_allowed_rate: None,
        }
    }
}
