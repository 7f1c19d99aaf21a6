//! The flow-control metrics against a real nats-server, read from the worker's `/metrics`:
//! runs parked and woken by a concurrency limit and by a throttle, their wait before the
//! start, and runs skipped by a rate limit and by a singleton.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald::{Client, Event, PublishOptions};
use herald_worker::{Ctx, Function, HandlerError, SingletonMode, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "test.flow")]
struct Flow {
    n: u32,
}

const WAIT: Duration = Duration::from_secs(60);

async fn send(client: &Client, n: u32) {
    let options = PublishOptions {
        id: Some(format!("flow-{n}")),
        ..Default::default()
    };
    client
        .publish_with(&Flow { n }, options)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The value of the sample of `metric` for `function` and `reason` (0 when absent).
fn sample(text: &str, metric: &str, function: &str, reason: &str) -> f64 {
    let labels = [
        format!("function=\"{function}\""),
        format!("reason=\"{reason}\""),
    ];
    text.lines()
        .filter(|line| line.starts_with(metric) && line[metric.len()..].starts_with('{'))
        .find(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

fn busy(
    millis: u64,
) -> impl Fn(Flow, Ctx) -> futures::future::BoxFuture<'static, Result<(), HandlerError>>
+ Send
+ Sync
+ Clone
+ 'static {
    move |_flow: Flow, _ctx: Ctx| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(millis)).await; // the work
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_woken_waited_and_skipped_runs_are_counted() {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(exporter)
        .build();
    let meter = opentelemetry::metrics::MeterProvider::meter(&provider, "herald");
    let (_nats, client) = server_and_client().await;
    let functions = [
        // Five at once through one slot: four park, each woken by the slot before it.
        Function::new("limited")
            .on::<Flow>()
            .concurrency_limit(1)
            .handler(busy(200)),
        // One a second: the sixth and seventh start more than 4 s out, so they park.
        Function::new("throttled")
            .on::<Flow>()
            .throttle(1, Duration::from_secs(1))
            .handler(busy(0)),
        // One in ten minutes: the rest are skipped.
        Function::new("rated")
            .on::<Flow>()
            .rate_limit(1, Duration::from_secs(600))
            .handler(busy(0)),
        // One at a time, skipping: the runs arriving while the first runs are skipped.
        Function::new("single")
            .on::<Flow>()
            .singleton(SingletonMode::Skip)
            .handler(busy(3000)),
    ];
    let mut builder = Worker::builder(client.clone())
        .meter(meter)
        .prometheus(registry)
        .http("127.0.0.1:0".parse().unwrap());
    for function in functions {
        builder = builder.function(function);
    }
    let worker = builder.start().await.unwrap();
    let address = worker.http_address().unwrap();
    for n in 0..7 {
        send(&client, n).await;
    }
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let (_, text) = http_get(address, "/metrics").await;
        let parked = |f, r| sample(&text, "herald_flow_parked_total", f, r);
        let woken = |f, r| sample(&text, "herald_flow_woken_total", f, r);
        let waited = |f, r| sample(&text, "herald_flow_wait_seconds_count", f, r);
        let skipped = |f, r| sample(&text, "herald_flow_skipped_total", f, r);
        if parked("limited", "concurrency") >= 1.0
            && woken("limited", "concurrency") >= 1.0
            && waited("limited", "concurrency") >= 1.0
            && parked("throttled", "throttle") >= 2.0
            && woken("throttled", "throttle") >= 2.0
            && waited("throttled", "throttle") >= 6.0
            && skipped("rated", "rate_limited") == 6.0
            && skipped("single", "singleton") >= 1.0
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the flow metrics did not move:\n{}",
            text.lines()
                .filter(|l| l.starts_with("herald_flow"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // polling the endpoint
    };
    // Nothing counted under a reason that did not happen.
    assert_eq!(
        sample(&text, "herald_flow_parked_total", "rated", "throttle"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "herald_flow_skipped_total",
            "limited",
            "rate_limited"
        ),
        0.0
    );
    // The throttled runs waited up to about 6 s from their event's time.
    let waited_s = sample(
        &text,
        "herald_flow_wait_seconds_sum",
        "throttled",
        "throttle",
    );
    assert!(
        (10.0..40.0).contains(&waited_s),
        "the throttled runs waited {waited_s} s in all (1 + 2 + ... + 6 = 21 expected)"
    );
    worker.shutdown().await;
}
