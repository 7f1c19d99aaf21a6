//! The console in a real browser: Debian's Chromium driven through chromedriver (headless)
//! with fantoccini. A failing test saves a screenshot under
//! `target/console-screenshots/`. Without chromedriver the tests are skipped, except with
//! `CI=true`, where a missing browser fails them (`.ci/run` installs `chromium` and
//! `chromium-driver`).
//!
//! Run: `cargo test -p herald-console --test browser`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Setup, setup};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;

/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

fn chromedriver() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("HERALD_CHROMEDRIVER").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromedriver")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

fn chromium() -> PathBuf {
    std::env::var_os("HERALD_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// A chromedriver process and a browser session; the process is killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A fresh directory removed on drop (the browser profile).
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Starts chromedriver and a headless Chromium (JavaScript on or off); `None` (the test is
/// skipped) when there is no chromedriver, except under `CI=true`, where that fails.
async fn browser(javascript: bool) -> Option<Browser> {
    let Some(driver_path) = chromedriver() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "chromedriver is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver), or set HERALD_CHROMEDRIVER"
            );
        }
        eprintln!("skipped: no chromedriver (apt-get install chromium chromium-driver)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(driver_path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile =
        std::env::temp_dir().join(format!("herald-console-chromium-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&profile).unwrap();
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,900".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if !javascript {
        args.push("--blink-settings=scriptEnabled=false".into());
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"binary": chromium(), "args": args}),
    );
    // Ready when it accepts a session.
    let deadline = Instant::now() + PATIENCE;
    let client = loop {
        match ClientBuilder::native()
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not start: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Some(Browser {
        client,
        driver,
        _profile: tempfile_dir::Dir(profile),
    })
}

/// Serves the console on a free loopback port; answers its base URL.
async fn serve(setup: &Setup) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = setup.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

/// Runs `body` in a browser; on a panic, saves a screenshot named after the test first.
async fn in_browser<F, Fut>(name: &str, javascript: bool, body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(browser) = browser(javascript).await else {
        return;
    };
    let client = browser.client.clone();
    let outcome = AssertUnwindSafe(body(client.clone())).catch_unwind().await;
    if let Err(panic) = outcome {
        let dir = screenshot_dir();
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{name}.png"));
        if let Ok(png) = client.screenshot().await {
            let _ = std::fs::write(&path, png);
            eprintln!("screenshot of the failure: {}", path.display());
        }
        let _ = client.close().await;
        std::panic::resume_unwind(panic);
    }
    let _ = client.close().await;
}

async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(error) => panic!(
            "{css} never appeared on {:?}: {error}",
            client.current_url().await
        ),
    }
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let field = wait_for(client, css).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

#[tokio::test]
async fn a_published_event_appears_live_on_the_events_page() {
    let setup = setup().await;
    let base = serve(&setup).await;
    in_browser("events_live", true, |client| async move {
        client
            .goto(&format!("{base}/events?type=user.*"))
            .await
            .unwrap();
        wait_for(&client, "#events").await;
        // The page is loaded; events published from now on must appear without a reload
        // (the first may precede the page's SSE connection, so publish until one does).
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (id, _) = setup.publish("live@example.com", None).await;
            let row = format!("#event-rows tr[data-id=\"{id}\"]");
            let shown = client
                .wait()
                .at_most(Duration::from_secs(2))
                .for_element(Locator::Css(&row))
                .await;
            if shown.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no published event appeared live"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn sending_shows_the_json_path_then_the_event_and_its_run() {
    let setup = setup().await;
    let base = serve(&setup).await;
    in_browser("send", true, |client| async move {
        client
            .goto(&format!("{base}/send?type=user.signup"))
            .await
            .unwrap();
        type_into(&client, "form#send textarea", r#"{"plan": 7}"#).await;
        wait_for(&client, "form#send button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        wait_for(&client, "#errors li[data-path=\"$.plan\"]").await;
        type_into(
            &client,
            "form#send textarea",
            r#"{"email": "web@example.com"}"#,
        )
        .await;
        wait_for(&client, "form#send button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        wait_for(&client, "#event-id").await;
        wait_for(
            &client,
            "#event-runs tr[data-function=welcome][data-status=ok]",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_dead_letter_is_redriven_from_the_page_and_its_run_turns_ok() {
    let setup = setup().await;
    let base = serve(&setup).await;
    let (id, _) = setup.publish("dlq@example.com", Some("fail")).await;
    setup.wait_for_page("/dlq", &id).await;
    setup.broken.store(false, Ordering::SeqCst);
    in_browser("redrive", true, |client| async move {
        client
            .goto(&format!("{base}/dlq?function=welcome"))
            .await
            .unwrap();
        wait_for(&client, "tr[data-seq] form button")
            .await
            .click()
            .await
            .unwrap();
        // The run's page, updated live until the redriven run is ok.
        wait_for(&client, "#run-status").await;
        assert!(
            client
                .current_url()
                .await
                .unwrap()
                .path()
                .starts_with("/runs/welcome/")
        );
        wait_for(&client, "#run-status[data-status=ok]").await;
        client.goto(&format!("{base}/dlq")).await.unwrap();
        wait_for(&client, "#no-dead-letters").await;
    })
    .await;
}

#[tokio::test]
async fn a_run_waterfall_has_one_bar_per_attempt_and_step() {
    let setup = setup().await;
    let base = serve(&setup).await;
    let (id, _) = setup.publish("bars@example.com", Some("flaky")).await;
    setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"ok\"")
        .await;
    in_browser("waterfall", true, |client| async move {
        client
            .goto(&format!("{base}/runs/welcome/{id}"))
            .await
            .unwrap();
        wait_for(&client, "#waterfall").await;
        let attempts = client.find_all(Locator::Css(".bar.attempt")).await.unwrap();
        let steps = client.find_all(Locator::Css(".bar.step")).await.unwrap();
        assert_eq!(attempts.len(), 2, "one bar per attempt");
        assert_eq!(steps.len(), 2, "one bar per step");
    })
    .await;
}

#[tokio::test]
async fn the_pages_work_with_javascript_off() {
    let setup = setup().await;
    let base = serve(&setup).await;
    let (id, _) = setup.publish("nojs@example.com", None).await;
    setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"ok\"")
        .await;
    in_browser("no_javascript", false, |client| async move {
        client.goto(&format!("{base}/")).await.unwrap();
        wait_for(&client, "tr[data-function=welcome]").await;
        client
            .goto(&format!("{base}/runs?function=welcome&status=ok"))
            .await
            .unwrap();
        wait_for(&client, &format!("tr[data-run=\"welcome.{id}\"]")).await;
        client
            .goto(&format!("{base}/events?type=user.*"))
            .await
            .unwrap();
        wait_for(&client, &format!("tr[data-id=\"{id}\"]")).await;
        // A form posts and redirects without any script.
        client
            .goto(&format!("{base}/send?type=user.signup"))
            .await
            .unwrap();
        type_into(
            &client,
            "form#send textarea",
            r#"{"email": "plain@example.com"}"#,
        )
        .await;
        wait_for(&client, "form#send button[type=submit]")
            .await
            .click()
            .await
            .unwrap();
        wait_for(&client, "#event-id").await;
        client.goto(&format!("{base}/schemas")).await.unwrap();
        wait_for(&client, "tr[data-type=\"user.signup\"]").await;
    })
    .await;
}

/// Writes the README's screenshots, `docs/img/console-functions.png` and
/// `docs/img/console-run.png`:
/// `cargo test -p herald-console --test browser -- --ignored readme_screenshots`.
#[tokio::test]
#[ignore = "writes the README's screenshots"]
async fn readme_screenshots() {
    let setup = setup().await;
    let base = serve(&setup).await;
    for (email, plan) in [
        ("ada@example.com", None),
        ("bob@example.com", Some("pro")),
        ("cy@example.com", Some("fail")),
    ] {
        setup.publish(email, plan).await;
    }
    let (id, _) = setup.publish("dee@example.com", Some("flaky")).await;
    setup
        .wait_for_page(&format!("/runs/welcome/{id}"), "data-status=\"ok\"")
        .await;
    setup.wait_for_page("/", "terminal_error").await;
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    std::fs::create_dir_all(&images).unwrap();
    in_browser("readme", true, |client| async move {
        client.goto(&format!("{base}/")).await.unwrap();
        wait_for(&client, "tr[data-function=welcome]").await;
        std::fs::write(
            images.join("console-functions.png"),
            client.screenshot().await.unwrap(),
        )
        .unwrap();
        client
            .goto(&format!("{base}/runs/welcome/{id}"))
            .await
            .unwrap();
        wait_for(&client, "#waterfall").await;
        std::fs::write(
            images.join("console-run.png"),
            client.screenshot().await.unwrap(),
        )
        .unwrap();
    })
    .await;
}
