//! A graceful shutdown ends even when NATS is gone (its flush and loops are bounded).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald_worker::{Ctx, Function, HandlerError, Worker};

#[tokio::test]
async fn shutdown_ends_when_the_server_is_gone() {
    let (mut nats, client) = server_and_client().await;
    let worker = Worker::builder(client.clone())
        .function(
            Function::new("orphan")
                .on::<Job>()
                .handler(|_: Job, _: Ctx| async { Ok::<(), HandlerError>(()) }),
        )
        .start()
        .await
        .unwrap();
    nats.stop_node(0).unwrap();
    let started = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(60), worker.shutdown())
        .await
        .expect("shutdown ends without NATS");
    assert!(report.finished_in_grace, "nothing was running");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
