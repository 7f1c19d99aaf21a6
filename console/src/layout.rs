//! The page shell (navigation, stylesheet, scripts) and shared pieces of markup.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::assets;
use crate::resume::ChangePosition;
use crate::state::AppState;

/// A page of the console: navigation, `body`, and the scripts that make it live.
// Markup is built to be handed over, as the html! macro does with its parts.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn page(state: &AppState, title: &str, active: &str, body: Markup) -> Markup {
    let namespace = state.client.namespace().as_str().to_owned();
    let nav = [
        ("functions", "/", "Functions"),
        ("runs", "/runs", "Runs"),
        ("events", "/events", "Events"),
        ("send", "/send", "Send"),
        ("dlq", "/dlq", "Dead letters"),
        ("schemas", "/schemas", "Schemas"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Herald " (namespace) }
                link rel="stylesheet" href=(assets::CSS_PATH);
                script src=(assets::HTMX_PATH) defer {}
                script src=(assets::SSE_PATH) defer {}
            }
            body {
                header.top {
                    span.brand { "Herald" }
                    span.ns { "namespace " code { (namespace) } }
                    nav {
                        @for (key, href, label) in nav {
                            @if key == "send" && state.config.read_only {
                            } @else {
                                a href=(href) class=[(key == active).then_some("active")] { (label) }
                            }
                        }
                    }
                    @if state.config.read_only { span.badge { "read-only" } }
                }
                main { (body) }
                // A page reloads when it cannot follow its live feed: told `resync` (it fell
                // behind), or reconnected by a new EventSource after the old one closed
                // (htmx's retry, which cannot send Last-Event-ID). The browser's own
                // reconnects send Last-Event-ID and resume without a reload.
                script { (PreEscaped(RELOAD_WHEN_LOST)) }
            }
        }
    }
}

/// A page without navigation (errors, the token prompt).
// Markup is built to be handed over, as the html! macro does with its parts.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · Herald" }
                link rel="stylesheet" href=(assets::CSS_PATH);
            }
            body { main { (body) } }
        }
    }
}

/// A region that fetches its page again (and keeps only itself) whenever the server says
/// something it shows changed: `changes` is the query of `/live/changes`, `seen` the
/// position of the change feeds taken before the page read what it shows (so that a change
/// stored before the browser connects still reaches it). With `poll`, the region also
/// fetches itself every second: for what no change notice announces (a run that finishes
/// quickly on its first delivery publishes no activity record).
// Markup is built to be handed over, as the html! macro does with its parts.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn live(
    self_url: &str,
    changes: &str,
    seen: ChangePosition,
    poll: bool,
    body: Markup,
) -> Markup {
    let separator = if changes.is_empty() { '?' } else { '&' };
    let trigger = if poll {
        "sse:changed throttle:300ms, every 1s"
    } else {
        "sse:changed throttle:300ms"
    };
    html! {
        div hx-ext="sse" sse-connect={ "/live/changes" (changes) (separator) "after=" (seen.id()) } {
            div #live hx-get=(self_url) hx-trigger=(trigger)
                hx-select="#live" hx-target="this" hx-swap="outerHTML" {
                (body)
            }
        }
    }
}

/// A notice above a page's content (after an action).
pub(crate) fn notice(text: Option<&str>) -> Markup {
    html! {
        @if let Some(text) = text.filter(|t| !t.is_empty()) {
            p.notice role="status" { (text) }
        }
    }
}

/// A status as a coloured label.
pub(crate) fn status(status: &str) -> Markup {
    let class = match status {
        "ok" => "ok",
        "running" | "started" | "sleeping" | "parked" | "continued" => "running",
        "retry" | "handed_back" => "warn",
        "dead_lettered" | "failed" => "bad",
        _ => "muted",
    };
    html! { span class={ "status " (class) } { (status) } }
}

/// A form that posts to `action` with one button; absent in read-only mode.
pub(crate) fn action_button(
    state: &AppState,
    action: &str,
    label: &str,
    hidden: &[(&str, &str)],
) -> Markup {
    html! {
        @if !state.config.read_only {
            form.inline method="post" action=(action) {
                @for (name, value) in hidden { input type="hidden" name=(name) value=(value); }
                button type="submit" { (label) }
            }
        }
    }
}

/// The script behind the comment in [`page`].
const RELOAD_WHEN_LOST: &str = "(function(){var lost=false;\
document.addEventListener('htmx:sseError',function(e){var s=e.detail&&e.detail.source;if(s&&s.readyState===2){lost=true}});\
document.addEventListener('htmx:sseOpen',function(e){var s=e.detail&&e.detail.source;if(!s){return}\
if(lost){location.reload();return}\
if(!s.heraldResync){s.heraldResync=true;s.addEventListener('resync',function(){location.reload()})}});})();";
