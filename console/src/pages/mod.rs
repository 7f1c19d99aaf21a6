//! The console's routes.

mod axis;
pub(crate) mod dlq;
pub(crate) mod events;
mod functions;
mod run;
mod runs;
mod schemas;
mod send;
mod waterfall;

use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post};

use crate::state::AppState;
use crate::{assets, live, security};

/// Every page, action, live feed and asset, behind the security middleware.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(functions::list))
        .route("/functions/{id}", get(functions::show))
        .route("/functions/{id}/replay", post(functions::replay))
        .route("/runs", get(runs::list))
        .route("/runs/{function}/{event_id}", get(run::show))
        .route("/runs/{function}/{event_id}/cancel", post(run::cancel))
        .route("/events", get(events::list))
        .route("/events/{seq}", get(events::show))
        .route("/send", get(send::form).post(send::submit))
        .route("/dlq", get(dlq::list))
        .route("/dlq/redrive", post(dlq::redrive_all))
        .route("/dlq/purge", get(dlq::purge_confirm).post(dlq::purge))
        .route("/dlq/{seq}", get(dlq::show))
        .route("/dlq/{seq}/redrive", post(dlq::redrive_one))
        .route("/schemas", get(schemas::list))
        .route("/schemas/asyncapi.json", get(schemas::asyncapi))
        .route("/schemas/{event_type}", get(schemas::show))
        .route("/live/events", get(live::events))
        .route("/live/changes", get(live::changes))
        .route("/assets/{name}", get(assets::asset))
        .route("/healthz", get(|| async { "ok" }))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            security::guard,
        ))
        .with_state(state)
}

/// A redirect after an action (303, so the browser GETs the target).
pub(crate) fn see_other(location: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, location.to_owned())],
    )
        .into_response()
}
