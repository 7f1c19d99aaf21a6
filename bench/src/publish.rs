//! `herald bench publish`: Herald's publish path against the raw async-nats client, side by
//! side in one process against one server, same payload, same window of acks in flight.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use clap::Args;
use herald::Event;
use serde::{Deserialize, Serialize};

use crate::Target;

/// `herald bench publish`: its options.
#[derive(Debug, Args)]
pub struct PublishBench {
    /// Events per run.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Acks in flight.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Rounds; each round runs every mode once, in rotating order. The median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Parts of a round: each mode publishes its events in this many parts, the modes taking
    /// turns, so that load from other programs on the machine falls on every mode alike (1:
    /// each mode publishes all its events at once).
    #[arg(long, default_value_t = 10)]
    chunks: usize,
    /// Only these modes (comma-separated), e.g. `--modes herald` to profile one.
    #[arg(long, value_delimiter = ',', value_enum)]
    modes: Vec<Mode>,
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

impl OrderPlaced {
    /// The order's total, which the latency section uses as the event's sequence number.
    pub(crate) fn total_cents(&self) -> u64 {
        self.total_cents
    }

    /// The same event with `total_cents` set.
    pub(crate) fn with_total_cents(self, total_cents: u64) -> OrderPlaced {
        OrderPlaced {
            total_cents,
            ..self
        }
    }

    /// The customer, as a flow-control key.
    pub(crate) fn customer(&self) -> String {
        self.customer_id.to_string()
    }
}

/// [`sample_event`] for customer number `customer`.
pub(crate) fn sample_event_of(customer: u128) -> OrderPlaced {
    OrderPlaced {
        customer_id: uuid::Uuid::from_u128(customer),
        ..sample_event()
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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
    pub(crate) async fn run(self, connection: &Target) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.count > 0 && self.window > 0 && self.rounds > 0 && self.chunks > 0,
            "--count, --window, --rounds and --chunks must be positive"
        );
        let (_local, url) = connection.server_or_local()?;
        let options = connection
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
            "publish benchmark: {} events of {payload_len} bytes, {} acks in flight, {} rounds of \
             {} parts, server {url}",
            self.count, self.window, self.rounds, self.chunks
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
        let constants = ConstantHeaders {
            spec_version: herald::protocol::header::SPEC_VERSION_VALUE.into(),
            event_type: OrderPlaced::TYPE.into(),
            source: herald::headers::encode_value(herald_on.source())
                .into_owned()
                .into(),
        };
        let modes = if self.modes.is_empty() {
            Mode::ALL.to_vec()
        } else {
            self.modes.clone()
        };
        // Per mode: msgs/s and client CPU µs per event, one sample per round.
        let mut results: Vec<(Mode, Vec<f64>, Vec<f64>)> =
            modes.iter().map(|m| (*m, Vec::new(), Vec::new())).collect();
        let chunks = self.chunks.min(self.count);
        for round in 0..self.rounds {
            // Per mode, this round: time and CPU time over its parts.
            let mut elapsed = vec![Duration::ZERO; modes.len()];
            let mut cpu = vec![Some(Duration::ZERO); modes.len()];
            for chunk in 0..chunks {
                let count = self.count / chunks + usize::from(chunk < self.count % chunks);
                for offset in 0..modes.len() {
                    // Each mode starts the turn equally often, and follows each other mode
                    // equally often (every other part runs the turn backwards).
                    let step = if chunk % 2 == 0 {
                        offset
                    } else {
                        modes.len() - 1 - offset
                    };
                    let index = (round + chunk / 2 + step) % modes.len();
                    let mode = modes[index];
                    let mut stream = raw_js.get_stream(&stream_name).await?;
                    stream.purge().await.context("purging the bench stream")?;
                    let cpu_before = process_cpu_time();
                    let started = Instant::now();
                    let window = self.window;
                    let raw = |headers| raw_run(raw_js, subject, event, count, window, headers);
                    match mode {
                        Mode::Raw => raw(Headers::None).await?,
                        Mode::RawWithMsgId => raw(Headers::MsgId).await?,
                        Mode::RawSameHeaders => raw(Headers::Envelope(&constants)).await?,
                        Mode::HeraldNoValidation => {
                            herald_run(herald_off, event, count, window).await?;
                        }
                        Mode::Herald => herald_run(herald_on, event, count, window).await?,
                    }
                    elapsed[index] += started.elapsed();
                    let used = process_cpu_time()
                        .zip(cpu_before)
                        .map(|(after, before)| after.saturating_sub(before));
                    cpu[index] = cpu[index].zip(used).map(|(sum, used)| sum + used);
                    let stored = stream.info().await?.state.messages;
                    anyhow::ensure!(
                        stored == count as u64,
                        "{} stored {stored} of {count} events",
                        mode.label(),
                    );
                }
            }
            for (index, (_, rates, cpus)) in results.iter_mut().enumerate() {
                rates.push(self.count as f64 / elapsed[index].as_secs_f64());
                cpus.extend(cpu[index].map(|cpu| cpu.as_secs_f64() * 1e6 / self.count as f64));
            }
        }
        let median = |samples: &[f64]| {
            let mut sorted = samples.to_vec();
            sorted.sort_by(f64::total_cmp);
            sorted.get(sorted.len() / 2).copied()
        };
        let rates_of = |mode: Mode| {
            results
                .iter()
                .find(|(m, ..)| *m == mode)
                .map(|(_, rates, _)| rates.as_slice())
        };
        // A ratio is the median of its rounds' ratios: the modes of a round take turns, so
        // they share the round's conditions (other load on the machine) more than rounds do.
        let paired = |rates: &[f64], reference: Option<&[f64]>| {
            let reference = reference?;
            let ratios: Vec<f64> = rates.iter().zip(reference).map(|(a, b)| a / b).collect();
            median(&ratios)
        };
        let show = |ratio: Option<f64>| ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let (raw, same_message) = (rates_of(Mode::Raw), rates_of(Mode::RawSameHeaders));
        println!(
            "{:<42} {:>15} {:>8} {:>12} {:>14}",
            "mode", "msgs/s (median)", "vs raw", "vs same msg", "client µs/msg"
        );
        for (mode, rates, cpus) in &results {
            let Some(rate) = median(rates) else { continue };
            let cpu = median(cpus).map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}"));
            println!(
                "{:<42} {:>15.0} {:>8} {:>12} {:>14}",
                mode.label(),
                rate,
                show(paired(rates, raw)),
                show(paired(rates, same_message)),
                cpu
            );
        }
        if let Some(cost) =
            rates_of(Mode::RawWithMsgId).and_then(|msg_id| paired(msg_id, same_message))
        {
            println!(
                "header-set cost: Herald's headers take {:+.1} % time per event over Nats-Msg-Id alone \
                 (raw client)",
                (cost - 1.0) * 100.0
            );
        }
        println!(
            "\"vs same msg\" compares with the raw client publishing the identical message (same \
             payload and envelope headers), i.e. Herald's own cost; \"vs raw\" also includes the \
             cost of the protocol's headers and deduplication, mostly paid by the server. \
             Ratios are medians of the rounds' ratios. \"client µs/msg\" is this process's CPU \
             time per event (all its threads), which other load on the machine disturbs less \
             than msgs/s."
        );
        raw_js.get_stream(stream_name).await?.purge().await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Headers<'a> {
    None,
    MsgId,
    /// The header set Herald writes on this event (protocol section 4).
    Envelope(&'a ConstantHeaders),
}

/// The envelope header values that are the same on every event of the bench's type.
#[derive(Debug)]
struct ConstantHeaders {
    spec_version: async_nats::header::HeaderValue,
    event_type: async_nats::header::HeaderValue,
    source: async_nats::header::HeaderValue,
}

/// CPU time this process's threads have used: to the nanosecond from the scheduler's
/// statistics (`/proc/self/task/*/schedstat`), else in clock ticks (`/proc/self/stat`);
/// `None` where neither exists.
fn process_cpu_time() -> Option<Duration> {
    let from_schedstat = || {
        let mut nanoseconds = 0_u64;
        for task in std::fs::read_dir("/proc/self/task").ok()? {
            let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            nanoseconds += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
        Some(Duration::from_nanos(nanoseconds))
    };
    let from_stat = || {
        // The clock tick of every Linux platform Herald builds for.
        const TICKS_PER_SECOND: u64 = 100;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the parenthesised command name come fields 3..; utime and stime are 14, 15.
        let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
        let user: u64 = fields.next()?.parse().ok()?;
        let system: u64 = fields.next()?.parse().ok()?;
        Some(Duration::from_millis(
            (user + system) * 1000 / TICKS_PER_SECOND,
        ))
    };
    from_schedstat().or_else(from_stat)
}

async fn raw_run(
    js: &jetstream::Context,
    subject: &str,
    event: &OrderPlaced,
    count: usize,
    window: usize,
    headers: Headers<'_>,
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
            Headers::Envelope(constants) => {
                // The header set Herald writes on this event (no `ce-time`: the UUIDv7 id
                // tells it), built by hand with no checks, as Herald builds it: constant
                // names, and the values that are the same for every event built once.
                use async_nats::header::{HeaderName, HeaderValue};
                use herald::protocol::header as h;
                let id = HeaderValue::from(uuid::Uuid::now_v7().to_string());
                let mut map = async_nats::HeaderMap::new();
                map.insert(
                    HeaderName::from_static(h::SPEC_VERSION),
                    constants.spec_version.clone(),
                );
                map.insert(HeaderName::from_static(h::ID), id.clone());
                map.insert(
                    HeaderName::from_static(h::TYPE),
                    constants.event_type.clone(),
                );
                map.insert(HeaderName::from_static(h::SOURCE), constants.source.clone());
                map.insert(
                    HeaderName::from_static(h::SUBJECT),
                    "01936f2b-7c2e-7a1c-9f0e-2b3c4d5e6f71",
                );
                map.insert(HeaderName::from_static(h::NATS_MSG_ID), id);
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
