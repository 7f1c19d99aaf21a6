//! `herald serve --push`: one ordinary Herald [`Function`] per push function, on the durable
//! consumer a Rust worker would use, restarted whenever `ns-push` changes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use herald_worker::{Ctx, Envelope, Function, Worker};

use crate::push::call::{self, Target};
use crate::push::sign;
use crate::push::spec::{PushError, PushFunction, PushFunctions};

/// How push functions are run; `..Default::default()` for the rest.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Allow targets on private, loopback and link-local addresses (default off: SSRF).
    pub allow_private_targets: bool,
    /// The longest `Retry-After` honoured (default 5 minutes).
    pub max_retry_after: Duration,
    /// The backoff between failed attempts (default: the worker's, 1 s doubling to 5 min).
    pub backoff: Option<herald_worker::Backoff>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            allow_private_targets: false,
            max_retry_after: Duration::from_secs(300),
            backoff: None,
        }
    }
}

/// The Herald function that runs push function `spec`.
pub fn function(
    spec: &PushFunction,
    http: reqwest::Client,
    options: &PushOptions,
) -> Result<Function, PushError> {
    let invalid = |reason: String| PushError::Invalid {
        id: spec.id.clone(),
        reason,
    };
    let url = reqwest::Url::parse(&spec.url).map_err(|e| invalid(e.to_string()))?;
    let key = sign::secret_key(&spec.secret).map_err(invalid)?;
    let target = Arc::new(Target {
        function: spec.id.clone(),
        url,
        key,
        allow_private: options.allow_private_targets,
        max_retry_after: options.max_retry_after,
    });
    let mut builder = Function::new(spec.id.clone())
        .on_types(spec.on.clone())
        .attempts(spec.attempts)
        .timeout(spec.timeout())
        .concurrency(spec.concurrency as usize)
        .max_ack_pending(i64::from(spec.concurrency))
        // A call may take up to its timeout; the consumer's ack wait covers it.
        .ack_wait(spec.timeout() + Duration::from_secs(10));
    if let Some(backoff) = options.backoff {
        builder = builder.backoff(backoff);
    }
    Ok(builder.handler(move |event: Envelope, ctx: Ctx| {
        let http = http.clone();
        let target = Arc::clone(&target);
        async move { call::call(&http, &target, &event, &ctx).await }
    }))
}

/// How long a stopping dispatcher waits for its worker's graceful shutdown (the worker's
/// own grace is 30 s); with NATS unreachable a shutdown could otherwise wait for ever.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(40);

/// Runs every push function of the namespace until `shutdown` completes; a change in
/// `ns-push` (added, changed, removed) restarts the worker with the new set.
pub async fn run(
    client: herald::Client,
    options: PushOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PushError> {
    let store = PushFunctions::open(&client).await?;
    let http = call::client(options.allow_private_targets).map_err(|e| PushError::Invalid {
        id: "*".to_owned(),
        reason: format!("cannot build the HTTP client: {e}"),
    })?;
    let mut current = None;
    // The shutdown wins over anything the supervisor waits for (a start-up that waits for
    // NATS, a watch), then the running worker gets its graceful shutdown.
    let outcome = tokio::select! {
        outcome = supervise(&client, &store, &http, &options, &mut current) => outcome,
        () = shutdown => Ok(()),
    };
    if let Some(worker) = current.take()
        && tokio::time::timeout(SHUTDOWN_LIMIT, worker.shutdown())
            .await
            .is_err()
    {
        tracing::warn!("the push worker did not stop within {SHUTDOWN_LIMIT:?}; leaving it");
    }
    outcome
}

/// Starts the worker of the current set, and again on every change of the bucket.
async fn supervise(
    client: &herald::Client,
    store: &PushFunctions,
    http: &reqwest::Client,
    options: &PushOptions,
    current: &mut Option<herald_worker::RunningWorker>,
) -> Result<(), PushError> {
    loop {
        let mut changes = store
            .store()
            .watch_all()
            .await
            .map_err(|error| PushError::Kv {
                action: "watch",
                source: error.into(),
            })?;
        let specs = store.list().await?;
        if let Some(worker) = current.take() {
            worker.shutdown().await;
        }
        let mut builder = Worker::builder(client.clone());
        let mut count = 0;
        for spec in &specs {
            match function(spec, http.clone(), options) {
                Ok(function) => {
                    builder = builder.function(function);
                    count += 1;
                }
                Err(error) => tracing::error!(%error, "push function not started"),
            }
        }
        if count == 0 {
            tracing::info!("no push functions to run; waiting for `herald push add`");
        } else {
            tracing::info!(count, "running push functions");
            *current = Some(builder.start().await.map_err(|error| PushError::Invalid {
                id: "*".to_owned(),
                reason: format!("the worker did not start: {error}"),
            })?);
        }
        match changes.next().await {
            Some(Ok(_)) => tracing::info!("push functions changed; restarting them"),
            Some(Err(error)) => {
                tracing::warn!(%error, "the push functions watch failed; reading them again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
