//! `/runs/{function}/{event_id}`: one run: its waterfall, attempts, steps, failure, trace
//! id; cancel.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use herald_worker::activity::ActivityKind;
use herald_worker::{CancelOutcome, StepRecord};
use maud::{Markup, html};

use super::runs::{run_href, run_status};
use super::{see_other, waterfall};
use crate::error::PageResult;
use crate::layout::{action_button, live, notice, page, status};
use crate::state::AppState;
use crate::util::{duration_text, encode, format_ms, now_ms, pretty, query};

/// A notice after an action.
#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct Notice {
    notice: Option<String>,
}

/// `GET /runs/{function}/{event_id}`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path((function, event_id)): Path<(String, String)>,
    Query(q): Query<Notice>,
) -> PageResult<Markup> {
    let seen = state.seen.position();
    let event_key = herald_worker::event_key(&event_id);
    let report = state.runs.inspect(&function, &event_id).await?;
    let records = crate::data::run_activity(&state.client, &function, &event_key).await?;
    let latest = records.last();
    let run_state = match (&report.outcome, latest) {
        (Some(outcome), _) => serde_json::to_value(outcome.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "finished".to_owned()),
        (None, Some(latest)) => run_status(latest).to_owned(),
        (None, None) => "unknown".to_owned(),
    };
    let finished = report.outcome.is_some();
    let trace_id = records.iter().rev().find_map(|r| r.trace_id.clone());
    let stream_seq = records.first().map(|r| r.stream_seq).filter(|s| *s > 0);
    let bars = waterfall::bars(&records, &report.steps, now_ms());
    let href = run_href(&function, &event_id);
    let body = html! {
        h1 { "Run " code { (report.run_key) } }
        (notice(q.notice.as_deref()))
        dl.settings {
            dt { "Function" } dd { a href={ "/functions/" (encode(&function)) } { (function) } }
            dt { "Event" } dd {
                code { (event_id) }
                @if let Some(seq) = stream_seq { " " a href={ "/events/" (seq) } { "#" (seq) } }
                @if let Some(t) = latest.map(|r| r.event_type.as_str()).filter(|t| !t.is_empty()) { " " span.muted { (t) } }
            }
            dt { "Status" } dd #run-status data-status=(run_state) { (status(&run_state))
                @if let Some(detail) = report.outcome.as_ref().and_then(|o| o.detail.as_deref()) { " " span.muted { (detail) } }
                @if let Some(outcome) = &report.outcome { " at " (outcome.finished_at) }
            }
            dt { "Trace id" } dd { @if let Some(t) = &trace_id { code #trace-id { (t) } } @else { span.muted { "none recorded" } } }
        }
        @if !finished && latest.is_some() {
            (action_button(&state, &format!("{href}/cancel"), "Cancel this run", &[]))
        }
        @if report.outcome.is_none() && report.failure.is_none() && report.steps.is_empty() && records.is_empty() {
            p.muted { "No stored state for this run: it never ran, its records expired, its worker runs without activity records, or it was a plain first delivery that succeeded without steps, which is acked without a record (the runs list shows it from the consumer's ack floor)." }
        }
        h2 { "Waterfall" }
        (waterfall::render(&bars))
        @if let Some(failure) = &report.failure {
            h2 { "Failing" }
            p.error { @match &failure.step {
                Some(step) => { "step " code { (step) } }
                None => { "after step " (failure.position) }
            } " failed " (failure.failures) " time(s): " (failure.error) }
        }
        h2 { "Attempts" }
        (attempts(&records))
        h2 { "Steps" }
        (steps(&report.steps))
    };
    let changes = query(&[("run", Some(&report.run_key))]);
    Ok(page(
        &state,
        &report.run_key,
        "runs",
        live(&href, &changes, seen, false, body),
    ))
}

fn attempts(records: &[herald_worker::activity::ActivityRecord]) -> Markup {
    html! {
        @if records.is_empty() { p.muted { "No activity records." } } @else {
            table #attempts {
                thead { tr { th.num { "Attempt" } th { "Started" } th { "Ended" } th { "Took" } th { "Outcome" } th { "Error" } } }
                tbody {
                    @for (index, record) in records.iter().enumerate() {
                        @if record.kind == ActivityKind::Finished {
                            tr {
                                td.num { (record.attempt) }
                                td { (record.started_ms.map(format_ms).unwrap_or_default()) }
                                td { (format_ms(record.at_ms)) }
                                td { (record.started_ms.map(|s| duration_text(record.at_ms.saturating_sub(s))).unwrap_or_default()) }
                                td { (status(record.outcome.as_deref().unwrap_or(""))) }
                                td.error { (record.error.as_deref().unwrap_or("")) }
                            }
                        } @else if index + 1 == records.len() {
                            tr { td.num { (record.attempt) } td { (format_ms(record.at_ms)) } td { "–" } td { "–" } td { (status("running")) } td {} }
                        }
                    }
                }
            }
        }
    }
}

fn steps(steps: &[(String, StepRecord)]) -> Markup {
    html! {
        @if steps.is_empty() { p.muted { "No durable steps." } } @else {
            table #steps {
                thead { tr { th { "Step" } th { "Status" } th.num { "Attempts" } th { "Took" } th { "Finished" } th { "Output" } } }
                tbody {
                    @for (key, record) in steps {
                        @match record {
                            StepRecord::Ok { output, attempts, duration_ms, finished_at } => {
                                tr { td { code { (key) } } td { (status("ok")) } td.num { (attempts) }
                                     td { (duration_text(*duration_ms)) } td { (finished_at) }
                                     td { pre { (pretty(output.to_string().as_bytes())) } } }
                            }
                            StepRecord::Sleeping { wake_at_ms } => {
                                tr { td { code { (key) } } td { (status("sleeping")) } td.num {} td {}
                                     td { "wakes at " (format_ms(*wake_at_ms)) } td {} }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /runs/{function}/{event_id}/cancel`.
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path((function, event_id)): Path<(String, String)>,
) -> PageResult<Response> {
    let outcome = herald_worker::cancel_run(
        &state.client,
        &function,
        &event_id,
        "cancelled in the console",
    )
    .await?;
    let notice = match outcome {
        CancelOutcome::Cancelled { woken: true } => {
            "cancelled; the run was waiting and ends now".to_owned()
        }
        CancelOutcome::Cancelled { .. } => "cancelled: no further step runs".to_owned(),
        CancelOutcome::AlreadyCancelled(first) => format!("already cancelled: {first}"),
        CancelOutcome::AlreadyFinished(status) => {
            format!("the run already finished ({status:?}); nothing to cancel")
        }
        other => format!("{other:?}"),
    };
    Ok(see_other(&format!(
        "{}{}",
        run_href(&function, &event_id),
        query(&[("notice", Some(&notice))])
    )))
}
