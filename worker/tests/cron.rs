//! Cron triggers against a real nats-server: ticks fired by the server, each its own run,
//! in the trigger's time zone; replicas that start together write the schedule once.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use herald_worker::{Ctx, Function, HandlerError, Tick, Worker};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

fn every_second(
    id: &str,
    zone: Option<&str>,
    seen: mpsc::UnboundedSender<(Tick, String, Option<String>)>,
) -> Function {
    let builder = Function::new(id).cron("*/1 * * * * *");
    let builder = match zone {
        Some(zone) => builder.time_zone(zone),
        None => builder,
    };
    builder.handler(move |tick: Tick, ctx: Ctx| {
        let seen = seen.clone();
        async move {
            let _ = seen.send((
                tick,
                ctx.event_id().to_owned(),
                ctx.time().map(str::to_owned),
            ));
            Ok::<(), HandlerError>(())
        }
    })
}

async fn next_tick(
    rx: &mut mpsc::UnboundedReceiver<(Tick, String, Option<String>)>,
) -> (Tick, String, Option<String>) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a tick within 15 s")
        .unwrap()
}

#[tokio::test]
async fn the_server_fires_ticks_in_the_zone_each_its_own_run() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(every_second("paris-ticks", Some("Europe/Paris"), tx))
        .start()
        .await
        .unwrap();
    let mut ticks = Vec::new();
    while ticks.len() < 3 {
        ticks.push(next_tick(&mut rx).await);
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut due = Vec::new();
    for (tick, run_id, time) in &ticks {
        assert_eq!(tick.schedule, "*/1 * * * * *");
        assert_eq!(tick.time_zone.as_deref(), Some("Europe/Paris"));
        let at = chrono::DateTime::parse_from_rfc3339(&tick.scheduled_at).unwrap();
        let offset = at.offset().local_minus_utc();
        let expected = chrono::DateTime::parse_from_rfc3339(&tick.next)
            .unwrap()
            .offset()
            .local_minus_utc();
        assert!(offset == 3600 || offset == 7200, "{}", tick.scheduled_at);
        assert_eq!(offset, expected, "due time and next fire in the same zone");
        assert!(
            run_id.starts_with(&format!("cron-{}-", tick.cron_id)),
            "{run_id}"
        );
        assert_eq!(
            time.as_deref(),
            Some(tick.scheduled_at.as_str()),
            "ctx.time() is the due time"
        );
        ids.insert(run_id.clone());
        due.push(at.timestamp());
    }
    assert_eq!(ids.len(), 3, "every tick is its own run: {ids:?}");
    assert!(
        due.windows(2).all(|w| w[1] > w[0]),
        "due times increase: {due:?}"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn replicas_starting_together_write_the_schedule_once_and_restarts_keep_it() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let subject = {
        let trigger = herald_worker::CronTrigger::new("*/1 * * * * *", None).unwrap();
        herald_worker::cron::schedule_subject(client.namespace(), "shared-ticks", &trigger.id())
    };
    let start = || {
        Worker::builder(client.clone())
            .function(every_second("shared-ticks", None, tx.clone()))
            .start()
    };
    let (a, b, c) = tokio::join!(start(), start(), start());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    let first = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    // Three replicas: each tick runs once.
    let mut runs = std::collections::BTreeMap::<String, u32>::new();
    while runs.len() < 3 {
        let (_, run_id, _) = next_tick(&mut rx).await;
        *runs.entry(run_id).or_default() += 1;
    }
    b.shutdown().await;
    c.shutdown().await;
    let again = Worker::builder(client.clone())
        .function(every_second("shared-ticks", None, tx.clone()))
        .start()
        .await
        .unwrap();
    let after = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    assert_eq!(
        after.sequence, first.sequence,
        "a restart with the same schedule does not rewrite it (which would restart it)"
    );
    while runs.len() < 5 {
        let (_, run_id, _) = next_tick(&mut rx).await;
        *runs.entry(run_id).or_default() += 1;
    }
    a.shutdown().await;
    again.shutdown().await;
    while let Ok((_, run_id, _)) = rx.try_recv() {
        *runs.entry(run_id).or_default() += 1;
    }
    assert!(
        runs.values().all(|&n| n == 1),
        "each tick ran once across replicas: {runs:?}"
    );
}

#[tokio::test]
async fn a_changed_schedule_is_a_new_schedule_and_the_old_one_is_reported() {
    let (_nats, client) = server_and_client().await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let old = Worker::builder(client.clone())
        .function(every_second("changing", None, tx.clone()))
        .start()
        .await
        .unwrap();
    old.shutdown().await;
    let new = Function::new("changing")
        .cron("0 12 * * 5")
        .handler(|_: Tick, _: Ctx| async { Ok::<(), HandlerError>(()) });
    let worker = Worker::builder(client.clone())
        .function(new)
        .start()
        .await
        .unwrap();
    let listing = herald_worker::cron::list(&client).await.unwrap();
    let mine: Vec<_> = listing
        .iter()
        .filter(|s| s.function == "changing")
        .collect();
    assert_eq!(mine.len(), 2, "{listing:?}");
    assert!(mine.iter().any(|s| s.pattern == "0 0 12 * * 5"));
    assert!(mine.iter().any(|s| s.pattern == "*/1 * * * * *"));
    worker.shutdown().await;
}

#[test]
fn bad_patterns_and_zones_fail_the_function_check() {
    let function = Function::new("bad")
        .cron("0 25 * * *")
        .handler(|_: Tick, _: Ctx| async { Ok::<(), HandlerError>(()) });
    let error = function.check().unwrap_err().to_string();
    assert!(error.contains("invalid cron pattern"), "{error}");
    let function = Function::new("bad")
        .cron("0 12 * * 5")
        .time_zone("+02:00")
        .handler(|_: Tick, _: Ctx| async { Ok::<(), HandlerError>(()) });
    let error = function.check().unwrap_err().to_string();
    assert!(error.contains("IANA"), "{error}");
}

#[tokio::test]
async fn a_tick_is_skipped_while_the_previous_tick_still_runs() {
    let (_nats, client) = server_and_client().await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<String>();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = std::sync::Arc::clone(&release);
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let function =
        Function::new("slow-ticks")
            .cron("*/1 * * * * *")
            .handler(move |_: Tick, ctx: Ctx| {
                let started_tx = started_tx.clone();
                let gate = std::sync::Arc::clone(&gate);
                let first = !held.swap(true, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let _ = started_tx.send(ctx.event_id().to_owned());
                    // The first tick holds on until the test lets it go.
                    if first {
                        gate.notified().await;
                    }
                    Ok::<(), HandlerError>(())
                }
            });
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    // Wait until at least two later ticks were recorded skipped, reading the runs bucket.
    let store = herald_worker::RunStore::open(&client).await.unwrap();
    let kv = client
        .jetstream()
        .get_key_value(client.namespace().runs_bucket())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let skipped = loop {
        let mut keys = kv.keys().await.unwrap();
        let mut skipped = Vec::new();
        use futures::StreamExt;
        while let Some(Ok(key)) = keys.next().await {
            if key.starts_with("slow-ticks.cron-") && !key.ends_with(".lock") {
                let run_id = key.trim_start_matches("slow-ticks.");
                let report = store.inspect("slow-ticks", run_id).await.unwrap();
                if report.outcome.as_ref().map(|o| o.status)
                    == Some(herald_worker::RunStatus::Skipped)
                {
                    skipped.push((
                        run_id.to_owned(),
                        report.outcome.unwrap().detail.unwrap_or_default(),
                    ));
                }
            }
        }
        if skipped.len() >= 2 || std::time::Instant::now() > deadline {
            break skipped;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        skipped.len() >= 2,
        "ticks skipped while the first ran: {skipped:?}"
    );
    for (_, detail) in &skipped {
        assert!(
            detail.contains(&first),
            "the skip names the running tick {first}: {detail}"
        );
    }
    assert!(
        started.try_recv().is_err(),
        "no other tick started while the first ran"
    );
    // Once the first tick finishes, the next tick runs.
    release.notify_one();
    let next = tokio::time::timeout(WAIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(next, first);
    worker.shutdown().await;
}
