//! `herald events tail | publish`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use clap::{Args, Subcommand};
use futures::StreamExt;
use herald::protocol::header as headers;

use super::Global;

#[derive(Debug, Args)]
pub(crate) struct Events {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print events as they arrive (or from a time), one line each; with --json, one JSON
    /// document per line (JSON lines).
    ///
    /// Example: `herald events tail --type 'user.*' --since 2026-11-25T08:00:00Z`
    Tail {
        /// Event type or pattern (`*` one token, `>` the rest).
        #[arg(long = "type", default_value = ">")]
        pattern: String,
        /// Start at this RFC 3339 time instead of new events only.
        #[arg(long)]
        since: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Validate and publish an event given as JSON text or `@file`.
    ///
    /// Example: `herald events publish user.signup '{"user_id":"…","email":"a@b.c"}'`
    Publish {
        /// The event type.
        event_type: String,
        /// The payload: JSON text, or @path to a file.
        data: String,
        /// A caller-chosen event id (idempotency key).
        #[arg(long)]
        id: Option<String>,
        /// Publish without validating against the registered schema.
        #[arg(long)]
        no_validate: bool,
    },
}

impl Events {
    pub(crate) async fn run(self, global: &Global) -> anyhow::Result<ExitCode> {
        match self.command {
            EventsCommand::Publish {
                event_type,
                data,
                id,
                no_validate,
            } => {
                let connection = &global.connection;
                let client = connection
                    .connect_checked(connection.options().use_registry(true))
                    .await?;
                let text = match data.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {path}"))?,
                    None => data,
                };
                let value: serde_json::Value =
                    serde_json::from_str(&text).context("the payload is not valid JSON")?;
                let options = herald::PublishOptions {
                    id,
                    validate: Some(!no_validate),
                    ..Default::default()
                };
                let ack = client
                    .publish_value(&event_type, &value, options)
                    .await?
                    .await?;
                if global.json {
                    return super::output::json(&serde_json::json!({
                        "type": event_type,
                        "id": ack.event_id,
                        "stream": ack.stream,
                        "sequence": ack.sequence,
                        "duplicate": ack.duplicate,
                    }));
                }
                println!(
                    "published {event_type} {} to {} #{}{}",
                    ack.event_id,
                    ack.stream,
                    ack.sequence,
                    if ack.duplicate {
                        " (duplicate: already stored)"
                    } else {
                        ""
                    }
                );
                Ok(ExitCode::SUCCESS)
            }
            EventsCommand::Tail {
                pattern,
                since,
                limit,
            } => {
                let client = global.connection.connect().await?;
                let subject = client.namespace().event_subject(&pattern);
                let deliver_policy = match &since {
                    Some(time) => jetstream::consumer::DeliverPolicy::ByStartTime {
                        start_time: time::OffsetDateTime::parse(
                            time,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .with_context(|| format!("--since {time:?} is not an RFC 3339 time"))?,
                    },
                    None => jetstream::consumer::DeliverPolicy::New,
                };
                let stream = client
                    .jetstream()
                    .get_stream(client.namespace().events_stream())
                    .await?;
                let consumer = stream
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: subject,
                        deliver_policy,
                        ..Default::default()
                    })
                    .await?;
                let mut messages = consumer.messages().await?;
                let mut seen = 0;
                loop {
                    let next = tokio::select! {
                        next = messages.next() => next,
                        () = herald_worker::shutdown_signal() => break,
                    };
                    let Some(message) = next else { break };
                    let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
                    let header = |name: &str| {
                        message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(name))
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    };
                    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
                    // An event without `ce-time` happened when its UUIDv7 id was made.
                    let time = herald::headers::event_time(
                        Some(header(headers::TIME)).filter(|time| !time.is_empty()),
                        &header(headers::ID),
                    )
                    .unwrap_or_default();
                    if global.json {
                        let data: serde_json::Value = serde_json::from_slice(&message.payload)
                            .unwrap_or_else(|_| {
                                serde_json::Value::String(
                                    String::from_utf8_lossy(&message.payload).into_owned(),
                                )
                            });
                        println!(
                            "{}",
                            serde_json::json!({"seq": sequence, "subject": message.subject.as_str(), "type": header(headers::TYPE),
                                "id": header(headers::ID), "time": time, "source": header(headers::SOURCE), "data": data})
                        );
                    } else {
                        println!(
                            "#{sequence:<8} {:<27} {:<24} {:<38} {}",
                            time,
                            header(headers::TYPE),
                            header(headers::ID),
                            String::from_utf8_lossy(&message.payload)
                        );
                    }
                    seen += 1;
                    if limit.is_some_and(|limit| seen >= limit) {
                        break;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), client.nats().flush()).await;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
