//! Herald's benchmarks: Herald against the raw async-nats client on the same server, in one
//! process, with medians over rounds. The `herald bench` command is a thin wrapper around
//! [`Bench`]; the options and the printed reports are the same.
//!
//! ```text
//! herald bench publish            # Herald vs the raw async-nats client, side by side
//! herald bench consume            # workers vs raw pull consumers: msgs/s, CPU, latency
//! herald bench validate           # schema validation per event, no server
//! herald bench steps              # what a durable step costs
//! herald bench gateway            # the HTTP gateway beside direct publishing
//! herald bench flow               # what per-key concurrency limits and throttles cost
//! ```

mod consume;
mod consumers;
mod cpu;
mod flow;
mod gateway;
mod latency;
mod publish;
mod steps;
mod telemetry;
mod validate;

use std::process::ExitCode;

use clap::Subcommand;

pub use consume::ConsumeBench;
pub use flow::FlowBench;
pub use gateway::GatewayBench;
pub use publish::PublishBench;
pub use steps::StepsBench;
pub use validate::ValidateBench;

/// The server a benchmark runs against and how to connect to it.
#[derive(Debug, Clone)]
pub struct Target {
    server: Option<String>,
    options: herald::ConnectOptions,
}

impl Target {
    /// A benchmark target: the server URL(s) (`None`: a local nats-server is started for the
    /// run) and the client options (namespace, credentials).
    pub fn new(server: Option<String>, options: herald::ConnectOptions) -> Target {
        Target { server, options }
    }

    /// The client options (namespace, credentials) of every connection the benchmark opens.
    pub(crate) fn options(&self) -> herald::ConnectOptions {
        self.options.clone()
    }

    /// The server URL, or a local nats-server started for the run (kept alive by the
    /// returned handle) when none is given.
    pub(crate) fn server_or_local(
        &self,
    ) -> anyhow::Result<(Option<herald_local_nats::LocalNats>, String)> {
        match &self.server {
            Some(url) => Ok((None, url.clone())),
            None => {
                eprintln!("no --server or NATS_URL: starting a local nats-server");
                let local = herald_local_nats::LocalNats::start()?;
                let url = local.url();
                Ok((Some(local), url))
            }
        }
    }
}

/// The benchmarks, one subcommand each (`herald bench <name>`).
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// Publish the same event N times with Herald (validation on and off) and with the raw
    /// client, pipelined with the same window, and print msgs/s and the ratio to raw.
    ///
    /// Without --server or NATS_URL a local nats-server is started (and installed if needed).
    /// Example: `herald bench publish --count 100000 --window 1024`
    Publish(crate::publish::PublishBench),
    /// Herald workers (validation, decoding, a no-op handler; with and without recording
    /// finished runs) beside the raw client (pull batches, decode, ack) in one run:
    /// msgs/s with one replica and with two, CPU per event (client and server), and
    /// publish-to-handler latency at a fixed rate; medians and the ratio to raw.
    ///
    /// Example: `herald bench consume --count 100000 --rounds 3`
    Consume(crate::consume::ConsumeBench),
    /// The CPU cost of schema validation per event, in process (no server), next to plain
    /// serde_json serialisation and decoding.
    ///
    /// Example: `herald bench validate`
    Validate(crate::validate::ValidateBench),
    /// What a durable step costs: storing its output, looking it up on a later attempt, and
    /// worker throughput with and without steps.
    ///
    /// Example: `herald bench steps --count 5000 --steps 5`
    Steps(crate::steps::StepsBench),
    /// Events/s and p50/p99 latency through the HTTP gateway (in this process, over real
    /// HTTP on loopback) beside direct SDK publishing, with the same calls in flight.
    ///
    /// Example: `herald bench gateway --count 20000 --concurrency 64`
    Gateway(crate::gateway::GatewayBench),
    /// What flow control costs: events/s through one function with a per-key concurrency
    /// limit and with a per-key throttle (set far above the achieved rate), next to the same
    /// function without a limit, in interleaved rounds (medians, ratio to the unlimited
    /// row); then the wake latency with N runs parked on one key at limit 1.
    ///
    /// Example: `herald bench flow --count 5000 --keys 50 --parked 100,1000,5000`
    Flow(crate::flow::FlowBench),
}

impl Bench {
    /// Runs the benchmark against `target`, printing its report on standard output.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or started, or a measurement fails.
    pub async fn run(self, target: &Target) -> anyhow::Result<ExitCode> {
        match self {
            Bench::Publish(bench) => bench.run(target).await,
            Bench::Consume(bench) => bench.run(target).await,
            Bench::Validate(bench) => bench.run().await,
            Bench::Steps(bench) => Box::pin(bench.run(target)).await,
            Bench::Gateway(bench) => Box::pin(bench.run(target)).await,
            Bench::Flow(bench) => Box::pin(bench.run(target)).await,
        }
    }
}
