//! `herald bench consume`: Herald workers beside the raw async-nats pull consumer, in one run
//! against one server: throughput on the same stored events (one replica, then two), the
//! CPU each costs per event (this process and the server), and end-to-end latency at a
//! fixed publish rate.

use std::process::ExitCode;

use async_nats::jetstream;
use clap::Args;

use crate::Target;
use crate::consumers::{Measured, RawStalled, Setup};
use crate::cpu::CpuMeter;
use crate::latency::Latency;
use crate::publish::{OrderPlaced, sample_event};
use herald::Event as _;

/// How many times a measurement spoiled by a stalled raw pull stream is repeated.
const STALL_REPEATS: usize = 3;

#[derive(Debug, Args)]
/// `herald bench consume`: its options.
pub struct ConsumeBench {
    /// Events stored and consumed by each throughput run.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Pull batch of the raw client.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Concurrency of the Herald function (default: Herald's own default).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Rounds; each runs every mode once in rotating order. Medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these single-replica throughput modes (comma-separated; the first is the
    /// reference of the ratio).
    #[arg(long, value_delimiter = ',', value_enum)]
    modes: Vec<Mode>,
    /// Skip the single-replica throughput section.
    #[arg(long)]
    skip_throughput: bool,
    /// Skip the two-replica throughput section.
    #[arg(long)]
    skip_replicas: bool,
    /// Skip the end-to-end latency section.
    #[arg(long)]
    skip_latency: bool,
    /// Latency section: events published per second.
    #[arg(long, default_value_t = 2_000)]
    latency_rate: u32,
    /// Latency section: seconds of publishing per run.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Instead: measure the Herald worker with tracing and metrics off, then on (an SDK
    /// tracer provider installed globally, sampling every span into a batch exporter that
    /// drops them, a tracing-opentelemetry layer, and an SDK meter provider), and print the
    /// ratio.
    #[arg(long)]
    telemetry_overhead: bool,
    /// With --telemetry-overhead: the share of traces sampled (parent-based ratio sampler).
    #[arg(long, default_value_t = 1.0)]
    sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Raw pull, serde_json decode into the event type, ack: the reference.
    RawDecode,
    /// Herald's defaults: idempotent runs (plain first deliveries acked with a confirmation,
    /// the rest recorded).
    #[value(alias = "herald-default")]
    HeraldRecorded,
    /// Herald's defaults with activity records off (`WorkerBuilder::activity_records(false)`):
    /// what the records cost is the ratio of the default row to this one.
    HeraldNoActivity,
    /// Herald with `idempotent(false)`.
    Herald,
    /// Raw pull and ack, no decoding.
    Raw,
    /// Raw pull, decode, ack on a consumer filtered as a Herald function's was before its
    /// redrive consumer (its event subject and `ns.redrive.<function>`): beside
    /// `raw-decode`, what a second filter subject costs the server.
    RawDecodeFiltered,
    /// Two raw replicas, each on its own connection, bound to one durable consumer.
    #[value(skip)]
    RawDecode2,
    /// Two Herald workers (defaults), each with its own client, one function.
    #[value(skip)]
    HeraldRecorded2,
}

impl Mode {
    const SINGLE: [Mode; 5] = [
        Mode::RawDecode,
        Mode::HeraldRecorded,
        Mode::HeraldNoActivity,
        Mode::Herald,
        Mode::Raw,
    ];
    const REPLICAS: [Mode; 2] = [Mode::RawDecode2, Mode::HeraldRecorded2];

    fn label(self) -> &'static str {
        match self {
            Mode::RawDecode => "raw async-nats (pull, serde_json decode, ack)",
            Mode::HeraldRecorded => "herald worker, default (idempotent runs)",
            Mode::HeraldNoActivity => "herald worker, default, activity records off",
            Mode::Herald => "herald worker, idempotent(false)",
            Mode::Raw => "raw async-nats (pull, ack; no decode)",
            Mode::RawDecodeFiltered => "raw async-nats, event + redrive filters (decode, ack)",
            Mode::RawDecode2 => "raw async-nats x2 (pull, decode, ack)",
            Mode::HeraldRecorded2 => "herald worker x2, default (idempotent runs)",
        }
    }

    /// Part of the durable consumer's name.
    fn slug(self) -> &'static str {
        match self {
            Mode::RawDecode => "raw-decode",
            Mode::HeraldRecorded => "herald-default",
            Mode::HeraldNoActivity => "herald-no-activity",
            Mode::Herald => "herald-not-idempotent",
            Mode::Raw => "raw",
            Mode::RawDecodeFiltered => "raw-decode-filtered",
            Mode::RawDecode2 => "raw-decode-2r",
            Mode::HeraldRecorded2 => "herald-default-2r",
        }
    }
}

/// The connections the modes use.
struct Connections {
    main: herald::Client,
    /// Two more, one per replica of the two-replica modes; the first also publishes in the
    /// latency section.
    replicas: Vec<herald::Client>,
}

impl ConsumeBench {
    pub(crate) async fn run(self, connection: &Target) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.count > 0 && self.batch > 0 && self.rounds > 0,
            "--count, --batch and --rounds must be positive"
        );
        anyhow::ensure!(
            self.concurrency != Some(0),
            "--concurrency must be positive"
        );
        let (local, url) = connection.server_or_local()?;
        let server_pid = local
            .as_ref()
            .and_then(|local| local.pids().first().copied().flatten());
        let options = connection.options().validate(false);
        let main = options.clone().connect(&url).await?;
        main.provision().await?;
        let stream_name = main.namespace().events_stream();
        let setup = Setup {
            stream: stream_name.clone(),
            count: self.count,
            batch: self.batch,
            concurrency: self.concurrency,
            cpu: CpuMeter::new(server_pid),
        };
        let mut modes = Vec::new();
        if !self.skip_throughput && !self.telemetry_overhead {
            modes = if self.modes.is_empty() {
                Mode::SINGLE.to_vec()
            } else {
                self.modes.clone()
            };
        }
        if !self.skip_replicas && !self.telemetry_overhead {
            modes.extend(Mode::REPLICAS);
        }
        let mut replicas = Vec::new();
        for _ in 0..2 {
            replicas.push(options.clone().connect(&url).await?);
        }
        let connections = Connections { main, replicas };
        let concurrency = self
            .concurrency
            .map_or_else(|| "Herald's default".to_owned(), |c| c.to_string());
        println!(
            "consume benchmark: {} events, raw pull batch {}, herald concurrency {concurrency}, \
             {} rounds, server {url}",
            self.count, self.batch, self.rounds
        );
        if !modes.is_empty() || self.telemetry_overhead {
            store_events(&connections.main, &stream_name, self.count).await?;
        }
        if self.telemetry_overhead {
            crate::telemetry::telemetry_overhead(
                &setup,
                &connections.main,
                self.rounds,
                self.sample_ratio,
            )
            .await?;
        } else {
            let results = self.throughput(&setup, &connections, &modes).await?;
            print_tables(&results, server_pid.is_some());
            if !self.skip_latency {
                connections
                    .main
                    .jetstream()
                    .get_stream(&stream_name)
                    .await?
                    .purge()
                    .await?;
                let latency = Latency {
                    rate: self.latency_rate,
                    seconds: self.latency_seconds,
                    rounds: self.rounds,
                };
                latency
                    .run(&setup, &connections.main, &connections.replicas[0])
                    .await?;
            }
            println!();
            println!(
                "medians of {} interleaved rounds; \"vs raw\": to the first row, the raw client \
                 pulling, decoding and acking the same events (the two-replica raw for two \
                 replicas), the median of the rounds' ratios (the modes of a round run back to \
                 back and share its conditions); throughput timed from consumer creation or worker start; CPU from \
                 /proc in 10 ms ticks, server \"-\" when not started here",
                self.rounds
            );
        }
        connections
            .main
            .jetstream()
            .get_stream(&stream_name)
            .await?
            .purge()
            .await?;
        Ok(ExitCode::SUCCESS)
    }

    /// Every mode once per round, in rotating order, each on its own durable consumer.
    async fn throughput(
        &self,
        setup: &Setup,
        connections: &Connections,
        modes: &[Mode],
    ) -> anyhow::Result<Vec<(Mode, Vec<Measured>)>> {
        let mut results: Vec<(Mode, Vec<Measured>)> =
            modes.iter().map(|m| (*m, Vec::new())).collect();
        let replica_js: Vec<jetstream::Context> = connections
            .replicas
            .iter()
            .map(|client| client.jetstream().clone())
            .collect();
        for round in 0..self.rounds {
            for offset in 0..modes.len() {
                let mode = modes[(round + offset) % modes.len()];
                let name = format!("bench-consume-{round}-{}", mode.slug());
                let mut again = 0;
                let measured = loop {
                    // A repeat on a consumer of its own: the spoiled one may still exist.
                    let name = match again {
                        0 => name.clone(),
                        n => format!("{name}-again-{n}"),
                    };
                    match self
                        .measure_mode(setup, connections, &replica_js, mode, &name)
                        .await
                    {
                        Err(error)
                            if again < STALL_REPEATS
                                && error.downcast_ref::<RawStalled>().is_some() =>
                        {
                            // A spoiled measurement of the raw client: measured again.
                            again += 1;
                            eprintln!("note: {error}; round {round} of {mode:?} measured again");
                        }
                        other => break other?,
                    }
                };
                if let Some((_, runs)) = results.iter_mut().find(|(m, _)| *m == mode) {
                    runs.push(measured);
                }
            }
        }
        Ok(results)
    }

    /// One measurement of `mode` on a new durable consumer `name`, deleted after it.
    async fn measure_mode(
        &self,
        setup: &Setup,
        connections: &Connections,
        replica_js: &[jetstream::Context],
        mode: Mode,
        name: &str,
    ) -> anyhow::Result<Measured> {
        let (task_setup, task_name) = (setup.clone(), name.to_owned());
        let main = connections.main.clone();
        let (replicas, replica_js) = (connections.replicas.clone(), replica_js.to_vec());
        // Run on a worker thread, as a service's tasks do.
        let measured = tokio::spawn(async move {
            let (setup, name) = (task_setup, task_name);
            let main_js = std::slice::from_ref(main.jetstream());
            let main = std::slice::from_ref(&main);
            match mode {
                Mode::Raw => setup.raw(main_js, &name, false, Vec::new()).await,
                Mode::RawDecode => setup.raw(main_js, &name, true, Vec::new()).await,
                Mode::RawDecodeFiltered => {
                    let namespace = main[0].namespace();
                    let filters = vec![
                        OrderPlaced::subject(namespace),
                        namespace.redrive_subject(&name),
                    ];
                    setup.raw(main_js, &name, true, filters).await
                }
                Mode::Herald => setup.herald(main, &name, false).await,
                Mode::HeraldRecorded => setup.herald(main, &name, true).await,
                Mode::HeraldNoActivity => setup.herald_without_activity(main, &name).await,
                Mode::RawDecode2 => setup.raw(&replica_js, &name, true, Vec::new()).await,
                Mode::HeraldRecorded2 => setup.herald(&replicas, &name, true).await,
            }
        })
        .await;
        crate::consumers::delete_function(connections.main.jetstream(), &setup.stream, name).await;
        measured?
    }
}

/// Publishes `count` sample events into the purged stream, 1024 acks in flight.
async fn store_events(client: &herald::Client, stream: &str, count: usize) -> anyhow::Result<()> {
    client.jetstream().get_stream(stream).await?.purge().await?;
    let event = sample_event();
    let mut in_flight = Vec::with_capacity(1024);
    for _ in 0..count {
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

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median over rounds of `value(mode) / value(reference)` taken within each round:
/// the modes of a round run back to back, so they share the round's conditions (other load
/// on the machine) more than rounds do. `None` without both or with unequal rounds.
fn paired(
    results: &[(Mode, Vec<Measured>)],
    mode: Mode,
    reference: Mode,
    value: fn(&Measured) -> Option<f64>,
) -> Option<f64> {
    let runs = |wanted: Mode| {
        results
            .iter()
            .find(|(m, _)| *m == wanted)
            .map(|(_, runs)| runs)
    };
    let (runs, reference) = (runs(mode)?, runs(reference)?);
    if runs.len() != reference.len() || runs.is_empty() {
        return None;
    }
    let ratios: Option<Vec<f64>> = runs
        .iter()
        .zip(reference)
        .map(|(run, reference)| Some(value(run)? / value(reference)?))
        .collect();
    Some(median(ratios?))
}

/// Throughput (one replica, two replicas) and CPU per event.
fn print_tables(results: &[(Mode, Vec<Measured>)], server_measured: bool) {
    let rate = |mode: Mode| {
        results
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, runs)| median(runs.iter().map(|r| r.rate()).collect()))
    };
    let rate_of = |r: &Measured| Some(r.rate());
    let client_of = |r: &Measured| Some(r.cpu.client? / r.count as f64);
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let single: Vec<Mode> = results
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !Mode::REPLICAS.contains(m))
        .collect();
    if let Some(&reference) = single.first() {
        println!();
        println!("consume + ack, one replica");
        println!("{:<48} {:>15} {:>8}", "mode", "msgs/s (median)", "vs raw");
        for mode in &single {
            let r = rate(*mode).unwrap_or(f64::NAN);
            let ratio = paired(results, *mode, reference, rate_of);
            println!("{:<48} {r:>15.0} {:>8}", mode.label(), show(ratio));
        }
    }
    if rate(Mode::RawDecode2).is_some() {
        println!();
        println!("consume + decode + ack, two replicas (one durable consumer, two connections)");
        println!(
            "{:<48} {:>15} {:>8} {:>14}",
            "mode", "msgs/s (median)", "vs raw", "vs 1 replica"
        );
        for (mode, one) in [
            (Mode::RawDecode2, Mode::RawDecode),
            (Mode::HeraldRecorded2, Mode::HeraldRecorded),
        ] {
            let r = rate(mode).unwrap_or(f64::NAN);
            let ratio = paired(results, mode, Mode::RawDecode2, rate_of);
            let scaling = show(paired(results, mode, one, rate_of));
            println!(
                "{:<48} {r:>15.0} {:>8} {scaling:>14}",
                mode.label(),
                show(ratio)
            );
        }
    }
    if !results.is_empty() {
        println!();
        println!(
            "CPU per event (median), µs; \"client vs raw\" to the raw client of as many replicas"
        );
        println!(
            "{:<48} {:>8} {:>8} {:>8} {:>14}",
            "mode", "client", "server", "total", "client vs raw"
        );
        let reference_of = |mode: Mode| {
            if Mode::REPLICAS.contains(&mode) {
                Mode::RawDecode2
            } else {
                single.first().copied().unwrap_or(mode)
            }
        };
        for (mode, runs) in results {
            let per_event = |cpu: fn(&Measured) -> Option<f64>| {
                let values: Option<Vec<f64>> = runs.iter().map(cpu).collect();
                values.map(median)
            };
            let client = per_event(|r| Some(r.cpu.client? * 1e6 / r.count as f64));
            let server = per_event(|r| Some(r.cpu.server? * 1e6 / r.count as f64))
                .filter(|_| server_measured);
            let total = per_event(|r| Some((r.cpu.client? + r.cpu.server?) * 1e6 / r.count as f64))
                .filter(|_| server_measured);
            let versus = paired(results, *mode, reference_of(*mode), client_of);
            let one = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
            println!(
                "{:<48} {:>8} {:>8} {:>8} {:>14}",
                mode.label(),
                one(client),
                one(server),
                one(total),
                show(versus)
            );
        }
    }
}
