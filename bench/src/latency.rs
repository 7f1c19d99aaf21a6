//! `herald bench consume`, latency section: events published at a fixed rate, each one timed
//! from the publish call to its receipt by a raw pull consumer, or to the start of a Herald
//! handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use herald_worker::{Ctx, Function, HandlerError, Worker};
use tokio::time::MissedTickBehavior;

use crate::consumers::Setup;
use crate::publish::{OrderPlaced, sample_event};

/// The latency section's settings.
#[derive(Debug)]
pub(crate) struct Latency {
    /// Events per second.
    pub(crate) rate: u32,
    /// Seconds of publishing per run.
    pub(crate) seconds: u64,
    pub(crate) rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    Raw,
    Herald,
}

/// Send and receipt times per sequence number, in ns since `start` (0: not yet).
#[derive(Debug)]
struct Clock {
    start: Instant,
    sent: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    count: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Clock {
    fn new(events: usize) -> Clock {
        Clock {
            start: Instant::now(),
            sent: (0..events).map(|_| AtomicU64::new(0)).collect(),
            received: (0..events).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
            done: tokio::sync::Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn sent(&self, seq: usize) {
        if let Some(slot) = self.sent.get(seq) {
            slot.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Notes that `seq` arrived at `at` (a redelivery keeps the first time).
    fn received(&self, seq: Option<u64>, at: u64) {
        let slot = seq
            .and_then(|seq| usize::try_from(seq).ok())
            .and_then(|seq| self.received.get(seq));
        if let Some(slot) = slot
            && slot
                .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            && self.count.fetch_add(1, Ordering::Relaxed) + 1 == self.received.len()
        {
            self.done.notify_one();
        }
    }

    /// Latencies in µs, sorted; an error if an event never arrived.
    fn latencies(&self) -> anyhow::Result<Vec<f64>> {
        let mut latencies = Vec::with_capacity(self.sent.len());
        for (sent, received) in self.sent.iter().zip(&self.received) {
            let (sent, received) = (
                sent.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
            );
            anyhow::ensure!(sent > 0 && received > 0, "an event was not received");
            latencies.push(received.saturating_sub(sent) as f64 / 1_000.0);
        }
        latencies.sort_by(f64::total_cmp);
        Ok(latencies)
    }
}

/// The nearest-rank percentile `p` (0 to 100) of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Just the sequence number of a received event (carried in `total_cents`).
#[derive(serde::Deserialize)]
struct Sequence {
    total_cents: u64,
}

impl Latency {
    /// Runs raw and Herald `rounds` times each, alternating, and prints p50 and p99.
    /// `receiver` consumes (raw and Herald alike); `publisher` publishes with Herald.
    pub(crate) async fn run(
        &self,
        setup: &Setup,
        receiver: &herald::Client,
        publisher: &herald::Client,
    ) -> anyhow::Result<()> {
        let total = usize::try_from(u64::from(self.rate) * self.seconds)?;
        anyhow::ensure!(
            total > 0,
            "--latency-rate and --latency-seconds must be positive"
        );
        // The sample event with its sequence number in `total_cents`.
        let events = (0..total)
            .map(|seq| Ok(sample_event().with_total_cents(u64::try_from(seq)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let events = Arc::new(events);
        let modes = [Receiver::Raw, Receiver::Herald];
        let mut results: Vec<(Receiver, Vec<f64>, Vec<f64>)> =
            modes.iter().map(|m| (*m, Vec::new(), Vec::new())).collect();
        for round in 0..self.rounds {
            for offset in 0..modes.len() {
                let mode = modes[(round + offset) % modes.len()];
                let name = match mode {
                    Receiver::Raw => format!("bench-consume-{round}-latency-raw"),
                    Receiver::Herald => format!("bench-consume-{round}-latency-herald"),
                };
                let measured = self
                    .measure(setup, mode, &name, receiver, publisher, &events)
                    .await;
                crate::consumers::delete_function(receiver.jetstream(), &setup.stream, &name).await;
                let latencies = measured?;
                if let Some((_, p50s, p99s)) = results.iter_mut().find(|(m, ..)| *m == mode) {
                    p50s.push(percentile(&latencies, 50.0));
                    p99s.push(percentile(&latencies, 99.0));
                }
            }
        }
        let median = |values: &[f64]| {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
        };
        // The two modes of a round run back to back and share its conditions, so the ratio
        // is taken within each round and the median of those is reported, as for every
        // throughput row; the ratio of the two medians is printed beside it.
        let raw_p99s = &results[0].2;
        println!();
        println!(
            "end-to-end latency: {} events/s for {} s, all published with herald::Client::publish; \
             from the publish call to receipt (raw) or handler start (herald)",
            self.rate, self.seconds
        );
        println!(
            "{:<48} {:>10} {:>10} {:>11} {:>14}",
            "receiver", "p50 µs", "p99 µs", "p99 vs raw", "of medians"
        );
        for (mode, p50s, p99s) in &results {
            let label = match mode {
                Receiver::Raw => "raw async-nats (pull, at receipt)",
                Receiver::Herald => "herald worker, default (at handler start)",
            };
            let ratios: Vec<f64> = p99s
                .iter()
                .zip(raw_p99s)
                .map(|(p99, raw)| p99 / raw)
                .collect();
            let p99 = median(p99s);
            println!(
                "{label:<48} {:>10.0} {p99:>10.0} {:>11.2} {:>14.2}",
                median(p50s),
                median(&ratios),
                p99 / median(raw_p99s)
            );
            if *mode == Receiver::Herald {
                let rounds: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                println!("  p99 vs raw per round: {}", rounds.join(" / "));
            }
        }
        Ok(())
    }

    /// One run: the receiver started, then every event published at the rate; the sorted
    /// latencies in µs.
    async fn measure(
        &self,
        setup: &Setup,
        mode: Receiver,
        name: &str,
        receiver: &herald::Client,
        publisher: &herald::Client,
        events: &Arc<Vec<OrderPlaced>>,
    ) -> anyhow::Result<Vec<f64>> {
        let clock = Arc::new(Clock::new(events.len()));
        let mut raw_task = None;
        let mut worker = None;
        match mode {
            Receiver::Raw => {
                let consumer = receiver
                    .jetstream()
                    .create_consumer_on_stream(
                        pull::Config {
                            durable_name: Some(name.to_owned()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            deliver_policy: jetstream::consumer::DeliverPolicy::New,
                            ..Default::default()
                        },
                        &setup.stream,
                    )
                    .await?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(setup.batch)
                    .messages()
                    .await?;
                raw_task = Some(tokio::spawn(raw_receiver(messages, Arc::clone(&clock))));
            }
            Receiver::Herald => {
                let handler_clock = Arc::clone(&clock);
                let mut function = Function::new(name).on::<OrderPlaced>();
                if let Some(concurrency) = setup.concurrency {
                    function = function.concurrency(concurrency);
                }
                // The handler reads its sequence number from the event it is given: what it
                // does after the stamp takes CPU from the events behind it, so it does no more
                // than the raw receiver, which decodes only that field.
                let function = function.handler(move |event: OrderPlaced, _ctx: Ctx| {
                    let at = handler_clock.now();
                    handler_clock.received(Some(event.total_cents()), at);
                    async { Ok::<(), HandlerError>(()) }
                });
                worker = Some(
                    Worker::builder(receiver.clone())
                        .function(function)
                        .sweeper(false)
                        .start()
                        .await?,
                );
            }
        }
        let published = tokio::spawn(publish_paced(
            publisher.clone(),
            Arc::clone(events),
            Arc::clone(&clock),
            self.rate,
        ))
        .await?;
        let received = match published {
            Ok(()) => tokio::time::timeout(Duration::from_secs(30), clock.done.notified())
                .await
                .with_context(|| {
                    format!(
                        "{} of {} events received within 30 s of the last publish",
                        clock.count.load(Ordering::Relaxed),
                        events.len()
                    )
                }),
            Err(error) => Err(error),
        };
        if let Some(task) = raw_task {
            task.abort();
            if let Ok(Err(error)) = task.await {
                return Err(error.context("the raw receiver failed"));
            }
        }
        if let Some(worker) = worker {
            worker.shutdown().await;
        }
        received?;
        clock.latencies()
    }
}

/// Receives, notes the time, acks.
async fn raw_receiver(mut messages: pull::Stream, clock: Arc<Clock>) -> anyhow::Result<()> {
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
        let at = clock.now();
        let seq = serde_json::from_slice::<Sequence>(&message.payload)
            .ok()
            .map(|sequence| sequence.total_cents);
        clock.received(seq, at);
        message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    anyhow::bail!("the message stream ended")
}

/// Publishes `events` in order at `rate` a second (ticks of a tokio interval; a late tick
/// is caught up at once), noting each send time, with the acks awaited as they come.
async fn publish_paced(
    client: herald::Client,
    events: Arc<Vec<OrderPlaced>>,
    clock: Arc<Clock>,
    rate: u32,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut acks = FuturesUnordered::new();
    let mut next = 0;
    while next < events.len() || !acks.is_empty() {
        tokio::select! {
            _ = ticker.tick(), if next < events.len() => {
                clock.sent(next);
                let pending = client.publish(&events[next]).await?;
                acks.push(pending.into_future());
                next += 1;
            }
            Some(ack) = acks.next(), if !acks.is_empty() => {
                ack.context("publishing")?;
            }
        }
    }
    Ok(())
}
