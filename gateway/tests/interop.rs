//! Real clients in another language: the Python `cloudevents` package (binary, structured,
//! batch) and the Python `inngest` package send through the gateway, and an unchanged
//! Herald worker handles every event.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use herald_worker::{Ctx, Function, Worker};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cloudevents_and_inngest_clients_send_events_a_worker_handles() {
    let Some(python) = tokio::task::spawn_blocking(python::python).await.unwrap() else {
        return;
    };
    let s = setup().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(s.client.clone())
        .function(Function::new("welcome").on::<UserSignup>().handler(
            move |event: UserSignup, ctx: Ctx| {
                let tx = tx.clone();
                async move {
                    tx.send((ctx.event_id().to_owned(), event.email)).unwrap();
                    Ok(())
                }
            },
        ))
        .start()
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = s.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let token = s.token.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(python::script("send_events.py"))
            .args([&format!("http://{address}"), &token, "py"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for line in &lines[..3] {
        assert_eq!(line["status"], 202, "{line}");
    }
    let inngest_ids = lines[3]["ids"].as_array().unwrap();
    assert_eq!(inngest_ids.len(), 2, "{stdout}");
    assert_eq!(inngest_ids[1], "py-in-5");

    let mut handled = BTreeSet::new();
    while handled.len() < 6 {
        let (id, email) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the worker handled every event within the deadline")
            .unwrap();
        handled.insert((id, email));
    }
    let ids: BTreeSet<String> = handled.iter().map(|(id, _)| id.clone()).collect();
    for n in 0..4 {
        assert!(ids.contains(&format!("py-ce-{n}")), "{handled:?}");
    }
    assert!(
        ids.contains(inngest_ids[0].as_str().unwrap()),
        "{handled:?}"
    );
    assert!(handled.contains(&("py-in-5".to_owned(), "inngest5@example.com".to_owned())));
    let (headers, _) = stored(&s.client, 1).await;
    assert_eq!(headers["ce-subject"], "user-0");
    assert_eq!(headers["ce-dataschema"], "urn:herald:schema:user.signup:1");

    worker.shutdown().await;
    server.abort();
}
