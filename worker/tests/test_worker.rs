//! Handlers run in process by `TestWorker`, with no server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald_worker::{
    Backoff, Ctx, DeadLetterReason, Function, HandlerError, State, TestOutcome, TestWorker,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, herald::Event)]
#[event(type = "test.order")]
struct Order {
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, herald::Event)]
#[event(type = "test.shipped")]
struct Shipped {
    n: u32,
}

fn retried(delay_secs: u64) -> impl Fn(&TestOutcome) -> bool {
    move |outcome| matches!(outcome, TestOutcome::Retried { delay, .. } if *delay == Duration::from_secs(delay_secs))
}

#[tokio::test]
async fn a_handler_failing_twice_is_retried_with_backoff_then_succeeds() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let function = Function::new("flaky")
        .on::<Order>()
        .backoff(Backoff {
            jitter: 0.0,
            ..Backoff::default()
        })
        .handler(move |_order: Order, ctx: Ctx| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                if ctx.attempt() < 3 {
                    return Err(HandlerError::retry("down"));
                }
                Ok(())
            }
        });
    let worker = TestWorker::new(function).unwrap();
    let run = worker.run(&Order { n: 1 }).await;
    assert_eq!(run.attempts.len(), 3);
    assert!(retried(1)(&run.attempts[0]), "{:?}", run.attempts);
    assert!(retried(2)(&run.attempts[1]), "{:?}", run.attempts);
    assert_eq!(run.outcome, TestOutcome::Succeeded);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn terminal_errors_exhausted_attempts_and_bad_payloads_are_dead_lettered() {
    let function = Function::new("picky").on::<Order>().attempts(2).handler(
        |order: Order, _ctx: Ctx| async move {
            match order.n {
                0 => Err::<(), _>(HandlerError::terminal("zero is not an order")),
                _ => Err(HandlerError::retry("always down")),
            }
        },
    );
    let worker = TestWorker::new(function).unwrap();
    let run = worker.run(&Order { n: 0 }).await;
    assert_eq!(
        run.outcome,
        TestOutcome::DeadLettered {
            reason: DeadLetterReason::TerminalError,
            error: "zero is not an order".into(),
            attempts: 1,
            step: None,
        }
    );
    let run = worker.run(&Order { n: 1 }).await;
    assert_eq!(run.attempts.len(), 2);
    assert!(matches!(
        run.outcome,
        TestOutcome::DeadLettered {
            reason: DeadLetterReason::HandlerError,
            attempts: 2,
            ..
        }
    ));
    let run = worker
        .run_json("test.order", "bad-1", serde_json::json!({"n": "seven"}))
        .await;
    assert!(
        matches!(&run.outcome, TestOutcome::DeadLettered { reason: DeadLetterReason::SchemaViolation, error, .. } if error.contains("$.n")),
        "{:?}",
        run.outcome
    );
}

#[tokio::test]
async fn steps_are_memoized_across_attempts_sleeps_wake_and_sent_events_are_collected() {
    let charged = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&charged);
    let function = Function::new("checkout")
        .on::<Order>()
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .handler(move |order: Order, ctx: Ctx| {
            let counter = Arc::clone(&counter);
            async move {
                ctx.step("charge", || async {
                    Ok::<_, HandlerError>(counter.fetch_add(1, Ordering::SeqCst))
                })
                .await?;
                ctx.sleep("cool down", Duration::from_secs(3600)).await?;
                ctx.send_event("ship", &Shipped { n: order.n }).await?;
                if ctx.attempt() == 1 {
                    return Err(HandlerError::retry("the warehouse is busy"));
                }
                Ok(())
            }
        });
    let worker = TestWorker::new(function).unwrap();
    let run = worker.run(&Order { n: 7 }).await;
    assert!(
        matches!(run.attempts[0], TestOutcome::Slept { .. }),
        "{:?}",
        run.attempts
    );
    assert_eq!(run.outcome, TestOutcome::Succeeded, "{:?}", run.attempts);
    assert_eq!(charged.load(Ordering::SeqCst), 1, "the step ran once");
    assert_eq!(
        run.sent.len(),
        1,
        "sent once, though the attempt after it failed"
    );
    assert_eq!(run.sent[0].event_type, "test.shipped");
    assert_eq!(run.sent[0].data, serde_json::json!({"n": 7}));
    assert_eq!(run.sent[0].id, format!("checkout.{}.ship", run.event_id));

    // The same event again: its run is recorded as finished.
    let again = worker
        .run_json("test.order", &run.event_id, serde_json::json!({"n": 7}))
        .await;
    assert_eq!(again.outcome, TestOutcome::AlreadyFinished);
    assert_eq!(charged.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_swallowed_sleep_still_suspends_the_run() {
    let after = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&after);
    let function = Function::new("sloppy")
        .on::<Order>()
        .handler(move |_order: Order, ctx: Ctx| {
            let counter = Arc::clone(&counter);
            async move {
                let _ = ctx.sleep("nap", Duration::from_secs(60)).await; // swallowed
                ctx.step("after the nap", || async {
                    Ok::<_, HandlerError>(counter.fetch_add(1, Ordering::SeqCst))
                })
                .await?;
                Ok(())
            }
        });
    let worker = TestWorker::new(function).unwrap();
    let run = worker.run(&Order { n: 1 }).await;
    assert!(
        matches!(run.attempts[0], TestOutcome::Slept { .. }),
        "{:?}",
        run.attempts
    );
    assert_eq!(run.outcome, TestOutcome::Succeeded);
    assert_eq!(
        after.load(Ordering::SeqCst),
        1,
        "the step ran once, after the wake-up"
    );
}

#[tokio::test]
async fn state_reaches_every_call_and_anyhow_errors_work_with_question_mark() {
    #[derive(Clone)]
    struct Prices {
        cents: u32,
    }
    let seen = Arc::new(AtomicU32::new(0));
    let total = Arc::clone(&seen);
    let function = Function::new("priced")
        .on::<Order>()
        .attempts(1)
        .state(Prices { cents: 250 })
        .handler(
            move |order: Order, _ctx: Ctx, State(prices): State<Prices>| {
                let total = Arc::clone(&total);
                async move {
                    if order.n == 0 {
                        Err::<(), _>(anyhow::anyhow!("out of stock").context("reserving"))?;
                    }
                    total.fetch_add(order.n * prices.cents, Ordering::SeqCst);
                    Ok(())
                }
            },
        );
    let worker = TestWorker::new(function).unwrap();
    assert_eq!(
        worker.run(&Order { n: 2 }).await.outcome,
        TestOutcome::Succeeded
    );
    assert_eq!(seen.load(Ordering::SeqCst), 500);
    let run = worker.run(&Order { n: 0 }).await;
    assert!(
        matches!(&run.outcome, TestOutcome::DeadLettered { error, .. } if error == "reserving: out of stock"),
        "{:?}",
        run.outcome
    );
}

#[test]
fn a_bad_function_is_refused() {
    let function = Function::new("Bad Id")
        .on::<Order>()
        .handler(|_order: Order, _ctx: Ctx| async { Ok(()) });
    let error = TestWorker::new(function).unwrap_err();
    assert!(error.to_string().contains("invalid function id"), "{error}");
}
