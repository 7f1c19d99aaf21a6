//! Workers validate against the version the writer names in `ce-dataschema`.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::*;
use herald::compat::CompatibilityMode;
use herald::schema::schema_for;
use herald_worker::{Ctx, Function, Worker};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

mod v1 {
    use super::*;
    /// Version 1: names of at most 10 characters.
    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    pub struct Profile {
        #[schemars(length(max = 10))]
        pub name: String,
    }
}

/// Version 2, the consumer's own type: longer names, an optional nickname.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, herald::Event)]
#[event(type = "profile.updated")]
struct Profile {
    #[schemars(length(max = 20))]
    name: String,
    nickname: Option<String>,
}

/// Publishes bytes and headers directly, as a producer in another language would (with
/// `ce-datacontenttype`, which Herald's SDK no longer writes but readers still accept).
async fn publish_as_foreign_producer(
    client: &herald::Client,
    id: &str,
    data_schema: &str,
    body: &str,
) {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-type", "profile.updated"),
        ("ce-source", "urn:example:service:python-profiles"),
        ("ce-time", "2026-11-25T08:00:00Z"),
        ("ce-datacontenttype", "application/json"),
        ("ce-dataschema", data_schema),
        ("Nats-Msg-Id", id),
    ] {
        headers.insert(name, value);
    }
    client
        .jetstream()
        .publish_with_headers(
            "herald.events.profile.updated",
            headers,
            body.to_owned().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn events_are_validated_against_the_writers_version_and_decoded_into_the_readers_type() {
    let (_nats, client) = server_and_client().await;
    let registry = client.registry().await.unwrap();
    registry
        .set_compatibility("profile.updated", CompatibilityMode::Backward)
        .await
        .unwrap();
    let v1 = registry
        .register("profile.updated", &schema_for::<v1::Profile>())
        .await
        .unwrap();
    let v2 = registry
        .register("profile.updated", &schema_for::<Profile>())
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let function =
        Function::new("profiles")
            .on::<Profile>()
            .handler(move |profile: Profile, ctx: Ctx| {
                let tx = tx.clone();
                async move {
                    tx.send((ctx.event_id().to_owned(), profile.name, profile.nickname))
                        .unwrap();
                    Ok(())
                }
            });
    let mut dead = DeadLetters::watch(&client, "profiles").await;
    let worker = Worker::builder(client.clone())
        .function(function)
        .start()
        .await
        .unwrap();

    // Written against v1 and valid there: decoded into the v2 type.
    publish_as_foreign_producer(&client, "p1", &v1.data_schema, r#"{"name":"ada"}"#).await;
    let (id, name, nickname) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((id.as_str(), name.as_str(), nickname), ("p1", "ada", None));

    // 15 characters break v1 (max 10) though v2 would take them: the writer's version rules.
    publish_as_foreign_producer(
        &client,
        "p2",
        &v1.data_schema,
        r#"{"name":"fifteen-letters"}"#,
    )
    .await;
    let (headers, _) = dead.next(Duration::from_secs(20)).await;
    assert_eq!(headers["ce-id"], "p2");
    assert_eq!(headers["herald-dlq-reason"], "schema_violation");
    assert!(
        headers["herald-dlq-error"].contains("$.name"),
        "{}",
        headers["herald-dlq-error"]
    );

    // The same payload written against v2 is fine.
    publish_as_foreign_producer(
        &client,
        "p3",
        &v2.data_schema,
        r#"{"name":"fifteen-letters"}"#,
    )
    .await;
    let (id, name, _) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((id.as_str(), name.as_str()), ("p3", "fifteen-letters"));

    // A foreign producer breaking the published schema outright: dead-lettered with the paths.
    publish_as_foreign_producer(
        &client,
        "p4",
        &v2.data_schema,
        r#"{"name":7,"nickname":false}"#,
    )
    .await;
    let (headers, _) = dead.next(Duration::from_secs(20)).await;
    assert_eq!(headers["ce-id"], "p4");
    assert_eq!(headers["herald-dlq-reason"], "schema_violation");
    let error = &headers["herald-dlq-error"];
    assert!(
        error.contains("$.name") && error.contains("$.nickname"),
        "{error}"
    );

    // An unknown version falls back to the local schema.
    publish_as_foreign_producer(
        &client,
        "p5",
        "urn:herald:schema:profile.updated:99",
        r#"{"name":"bo"}"#,
    )
    .await;
    let (id, _, _) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, "p5");
    wait_consumer_drained(&client, "profiles").await;
    assert_eq!(dlq_count(&client).await, 2);
    worker.shutdown().await;
}
