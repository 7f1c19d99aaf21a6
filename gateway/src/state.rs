//! The state shared by a gateway's handlers, and its background watches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::auth::{KeyCache, KnownKey, anonymous};
use crate::config::GatewayConfig;
use crate::schemas::Schemas;

/// Aborts the background tasks when the last handle on the state goes.
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Everything a handler needs.
pub(crate) struct AppState {
    pub(crate) client: herald::Client,
    pub(crate) config: GatewayConfig,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) schemas: Arc<Schemas>,
    pub(crate) in_flight: Arc<Semaphore>,
    pub(crate) anonymous: Arc<KnownKey>,
    /// True while the keys watch runs (false while it is being restarted).
    pub(crate) keys_watching: Arc<AtomicBool>,
    pub(crate) _tasks: Tasks,
}

impl AppState {
    pub(crate) fn new(
        client: herald::Client,
        config: GatewayConfig,
        keys: Arc<KeyCache>,
        schemas: Arc<Schemas>,
    ) -> AppState {
        let keys_watching = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(watch_keys(Arc::clone(&keys), Arc::clone(&keys_watching))),
            tokio::spawn(watch_schemas(Arc::clone(&schemas))),
        ];
        AppState {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            anonymous: anonymous(config.anonymous_rate),
            client,
            config,
            keys,
            schemas,
            keys_watching,
            _tasks: Tasks(tasks),
        }
    }
}

/// Restarts the keys watch whenever it ends (a lost connection), with a short pause.
async fn watch_keys(keys: Arc<KeyCache>, watching: Arc<AtomicBool>) {
    loop {
        let outcome = Arc::clone(&keys).watch(&watching).await;
        watching.store(false, Ordering::Relaxed);
        if let Err(error) = outcome {
            tracing::warn!(%error, "the keys watch ended; restarting it");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Restarts the schema watch whenever it ends.
async fn watch_schemas(schemas: Arc<Schemas>) {
    loop {
        if let Err(error) = Arc::clone(&schemas).watch().await {
            tracing::warn!(%error, "the schema watch ended; restarting it");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
