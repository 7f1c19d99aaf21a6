//! `/healthz`, `/readyz` and `/metrics` over HTTP (opt-in, `WorkerBuilder::http`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::runtime::Readiness;

#[derive(Clone)]
struct Health {
    client: herald::Client,
    readiness: Arc<Readiness>,
    prometheus: Option<prometheus::Registry>,
}

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    client: herald::Client,
    readiness: Arc<Readiness>,
    prometheus: Option<prometheus::Registry>,
    stop: CancellationToken,
) {
    let state = Health {
        client,
        readiness,
        prometheus,
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
    if let Err(error) = server.await {
        tracing::warn!(%error, "the health and metrics endpoint stopped");
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.client.nats().connection_state() != async_nats::connection::State::Connected {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not connected to NATS\n".to_owned(),
        );
    }
    if let Some(reason) = health.readiness.not_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        );
    }
    (StatusCode::OK, "ready\n".to_owned())
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let Some(registry) = &health.prometheus else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no metrics registry configured; pass one with WorkerBuilder::prometheus\n".to_owned(),
        );
    };
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&registry.gather()) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the metrics failed: {error}\n"),
        ),
    }
}
