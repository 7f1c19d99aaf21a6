//! Flow control: `cargo run -p flow`.
//!
//! One worker, five functions, then the process exits:
//! - `sync-stars`: throttled to 2 starts a second per owner with a burst of 1: six events
//!   published at once start at 0, 0, 0.5, 1, 1.5 and 2 s, none dropped, in order;
//! - `new-device-email`: rate-limited to one per user every 10 minutes: of three logins one
//!   runs, two are recorded `skipped`;
//! - `reindex`: a singleton per tenant: a second request while the first runs is skipped;
//! - `report`: one report at a time, with a priority: four free reports wait behind the
//!   first, then a paid one (factor 120 s) arrives and starts before them;
//! - `store-views`: batched by 3 per site or every 2 s: seven views run as 3, 3 and, 2 s
//!   after it opened, 1.
//!
//! Starts a local nats-server (2.12+) unless `NATS_URL` points at yours.

use std::time::{Duration, Instant};

use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, RunStatus, RunStore, SingletonMode, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "repo.starred")]
struct Starred {
    owner: String,
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.login")]
struct Login {
    user_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "index.requested")]
struct IndexRequested {
    tenant: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "page.viewed")]
struct PageViewed {
    site: String,
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "report.requested")]
struct ReportRequested {
    name: String,
    paid: bool,
}

fn functions(said: &UnboundedSender<String>, began: Instant) -> Vec<Function> {
    let (a, b, c, d, e) = (
        said.clone(),
        said.clone(),
        said.clone(),
        said.clone(),
        said.clone(),
    );
    vec![
        Function::new("sync-stars")
            .on::<Starred>()
            .throttle(2, Duration::from_secs(1))
            .burst(1)
            .key(|s: &Starred| s.owner.clone())
            .handler(move |s: Starred, _: Ctx| {
                let said = a.clone();
                async move {
                    let at = began.elapsed().as_secs_f64();
                    let _ = said.send(format!(
                        "throttle   {}'s star {} starts at {at:.1} s",
                        s.owner, s.n
                    ));
                    Ok::<(), HandlerError>(())
                }
            }),
        Function::new("new-device-email")
            .on::<Login>()
            .rate_limit(1, Duration::from_secs(600))
            .key(|l: &Login| l.user_id.clone())
            .handler(move |l: Login, _: Ctx| {
                let said = b.clone();
                async move {
                    let _ = said.send(format!("rate limit e-mail to {}", l.user_id));
                    Ok::<(), HandlerError>(())
                }
            }),
        Function::new("reindex")
            .on::<IndexRequested>()
            .singleton(SingletonMode::Skip)
            .key(|r: &IndexRequested| r.tenant.clone())
            .handler(move |r: IndexRequested, _: Ctx| {
                let said = c.clone();
                async move {
                    let _ = said.send(format!("singleton  reindexing {}", r.tenant));
                    tokio::time::sleep(Duration::from_secs(1)).await; // the reindex's work
                    Ok::<(), HandlerError>(())
                }
            }),
        Function::new("report")
            .on::<ReportRequested>()
            .concurrency_limit(1)
            .priority(|r: &ReportRequested| if r.paid { 120 } else { 0 })
            .handler(move |r: ReportRequested, _: Ctx| {
                let said = d.clone();
                async move {
                    let _ = said.send(format!("priority   report {} starts", r.name));
                    tokio::time::sleep(Duration::from_millis(500)).await; // the report's work
                    Ok::<(), HandlerError>(())
                }
            }),
        Function::new("store-views")
            .on::<PageViewed>()
            .batch(3, Duration::from_secs(2))
            .key(|v: &PageViewed| v.site.clone())
            .handler(move |views: Vec<PageViewed>, _: Ctx| {
                let said = e.clone();
                async move {
                    let at = began.elapsed().as_secs_f64();
                    let numbers: Vec<u32> = views.iter().map(|v| v.n).collect();
                    let _ = said.send(format!(
                        "batch      {} views of {} at {at:.1} s: {numbers:?}",
                        views.len(),
                        views.first().map_or("", |v| v.site.as_str()),
                    ));
                    Ok::<(), HandlerError>(())
                }
            }),
    ]
}

async fn send<E: Event>(client: &Client, event: &E, id: &str) -> anyhow::Result<()> {
    let options = PublishOptions {
        id: Some(id.to_owned()),
        ..Default::default()
    };
    client.publish_with(event, options).await?.await?;
    Ok(())
}

/// A run's final status, once recorded.
async fn status(store: &RunStore, function: &str, id: &str) -> anyhow::Result<String> {
    for _ in 0..100 {
        if let Some(outcome) = store.inspect(function, id).await?.outcome
            && outcome.status.is_final()
        {
            let detail = outcome.detail.unwrap_or_default();
            return Ok(match outcome.status {
                RunStatus::Skipped => format!("skipped ({detail})"),
                status => status.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling the run's record
    }
    anyhow::bail!("{function} {id} has no outcome")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = herald_local_nats::NatsServer::from_env_or_start()?;
    println!("NATS       {}", server.url());
    let client = Client::builder()
        .namespace("flow-demo")
        .connect(&server.url())
        .await?;
    client.provision().await?;
    anyhow::ensure!(
        client.supports_schedules(),
        "throttle, rate limit, singleton and concurrency limits need nats-server 2.12 or newer"
    );
    let began = Instant::now();
    let (said, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let mut worker = Worker::builder(client.clone());
    for function in functions(&said, began) {
        worker = worker.function(function);
    }
    let worker = worker.start().await?;
    let run = began.elapsed().as_nanos();

    for n in 1..=6 {
        let star = Starred {
            owner: "octocat".into(),
            n,
        };
        send(&client, &star, &format!("star-{run}-{n}")).await?;
    }
    for n in 1..=3 {
        let login = Login {
            user_id: "ada".into(),
        };
        send(&client, &login, &format!("login-{run}-{n}")).await?;
    }
    for n in 1..=2 {
        let request = IndexRequested {
            tenant: "acme".into(),
        };
        send(&client, &request, &format!("index-{run}-{n}")).await?;
    }

    // The free reports first (the first takes the slot, the others park), then a paid one.
    for n in 1..=4 {
        let report = ReportRequested {
            name: format!("free-{n}"),
            paid: false,
        };
        send(&client, &report, &format!("report-{run}-{n}")).await?;
    }
    let paid = ReportRequested {
        name: "paid".into(),
        paid: true,
    };
    send(&client, &paid, &format!("report-{run}-paid")).await?;

    for n in 1..=7 {
        let view = PageViewed {
            site: "acme".into(),
            n,
        };
        send(&client, &view, &format!("view-{run}-{n}")).await?;
    }

    // Six throttled starts, one e-mail, one reindex, five reports, three batches.
    for _ in 0..16 {
        let line = tokio::time::timeout(Duration::from_secs(30), heard.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the worker stopped"))?;
        println!("{line}");
    }
    let store = RunStore::open(&client).await?;
    for n in 1..=3 {
        let id = format!("login-{run}-{n}");
        println!(
            "rate limit login {n}: {}",
            status(&store, "new-device-email", &id).await?
        );
    }
    for n in 1..=2 {
        let id = format!("index-{run}-{n}");
        println!(
            "singleton  request {n}: {}",
            status(&store, "reindex", &id).await?
        );
    }
    let id = format!("view-{run}-7");
    println!(
        "batch      view 7: {}",
        status(&store, "store-views", &id).await?
    );
    worker.shutdown().await;
    Ok(())
}
