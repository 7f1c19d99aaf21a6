//! Answers that are not 2xx: RFC 9457 problem documents (`application/problem+json`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of a problem document.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The `type` URN prefix of Herald's problem documents.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:herald:problem:";

/// One place in a request where something is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathMessage {
    /// JSON path (`$.email`, `$[1].type`) or the header (`ce-type`).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// What is wrong with one event of a request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventProblem {
    /// The event's position in the request (0 for a single event).
    pub index: usize,
    /// Its id, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its type, when it has one.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The schema it was validated against (`urn:ns:schema:T:N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Every violation, with its path.
    pub violations: Vec<PathMessage>,
}

/// One stored event, in a 202 answer or in a 503 that stored part of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Accepted {
    /// The event id (`ce-id`, the dedup id).
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Its sequence in `NS_EVENTS` (the first copy's for a duplicate).
    pub seq: u64,
    /// True when an event with this id was already stored within the duplicate window.
    pub duplicate: bool,
    /// The schema version it was validated against, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
}

/// A refused request, as an RFC 9457 problem document.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:herald:problem:<kind>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The HTTP status.
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    /// A summary.
    pub title: String,
    /// Details, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The event a size or scope problem is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Per-event problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<EventProblem>,
    /// What was stored before a failure (503 only); a retry of the whole request
    /// deduplicates them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accepted: Vec<Accepted>,
    /// Seconds to wait, sent as `Retry-After` (429, 503).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// A problem of kind `kind` (the URN's last part) with a status and title.
    pub fn new(status: StatusCode, kind: &str, title: impl Into<String>) -> Problem {
        Problem {
            problem_type: format!("{PROBLEM_TYPE_PREFIX}{kind}"),
            status,
            title: title.into(),
            detail: None,
            index: None,
            errors: Vec::new(),
            accepted: Vec::new(),
            retry_after: None,
        }
    }

    /// With a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    /// About event `index`.
    pub fn index(mut self, index: usize) -> Problem {
        self.index = Some(index);
        self
    }

    /// With `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 400: one or more events are invalid; none was stored.
    pub fn invalid(errors: Vec<EventProblem>, total: usize) -> Problem {
        let title = if total == 1 {
            "the event is invalid; it was not stored".to_owned()
        } else {
            format!(
                "{} of {total} events are invalid; none was stored",
                errors.len()
            )
        };
        Problem {
            errors,
            ..Problem::new(StatusCode::BAD_REQUEST, "invalid-event", title)
        }
    }

    /// 415: the media type is not one the gateway reads.
    pub fn media_type(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "unsupported media type",
        )
        .detail(detail)
    }

    /// 503: NATS cannot take the events now.
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event store is unavailable; retry the whole request later",
        )
        .detail(detail)
        .retry_after(retry_after)
    }

    /// A one-line summary for clients that take a string (Inngest's `error`).
    pub fn summary(&self) -> String {
        let mut text = self.title.clone();
        if let Some(detail) = &self.detail {
            text.push_str(": ");
            text.push_str(detail);
        }
        for error in &self.errors {
            for violation in &error.violations {
                text.push_str(&format!(
                    "; event {}: {}: {}",
                    error.index, violation.path, violation.message
                ));
            }
        }
        text
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
