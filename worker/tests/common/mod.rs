//! Shared helpers for the worker's delivery tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use herald::{Client, Event, PublishOptions};
use herald_local_nats::LocalNats;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A test event.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.job")]
pub struct Job {
    pub n: u32,
    #[serde(default)]
    pub label: String,
}

/// Another type, for fan-out and untyped tests.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.other")]
pub struct Other {
    pub n: u32,
}

pub async fn server_and_client() -> (LocalNats, Client) {
    let nats = LocalNats::start().unwrap();
    let client = connect(&nats).await;
    (nats, client)
}

pub async fn connect(nats: &LocalNats) -> Client {
    let client = Client::builder()
        .source("urn:herald:service:worker-tests")
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    client
}

pub async fn publish_jobs(client: &Client, range: std::ops::Range<u32>) -> Vec<u64> {
    let mut pending = Vec::new();
    for n in range {
        pending.push(
            client
                .publish(&Job {
                    n,
                    label: String::new(),
                })
                .await
                .unwrap(),
        );
    }
    let mut sequences = Vec::new();
    for ack in pending {
        sequences.push(ack.await.unwrap().sequence);
    }
    sequences
}

pub async fn publish_raw(client: &Client, event_type: &str, payload: &serde_json::Value) -> u64 {
    client
        .publish_value(
            event_type,
            payload,
            PublishOptions {
                validate: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Receives the next `count` dead letters of a function as they are published.
pub struct DeadLetters {
    subscription: async_nats::Subscriber,
}

impl DeadLetters {
    pub async fn watch(client: &Client, function: &str) -> DeadLetters {
        let subject = client.namespace().dlq_subject(function);
        let subscription = client.nats().subscribe(subject).await.unwrap();
        client.nats().flush().await.unwrap();
        DeadLetters { subscription }
    }

    /// The next dead letter's headers (first value of each) and payload, within `wait`.
    pub async fn next(&mut self, wait: Duration) -> (BTreeMap<String, String>, bytes::Bytes) {
        let message = tokio::time::timeout(wait, self.subscription.next())
            .await
            .expect("a dead letter within the deadline")
            .unwrap();
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.to_string(), v[0].to_string()))
                    .collect()
            })
            .unwrap_or_default();
        (headers, message.payload)
    }
}

pub async fn dlq_count(client: &Client) -> u64 {
    let mut stream = client
        .jetstream()
        .get_stream(client.namespace().dlq_stream())
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// The function's (pending, ack pending, redelivered): its consumer's, plus its redrive
/// consumer's where it has one (protocol section 3).
pub async fn consumer_state(client: &Client, function: &str) -> (u64, usize, usize) {
    let js = client.jetstream();
    let stream = client.namespace().events_stream();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(function, &stream)
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    let mut state = (info.num_pending, info.num_ack_pending, info.num_redelivered);
    let redrive = herald::protocol::redrive_consumer(function);
    if let Ok(consumer) = js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            &redrive, &stream,
        )
        .await
    {
        let info = consumer.cached_info();
        state.0 += info.num_pending;
        state.1 += info.num_ack_pending;
        state.2 += info.num_redelivered;
    }
    state
}

/// Polls the function's consumers until they have nothing pending or unacknowledged
/// (deadline 20 s).
pub async fn wait_consumer_drained(client: &Client, function: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (pending, ack_pending, _) = consumer_state(client, function).await;
        if pending == 0 && ack_pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer {function} still has {pending} pending and {ack_pending} unacknowledged"
        );
        // Polling interval of a condition with a deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET: the status and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// A function on [`Job`] that sends each job's `n` to `tx`, with `settings` applied.
pub fn job_function(
    id: &str,
    tx: tokio::sync::mpsc::UnboundedSender<u32>,
    settings: impl FnOnce(herald_worker::FunctionBuilder<Job>) -> herald_worker::FunctionBuilder<Job>,
) -> herald_worker::Function {
    settings(herald_worker::Function::new(id).on::<Job>()).handler(
        move |job: Job, _ctx: herald_worker::Ctx| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).unwrap();
                Ok(())
            }
        },
    )
}
