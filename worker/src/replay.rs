//! Replaying a function over the retained event log (protocol section 6, "Replay").
//!
//! A replay republishes the events of one function's triggers in a time range to
//! `ns.redrive.F`, so only that function sees them, each with
//! `Nats-Msg-Id: replay:F:<replay id>:<seq>` and `herald-replay: <replay id>`. A worker runs
//! such a delivery as a fresh run (its run id is `<ce-id>#replay:<replay id>`), so finished
//! runs and stored steps do not stop it.

use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use herald::Client;
use herald::protocol::{self, header, msg_id};

/// A replay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The function has no consumer in the namespace (it never ran there).
    #[error(
        "no function {function} in namespace {namespace}: {source}; start its worker once, or \
         name the event type to replay"
    )]
    UnknownFunction {
        /// The function asked for.
        function: String,
        /// The namespace.
        namespace: String,
        /// Why the consumer could not be read.
        #[source]
        source: async_nats::Error,
    },
    /// The function has no event triggers (only patterns outside `ns.events.>`).
    #[error("function {function} has no event triggers to replay")]
    NoTriggers {
        /// The function asked for.
        function: String,
    },
    /// A NATS or JetStream request failed.
    #[error("replay: cannot {action}: {source}")]
    Nats {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: async_nats::Error,
    },
}

fn nats_error<E: Into<async_nats::Error>>(
    action: impl Into<String>,
) -> impl FnOnce(E) -> ReplayError {
    let action = action.into();
    move |source| ReplayError::Nats {
        action,
        source: source.into(),
    }
}

/// How far a replay got, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Events republished so far.
    pub replayed: u64,
    /// Events in the range still to go (as the server counts them now).
    pub remaining: u64,
}

/// What a finished replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// The replay id in `herald-replay` and in every message id.
    pub replay_id: String,
    /// Events republished.
    pub replayed: u64,
}

/// One replay of a function over the retained log: what to replay, then
/// [`count`](Replay::count) (a dry run) or [`run`](Replay::run).
///
/// ```no_run
/// # async fn run(client: herald::Client) -> Result<(), herald_worker::ReplayError> {
/// use std::time::{Duration, SystemTime};
/// let since = SystemTime::now() - Duration::from_secs(3600);
/// let replay = herald_worker::Replay::new(client, "backfill-user-data", since).rate(50.0);
/// println!("{} events would be replayed", replay.count().await?);
/// let outcome = replay.run(|_| {}).await?;
/// println!("replayed {} as {}", outcome.replayed, outcome.replay_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Replay {
    client: Client,
    function: String,
    since: SystemTime,
    until: Option<SystemTime>,
    event_type: Option<String>,
    rate: Option<f64>,
}

impl Replay {
    /// Replays the events of `function`'s triggers published at or after `since`.
    pub fn new(client: Client, function: impl Into<String>, since: SystemTime) -> Replay {
        Replay {
            client,
            function: function.into(),
            since,
            until: None,
            event_type: None,
            rate: None,
        }
    }

    /// Only events published before `until`.
    pub fn until(mut self, until: SystemTime) -> Replay {
        self.until = Some(until);
        self
    }

    /// Only events of this type (default: every event trigger of the function, read from
    /// its consumer).
    pub fn event_type(mut self, event_type: impl Into<String>) -> Replay {
        self.event_type = Some(event_type.into());
        self
    }

    /// At most `per_second` events a second (no limit when not positive).
    pub fn rate(mut self, per_second: f64) -> Replay {
        self.rate = Some(per_second).filter(|rate| *rate > 0.0);
        self
    }

    /// How many events [`run`](Self::run) would republish now; changes nothing.
    pub async fn count(&self) -> Result<u64, ReplayError> {
        self.walk(None, |_| {}).await
    }

    /// Republishes the events to `ns.redrive.F` under a new replay id, each acknowledged by
    /// the stream before the next; `progress` is called after each one.
    pub async fn run(
        &self,
        progress: impl FnMut(ReplayProgress),
    ) -> Result<ReplayOutcome, ReplayError> {
        let replay_id = uuid::Uuid::now_v7().simple().to_string();
        let replayed = self.walk(Some(&replay_id), progress).await?;
        Ok(ReplayOutcome {
            replay_id,
            replayed,
        })
    }

    /// The subjects to read: the chosen type, or the function's event triggers.
    async fn filters(
        &self,
        stream: &jetstream::stream::Stream,
    ) -> Result<Vec<String>, ReplayError> {
        let namespace = self.client.namespace();
        if let Some(event_type) = &self.event_type {
            return Ok(vec![namespace.event_subject(event_type)]);
        }
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&self.function)
            .await
            .map_err(|source| ReplayError::UnknownFunction {
                function: self.function.clone(),
                namespace: namespace.to_string(),
                source,
            })?;
        let info = consumer.info().await.map_err(nats_error(format!(
            "read the consumer of {}",
            self.function
        )))?;
        let prefix = protocol::events_prefix(namespace);
        let filters: Vec<String> = info
            .config
            .filter_subjects
            .iter()
            .chain(std::iter::once(&info.config.filter_subject))
            .filter(|subject| subject.starts_with(&prefix))
            .cloned()
            .collect();
        if filters.is_empty() {
            return Err(ReplayError::NoTriggers {
                function: self.function.clone(),
            });
        }
        Ok(filters)
    }

    /// Reads the range in order; publishes each event when `replay_id` is given. Returns
    /// the number of events in the range.
    async fn walk(
        &self,
        replay_id: Option<&str>,
        mut progress: impl FnMut(ReplayProgress),
    ) -> Result<u64, ReplayError> {
        let namespace = self.client.namespace();
        let js = self.client.jetstream();
        let stream_name = namespace.events_stream();
        let stream = js
            .get_stream(&stream_name)
            .await
            .map_err(nats_error(format!("open {stream_name}")))?;
        let filters = self.filters(&stream).await?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subjects: filters,
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartTime {
                    start_time: self.since.into(),
                },
                ..Default::default()
            })
            .await
            .map_err(nats_error("read the events"))?;
        let until = self.until.map(time::OffsetDateTime::from);
        let target = namespace.redrive_subject(&self.function);
        let interval = self.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        let started = Instant::now();
        let mut messages = consumer
            .messages()
            .await
            .map_err(nats_error("read the events"))?;
        let mut seen = 0u64;
        loop {
            // An ordered consumer with nothing more to deliver stays silent: `pending` says
            // when the range is done, the timeout covers an empty range.
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let Ok(Some(message)) = next else { break };
            let message = message.map_err(nats_error("read the events"))?;
            let info = message
                .info()
                .map_err(nats_error("read an event's metadata"))?;
            let (sequence, pending, published) =
                (info.stream_sequence, info.pending, info.published);
            if until.is_some_and(|until| published >= until) {
                break;
            }
            if let Some(replay_id) = replay_id {
                if let Some(interval) = interval {
                    let due =
                        started + interval.saturating_mul(u32::try_from(seen).unwrap_or(u32::MAX));
                    tokio::time::sleep_until(due.into()).await; // the rate limit
                }
                let mut headers = message
                    .headers
                    .as_ref()
                    .map(|original| protocol::copy_headers_except_transport(original, &[]))
                    .unwrap_or_default();
                headers.insert(
                    header::NATS_MSG_ID,
                    msg_id::replay(&self.function, replay_id, sequence),
                );
                headers.insert(header::REPLAY, replay_id);
                js.send_publish(
                    target.clone(),
                    jetstream::message::PublishMessage::build()
                        .payload(message.payload.clone())
                        .headers(headers),
                )
                .await
                .map_err(nats_error(format!("replay event #{sequence}")))?
                .await
                .map_err(nats_error(format!("replay event #{sequence}")))?;
            }
            seen += 1;
            progress(ReplayProgress {
                replayed: seen,
                remaining: pending,
            });
            if pending == 0 {
                break;
            }
        }
        Ok(seen)
    }
}
