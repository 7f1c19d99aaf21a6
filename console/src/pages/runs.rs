//! `/runs`: the latest state of every run, from the activity records, filtered by the URL.

use std::sync::Arc;

use axum::extract::{Query, State};
use herald_worker::activity::{ActivityKind, ActivityRecord};
use maud::{Markup, html};

use crate::error::{PageError, PageResult};
use crate::layout::{live, page, status};
use crate::state::AppState;
use crate::util::{encode, format_ms, given, parse_ms, query};

/// The statuses a run can be listed with.
pub(crate) const STATUSES: [&str; 9] = [
    "running",
    "ok",
    "retry",
    "continued",
    "sleeping",
    "parked",
    "dead_lettered",
    "cancelled",
    "skipped",
];

/// A run's status from its latest activity record.
pub(crate) fn run_status(record: &ActivityRecord) -> &str {
    match record.kind {
        ActivityKind::Started => "running",
        _ => record.outcome.as_deref().unwrap_or("unknown"),
    }
}

/// The link to a run's page.
pub(crate) fn run_href(function: &str, event_id: &str) -> String {
    format!("/runs/{}/{}", encode(function), encode(event_id))
}

/// A table of runs, one row per latest record.
pub(crate) fn table(records: &[ActivityRecord]) -> Markup {
    html! {
        @if records.is_empty() {
            p.muted { "No runs recorded (runs appear once a worker with activity records handles an event)." }
        } @else {
            table.runs {
                thead { tr {
                    th { "Run" } th { "Function" } th { "Event" } th { "Status" }
                    th.num { "Attempt" } th { "Updated" } th { "Error" }
                } }
                tbody {
                    @for record in records {
                        tr data-run=(record.run) data-status=(run_status(record)) {
                            td { a href=(run_href(&record.function, &record.event_id)) { code { (record.run) } } }
                            td { a href={ "/functions/" (encode(&record.function)) } { (record.function) } }
                            td { code { (record.event_id) } " " span.muted { (record.event_type) } }
                            td { (status(run_status(record))) }
                            td.num { (record.attempt) }
                            td { (format_ms(record.at_ms)) }
                            td.error { (record.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// The runs list's filters, all in the URL.
#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct RunsQuery {
    function: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    event: Option<String>,
}

/// `GET /runs?function=&status=&since=&until=&event=`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<RunsQuery>,
) -> PageResult<Markup> {
    let seen = state.seen.position();
    let function = given(q.function.as_ref());
    let wanted_status = given(q.status.as_ref());
    let event = given(q.event.as_ref());
    let bound = |text: Option<&String>| -> Result<Option<u64>, PageError> {
        given(text)
            .map(|t| {
                parse_ms(t)
                    .ok_or_else(|| PageError::bad_request(format!("{t:?} is not an RFC 3339 time")))
            })
            .transpose()
    };
    let since = bound(q.since.as_ref())?;
    let until = bound(q.until.as_ref())?;
    let mut records = crate::data::latest_runs(&state.client, function).await?;
    records.retain(|r| {
        wanted_status.is_none_or(|s| run_status(r) == s)
            && event.is_none_or(|e| r.event_id == e)
            && since.is_none_or(|s| r.at_ms >= s)
            && until.is_none_or(|u| r.at_ms < u)
    });
    records.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    let total = records.len();
    records.truncate(500);
    let functions: Vec<String> = herald_worker::overview::list_functions(&state.client, false)
        .await?
        .into_iter()
        .map(|f| f.function)
        .collect();
    let self_query = query(&[
        ("function", function),
        ("status", wanted_status),
        ("since", given(q.since.as_ref())),
        ("until", given(q.until.as_ref())),
        ("event", event),
    ]);
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" {
            label { "function" select name="function" {
                option value="" { "all" }
                @for f in &functions { option value=(f) selected[function == Some(f.as_str())] { (f) } }
            } }
            label { "status" select name="status" {
                option value="" { "any" }
                @for s in STATUSES { option value=(s) selected[wanted_status == Some(s)] { (s) } }
            } }
            label { "since" input name="since" value=[given(q.since.as_ref())] placeholder="RFC 3339"; }
            label { "until" input name="until" value=[given(q.until.as_ref())] placeholder="RFC 3339"; }
            label { "event id" input name="event" value=[event]; }
            button type="submit" { "Filter" }
        }
        p.muted #runs-count { (total) " runs" @if total > 500 { " (the newest 500 shown)" } }
        (table(&records))
    };
    Ok(page(
        &state,
        "Runs",
        "runs",
        live(
            &format!("/runs{self_query}"),
            &query(&[("function", function), ("event", event)]),
            seen,
            false,
            body,
        ),
    ))
}
