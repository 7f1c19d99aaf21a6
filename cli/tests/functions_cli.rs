//! `herald functions` shows each function's flow control as NATS holds it: the concurrency
//! limits in use (own and shared), the runs parked per key, throttle and singleton state,
//! and the runs skipped by a rate limit or a singleton, with `--json` too. Against a real nats-server and a worker whose runs park.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use herald::{Client, Event, PublishOptions};
use herald_local_nats::LocalNats;
use herald_worker::{Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use common::{eventually, herald, text};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.export")]
struct Export {
    tenant: String,
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.ping")]
struct Ping {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.solo")]
struct Solo {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.slow")]
struct Slow {
    n: u32,
}

async fn publish<E: Event + Serialize>(client: &Client, id: String, event: &E) {
    let options = PublishOptions {
        id: Some(id),
        ..Default::default()
    };
    client
        .publish_with(event, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

fn functions_json(url: &str) -> serde_json::Value {
    let output = herald(url, &["functions", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn flow_of<'a>(rows: &'a serde_json::Value, function: &str) -> &'a serde_json::Value {
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == function)
        .unwrap();
    &row["flow"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_show_limits_in_use_parked_runs_per_key_and_skipped_runs() {
    use herald_worker::SingletonMode;
    let nats = LocalNats::start().unwrap();
    let url = nats.url().to_owned();
    let client = Client::connect(&url).await.unwrap();
    client.provision().await.unwrap();
    // Runs of `export` and `solo` hold their slot or lock until released.
    let release = Arc::new(Semaphore::new(0));
    let held = Arc::clone(&release);
    // `export`: one run at a time per tenant, and ten in all shared as "warehouse".
    let export = Function::new("export")
        .on::<Export>()
        .concurrency_limit(1)
        .key(|e: &Export| e.tenant.clone())
        .shared_concurrency_limit("warehouse", 10)
        .handler(move |_e: Export, _ctx: Ctx| {
            let held = Arc::clone(&held);
            async move {
                let _permit = held.acquire().await;
                Ok::<_, HandlerError>(())
            }
        });
    // `solo`: one run at a time; a second one is skipped.
    let held = Arc::clone(&release);
    let solo = Function::new("solo")
        .on::<Solo>()
        .singleton(SingletonMode::Skip)
        .handler(move |_e: Solo, _ctx: Ctx| {
            let held = Arc::clone(&held);
            async move {
                let _permit = held.acquire().await;
                Ok::<_, HandlerError>(())
            }
        });
    // `slow`: one start an hour; the second waits its turn, parked.
    let slow = Function::new("slow")
        .on::<Slow>()
        .throttle(1, Duration::from_secs(3600))
        .handler(|_e: Slow, _ctx: Ctx| async { Ok::<_, HandlerError>(()) });
    // `ping`: one run per hour; the others are skipped.
    let ping = Function::new("ping")
        .on::<Ping>()
        .rate_limit(1, Duration::from_secs(3600))
        .handler(|_p: Ping, _ctx: Ctx| async { Ok::<_, HandlerError>(()) });
    let worker = Worker::builder(client.clone())
        .function(export)
        .function(ping)
        .function(solo)
        .function(slow)
        .start()
        .await
        .unwrap();
    for (tenant, runs) in [("acme", 3), ("zeta", 2)] {
        for n in 0..runs {
            let event = Export {
                tenant: tenant.to_owned(),
                n,
            };
            publish(&client, format!("{tenant}-{n}"), &event).await;
        }
    }
    for n in 0..3 {
        publish(&client, format!("ping-{n}"), &Ping { n }).await;
    }
    for n in 0..2 {
        publish(&client, format!("solo-{n}"), &Solo { n }).await;
        publish(&client, format!("slow-{n}"), &Slow { n }).await;
    }

    // One run per tenant holds its slot; the other three park; two pings are skipped.
    eventually(
        Duration::from_secs(30),
        "parked and skipped runs",
        || async {
            let rows = functions_json(&url);
            flow_of(&rows, "export")["parked"] == 3
                && flow_of(&rows, "ping")["skipped"]["rate_limited"] == 2
                && flow_of(&rows, "solo")["skipped"]["singleton"] == 1
                && flow_of(&rows, "slow")["throttled_runs"] == 2
        },
    )
    .await;
    let rows = functions_json(&url);
    let export = flow_of(&rows, "export");
    assert_eq!(
        export["parked_top_keys"],
        json!([
            {"scope": "export", "key": "acme", "runs": 2},
            {"scope": "export", "key": "zeta", "runs": 1},
        ])
    );
    let limit = |scope: &str| {
        export["concurrency"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["scope"] == scope)
            .unwrap_or_else(|| panic!("no limit {scope} in {export}"))
            .clone()
    };
    assert_eq!(
        limit("export"),
        json!({"scope": "export", "shared_name": null, "slots_held": 2, "keys_active": 2,
            "limit_at_least": 1})
    );
    let shared = limit("_shared-warehouse");
    assert_eq!(shared["shared_name"], "warehouse");
    assert_eq!(
        (&shared["slots_held"], &shared["keys_active"]),
        (&json!(2), &json!(1))
    );
    assert!(shared["limit_at_least"].as_u64().unwrap() >= 2, "{shared}");
    assert_eq!(export["skipped"], json!({}));
    let ping = flow_of(&rows, "ping");
    assert_eq!(ping["rate_limit_keys"], 1);
    assert_eq!(ping["rate_limited_runs"], 3, "every ping has its decision");
    assert_eq!(ping["skipped"], json!({"rate_limited": 2}));
    assert_eq!(ping["parked"], 0);
    let solo = flow_of(&rows, "solo");
    assert_eq!(solo["singleton_keys_held"], 1);
    assert_eq!(solo["skipped"], json!({"singleton": 1}));
    let slow = flow_of(&rows, "slow");
    assert_eq!(slow["throttle_keys"], 1);
    assert_eq!(slow["skipped"], json!({}));

    let table = herald(&url, &["functions"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = text(&table);
    let export_line = table.lines().find(|l| l.starts_with("export")).unwrap();
    assert!(export_line.contains("concurrency(>=1)"), "{table}");
    assert!(export_line.contains("shared:warehouse(>="), "{table}");
    assert!(export_line.contains("3 (acme=2 zeta=1)"), "{table}");
    let ping_line = table.lines().find(|l| l.starts_with("ping")).unwrap();
    assert!(ping_line.contains("rate-limit"), "{table}");
    assert!(ping_line.contains("rate_limited=2"), "{table}");
    let solo_line = table.lines().find(|l| l.starts_with("solo")).unwrap();
    assert!(solo_line.contains("  singleton  "), "{table}");
    assert!(solo_line.ends_with("singleton=1"), "{table}");
    let slow_line = table.lines().find(|l| l.starts_with("slow")).unwrap();
    assert!(slow_line.contains("throttle"), "{table}");
    assert!(table.contains("not stored in NATS"), "{table}");

    release.add_permits(10);
    worker.shutdown().await;
}
