//! The schema registry against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};

use herald::compat::CompatibilityMode;
use herald::registry::RegistryError;
use herald::{Client, Event};
use herald_local_nats::LocalNats;
use serde::{Deserialize, Serialize};
use serde_json::json;

async fn provisioned(nats: &LocalNats) -> Client {
    let client = Client::connect(&nats.url()).await.unwrap();
    client.provision().await.unwrap();
    client
}

fn schema_with(extra: &str) -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {"id": {"type": "string"}, extra: {"type": "string"}},
        "required": ["id"]
    })
}

#[tokio::test]
async fn concurrent_registrations_yield_versions_without_gaps_or_duplicates() {
    let nats = LocalNats::start().unwrap();
    provisioned(&nats).await;
    let schemas = [schema_with("a"), schema_with("b"), schema_with("c")];
    let mut tasks = Vec::new();
    for n in 0..8 {
        let schema = schemas[n % 3].clone();
        let url = nats.url();
        tasks.push(tokio::spawn(async move {
            // A client (connection) of its own, as separate processes would have.
            let client = Client::connect(&url).await.unwrap();
            let registered = client
                .registry()
                .await
                .unwrap()
                .register("order.placed", &schema)
                .await
                .unwrap();
            (n % 3, registered.version)
        }));
    }
    let mut version_of_schema: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for task in tasks {
        let (schema, version) = task.await.unwrap();
        version_of_schema.entry(schema).or_default().insert(version);
    }
    for (schema, versions) in &version_of_schema {
        assert_eq!(
            versions.len(),
            1,
            "schema {schema} got one version, not {versions:?}"
        );
    }
    let versions: BTreeSet<u32> = version_of_schema.values().flatten().copied().collect();
    assert_eq!(versions, BTreeSet::from([1, 2, 3]));

    let client = provisioned(&nats).await;
    let registry = client.registry().await.unwrap();
    assert_eq!(registry.versions("order.placed").await.unwrap(), [1, 2, 3]);
    assert_eq!(registry.types().await.unwrap(), ["order.placed"]);
    let latest = registry.latest("order.placed").await.unwrap().unwrap();
    assert_eq!(latest.version, 3);
    assert_eq!(latest.schema["$id"], "urn:herald:schema:order.placed:3");
    let v1 = registry.get("order.placed", 1).await.unwrap().unwrap();
    assert_eq!(v1.digest.len(), 64);
}

#[tokio::test]
async fn an_incompatible_version_is_refused_and_nothing_is_written() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let registry = client.registry().await.unwrap();
    let v1 =
        json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]});
    assert!(registry.register("user.signup", &v1).await.unwrap().created);
    let again = registry.register("user.signup", &v1).await.unwrap();
    assert_eq!(
        (again.version, again.created),
        (1, false),
        "same digest, same version"
    );

    let breaking = json!({
        "type": "object",
        "properties": {"id": {"type": "string"}, "plan": {"type": "string"}},
        "required": ["id", "plan"]
    });
    let error = registry
        .register("user.signup", &breaking)
        .await
        .unwrap_err();
    let RegistryError::Incompatible { report, .. } = &error else {
        panic!("expected Incompatible, got {error}");
    };
    assert!(!report.is_compatible());
    assert!(error.to_string().contains("$.plan"), "{error}");
    assert!(
        error
            .to_string()
            .contains("make it optional with a default"),
        "{error}"
    );
    assert_eq!(
        registry.versions("user.signup").await.unwrap(),
        [1],
        "nothing written"
    );
    let keys_after: usize = {
        let kv = client
            .jetstream()
            .get_key_value("herald-schemas")
            .await
            .unwrap();
        let mut keys = kv.keys().await.unwrap();
        let mut count = 0;
        while let Some(key) = futures::StreamExt::next(&mut keys).await {
            key.unwrap();
            count += 1;
        }
        count
    };
    assert_eq!(keys_after, 3, "ver.T.1, latest.T and digest.D only");

    // The dry run says the same; with NONE the change goes through.
    assert!(matches!(
        registry.check("user.signup", &breaking).await.unwrap(),
        herald::registry::CheckOutcome::Incompatible(_)
    ));
    assert_eq!(
        registry.compatibility("user.signup").await.unwrap(),
        CompatibilityMode::FullTransitive
    );
    registry
        .set_compatibility("user.signup", CompatibilityMode::None)
        .await
        .unwrap();
    assert_eq!(
        registry.compatibility("user.signup").await.unwrap(),
        CompatibilityMode::None
    );
    assert_eq!(
        registry
            .register("user.signup", &breaking)
            .await
            .unwrap()
            .version,
        2
    );
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "invoice.paid")]
struct InvoicePaid {
    invoice: String,
    cents: u64,
}

#[tokio::test]
async fn a_client_using_the_registry_registers_on_first_use_and_stamps_the_version() {
    let nats = LocalNats::start().unwrap();
    provisioned(&nats).await;
    let client = Client::builder()
        .use_registry(true)
        .connect(&nats.url())
        .await
        .unwrap();
    let ack = client
        .publish(&InvoicePaid {
            invoice: "inv-1".into(),
            cents: 1200,
        })
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = client
        .jetstream()
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap();
    let message = stream.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(
        message.headers.get("ce-dataschema").unwrap().as_str(),
        "urn:herald:schema:invoice.paid:1"
    );
    let registry = client.registry().await.unwrap();
    let stored = registry.get("invoice.paid", 1).await.unwrap().unwrap();
    assert_eq!(
        stored.digest,
        herald::schema::digest(&InvoicePaid::schema())
    );

    // An untyped publish of a registered type validates against the latest version.
    let other = Client::builder()
        .use_registry(true)
        .connect(&nats.url())
        .await
        .unwrap();
    let error = other
        .publish_value("invoice.paid", &json!({"invoice": 5}), Default::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("$.invoice"), "{error}");
    let ack = other
        .publish_value(
            "invoice.paid",
            &json!({"invoice": "inv-2", "cents": 5}),
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let message = stream.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(
        message.headers.get("ce-dataschema").unwrap().as_str(),
        "urn:herald:schema:invoice.paid:1"
    );
}
