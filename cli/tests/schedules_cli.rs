//! `herald schedules` and `herald functions pause|resume` run as a binary.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use herald::Client;
use herald_worker::{Ctx, Function, HandlerError, Tick, Worker};

use common::{herald, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_list_delete_and_functions_pause_and_resume() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let client = Client::connect(&url).await.unwrap();
    client.provision().await.unwrap();
    let function = Function::new("weekly-report")
        .cron("0 12 * * 5")
        .time_zone("Europe/Paris")
        .handler(|_: Tick, _: Ctx| async { Ok::<(), HandlerError>(()) });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();

    let listed = herald(&url, &["schedules", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let row = &rows[0];
    assert_eq!(row["function"], "weekly-report");
    assert_eq!(row["schedule"], "0 12 * * 5");
    assert_eq!(row["time_zone"], "Europe/Paris");
    let next = row["next"].as_str().unwrap();
    assert!(next.contains("T12:00:00+0"), "noon in Paris: {next}");
    let table = herald(&url, &["schedules"]);
    assert!(text(&table).contains("Europe/Paris"), "{}", text(&table));

    let functions = herald(&url, &["functions", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&functions.stdout).unwrap();
    assert_eq!(rows[0]["next_tick"].as_str(), Some(next));
    assert_eq!(rows[0]["paused"], false);

    let paused = herald(
        &url,
        &["functions", "pause", "weekly-report", "--for", "1h"],
    );
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(
        text(&paused).contains("paused until 20"),
        "{}",
        text(&paused)
    );
    let functions = herald(&url, &["functions", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&functions.stdout).unwrap();
    assert_eq!(rows[0]["paused"], true);
    let resumed = herald(&url, &["functions", "resume", "weekly-report"]);
    assert!(
        text(&resumed).contains("weekly-report: running"),
        "{}",
        text(&resumed)
    );
    let unknown = herald(&url, &["functions", "pause", "nope"]);
    assert_eq!(unknown.status.code(), Some(3), "not found");
    assert!(
        text(&unknown).contains("does not exist"),
        "{}",
        text(&unknown)
    );

    let id = rows[0]["crons"][0].clone();
    assert_eq!(id["schedule"], "0 12 * * 5");
    let cron_id = herald_worker::CronTrigger::new("0 12 * * 5", Some("Europe/Paris"))
        .unwrap()
        .id();
    let deleted = herald(&url, &["schedules", "delete", "weekly-report", &cron_id]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let again = herald(&url, &["schedules", "delete", "weekly-report", &cron_id]);
    assert_eq!(again.status.code(), Some(3), "not found");
    assert!(
        text(&again).contains("has no cron schedule"),
        "{}",
        text(&again)
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_cancel_one_and_in_bulk_with_a_dry_run() {
    #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    #[event(type = "test.nap")]
    struct Nap {
        n: u32,
    }
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let client = Client::connect(&url).await.unwrap();
    client.provision().await.unwrap();
    let function = Function::new("napper")
        .on::<Nap>()
        .handler(|_: Nap, ctx: Ctx| async move {
            ctx.sleep("nap", std::time::Duration::from_secs(3600))
                .await?;
            Ok::<(), HandlerError>(())
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let since = herald::headers::format_time(
        std::time::SystemTime::now() - std::time::Duration::from_secs(5),
    );
    let mut ids = Vec::new();
    for n in 0..3 {
        let options = herald::PublishOptions {
            id: Some(format!("nap-{n}")),
            ..Default::default()
        };
        client
            .publish_with(&Nap { n }, options)
            .await
            .unwrap()
            .await
            .unwrap();
        ids.push(format!("nap-{n}"));
    }
    let store = herald_worker::RunStore::open(&client).await.unwrap();
    common::eventually(
        std::time::Duration::from_secs(30),
        "all three sleep",
        || async {
            let mut sleeping = 0;
            for id in &ids {
                let report = store.inspect("napper", id).await.unwrap();
                sleeping += usize::from(!report.steps.is_empty());
            }
            sleeping == 3
        },
    )
    .await;
    let one = herald(
        &url,
        &[
            "runs",
            "cancel",
            "napper",
            "nap-0",
            "--reason",
            "not needed",
        ],
    );
    assert!(
        text(&one).contains("cancelled; the run was waiting and ends now"),
        "{}",
        text(&one)
    );
    let dry = herald(
        &url,
        &["runs", "cancel", "napper", "--since", &since, "--dry-run"],
    );
    assert!(
        text(&dry).contains("2 unfinished runs would be cancelled"),
        "{}",
        text(&dry)
    );
    let bulk = herald(&url, &["runs", "cancel", "napper", "--all"]);
    assert!(
        text(&bulk).contains("cancelled 2 runs (2 were waiting"),
        "{}",
        text(&bulk)
    );
    let vague = herald(&url, &["runs", "cancel", "napper"]);
    assert_eq!(vague.status.code(), Some(1));
    assert!(text(&vague).contains("say which runs"), "{}", text(&vague));
    common::eventually(
        std::time::Duration::from_secs(30),
        "all three cancelled",
        || async {
            let mut done = 0;
            for id in &ids {
                let report = store.inspect("napper", id).await.unwrap();
                done += usize::from(
                    report
                        .outcome
                        .is_some_and(|o| o.status == herald_worker::RunStatus::Cancelled),
                );
            }
            done == 3
        },
    )
    .await;
    worker.shutdown().await;
}
