//! # Herald's HTTP gateway
//!
//! Any service, in any language, sends Herald events with one HTTP call; a Herald worker
//! handles them exactly as events published by a Rust producer (the gateway stores the same
//! headers, `Nats-Msg-Id` = `ce-id`, the same `ce-dataschema`). The gateway is stateless:
//! run any number of replicas, state lives in NATS.
//!
//! - `POST /v1/events`: the CloudEvents HTTP binding, binary mode (`ce-*` headers and a
//!   JSON body), structured (`application/cloudevents+json`) and batch
//!   (`application/cloudevents-batch+json`); answers 202 with each event's id, stream
//!   sequence and whether it was a duplicate.
//! - `POST /e/{key}`: Inngest's event API (one event or an array), so Inngest clients send
//!   to Herald unchanged.
//! - `OPTIONS /v1/events`: the CloudEvents webhook handshake; `/healthz`, `/readyz`,
//!   `/openapi.json`.
//!
//! Every event of a request is validated against the schema registry before any is stored
//! (all or nothing). Errors are RFC 9457 problem documents with JSON paths ([`Problem`]).
//! API keys live hashed in the KV bucket `ns-keys` ([`keys::Keys`]), each scoped by
//! event-type patterns and rate-limited; revoking one takes effect without a restart. The
//! status table is in `docs/gateway.md`.
//!
//! The other direction, functions served over HTTP, is [`push`]: `herald serve --push` runs
//! each function declared in `ns-push` as an ordinary Herald function whose handler POSTs
//! the event, signed per Standard Webhooks.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = herald::Client::connect("nats://127.0.0.1:4222").await?;
//! client.provision().await?;
//! let gateway = herald_gateway::Gateway::new(client, Default::default()).await?;
//! // Mount it in your own axum app, or serve it alone:
//! let app = axum::Router::new().merge(gateway.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

// A refused request's Problem is large, and only built on the way to an HTTP answer: boxing
// it would cost an allocation on the error path for no gain.
#![allow(clippy::result_large_err)]

mod auth;
pub mod cloudevents;
mod config;
mod event;
pub mod inngest;
pub mod keys;
pub mod openapi;
mod pipeline;
mod problem;
mod publish;
pub mod push;
mod routes;
mod schemas;
mod state;

use std::sync::Arc;

pub use config::GatewayConfig;
pub use problem::{
    Accepted, EventProblem, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX, PathMessage, Problem,
};
pub use routes::EVENTS_PATH;

/// Starting a gateway failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The keys bucket cannot be opened.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The schema registry cannot be opened.
    #[error(transparent)]
    Registry(#[from] herald::registry::RegistryError),
}

/// A gateway for one namespace: its handlers' state and background watches (keys and
/// schema versions). Cheap to clone; the watches stop when the last clone and the last
/// router made from it are dropped.
#[derive(Clone)]
pub struct Gateway {
    state: Arc<state::AppState>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("namespace", self.state.client.namespace())
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Opens the namespace's keys bucket and schema registry (provision the namespace
    /// first) and starts watching both.
    pub async fn new(
        client: herald::Client,
        config: GatewayConfig,
    ) -> Result<Gateway, GatewayError> {
        let keys = keys::Keys::open(&client).await?;
        let registry = client.registry().await?.clone();
        let schemas = schemas::Schemas::new(registry, client.namespace().clone());
        let state = state::AppState::new(client, config, auth::KeyCache::new(keys), schemas);
        Ok(Gateway {
            state: Arc::new(state),
        })
    }

    /// The gateway's routes, to serve alone or to merge into an application's router.
    pub fn router(&self) -> axum::Router {
        routes::router(Arc::clone(&self.state))
    }
}

/// [`Gateway::new`] then [`Gateway::router`]: the routes of a gateway for `client`'s
/// namespace.
pub async fn router(
    client: herald::Client,
    config: GatewayConfig,
) -> Result<axum::Router, GatewayError> {
    Ok(Gateway::new(client, config).await?.router())
}
