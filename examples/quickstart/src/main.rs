//! Herald's quickstart: typed events published to NATS JetStream and stored.
//!
//! Run it with `cargo run -p quickstart`. It starts a local nats-server (installing it on
//! first use) unless `NATS_URL` points at yours, provisions the `quickstart` namespace,
//! publishes typed events, shows how they are stored (subject, sequence, CloudEvents
//! headers), and shows the two guards on the way in: an event that breaks its schema is
//! refused with the JSON path, and an event published twice with the same id is stored once.
//!
//! The worker half of the quickstart (functions that pick these events up) comes with the
//! worker runtime.

use std::time::Instant;

use example_events::{SourceConnected, SourceKind, UserSignup};
use herald::{Client, PublishError, PublishOptions};
use herald_local_nats::NatsServer;
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = NatsServer::from_env_or_start()?;
    let origin = if server.is_local() {
        "local nats-server started for this demo"
    } else {
        "NATS_URL"
    };
    println!("NATS      {} ({origin})", server.url());

    let client = Client::builder()
        .namespace("quickstart")
        .source("urn:herald:service:quickstart")
        .connect(&server.url())
        .await?;
    let report = client.provision().await?;
    let created = report
        .resources
        .iter()
        .filter(|r| r.outcome == herald::ProvisionOutcome::Created)
        .count();
    println!(
        "provision {} streams and buckets ready ({created} created)",
        report.resources.len()
    );

    // The critical path of `POST /api/connectSource`: do the fast part, publish, answer.
    let user_id = Uuid::now_v7();
    let started = Instant::now();
    let ack = client
        .publish(&SourceConnected {
            source_id: Uuid::now_v7(),
            user_id,
            kind: SourceKind::Github,
        })
        .await?
        .await?;
    println!(
        "publish   source.connected -> {} #{} in {:.1} ms (id {})",
        ack.stream,
        ack.sequence,
        started.elapsed().as_secs_f64() * 1000.0,
        ack.event_id
    );

    // Many in flight at once: send all, then collect the acks.
    let started = Instant::now();
    let mut pending = Vec::new();
    for n in 0..1000 {
        let signup = UserSignup {
            user_id: Uuid::now_v7(),
            email: format!("user{n}@example.com"),
            plan: None,
        };
        pending.push(client.publish(&signup).await?);
    }
    let mut last = 0;
    for ack in pending {
        last = ack.await?.sequence;
    }
    println!(
        "publish   1000 x user.signup pipelined in {:.1} ms, last at #{last}",
        started.elapsed().as_secs_f64() * 1000.0
    );

    // The first event as stored: subject, headers (CloudEvents binary mode) and body.
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await?;
    let stored = stream.get_raw_message(ack.sequence).await?;
    println!("stored    #{} on {}", stored.sequence, stored.subject);
    let mut headers: Vec<_> = stored
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v[0].to_string()))
        .collect();
    headers.sort();
    for (name, value) in headers {
        println!("          {name}: {value}");
    }
    println!(
        "          body: {}",
        String::from_utf8_lossy(&stored.payload)
    );

    // Guard 1: a payload that breaks its schema never enters the log.
    let bad = UserSignup {
        user_id,
        email: "not-an-email".into(),
        plan: None,
    };
    match client.publish(&bad).await {
        Err(PublishError::InvalidPayload { violations, .. }) => {
            for violation in violations {
                println!("refused   user.signup: {violation}");
            }
        }
        other => anyhow::bail!("expected the invalid event to be refused, got {other:?}"),
    }

    // Guard 2: the same id twice (a retried request) is stored once.
    let options = || PublishOptions {
        id: Some(format!("signup-{user_id}")),
        ..Default::default()
    };
    let signup = UserSignup {
        user_id,
        email: "ada@example.com".into(),
        plan: Some("pro".into()),
    };
    let first = client.publish_with(&signup, options()).await?.await?;
    let again = client.publish_with(&signup, options()).await?.await?;
    println!(
        "dedup     id {} -> #{} then #{} (duplicate: {})",
        first.event_id, first.sequence, again.sequence, again.duplicate
    );

    let info = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await?
        .info()
        .await?
        .clone();
    println!(
        "stream    {} holds {} events",
        info.config.name, info.state.messages
    );
    Ok(())
}
