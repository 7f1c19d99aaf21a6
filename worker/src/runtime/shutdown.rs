//! [`RunningWorker`]: a started worker, and how it stops.

use std::time::Duration;

use herald::Client;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for the pull and watch loops to end after the stop.
const LOOPS_PATIENCE: Duration = Duration::from_secs(10);
/// How long shutdown waits for the connection's last acks to reach the server.
const FLUSH_PATIENCE: Duration = Duration::from_secs(5);

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}

/// A started worker; [`shutdown`](RunningWorker::shutdown) stops it.
#[derive(Debug)]
pub struct RunningWorker {
    pub(super) http_address: Option<std::net::SocketAddr>,
    pub(super) client: Client,
    pub(super) stop: CancellationToken,
    pub(super) abandon: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) loops: Vec<tokio::task::JoinHandle<()>>,
    pub(super) grace: Duration,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// True if every running handler finished within the grace period.
    pub finished_in_grace: bool,
}

impl RunningWorker {
    /// Where `/healthz`, `/readyz` and `/metrics` are served, with
    /// [`WorkerBuilder::http`](crate::WorkerBuilder::http).
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.http_address
    }

    /// Stops pulling, lets running handlers finish within the grace period, NAKs what is
    /// still running so another replica takes it at once, and flushes the connection.
    pub async fn shutdown(mut self) -> ShutdownReport {
        tracing::info!("shutdown: no more pulls");
        self.stop.cancel();
        // Loops end at once on the stop; one stuck on a NATS call that cannot answer (the
        // server gone) is not waited for past this.
        let loops = futures::future::join_all(self.loops.iter_mut());
        if tokio::time::timeout(LOOPS_PATIENCE, loops).await.is_err() {
            tracing::warn!("shutdown: a pull or watch loop did not stop in time; leaving it");
            for handle in &self.loops {
                handle.abort();
            }
        }
        self.tracker.close();
        tracing::info!(in_flight = self.tracker.len(), grace = ?self.grace, "shutdown: waiting for running handlers");
        let finished_in_grace = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        if !finished_in_grace {
            tracing::warn!(
                in_flight = self.tracker.len(),
                "shutdown: grace period over, handing the rest back"
            );
            self.abandon.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tracker.wait()).await;
        }
        // A flush waits for the server: with NATS gone it would never end.
        match tokio::time::timeout(FLUSH_PATIENCE, self.client.nats().flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "shutdown: flushing the connection failed"),
            Err(_) => tracing::warn!(
                "shutdown: the connection could not be flushed within {FLUSH_PATIENCE:?} (is NATS reachable?); acks and NAKs not yet sent are lost and their messages come back after ack_wait"
            ),
        }
        tracing::info!("shutdown: done");
        ShutdownReport { finished_in_grace }
    }
}
