//! Shared helpers for the console's tests: a real nats-server, a provisioned namespace with
//! a registered schema, a worker running one function with steps, and requests sent to the
//! console's router in process.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::needless_pass_by_value,
    missing_docs,
    unreachable_pub
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald::{Client, Event};
use herald_console::{Console, ConsoleConfig};
use herald_local_nats::LocalNats;
use herald_worker::{Backoff, Ctx, Function, HandlerError, RunningWorker, Worker};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// The event the tests publish: `plan` steers the handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(type = "user.signup")]
pub struct Signup {
    pub email: String,
    #[serde(default)]
    pub plan: Option<String>,
}

pub struct Setup {
    pub nats: LocalNats,
    pub client: Client,
    pub console: Console,
    pub router: Router,
    pub worker: Option<RunningWorker>,
    /// While true, `plan: "fail"` is a terminal error (dead-lettered at once).
    pub broken: Arc<AtomicBool>,
}

/// The function `welcome` on `user.signup`: a step `greet`, then a step `record`.
/// `plan: "flaky"` fails its first attempt (after `greet`); `plan: "fail"` is a terminal
/// error while `broken` is set; `plan: "nap"` sleeps ten minutes (durably) after `greet`.
pub fn welcome(broken: Arc<AtomicBool>) -> Function {
    Function::new("welcome")
        .on::<Signup>()
        .attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(200)))
        .handler(move |signup: Signup, ctx: Ctx| {
            let broken = Arc::clone(&broken);
            async move {
                let email = signup.email.clone();
                let greeting: String = ctx
                    .step("greet", || async move {
                        Ok::<_, HandlerError>(format!("hello {email}"))
                    })
                    .await?;
                match signup.plan.as_deref() {
                    Some("flaky") if ctx.attempt() == 1 => {
                        return Err(HandlerError::retry("the mail server is busy"));
                    }
                    Some("nap") => ctx.sleep("nap", Duration::from_secs(600)).await?,
                    Some("fail") if broken.load(Ordering::SeqCst) => {
                        return Err(HandlerError::terminal("this plan does not exist"));
                    }
                    _ => {}
                }
                ctx.step(
                    "record",
                    || async move { Ok::<_, HandlerError>(greeting.len()) },
                )
                .await?;
                Ok(())
            }
        })
}

pub async fn setup() -> Setup {
    setup_with(ConsoleConfig::default()).await
}

pub async fn setup_with(config: ConsoleConfig) -> Setup {
    let nats = LocalNats::start().unwrap();
    let client = Client::builder()
        .source("urn:herald:service:console-tests")
        .request_timeout(Duration::from_secs(5))
        .connect(&nats.url())
        .await
        .unwrap();
    client.provision().await.unwrap();
    client
        .registry()
        .await
        .unwrap()
        .register("user.signup", &herald::schema::schema_for::<Signup>())
        .await
        .unwrap();
    let broken = Arc::new(AtomicBool::new(true));
    let worker = Worker::builder(client.clone())
        .function(welcome(Arc::clone(&broken)))
        .shutdown_grace(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let console = Console::new(client.clone(), config).await.unwrap();
    let router = console.router();
    Setup {
        nats,
        client,
        console,
        router,
        worker: Some(worker),
        broken,
    }
}

impl Setup {
    /// Publishes a signup and returns its event id.
    pub async fn publish(&self, email: &str, plan: Option<&str>) -> (String, u64) {
        let ack = self
            .client
            .publish(&Signup {
                email: email.into(),
                plan: plan.map(str::to_owned),
            })
            .await
            .unwrap()
            .await
            .unwrap();
        (ack.event_id, ack.sequence)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        answer(&self.router, request).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        post_to(&self.router, path, form, &[]).await
    }

    /// Waits until the page at `path` contains `needle`.
    pub async fn wait_for_page(&self, path: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get(path).await;
            if status == StatusCode::OK && body.contains(needle) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never contained {needle:?}; last answer {status}:\n{body}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn answer(router: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A form POST with extra headers; answers status, `Location` and body.
pub async fn post_to(
    router: &Router,
    path: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let mut request =
        Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body.join("&"))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        location,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Parses HTML and counts the elements matching `selector`.
pub fn count(html: &str, selector: &str) -> usize {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(selector).unwrap();
    document.select(&selector).count()
}

/// The text of the first element matching `selector`.
pub fn text(html: &str, selector: &str) -> String {
    let document = scraper::Html::parse_document(html);
    let selector = scraper::Selector::parse(selector).unwrap();
    document
        .select(&selector)
        .next()
        .map(|e| e.text().collect::<String>())
        .unwrap_or_default()
}
