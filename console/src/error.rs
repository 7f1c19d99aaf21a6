//! What a page answers when it cannot be shown: a status and a page that says why.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::layout;

/// A page that cannot be shown.
#[derive(Debug)]
pub(crate) struct PageError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl PageError {
    pub(crate) fn not_found(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::FORBIDDEN,
            message: message.into(),
        }
    }

    /// NATS (or a Herald store on it) failed.
    pub(crate) fn nats(error: impl std::fmt::Display) -> PageError {
        PageError {
            status: StatusCode::BAD_GATEWAY,
            message: error.to_string(),
        }
    }
}

impl<E: std::error::Error> From<E> for PageError {
    fn from(error: E) -> PageError {
        PageError::nats(error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Refused",
            StatusCode::UNAUTHORIZED => "Token needed",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "NATS did not answer",
        };
        let body = layout::bare(
            title,
            maud::html! {
                h1 { (title) }
                p.error { (self.message) }
                p { a href="/" { "Back to the functions" } }
            },
        );
        (self.status, body).into_response()
    }
}

/// A page's result.
pub(crate) type PageResult<T = Response> = Result<T, PageError>;
