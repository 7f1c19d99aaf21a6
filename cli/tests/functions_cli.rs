//! `herald functions` shows each function's flow control as NATS holds it: the concurrency
//! limits in use, the runs parked per key and the runs skipped by a rate limit, with
//! `--json` too. Against a real nats-server and a worker whose runs park.
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
    let nats = LocalNats::start().unwrap();
    let url = nats.url().to_owned();
    let client = Client::connect(&url).await.unwrap();
    client.provision().await.unwrap();
    // `export`: one run at a time per tenant; each run holds its slot until released.
    let release = Arc::new(Semaphore::new(0));
    let held = Arc::clone(&release);
    let export = Function::new("export")
        .on::<Export>()
        .concurrency_limit(1)
        .key(|e: &Export| e.tenant.clone())
        .handler(move |_e: Export, _ctx: Ctx| {
            let held = Arc::clone(&held);
            async move {
                let _permit = held.acquire().await;
                Ok::<_, HandlerError>(())
            }
        });
    // `ping`: one run per hour; the others are skipped.
    let ping = Function::new("ping")
        .on::<Ping>()
        .rate_limit(1, Duration::from_secs(3600))
        .handler(|_p: Ping, _ctx: Ctx| async { Ok::<_, HandlerError>(()) });
    let worker = Worker::builder(client.clone())
        .function(export)
        .function(ping)
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

    // One run per tenant holds its slot; the other three park; two pings are skipped.
    eventually(Duration::from_secs(30), "3 parked, 2 skipped", || async {
        let rows = functions_json(&url);
        flow_of(&rows, "export")["parked"] == 3
            && flow_of(&rows, "ping")["skipped"]["rate_limited"] == 2
    })
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
    assert_eq!(
        export["concurrency"],
        json!([{"scope": "export", "shared_name": null, "slots_held": 2, "keys_active": 2,
            "limit_at_least": 1}])
    );
    assert_eq!(export["skipped"], json!({}));
    let ping = flow_of(&rows, "ping");
    assert_eq!(ping["rate_limit_keys"], 1);
    assert_eq!(ping["rate_limited_runs"], 3, "every ping has its decision");
    assert_eq!(ping["skipped"], json!({"rate_limited": 2}));
    assert_eq!(ping["parked"], 0);

    let table = herald(&url, &["functions"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = text(&table);
    let export_line = table.lines().find(|l| l.starts_with("export")).unwrap();
    assert!(export_line.contains("concurrency(>=1)"), "{table}");
    assert!(export_line.contains("3 (acme=2 zeta=1)"), "{table}");
    let ping_line = table.lines().find(|l| l.starts_with("ping")).unwrap();
    assert!(ping_line.contains("rate-limit"), "{table}");
    assert!(ping_line.contains("rate_limited=2"), "{table}");
    assert!(table.contains("not stored in NATS"), "{table}");

    release.add_permits(10);
    worker.shutdown().await;
}
