//! The CLI's conventions, run as a binary against a real nats-server: exit codes for "not
//! found", "refused", "drift" and usage errors, and one-line errors for an unprovisioned
//! namespace and an unreachable server.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::process::Output;
use std::time::Duration;

use herald::{Client, Event};
use herald_worker::{Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};

use common::{eventually, herald_at, herald_bare, text};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.order")]
struct Order {
    n: u32,
}

/// Standard error, asserted to be exactly one line.
fn one_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {}", text(output));
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_not_found_refused_drift_and_usage() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let u = url.as_str();
    assert!(herald_at(u, &["provision"]).status.success());

    for args in [
        &["runs", "show", "orders", "nope"][..],
        &["dlq", "show", "424242"],
        &["keys", "revoke", "nope"],
        &["push", "remove", "nope"],
        &["schemas", "show", "no.such.type"],
        &["functions", "pause", "nope"],
        &["functions", "resume", "nope"],
    ] {
        let output = herald_at(u, args);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {}", text(&output));
        one_line(&output);
    }

    // One dead letter, then a purge without --yes (and no terminal to ask on): refused.
    let client = Client::connect(u).await.unwrap();
    let worker =
        Worker::builder(client.clone())
            .function(Function::new("orders").on::<Order>().handler(
                |_order: Order, _ctx: Ctx| async {
                    Err::<(), _>(HandlerError::terminal("rejected"))
                },
            ))
            .start()
            .await
            .unwrap();
    client
        .publish(&Order { n: 1 })
        .await
        .unwrap()
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "a dead letter", || async {
        let mut dlq = client.jetstream().get_stream("HERALD_DLQ").await.unwrap();
        dlq.info().await.unwrap().state.messages >= 1
    })
    .await;
    worker.shutdown().await;
    let purge = herald_at(u, &["dlq", "purge", "--function", "orders"]);
    assert_eq!(purge.status.code(), Some(4), "{}", text(&purge));
    assert!(one_line(&purge).contains("--yes"), "{}", text(&purge));
    let listed = herald_at(u, &["dlq", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "nothing was deleted");

    // Drift: a stream whose config differs from Herald's.
    let js = client.jetstream();
    let mut config = js
        .get_stream("HERALD_DLQ")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.max_age = Duration::from_secs(3600);
    js.update_stream(&config).await.unwrap();
    for args in [&["provision"][..], &["streams"], &["provision", "--json"]] {
        let output = herald_at(u, args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&herald_at(u, &["--json", "provision"]).stdout).unwrap();
    assert_eq!(report["converged"], false);
    let applied = herald_at(u, &["provision", "--apply"]);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(herald_at(u, &["streams"]).status.success());

    // Usage errors: a wrong flag, and --json on a command without JSON output.
    let wrong = herald_at(u, &["dlq", "list", "--bogus"]);
    assert_eq!(wrong.status.code(), Some(64), "{}", text(&wrong));
    let serve = herald_at(u, &["--json", "serve", "--gateway", "127.0.0.1:0"]);
    assert_eq!(serve.status.code(), Some(64), "{}", text(&serve));
    assert!(
        herald_bare()
            .arg("--help")
            .output()
            .unwrap()
            .status
            .success()
    );
    let help = herald_bare().arg("--help").output().unwrap();
    assert!(text(&help).contains("Exit codes: 0 ok; 1 failed; 2 drift"));
}

#[test]
fn an_unprovisioned_namespace_is_one_line_that_says_how_to_provision() {
    let nats = herald_local_nats::LocalNats::start().unwrap();
    let url = nats.url();
    let u = url.as_str();
    let fix = format!("herald provision --server {u} --namespace fresh");
    for args in [
        &["functions"][..],
        &["dlq", "list"],
        &["streams"],
        &["schedules"],
        &["schemas", "list"],
        &["keys", "list"],
        &["push", "list"],
        &["runs", "show", "orders", "e1"],
        &["events", "tail", "--limit", "1"],
        &["events", "publish", "test.order", r#"{"n":1}"#],
        &[
            "replay",
            "--function",
            "orders",
            "--since",
            "2026-01-01T00:00:00Z",
        ],
    ] {
        let mut all = vec!["--namespace", "fresh"];
        all.extend_from_slice(args);
        let output = herald_at(u, &all);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {}", text(&output));
        let line = one_line(&output);
        assert!(
            line.contains("namespace fresh is not provisioned"),
            "{line}"
        );
        assert!(line.contains(&fix), "{line}");
        assert!(!line.contains("stream not found"), "{line}");
    }
    // Nothing was created by asking.
    let streams = herald_at(u, &["--namespace", "fresh", "streams"]);
    assert_eq!(streams.status.code(), Some(3));
}

#[test]
fn an_unreachable_server_is_one_line_with_the_url_and_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    for args in [&["dlq", "list"][..], &["functions"], &["provision"]] {
        let output = herald_at(&url, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", text(&output));
        let line = one_line(&output);
        assert!(
            line.contains(&format!("cannot connect to NATS at {url}")),
            "{line}"
        );
        assert_eq!(line.matches("refused").count(), 1, "said once: {line}");
        assert!(
            line.contains("herald dev") && line.contains("--server"),
            "{line}"
        );
    }
    let none = herald_bare().args(["dlq", "list"]).output().unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(one_line(&none).contains("--server"), "{}", text(&none));
}

/// A nats-server run from a config file (users with permissions), stopped on drop.
struct ConfiguredServer {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ConfiguredServer {
    fn start(authorization: &str) -> ConfiguredServer {
        let binary = herald_local_nats::find_or_install().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("nats.conf");
        let store = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n{authorization}\n",
                store.display().to_string()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(&binary.path)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = ConfiguredServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Polling for the port with a deadline, not synchronising by sleeping.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for ConfiguredServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_permission_the_server_denies_is_refused_at_once_in_one_line() {
    let server = ConfiguredServer::start(
        r#"authorization { users = [
  { user: admin, password: a }
  { user: ops, password: o, permissions: { publish: { deny: ["$KV.herald-keys.>"] } } }
] }"#,
    );
    let u = server.url.as_str();
    let admin = herald_at(u, &["--user", "admin", "--password", "a", "provision"]);
    assert!(admin.status.success(), "{}", text(&admin));
    let listed = herald_at(u, &["--user", "ops", "--password", "o", "keys", "list"]);
    assert!(
        listed.status.success(),
        "reading is allowed: {}",
        text(&listed)
    );
    let denied = herald_at(
        u,
        &[
            "--user",
            "ops",
            "--password",
            "o",
            "keys",
            "create",
            "--name",
            "x",
        ],
    );
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied));
    let line = one_line(&denied);
    assert!(
        line.contains("denied a permission") && line.contains("Permissions Violation"),
        "{line}"
    );
    assert!(line.contains("$KV.herald-keys."), "{line}");
}
