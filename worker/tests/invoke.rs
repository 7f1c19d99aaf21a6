//! `ctx.invoke` against a real nats-server: a typed output comes back, a failed callee
//! fails the calling step terminally, a silent one times out, and a caller that crashes
//! after the call still gets one callee run and goes on once.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use herald::Event;
use herald_worker::{Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.quote_requested")]
struct QuoteRequested {
    sku: String,
    fail: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quote {
    sku: String,
    cents: u64,
}

fn pricer(calls: Arc<AtomicU32>) -> Function {
    Function::new("compute-quote")
        .on::<QuoteRequested>()
        .attempts(2)
        .returning(move |request: QuoteRequested, _: Ctx| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if request.fail {
                    return Err(HandlerError::terminal("no price for this sku"));
                }
                Ok(Quote {
                    cents: request.sku.len() as u64 * 100,
                    sku: request.sku,
                })
            }
        })
}

/// The caller: invokes compute-quote for each job, sends what came back.
fn caller(
    timeout: Duration,
    results: mpsc::UnboundedSender<(u32, Result<Quote, String>)>,
    crash_once: bool,
    after: Arc<AtomicU32>,
) -> Function {
    Function::new("checkout")
        .on::<Job>()
        .attempts(3)
        .handler(move |job: Job, ctx: Ctx| {
            let results = results.clone();
            let after = Arc::clone(&after);
            async move {
                let request = QuoteRequested {
                    sku: job.label.clone(),
                    fail: job.n == 99,
                };
                let quote = ctx
                    .invoke::<_, Quote>("price", "compute-quote", &request, timeout)
                    .await;
                if crash_once && ctx.attempt() == 1 {
                    panic!("the caller crashes after sending the call");
                }
                match quote {
                    Ok(quote) => {
                        ctx.step("after", || async {
                            after.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), HandlerError>(())
                        })
                        .await?;
                        let _ = results.send((job.n, Ok(quote)));
                        Ok(())
                    }
                    Err(error) if error.is_terminal() => {
                        let _ = results.send((job.n, Err(error.message().to_owned())));
                        Err(error)
                    }
                    Err(error) => Err(error),
                }
            }
        })
}

async fn job(client: &herald::Client, n: u32, label: &str) {
    client
        .publish(&Job {
            n,
            label: label.to_owned(),
        })
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invoked_function_answers_with_its_output_or_its_failure() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let after = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(pricer(Arc::clone(&calls)))
        .function(caller(
            Duration::from_secs(60),
            tx,
            false,
            Arc::clone(&after),
        ))
        .start()
        .await
        .unwrap();
    job(&client, 1, "sku-abc").await;
    let (n, result) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        result.unwrap(),
        Quote {
            sku: "sku-abc".into(),
            cents: 700
        }
    );
    job(&client, 99, "sku-x").await;
    let (n, result) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 99);
    let error = result.unwrap_err();
    assert!(
        error.contains("function compute-quote failed") && error.contains("no price for this sku"),
        "{error}"
    );
    wait_consumer_drained(&client, "checkout").await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "each call ran the callee once"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_call_without_an_answer_times_out() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    // No worker runs compute-quote.
    let worker = Worker::builder(client.clone())
        .function(caller(Duration::from_secs(2), tx, false, Arc::default()))
        .start()
        .await
        .unwrap();
    job(&client, 2, "sku-t").await;
    let (_, result) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let error = result.unwrap_err();
    assert!(error.contains("no answer within 2s"), "{error}");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_caller_crashing_after_the_call_gets_one_callee_run_and_goes_on_once() {
    let (_nats, client) = server_and_client().await;
    let calls = Arc::new(AtomicU32::new(0));
    let after = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(pricer(Arc::clone(&calls)))
        .function(caller(
            Duration::from_secs(60),
            tx,
            true,
            Arc::clone(&after),
        ))
        .start()
        .await
        .unwrap();
    job(&client, 3, "sku-crash").await;
    let (_, result) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.unwrap().cents, 900);
    wait_consumer_drained(&client, "checkout").await;
    wait_consumer_drained(&client, "compute-quote").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the callee ran once");
    assert_eq!(after.load(Ordering::SeqCst), 1, "the caller went on once");
    assert!(rx.try_recv().is_err(), "one result");
    worker.shutdown().await;
}
