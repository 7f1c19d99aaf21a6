//! [`WorkerBuilder::start`]: check the description, then provision, open the runs bucket and
//! bind every consumer, waiting out a cluster that is down or electing a leader.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::consumer::{Binding, LaneKind};
use super::shutdown::RunningWorker;
use super::worker::{WorkerBuilder, WorkerError};
use super::writer_schemas::WriterSchemas;
use super::{FunctionLoop, Shared};
use crate::steps::RunStore;
use crate::telemetry::{Metrics, Spans};

/// What `/readyz` reports: what start-up waits for, and each function's binding.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    waiting_for: parking_lot::RwLock<Option<String>>,
    bindings: parking_lot::RwLock<Vec<Arc<Binding>>>,
}

impl Readiness {
    /// Why the worker is not ready, or `None` when it is.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if let Some(waiting) = self.waiting_for.read().as_ref() {
            return Some(format!("starting: waiting for {waiting}"));
        }
        let bindings = self.bindings.read();
        if bindings.is_empty() {
            return Some("starting".to_owned());
        }
        let unbound: Vec<&str> = bindings
            .iter()
            .filter(|b| !b.is_bound())
            .map(|b| b.id())
            .collect();
        (!unbound.is_empty()).then(|| format!("consumers not bound: {}", unbound.join(", ")))
    }
}

/// Pauses between start-up tries: 200 ms doubling to 5 s.
const START_RETRY: crate::Backoff = crate::Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
    jitter: 0.2,
};

/// How many functions' consumers start-up makes or checks at once.
const CONVERGING_AT_ONCE: usize = 16;

/// Runs `operation` until it succeeds, returns an error that `retry` says is not transient,
/// or the worker stops; says what it waits for in the log and in `/readyz`.
async fn patiently<T, E, F, Fut>(
    readiness: &Readiness,
    what: &str,
    stop: &CancellationToken,
    retry: impl Fn(&E) -> bool,
    mut operation: F,
) -> Result<Option<T>, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut failures = 0;
    loop {
        match operation().await {
            Ok(value) => {
                if failures > 0 {
                    tracing::info!(what, "start-up: done after {failures} failed tries");
                }
                // Start-up waits for some things at once: clear only this one's reason.
                let mut waiting = readiness.waiting_for.write();
                if waiting.as_deref().is_some_and(|reason| {
                    reason
                        .strip_prefix(what)
                        .is_some_and(|rest| rest.starts_with(':'))
                }) {
                    *waiting = None;
                }
                return Ok(Some(value));
            }
            Err(error) if retry(&error) => {
                failures += 1;
                let pause = START_RETRY.delay(failures);
                tracing::warn!(%error, retry_in = ?pause, "start-up: waiting for {what}");
                *readiness.waiting_for.write() = Some(format!("{what}: {error}"));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return Ok(None),
                }
            }
            Err(error) => return Err(error),
        }
    }
}

impl WorkerBuilder {
    /// Provisions the namespace, converges every function's consumer, and starts pulling.
    /// Returns once the consumers exist, so events published afterwards are seen.
    ///
    /// Mistakes in the description (no function, a duplicate or invalid id) fail at once.
    /// A cluster that is down, has a node missing or is electing a leader is waited for,
    /// with backoff: each try is logged, and `/readyz` (with [`http`](Self::http)) answers
    /// 503 saying what the worker waits for.
    pub async fn start(self) -> Result<RunningWorker, WorkerError> {
        if self.functions.is_empty() {
            return Err(WorkerError::NoFunction);
        }
        let mut seen = HashSet::new();
        for function in &self.functions {
            if let Some(error) = &function.error {
                return Err(WorkerError::Function(error.clone()));
            }
            if !seen.insert(function.id.clone()) {
                return Err(WorkerError::DuplicateFunction {
                    id: function.id.to_string(),
                });
            }
        }
        let stop = CancellationToken::new();
        // A start that is dropped half-way (run_until's signal) stops what it spawned.
        let guard = stop.clone().drop_guard();
        let readiness = Arc::new(Readiness::default());
        let mut loops = Vec::new();
        let mut http_address = None;
        if let Some(address) = self.http {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| WorkerError::Http { address, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| WorkerError::Http { address, source })?;
            http_address = Some(local);
            tracing::info!(address = %local, "serving /healthz, /readyz and /metrics");
            loops.push(tokio::spawn(crate::health::serve(
                listener,
                self.client.clone(),
                Arc::clone(&readiness),
                self.prometheus.clone(),
                stop.clone(),
            )));
        }
        let client = self.client.clone();
        let Some(report) = patiently(
            &readiness,
            "provisioning the namespace",
            &stop,
            herald::ProvisionError::is_transient,
            || client.provision(),
        )
        .await?
        else {
            return Err(WorkerError::Stopped);
        };
        for (name, drift) in report.drifted() {
            let list: Vec<String> = drift.iter().map(ToString::to_string).collect();
            tracing::warn!(resource = name, drift = %list.join("; "),
                "stream config differs from Herald's; run `herald provision --apply` to update it");
        }
        let namespace = client.namespace();
        let events_stream = namespace.events_stream();
        // The runs bucket and the events stream's settings, asked for at once.
        let (runs, events_settings) = tokio::join!(
            patiently(
                &readiness,
                "the runs bucket",
                &stop,
                |_: &crate::RunStoreError| true,
                || RunStore::open(&client),
            ),
            patiently(
                &readiness,
                "the events stream",
                &stop,
                |_: &async_nats::Error| true,
                || async {
                    // The look-up answers with the stream's info.
                    let stream = client.jetstream().get_stream(&events_stream).await?;
                    let config = &stream.cached_info().config;
                    let covers =
                        !config.max_age.is_zero() && config.duplicate_window >= config.max_age;
                    Ok::<(bool, bool), async_nats::Error>((config.allow_message_ttl, covers))
                },
            ),
        );
        let Some(runs) = runs? else {
            return Err(WorkerError::Stopped);
        };
        let Some((schedules_ttl, dedup_covers_retention)) =
            events_settings.unwrap_or(Some((false, false)))
        else {
            return Err(WorkerError::Stopped);
        };
        let schedules = client.supports_schedules();
        if !schedules {
            tracing::warn!(
                server = %client.nats().server_info().version,
                "this nats-server has no scheduled messages (2.12+): ctx.sleep dead-letters the run and step retries stay within one delivery's budget"
            );
        } else if !schedules_ttl {
            tracing::warn!(stream = %events_stream, "the events stream does not allow per-message TTLs: a durable sleep longer than its max age never wakes; run `herald provision --apply`");
        }
        if !dedup_covers_retention {
            tracing::info!(stream = %events_stream, "the events stream's duplicate window is shorter than its max age: every finished run is recorded in the runs bucket (a stored message per event); provisioning sets the window to the max age (protocol section 7)");
        }
        let meter = self
            .meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter("herald"));
        let metrics = Metrics::new(&meter);
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let shared = Arc::new(Shared {
            events_prefix: herald::protocol::events_prefix(namespace),
            events_stream,
            writer_schemas: Arc::new(WriterSchemas::new(client.clone())),
            runs: Some(runs),
            metrics: metrics.clone(),
            spans: Spans::new(
                self.tracer
                    .unwrap_or_else(|| opentelemetry::global::tracer("herald")),
                self.trace_mode,
            ),
            log_payloads: self.log_payloads,
            schedules,
            schedules_ttl,
            dedup_covers_retention,
            activity: super::activity::Activity::new(&client, self.activity),
            stop: stop.clone(),
            abandon: abandon.clone(),
            tracker: tracker.clone(),
            client: client.clone(),
        });
        let functions: Vec<Arc<FunctionLoop>> = self
            .functions
            .into_iter()
            .map(|function| Arc::new(FunctionLoop::new(Arc::clone(&shared), function)))
            .collect();
        *readiness.bindings.write() = functions
            .iter()
            .flat_map(|f| {
                let redrive = super::consumer::has_redrive_consumer(&f.function)
                    .then(|| Arc::clone(&f.redrive.binding));
                std::iter::once(Arc::clone(&f.events.binding)).chain(redrive)
            })
            .collect();
        // The functions' consumers made or checked at once, a few at a time (each takes
        // two or three JetStream API requests); the first error that waiting does not pass
        // ends the start.
        // (The futures are collected first: a stream mapping a closure over borrowed items,
        // held across an await, would not be `Send` for every lifetime.)
        let converge_each: Vec<_> = functions
            .iter()
            .enumerate()
            .map(|(index, function)| {
                let (readiness, stop) = (&readiness, &stop);
                async move {
                    let what = format!("the consumer of function {}", function.function.id);
                    let converged = patiently(
                        readiness,
                        &what,
                        stop,
                        // A limit refusing the function's own setting does not pass by waiting.
                        |error: &WorkerError| {
                            !matches!(error, WorkerError::AckPendingAboveLimit { .. })
                        },
                        || function.converge(),
                    )
                    .await;
                    (index, converged)
                }
            })
            .collect();
        let mut converging =
            futures::stream::iter(converge_each).buffer_unordered(CONVERGING_AT_ONCE);
        let mut consumers: Vec<Option<_>> = functions.iter().map(|_| None).collect();
        while let Some((index, converged)) = converging.next().await {
            let Some(consumer) = converged? else {
                return Err(WorkerError::Stopped);
            };
            consumers[index] = Some(consumer);
        }
        drop(converging);
        let consumers: Vec<_> = consumers.into_iter().flatten().collect();
        if let Some(kv) = shared.runs.as_ref().and_then(RunStore::kv) {
            crate::wait::matcher::Matcher::start(client.clone(), kv.clone(), stop.clone());
            for function in &functions {
                let follow = Arc::clone(&function.cancelled).follow(
                    kv.clone(),
                    Arc::clone(&function.function.id),
                    stop.clone(),
                );
                loops.push(follow.await);
            }
        }
        for function in &functions {
            let Some(()) = schedule(
                &client,
                &readiness,
                &stop,
                function,
                schedules,
                schedules_ttl,
            )
            .await?
            else {
                return Err(WorkerError::Stopped);
            };
        }
        loops.push(tokio::spawn(crate::telemetry::poll_stats(
            functions
                .iter()
                .map(|f| f.function.id.to_string())
                .collect(),
            client.clone(),
            metrics.stats.clone(),
            self.stats_interval,
            stop.clone(),
        )));
        loops.push(tokio::spawn(
            Arc::clone(&shared.writer_schemas).watch(stop.clone()),
        ));
        for (function, consumer) in functions.iter().zip(consumers) {
            loops.push(function.follow_leaders().await);
            // A lane's task runs its deliveries: shutdown waits for it as for handlers.
            tracker.spawn(Arc::clone(function).pull_loop(LaneKind::Events, consumer.events, false));
            if let Some(redrive) = consumer.redrive {
                tracker.spawn(Arc::clone(function).pull_loop(
                    LaneKind::Redrive,
                    redrive.consumer,
                    redrive.retiring,
                ));
            }
            if self.sweeper {
                loops.push(tokio::spawn(Arc::clone(function).sweep()));
            }
        }
        tracing::info!(functions = functions.len(), "worker started");
        guard.disarm();
        Ok(RunningWorker {
            http_address,
            client,
            stop,
            abandon,
            tracker,
            loops,
            grace: self.shutdown_grace,
        })
    }
}

/// Puts a function's cron schedules in place (protocol section 8), waiting out a cluster
/// that cannot answer; warns about schedules an earlier version left.
async fn schedule(
    client: &herald::Client,
    readiness: &Readiness,
    stop: &CancellationToken,
    function: &FunctionLoop,
    schedules: bool,
    ttl_never: bool,
) -> Result<Option<()>, WorkerError> {
    use crate::cron::ScheduleError;
    use crate::cron::reconcile::{self, Reconciled};
    let id = &function.function.id;
    let crons = &function.function.crons;
    if crons.is_empty() {
        return Ok(Some(()));
    }
    let events = client.namespace().events_stream();
    let nats = |source: async_nats::Error| ScheduleError::Nats {
        function: id.to_string(),
        source,
    };
    for trigger in crons {
        if !schedules {
            return Err(ScheduleError::Refused {
                function: id.to_string(),
                pattern: trigger.pattern().to_owned(),
                zone: trigger.time_zone().unwrap_or("UTC").to_owned(),
                reason: format!(
                    "this nats-server ({}) has no scheduled messages",
                    client.nats().server_info().version
                ),
            }
            .into());
        }
        let what = format!("the cron schedule {:?} of function {id}", trigger.given());
        let Some(done) = patiently(
            readiness,
            &what,
            stop,
            ScheduleError::is_transient,
            || async {
                let stream = client
                    .jetstream()
                    .get_stream(&events)
                    .await
                    .map_err(|e| nats(e.into()))?;
                reconcile::reconcile(client, &stream, id, trigger, ttl_never).await
            },
        )
        .await?
        else {
            return Ok(None);
        };
        let next = trigger
            .next_after(chrono::Utc::now())
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        tracing::info!(function = %id, cron = trigger.given(), zone = trigger.time_zone().unwrap_or("UTC"),
            written = done == Reconciled::Written, next = %next, "cron schedule in place");
    }
    let stale = async {
        let stream = client.jetstream().get_stream(&events).await?;
        reconcile::stale(client, &stream, id, crons).await
    };
    match stale.await {
        Ok(stale) if !stale.is_empty() => tracing::warn!(function = %id, schedules = ?stale,
            "cron schedules of an earlier version of this function still fire; remove each with `herald schedules delete {id} <cron-id>` once no replica runs that version"),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "could not list the function's cron schedules"),
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_for(readiness: &Readiness, what: &str) -> Result<Option<()>, String> {
        let stop = CancellationToken::new();
        patiently(
            readiness,
            what,
            &stop,
            |_: &String| true,
            || async { Ok(()) },
        )
        .await
    }

    #[tokio::test]
    async fn a_wait_that_ends_clears_only_its_own_reason() {
        let readiness = Readiness::default();
        *readiness.waiting_for.write() =
            Some("the consumer of function ab: no responders".to_owned());
        // Another wait, and one whose name is a prefix of the waiting one's, end.
        assert_eq!(wait_for(&readiness, "the runs bucket").await, Ok(Some(())));
        assert_eq!(
            wait_for(&readiness, "the consumer of function a").await,
            Ok(Some(()))
        );
        assert_eq!(
            readiness.not_ready().as_deref(),
            Some("starting: waiting for the consumer of function ab: no responders")
        );
        assert_eq!(
            wait_for(&readiness, "the consumer of function ab").await,
            Ok(Some(()))
        );
        assert_eq!(readiness.waiting_for.read().as_deref(), None);
    }
}
