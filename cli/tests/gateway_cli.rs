//! `herald keys` and `herald serve --gateway` run as a binary: a key created on the command
//! line sends an event over HTTP, and is refused once revoked, without a restart.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herald::{Client, Event};
use herald_local_nats::LocalNats;
use serde::{Deserialize, Serialize};

use common::{eventually, herald, herald_command, text};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.signup")]
struct Signup {
    email: String,
}

/// Stops the serving process when the test ends, by its pid.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A raw HTTP/1.1 POST; the status code.
fn post(address: &str, token: &str, id: &str) -> u16 {
    let body = r#"{"email":"ada@example.com"}"#;
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         ce-specversion: 1.0\r\nce-id: {id}\r\nce-type: test.signup\r\n\
         ce-source: urn:example:cli-test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_the_command_line_sends_through_serve_and_revocation_is_live() {
    let nats = LocalNats::start().unwrap();
    let url = nats.url();
    let client = Client::builder()
        .use_registry(true)
        .connect(&url)
        .await
        .unwrap();
    client.provision().await.unwrap();
    client.add_local_schema::<Signup>().await.unwrap();

    let created = herald(&url, &["keys", "create", "--name", "cli", "--json"]);
    assert!(created.status.success(), "{}", text(&created));
    let key: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let token = key["token"].as_str().unwrap().to_owned();
    let id = key["id"].as_str().unwrap().to_owned();

    let mut child = herald_command(&url)
        .args(["serve", "--gateway", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _serving = Serving(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("herald serve printed its address");
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split(' ').next().unwrap().to_owned();
        }
    };

    assert_eq!(post(&address, &token, "cli-1"), 202);
    let listed = herald(&url, &["keys", "list"]);
    assert!(text(&listed).contains(&id) && text(&listed).contains("active"));

    let revoked = herald(&url, &["keys", "revoke", &id]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    eventually(Duration::from_secs(5), "the revoked key refused", || {
        let address = address.clone();
        let token = token.clone();
        async move {
            tokio::task::spawn_blocking(move || post(&address, &token, "cli-2"))
                .await
                .unwrap()
                == 401
        }
    })
    .await;
    assert!(text(&herald(&url, &["keys", "list"])).contains("revoked"));
}

#[test]
fn push_functions_are_added_listed_and_removed() {
    let nats = LocalNats::start().unwrap();
    let url = nats.url();
    assert!(herald(&url, &["provision"]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("whsec.txt");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
    let added = herald(
        &url,
        &[
            "push",
            "add",
            "send-welcome",
            "--on",
            "user.signup",
            "--url",
            "https://app.example/api/herald",
            "--timeout",
            "10s",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(added.status.success(), "{}", text(&added));
    let listed = herald(&url, &["push", "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows[0]["id"], "send-welcome");
    assert_eq!(rows[0]["timeout_ms"], 10_000);
    assert!(
        !text(&listed).contains("whsec_"),
        "secrets are never listed"
    );
    let refused = herald(
        &url,
        &[
            "push",
            "add",
            "bad",
            "--on",
            "user.signup",
            "--url",
            "ftp://x",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        herald(&url, &["push", "remove", "send-welcome"])
            .status
            .success()
    );
    let listed = herald(&url, &["push", "list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap(),
        serde_json::json!([])
    );
}
