//! The seed scenario: `POST /api/connectSource` does its critical-path work, publishes
//! `source.connected` and answers at once; the `backfill-user-data` function does the slow
//! part in a worker, with a retry when the source's API is busy and a dead letter when it
//! can never succeed.
//!
//! [`run`] plays the whole scenario against a NATS server and prints a few readable lines;
//! `cargo run -p quickstart` calls it with a local nats-server (or `NATS_URL`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use example_events::{SourceConnected, SourceKind};
use futures::StreamExt;
use herald::Client;
use herald_worker::{Backoff, Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The request body of `POST /api/connectSource`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectSource {
    /// Who connects the source.
    pub user_id: Uuid,
    /// Which kind of source.
    pub kind: SourceKind,
}

/// The answer: the new source and the event that will backfill it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Connected {
    /// The new source.
    pub source_id: Uuid,
    /// The id of the published `source.connected` event.
    pub event_id: String,
}

/// The HTTP API: only the critical path runs in the request.
pub fn router(herald: Client) -> Router {
    Router::new()
        .route("/api/connectSource", post(connect_source))
        .with_state(herald)
}

async fn connect_source(
    State(herald): State<Client>,
    Json(request): Json<ConnectSource>,
) -> Result<(StatusCode, Json<Connected>), (StatusCode, String)> {
    // Critical path: create the source record (here, an id), then hand the slow part off.
    let source_id = Uuid::now_v7();
    let event = SourceConnected {
        source_id,
        user_id: request.user_id,
        kind: request.kind,
    };
    let unavailable = |e: herald::PublishError| (StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let ack = herald
        .publish(&event)
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Connected {
            source_id,
            event_id: ack.event_id,
        }),
    ))
}

/// The slow part: backfill the user's data from the source. GitHub answers "busy" on the
/// first attempt (a retry); Postgres rejects the credentials (a terminal error).
pub fn backfill_function(processed: Arc<AtomicU32>, retries: Arc<AtomicU32>) -> Function {
    Function::new("backfill-user-data")
        .on::<SourceConnected>()
        .attempts(3)
        .backoff(Backoff {
            initial: Duration::from_millis(300),
            ..Backoff::default()
        })
        .handler(move |event: SourceConnected, ctx: Ctx| {
            let (processed, retries) = (Arc::clone(&processed), Arc::clone(&retries));
            async move {
                let source = short(event.source_id);
                match event.kind {
                    SourceKind::Github if ctx.attempt() == 1 => {
                        retries.fetch_add(1, Ordering::SeqCst);
                        println!("worker    attempt 1 for github source {source}: GitHub says 429, retrying");
                        Err(HandlerError::retry("GitHub API rate limit (429)"))
                    }
                    SourceKind::Postgres => Err(HandlerError::terminal(
                        "postgres rejected the credentials; the user must reconnect the source",
                    )),
                    kind => {
                        tokio::time::sleep(Duration::from_millis(100)).await; // the slow part
                        processed.fetch_add(1, Ordering::SeqCst);
                        println!(
                            "worker    attempt {} for {} source {source}: backfilled for user {}",
                            ctx.attempt(),
                            serde_json::to_value(kind).unwrap_or_default().as_str().unwrap_or("?"),
                            short(event.user_id)
                        );
                        Ok(())
                    }
                }
            }
        })
}

fn short(id: Uuid) -> String {
    id.simple().to_string()[24..].to_owned()
}

/// What the scenario did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Requests answered with 202.
    pub answered: u32,
    /// Events the function processed successfully.
    pub processed: u32,
    /// Failed attempts that were retried.
    pub retries: u32,
    /// Events dead-lettered.
    pub dead_letters: u32,
}

/// Plays the scenario against the NATS server at `url` in namespace `namespace`.
pub async fn run(url: &str, namespace: &str) -> anyhow::Result<Summary> {
    let herald = Client::builder()
        .namespace(namespace)
        .source("urn:herald:service:quickstart")
        .connect(url)
        .await?;
    herald.provision().await?;

    // The worker, as its own process would run it.
    let (processed, retries) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let worker = Worker::builder(herald.clone())
        .function(backfill_function(
            Arc::clone(&processed),
            Arc::clone(&retries),
        ))
        .start()
        .await?;
    let mut dead_letters = herald
        .nats()
        .subscribe(herald.namespace().dlq_subject("backfill-user-data"))
        .await?;
    let dlq_before = herald
        .jetstream()
        .get_stream(herald.namespace().dlq_stream())
        .await?
        .info()
        .await?
        .state
        .last_sequence;

    // The API.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let api = axum::serve(listener, router(herald.clone()));
    let server = tokio::spawn(async move { api.await });
    println!("HTTP      http://{address}/api/connectSource");

    let mut answered = 0;
    for kind in [
        SourceKind::GoogleDrive,
        SourceKind::Github,
        SourceKind::Postgres,
    ] {
        let body = serde_json::to_string(&ConnectSource {
            user_id: Uuid::now_v7(),
            kind,
        })?;
        let started = Instant::now();
        let (status, reply) = post_json(address, "/api/connectSource", &body).await?;
        let connected: Connected =
            serde_json::from_str(&reply).with_context(|| format!("unexpected reply {reply}"))?;
        println!(
            "request   POST /api/connectSource {:<13} -> {status} in {:.1} ms, source {}",
            serde_json::to_value(kind)?.as_str().unwrap_or("?"),
            started.elapsed().as_secs_f64() * 1000.0,
            short(connected.source_id),
        );
        if status == 202 {
            answered += 1;
        }
    }

    // Wait for the outcomes: two sources backfilled, one dead letter.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let letter = tokio::time::timeout_at(deadline, dead_letters.next())
        .await
        .context("no dead letter within 30 s")?
        .context("dead-letter subscription closed")?;
    use herald::protocol::header as dlq;
    let header = |name: &str| {
        letter
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    println!(
        "dead      {} after {} attempt(s): {}: {}",
        header(dlq::DLQ_FUNCTION),
        header(dlq::DLQ_ATTEMPTS),
        header(dlq::DLQ_REASON),
        header(dlq::DLQ_ERROR)
    );
    while processed.load(Ordering::SeqCst) < 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the worker did not finish in 30 s"
        );
        // Polling two counters the handlers bump; the interval only spaces the checks.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    server.abort();
    // Dead letters stored during this run (the server may be shared with earlier runs).
    let dead_letter_count = herald
        .jetstream()
        .get_stream(herald.namespace().dlq_stream())
        .await?
        .info()
        .await?
        .state
        .last_sequence
        - dlq_before;
    Ok(Summary {
        answered,
        processed: processed.load(Ordering::SeqCst),
        retries: retries.load(Ordering::SeqCst),
        dead_letters: u32::try_from(dead_letter_count)?,
    })
}

/// A minimal HTTP/1.1 client, enough for the demo: POST a JSON body, read the answer.
async fn post_json(
    address: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status in the answer")?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}
