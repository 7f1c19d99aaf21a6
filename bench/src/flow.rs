//! `herald bench flow`: what flow control costs. Events/s through one function with a
//! per-key concurrency limit and with a per-key throttle, next to the same function without
//! any limit, in one run (interleaved rounds, medians); then how wake latency grows with the
//! number of runs parked on one key.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use herald_worker::{Ctx, Function, FunctionBuilder, HandlerError, StartFrom, Worker};

use crate::Target;
use crate::consume::median;
use crate::consumers::Measured;
use crate::cpu::CpuMeter;
use crate::publish::{OrderPlaced, sample_event_of};

#[derive(Debug, Args)]
/// `herald bench flow`: its options.
pub struct FlowBench {
    /// Events stored and consumed by each throughput run.
    #[arg(long, default_value_t = 5_000)]
    count: usize,
    /// Distinct keys (customers) the events are spread over, round robin.
    #[arg(long, default_value_t = 50)]
    keys: usize,
    /// The per-key concurrency limit of the limited row.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    /// The per-key throttle of the throttled row, starts per second: high enough that it
    /// does not bound the rate, so the row measures the mechanism's cost.
    #[arg(long, default_value_t = 100_000)]
    throttle: u32,
    /// The throttle's burst.
    #[arg(long, default_value_t = 1_000)]
    burst: u32,
    /// Concurrency of the Herald function (default: Herald's own default).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Rounds; each runs every mode once in rotating order. Medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Parked-runs section: the numbers of runs parked on one key (limit 1), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    parked: Vec<usize>,
    /// Skip the throughput section.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the parked-runs section.
    #[arg(long)]
    skip_parked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No flow control: the reference.
    Plain,
    /// One per-key concurrency limit.
    Concurrency,
    /// One per-key throttle.
    Throttle,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Plain, Mode::Concurrency, Mode::Throttle];

    fn label(self, bench: &FlowBench) -> String {
        match self {
            Mode::Plain => "herald worker, no limit".to_owned(),
            Mode::Concurrency => format!("concurrency_limit({}).key(customer)", bench.limit),
            Mode::Throttle => format!(
                "throttle({}/s).burst({}).key(customer)",
                bench.throttle, bench.burst
            ),
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Concurrency => "concurrency",
            Mode::Throttle => "throttle",
        }
    }
}

impl FlowBench {
    pub(crate) async fn run(self, connection: &Target) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.count > 0 && self.keys > 0 && self.rounds > 0 && self.limit > 0,
            "--count, --keys, --rounds and --limit must be positive"
        );
        anyhow::ensure!(
            self.throttle > 0 && self.concurrency != Some(0),
            "--throttle and --concurrency must be positive"
        );
        let (local, url) = connection.server_or_local()?;
        let server_pid = local
            .as_ref()
            .and_then(|local| local.pids().first().copied().flatten());
        let client = connection.options().validate(false).connect(&url).await?;
        client.provision().await?;
        let stream = client.namespace().events_stream();
        let cpu = CpuMeter::new(server_pid);
        let concurrency = self
            .concurrency
            .map_or_else(|| "Herald's default".to_owned(), |c| c.to_string());
        println!(
            "flow-control benchmark: {} events over {} keys, herald concurrency {concurrency}, \
             {} rounds, server {url}",
            self.count, self.keys, self.rounds
        );
        let this = Arc::new(self);
        let runner = Arc::clone(&this);
        let task_client = client.clone();
        // Run on a worker thread, as a service's tasks do.
        tokio::spawn(async move {
            if !runner.skip_throughput {
                store_events(&task_client, &stream, runner.count, runner.keys).await?;
                let results = runner.throughput(&task_client, &stream, cpu).await?;
                runner.print_throughput(&results, server_pid.is_some());
            }
            if !runner.skip_parked {
                runner.parked_runs(&task_client, &stream).await?;
            }
            task_client
                .jetstream()
                .get_stream(&stream)
                .await?
                .purge()
                .await?;
            anyhow::Ok(())
        })
        .await??;
        println!();
        println!(
            "medians of {} interleaved rounds; \"vs none\": to the first row, the same function \
             without flow control; throughput timed from worker start to the last handler call; \
             the throttle is far above the achieved rate, so its row is the cost of the \
             mechanism (a pace decision per run), not a bound; CPU from /proc in 10 ms ticks, \
             server \"-\" when not started here",
            this.rounds
        );
        Ok(ExitCode::SUCCESS)
    }

    /// Every mode once per round, in rotating order, each on its own function (durable
    /// consumer) over the same stored events.
    async fn throughput(
        &self,
        client: &herald::Client,
        stream: &str,
        cpu: CpuMeter,
    ) -> anyhow::Result<Vec<(Mode, Vec<Measured>)>> {
        let mut results: Vec<(Mode, Vec<Measured>)> =
            Mode::ALL.iter().map(|m| (*m, Vec::new())).collect();
        for round in 0..self.rounds {
            for offset in 0..Mode::ALL.len() {
                let mode = Mode::ALL[(round + offset) % Mode::ALL.len()];
                let name = format!("bench-flow-{round}-{}", mode.slug());
                let measured = self.measure(client, &name, mode, cpu).await;
                crate::consumers::delete_function(client.jetstream(), stream, &name).await;
                let measured = measured?;
                if let Some((_, runs)) = results.iter_mut().find(|(m, _)| *m == mode) {
                    runs.push(measured);
                }
            }
        }
        Ok(results)
    }

    /// The function of `mode` with Herald's defaults but `start_from(All)` and
    /// `--concurrency`.
    fn function(&self, name: &str, mode: Mode) -> FunctionBuilder<OrderPlaced> {
        let mut function = Function::new(name)
            .on::<OrderPlaced>()
            .start_from(StartFrom::All);
        if let Some(concurrency) = self.concurrency {
            function = function.concurrency(concurrency);
        }
        match mode {
            Mode::Plain => function,
            Mode::Concurrency => function
                .concurrency_limit(self.limit)
                .key(|e: &OrderPlaced| e.customer()),
            Mode::Throttle => function
                .throttle(self.throttle, Duration::from_secs(1))
                .burst(self.burst)
                .key(|e: &OrderPlaced| e.customer()),
        }
    }

    /// One worker with the function of `mode`, its handler only counting; timed from the
    /// worker's start to the last handler call.
    async fn measure(
        &self,
        client: &herald::Client,
        name: &str,
        mode: Mode,
        cpu: CpuMeter,
    ) -> anyhow::Result<Measured> {
        let handled = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let (counter, notify, target) = (Arc::clone(&handled), Arc::clone(&done), self.count);
        let function = self
            .function(name, mode)
            .handler(move |event: OrderPlaced, _ctx: Ctx| {
                std::hint::black_box(event);
                if counter.fetch_add(1, Ordering::Relaxed) + 1 == target {
                    notify.notify_one();
                }
                async { Ok::<(), HandlerError>(()) }
            });
        let before = cpu.sample();
        let started = Instant::now();
        let worker = Worker::builder(client.clone())
            .function(function)
            .sweeper(false)
            .start()
            .await?;
        let finished = tokio::time::timeout(Duration::from_secs(300), done.notified()).await;
        let elapsed = started.elapsed();
        let used = before.until(cpu.sample());
        worker.shutdown().await;
        finished.with_context(|| {
            format!(
                "{name}: the worker handled {} of {} events within 300 s",
                handled.load(Ordering::Relaxed),
                self.count
            )
        })?;
        Ok(Measured {
            count: self.count,
            elapsed,
            cpu: used,
        })
    }

    fn print_throughput(&self, results: &[(Mode, Vec<Measured>)], server_measured: bool) {
        let rate = |mode: Mode| {
            results
                .iter()
                .find(|(m, _)| *m == mode)
                .map_or(f64::NAN, |(_, runs)| {
                    median(runs.iter().map(|r| r.rate()).collect())
                })
        };
        let reference = rate(Mode::Plain);
        println!();
        println!(
            "consume + ack through flow control, one replica ({} keys)",
            self.keys
        );
        println!(
            "{:<48} {:>15} {:>8} {:>8} {:>8}",
            "mode", "msgs/s (median)", "vs none", "µs cli", "µs srv"
        );
        for (mode, runs) in results {
            let r = rate(*mode);
            let per_event = |cpu: fn(&Measured) -> Option<f64>| {
                let values: Option<Vec<f64>> = runs.iter().map(cpu).collect();
                values
                    .map(median)
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
            };
            let client = per_event(|r| Some(r.cpu.client? * 1e6 / r.count as f64));
            let server = if server_measured {
                per_event(|r| Some(r.cpu.server? * 1e6 / r.count as f64))
            } else {
                "-".to_owned()
            };
            println!(
                "{:<48} {r:>15.0} {:>8.3} {client:>8} {server:>8}",
                mode.label(self),
                r / reference
            );
        }
    }

    /// For each N of `--parked`: N + 1 events of one key through a function with
    /// `concurrency_limit(1)`; the first run holds the slot until the other N are parked
    /// (the consumer has nothing pending and one unacked message), then every run returns at
    /// once. Wake latency: from a handler's return (its slot about to free) to the next
    /// handler's start.
    async fn parked_runs(&self, client: &herald::Client, stream: &str) -> anyhow::Result<()> {
        println!();
        println!("wake latency with N runs parked on one key (concurrency_limit(1))");
        println!(
            "{:>8} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "parked", "park s", "first ms", "p50 ms", "p99 ms", "drain runs/s"
        );
        for &parked in &self.parked {
            let name = format!("bench-flow-parked-{parked}");
            let result = self.parked_once(client, stream, &name, parked).await;
            crate::consumers::delete_function(client.jetstream(), stream, &name).await;
            let (park, waits, drain) = result?;
            let ms = |d: f64| format!("{:.2}", d * 1e3);
            let mut sorted = waits.clone();
            sorted.sort_by(f64::total_cmp);
            let p = |q: f64| {
                sorted
                    .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            println!(
                "{parked:>8} {:>10.2} {:>10} {:>10} {:>10} {:>12.0}",
                park.as_secs_f64(),
                ms(waits.first().copied().unwrap_or(f64::NAN)),
                ms(p(0.5)),
                ms(p(0.99)),
                parked as f64 / drain.as_secs_f64()
            );
        }
        Ok(())
    }

    /// One parked-runs measurement: the time to park `parked` runs, the wake latencies in
    /// seconds in start order, and the time to drain them.
    async fn parked_once(
        &self,
        client: &herald::Client,
        stream: &str,
        name: &str,
        parked: usize,
    ) -> anyhow::Result<(Duration, Vec<f64>, Duration)> {
        client.jetstream().get_stream(stream).await?.purge().await?;
        // One key, distinct from the throughput section's.
        store_one_key(client, parked + 1, u128::MAX).await?;
        let total = parked + 1;
        // (start, end) per run, in start order.
        let times = Arc::new(Mutex::new(Vec::<(Instant, Instant)>::with_capacity(total)));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let (log, gate, notify) = (Arc::clone(&times), Arc::clone(&release), Arc::clone(&done));
        let function = Function::new(name)
            .on::<OrderPlaced>()
            .start_from(StartFrom::All)
            .concurrency_limit(1)
            .key(|e: &OrderPlaced| e.customer())
            .handler(move |event: OrderPlaced, _ctx: Ctx| {
                std::hint::black_box(event);
                let (log, gate, notify) =
                    (Arc::clone(&log), Arc::clone(&gate), Arc::clone(&notify));
                async move {
                    let start = Instant::now();
                    let first = log.lock().map(|l| l.is_empty()).unwrap_or(false);
                    if first {
                        // Hold the slot until the others are parked.
                        gate.acquire().await.map(|p| p.forget()).ok();
                    }
                    let mut log = log.lock().map_err(|_| HandlerError::retry("poisoned"))?;
                    log.push((start, Instant::now()));
                    if log.len() == total {
                        notify.notify_one();
                    }
                    Ok::<(), HandlerError>(())
                }
            });
        let started = Instant::now();
        let worker = Worker::builder(client.clone())
            .function(function)
            .sweeper(false)
            .start()
            .await?;
        let result = async {
            // Parked: acked, so the consumer has nothing pending and only the holder unacked.
            let deadline = Instant::now() + Duration::from_secs(300);
            loop {
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = client
                    .jetstream()
                    .get_consumer_from_stream(name, stream)
                    .await?;
                let info = consumer.info().await?;
                if info.num_pending == 0
                    && info.num_ack_pending <= 1
                    && info.delivered.stream_sequence > 0
                {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "{name}: runs not parked within 300 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let park = started.elapsed();
            let drain_started = Instant::now();
            release.add_permits(1);
            tokio::time::timeout(Duration::from_secs(600), done.notified())
                .await
                .with_context(|| {
                    format!(
                        "{name}: {} of {total} runs finished within 600 s",
                        times.lock().map(|t| t.len()).unwrap_or(0)
                    )
                })?;
            let drain = drain_started.elapsed();
            let log = times.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let waits = log
                .windows(2)
                .map(|w| w[1].0.saturating_duration_since(w[0].1).as_secs_f64())
                .collect();
            anyhow::Ok((park, waits, drain))
        }
        .await;
        worker.shutdown().await;
        result
    }
}

/// Publishes `count` events into the purged stream, customer `i % keys` for the `i`-th, 1024
/// acks in flight.
async fn store_events(
    client: &herald::Client,
    stream: &str,
    count: usize,
    keys: usize,
) -> anyhow::Result<()> {
    client.jetstream().get_stream(stream).await?.purge().await?;
    let events: Vec<OrderPlaced> = (0..keys).map(|k| sample_event_of(k as u128)).collect();
    let mut in_flight = Vec::with_capacity(1024);
    for i in 0..count {
        in_flight.push(client.publish(&events[i % keys]).await?);
        if in_flight.len() == 1024 {
            for ack in in_flight.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in in_flight.drain(..) {
        ack.await?;
    }
    Ok(())
}

/// Publishes `count` events of customer `customer`, one after another (so the first is
/// stored first).
async fn store_one_key(
    client: &herald::Client,
    count: usize,
    customer: u128,
) -> anyhow::Result<()> {
    let event = sample_event_of(customer);
    client.publish(&event).await?.await?;
    let mut in_flight = Vec::with_capacity(1024);
    for _ in 1..count {
        in_flight.push(client.publish(&event).await?);
        if in_flight.len() == 1024 {
            for ack in in_flight.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in in_flight.drain(..) {
        ack.await?;
    }
    Ok(())
}
