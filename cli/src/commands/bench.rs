//! `herald bench publish`: Herald's publish path against the raw async-nats client, side by
//! side in one process against one server, same payload, same window of acks in flight.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use clap::{Args, Subcommand};
use herald::Event;
use serde::{Deserialize, Serialize};

use super::Connection;

#[derive(Debug, Subcommand)]
pub(crate) enum Bench {
    /// Publish the same event N times with Herald (validation on and off) and with the raw
    /// client, pipelined with the same window, and print msgs/s and the ratio to raw.
    ///
    /// Without --server or NATS_URL a local nats-server is started (and installed if needed).
    /// Example: `herald bench publish --count 100000 --window 1024`
    Publish(PublishBench),
    /// Consume and ack N stored events with a Herald worker (validation, decoding, a no-op
    /// handler; with and without recording finished runs) and with the raw client (pull batches, ack), side by side, and print msgs/s
    /// and the ratio to raw.
    ///
    /// Example: `herald bench consume --count 100000 --batch 200`
    Consume(super::bench_consume::ConsumeBench),
    /// The CPU cost of schema validation per event, in process (no server), next to plain
    /// serde_json serialisation and decoding.
    ///
    /// Example: `herald bench validate`
    Validate(super::bench_validate::ValidateBench),
    /// What a durable step costs: storing its output, looking it up on a later attempt, and
    /// worker throughput with and without steps.
    ///
    /// Example: `herald bench steps --count 5000 --steps 5`
    Steps(super::bench_steps::StepsBench),
}

impl Bench {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Bench::Publish(bench) => bench.run().await,
            Bench::Consume(bench) => bench.run().await,
            Bench::Validate(bench) => bench.run().await,
            Bench::Steps(bench) => Box::pin(bench.run()).await,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PublishBench {
    #[command(flatten)]
    connection: Connection,
    /// Events per run.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Acks in flight.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Rounds; each round runs every mode once, in rotating order. The median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// A ~250-byte event, as a real service would publish.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "bench.order_placed")]
pub(crate) struct OrderPlaced {
    order_id: uuid::Uuid,
    #[event(subject)]
    customer_id: uuid::Uuid,
    email: String,
    currency: String,
    total_cents: u64,
    items: Vec<LineItem>,
    note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub(crate) struct LineItem {
    sku: String,
    quantity: u32,
}

pub(crate) fn sample_event() -> OrderPlaced {
    OrderPlaced {
        order_id: uuid::Uuid::from_u128(0x0193_6f2b_7c2e_7a1c_9f0e_2b3c_4d5e_6f70),
        customer_id: uuid::Uuid::from_u128(0x0193_6f2b_7c2e_7a1c_9f0e_2b3c_4d5e_6f71),
        email: "ada.lovelace@example.com".into(),
        currency: "EUR".into(),
        total_cents: 129_900,
        items: vec![
            LineItem {
                sku: "SKU-KEYBOARD-01".into(),
                quantity: 1,
            },
            LineItem {
                sku: "SKU-CABLE-USB-C".into(),
                quantity: 2,
            },
        ],
        note: Some("leave at the door".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raw,
    RawWithMsgId,
    RawSameHeaders,
    HeraldNoValidation,
    Herald,
}

impl Mode {
    const ALL: [Mode; 5] = [
        Mode::Raw,
        Mode::RawWithMsgId,
        Mode::RawSameHeaders,
        Mode::HeraldNoValidation,
        Mode::Herald,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::Raw => "raw async-nats (serde_json, no headers)",
            Mode::RawWithMsgId => "raw async-nats + Nats-Msg-Id header",
            Mode::RawSameHeaders => "raw async-nats + Herald's headers",
            Mode::HeraldNoValidation => "herald, validation off",
            Mode::Herald => "herald, validation on",
        }
    }
}

impl PublishBench {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.count > 0 && self.window > 0 && self.rounds > 0,
            "--count, --window and --rounds must be positive"
        );
        let (_local, url) = self.connection.server_or_local()?;
        let options = self
            .connection
            .options()
            .max_pending_acks(self.window.max(herald::DEFAULT_MAX_PENDING_ACKS));
        let herald_on = options.clone().connect(&url).await?;
        let herald_off = options.clone().validate(false).connect(&url).await?;
        herald_on.provision().await?;
        // The raw client gets the same connection settings but none of Herald's code.
        let raw = herald_on.nats().clone();
        let raw_js = jetstream::ContextBuilder::new()
            .max_ack_inflight(self.window.max(herald::DEFAULT_MAX_PENDING_ACKS))
            .build(raw);
        let event = sample_event();
        let payload_len = serde_json::to_vec(&event)?.len();
        let subject = OrderPlaced::subject(herald_on.namespace());
        let stream_name = herald_on.namespace().events_stream();
        println!(
            "publish benchmark: {} events of {payload_len} bytes, {} acks in flight, {} rounds, server {url}",
            self.count, self.window, self.rounds
        );

        // Run on a worker thread, as a service's request handlers do.
        let this = std::sync::Arc::new(self);
        let runner = std::sync::Arc::clone(&this);
        tokio::spawn(async move {
            runner
                .measure(
                    &herald_on,
                    &herald_off,
                    &raw_js,
                    &event,
                    &subject,
                    &stream_name,
                )
                .await
        })
        .await??;
        Ok(ExitCode::SUCCESS)
    }

    async fn measure(
        &self,
        herald_on: &herald::Client,
        herald_off: &herald::Client,
        raw_js: &jetstream::Context,
        event: &OrderPlaced,
        subject: &str,
        stream_name: &str,
    ) -> anyhow::Result<()> {
        let mut results: Vec<(Mode, Vec<f64>)> =
            Mode::ALL.iter().map(|m| (*m, Vec::new())).collect();
        for round in 0..self.rounds {
            for offset in 0..Mode::ALL.len() {
                let mode = Mode::ALL[(round + offset) % Mode::ALL.len()];
                let mut stream = raw_js.get_stream(&stream_name).await?;
                stream.purge().await.context("purging the bench stream")?;
                let started = Instant::now();
                let (count, window) = (self.count, self.window);
                match mode {
                    Mode::Raw => {
                        raw_run(raw_js, subject, event, count, window, Headers::None).await?;
                    }
                    Mode::RawWithMsgId => {
                        raw_run(raw_js, subject, event, count, window, Headers::MsgId).await?;
                    }
                    Mode::RawSameHeaders => {
                        raw_run(raw_js, subject, event, count, window, Headers::Envelope).await?;
                    }
                    Mode::HeraldNoValidation => {
                        herald_run(herald_off, event, count, window).await?;
                    }
                    Mode::Herald => herald_run(herald_on, event, count, window).await?,
                }
                let rate = self.count as f64 / started.elapsed().as_secs_f64();
                let stored = stream.info().await?.state.messages;
                anyhow::ensure!(
                    stored == self.count as u64,
                    "{} stored {stored} of {} events",
                    mode.label(),
                    self.count
                );
                if let Some((_, rates)) = results.iter_mut().find(|(m, _)| *m == mode) {
                    rates.push(rate);
                }
            }
        }
        let median = |rates: &[f64]| {
            let mut sorted = rates.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted[sorted.len() / 2]
        };
        let raw_rate = median(&results[0].1);
        let same_message_rate = median(&results[2].1);
        println!(
            "{:<42} {:>15} {:>8} {:>14}",
            "mode", "msgs/s (median)", "vs raw", "vs same msg"
        );
        for (mode, rates) in &results {
            let rate = median(rates);
            println!(
                "{:<42} {:>15.0} {:>8.2} {:>14.2}",
                mode.label(),
                rate,
                rate / raw_rate,
                rate / same_message_rate
            );
        }
        println!(
            "\"vs same msg\" compares with the raw client publishing the identical message (same \
             payload and envelope headers), i.e. Herald's own cost; \"vs raw\" also includes the \
             cost of the protocol's headers and deduplication, mostly paid by the server."
        );
        raw_js.get_stream(stream_name).await?.purge().await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Headers {
    None,
    MsgId,
    Envelope,
}

async fn raw_run(
    js: &jetstream::Context,
    subject: &str,
    event: &OrderPlaced,
    count: usize,
    window: usize,
    headers: Headers,
) -> anyhow::Result<()> {
    let mut in_flight = VecDeque::with_capacity(window);
    for _ in 0..count {
        if in_flight.len() == window {
            wait_oldest(&mut in_flight).await?;
        }
        let payload = serde_json::to_vec(event)?;
        let mut message = PublishMessage::build().payload(payload.into());
        match headers {
            Headers::None => {}
            Headers::MsgId => message = message.message_id(uuid::Uuid::now_v7().to_string()),
            Headers::Envelope => {
                // The same header set Herald writes (no `ce-time`: the UUIDv7 id tells it),
                // built by hand with no checks.
                let id = uuid::Uuid::now_v7().to_string();
                use herald::protocol::header as h;
                let mut map = async_nats::HeaderMap::new();
                map.insert(h::SPEC_VERSION, h::SPEC_VERSION_VALUE);
                map.insert(h::ID, id.as_str());
                map.insert(h::TYPE, "bench.order_placed");
                map.insert(h::SOURCE, "urn:herald:service:herald");
                map.insert(h::SUBJECT, "01936f2b-7c2e-7a1c-9f0e-2b3c4d5e6f71");
                map.insert(h::NATS_MSG_ID, id);
                message = message.headers(map);
            }
        }
        let ack = js.send_publish(subject.to_owned(), message).await?;
        in_flight.push_back(ack.into_future());
    }
    while !in_flight.is_empty() {
        wait_oldest(&mut in_flight).await?;
    }
    Ok(())
}

async fn herald_run(
    client: &herald::Client,
    event: &OrderPlaced,
    count: usize,
    window: usize,
) -> anyhow::Result<()> {
    let mut in_flight = VecDeque::with_capacity(window);
    for _ in 0..count {
        if in_flight.len() == window {
            wait_oldest(&mut in_flight).await?;
        }
        in_flight.push_back(client.publish(event).await?.into_future());
    }
    while !in_flight.is_empty() {
        wait_oldest(&mut in_flight).await?;
    }
    Ok(())
}

async fn wait_oldest<F, T, E>(in_flight: &mut VecDeque<F>) -> anyhow::Result<()>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    if let Some(oldest) = in_flight.pop_front() {
        tokio::time::timeout(Duration::from_secs(30), oldest)
            .await
            .context("no ack within 30 s")??;
    }
    Ok(())
}
