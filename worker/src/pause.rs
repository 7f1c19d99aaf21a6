//! Pausing and resuming a function (`herald functions pause|resume`): its consumers are paused
//! on the server (nats-server 2.11+), so no replica gets its events until it is resumed or
//! the pause ends; events keep being stored and nothing is lost.

use std::time::{Duration, SystemTime};

use async_nats::jetstream::stream::ConsumerErrorKind;

use crate::function::check_function_id;

/// How long a pause without an end lasts: a century, in effect until resumed.
const INDEFINITELY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A function's pause state, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseState {
    /// Whether the function is paused now.
    pub paused: bool,
    /// Until when, if paused; `None` when resumed or paused indefinitely.
    pub until: Option<SystemTime>,
}

/// Why a function could not be paused or resumed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PauseError {
    /// The id is not a function id.
    #[error(transparent)]
    Function(#[from] crate::FunctionError),
    /// No function with this id has a consumer in the namespace.
    #[error(
        "function {function} does not exist in this namespace (no consumer); `herald functions` \
         lists the functions"
    )]
    NotFound {
        /// The id.
        function: String,
    },
    /// The time to pause until is in the past.
    #[error("cannot pause function {function} until a time in the past")]
    InThePast {
        /// The id.
        function: String,
    },
    /// NATS failed (or the server is older than 2.11, which cannot pause consumers).
    #[error("pausing or resuming function {function}: {source}")]
    Nats {
        /// The id.
        function: String,
        /// The error.
        source: async_nats::Error,
    },
}

/// Pauses `function` until `until` (`None`: until [`resume_function`]). Replicas keep
/// running and receive nothing meanwhile; its events are kept (within the stream's
/// retention) and handled after the pause, in order.
pub async fn pause_function(
    client: &herald::Client,
    function: &str,
    until: Option<SystemTime>,
) -> Result<PauseState, PauseError> {
    check_function_id(function)?;
    let end = match until {
        Some(until) if until <= SystemTime::now() => {
            return Err(PauseError::InThePast {
                function: function.to_owned(),
            });
        }
        Some(until) => until,
        None => SystemTime::now() + INDEFINITELY,
    };
    let stream = events(client, function).await?;
    let end = time::OffsetDateTime::from(end);
    let answer = stream
        .pause_consumer(function, end)
        .await
        .map_err(|error| consumer_error(function, error))?;
    // The function's redrive consumer, if it has one (protocol section 3).
    let redrive = herald::protocol::redrive_consumer(function);
    absent_is_fine(function, stream.pause_consumer(&redrive, end).await)?;
    Ok(state(answer.paused, answer.pause_until))
}

/// A redrive consumer's pause or resume: one the function does not have is fine.
fn absent_is_fine<T>(
    function: &str,
    answer: Result<T, async_nats::jetstream::stream::ConsumerError>,
) -> Result<(), PauseError> {
    match answer.map_err(|error| consumer_error(function, error)) {
        Ok(_) | Err(PauseError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Resumes a paused function: its replicas get its events again at once.
pub async fn resume_function(
    client: &herald::Client,
    function: &str,
) -> Result<PauseState, PauseError> {
    check_function_id(function)?;
    let stream = events(client, function).await?;
    let answer = stream
        .resume_consumer(function)
        .await
        .map_err(|error| consumer_error(function, error))?;
    let redrive = herald::protocol::redrive_consumer(function);
    absent_is_fine(function, stream.resume_consumer(&redrive).await)?;
    Ok(state(answer.paused, answer.pause_until))
}

/// The end of a pause as reported, `None` for an indefinite one.
pub fn pause_end(until: time::OffsetDateTime) -> Option<SystemTime> {
    let end = SystemTime::from(until);
    (end < SystemTime::now() + INDEFINITELY / 2).then_some(end)
}

fn state(paused: bool, until: time::OffsetDateTime) -> PauseState {
    PauseState {
        paused,
        until: if paused { pause_end(until) } else { None },
    }
}

async fn events(
    client: &herald::Client,
    function: &str,
) -> Result<async_nats::jetstream::stream::Stream, PauseError> {
    client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await
        .map_err(|error| PauseError::Nats {
            function: function.to_owned(),
            source: error.into(),
        })
}

fn consumer_error(
    function: &str,
    error: async_nats::jetstream::stream::ConsumerError,
) -> PauseError {
    let not_found = matches!(error.kind(), ConsumerErrorKind::JetStream(inner)
        if inner.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND);
    if not_found {
        return PauseError::NotFound {
            function: function.to_owned(),
        };
    }
    PauseError::Nats {
        function: function.to_owned(),
        source: error.into(),
    }
}
