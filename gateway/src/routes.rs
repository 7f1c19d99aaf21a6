//! The HTTP routes: ingest (CloudEvents, Inngest), the webhook handshake, health, OpenAPI.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::{AuthFailure, KnownKey};
use crate::problem::Problem;
use crate::state::AppState;
use crate::{cloudevents, inngest, openapi, pipeline};

/// The path of CloudEvents ingest.
pub const EVENTS_PATH: &str = "/v1/events";

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            EVENTS_PATH,
            post(cloudevents_ingest).options(webhook_handshake),
        )
        .route("/e/{key}", post(inngest_ingest))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A request's permit and key, or the answer refusing it.
async fn admit(
    state: &AppState,
    token: Option<String>,
) -> Result<(OwnedSemaphorePermit, Arc<KnownKey>), Problem> {
    let permit = Arc::clone(&state.in_flight)
        .try_acquire_owned()
        .map_err(|_| {
            Problem::unavailable(
                "this gateway replica is handling as many requests as it may",
                state.config.retry_after_secs,
            )
        })?;
    let key = match token {
        None if !state.config.require_keys => Arc::clone(&state.anonymous),
        None => {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "an API key is required",
            )
            .detail("send Authorization: Bearer hrld_…, or ?access_token=hrld_…"));
        }
        Some(token) => state
            .keys
            .authenticate(&token)
            .await
            .map_err(|failure| match failure {
                AuthFailure::Invalid(reason) => {
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid API key")
                        .detail(reason)
                }
                AuthFailure::Unavailable => Problem::unavailable(
                    "the keys bucket cannot be read",
                    state.config.retry_after_secs,
                ),
            })?,
    };
    key.take().map_err(|wait| {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!(
                "this key may send {} requests per second (burst {})",
                key.key.rate.per_s, key.key.rate.burst
            ),
        )
        .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    })?;
    Ok((permit, key))
}

/// The token of a request: `Authorization: Bearer`, else `?access_token=`.
fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION)
        && let Ok(text) = value.to_str()
    {
        let text = text.trim();
        if let Some(token) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
        {
            return Some(token.trim().to_owned());
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .map(str::to_owned)
}

/// Reads the body within the size limit.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, Problem> {
    let max = state.config.max_body_bytes;
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("a request body is at most {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > max) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large())
}

async fn cloudevents_ingest(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = async {
        let (_permit, key) = admit(&state, bearer_token(&headers, query.as_deref())).await?;
        let body = read_body(&state, &headers, body).await?;
        let events = cloudevents::parse(&headers, &body, state.config.max_events)?;
        pipeline::ingest(&state, &key, &headers, events).await
    }
    .await;
    match outcome {
        Ok(accepted) => {
            (StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))).into_response()
        }
        Err(problem) => problem.into_response(),
    }
}

async fn inngest_ingest(
    State(state): State<Arc<AppState>>,
    Path(key_token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = async {
        let (_permit, key) = admit(&state, Some(key_token)).await?;
        let body = read_body(&state, &headers, body).await?;
        let events = inngest::parse(
            &headers,
            &body,
            &key.key.id,
            state.config.inngest_names,
            state.config.max_events,
        )?;
        pipeline::ingest(&state, &key, &headers, events).await
    }
    .await;
    match outcome {
        Ok(accepted) => {
            let ids: Vec<&str> = accepted.iter().map(|a| a.id.as_str()).collect();
            (StatusCode::OK, Json(json!({ "ids": ids, "status": 200 }))).into_response()
        }
        Err(problem) => {
            let ids: Vec<&str> = problem.accepted.iter().map(|a| a.id.as_str()).collect();
            let body = json!({
                "ids": ids,
                "status": problem.status.as_u16(),
                "error": problem.summary(),
            });
            let mut response = (problem.status, Json(body)).into_response();
            if let Some(seconds) = problem.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

/// The CloudEvents webhook abuse-protection handshake (`OPTIONS`).
async fn webhook_handshake(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    if let Some(origin) = headers.get("webhook-request-origin") {
        out.insert("webhook-allowed-origin", origin.clone());
        let rate = match state.config.webhook_allowed_rate {
            Some(rate) => HeaderValue::from(rate),
            None => HeaderValue::from_static("*"),
        };
        out.insert("webhook-allowed-rate", rate);
    }
    response
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let connected =
        state.client.nats().connection_state() == async_nats::connection::State::Connected;
    let watching = state
        .keys_watching
        .load(std::sync::atomic::Ordering::Relaxed);
    if connected && watching {
        (StatusCode::OK, "ready").into_response()
    } else {
        let reason = if connected {
            "waiting for the keys watch"
        } else {
            "not connected to NATS"
        };
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(state.config.retry_after_secs),
        );
        response
    }
}
