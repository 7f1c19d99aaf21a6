//! `/send`: pick a type, start from a skeleton of its registered schema, see errors by JSON
//! path before anything is sent; sent, the event's page shows its runs as they happen.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald::schema::Violation;
use maud::{Markup, html};

use super::see_other;
use crate::error::{PageError, PageResult};
use crate::layout::page;
use crate::state::AppState;
use crate::util::{given, pretty};

/// The violations of a payload, one per JSON path.
pub(crate) fn errors(violations: &[Violation]) -> Markup {
    html! {
        @if !violations.is_empty() {
            ul.errors #errors role="alert" {
                @for v in violations { li data-path=(v.path) { code { (v.path) } ": " (v.message) } }
            }
        }
    }
}

fn form_page(
    state: &AppState,
    types: &[String],
    event_type: Option<&str>,
    payload: &str,
    id: Option<&str>,
    violations: &[Violation],
) -> Markup {
    let body = html! {
        h1 { "Send an event" }
        form.filters method="get" action="/send" {
            label { "type" select name="type" {
                option value="" { "pick a registered type" }
                @for t in types { option value=(t) selected[event_type == Some(t.as_str())] { (t) } }
            } }
            button type="submit" { "Start from its schema" }
        }
        @if let Some(event_type) = event_type {
            form #send method="post" action="/send" {
                input type="hidden" name="type" value=(event_type);
                p { "Payload of " code { (event_type) } ", checked against its latest registered schema before it is sent:" }
                (errors(violations))
                textarea name="payload" spellcheck="false" { (payload) }
                p { label { "event id (optional, an idempotency key) " input name="id" value=[id] size="40"; } }
                button type="submit" { "Send" }
            }
        }
    };
    page(state, "Send", "send", body)
}

/// `GET /send?type=T&from=SEQ`.
pub(crate) async fn form(
    State(state): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult<Response> {
    if state.config.read_only {
        return Err(PageError::forbidden(
            "the console is read-only: sending is off",
        ));
    }
    let types = state.registry.types().await?;
    let event_type = given(q.get("type"));
    let payload = match (
        event_type,
        given(q.get("from")).and_then(|s| s.parse().ok()),
    ) {
        (Some(_), Some(sequence)) => pretty(
            &crate::data::event_at(&state.client, sequence)
                .await?
                .payload,
        ),
        (Some(event_type), None) => match state.registry.latest(event_type).await? {
            Some(latest) => {
                serde_json::to_string_pretty(&crate::skeleton::skeleton(&latest.schema))
                    .unwrap_or_default()
            }
            None => {
                return Err(PageError::not_found(format!(
                    "{event_type} has no registered schema (herald schemas push)"
                )));
            }
        },
        _ => String::new(),
    };
    Ok(form_page(&state, &types, event_type, &payload, None, &[]).into_response())
}

/// `POST /send` (form: `type`, `payload`, `id`).
pub(crate) async fn submit(
    State(state): State<Arc<AppState>>,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult<Response> {
    let event_type = given(form.get("type"))
        .ok_or_else(|| PageError::bad_request("pick an event type"))?
        .to_owned();
    let text = form.get("payload").cloned().unwrap_or_default();
    let id = given(form.get("id")).map(str::to_owned);
    let latest = state.registry.latest(&event_type).await?.ok_or_else(|| {
        PageError::not_found(format!(
            "{event_type} has no registered schema (herald schemas push)"
        ))
    })?;
    let value = match crate::skeleton::check(&event_type, &latest.schema, &text) {
        Ok(value) => value,
        Err(violations) => {
            let types = state.registry.types().await?;
            let page = form_page(
                &state,
                &types,
                Some(&event_type),
                &text,
                id.as_deref(),
                &violations,
            );
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let options = herald::PublishOptions {
        id,
        validate: Some(false),
        ..Default::default()
    };
    let ack = state
        .client
        .publish_value(&event_type, &value, options)
        .await?
        .await?;
    Ok(see_other(&format!("/events/{}", ack.sequence)))
}
