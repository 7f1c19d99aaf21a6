//! What every request passes first: the token (when one is configured), the origin check
//! of requests that change state, and read-only mode.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::TOKEN_COOKIE;
use crate::error::PageError;
use crate::state::AppState;

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        pair.strip_prefix("token=").map(|value| {
            value
                .replace("%2B", "+")
                .replace("%2F", "/")
                .replace("%3D", "=")
        })
    })
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            pair.trim()
                .strip_prefix(TOKEN_COOKIE)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::to_owned)
        })
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// Whether a state-changing request comes from the console's own pages: `Sec-Fetch-Site`
/// (when the browser sends it) says same-origin, and `Origin` (when sent) is this host.
/// Clients that send neither (curl, tests) are not browsers tricked by another site.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let bare = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            !host.is_empty() && bare == Some(host)
        }
    }
}

/// The middleware.
pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = state.config.token.as_deref().filter(|t| !t.is_empty()) {
        if let Some(given) = query_token(request.uri().query()) {
            if !same(&given, token) {
                return refused(StatusCode::UNAUTHORIZED, "the token in the URL is wrong");
            }
            // Keep the token in an HttpOnly cookie and take it out of the address bar.
            let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            let path = request.uri().path().to_owned();
            return (
                StatusCode::SEE_OTHER,
                [(header::SET_COOKIE, cookie), (header::LOCATION, path)],
            )
                .into_response();
        }
        let carried = cookie_token(request.headers()).or_else(|| bearer_token(request.headers()));
        if !carried.is_some_and(|given| same(&given, token)) {
            return refused(
                StatusCode::UNAUTHORIZED,
                "this console needs its token: open the URL it printed (…/?token=…)",
            );
        }
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        if state.config.read_only {
            return PageError::forbidden("the console is read-only: no action is allowed")
                .into_response();
        }
        if !same_origin(request.headers()) {
            return PageError::forbidden(
                "refused: the request did not come from the console's own pages",
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn refused(status: StatusCode, message: &str) -> Response {
    PageError {
        status,
        message: message.to_owned(),
    }
    .into_response()
}
