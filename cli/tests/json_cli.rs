//! Every command with the server given before it (`herald --server URL <cmd>`, as with
//! `nats` and `kubectl`), against a real nats-server with data in it; every `--json`
//! output parses (one document; JSON lines for `events tail` and `functions --watch`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use herald::{Client, Event};
use herald_worker::{Ctx, Function, HandlerError, RunStore, Tick, Worker};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use common::{eventually, herald_at, herald_bare, text};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.order")]
struct Order {
    n: u32,
}

/// The one JSON document a successful command printed.
fn json_of(output: &Output, what: &str) -> Value {
    assert!(output.status.success(), "{what}: {}", text(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{what}: not one JSON document ({error}): {}", text(output)))
}

/// `herald --server URL <args> --json`, parsed.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    json_of(&herald_at(url, &all), &args.join(" "))
}

/// The first line a long-running command prints on standard output, then SIGTERM.
fn first_line_then_stop(mut command: Command, wanted: &str) -> String {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .find_map(|line| line.ok().filter(|l| l.contains(wanted)))
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    line
}

async fn a_worker(client: &Client) -> herald_worker::RunningWorker {
    Worker::builder(client.clone())
        .function(Function::new("stepped").on::<Order>().handler(
            |_order: Order, ctx: Ctx| async move {
                ctx.step("reserve", || async { Ok::<_, HandlerError>(1) })
                    .await?;
                Ok(())
            },
        ))
        .function(Function::new("failing").on::<Order>().handler(
            |_order: Order, _ctx: Ctx| async { Err::<(), _>(HandlerError::terminal("rejected")) },
        ))
        .function(
            Function::new("weekly")
                .cron("0 12 * * 5")
                .handler(|_: Tick, _: Ctx| async { Ok::<(), HandlerError>(()) }),
        )
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_takes_the_server_first_and_every_json_output_parses() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let u = url.as_str();
    assert_eq!(json(u, &["provision"])["converged"], true);
    assert!(json(u, &["streams"]).as_array().unwrap().len() >= 7);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("test.order")).unwrap();
    let schema = serde_json::to_string(&Order::schema()).unwrap();
    std::fs::write(dir.path().join("test.order/1.json"), schema).unwrap();
    std::fs::write(dir.path().join("order.json"), r#"{"n":1}"#).unwrap();
    let schemas = dir.path().to_str().unwrap();
    let payload = dir.path().join("order.json");
    assert_eq!(
        json(u, &["schemas", "check", schemas])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        json(u, &["schemas", "push", schemas])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(json(u, &["schemas", "list"])[0]["type"], "test.order");
    assert_eq!(json(u, &["schemas", "show", "test.order"])["version"], 1);
    let valid = json(
        u,
        &[
            "schemas",
            "validate",
            "test.order",
            payload.to_str().unwrap(),
        ],
    );
    assert_eq!(valid["valid"], true);
    assert_eq!(
        json(u, &["schemas", "mode", "test.order", "FULL"])["compatibility"],
        "FULL"
    );
    assert_eq!(json(u, &["schemas", "asyncapi"])["asyncapi"], "3.0.0");

    let client = Client::connect(u).await.unwrap();
    let worker = a_worker(&client).await;
    let published = json(
        u,
        &[
            "events",
            "publish",
            "test.order",
            r#"{"n":1}"#,
            "--id",
            "order-1",
        ],
    );
    assert_eq!(published["id"], "order-1");
    let store = RunStore::open(&client).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "a finished run and a dead letter",
        || async {
            let run = store.inspect("stepped", "order-1").await.unwrap();
            let mut dlq = client.jetstream().get_stream("HERALD_DLQ").await.unwrap();
            run.outcome.is_some() && dlq.info().await.unwrap().state.messages >= 1
        },
    )
    .await;

    let tail = herald_at(
        u,
        &[
            "events",
            "tail",
            "--since",
            "2000-01-01T00:00:00Z",
            "--limit",
            "1",
            "--json",
        ],
    );
    assert!(tail.status.success(), "{}", text(&tail));
    let lines: Vec<Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "test.order");

    assert_eq!(json(u, &["functions"]).as_array().unwrap().len(), 3);
    let mut watch = herald_bare();
    watch.args(["--server", u, "functions", "--watch", "--json"]);
    let first: Value = serde_json::from_str(&first_line_then_stop(watch, "stepped")).unwrap();
    assert_eq!(first.as_array().unwrap().len(), 3);
    assert_eq!(
        json(u, &["functions", "pause", "stepped", "--for", "1m"])["paused"],
        true
    );
    assert_eq!(
        json(u, &["functions", "resume", "stepped"])["paused"],
        false
    );

    let cron_id = json(u, &["schedules"])[0]["cron_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        json(u, &["schedules", "delete", "weekly", &cron_id])["deleted"],
        true
    );

    let letters = json(u, &["dlq", "list"]);
    let sequence = letters[0]["sequence"].to_string();
    assert_eq!(json(u, &["dlq", "show", &sequence])["payload"]["n"], 1);
    assert!(
        json(u, &["dlq", "redrive", "--function", "failing", "--dry-run"])["would_redrive"]
            .is_array()
    );
    assert!(
        json(u, &["dlq", "redrive", "--function", "failing"])["redriven"]
            .as_u64()
            .unwrap()
            >= 1
    );
    worker.shutdown().await;
    assert!(json(u, &["dlq", "purge", "--function", "failing", "--yes"])["purged"].is_u64());

    assert_eq!(
        json(u, &["runs", "show", "stepped", "order-1"])["run"],
        "stepped.order-1"
    );
    assert_eq!(
        json(u, &["runs", "cancel", "stepped", "order-1"])["outcome"],
        "already_finished"
    );
    assert!(json(u, &["runs", "cancel", "stepped", "--all", "--dry-run"])["matched"].is_u64());
    let since = ["--function", "stepped", "--since", "2000-01-01T00:00:00Z"];
    let dry = [&["replay"][..], &since[..], &["--dry-run"][..]].concat();
    assert_eq!(json(u, &dry)["would_replay"], 1);
    assert_eq!(
        json(u, &[&["replay"][..], &since[..]].concat())["replayed"],
        1
    );

    let key = json(u, &["keys", "create", "--name", "ci"]);
    let id = key["id"].as_str().unwrap().to_owned();
    assert!(key["token"].as_str().unwrap().starts_with("hrld_"));
    assert_eq!(json(u, &["keys", "list"])[0]["id"], id.as_str());
    assert_eq!(json(u, &["keys", "revoke", &id])["disabled"], true);

    let added = json(
        u,
        &[
            "push",
            "add",
            "hook",
            "--on",
            "test.order",
            "--url",
            "https://app.example/h",
        ],
    );
    assert!(added["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(json(u, &["push", "list"])[0]["id"], "hook");
    assert_eq!(json(u, &["push", "remove", "hook"])["removed"], true);

    // The commands without JSON output take the server first too.
    let completions = herald_at(u, &["completions", "bash"]);
    assert!(completions.status.success() && !completions.stdout.is_empty());
    let bench = herald_at(u, &["bench", "validate", "--count", "100", "--rounds", "1"]);
    assert!(bench.status.success(), "{}", text(&bench));
    let mut serve = herald_bare();
    serve.args(["--server", u, "serve", "--gateway", "127.0.0.1:0"]);
    assert!(first_line_then_stop(serve, "gateway on http://").contains("127.0.0.1"));
    let out = dir.path().join("asyncapi.json");
    let wrote = json(u, &["schemas", "asyncapi", "--out", out.to_str().unwrap()]);
    assert_eq!(wrote["wrote"], out.to_str().unwrap());
    // `dev` takes the namespace before it (and starts its own server).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut dev = herald_bare()
        .args(["--namespace", "other", "dev", "--port", &port.to_string()])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let dev_url = lines
        .find_map(|line| {
            let line = line.ok()?;
            line.trim()
                .strip_prefix("export NATS_URL=")
                .map(str::to_owned)
        })
        .unwrap();
    let streams = json(&dev_url, &["--namespace", "other", "streams"]);
    assert_eq!(streams[1]["name"], "OTHER_EVENTS");
    Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(dev.wait().unwrap().success());
    // And after the command, mixed.
    let after = herald_bare()
        .args([
            "dlq",
            "list",
            "--server",
            u,
            "--json",
            "--namespace",
            "herald",
        ])
        .output()
        .unwrap();
    assert!(json_of(&after, "dlq list --server after").is_array());
}
