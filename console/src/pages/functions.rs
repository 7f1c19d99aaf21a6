//! `/`: every function; `/functions/{id}`: one, with its runs, dead letters and replay.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Form, Path, Query, State};
use axum::response::{IntoResponse, Response};
use herald_worker::overview::{FlowOverview, FunctionOverview, list_functions};
use maud::{Markup, html};

use super::{dlq, runs, see_other};
use crate::error::{PageError, PageResult};
use crate::layout::{live, notice, page};
use crate::state::AppState;
use crate::util::{encode, given, parse_ms, query};

fn dead_letters(function: &FunctionOverview) -> Markup {
    html! {
        @if function.dead_letters.is_empty() { span.muted { "none" } }
        @for (reason, count) in &function.dead_letters {
            a href={ "/dlq" (query(&[("function", Some(&function.function)), ("reason", Some(reason))])) } {
                (reason) " " (count)
            } " "
        }
    }
}

fn triggers(function: &FunctionOverview) -> Markup {
    html! {
        @for trigger in &function.triggers { code { (trigger) } " " }
        @for cron in &function.crons { code { "cron(" (cron.schedule) ")" } " " }
    }
}

fn paused(function: &FunctionOverview) -> Markup {
    html! {
        @if function.paused {
            span.status.warn { "paused " (function.paused_until.as_deref().unwrap_or("until resumed")) }
        } @else { span.muted { "no" } }
    }
}

/// The flow-control limits seen in use (the settings themselves are not in NATS).
fn limits(flow: &FlowOverview) -> Markup {
    html! {
        @for limit in &flow.concurrency {
            span.limit title={ (limit.slots_held) " slot(s) held over " (limit.keys_active) " key(s)" } {
                @match &limit.shared_name {
                    Some(name) => { "shared " code { (name) } }
                    None => { "concurrency" }
                }
                " ≥" (limit.limit_at_least)
            } " "
        }
        @if flow.throttle_keys > 0 || flow.throttled_runs > 0 { span.limit { "throttle" } " " }
        @if flow.rate_limit_keys > 0 || flow.rate_limited_runs > 0 { span.limit { "rate limit" } " " }
        @if flow.singleton_keys_held > 0 { span.limit { "singleton" } " " }
        @if flow.concurrency.is_empty() && flow.throttle_keys == 0 && flow.throttled_runs == 0
            && flow.rate_limit_keys == 0 && flow.rate_limited_runs == 0 && flow.singleton_keys_held == 0 {
            span.muted { "none seen" }
        }
    }
}

/// Parked runs, with the keys that have the most.
fn parked(flow: &FlowOverview) -> Markup {
    html! {
        @if flow.parked == 0 { span.muted { "0" } } @else {
            (flow.parked) " "
            span.muted {
                @for key in &flow.parked_top_keys {
                    code { (key.scope.strip_prefix("_shared-").map(|n| format!("{n}/")).unwrap_or_default()) (key.key) } "=" (key.runs) " "
                }
            }
        }
    }
}

fn skipped(flow: &FlowOverview) -> Markup {
    html! {
        @if flow.skipped.is_empty() { span.muted { "0" } }
        @for (reason, count) in &flow.skipped { (reason) " " (count) " " }
    }
}

/// `GET /`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> PageResult<Markup> {
    let seen = state.seen.position();
    let functions = list_functions(&state.client, true).await?;
    let flow = state.flow().await?;
    let no_flow = FlowOverview::default();
    let body = html! {
        h1 { "Functions" }
        @if functions.is_empty() {
            p.muted { "No functions yet: start a worker (for example " code { "cargo run -p quickstart" } ")." }
        } @else {
            table #functions {
                thead { tr {
                    th { "Function" } th { "Triggers" } th.num { "Attempts" } th.num { "Lag" }
                    th.num { "Ack pending" } th.num { "Redelivered" } th { "Dead letters" }
                    th { "Last activity" } th.num { "Events/s" } th { "Paused" }
                    th { "Limits in use" } th { "Parked" } th { "Skipped" }
                } }
                tbody {
                    @for function in &functions {
                        tr data-function=(function.function) {
                            td { a href={ "/functions/" (encode(&function.function)) } { (function.function) } }
                            td { (triggers(function)) }
                            td.num { (function.attempts) }
                            td.num { (function.pending) }
                            td.num { (function.ack_pending) }
                            td.num { (function.redelivered) }
                            td { (dead_letters(function)) }
                            td { (function.last_active.as_deref().unwrap_or("never")) }
                            td.num { (state.rate(&function.function, function.delivered_stream_seq)
                                .map_or("–".to_owned(), |r| format!("{r:.1}"))) }
                            td { (paused(function)) }
                            @let flow = flow.functions.get(&function.function).unwrap_or(&no_flow);
                            td.limits { (limits(flow)) }
                            td.parked { (parked(flow)) }
                            td.skipped { (skipped(flow)) }
                        }
                    }
                }
            }
            p.muted { "Limits in use: what the runs bucket shows now (slots held, parked runs, throttle and rate-limit state, skipped runs). The limits' settings are in the workers' code, not stored in NATS." }
        }
    };
    Ok(page(
        &state,
        "Functions",
        "functions",
        live("/", "", seen, false, body),
    ))
}

/// The function page's query: the replay range, and a notice after an action.
#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct FunctionQuery {
    since: Option<String>,
    until: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    notice: Option<String>,
}

fn replay_of(
    state: &AppState,
    id: &str,
    since: &str,
    until: Option<&str>,
    event_type: Option<&str>,
) -> Result<herald_worker::Replay, PageError> {
    let time = |text: &str| {
        parse_ms(text)
            .map(|ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms))
            .ok_or_else(|| PageError::bad_request(format!("{text:?} is not an RFC 3339 time")))
    };
    let mut replay = herald_worker::Replay::new(state.client.clone(), id, time(since)?);
    if let Some(until) = until {
        replay = replay.until(time(until)?);
    }
    if let Some(event_type) = event_type {
        replay = replay.event_type(event_type);
    }
    Ok(replay)
}

/// `GET /functions/{id}`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FunctionQuery>,
) -> PageResult<Markup> {
    let seen = state.seen.position();
    let functions = list_functions(&state.client, false).await?;
    let Some(function) = functions.into_iter().find(|f| f.function == id) else {
        return Err(PageError::not_found(format!(
            "no function {id:?} (no consumer on the events stream)"
        )));
    };
    let mut records = crate::data::latest_runs(&state.client, Some(&id)).await?;
    records.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    records.truncate(20);
    let letters = state
        .letters
        .list(&herald_worker::DeadLetterFilter {
            function: Some(id.clone()),
            limit: Some(20),
            ..Default::default()
        })
        .await?;
    let since = given(q.since.as_ref());
    let until = given(q.until.as_ref());
    let event_type = given(q.event_type.as_ref());
    let dry_run = match since {
        Some(since) => Some(
            replay_of(&state, &id, since, until, event_type)?
                .count()
                .await?,
        ),
        None => None,
    };
    let flow = state.flow().await?;
    let no_flow = FlowOverview::default();
    let flow = flow.functions.get(&id).unwrap_or(&no_flow);
    let self_url = format!("/functions/{}", encode(&id));
    let body = html! {
        h1 { "Function " code { (id) } }
        (notice(q.notice.as_deref()))
        dl.settings {
            dt { "Triggers" } dd { (triggers(&function)) }
            dt { "Attempts" } dd { (function.attempts) }
            dt { "Ack wait" } dd { (function.ack_wait_s) " s" }
            dt { "Concurrency (max ack pending)" } dd { (function.max_ack_pending) }
            dt { "Lag" } dd { (function.pending) }
            dt { "Ack pending / redelivered" } dd { (function.ack_pending) " / " (function.redelivered) }
            dt { "Last activity" } dd { (function.last_active.as_deref().unwrap_or("never")) }
            dt { "Paused" } dd { (paused(&function)) }
            dt { "Flow-control limits in use" } dd #flow-limits { (limits(flow)) }
            dt { "Parked runs (top keys)" } dd #flow-parked { (parked(flow)) }
            dt { "Skipped runs" } dd #flow-skipped { (skipped(flow)) }
        }
        h2 { "Recent runs " a.muted href={ "/runs?function=" (encode(&id)) } { "all" } }
        (runs::table(&records))
        h2 { "Dead letters " a.muted href={ "/dlq?function=" (encode(&id)) } { "all" } }
        (dlq::table(&state, &letters))
        h2 { "Replay" }
        p.muted { "Runs this function again over the events of its triggers stored in a time range; no other function sees them." }
        form.filters method="get" action=(self_url) {
            label { "since (RFC 3339)" input name="since" value=[since] placeholder="2026-11-26T00:00:00Z"; }
            label { "until" input name="until" value=[until]; }
            label { "type" input name="type" value=[event_type]; }
            button type="submit" { "Count (dry run)" }
        }
        @if let (Some(count), Some(since)) = (dry_run, since) {
            p #replay-count { strong { (count) } " events would be replayed." }
            @if !state.config.read_only && count > 0 {
                form method="post" action={ (self_url) "/replay" } {
                    input type="hidden" name="since" value=(since);
                    @if let Some(until) = until { input type="hidden" name="until" value=(until); }
                    @if let Some(t) = event_type { input type="hidden" name="type" value=(t); }
                    label { "rate (events/s) " input name="rate" value="50" size="5"; }
                    " " button type="submit" { "Replay " (count) " events" }
                }
            }
        }
    };
    Ok(page(
        &state,
        &id,
        "functions",
        live(
            &self_url,
            &query(&[("function", Some(&id))]),
            seen,
            false,
            body,
        ),
    ))
}

/// `POST /functions/{id}/replay`: starts the replay in the background.
pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult<Response> {
    let since =
        given(form.get("since")).ok_or_else(|| PageError::bad_request("a replay needs `since`"))?;
    let mut replay = replay_of(
        &state,
        &id,
        since,
        given(form.get("until")),
        given(form.get("type")),
    )?;
    if let Some(rate) = given(form.get("rate")).and_then(|r| r.parse::<f64>().ok()) {
        replay = replay.rate(rate);
    }
    let count = replay.count().await?;
    let function = id.clone();
    tokio::spawn(async move {
        match replay.run(|_| {}).await {
            Ok(outcome) => tracing::info!(%function, replayed = outcome.replayed, "replay done"),
            Err(error) => tracing::warn!(%function, %error, "replay failed"),
        }
    });
    let notice = format!("replaying {count} events");
    Ok(see_other(&format!(
        "/functions/{}{}",
        encode(&id),
        query(&[("notice", Some(&notice))])
    ))
    .into_response())
}
