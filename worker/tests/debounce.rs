//! Debounce against a real nats-server: one run per burst with the burst's last event, and
//! a window that never goes quiet fires by its first event plus the timeout.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event};
use herald_worker::{Ctx, Function, HandlerError, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.profile")]
struct Profile {
    user: String,
    n: u32,
}

fn debounced(
    id: &str,
    period: Duration,
    timeout: Option<Duration>,
    runs: mpsc::UnboundedSender<(Profile, Instant)>,
) -> Function {
    let builder = Function::new(id)
        .on::<Profile>()
        .debounce(|p: &Profile| p.user.clone(), period);
    let builder = match timeout {
        Some(timeout) => builder.debounce_timeout(timeout),
        None => builder,
    };
    builder.handler(move |p: Profile, _: Ctx| {
        let runs = runs.clone();
        async move {
            let _ = runs.send((p, Instant::now()));
            Ok::<(), HandlerError>(())
        }
    })
}

async fn publish(client: &Client, user: &str, n: u32) {
    client
        .publish(&Profile {
            user: user.to_owned(),
            n,
        })
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Windows still open for `function`: debounce schedules stored in the events stream.
async fn open_windows(client: &Client, function: &str) -> usize {
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    let filter = format!(
        "{}.debounce.*",
        client.namespace().redrive_subject(function)
    );
    let mut subjects = stream.info_with_subjects(filter).await.unwrap();
    let mut count = 0;
    use futures::TryStreamExt;
    while let Some((_, n)) = subjects.try_next().await.unwrap() {
        count += n;
    }
    count
}

#[tokio::test]
async fn bursts_give_one_run_each_with_their_last_event() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(debounced("reindex", Duration::from_secs(2), None, tx))
        .start()
        .await
        .unwrap();
    // Key a: five events 300 ms apart; key b: two events.
    for n in 0..5 {
        publish(&client, "a", n).await;
        if n == 1 {
            publish(&client, "b", 100).await;
            publish(&client, "b", 101).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // the burst's pacing
    }
    let mut runs = Vec::new();
    while runs.len() < 2 {
        let (profile, _) = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("a run per key within 15 s")
            .unwrap();
        runs.push((profile.user, profile.n));
    }
    runs.sort();
    assert_eq!(runs, [("a".to_owned(), 4), ("b".to_owned(), 101)]);
    // A second burst on key a after its window fired: a new window, a new run.
    for n in 5..8 {
        publish(&client, "a", n).await;
    }
    let (profile, _) = tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((profile.user.as_str(), profile.n), ("a", 7));
    // Nothing else can fire: no window is open and every delivery is settled.
    let deadline = Instant::now() + Duration::from_secs(15);
    while open_windows(&client, "reindex").await > 0 {
        assert!(Instant::now() < deadline, "windows still open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_consumer_drained(&client, "reindex").await;
    assert!(rx.try_recv().is_err(), "one run per burst");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_window_that_never_goes_quiet_fires_at_the_timeout() {
    let (_nats, client) = server_and_client().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone())
        .function(debounced(
            "capped",
            Duration::from_secs(2),
            Some(Duration::from_secs(4)),
            tx,
        ))
        .start()
        .await
        .unwrap();
    let first = Instant::now();
    let mut n = 0;
    // An event every 500 ms for 7 s: the period never passes quietly.
    let fired = loop {
        publish(&client, "c", n).await;
        n += 1;
        if let Ok(Some(run)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            break run;
        }
        assert!(
            first.elapsed() < Duration::from_secs(7),
            "no run by the timeout"
        );
    };
    let after = fired.1.duration_since(first);
    // The timeout's fire time is rounded down to a whole second (3 to 4 s after the first
    // event); up to 2 s more for its delivery on a loaded machine.
    assert!(
        after <= Duration::from_secs(6),
        "fired {after:?} after the first event (timeout 4 s, +2 s)"
    );
    assert!(
        after >= Duration::from_secs(3),
        "not before the timeout: {after:?}"
    );
    assert_eq!(fired.0.user, "c");
    // Event 4 was published about 2 s after the first, before any fire time.
    assert!(
        fired.0.n >= 4,
        "a late event of the window: n={}",
        fired.0.n
    );
    worker.shutdown().await;
}

#[test]
fn debounce_settings_are_checked() {
    let function = Function::new("bad")
        .on::<Profile>()
        .debounce(|p: &Profile| p.user.clone(), Duration::from_millis(500))
        .handler(|_: Profile, _: Ctx| async { Ok::<(), HandlerError>(()) });
    assert!(
        function
            .check()
            .unwrap_err()
            .to_string()
            .contains("at least 1 s")
    );
    let function = Function::new("bad")
        .on::<Profile>()
        .debounce_timeout(Duration::from_secs(5))
        .handler(|_: Profile, _: Ctx| async { Ok::<(), HandlerError>(()) });
    assert!(
        function
            .check()
            .unwrap_err()
            .to_string()
            .contains("needs debounce")
    );
}
