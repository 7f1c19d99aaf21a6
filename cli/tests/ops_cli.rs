//! `herald dev`, `functions`, `streams`, `events` and `replay` run as a binary.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use herald::{Client, Event};
use herald_worker::{Ctx, Function, Worker};
use serde::{Deserialize, Serialize};

use common::{eventually, herald, herald_command, text};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.order")]
struct Order {
    n: u32,
}

#[test]
fn dev_starts_a_provisioned_server_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["dev", "--port", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("herald dev printed the URL");
        if let Some(url) = line.trim().strip_prefix("export NATS_URL=") {
            break url.to_owned();
        }
    };
    assert_eq!(url, format!("nats://127.0.0.1:{port}"));
    let streams = herald(&url, &["streams", "--json"]);
    assert!(streams.status.success(), "{}", text(&streams));
    let rows: serde_json::Value = serde_json::from_slice(&streams.stdout).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "HERALD_ADVISORIES",
            "HERALD_EVENTS",
            "HERALD_DLQ",
            "herald-schemas",
            "herald-runs",
            "herald-keys",
            "herald-push",
            "HERALD_ACTIVITY"
        ]
    );
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["drift"].as_array().unwrap().is_empty())
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stopped with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_events_and_a_replay_that_only_one_function_sees() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let client = Client::connect(&url).await.unwrap();
    client.provision().await.unwrap();
    client
        .registry()
        .await
        .unwrap()
        .register("test.order", &Order::schema())
        .await
        .unwrap();
    let counters = [Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0))];
    let mut worker = Worker::builder(client.clone());
    for (index, id) in ["billing", "shipping"].into_iter().enumerate() {
        let counter = Arc::clone(&counters[index]);
        worker = worker.function(Function::new(id).on::<Order>().handler(
            move |_order: Order, _ctx: Ctx| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            },
        ));
    }
    let worker = worker.start().await.unwrap();
    let since = herald::headers::format_time(std::time::SystemTime::now() - Duration::from_secs(1));

    // events publish: valid, then invalid against the registered schema.
    let published = herald(&url, &["events", "publish", "test.order", r#"{"n":1}"#]);
    assert!(published.status.success(), "{}", text(&published));
    let refused = herald(&url, &["events", "publish", "test.order", r#"{"n":"one"}"#]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("$.n"), "{}", text(&refused));
    for n in 2..5 {
        client.publish(&Order { n }).await.unwrap().await.unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "both functions handled the events",
        || async { counters.iter().all(|c| c.load(Ordering::SeqCst) >= 4) },
    )
    .await;

    let tail = herald(
        &url,
        &[
            "events", "tail", "--since", &since, "--limit", "4", "--json",
        ],
    );
    assert!(tail.status.success(), "{}", text(&tail));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["type"], "test.order");
    assert_eq!(lines[0]["data"]["n"], 1);
    // Published without `ce-time`: the time is the UUIDv7 id's.
    let time = lines[0]["time"].as_str().unwrap_or_default();
    assert!(
        time.as_bytes().get(10) == Some(&b'T') && time.ends_with('Z'),
        "{}",
        lines[0]
    );

    let functions = herald(&url, &["functions", "--json"]);
    assert!(functions.status.success(), "{}", text(&functions));
    let rows: serde_json::Value = serde_json::from_slice(&functions.stdout).unwrap();
    assert_eq!(rows[0]["function"], "billing");
    assert_eq!(rows[0]["triggers"], serde_json::json!(["test.order"]));
    assert_eq!(rows[0]["attempts"], 5);
    assert_eq!(rows[0]["pending"], 0);
    assert!(
        rows[0]["waiting_pulls"].as_u64().unwrap() >= 1,
        "a live replica pulls"
    );

    let dry = herald(
        &url,
        &[
            "replay",
            "--function",
            "billing",
            "--since",
            &since,
            "--dry-run",
        ],
    );
    assert!(
        text(&dry).contains("4 event(s) would be replayed"),
        "{}",
        text(&dry)
    );
    let replay = herald(
        &url,
        &["replay", "--function", "billing", "--since", &since],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    eventually(
        Duration::from_secs(30),
        "billing ran again over the replayed events",
        || async { counters[0].load(Ordering::SeqCst) >= 8 },
    )
    .await;
    worker.shutdown().await;
    assert_eq!(counters[0].load(Ordering::SeqCst), 8);
    assert_eq!(
        counters[1].load(Ordering::SeqCst),
        4,
        "shipping did not see the replay"
    );
}

#[test]
fn bad_credentials_are_a_one_line_error_and_a_refusal() {
    let nats = herald_local_nats::LocalNats::builder()
        .user_password("ops", "right")
        .start()
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["functions", "--user", "ops", "--password", "wrong"])
        .env("NATS_URL", nats.url())
        .env_remove("NATS_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    let ok = herald_with_auth(&nats.url(), "right");
    assert!(ok.status.success(), "{}", text(&ok));
}

fn herald_with_auth(url: &str, password: &str) -> Output {
    herald_command(url)
        .args(["provision", "--user", "ops", "--password", password])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_prints_the_steps_of_a_run() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let client = Client::connect(&url).await.unwrap();
    client.provision().await.unwrap();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let function =
        Function::new("stepped")
            .on::<Order>()
            .handler(move |_order: Order, ctx: Ctx| {
                let done_tx = done_tx.clone();
                async move {
                    ctx.step("reserve", || async {
                        Ok::<_, herald_worker::HandlerError>(1)
                    })
                    .await?;
                    ctx.step("charge", || async {
                        Ok::<_, herald_worker::HandlerError>(2)
                    })
                    .await?;
                    done_tx.send(()).unwrap();
                    Ok(())
                }
            });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let options = herald::PublishOptions {
        id: Some("order-7".into()),
        ..Default::default()
    };
    client
        .publish_with(&Order { n: 7 }, options)
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), done_rx.recv())
        .await
        .unwrap();
    worker.shutdown().await;
    let output = herald(&url, &["runs", "show", "stepped", "order-7"]);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    assert!(
        out.contains("run stepped.order-7") && out.contains("outcome   ok"),
        "{out}"
    );
    assert!(out.contains("reserve") && out.contains("charge"), "{out}");
    let missing = herald(&url, &["runs", "show", "stepped", "nope"]);
    assert_eq!(missing.status.code(), Some(3), "not found");
}
