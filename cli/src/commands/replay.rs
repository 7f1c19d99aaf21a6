//! `herald replay`: run one function again over events of the retained log.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use clap::Args;
use futures::StreamExt;

use super::Connection;

#[derive(Debug, Args)]
pub(crate) struct Replay {
    #[command(flatten)]
    connection: Connection,
    /// The function to run again (only it sees the replayed events).
    #[arg(long)]
    function: String,
    /// Events published at or after this RFC 3339 time.
    #[arg(long)]
    since: String,
    /// Events published before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only this event type (default: the function's triggers).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Show what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// At most this many per second.
    #[arg(long)]
    rate: Option<f64>,
}

fn parse_time(text: &str) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))
}

impl Replay {
    pub(crate) async fn run(self) -> anyhow::Result<ExitCode> {
        let client = self
            .connection
            .options()
            .connect(self.connection.url()?)
            .await?;
        let namespace = client.namespace().clone();
        let since = parse_time(&self.since)?;
        let until = self.until.as_deref().map(parse_time).transpose()?;
        let stream = client
            .jetstream()
            .get_stream(namespace.events_stream())
            .await?;
        let filters: Vec<String> = match &self.event_type {
            Some(event_type) => vec![namespace.event_subject(event_type)],
            None => {
                let mut consumer: jetstream::consumer::PullConsumer =
                    stream.get_consumer(&self.function).await.map_err(|e| {
                        anyhow::anyhow!(
                            "no function {} in namespace {namespace}: {e}",
                            self.function
                        )
                    })?;
                let info = consumer.info().await?;
                info.config
                    .filter_subjects
                    .iter()
                    .filter(|s| s.starts_with(&format!("{}.events.", namespace.as_str())))
                    .cloned()
                    .collect()
            }
        };
        anyhow::ensure!(
            !filters.is_empty(),
            "function {} has no event triggers",
            self.function
        );
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subjects: filters,
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartTime {
                    start_time: since,
                },
                ..Default::default()
            })
            .await?;
        let replay_id = uuid::Uuid::now_v7().simple().to_string();
        let target = namespace.redrive_subject(&self.function);
        let interval = self
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        let started = Instant::now();
        let mut messages = consumer.messages().await?;
        let mut replayed = 0u32;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let Ok(Some(message)) = next else { break };
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (sequence, pending, published) =
                (info.stream_sequence, info.pending, info.published);
            if until.is_some_and(|until| published >= until) {
                break;
            }
            if self.dry_run {
                println!("would replay #{sequence} {} to {target}", message.subject);
            } else {
                if let Some(interval) = interval {
                    tokio::time::sleep_until((started + interval * replayed).into()).await; // the rate limit
                }
                let mut headers = async_nats::HeaderMap::new();
                if let Some(original) = &message.headers {
                    for (name, values) in original.iter() {
                        if name.to_string().to_ascii_lowercase().starts_with("nats-") {
                            continue;
                        }
                        for value in values {
                            headers.append(name.clone(), value.clone());
                        }
                    }
                }
                headers.insert(
                    "Nats-Msg-Id",
                    format!("replay:{}:{replay_id}:{sequence}", self.function),
                );
                headers.insert("herald-replay", replay_id.as_str());
                client
                    .jetstream()
                    .send_publish(
                        target.clone(),
                        jetstream::message::PublishMessage::build()
                            .payload(message.payload.clone())
                            .headers(headers),
                    )
                    .await?
                    .await?;
                super::progress(
                    "replay",
                    replayed as usize + 1,
                    replayed as usize + 1 + pending as usize,
                );
            }
            replayed += 1;
            if pending == 0 {
                break;
            }
        }
        if self.dry_run {
            println!(
                "dry run: {replayed} event(s) would be replayed to {}, nothing changed",
                self.function
            );
        } else {
            eprintln!();
            println!(
                "replayed {replayed} event(s) to {} (replay {replay_id}) in {:.1}s",
                self.function,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
