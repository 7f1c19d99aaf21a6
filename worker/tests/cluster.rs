//! A worker on a 3-node cluster: starting while the cluster has no quorum.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use herald_worker::{Ctx, Function, Worker};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);

/// A free port on loopback, for an HTTP endpoint that must be known before `start` returns.
fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn a_worker_started_without_quorum_becomes_ready_when_the_cluster_is_back() {
    let mut nats = herald_local_nats::LocalNats::cluster(3).unwrap();
    let client = connect(&nats).await;
    // Two of three nodes down: no meta leader can be elected, JetStream does not answer.
    nats.stop_node(1).unwrap();
    nats.stop_node(2).unwrap();

    let address = free_port();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let function = Function::new("patient")
        .on::<Job>()
        .handler(move |job: Job, _ctx: Ctx| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(job.n).unwrap();
                Ok(())
            }
        });
    let starting = tokio::spawn(
        Worker::builder(client.clone())
            .function(function)
            .http(address)
            .start(),
    );
    // Not ready, saying what it waits for; and not exited.
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(address).await {
            drop(stream);
            let (status, body) = http_get(address, "/readyz").await;
            if status == 503 && body.contains("waiting for") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said what start-up waits for"
        );
        // Polling interval of a condition with a deadline.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!starting.is_finished(), "start() gave up during the outage");

    nats.start_node(1).unwrap();
    nats.start_node(2).unwrap();
    let worker = tokio::time::timeout(WAIT, starting)
        .await
        .expect("started once the cluster was back")
        .unwrap()
        .expect("no error from start()");
    assert_eq!(http_get(address, "/readyz").await.0, 200);
    // The stream's own leader may still be settling: a publish is retried until stored.
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = match client
            .publish(&Job {
                n: 0,
                label: String::new(),
            })
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if stored {
            break;
        }
        assert!(Instant::now() < deadline, "the event could not be stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        tokio::time::timeout(WAIT, done_rx.recv()).await.unwrap(),
        Some(0)
    );
    worker.shutdown().await;
}
