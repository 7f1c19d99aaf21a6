//! [`HandlerError`]: what a handler returns when it fails.

use std::fmt;
use std::time::Duration;

/// What a handler returns when it fails.
///
/// Any error converts into a retryable `HandlerError` with `?`; [`HandlerError::terminal`]
/// is not retried (the event goes to the dead-letter stream at once), and
/// [`HandlerError::retry_after`] chooses the delay before the next attempt.
pub struct HandlerError {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ErrorKind {
    Retry(Option<Duration>),
    Terminal,
    /// A durable sleep: the run continues later; not a failure.
    Suspend,
    /// The run was cancelled: it stops here.
    Cancelled,
}

impl HandlerError {
    /// A failure worth retrying (what `?` produces).
    pub fn retry(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            kind: ErrorKind::Retry(None),
            message: message.to_string(),
        }
    }

    /// A failure that no retry can fix: dead-lettered at once with reason `terminal_error`.
    pub fn terminal(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            kind: ErrorKind::Terminal,
            message: message.to_string(),
        }
    }

    /// A retryable failure whose next attempt should wait `delay` instead of the backoff.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> HandlerError {
        HandlerError {
            kind: ErrorKind::Retry(Some(delay)),
            message: message.to_string(),
        }
    }

    /// True for [`HandlerError::terminal`].
    pub fn is_terminal(&self) -> bool {
        self.kind == ErrorKind::Terminal
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Any error (`std::error::Error`, `anyhow::Error`, a `String`) is retryable; its whole
    /// chain of causes goes into the message, so the dead letter says what went wrong
    /// underneath.
    fn from(error: E) -> Self {
        let error: Box<dyn std::error::Error + Send + Sync> = error.into();
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        HandlerError::retry(message)
    }
}
