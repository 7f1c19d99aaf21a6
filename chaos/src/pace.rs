//! The events and audit of the throttle and rate-limit failure tests
//! (`tests/pace_cluster.rs`, binary `pace-worker`).

use herald::{Event, Namespace};
use serde::{Deserialize, Serialize};

/// A call to a throttled API: one key, paced at [`THROTTLE_PER_S`] a second with a burst
/// of [`THROTTLE_BURST`].
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "pace.call")]
pub struct Call {
    /// The call's number: its place in the order of arrival.
    pub n: u32,
}

/// A hit on a rate-limited function: one key, [`RATE_LIMIT`] per [`RATE_PERIOD_S`] with a
/// burst of [`RATE_BURST`], the rest skipped.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "pace.hit")]
pub struct Hit {
    /// The publisher that sent it.
    pub publisher: u32,
    /// Its number at that publisher.
    pub n: u32,
    /// A worker started with `--stall` holds this hit's first attempt for a minute (the
    /// test kills that worker between the decision and the ack).
    pub stall: bool,
}

/// The throttle's starts per second.
pub const THROTTLE_PER_S: u32 = 10;
/// The throttle's burst.
pub const THROTTLE_BURST: u32 = 5;
/// The throttled function's `max_ack_pending`: calls being decided, and woken runs
/// waiting out their last seconds in a worker (about 3 s of starts), at once.
pub const THROTTLE_IN_FLIGHT: i64 = 64;
/// The rate limit's admitted runs per period.
pub const RATE_LIMIT: u32 = 5;
/// The rate limit's period, in seconds.
pub const RATE_PERIOD_S: u64 = 1;
/// The rate limit's burst.
pub const RATE_BURST: u32 = 2;

/// One line of the audit a handler writes when it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    /// The function: `throttled` or `rated`.
    pub function: String,
    /// The event's id.
    pub event_id: String,
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// Unix microseconds.
    pub at_us: u64,
    /// The worker process.
    pub pid: u32,
}

/// Where handlers audit their starts.
pub fn audit_subject(namespace: &Namespace) -> String {
    format!("{}.audit.pace", namespace.as_str())
}

/// The stream that keeps the audit.
pub const AUDIT_STREAM: &str = "PACE_AUDIT";

/// A worker process, SIGKILLed (by its pid) and reaped when dropped.
#[derive(Debug)]
pub struct WorkerProcess(std::process::Child);

impl WorkerProcess {
    /// Starts `binary --server <url> <args>`, its output discarded, or appended to
    /// `$HERALD_CHAOS_LOGS/workers.log` when that directory is set (with `RUST_LOG`, to see
    /// what the workers of a failing test did).
    pub fn start(binary: &str, url: &str, args: &[&str]) -> std::io::Result<WorkerProcess> {
        let stderr = match std::env::var_os("HERALD_CHAOS_LOGS") {
            Some(dir) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(std::path::Path::new(&dir).join("workers.log"))?
                .into(),
            None => std::process::Stdio::null(),
        };
        std::process::Command::new(binary)
            .args(["--server", url])
            .args(args)
            .env_remove("NATS_URL")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .map(WorkerProcess)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Child::kill is SIGKILL to this child's pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A failure of the tests' set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The cluster, the namespace or the audit stream could not be made in time.
    #[error("{what} did not work within {seconds} s: {error}")]
    Timeout {
        /// What was tried.
        what: String,
        /// How long.
        seconds: u64,
        /// The last error.
        error: String,
    },
}

/// Tries `operation` every 200 ms for up to `seconds` (a cluster forming or electing).
pub async fn patiently<T, E, F, Fut>(
    what: &str,
    seconds: u64,
    mut operation: F,
) -> Result<T, SetupError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        match operation().await {
            Ok(value) => return Ok(value),
            Err(error) if std::time::Instant::now() >= deadline => {
                return Err(SetupError::Timeout {
                    what: what.to_owned(),
                    seconds,
                    error: error.to_string(),
                });
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

/// Provisions `client`'s namespace and the audit stream (R3) on a forming cluster.
pub async fn provision(client: &herald::Client) -> Result<(), SetupError> {
    patiently("provisioning", 60, || client.provision()).await?;
    let config = async_nats::jetstream::stream::Config {
        name: AUDIT_STREAM.to_owned(),
        subjects: vec![audit_subject(client.namespace())],
        num_replicas: 3,
        ..Default::default()
    };
    patiently("the audit stream", 30, || {
        client.jetstream().get_or_create_stream(config.clone())
    })
    .await?;
    Ok(())
}

/// What function `function` has not settled on `stream`: (pending, acks pending), its
/// consumer's plus its redrive consumer's where it has one (protocol section 3:
/// continuations, wake-ups and invocations wait on that one).
pub async fn backlog(
    js: &async_nats::jetstream::Context,
    stream: &str,
    function: &str,
) -> Result<(u64, usize), async_nats::Error> {
    let stream = js.get_stream(stream).await?;
    let info = stream.consumer_info(function).await?;
    let mut backlog = (info.num_pending, info.num_ack_pending);
    if let Ok(redrive) = stream
        .consumer_info(herald::protocol::redrive_consumer(function))
        .await
    {
        backlog.0 += redrive.num_pending;
        backlog.1 += redrive.num_ack_pending;
    }
    Ok(backlog)
}

/// Waits until the workers made their consumer `consumer` on `stream`.
pub async fn wait_for_consumer(
    js: &async_nats::jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Result<(), SetupError> {
    patiently("the workers' consumer", 30, || async {
        let stream = js.get_stream(stream).await?;
        stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
            .await?;
        Ok::<(), async_nats::Error>(())
    })
    .await
}

/// Every audit line so far (an ordered consumer read to the end).
pub async fn audit(js: &async_nats::jetstream::Context) -> Result<Vec<Start>, async_nats::Error> {
    use futures::StreamExt;
    let stream = js.get_stream(AUDIT_STREAM).await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?;
    let mut pending = consumer.cached_info().num_pending;
    let mut all = Vec::new();
    if pending == 0 {
        return Ok(all);
    }
    let mut messages = consumer.messages().await?;
    while pending > 0 {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next());
        let Ok(Some(message)) = next.await else {
            break;
        };
        let message = message?;
        pending = message.info()?.pending;
        all.push(serde_json::from_slice(&message.payload)?);
    }
    Ok(all)
}

/// Asks the leader of `stream` to step down; whether it did.
pub async fn step_down(client: &herald::Client, stream: &str) -> bool {
    let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
    client.nats().request(subject, "".into()).await.is_ok()
}

/// The most starts in any window of `window_us` (half open), over sorted start times.
pub fn most_in_window(sorted_us: &[u64], window_us: u64) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, at) in sorted_us.iter().enumerate() {
        while sorted_us[first] + window_us <= *at {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::most_in_window;

    #[test]
    fn windows_are_half_open() {
        assert_eq!(most_in_window(&[], 10), 0);
        assert_eq!(most_in_window(&[0, 0, 5, 10, 11], 10), 3);
        assert_eq!(most_in_window(&[0, 10, 20], 10), 1);
        assert_eq!(most_in_window(&[0, 9, 10, 19], 10), 2);
    }
}
