//! Provisioning against real nats-servers: replicas chosen from the cluster, message TTLs
//! turned on in existing streams, and what `Nats-TTL: never` keeps.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use herald::protocol::{self, header};
use herald::{Client, ProvisionOutcome, ReplicasSource, ResourceKind, StreamSettings};
use herald_local_nats::LocalNats;

/// Polls `condition` every 100 ms until it holds or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !condition().await {
        assert!(Instant::now() < until, "not within {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stream_config(js: &jetstream::Context, name: &str) -> stream::Config {
    js.get_stream(name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone()
}

#[tokio::test]
async fn a_single_server_gets_one_replica() {
    let nats = LocalNats::start().unwrap();
    let client = Client::connect(&nats.url()).await.unwrap();
    let report = client.provision().await.unwrap();
    assert_eq!(report.replicas, 1);
    assert_eq!(report.replicas_source, ReplicasSource::SingleServer);
    assert!(report.resources.iter().all(|r| r.replicas == 1), "{report}");
    assert!(
        report
            .to_string()
            .contains("stream HERALD_EVENTS (R1): created")
    );
}

#[tokio::test]
async fn a_three_node_cluster_gets_three_replicas_everywhere_by_default() {
    let cluster = LocalNats::cluster(3).unwrap();
    let client = Client::builder()
        .namespace("shop")
        .request_timeout(Duration::from_secs(5))
        .connect(&cluster.url())
        .await
        .unwrap();
    let report = client.provision().await.unwrap();
    assert_eq!(report.replicas, 3, "{report}");
    assert_eq!(report.replicas_source, ReplicasSource::Cluster);
    let js = client.jetstream();
    for resource in &report.resources {
        assert_eq!(resource.outcome, ProvisionOutcome::Created, "{report}");
        assert_eq!(resource.replicas, 3, "{report}");
        let stream = match resource.kind {
            ResourceKind::Bucket => protocol::kv_stream(&resource.name),
            _ => resource.name.clone(),
        };
        assert_eq!(stream_config(js, &stream).await.num_replicas, 3, "{stream}");
    }
    // The probe is gone, and provisioning again changes nothing (NS_EVENTS answers).
    let probe = client.namespace().replicas_probe_stream();
    assert!(
        js.get_stream(&probe).await.is_err(),
        "{probe} was left behind"
    );
    let again = client.provision().await.unwrap();
    assert!(
        again
            .resources
            .iter()
            .all(|r| r.outcome == ProvisionOutcome::Unchanged),
        "{again}"
    );

    // Chosen replicas win over the cluster's.
    let single = Client::builder()
        .namespace("single")
        .streams(StreamSettings {
            replicas: Some(1),
            ..Default::default()
        })
        .connect(&cluster.url())
        .await
        .unwrap();
    let report = single.provision().await.unwrap();
    assert_eq!(report.replicas_source, ReplicasSource::Configured);
    assert!(report.resources.iter().all(|r| r.replicas == 1), "{report}");
}

#[tokio::test]
async fn a_cluster_with_a_node_down_never_gets_fewer_replicas() {
    let mut cluster = LocalNats::cluster(3).unwrap();
    let url = cluster.node_url(0).unwrap();
    cluster.stop_node(2).unwrap();
    let client = Client::builder()
        .namespace("degraded")
        .request_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap();
    // The server may place R3 on the two live nodes and the one it knows is down, or refuse
    // with "peer offline"; it must not quietly settle for fewer.
    match client.provision().await {
        Ok(report) => {
            assert_eq!(report.replicas, 3, "{report}");
            assert!(report.resources.iter().all(|r| r.replicas == 3), "{report}");
        }
        Err(error) => assert!(error.is_transient(), "{error}"),
    }
}

#[tokio::test]
async fn an_existing_events_stream_gets_message_ttls_turned_on() {
    let nats = LocalNats::start().unwrap();
    let client = Client::connect(&nats.url()).await.unwrap();
    assert!(client.supports_message_ttl());
    let js = client.jetstream();
    let ns = client.namespace();
    // NS_EVENTS as an older Herald made it: no message TTLs (and this version's duplicate
    // window, so that the TTLs are the only difference).
    js.create_stream(stream::Config {
        name: ns.events_stream(),
        subjects: vec![ns.events_wildcard(), ns.redrive_wildcard()],
        max_age: Duration::from_secs(7 * 86_400),
        duplicate_window: Duration::from_secs(7 * 86_400),
        allow_message_schedules: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(
        !stream_config(js, &ns.events_stream())
            .await
            .allow_message_ttl
    );

    let report = client.provision().await.unwrap();
    let events = &report.resources[1];
    assert_eq!(events.name, ns.events_stream());
    let ProvisionOutcome::Updated(drift) = &events.outcome else {
        panic!("NS_EVENTS was not updated: {report}")
    };
    assert_eq!(drift.len(), 1, "{report}");
    assert_eq!(drift[0].field, "allow_msg_ttl");
    assert!(report.is_converged(), "{report}");
    assert!(
        stream_config(js, &ns.events_stream())
            .await
            .allow_message_ttl
    );

    // The runs bucket is made with per-key TTLs and no bucket-wide age.
    let runs = stream_config(js, &protocol::kv_stream(&ns.runs_bucket())).await;
    assert!(runs.allow_message_ttl);
    assert_eq!(runs.max_age, Duration::ZERO);
    let again = client.provision().await.unwrap();
    assert!(
        again
            .resources
            .iter()
            .all(|r| r.outcome == ProvisionOutcome::Unchanged),
        "{again}"
    );
}

#[tokio::test]
async fn a_message_with_ttl_never_outlives_the_streams_max_age() {
    let nats = LocalNats::start().unwrap();
    let client = Client::builder()
        .namespace("short")
        .streams(StreamSettings {
            events_max_age: Duration::from_secs(1),
            events_duplicate_window: Duration::from_secs(1),
            ..Default::default()
        })
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    let js = client.jetstream();
    let subject = client.namespace().event_subject("timer.kept");

    let plain = js
        .publish(subject.clone(), "plain".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let mut headers = HeaderMap::new();
    headers.insert(header::NATS_TTL, header::TTL_NEVER);
    let kept = js
        .publish_with_headers(subject, headers, "kept".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    let events = js
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "max_age removes the plain message",
        || async { events.get_raw_message(plain).await.is_err() },
    )
    .await;
    let message = events.get_raw_message(kept).await.unwrap();
    assert_eq!(&message.payload[..], b"kept");
}
