//! Static files served from the binary: htmx 2.0.11 and its SSE extension 2.2.4 (vendored
//! from their npm packages, licences in `assets/`), and the console's stylesheet. Their
//! names carry their version (or a digest), so browsers may keep them forever.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// htmx (BSD Zero Clause License, `assets/htmx.LICENSE`).
pub(crate) const HTMX_PATH: &str = "/assets/htmx-2.0.11.min.js";
/// htmx's SSE extension (BSD Zero Clause License, `assets/htmx-ext-sse.LICENSE`).
pub(crate) const SSE_PATH: &str = "/assets/htmx-ext-sse-2.2.4.min.js";
/// The stylesheet; bump the number when it changes.
pub(crate) const CSS_PATH: &str = "/assets/console-2.css";

const HTMX: &[u8] = include_bytes!("../assets/htmx-2.0.11.min.js");
const SSE: &[u8] = include_bytes!("../assets/htmx-ext-sse-2.2.4.min.js");
const CSS: &[u8] = include_bytes!("../assets/console.css");
const HTMX_LICENSE: &[u8] = include_bytes!("../assets/htmx.LICENSE");
const SSE_LICENSE: &[u8] = include_bytes!("../assets/htmx-ext-sse.LICENSE");

/// `GET /assets/{name}`.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match format!("/assets/{name}").as_str() {
        HTMX_PATH => (HTMX, "text/javascript; charset=utf-8"),
        SSE_PATH => (SSE, "text/javascript; charset=utf-8"),
        CSS_PATH => (CSS, "text/css; charset=utf-8"),
        "/assets/htmx.LICENSE" => (HTMX_LICENSE, "text/plain; charset=utf-8"),
        "/assets/htmx-ext-sse.LICENSE" => (SSE_LICENSE, "text/plain; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}
