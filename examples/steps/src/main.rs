//! Durable steps: `cargo run -p steps`.
//!
//! A signup flow in one function: create the account, send a welcome e-mail (the mail
//! provider fails twice, so that step is retried on its own), wait for the trial to end (a
//! durable sleep of a few seconds that holds no worker), then publish a follow-up event.
//! Each attempt prints which steps ran and which were replayed from the store. Starts a
//! local nats-server (2.12+ for the sleep) unless `NATS_URL` points at yours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use example_events::UserSignup;
use herald::{Client, Event};
use herald_worker::{Backoff, Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};

/// Published when a trial ends.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "trial.ended")]
struct TrialEnded {
    user_id: uuid::Uuid,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = herald_local_nats::NatsServer::from_env_or_start()?;
    println!("NATS       {}", server.url());
    let client = Client::builder()
        .namespace("steps-demo")
        .connect(&server.url())
        .await?;
    client.provision().await?;
    anyhow::ensure!(
        client.supports_schedules(),
        "durable sleeps need nats-server 2.12 or newer"
    );

    let started = Instant::now();
    let mails = Arc::new(AtomicU32::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let function = Function::new("signup-flow")
        .on::<UserSignup>()
        .backoff(Backoff::fixed(Duration::from_millis(300)))
        .handler(move |signup: UserSignup, ctx: Ctx| {
            let (mails, done_tx) = (Arc::clone(&mails), done_tx.clone());
            async move {
                let at = started.elapsed().as_secs_f32();
                println!(
                    "attempt    {} at {at:.1}s (delivery {})",
                    ctx.event_id(),
                    ctx.attempt()
                );
                let account: String = ctx
                    .step("create account", || async {
                        println!("  step     create account: ran");
                        Ok::<_, HandlerError>(format!(
                            "acct_{}",
                            &signup.user_id.simple().to_string()[..8]
                        ))
                    })
                    .await?;
                ctx.step("send welcome mail", || async {
                    let n = mails.fetch_add(1, Ordering::SeqCst) + 1;
                    if n < 3 {
                        println!(
                            "  step     send welcome mail: the mail provider said 503 (try {n})"
                        );
                        return Err(HandlerError::retry("mail provider unavailable (503)"));
                    }
                    println!(
                        "  step     send welcome mail: sent to {} (try {n})",
                        signup.email
                    );
                    Ok(())
                })
                .await?;
                println!("  step     wait for trial end: sleeping 3 s (or woken)");
                ctx.sleep("wait for trial end", Duration::from_secs(3))
                    .await?;
                let seq = ctx
                    .send_event(
                        "trial ended",
                        &TrialEnded {
                            user_id: signup.user_id,
                        },
                    )
                    .await?;
                println!("  step     trial ended: published trial.ended #{seq} for {account}");
                done_tx.send(()).ok();
                Ok(())
            }
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await?;
    client
        .publish(&UserSignup {
            user_id: uuid::Uuid::now_v7(),
            email: "ada@example.com".into(),
            plan: Some("trial".into()),
        })
        .await?
        .await?;
    tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await?;
    println!(
        "done       in {:.1}s; steps that succeeded never ran twice",
        started.elapsed().as_secs_f32()
    );
    worker.shutdown().await;
    Ok(())
}
