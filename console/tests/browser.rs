//! The console in a real browser: Debian's Chromium driven through chromedriver (headless)
//! with fantoccini. A failing test saves a screenshot under
//! `target/console-screenshots/`. Without chromedriver the tests are skipped, except with
//! `CI=true`, where a missing browser fails them (`.ci/run` installs `chromium` and
//! `chromium-driver`).
//!
//! Run: `cargo test -p herald-console --test browser`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/browser.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::setup;
use fantoccini::Locator;
use harness::{PATIENCE, Proxy, click, in_browser, serve, type_into, wait_for};

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
async fn the_events_page_loses_nothing_when_its_connection_drops() {
    let setup = setup().await;
    let proxy = Proxy::start(&serve(&setup).await).await;
    let base = proxy.base.clone();
    in_browser("events_resume", true, |client| async move {
        client
            .goto(&format!("{base}/events?type=user.*"))
            .await
            .unwrap();
        wait_for(&client, "#events").await;
        // Connected once a published event appears live.
        let deadline = Instant::now() + PATIENCE;
        let mut published = Vec::new();
        loop {
            let (id, _) = setup.publish("before@example.com", None).await;
            published.push(id.clone());
            let row = format!("#event-rows tr[data-id=\"{id}\"]");
            let shown = client
                .wait()
                .at_most(Duration::from_secs(2))
                .for_element(Locator::Css(&row))
                .await;
            if shown.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "no event appeared live");
        }
        client
            .execute("window.heraldNotReloaded = true; return true;", vec![])
            .await
            .unwrap();
        // The connection drops; the browser's reconnect waits at the proxy while three
        // events are stored, then goes through with its Last-Event-ID.
        proxy.pause();
        let deadline = Instant::now() + PATIENCE;
        while proxy.waiting() == 0 {
            assert!(Instant::now() < deadline, "the browser never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await; // polling, not synchronising
        }
        for n in 0..3 {
            let (id, _) = setup.publish(&format!("gap{n}@example.com"), None).await;
            published.push(id);
        }
        proxy.resume();
        let (id, _) = setup.publish("after@example.com", None).await;
        published.push(id);
        for id in &published {
            wait_for(&client, &format!("#event-rows tr[data-id=\"{id}\"]")).await;
        }
        for id in &published {
            let rows = client
                .find_all(Locator::Css(&format!("#event-rows tr[data-id=\"{id}\"]")))
                .await
                .unwrap();
            assert_eq!(rows.len(), 1, "event {id} shown once");
        }
        let kept = client
            .execute("return window.heraldNotReloaded === true;", vec![])
            .await
            .unwrap();
        assert_eq!(kept, serde_json::json!(true), "resumed without a reload");
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
        click(&client, "tr[data-seq] form button").await;
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
