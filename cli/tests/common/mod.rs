//! Helpers shared by the CLI tests: the `herald` binary with a clean environment, and
//! polling with a deadline instead of sleeping.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `herald` binary with every `HERALD_*` and `NATS_*` variable of the caller's
/// environment removed (a developer's `NATS_URL` or `HERALD_NAMESPACE` must not leak into
/// a test), then `NATS_URL` set to `url`.
pub(crate) fn herald_command(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("HERALD_") || text.starts_with("NATS_") {
            command.env_remove(&name);
        }
    }
    command.env("NATS_URL", url);
    command
}

/// The `herald` binary with every `HERALD_*` and `NATS_*` variable of the caller's
/// environment removed and none set: the server comes from `--server` only.
pub(crate) fn herald_bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("HERALD_") || text.starts_with("NATS_") {
            command.env_remove(&name);
        }
    }
    command
}

/// Runs `herald --server <url> <args>` (the server before the command, as with `nats`
/// and `kubectl`) without `NATS_URL`, and waits for it.
pub(crate) fn herald_at(url: &str, args: &[&str]) -> Output {
    herald_bare()
        .arg("--server")
        .arg(url)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Runs `herald <args>` against `url` and waits for it.
pub(crate) fn herald(url: &str, args: &[&str]) -> Output {
    herald_command(url).args(args).output().unwrap()
}

/// Standard output then standard error, as text.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `condition` every 50 ms until it holds; panics with `what` after `deadline`.
pub(crate) async fn eventually<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !condition().await {
        assert!(Instant::now() < until, "not within {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await; // polling, not synchronising
    }
}
