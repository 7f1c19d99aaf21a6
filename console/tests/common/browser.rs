//! The browser tests' harness: Debian's Chromium driven through chromedriver (headless)
//! with fantoccini, the console served on a loopback port, a screenshot on failure.
#![allow(dead_code, clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::common::Setup;

/// How long a page may take to show what a test waits for.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) fn chromedriver() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("HERALD_CHROMEDRIVER").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromedriver")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

pub(crate) fn chromium() -> PathBuf {
    std::env::var_os("HERALD_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// A chromedriver process and a browser session; the process is killed on drop.
pub(crate) struct Browser {
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
pub(crate) async fn browser(javascript: bool) -> Option<Browser> {
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
pub(crate) async fn serve(setup: &Setup) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = setup.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

pub(crate) fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

/// Runs `body` in a browser; on a panic, saves a screenshot named after the test first.
pub(crate) async fn in_browser<F, Fut>(name: &str, javascript: bool, body: F)
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

pub(crate) async fn wait_for(client: &Client, css: &str) -> fantoccini::elements::Element {
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

pub(crate) async fn type_into(client: &Client, css: &str, text: &str) {
    let field = wait_for(client, css).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// A TCP proxy in front of the console that can drop its connections: `pause` closes every
/// open connection and holds new ones unanswered, `resume` forwards them again.
pub(crate) struct Proxy {
    pub(crate) base: String,
    upstream: String,
    state: Arc<Mutex<ProxyState>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    paused: bool,
    held: Vec<TcpStream>,
    open: Vec<tokio::task::JoinHandle<()>>,
}

fn forward(mut inbound: TcpStream, upstream: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        }
    })
}

impl Proxy {
    /// A proxy on a free loopback port to `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let (shared, target) = (Arc::clone(&state), upstream.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut state = shared.lock();
                if state.paused {
                    state.held.push(inbound);
                } else {
                    let task = forward(inbound, target.clone());
                    state.open.push(task);
                }
            }
        });
        Proxy {
            base,
            upstream,
            state,
            accept,
        }
    }

    /// Closes every open connection; new ones wait unanswered until [`Proxy::resume`].
    pub(crate) fn pause(&self) {
        let mut state = self.state.lock();
        state.paused = true;
        for task in state.open.drain(..) {
            task.abort();
        }
    }

    /// Forwards the connections that waited, and new ones.
    pub(crate) fn resume(&self) {
        let mut state = self.state.lock();
        state.paused = false;
        let held: Vec<TcpStream> = state.held.drain(..).collect();
        for inbound in held {
            let task = forward(inbound, self.upstream.clone());
            state.open.push(task);
        }
    }

    /// How many connections wait unanswered.
    pub(crate) fn waiting(&self) -> usize {
        self.state.lock().held.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.lock().open.drain(..) {
            task.abort();
        }
    }
}

/// Clicks the element at `css` once it appears. A live region may be fetched again between
/// finding the element and clicking it (a change notice arrived): the click is then made on
/// the element that replaced it.
pub(crate) async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match wait_for(client, css).await.click().await {
            Ok(_) => return,
            Err(fantoccini::error::CmdError::Standard(error))
                if error.error == fantoccini::error::ErrorStatus::StaleElementReference
                    && Instant::now() < deadline => {}
            Err(error) => panic!("clicking {css}: {error}"),
        }
    }
}
