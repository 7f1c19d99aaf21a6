//! # Herald: typed, durable background functions on NATS JetStream
//!
//! A service publishes a typed event on its critical path and answers its user; functions in
//! worker replicas pick the event up, with retries, dead letters and schema validation. This
//! crate is what every service uses: the [`Event`] trait and its derive, the [`Client`] that
//! connects, [provisions](Client::provision) a namespace and [publishes](Client::publish),
//! and the schema tools ([`schema`]). The wire contract is `docs/protocol.md`.
//!
//! ## A tour
//!
//! ```no_run
//! use herald::{Client, Event};
//! use serde::{Deserialize, Serialize};
//!
//! /// A user connected a data source.
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
//! #[event(type = "source.connected")]
//! struct SourceConnected {
//!     source_id: String,
//!     #[event(subject)]
//!     user_id: String,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Connect and make sure the namespace's streams and buckets exist.
//! let client = Client::builder().namespace("herald").connect("nats://127.0.0.1:4222").await?;
//! client.provision().await?;
//!
//! // Publish: validated against the schema, CloudEvents headers, dedup id, trace context.
//! let event = SourceConnected { source_id: "src_1".into(), user_id: "user_7".into() };
//! let pending = client.publish(&event).await?; // sent
//! let ack = pending.await?; // stored
//! println!("{} stored in {} at #{}", ack.event_id, ack.stream, ack.sequence);
//!
//! // Many in flight: keep the pending acks, await them later.
//! let mut pending = Vec::new();
//! for _ in 0..1000 {
//!     pending.push(client.publish(&event).await?);
//! }
//! for ack in pending {
//!     ack.await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Errors are typed per operation ([`PublishError`], [`ConnectError`], [`ProvisionError`]);
//! each message says what happened and what to do.

pub mod asyncapi;
mod client;
pub mod compat;
mod event;
pub mod headers;
mod json_view;
mod names;
pub mod protocol;
mod provision;
pub mod registry;
pub mod schema;
pub mod trace;

pub use client::{
    AckFuture, Auth, Client, ConnectError, ConnectOptions, DEFAULT_MAX_PENDING_ACKS, PendingAck,
    PublishAck, PublishError, PublishOptions, TlsOptions,
};
pub use event::Event;
pub use names::{EventType, NameError, Namespace, check_event_id};
pub use provision::{
    Drift, ProvisionError, ProvisionOptions, ProvisionOutcome, ProvisionReport, ReplicasSource,
    ResourceKind, ResourceReport, StreamSettings,
};

/// `#[derive(Event)]`: see [`Event`] and the attribute table in `herald_macros::Event`.
pub use herald_macros::Event;

/// The JetStream storage type, for [`StreamSettings::storage`].
pub use async_nats::jetstream::stream::StorageType;

/// What the derive macro's generated code refers to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::event::Event;
}
