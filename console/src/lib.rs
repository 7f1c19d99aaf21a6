//! # Herald's web console
//!
//! The page an on-call engineer opens when something is stuck: what runs, what failed and
//! why, and the buttons that fix it. Server-rendered HTML (maud), every filter in the URL so
//! a link can be shared, every page usable without JavaScript; with JavaScript, pages update
//! live from server-sent events fed by NATS (ordered consumers on `NS_EVENTS`,
//! `NS_ACTIVITY` and `NS_DLQ`; the browser never polls). htmx 2 and its SSE extension are
//! vendored under `assets/` with their licences and served from the binary.
//!
//! | page | what it shows and does |
//! | --- | --- |
//! | `/` | functions: triggers, lag, ack pending, redelivered, dead letters by reason, last activity, events/s, pause, flow control in use (limits, parked runs per key, skipped runs) |
//! | `/functions/{id}` | settings, flow control in use, recent runs, dead letters, replay (a dry-run count first) |
//! | `/runs?function=&status=&since=&until=&event=` | runs from the activity records (protocol section 18) |
//! | `/runs/{function}/{event_id}` | a waterfall of attempts, steps and sleeps, errors, outputs, trace id; cancel |
//! | `/events?type=user.*` and `/events/{seq}` | a live tail; one event's headers, payload and runs in every function |
//! | `/send` | a skeleton from the registered schema, errors by JSON path before anything is sent |
//! | `/dlq?function=&reason=&type=` | inspect, redrive one or all at a rate, edit and redrive (schema-checked), purge |
//! | `/schemas`, `/schemas/{type}` | versions, compatibility mode, diff, consuming functions, AsyncAPI download |
//!
//! **Safe by default.** [`ConsoleConfig::check_listen`] refuses a non-loopback address
//! unless a token is configured; with a token, `/?token=…` sets it as an HttpOnly cookie and
//! every other request needs it. Requests that change state must come from the console's
//! own pages (`Origin` / `Sec-Fetch-Site`). [`ConsoleConfig::read_only`] hides every action
//! and refuses them. The console can do no more than its NATS credentials allow.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = herald::Client::connect("nats://127.0.0.1:4222").await?;
//! let config = herald_console::ConsoleConfig::default();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8289").await?;
//! config.check_listen(listener.local_addr()?)?;
//! let router = herald_console::router(client, config).await?;
//! axum::serve(listener, router).await?;
//! # Ok(()) }
//! ```

mod assets;
mod config;
mod data;
mod error;
mod layout;
mod live;
mod pages;
mod resume;
mod security;
mod skeleton;
mod state;
mod util;

use std::sync::Arc;

pub use config::{ConsoleConfig, ListenError, TOKEN_COOKIE};

/// Starting a console failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The runs bucket cannot be opened (provision the namespace first).
    #[error(transparent)]
    Runs(#[from] herald_worker::RunStoreError),
    /// The schema registry cannot be opened (provision the namespace first).
    #[error(transparent)]
    Registry(#[from] herald::registry::RegistryError),
    /// Serving failed.
    #[error("the console's server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// A console for one namespace: its handlers' state and its live feeds from NATS. Cheap to
/// clone; the feeds stop when the last clone and the last router made from it are dropped.
#[derive(Clone)]
pub struct Console {
    state: Arc<state::AppState>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("namespace", self.state.client.namespace())
            .field("read_only", &self.state.config.read_only)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// Opens the namespace's runs bucket and schema registry and starts the live feeds.
    pub async fn new(
        client: herald::Client,
        config: ConsoleConfig,
    ) -> Result<Console, ConsoleError> {
        let state = state::AppState::new(client, config).await?;
        Ok(Console { state })
    }

    /// The console's routes, to serve alone or to merge into an application's router.
    pub fn router(&self) -> axum::Router {
        pages::router(Arc::clone(&self.state))
    }
}

/// [`Console::new`] then [`Console::router`].
pub async fn router(
    client: herald::Client,
    config: ConsoleConfig,
) -> Result<axum::Router, ConsoleError> {
    Ok(Console::new(client, config).await?.router())
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
