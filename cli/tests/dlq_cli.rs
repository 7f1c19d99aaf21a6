//! `herald dlq …` run as a binary against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use herald::{Client, Event};
use herald_worker::{Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};

use common::{eventually, herald, herald_command};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.order")]
struct Order {
    n: u32,
}

async fn count(client: &Client, stream: &str, subject: &str) -> usize {
    use futures::StreamExt;
    let stream = client.jetstream().get_stream(stream).await.unwrap();
    let mut counts = stream.info_with_subjects(subject).await.unwrap();
    let mut total = 0;
    while let Some(entry) = counts.next().await {
        total += entry.unwrap().1;
    }
    total
}

/// 100 dead letters of function `orders`.
async fn dead_letters(url: &str) -> Client {
    let client = Client::connect(url).await.unwrap();
    client.provision().await.unwrap();
    let function = Function::new("orders")
        .on::<Order>()
        .concurrency(64)
        .handler(|_order: Order, _ctx: Ctx| async {
            Err::<(), _>(HandlerError::terminal("the warehouse rejected it"))
        });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let mut pending = Vec::new();
    for n in 0..100 {
        pending.push(client.publish(&Order { n }).await.unwrap());
    }
    for ack in pending {
        ack.await.unwrap();
    }
    eventually(Duration::from_secs(30), "100 dead letters", || async {
        count(&client, "HERALD_DLQ", "herald.dlq.orders").await >= 100
    })
    .await;
    worker.shutdown().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_dry_run_and_a_rate_limited_redrive_resumed_after_an_interruption() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let client = dead_letters(&url).await;

    let list = herald(&url, &["dlq", "list", "--function", "orders", "--json"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let items = listed.as_array().unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(items[0]["reason"], "terminal_error");
    assert_eq!(items[0]["error"], "the warehouse rejected it");
    let first = items[0]["sequence"].as_u64().unwrap().to_string();

    let show = herald(&url, &["dlq", "show", &first]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success()
            && text.contains("herald-dlq-reason: terminal_error")
            && text.contains("payload"),
        "{text}"
    );

    let dry = herald(
        &url,
        &["dlq", "redrive", "--function", "orders", "--dry-run"],
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains("100 dead letter(s) would be redriven"));
    assert_eq!(
        count(&client, "HERALD_DLQ", "herald.dlq.orders").await,
        100,
        "a dry run changes nothing"
    );
    assert_eq!(
        count(&client, "HERALD_EVENTS", "herald.redrive.orders").await,
        0
    );

    // Interrupted midway: killed by pid once about half are through, then run again.
    let mut child = herald_command(&url)
        .args(["dlq", "redrive", "--function", "orders", "--rate", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the redrive made progress",
        || async { count(&client, "HERALD_DLQ", "herald.dlq.orders").await <= 50 },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let left = count(&client, "HERALD_DLQ", "herald.dlq.orders").await;
    assert!(left > 0 && left < 100, "interrupted midway: {left} left");

    let started = Instant::now();
    let resumed = herald(
        &url,
        &["dlq", "redrive", "--function", "orders", "--rate", "200"],
    );
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        started.elapsed() >= Duration::from_secs_f64((left as f64 - 1.0) / 200.0),
        "the rate limit held"
    );
    assert_eq!(
        count(&client, "HERALD_DLQ", "herald.dlq.orders").await,
        0,
        "every dead letter moved"
    );
    assert_eq!(
        count(&client, "HERALD_EVENTS", "herald.redrive.orders").await,
        100,
        "each exactly once"
    );

    let purge = herald(&url, &["dlq", "purge", "--function", "orders", "--yes"]);
    assert!(String::from_utf8_lossy(&purge.stdout).contains("no dead letters"));
}

/// Runs `herald --server <url> <args>` on a pseudo-terminal (util-linux `script`) and
/// returns what the terminal showed.
fn on_terminal(url: &str, args: &[&str]) -> String {
    let mut line = format!("'{}' --server '{url}'", env!("CARGO_BIN_EXE_herald"));
    for arg in args {
        line.push_str(&format!(" '{arg}'"));
    }
    let mut command = std::process::Command::new("script");
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("HERALD_") || text.starts_with("NATS_") {
            command.env_remove(&name);
        }
    }
    let output = command
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs a command on a pseudo-terminal");
    assert!(output.status.success(), "{}", common::text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_redrive_and_replay_draw_a_progress_bar_only_for_a_terminal_without_json() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let _client = dead_letters(&url).await;
    let batch = [
        "dlq",
        "redrive",
        "--function",
        "orders",
        "--limit",
        "30",
        "--rate",
        "60",
    ];

    let shown = on_terminal(&url, &batch);
    assert!(
        shown.contains("redrive ["),
        "a bar on a terminal: {shown:?}"
    );
    assert!(shown.contains("/30"), "{shown:?}");
    assert!(shown.contains("redrove 30 dead letter(s)"), "{shown:?}");

    let mut with_json = vec!["--json"];
    with_json.extend(batch);
    let json = on_terminal(&url, &with_json);
    assert!(!json.contains("redrive ["), "no bar with --json: {json:?}");
    let parsed: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(parsed["redriven"], 30);

    let piped = herald(&url, &batch);
    assert!(piped.status.success(), "{}", common::text(&piped));
    assert!(
        !common::text(&piped).contains("redrive ["),
        "no bar when stdout is not a terminal"
    );
    assert!(String::from_utf8_lossy(&piped.stdout).contains("redrove 30 dead letter(s)"));

    let since = "2000-01-01T00:00:00Z";
    let replay = [
        "replay",
        "--function",
        "orders",
        "--since",
        since,
        "--rate",
        "100",
    ];
    let shown = on_terminal(&url, &replay);
    assert!(shown.contains("replay ["), "a bar on a terminal: {shown:?}");
    assert!(shown.contains("replayed 100 event(s)"), "{shown:?}");
    let piped = herald(&url, &replay);
    assert!(piped.status.success(), "{}", common::text(&piped));
    assert!(!common::text(&piped).contains("replay ["));
}
