//! `/events`: the newest events and a live tail, filtered by a type pattern;
//! `/events/{seq}`: one event's headers, payload and the runs it caused in every function.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use super::runs::{run_href, run_status};
use crate::data::{StoredEvent, event_at, recent_events};
use crate::error::{PageError, PageResult};
use crate::layout::{live, page, status};
use crate::state::AppState;
use crate::util::{given, pattern_matches, pretty, query};

/// How many stored events the list looks through.
const SCAN: u64 = 5_000;

/// One event as a table row (also sent live).
pub(crate) fn row(event: &StoredEvent) -> Markup {
    let preview: String = String::from_utf8_lossy(&event.payload)
        .chars()
        .take(160)
        .collect();
    html! {
        tr id={ "event-" (event.sequence) } data-type=(event.event_type) data-id=(event.id) {
            td.num { a href={ "/events/" (event.sequence) } { "#" (event.sequence) } }
            td { (event.time) }
            td { code { (event.event_type) } }
            td { code { (event.id) } }
            td { code.muted { (preview) } }
        }
    }
}

/// The events list's filters.
#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct EventsQuery {
    #[serde(rename = "type")]
    pattern: Option<String>,
    id: Option<String>,
}

/// `GET /events?type=P&id=I`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<EventsQuery>,
) -> PageResult<Markup> {
    let pattern = given(q.pattern.as_ref()).unwrap_or(">");
    if herald::EventType::new(pattern.replace(['*', '>'], "x")).is_err() {
        return Err(PageError::bad_request(format!(
            "{pattern:?} is not an event type pattern (tokens joined by `.`, `*` one token, `>` the rest)"
        )));
    }
    let id = given(q.id.as_ref());
    let events = recent_events(&state.client, pattern, id, 100, SCAN).await?;
    let live_query = query(&[("type", Some(pattern))]);
    let body = html! {
        h1 { "Events" }
        form.filters method="get" action="/events" {
            label { "type pattern" input name="type" value=(pattern) placeholder="user.*"; }
            label { "event id" input name="id" value=[id]; }
            button type="submit" { "Filter" }
        }
        p.muted { "The newest events of the last " (SCAN) " stored"
            @if id.is_none() { "; new ones appear at the top as they are stored" } "." }
        div hx-ext="sse" sse-connect={ "/live/events" (live_query) } {
            table #events {
                thead { tr { th.num { "Seq" } th { "Time" } th { "Type" } th { "Id" } th { "Payload" } } }
                tbody #event-rows sse-swap=[id.is_none().then_some("event")] hx-swap="afterbegin" {
                    @for event in &events { (row(event)) }
                }
            }
        }
    };
    Ok(page(&state, "Events", "events", body))
}

/// `GET /events/{seq}`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(sequence): Path<u64>,
) -> PageResult<Markup> {
    let seen = state.seen.position();
    let event = event_at(&state.client, sequence).await?;
    let namespace = state.client.namespace();
    let redrive_prefix = namespace.redrive_subject("");
    let only = event
        .subject
        .strip_prefix(&redrive_prefix)
        .map(|rest| rest.split('.').next().unwrap_or_default().to_owned());
    let functions = herald_worker::overview::list_functions(&state.client, false).await?;
    let mut runs = Vec::new();
    for function in functions.iter().filter(|f| match &only {
        Some(only) => &f.function == only,
        None => f
            .triggers
            .iter()
            .any(|t| pattern_matches(t, &event.event_type)),
    }) {
        let report = state.runs.inspect(&function.function, &event.id).await?;
        let key = herald_worker::event_key(&event.id);
        let activity = crate::data::run_activity(&state.client, &function.function, &key).await?;
        let status_text = match (&report.outcome, activity.last()) {
            (Some(outcome), _) => serde_json::to_value(outcome.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            (None, Some(latest)) => run_status(latest).to_owned(),
            (None, None) => "not started".to_owned(),
        };
        runs.push((function.function.clone(), status_text, activity.len()));
    }
    let self_url = format!("/events/{sequence}");
    let body = html! {
        h1 { "Event " code { "#" (sequence) } }
        dl.settings {
            dt { "Type" } dd { code { (event.event_type) } }
            dt { "Id" } dd { code #event-id { (event.id) } }
            dt { "Time" } dd { (event.time) }
            dt { "Subject" } dd { code { (event.subject) } }
        }
        @if !state.config.read_only {
            p { a href={ "/send" (query(&[("type", Some(&event.event_type)), ("from", Some(&sequence.to_string()))])) } { "Edit and send as a new event" } }
        }
        h2 { "Runs" }
        @if runs.is_empty() { p.muted { "No function is triggered by " code { (event.event_type) } "." } } @else {
            table #event-runs {
                thead { tr { th { "Function" } th { "Status" } th.num { "Activity records" } } }
                tbody { @for (function, state_text, count) in &runs {
                    tr data-function=(function) data-status=(state_text) {
                        td { a href=(run_href(function, &event.id)) { (function) } }
                        td { (status(state_text)) }
                        td.num { (count) }
                    }
                } }
            }
        }
        h2 { "Payload" }
        pre #payload { (pretty(&event.payload)) }
        h2 { "Headers" }
        table #headers { tbody {
            @for (name, values) in event.headers.iter() {
                @for value in values { tr { td { code { (name.to_string()) } } td { code { (value.as_str()) } } } }
            }
        } }
    };
    let changes = query(&[("event", Some(&event.id))]);
    Ok(page(
        &state,
        &format!("Event #{sequence}"),
        "events",
        live(
            &self_url,
            &changes,
            seen,
            awaits_runs(&event.id, &runs),
            body,
        ),
    ))
}

/// How long after an event its page keeps asking for its runs' outcomes every second.
const RUNS_AWAITED_FOR_MS: u64 = 60_000;

/// Whether the page of an event made in the last minute (by its UUIDv7 id) shows a run
/// without an outcome: a run that finishes quickly on its first delivery publishes no
/// activity record, so the page asks again by itself.
fn awaits_runs(event_id: &str, runs: &[(String, String, usize)]) -> bool {
    let made_ms = herald::headers::time_of_event_id(event_id)
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    let recent = made_ms
        .is_some_and(|made| crate::util::now_ms().saturating_sub(made) < RUNS_AWAITED_FOR_MS);
    recent
        && runs.iter().any(|(_, status, _)| {
            !matches!(
                status.as_str(),
                "ok" | "dead_lettered" | "cancelled" | "skipped"
            )
        })
}
