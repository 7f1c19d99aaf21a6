//! Push functions against a real receiver: a Python server that verifies Standard Webhooks
//! signatures with the `standardwebhooks` package and is scripted to succeed, fail twice,
//! answer 429 with Retry-After, 400 with no-retry, and time out. The attempts and
//! dead-letter reasons must match the table in `docs/gateway.md`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use herald::PublishOptions;
use herald_gateway::push::{self, PushFunction, PushFunctions, PushOptions};
use serde_json::json;

/// Stops the receiver when the test ends, by its pid.
struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spec(id: &str, url: String, secret: String) -> PushFunction {
    PushFunction {
        id: id.to_owned(),
        on: vec!["user.signup".to_owned()],
        url,
        attempts: 3,
        timeout_ms: 1000,
        concurrency: 8,
        secret,
        updated_at: String::new(),
    }
}

fn options(allow_private_targets: bool) -> PushOptions {
    PushOptions {
        allow_private_targets,
        backoff: Some(herald_worker::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            jitter: 0.1,
        }),
        ..Default::default()
    }
}

async fn publish(client: &herald::Client, id: &str, plan: &str) {
    client
        .publish_value(
            "user.signup",
            &json!({"email": format!("{id}@example.com"), "plan": plan}),
            PublishOptions {
                id: Some(id.to_owned()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The next dead letters of `function`: event id → (reason, attempts, error).
async fn dead_letters(
    subscription: &mut async_nats::Subscriber,
    count: usize,
) -> BTreeMap<String, (String, String, String)> {
    let mut found = BTreeMap::new();
    while found.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("the dead letters within the deadline")
            .unwrap();
        let headers = message.headers.unwrap();
        let get = |name: &str| headers.get(name).map(|v| v.to_string()).unwrap_or_default();
        found.insert(
            get("ce-id"),
            (
                get("herald-dlq-reason"),
                get("herald-dlq-attempts"),
                get("herald-dlq-error"),
            ),
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_receiver_gets_signed_calls_and_its_answers_decide_retries_and_dead_letters() {
    let Some(python) = tokio::task::spawn_blocking(python::python).await.unwrap() else {
        return;
    };
    let s = setup().await;
    let secret = push::sign::new_secret();
    let mut child = Command::new(python)
        .arg(python::script("push_receiver.py"))
        .arg(&secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _receiver = Receiver(child);
    let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let port = lines.next().unwrap().unwrap();
        port_tx.send(port).unwrap();
        for line in lines {
            let _ = tx.send(serde_json::from_str(&line.unwrap()).unwrap());
        }
    });
    let port = tokio::task::spawn_blocking(move || port_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the receiver printed its port");

    let functions = PushFunctions::open(&s.client).await.unwrap();
    functions
        .put(&spec(
            "welcome",
            format!("http://127.0.0.1:{port}/hook"),
            secret,
        ))
        .await
        .unwrap();
    let mut dlq = s
        .client
        .nats()
        .subscribe(s.client.namespace().dlq_subject("welcome"))
        .await
        .unwrap();
    s.client.nats().flush().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(push::run(s.client.clone(), options(true), async move {
        let _ = stopped.await;
    }));
    // The consumer exists once the worker started: wait for it, then publish.
    let client = s.client.clone();
    wait_until(
        Duration::from_secs(20),
        "the push function's consumer",
        || {
            let client = client.clone();
            async move {
                client
                .jetstream()
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    "welcome",
                    client.namespace().events_stream(),
                )
                .await
                .is_ok()
            }
        },
    )
    .await;
    for plan in ["ok", "fail-twice", "rate-limited", "no-retry", "slow"] {
        publish(&s.client, plan, plan).await;
    }

    let letters = dead_letters(&mut dlq, 2).await;
    assert_eq!(letters["no-retry"].0, "terminal_error", "{letters:?}");
    assert_eq!(letters["no-retry"].1, "1");
    assert!(letters["no-retry"].2.contains("400"), "{letters:?}");
    assert_eq!(letters["slow"].0, "timeout", "{letters:?}");
    assert_eq!(letters["slow"].1, "3");

    // Calls: ok 1, fail-twice 3 (500, 500, 200), rate-limited 2 (429 then 200 after ≥ 1 s),
    // no-retry 1, slow 3; every one signed and verified, webhook-id stable.
    let mut by_id: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let expected = [
        ("ok", 1),
        ("fail-twice", 3),
        ("rate-limited", 2),
        ("no-retry", 1),
        ("slow", 3),
    ];
    while expected
        .iter()
        .any(|(id, n)| by_id.get(*id).map_or(0, Vec::len) < *n)
    {
        let call = tokio::time::timeout(Duration::from_secs(30), calls.recv())
            .await
            .expect("every expected call within the deadline")
            .unwrap();
        by_id
            .entry(call["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(call);
    }
    for (id, count) in expected {
        let calls = &by_id[id];
        assert_eq!(calls.len(), count, "{id}: {calls:?}");
        for (n, call) in calls.iter().enumerate() {
            assert_eq!(call["verified"], true, "{call}");
            assert_eq!(call["attempt"], n + 1, "{call}");
            assert_eq!(call["webhook_id"], format!("welcome.{id}"), "{call}");
            assert_eq!(call["type"], "user.signup");
        }
    }
    let answers = |id: &str| -> Vec<u64> {
        by_id[id]
            .iter()
            .map(|c| c["answer"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(answers("fail-twice"), [500, 500, 200]);
    assert_eq!(answers("rate-limited"), [429, 200]);
    let waited = by_id["rate-limited"][1]["time"].as_f64().unwrap()
        - by_id["rate-limited"][0]["time"].as_f64().unwrap();
    assert!(waited >= 0.9, "Retry-After: 1 was honoured ({waited} s)");

    stop.send(()).unwrap();
    dispatcher.await.unwrap().unwrap();
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let s = setup().await;
    let functions = PushFunctions::open(&s.client).await.unwrap();
    functions
        .put(&spec(
            "internal",
            "http://127.0.0.1:9/hook".to_owned(),
            push::sign::new_secret(),
        ))
        .await
        .unwrap();
    assert!(matches!(
        functions
            .put(&spec("bad", "ftp://x".into(), push::sign::new_secret()))
            .await,
        Err(push::PushError::Invalid { .. })
    ));
    let mut dlq = s
        .client
        .nats()
        .subscribe(s.client.namespace().dlq_subject("internal"))
        .await
        .unwrap();
    s.client.nats().flush().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatcher = tokio::spawn(push::run(s.client.clone(), options(false), async move {
        let _ = stopped.await;
    }));
    let client = s.client.clone();
    wait_until(
        Duration::from_secs(20),
        "the push function's consumer",
        || {
            let client = client.clone();
            async move {
                client
                .jetstream()
                .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                    "internal",
                    client.namespace().events_stream(),
                )
                .await
                .is_ok()
            }
        },
    )
    .await;
    publish(&s.client, "p1", "ok").await;
    let letters = dead_letters(&mut dlq, 1).await;
    assert_eq!(letters["p1"].0, "terminal_error");
    assert!(
        letters["p1"].2.contains("private or loopback"),
        "{letters:?}"
    );
    stop.send(()).unwrap();
    dispatcher.await.unwrap().unwrap();
}
