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
    assert_eq!(unknown.status.code(), Some(1));
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
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("has no cron schedule"),
        "{}",
        text(&again)
    );
    worker.shutdown().await;
}
