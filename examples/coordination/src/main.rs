//! Time and coordination: `cargo run -p coordination`.
//!
//! One worker, five functions, each showing one feature, then the process exits:
//! - `heartbeat`: a cron trigger every 2 s in `Europe/Paris`, fired by the server;
//! - `reindex`: debounced per user: five profile updates 200 ms apart give one run, with
//!   the last update;
//! - `checkout`: waits for the order's payment (published 1 ms after the order: not missed),
//!   then invokes `compute-receipt` and prints its typed output;
//! - `onboarding`: sleeps a day, but is cancelled by `account.deleted` for its user.
//!
//! Starts a local nats-server (2.12+; 2.14+ for time zones) unless `NATS_URL` points at yours.

use std::time::Duration;

use herald::{Client, Event};
use herald_worker::{Ctx, Function, HandlerError, Match, RunStatus, RunStore, Tick, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "profile.updated")]
struct ProfileUpdated {
    user_id: String,
    version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "order.placed")]
struct OrderPlaced {
    order_id: String,
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "payment.received")]
struct PaymentReceived {
    order_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "receipt.requested")]
struct ReceiptRequested {
    order_id: String,
    cents: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Receipt {
    number: String,
    total: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.signed_up")]
struct SignedUp {
    user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "account.deleted")]
struct AccountDeleted {
    user_id: String,
}

fn functions(said: &UnboundedSender<String>) -> Vec<Function> {
    let (a, b, c) = (said.clone(), said.clone(), said.clone());
    vec![
        Function::new("heartbeat")
            .cron("*/2 * * * * *")
            .time_zone("Europe/Paris")
            .handler(move |tick: Tick, _: Ctx| {
                let said = a.clone();
                async move {
                    let _ = said.send(format!("cron       tick due {}", tick.scheduled_at));
                    Ok::<(), HandlerError>(())
                }
            }),
        Function::new("reindex")
            .on::<ProfileUpdated>()
            .debounce(
                |p: &ProfileUpdated| p.user_id.clone(),
                Duration::from_secs(1),
            )
            .debounce_timeout(Duration::from_secs(10))
            .handler(move |p: ProfileUpdated, _: Ctx| {
                let said = b.clone();
                async move {
                    let _ = said.send(format!(
                        "debounce   one run for {}'s burst, with version {}",
                        p.user_id, p.version
                    ));
                    Ok::<(), HandlerError>(())
                }
            }),
        Function::new("checkout").on::<OrderPlaced>().handler(
            move |order: OrderPlaced, ctx: Ctx| {
                let said = c.clone();
                async move {
                    let paid = ctx
                        .wait_for_event::<PaymentReceived>(
                            "payment",
                            Match::field("/order_id", &order.order_id),
                            Duration::from_secs(60),
                        )
                        .await?;
                    let Some(_) = paid else {
                        let _ = said.send(format!("wait       {} was never paid", order.order_id));
                        return Ok(());
                    };
                    let receipt: Receipt = ctx
                        .invoke(
                            "receipt",
                            "compute-receipt",
                            &ReceiptRequested {
                                order_id: order.order_id.clone(),
                                cents: order.cents,
                            },
                            Duration::from_secs(30),
                        )
                        .await?;
                    let _ = said.send(format!(
                        "wait       {} paid; invoke returned receipt {} for {}",
                        order.order_id, receipt.number, receipt.total
                    ));
                    Ok(())
                }
            },
        ),
        Function::new("compute-receipt")
            .on::<ReceiptRequested>()
            .returning(|request: ReceiptRequested, _: Ctx| async move {
                Ok::<Receipt, HandlerError>(Receipt {
                    number: format!("R-{}", request.order_id),
                    total: format!("{}.{:02} EUR", request.cents / 100, request.cents % 100),
                })
            }),
        Function::new("onboarding")
            .on::<SignedUp>()
            .cancel_on::<AccountDeleted, _>("/user_id", |s: &SignedUp| s.user_id.clone())
            .handler(|_: SignedUp, ctx: Ctx| async move {
                ctx.sleep("a day before the tips e-mail", Duration::from_secs(86_400))
                    .await?;
                Ok::<(), HandlerError>(())
            }),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = herald_local_nats::NatsServer::from_env_or_start()?;
    println!("NATS       {}", server.url());
    let client = Client::builder()
        .namespace("coordination-demo")
        .connect(&server.url())
        .await?;
    client.provision().await?;
    anyhow::ensure!(
        client.supports_schedules(),
        "cron, debounce and waits need nats-server 2.12 or newer"
    );
    let (said, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let mut worker = Worker::builder(client.clone());
    for function in functions(&said) {
        worker = worker.function(function);
    }
    let worker = worker.start().await?;

    for version in 1..=5 {
        client
            .publish(&ProfileUpdated {
                user_id: "ada".into(),
                version,
            })
            .await?
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await; // a burst of edits
    }
    client
        .publish(&OrderPlaced {
            order_id: "o-17".into(),
            cents: 4_250,
        })
        .await?
        .await?;
    tokio::time::sleep(Duration::from_millis(1)).await;
    client
        .publish(&PaymentReceived {
            order_id: "o-17".into(),
        })
        .await?
        .await?;
    let signup = client
        .publish(&SignedUp {
            user_id: "bob".into(),
        })
        .await?
        .await?;
    client
        .publish(&AccountDeleted {
            user_id: "bob".into(),
        })
        .await?
        .await?;

    // Two ticks, the debounced run and the checkout; then the cancelled onboarding.
    let (mut ticks, mut others) = (0, 0);
    while ticks < 2 || others < 2 {
        let line = tokio::time::timeout(Duration::from_secs(30), heard.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the worker stopped"))?;
        if line.starts_with("cron") {
            ticks += 1;
        } else {
            others += 1;
        }
        println!("{line}");
    }
    let store = RunStore::open(&client).await?;
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await?;
    let event = stream.get_raw_message(signup.sequence).await?;
    let id = event
        .headers
        .get("ce-id")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    for _ in 0..100 {
        let outcome = store.inspect("onboarding", &id).await?.outcome;
        if let Some(outcome) = outcome.filter(|o| o.status == RunStatus::Cancelled) {
            println!(
                "cancel_on  onboarding of bob: {} ({})",
                outcome.status,
                outcome.detail.unwrap_or_default()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the run's record
    }
    worker.shutdown().await;
    Ok(())
}
