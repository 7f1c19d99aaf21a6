//! `herald bench gateway`: events/s and latency through the HTTP gateway (served in this
//! process on loopback, reached over real HTTP) beside direct SDK publishing, in one run,
//! with the same number of requests in flight.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use herald::Event;
use herald_gateway::keys::{Keys, NewKey, Rate};

use crate::Target;
use crate::publish::{OrderPlaced, sample_event};

#[derive(Debug, Args)]
/// `herald bench gateway`: its options.
pub struct GatewayBench {
    /// Events per mode and round.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Requests (or SDK publishes) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Events per request of the batch mode.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// Rounds; the median round is reported per mode.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sdk,
    Binary,
    Batch,
}

impl Mode {
    fn label(self, batch: usize) -> String {
        match self {
            Mode::Sdk => "SDK publish + ack (direct)".to_owned(),
            Mode::Binary => "gateway, CE binary, 1 event/request".to_owned(),
            Mode::Batch => format!("gateway, CE batch, {batch} events/request"),
        }
    }
}

/// One mode's round: events/s and latency percentiles per call (publish or request).
#[derive(Debug, Clone, Copy)]
struct Round {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

struct Setup {
    client: herald::Client,
    http: reqwest::Client,
    url: String,
    token: String,
    body: Vec<u8>,
}

impl GatewayBench {
    pub(crate) async fn run(self, connection: &Target) -> anyhow::Result<ExitCode> {
        let (_local, url) = connection.server_or_local()?;
        let client = connection
            .options()
            .connection_name("herald-bench-gateway")
            .use_registry(true)
            .connect(&url)
            .await?;
        client.provision().await?;
        client.add_local_schema::<OrderPlaced>().await?;
        let token = Keys::open(&client)
            .await?
            .create(NewKey {
                name: "bench".into(),
                rate: Rate {
                    per_s: 1_000_000,
                    burst: 1_000_000,
                },
                ..Default::default()
            })
            .await?
            .token;
        let router = herald_gateway::router(client.clone(), Default::default()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let setup = Arc::new(Setup {
            client,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(self.concurrency)
                .build()?,
            url: format!("http://{address}/v1/events"),
            token,
            body: serde_json::to_vec(&sample_event())?,
        });
        println!(
            "herald bench gateway: {} events per mode and round, {} in flight, {} rounds, \
             nats {url}, gateway in process on {address}",
            self.count, self.concurrency, self.rounds
        );
        let modes = [Mode::Sdk, Mode::Binary, Mode::Batch];
        let mut results: Vec<Vec<Round>> = vec![Vec::new(); modes.len()];
        for round in 0..self.rounds {
            for offset in 0..modes.len() {
                let index = (round + offset) % modes.len();
                let result = self.measure(&setup, modes[index], round).await?;
                results[index].push(result);
            }
        }
        println!(
            "{:<42} {:>10} {:>10} {:>10} {:>8}",
            "mode", "events/s", "p50", "p99", "vs SDK"
        );
        let median = |rounds: &mut Vec<Round>| {
            rounds.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            rounds[rounds.len() / 2]
        };
        let sdk = median(&mut results[0].clone()).per_second;
        for (mode, rounds) in modes.iter().zip(results.iter_mut()) {
            let round = median(rounds);
            println!(
                "{:<42} {:>10.0} {:>8.2}ms {:>8.2}ms {:>7.0}%",
                mode.label(self.batch),
                round.per_second,
                round.p50.as_secs_f64() * 1000.0,
                round.p99.as_secs_f64() * 1000.0,
                100.0 * round.per_second / sdk
            );
        }
        println!("latency: per call (one publish and its ack; one HTTP request with its events)");
        server.abort();
        Ok(ExitCode::SUCCESS)
    }

    async fn measure(&self, setup: &Arc<Setup>, mode: Mode, round: usize) -> anyhow::Result<Round> {
        let per_call = if mode == Mode::Batch {
            self.batch.max(1)
        } else {
            1
        };
        let calls = self.count.div_ceil(per_call);
        let workers = self.concurrency.max(1).min(calls);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..workers {
            let setup = Arc::clone(setup);
            let share = calls / workers + usize::from(worker < calls % workers);
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(share);
                for call in 0..share {
                    let prefix = format!("bench-{round}-{mode:?}-{worker}-{call}");
                    let began = Instant::now();
                    one_call(&setup, mode, &prefix, per_call).await?;
                    latencies.push(began.elapsed());
                }
                anyhow::Ok(latencies)
            });
        }
        let mut latencies = Vec::with_capacity(calls);
        while let Some(finished) = tasks.join_next().await {
            latencies.extend(finished??);
        }
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        Ok(Round {
            per_second: (calls * per_call) as f64 / elapsed.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
        })
    }
}

async fn one_call(setup: &Setup, mode: Mode, prefix: &str, events: usize) -> anyhow::Result<()> {
    match mode {
        Mode::Sdk => {
            let data: serde_json::Value = serde_json::from_slice(&setup.body)?;
            setup
                .client
                .publish_value(
                    OrderPlaced::TYPE,
                    &data,
                    herald::PublishOptions {
                        id: Some(prefix.to_owned()),
                        ..Default::default()
                    },
                )
                .await?
                .await?;
        }
        Mode::Binary => {
            let response = setup
                .http
                .post(&setup.url)
                .bearer_auth(&setup.token)
                .header("content-type", "application/json")
                .header("ce-specversion", "1.0")
                .header("ce-id", prefix)
                .header("ce-type", OrderPlaced::TYPE)
                .header("ce-source", "urn:herald:service:bench")
                .body(setup.body.clone())
                .send()
                .await?;
            anyhow::ensure!(
                response.status() == 202,
                "gateway answered {}",
                response.status()
            );
        }
        Mode::Batch => {
            let data: serde_json::Value = serde_json::from_slice(&setup.body)?;
            let batch: Vec<serde_json::Value> = (0..events)
                .map(|n| {
                    serde_json::json!({"specversion": "1.0", "id": format!("{prefix}-{n}"),
                        "type": OrderPlaced::TYPE, "source": "urn:herald:service:bench",
                        "data": data})
                })
                .collect();
            let response = setup
                .http
                .post(&setup.url)
                .bearer_auth(&setup.token)
                .header("content-type", "application/cloudevents-batch+json")
                .body(serde_json::to_vec(&batch)?)
                .send()
                .await
                .context("the gateway request failed")?;
            anyhow::ensure!(
                response.status() == 202,
                "gateway answered {}",
                response.status()
            );
        }
    }
    Ok(())
}
