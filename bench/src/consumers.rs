//! The consumers `herald bench consume` measures on the same stored events: raw async-nats
//! pull consumers and Herald workers, with one replica or several bound to one durable
//! consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use herald_worker::{Ctx, Function, HandlerError, Worker};
use tokio::sync::watch;

use crate::cpu::{CpuMeter, CpuUsed};
use crate::publish::OrderPlaced;

/// What every measured consumer shares.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The events stream.
    pub(crate) stream: String,
    /// Events stored, to handle.
    pub(crate) count: usize,
    /// Pull batch of the raw client.
    pub(crate) batch: usize,
    /// Concurrency of the Herald function; Herald's default when `None`.
    pub(crate) concurrency: Option<usize>,
    pub(crate) cpu: CpuMeter,
}

/// One timed consumption of every stored event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) count: usize,
    pub(crate) elapsed: Duration,
    pub(crate) cpu: CpuUsed,
}

impl Measured {
    /// Events handled per second.
    pub(crate) fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

impl Setup {
    /// Raw pull consumers, one per context in `replicas` (each its own connection, or one),
    /// bound to one new durable consumer `name` (filtered by `filters`, none for every
    /// stored message): pull batches of `batch`, optionally decode into `OrderPlaced`, ack
    /// each message. Timed from the consumer's creation to the last ack.
    pub(crate) async fn raw(
        &self,
        replicas: &[jetstream::Context],
        name: &str,
        decode: bool,
        filters: Vec<String>,
    ) -> anyhow::Result<Measured> {
        let creator = replicas.first().context("no connection")?;
        let before = self.cpu.sample();
        let started = Instant::now();
        creator
            .create_consumer_on_stream(
                pull::Config {
                    durable_name: Some(name.to_owned()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    filter_subjects: filters,
                    ..Default::default()
                },
                &self.stream,
            )
            .await?;
        let handled = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(watch::Sender::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for js in replicas {
            let consumer: jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream(name, &self.stream).await?;
            tasks.spawn(raw_replica(
                consumer,
                self.batch,
                decode,
                self.count,
                Arc::clone(&handled),
                Arc::clone(&stop),
            ));
        }
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        let elapsed = started.elapsed();
        Ok(Measured {
            count: self.count,
            elapsed,
            cpu: before.until(self.cpu.sample()),
        })
    }

    /// Herald workers, one per client in `replicas`, each with one function `name` whose
    /// handler only counts (Herald's defaults but `idempotent` and `--concurrency`), on a
    /// consumer made first with every stored event ahead of it. Timed from the consumer's
    /// creation to the last handler call.
    pub(crate) async fn herald(
        &self,
        replicas: &[herald::Client],
        name: &str,
        idempotent: bool,
    ) -> anyhow::Result<Measured> {
        self.herald_with(replicas, name, idempotent, true).await
    }

    /// [`Self::herald`] with the default settings and activity records off.
    pub(crate) async fn herald_without_activity(
        &self,
        replicas: &[herald::Client],
        name: &str,
    ) -> anyhow::Result<Measured> {
        self.herald_with(replicas, name, true, false).await
    }

    async fn herald_with(
        &self,
        replicas: &[herald::Client],
        name: &str,
        idempotent: bool,
        activity: bool,
    ) -> anyhow::Result<Measured> {
        let handled = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let before = self.cpu.sample();
        let started = Instant::now();
        // The function's consumer, made here with the stored events before it, as a running
        // function's consumer has a backlog after its workers were away; the workers take it
        // as it is (with the default `StartFrom::New`, whose first deliveries are plain).
        if let Some(client) = replicas.first() {
            client
                .jetstream()
                .create_consumer_on_stream(
                    pull::Config {
                        durable_name: Some(name.to_owned()),
                        deliver_policy: jetstream::consumer::DeliverPolicy::All,
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                    &self.stream,
                )
                .await
                .with_context(|| format!("creating the consumer {name}"))?;
        }
        let workers = futures::future::try_join_all(replicas.iter().map(|client| {
            let (counter, notify, target) = (Arc::clone(&handled), Arc::clone(&done), self.count);
            let mut function = Function::new(name)
                .on::<OrderPlaced>()
                .idempotent(idempotent);
            if let Some(concurrency) = self.concurrency {
                function = function.concurrency(concurrency);
            }
            let function = function.handler(move |event: OrderPlaced, _ctx: Ctx| {
                std::hint::black_box(event);
                if counter.fetch_add(1, Ordering::Relaxed) + 1 == target {
                    notify.notify_one();
                }
                async { Ok::<(), HandlerError>(()) }
            });
            Worker::builder(client.clone())
                .function(function)
                .sweeper(false)
                .activity_records(activity)
                .start()
        }))
        .await?;
        let finished = tokio::time::timeout(Duration::from_secs(120), done.notified()).await;
        let elapsed = started.elapsed();
        let cpu = before.until(self.cpu.sample());
        for worker in workers {
            worker.shutdown().await;
        }
        finished.with_context(|| {
            format!(
                "the workers handled {} of {} events within 120 s",
                handled.load(Ordering::Relaxed),
                self.count
            )
        })?;
        Ok(Measured {
            count: self.count,
            elapsed,
            cpu,
        })
    }
}

/// The raw client's pull stream stopped asking for messages while the consumer still had
/// some: async-nats 0.51's `Stream` counts a new pull request's messages only once its
/// request task reports back, so messages that arrive first are not counted, and when more
/// than half a batch goes uncounted it never pulls again (its watchdog resets the count
/// after the request's expiry plus 5 s). The measurement is spoiled; the caller repeats it.
#[derive(Debug, thiserror::Error)]
#[error(
    "a raw pull stream stalled after {handled} messages handled ({pending} pending at the \
     server)"
)]
pub(crate) struct RawStalled {
    handled: usize,
    pending: u64,
}

/// Silence after which a raw replica checks whether its pull stream stalled: the other
/// replicas went on handling messages meanwhile, or the server has no pull request waiting
/// while messages are pending.
const STALL_CHECK: Duration = Duration::from_secs(1);

/// One raw replica: pulls, decodes, acks until the replicas together handled `count`.
async fn raw_replica(
    mut consumer: jetstream::consumer::PullConsumer,
    batch: usize,
    decode: bool,
    count: usize,
    handled: Arc<AtomicUsize>,
    stop: Arc<watch::Sender<bool>>,
) -> anyhow::Result<()> {
    let mut stopped = stop.subscribe();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await?;
    let mut silent_since = Instant::now();
    let mut handled_then = handled.load(Ordering::Relaxed);
    loop {
        let next = tokio::select! {
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => return Ok(()),
            next = tokio::time::timeout(STALL_CHECK, messages.next()) => next,
        };
        let Ok(next) = next else {
            let handled_now = handled.load(Ordering::Relaxed);
            let others_went_on = handled_now > handled_then;
            handled_then = handled_now;
            let info = consumer.info().await?;
            if others_went_on || (info.num_waiting == 0 && info.num_pending > 0) {
                return Err(RawStalled {
                    handled: handled_now,
                    pending: info.num_pending,
                }
                .into());
            }
            anyhow::ensure!(
                silent_since.elapsed() < Duration::from_secs(30),
                "no message within 30 s"
            );
            continue;
        };
        let message = next
            .context("the message stream ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        silent_since = Instant::now();
        if decode {
            let event: OrderPlaced = serde_json::from_slice(&message.payload)?;
            std::hint::black_box(event);
        }
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        handled_then = handled.fetch_add(1, Ordering::Relaxed) + 1;
        if handled_then >= count {
            stop.send_replace(true);
            return Ok(());
        }
    }
}

/// Deletes a function's consumers: its own and its redrive consumer (protocol section 3),
/// where they exist.
pub(crate) async fn delete_function(
    jetstream: &async_nats::jetstream::Context,
    stream: &str,
    function: &str,
) {
    for name in [
        function.to_owned(),
        herald::protocol::redrive_consumer(function),
    ] {
        jetstream
            .delete_consumer_from_stream(&name, stream)
            .await
            .ok();
    }
}
