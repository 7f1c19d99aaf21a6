//! The matcher every worker runs: the registrations in memory (a KV watch on `_wait.>`), and
//! for each awaited type a loop on that type's shared matcher consumer that resolves the
//! registrations an arriving event matches.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::scan::read_event;
use super::{
    MATCHER_INACTIVE, REGISTRATION_PREFIX, Registration, Resolution, matcher_durable, resolve,
};

/// How long a batch waits for the registration watch to catch up before matching anyway.
const BARRIER_PATIENCE: Duration = Duration::from_secs(5);

/// The registrations this worker knows, by event type.
#[derive(Debug, Default)]
struct Registry {
    by_type: HashMap<String, HashMap<String, Registration>>,
}

/// The worker's matcher.
#[derive(Debug)]
pub(crate) struct Matcher {
    client: herald::Client,
    kv: kv::Store,
    registry: parking_lot::RwLock<Registry>,
    /// The highest revision of `_wait.>` the watch has applied.
    applied: AtomicU64,
    /// Types with a running loop.
    types: parking_lot::Mutex<HashSet<String>>,
    stop: CancellationToken,
}

/// Makes sure `event_type` has its matcher consumer, delivering events stored from now on
/// if it is created now. A wait calls this before it reads its watermark.
pub(crate) async fn ensure_consumer(
    client: &herald::Client,
    event_type: &str,
) -> Result<PullConsumer, async_nats::Error> {
    let namespace = client.namespace();
    let stream = client
        .jetstream()
        .get_stream(namespace.events_stream())
        .await?;
    let durable = matcher_durable(event_type);
    if let Ok(consumer) = stream.get_consumer::<pull::Config>(&durable).await {
        return Ok(consumer);
    }
    let last = stream.cached_info().state.last_sequence;
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: namespace.event_subject(event_type),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                },
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                inactive_threshold: MATCHER_INACTIVE,
                description: Some(format!("Herald matcher of {event_type}")),
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer)
}

impl Matcher {
    /// Starts following the registrations; loops on matcher consumers start as their types
    /// appear.
    pub(crate) fn start(
        client: herald::Client,
        kv: kv::Store,
        stop: CancellationToken,
    ) -> Arc<Matcher> {
        let matcher = Arc::new(Matcher {
            client,
            kv,
            registry: parking_lot::RwLock::default(),
            applied: AtomicU64::new(0),
            types: parking_lot::Mutex::default(),
            stop,
        });
        tokio::spawn(Arc::clone(&matcher).follow());
        matcher
    }

    async fn follow(self: Arc<Self>) {
        let pattern = format!("{REGISTRATION_PREFIX}.>");
        loop {
            match self.kv.watch_with_history(&pattern).await {
                Ok(mut watch) => loop {
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        next = watch.next() => match next {
                            Some(Ok(entry)) => self.apply(&entry),
                            Some(Err(error)) => {
                                tracing::debug!(%error, "registration watch failed; watching again");
                                break;
                            }
                            None => break,
                        }
                    }
                },
                Err(error) => tracing::debug!(%error, "cannot watch registrations; trying again"),
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn apply(self: &Arc<Self>, entry: &kv::Entry) {
        let event_type = entry
            .key
            .split('.')
            .nth(1)
            .map(|t| t.replace('/', "."))
            .unwrap_or_default();
        {
            let mut registry = self.registry.write();
            let registrations = registry.by_type.entry(event_type.clone()).or_default();
            match entry.operation {
                kv::Operation::Put => {
                    if let Ok(registration) = serde_json::from_slice::<Registration>(&entry.value) {
                        registrations.insert(entry.key.clone(), registration);
                    }
                }
                kv::Operation::Delete | kv::Operation::Purge => {
                    registrations.remove(&entry.key);
                }
            }
        }
        self.applied.fetch_max(entry.revision, Ordering::SeqCst);
        if entry.operation == kv::Operation::Put && self.types.lock().insert(event_type.clone()) {
            tokio::spawn(Arc::clone(self).match_type(event_type));
        }
    }

    /// The last revision of any registration in the bucket (0 when none).
    async fn last_registration(&self) -> Result<u64, async_nats::Error> {
        let subject = format!("{}{REGISTRATION_PREFIX}.>", self.kv.prefix);
        match self
            .kv
            .stream
            .get_last_raw_message_by_subject(&subject)
            .await
        {
            Ok(message) => Ok(message.sequence),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(error) => Err(error.into()),
        }
    }

    /// Waits until every registration stored before now is in memory; false when that
    /// cannot be known now (the bucket electing a leader, the watch behind): the batch is
    /// then handed back rather than matched against registrations that may be missing.
    async fn barrier(&self) -> bool {
        let Ok(last) = self.last_registration().await else {
            return false;
        };
        let until = Instant::now() + BARRIER_PATIENCE;
        while self.applied.load(Ordering::SeqCst) < last {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    async fn match_type(self: Arc<Self>, event_type: String) {
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if let Err(error) = self.pull_type(&event_type).await {
                tracing::debug!(event_type, %error, "matcher loop failed; starting again");
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn pull_type(&self, event_type: &str) -> Result<(), async_nats::Error> {
        let consumer = ensure_consumer(&self.client, event_type).await?;
        let mut stream = consumer.messages().await?;
        loop {
            // What arrived together is one batch, with one barrier.
            let first = tokio::select! {
                () = self.stop.cancelled() => return Ok(()),
                first = stream.next() => first,
            };
            let Some(first) = first else {
                return Ok(());
            };
            let mut messages = vec![first];
            while messages.len() < 256 {
                match futures::FutureExt::now_or_never(stream.next()) {
                    Some(Some(message)) => messages.push(message),
                    _ => break,
                }
            }
            if !self.barrier().await {
                tracing::debug!(
                    event_type,
                    "registrations not known yet; handing the batch back"
                );
                for message in messages.into_iter().flatten() {
                    let _ = message
                        .ack_with(async_nats::jetstream::AckKind::Nak(Some(
                            Duration::from_millis(500),
                        )))
                        .await;
                }
                continue;
            }
            for message in messages {
                let message = message?;
                let sequence = message.info()?.stream_sequence;
                if let Some(found) = read_event(message.headers.as_ref(), &message.payload) {
                    for registration in self.candidates(event_type, &found.data, sequence) {
                        let resolution = Resolution::Event {
                            event_type,
                            id: &found.id,
                            data: &found.data,
                        };
                        resolve(&self.client, &self.kv, &registration, resolution).await?;
                    }
                }
                message.ack().await?;
            }
        }
    }

    /// The registrations of `event_type` that an event stored at `sequence` matches.
    fn candidates(&self, event_type: &str, data: &[u8], sequence: u64) -> Vec<Registration> {
        let registry = self.registry.read();
        let Some(registrations) = registry.by_type.get(event_type).filter(|r| !r.is_empty()) else {
            return Vec::new();
        };
        let Ok(data) = serde_json::from_slice::<serde_json::Value>(data) else {
            return Vec::new();
        };
        registrations
            .values()
            .filter(|r| r.after_seq < sequence && data.pointer(&r.pointer) == Some(&r.value))
            .cloned()
            .collect()
    }
}
