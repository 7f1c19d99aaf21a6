//! Publishing and provisioning against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use herald::{
    Client, ConnectError, Event, ProvisionOptions, ProvisionOutcome, PublishError, PublishOptions,
    StreamSettings,
};
use herald_local_nats::LocalNats;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.signup")]
struct UserSignup {
    #[event(subject)]
    user_id: String,
    #[schemars(email)]
    email: String,
    #[serde(default)]
    plan: Option<String>,
}

fn signup(n: u32) -> UserSignup {
    UserSignup {
        user_id: format!("user-{n}"),
        email: format!("user{n}@example.com"),
        plan: None,
    }
}

async fn provisioned(nats: &LocalNats) -> Client {
    let client = Client::builder()
        .source("urn:herald:service:tests")
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    client
}

async fn stored_messages(client: &Client) -> u64 {
    let mut stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

fn headers_of(message: &async_nats::jetstream::message::StreamMessage) -> BTreeMap<String, String> {
    message
        .headers
        .iter()
        .map(|(name, values)| (name.to_string(), values[0].to_string()))
        .collect()
}

#[tokio::test]
async fn every_envelope_header_is_set_with_exact_names_and_values() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tests")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let span = tracing::info_span!("connect_source");
    let trace_id = span.context().span().span_context().trace_id();
    let before = SystemTime::now();
    let ack = async { client.publish(&signup(1)).await.unwrap().await.unwrap() }
        .instrument(span)
        .await;

    assert_eq!(ack.stream, "HERALD_EVENTS");
    assert!(!ack.duplicate);
    let stream = client
        .jetstream()
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap();
    let message = stream.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(message.subject.as_str(), "herald.events.user.signup");
    let headers = headers_of(&message);

    let names: Vec<&str> = headers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "Nats-Msg-Id",
            "ce-id",
            "ce-source",
            "ce-specversion",
            "ce-subject",
            "ce-type",
            "traceparent"
        ]
    );
    assert_eq!(headers["ce-specversion"], "1.0");
    assert_eq!(headers["ce-type"], "user.signup");
    assert_eq!(headers["ce-source"], "urn:herald:service:tests");
    // Not written: an event without it is JSON (protocol section 4).
    assert!(!headers.contains_key("ce-datacontenttype"));
    assert_eq!(headers["ce-subject"], "user-1");
    assert_eq!(headers["ce-id"], ack.event_id);
    assert_eq!(headers["Nats-Msg-Id"], ack.event_id);
    let id = uuid::Uuid::parse_str(&headers["ce-id"]).unwrap();
    assert_eq!(id.get_version_num(), 7, "ce-id is a UUIDv7");

    // No `ce-time`: the UUIDv7 id tells when the event happened, to the millisecond.
    let time = herald::headers::time_of_event_id(&headers["ce-id"]).unwrap();
    let millisecond = Duration::from_millis(1);
    assert!(time + millisecond >= before && time <= SystemTime::now());

    let traceparent = &headers["traceparent"];
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent} carries trace {trace_id}"
    );
    assert!(traceparent.ends_with("-01"), "sampled: {traceparent}");

    let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"user_id": "user-1", "email": "user1@example.com", "plan": null})
    );
}

#[tokio::test]
async fn an_event_with_a_chosen_id_or_time_carries_ce_time() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let stream = client
        .jetstream()
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap();
    let before = SystemTime::now();
    let chosen_id = PublishOptions {
        id: Some("signup-7".into()),
        ..Default::default()
    };
    let ack = client
        .publish_with(&signup(7), chosen_id)
        .await
        .unwrap()
        .await
        .unwrap();
    let headers = headers_of(&stream.get_raw_message(ack.sequence).await.unwrap());
    // RFC 3339 UTC, microseconds, within this test's run time.
    let time = &headers["ce-time"];
    assert_eq!(time.len(), "2026-11-25T07:30:00.123456Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert!(time.as_str() >= herald::headers::format_time(before).as_str());
    assert!(time.as_str() <= herald::headers::format_time(SystemTime::now()).as_str());

    let yesterday = SystemTime::now() - Duration::from_secs(86_400);
    let chosen_time = PublishOptions {
        time: Some(yesterday),
        ..Default::default()
    };
    let ack = client
        .publish_with(&signup(8), chosen_time)
        .await
        .unwrap()
        .await
        .unwrap();
    let headers = headers_of(&stream.get_raw_message(ack.sequence).await.unwrap());
    assert_eq!(headers["ce-time"], herald::headers::format_time(yesterday));
    assert!(uuid::Uuid::parse_str(&headers["ce-id"]).is_ok());
}

#[tokio::test]
async fn non_ascii_subjects_are_percent_encoded() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let options = PublishOptions {
        subject: Some("José García".into()),
        ..Default::default()
    };
    let ack = client
        .publish_with(&signup(2), options)
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = client
        .jetstream()
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap();
    let headers = headers_of(&stream.get_raw_message(ack.sequence).await.unwrap());
    assert_eq!(headers["ce-subject"], "Jos%C3%A9%20Garc%C3%ADa");
    assert_eq!(
        herald::headers::decode_value(&headers["ce-subject"]).unwrap(),
        "José García"
    );
    assert!(
        !headers.contains_key("traceparent"),
        "no span, no trace context"
    );
}

#[tokio::test]
async fn a_repeated_id_is_reported_as_duplicate_not_an_error() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let with_id = || PublishOptions {
        id: Some("signup-order-42".into()),
        ..Default::default()
    };
    let first = client
        .publish_with(&signup(1), with_id())
        .await
        .unwrap()
        .await
        .unwrap();
    let second = client
        .publish_with(&signup(1), with_id())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.sequence, first.sequence);
    assert_eq!(second.event_id, "signup-order-42");
    assert_eq!(stored_messages(&client).await, 1);

    let bad_id = PublishOptions {
        id: Some("has space".into()),
        ..Default::default()
    };
    let error = client.publish_with(&signup(1), bad_id).await.unwrap_err();
    assert!(matches!(error, PublishError::InvalidName(_)), "{error}");
}

#[tokio::test]
async fn ten_thousand_pipelined_publishes_are_all_acked_in_order() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let mut pending = Vec::with_capacity(10_000);
    for n in 0..10_000 {
        pending.push(client.publish(&signup(n)).await.unwrap());
    }
    for (expected, ack) in (1..).zip(pending) {
        let ack = ack.await.unwrap();
        assert_eq!(ack.sequence, expected, "acks arrive in publish order");
        assert!(!ack.duplicate);
    }
    assert_eq!(stored_messages(&client).await, 10_000);
}

#[tokio::test]
async fn an_invalid_payload_is_refused_with_its_json_paths_and_nothing_is_stored() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;

    let typed = UserSignup {
        user_id: "u1".into(),
        email: "not an e-mail address".into(),
        plan: None,
    };
    let error = client.publish(&typed).await.unwrap_err();
    let PublishError::InvalidPayload {
        event_type,
        violations,
    } = &error
    else {
        panic!("expected InvalidPayload, got {error}");
    };
    assert_eq!(event_type, "user.signup");
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].path, "$.email");
    assert!(error.to_string().contains("$.email"), "{error}");

    let untyped = serde_json::json!({"email": "a@example.com", "plan": 3});
    let error = client
        .publish_value("user.signup", &untyped, PublishOptions::default())
        .await
        .unwrap_err();
    let PublishError::InvalidPayload { violations, .. } = &error else {
        panic!("expected InvalidPayload, got {error}");
    };
    let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"$.plan"), "{error}");
    assert!(
        paths.contains(&"$"),
        "the missing user_id is reported at the root: {error}"
    );
    assert!(error.to_string().contains("user_id"), "{error}");

    assert_eq!(stored_messages(&client).await, 0, "nothing was stored");

    // The same payload goes through when validation is turned off for this publish.
    let options = PublishOptions {
        validate: Some(false),
        ..Default::default()
    };
    client
        .publish_value("user.signup", &untyped, options)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(stored_messages(&client).await, 1);
}

#[tokio::test]
async fn untyped_publishing_checks_the_type_name_and_needs_a_known_schema() {
    let nats = LocalNats::start().unwrap();
    let client = provisioned(&nats).await;
    let data = serde_json::json!({"user_id": "u1", "email": "a@example.com"});

    let error = client
        .publish_value("User.Signup", &data, PublishOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::InvalidName(_)), "{error}");
    assert!(error.to_string().contains("upper case"), "{error}");

    let error = client
        .publish_value("user.signup", &data, PublishOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, PublishError::UnknownSchema { .. }),
        "{error}"
    );

    client.add_local_schema::<UserSignup>().await.unwrap();
    let ack = client
        .publish_value("user.signup", &data, PublishOptions::default())
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
    assert_eq!(message.subject.as_str(), "herald.events.user.signup");
    assert_eq!(headers_of(&message)["ce-type"], "user.signup");
}

#[tokio::test]
async fn a_payload_over_the_server_max_is_refused_before_sending() {
    let nats = LocalNats::builder().max_payload(4096).start().unwrap();
    let client = provisioned(&nats).await;
    let big = UserSignup {
        user_id: "u1".into(),
        email: "a@example.com".into(),
        plan: Some("x".repeat(5000)),
    };
    let error = client.publish(&big).await.unwrap_err();
    let PublishError::PayloadTooLarge { size, max, .. } = error else {
        panic!("expected PayloadTooLarge, got {error}");
    };
    assert_eq!(max, 4096);
    assert!(size > 5000);
    assert_eq!(stored_messages(&client).await, 0);
}

#[tokio::test]
async fn publishing_before_provisioning_says_there_is_no_stream() {
    let nats = LocalNats::start().unwrap();
    let client = Client::connect(&nats.url()).await.unwrap();
    let error = client.publish(&signup(1)).await.unwrap().await.unwrap_err();
    let PublishError::NoStream { subject } = &error else {
        panic!("expected NoStream, got {error}");
    };
    assert_eq!(subject, "herald.events.user.signup");
    assert!(error.to_string().contains("provision"), "{error}");
}

#[tokio::test]
async fn an_ack_lost_to_a_stopped_server_is_reported_as_disconnected() {
    let mut nats = LocalNats::start().unwrap();
    let client = Client::builder()
        .request_timeout(Duration::from_millis(500))
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    nats.stop_node(0).unwrap();
    let outcome = match client.publish(&signup(1)).await {
        Ok(pending) => pending.await.map(drop),
        Err(error) => Err(error),
    };
    let error = outcome.unwrap_err();
    assert!(
        matches!(error, PublishError::Disconnected { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("same id"), "{error}");
}

#[tokio::test]
async fn provisioning_twice_is_a_no_op_and_drift_is_reported_then_applied_on_request() {
    let nats = LocalNats::start().unwrap();
    let client = Client::connect(&nats.url()).await.unwrap();

    let first = client.provision().await.unwrap();
    assert_eq!(first.resources.len(), 8);
    assert!(
        first
            .resources
            .iter()
            .all(|r| r.outcome == ProvisionOutcome::Created),
        "{first}"
    );
    let second = client.provision().await.unwrap();
    assert!(
        second
            .resources
            .iter()
            .all(|r| r.outcome == ProvisionOutcome::Unchanged),
        "{second}"
    );

    // Someone shortens the events stream's retention by hand (and its duplicate window,
    // which the server keeps within the retention).
    let js = client.jetstream();
    let mut config = js
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    config.max_age = Duration::from_secs(3600);
    config.duplicate_window = Duration::from_secs(3600);
    js.update_stream(config).await.unwrap();

    let report = client.provision().await.unwrap();
    assert!(!report.is_converged());
    let drifted: Vec<_> = report.drifted().collect();
    assert_eq!(drifted.len(), 1);
    assert_eq!(drifted[0].0, "HERALD_EVENTS");
    let fields: Vec<&str> = drifted[0].1.iter().map(|d| d.field).collect();
    assert_eq!(fields, ["max_age", "duplicate_window"], "{report}");
    assert_eq!(drifted[0].1[0].expected, "604800s");
    assert_eq!(drifted[0].1[0].actual, "3600s");
    assert!(
        report
            .to_string()
            .contains("max_age: expected 604800s, found 3600s"),
        "{report}"
    );
    let max_age = js
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .max_age;
    assert_eq!(
        max_age,
        Duration::from_secs(3600),
        "reporting changes nothing"
    );

    let applied = client
        .provision_with(ProvisionOptions {
            apply_changes: true,
        })
        .await
        .unwrap();
    assert!(
        matches!(applied.resources[1].outcome, ProvisionOutcome::Updated(_)),
        "{applied}"
    );
    let max_age = js
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .max_age;
    assert_eq!(max_age, Duration::from_secs(7 * 86_400));
    assert!(client.provision().await.unwrap().is_converged());
}

#[tokio::test]
async fn user_and_password_are_required_and_wrong_ones_get_a_clear_error() {
    let nats = LocalNats::builder()
        .user_password("herald", "s3cret")
        .start()
        .unwrap();
    let client = Client::builder()
        .user_and_password("herald", "s3cret")
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    client.publish(&signup(1)).await.unwrap().await.unwrap();

    let error = Client::builder()
        .user_and_password("herald", "wrong")
        .connect(&nats.url())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConnectError::Unauthorized { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("refused the credentials"),
        "{error}"
    );

    let error = Client::connect(&nats.url()).await.unwrap_err();
    assert!(
        matches!(error, ConnectError::Unauthorized { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_bad_namespace_or_unreachable_server_is_a_clear_connect_error() {
    let error = Client::builder()
        .namespace("Bad Name")
        .connect("nats://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectError::InvalidName(_)), "{error}");
    let error = Client::connect("nats://127.0.0.1:1").await.unwrap_err();
    assert!(matches!(error, ConnectError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("herald dev"), "{error}");
}

#[tokio::test]
async fn a_three_node_cluster_keeps_accepting_publishes_with_one_node_stopped() {
    let mut cluster = LocalNats::cluster(3).unwrap();
    let client = Client::builder()
        .streams(StreamSettings {
            replicas: Some(3),
            ..Default::default()
        })
        .request_timeout(Duration::from_secs(2))
        .connect(&cluster.url())
        .await
        .unwrap();
    // A cluster just started may not have heard from every peer yet: placing three
    // replicas is refused (no suitable peers) until it has. Polled with a deadline; the
    // pause only spaces the attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.provision().await {
            Ok(_) => break,
            Err(herald::ProvisionError::NoPlacement { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("provisioning the cluster: {error}"),
        }
    }
    let info = client
        .jetstream()
        .get_stream("HERALD_EVENTS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(
        info.cluster.unwrap().replicas.len(),
        2,
        "two followers besides the leader"
    );

    for n in 0..10 {
        client.publish(&signup(n)).await.unwrap().await.unwrap();
    }
    cluster.stop_node(1).unwrap();

    // With the same id, a publish retried after a leader change is stored once.
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 10..20 {
        let options = || PublishOptions {
            id: Some(format!("cluster-{n}")),
            ..Default::default()
        };
        loop {
            let outcome = match client.publish_with(&signup(n), options()).await {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
            match outcome {
                Ok(_) => break,
                Err(error) if Instant::now() < deadline => {
                    // Polling for a new stream leader; the interval only spaces the attempts.
                    eprintln!("retrying event {n} after: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no publish accepted within 30 s: {error}"),
            }
        }
    }
    assert_eq!(stored_messages(&client).await, 20);
}

#[tokio::test]
async fn holding_more_pending_acks_than_the_limit_is_an_error_not_a_hang() {
    let nats = LocalNats::start().unwrap();
    let client = Client::builder()
        .max_pending_acks(100)
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    let mut pending = Vec::new();
    for n in 0..100 {
        pending.push(client.publish(&signup(n)).await.unwrap());
    }
    let error = client.publish(&signup(100)).await.unwrap_err();
    assert!(
        matches!(error, PublishError::TooManyPending { limit: 100 }),
        "{error}"
    );
    for ack in pending {
        ack.await.unwrap();
    }
    client.publish(&signup(101)).await.unwrap().await.unwrap();
    assert_eq!(stored_messages(&client).await, 101);
}
