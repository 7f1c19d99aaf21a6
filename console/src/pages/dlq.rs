//! `/dlq`: dead letters filtered by the URL; inspect one, redrive one or all at a rate,
//! edit a payload and redrive it (checked against the schema), purge with confirmation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald::schema::Violation;
use herald_worker::{DeadLetterEntry, DeadLetterFilter};
use maud::{Markup, html};

use super::runs::run_href;
use super::see_other;
use super::send::errors;
use crate::error::{PageError, PageResult};
use crate::layout::{action_button, live, notice, page};
use crate::state::AppState;
use crate::util::{given, pretty, query};

/// The most dead letters a list shows.
const SHOWN: usize = 500;

/// A table of dead letters, each with its redrive button.
pub(crate) fn table(state: &AppState, letters: &[DeadLetterEntry]) -> Markup {
    html! {
        @if letters.is_empty() { p.muted #no-dead-letters { "No dead letters." } } @else {
            table.dlq {
                thead { tr { th.num { "Seq" } th { "Function" } th { "Reason" } th { "Error" } th.num { "Attempts" }
                    th { "Event" } th { "Dead-lettered" } th {} } }
                tbody { @for letter in letters {
                    tr data-seq=(letter.sequence) data-function=(letter.function) {
                        td.num { a href={ "/dlq/" (letter.sequence) } { "#" (letter.sequence) } }
                        td { (letter.function) }
                        td { code { (letter.reason) } }
                        td.error { (letter.error) @if let Some(step) = &letter.step { " (step " code { (step) } ")" } }
                        td.num { (letter.attempts) }
                        td { a href=(run_href(&letter.function, &letter.event_id)) { code { (letter.event_id) } } " " span.muted { (letter.event_type) } }
                        td { (letter.time) }
                        td { (action_button(state, &format!("/dlq/{}/redrive", letter.sequence), "Redrive", &[])) }
                    }
                } }
            }
        }
    }
}

fn filter_of(q: &HashMap<String, String>) -> DeadLetterFilter {
    DeadLetterFilter {
        function: given(q.get("function")).map(str::to_owned),
        reason: given(q.get("reason")).map(str::to_owned),
        event_type: given(q.get("type")).map(str::to_owned),
        ..Default::default()
    }
}

fn filter_query(filter: &DeadLetterFilter) -> String {
    query(&[
        ("function", filter.function.as_deref()),
        ("reason", filter.reason.as_deref()),
        ("type", filter.event_type.as_deref()),
    ])
}

fn hidden_filter(filter: &DeadLetterFilter) -> Markup {
    html! {
        @if let Some(v) = &filter.function { input type="hidden" name="function" value=(v); }
        @if let Some(v) = &filter.reason { input type="hidden" name="reason" value=(v); }
        @if let Some(v) = &filter.event_type { input type="hidden" name="type" value=(v); }
    }
}

/// `GET /dlq?function=&reason=&type=`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult<Markup> {
    let seen = state.seen.position();
    let filter = filter_of(&q);
    let mut letters = state.letters.list(&filter).await?;
    let total = letters.len();
    letters.truncate(SHOWN);
    let self_url = format!("/dlq{}", filter_query(&filter));
    let reasons = [
        "handler_error",
        "terminal_error",
        "schema_violation",
        "decode_error",
        "timeout",
        "max_deliveries",
    ];
    let body = html! {
        h1 { "Dead letters" }
        (notice(given(q.get("notice"))))
        form.filters method="get" action="/dlq" {
            label { "function" input name="function" value=[&filter.function]; }
            label { "reason" select name="reason" {
                option value="" { "any" }
                @for r in reasons { option value=(r) selected[filter.reason.as_deref() == Some(r)] { (r) } }
            } }
            label { "event type" input name="type" value=[&filter.event_type]; }
            button type="submit" { "Filter" }
        }
        p.muted #dlq-count { (total) " dead letters" @if total > SHOWN { " (the oldest " (SHOWN) " shown)" } }
        (table(&state, &letters))
        @if !state.config.read_only && total > 0 {
            h2 { "All of these" }
            form.filters method="post" action="/dlq/redrive" {
                (hidden_filter(&filter))
                label { "rate (per second)" input name="rate" value="20" size="5"; }
                button type="submit" { "Redrive all " (total) }
            }
            p { a.danger href={ "/dlq/purge" (filter_query(&filter)) } { "Purge these " (total) " dead letters…" } }
        }
    };
    Ok(page(
        &state,
        "Dead letters",
        "dlq",
        live(
            &self_url,
            &query(&[("function", filter.function.as_deref())]),
            seen,
            false,
            body,
        ),
    ))
}

fn letter_page(
    state: &AppState,
    letter: &DeadLetterEntry,
    text: &str,
    violations: &[Violation],
) -> Markup {
    let body = html! {
        h1 { "Dead letter " code { "#" (letter.sequence) } }
        dl.settings {
            dt { "Function" } dd { a href={ "/functions/" (crate::util::encode(&letter.function)) } { (letter.function) } }
            dt { "Reason" } dd { code { (letter.reason) } }
            dt { "Error" } dd.error { (letter.error) }
            dt { "Attempts" } dd { (letter.attempts) }
            @if let Some(step) = &letter.step { dt { "Step" } dd { code { (step) } } }
            dt { "Event" } dd { code { (letter.event_type) } " " a href=(run_href(&letter.function, &letter.event_id)) { code { (letter.event_id) } } }
            dt { "Dead-lettered" } dd { (letter.time) }
        }
        (action_button(state, &format!("/dlq/{}/redrive", letter.sequence), "Redrive as it is", &[]))
        @if !state.config.read_only {
            h2 { "Edit and redrive" }
            p.muted { "Checked against the latest registered schema of " code { (letter.event_type) } " before it is redriven." }
            form #edit method="post" action={ "/dlq/" (letter.sequence) "/redrive" } {
                (errors(violations))
                textarea name="payload" spellcheck="false" { (text) }
                button type="submit" { "Redrive with this payload" }
            }
        } @else {
            h2 { "Payload" }
            pre { (text) }
        }
        h2 { "Headers" }
        table { tbody { @for (name, values) in letter.headers.iter() { @for value in values {
            tr { td { code { (name.to_string()) } } td { code { (value.as_str()) } } }
        } } } }
    };
    page(
        state,
        &format!("Dead letter #{}", letter.sequence),
        "dlq",
        body,
    )
}

/// `GET /dlq/{seq}`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(sequence): Path<u64>,
) -> PageResult<Markup> {
    let letter = state
        .letters
        .get(sequence)
        .await
        .map_err(|e| PageError::not_found(e.to_string()))?;
    Ok(letter_page(&state, &letter, &pretty(&letter.payload), &[]))
}

/// `POST /dlq/{seq}/redrive`, with an optional edited `payload`.
pub(crate) async fn redrive_one(
    State(state): State<Arc<AppState>>,
    Path(sequence): Path<u64>,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult<Response> {
    let letter = state
        .letters
        .get(sequence)
        .await
        .map_err(|e| PageError::not_found(e.to_string()))?;
    let replacement = match form.get("payload") {
        None => None,
        Some(text) => {
            let schema = state.registry.latest(&letter.event_type).await?;
            let checked = match &schema {
                Some(latest) => crate::skeleton::check(&letter.event_type, &latest.schema, text),
                None => serde_json::from_str(text).map_err(|e| {
                    vec![Violation {
                        path: "$".into(),
                        message: format!("not valid JSON: {e}"),
                    }]
                }),
            };
            match checked {
                Ok(value) => Some(bytes::Bytes::from(serde_json::to_vec(&value)?)),
                Err(violations) => {
                    let page = letter_page(&state, &letter, text, &violations);
                    return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
                }
            }
        }
    };
    state.letters.redrive(&letter, replacement).await?;
    let notice = format!("dead letter #{sequence} redriven");
    Ok(see_other(&format!(
        "{}{}",
        run_href(&letter.function, &letter.event_id),
        query(&[("notice", Some(&notice))])
    )))
}

/// `POST /dlq/redrive` (the filter, `rate`): redrives the matching dead letters in the
/// background at that rate.
pub(crate) async fn redrive_all(
    State(state): State<Arc<AppState>>,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult<Response> {
    let filter = filter_of(&form);
    let rate = given(form.get("rate"))
        .and_then(|r| r.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
        .unwrap_or(20.0);
    let letters = state.letters.list(&filter).await?;
    let count = letters.len();
    let store = state.letters.clone();
    tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        for letter in letters {
            pace.tick().await;
            if let Err(error) = store.redrive(&letter, None).await {
                tracing::warn!(sequence = letter.sequence, %error, "redrive failed");
            }
        }
    });
    let notice = format!("redriving {count} dead letters at {rate}/s");
    let mut target = filter_query(&filter);
    target.push_str(if target.is_empty() { "?" } else { "&" });
    target.push_str(&format!("notice={}", crate::util::encode(&notice)));
    Ok(see_other(&format!("/dlq{target}")))
}

/// `GET /dlq/purge?…`: how many would go, and the confirming form.
pub(crate) async fn purge_confirm(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult<Markup> {
    if state.config.read_only {
        return Err(PageError::forbidden(
            "the console is read-only: purging is off",
        ));
    }
    let filter = filter_of(&q);
    let count = state.letters.list(&filter).await?.len();
    let body = html! {
        h1 { "Purge dead letters" }
        p { "This deletes " strong #purge-count { (count) } " dead letters" (filter_query(&filter)) " for good." }
        form method="post" action="/dlq/purge" {
            (hidden_filter(&filter))
            label { "Type " code { "purge" } " to confirm: " input name="confirm" autocomplete="off"; }
            " " button.danger type="submit" { "Purge" }
        }
    };
    Ok(page(&state, "Purge", "dlq", body))
}

/// `POST /dlq/purge` (the filter, `confirm=purge`).
pub(crate) async fn purge(
    State(state): State<Arc<AppState>>,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult<Response> {
    let filter = filter_of(&form);
    if given(form.get("confirm")) != Some("purge") {
        return Err(PageError::bad_request(
            "not purged: type `purge` to confirm",
        ));
    }
    let letters = state.letters.list(&filter).await?;
    for letter in &letters {
        state.letters.delete(letter.sequence).await?;
    }
    let notice = format!("purged {} dead letters", letters.len());
    Ok(see_other(&format!(
        "/dlq{}",
        query(&[("notice", Some(&notice))])
    )))
}
