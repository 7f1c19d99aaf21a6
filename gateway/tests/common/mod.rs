//! Shared helpers for the gateway's tests: a real nats-server, a provisioned namespace with
//! a registered schema, keys, and requests sent to the router in process.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::needless_pass_by_value,
    missing_docs,
    unreachable_pub
)]

pub mod python;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use herald::{Client, Event};
use herald_gateway::keys::{Keys, NewKey, Rate};
use herald_gateway::{Gateway, GatewayConfig};
use herald_local_nats::LocalNats;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// The event the tests send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.signup")]
pub struct UserSignup {
    pub email: String,
    #[serde(default)]
    pub plan: Option<String>,
}

pub struct Setup {
    pub nats: LocalNats,
    pub client: Client,
    pub gateway: Gateway,
    pub router: Router,
    /// A key for every type, with a generous rate.
    pub token: String,
    pub keys: Keys,
}

pub async fn connect(url: &str) -> Client {
    Client::builder()
        .source("urn:herald:service:gateway-tests")
        .use_registry(true)
        .request_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .unwrap()
}

/// A server, the namespace provisioned, `user.signup` registered, a gateway and a key.
pub async fn setup() -> Setup {
    setup_with(GatewayConfig::default()).await
}

pub async fn setup_with(config: GatewayConfig) -> Setup {
    let nats = LocalNats::start().unwrap();
    let client = connect(&nats.url()).await;
    client.provision().await.unwrap();
    client.add_local_schema::<UserSignup>().await.unwrap();
    let keys = Keys::open(&client).await.unwrap();
    let token = keys
        .create(NewKey {
            name: "tests".into(),
            rate: Rate {
                per_s: 10_000,
                burst: 10_000,
            },
            ..Default::default()
        })
        .await
        .unwrap()
        .token;
    let gateway = Gateway::new(client.clone(), config).await.unwrap();
    let router = gateway.router();
    Setup {
        nats,
        client,
        gateway,
        router,
        token,
        keys,
    }
}

/// An answer: status, headers (first value, lower-case names), body as JSON (or a string).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: BTreeMap<String, String>,
    pub body: serde_json::Value,
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response: Response<Body> = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status,
        headers,
        body,
    }
}

/// A binary-mode request for `user.signup` with id `id` and body `data`.
pub fn binary(token: &str, id: &str, data: &serde_json::Value) -> Request<Body> {
    Request::post("/v1/events")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "user.signup")
        .header("ce-source", "urn:example:service:signup")
        .body(Body::from(serde_json::to_vec(data).unwrap()))
        .unwrap()
}

/// A structured event object.
pub fn structured_event(id: &str, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0", "id": id, "type": "user.signup",
        "source": "urn:example:service:signup", "data": data
    })
}

pub fn json_request(
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &serde_json::Value,
) -> Request<Body> {
    let mut builder = Request::post(path).header("content-type", content_type);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// Messages stored in `NS_EVENTS`.
pub async fn stored_count(client: &Client) -> u64 {
    let mut stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    stream.info().await.unwrap().state.messages
}

/// The stored message at `seq`: headers (first value of each) and payload.
pub async fn stored(client: &Client, seq: u64) -> (BTreeMap<String, String>, serde_json::Value) {
    let stream = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .unwrap();
    let message = stream.get_raw_message(seq).await.unwrap();
    let headers = message
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v[0].to_string()))
        .collect();
    (headers, serde_json::from_slice(&message.payload).unwrap())
}

/// Polls `check` every 20 ms until it is true or `deadline` passes.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
