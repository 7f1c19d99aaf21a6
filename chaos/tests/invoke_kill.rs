//! The invoke failure test (issue 13): the caller's process is killed (SIGABRT) right after
//! it sent its call, before its delivery was acked; a second caller process is started.
//! The callee runs once, and the caller goes on once, recorded `ok`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use herald::Client;
use herald_chaos::invoke::{Order, Price, PriceRequest, audit_subject};
use herald_local_nats::LocalNats;
use herald_worker::{Ctx, Function, HandlerError, RunStatus, RunStore, Worker};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        // Child::kill is SIGKILL to this child's pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn caller(url: &str, crash: bool) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_invoke-worker"));
    command
        .args(["--server", url, "--ack-wait", "2"])
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if crash {
        command.arg("--crash-after-call");
    }
    Child(command.spawn().unwrap())
}

async fn until<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling a condition
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_killed_after_its_call_gets_one_answer_and_goes_on_once() {
    let nats = LocalNats::start().unwrap();
    let url = nats.url();
    let client = Client::builder()
        .namespace("invokechaos")
        .connect(&url)
        .await
        .unwrap();
    client.provision().await.unwrap();
    let js = client.jetstream().clone();
    js.get_or_create_stream(stream::Config {
        name: "INVOKE_AUDIT".to_owned(),
        subjects: vec![audit_subject(client.namespace())],
        ..Default::default()
    })
    .await
    .unwrap();
    // The callee runs in this process and counts its runs.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let callee = Worker::builder(client.clone())
        .function(
            Function::new("compute-price")
                .on::<PriceRequest>()
                .returning(move |order: PriceRequest, _: Ctx| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Ok::<Price, HandlerError>(Price {
                            cents: order.quantity * 250,
                        })
                    }
                }),
        )
        .start()
        .await
        .unwrap();
    let mut first = caller(&url, true);
    // The caller's consumer exists once the process started its worker.
    until("the caller's consumer", Duration::from_secs(30), || async {
        js.get_stream("INVOKECHAOS_EVENTS")
            .await
            .unwrap()
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("checkout")
            .await
            .is_ok()
    })
    .await;
    let ack = client
        .publish(&Order {
            id: "o-1".into(),
            quantity: 4,
        })
        .await
        .unwrap()
        .await
        .unwrap();
    // The first caller aborts right after sending its call.
    until("the first caller crashed", Duration::from_secs(30), || {
        let exited = first.0.try_wait().unwrap().is_some();
        async move { exited }
    })
    .await;
    let mut second = caller(&url, false);
    let store = RunStore::open(&client).await.unwrap();
    let id = js
        .get_stream("INVOKECHAOS_EVENTS")
        .await
        .unwrap()
        .get_raw_message(ack.sequence)
        .await
        .unwrap()
        .headers
        .get("ce-id")
        .unwrap()
        .as_str()
        .to_owned();
    until(
        "the caller's run is recorded ok",
        Duration::from_secs(60),
        || async {
            store
                .inspect("checkout", &id)
                .await
                .unwrap()
                .outcome
                .is_some_and(|o| o.status == RunStatus::Ok)
        },
    )
    .await;
    // Every delivery of the caller settled: the crashed one came back after ack_wait.
    until(
        "the caller's consumer is drained",
        Duration::from_secs(60),
        || async {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream("checkout", "INVOKECHAOS_EVENTS")
                .await
                .unwrap();
            let info = consumer.info().await.unwrap().clone();
            // With its redrive consumer's (the answer's wake-up waits there).
            let (pending, ack_pending) =
                herald_chaos::pace::backlog(&js, "INVOKECHAOS_EVENTS", "checkout")
                    .await
                    .unwrap();
            pending == 0 && ack_pending == 0 && info.delivered.stream_sequence >= ack.sequence
        },
    )
    .await;
    let audits = js
        .get_stream("INVOKE_AUDIT")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the callee ran once");
    assert_eq!(audits, 1, "the caller went on once");
    let _ = second.0.kill();
    callee.shutdown().await;
}
