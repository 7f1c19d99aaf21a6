//! Exit codes, defined here and nowhere else, and the one line printed for an error.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | ok |
//! | 1    | failed (unreachable server, invalid input, a schema or payload refused by validation, …) |
//! | 2    | drift: `provision` or `streams` found streams or buckets whose config differs |
//! | 3    | not found: the function, run, dead letter, key, schedule or schema does not exist, or the namespace is not provisioned |
//! | 4    | refused: a destructive action not confirmed (no `--yes`), or the server denied the credentials or the permission |
//! | 64   | usage: the command line is wrong (unknown flag, missing argument) |

use std::fmt;
use std::process::ExitCode;
use std::sync::OnceLock;

/// How `herald` ended; the process exit code is the discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It did what was asked.
    Ok = 0,
    /// It failed.
    Failure = 1,
    /// `provision` or `streams` found config differences (not applied).
    Drift = 2,
    /// What was named does not exist, or the namespace is not provisioned.
    NotFound = 3,
    /// The action was refused: not confirmed, or not permitted.
    Refused = 4,
    /// The command line is wrong.
    Usage = 64,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The exit codes as `herald --help` shows them.
pub(crate) const HELP: &str = "Exit codes: 0 ok; 1 failed; 2 drift (provision or streams found \
config differences); 3 not found (function, run, dead letter, key, schedule, schema, or the \
namespace is not provisioned); 4 refused (not confirmed with --yes, or permission denied); \
64 usage error.";

/// An error that ends `herald` with a given exit code and message.
#[derive(Debug)]
pub(crate) struct Failed {
    exit: Exit,
    message: String,
}

impl Failed {
    /// Something named does not exist (exit code 3).
    pub(crate) fn not_found(message: impl Into<String>) -> Failed {
        Failed {
            exit: Exit::NotFound,
            message: message.into(),
        }
    }

    /// The command line is wrong (exit code 64).
    pub(crate) fn usage(message: impl Into<String>) -> Failed {
        Failed {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    /// The action was refused (exit code 4).
    pub(crate) fn refused(message: impl Into<String>) -> Failed {
        Failed {
            exit: Exit::Refused,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

/// The server and namespace a command connected to, for error messages.
static TARGET: OnceLock<(String, String)> = OnceLock::new();

/// Remembers the server and namespace of this command, for [`describe`].
pub(crate) fn remember_target(url: &str, namespace: &str) {
    let _ = TARGET.set((url.to_owned(), namespace.to_owned()));
}

/// The exit code of an error and the one line that explains it (what failed, where, what to
/// do), without the repetitions of a context chain.
pub(crate) fn describe(error: &anyhow::Error) -> (Exit, String) {
    for cause in error.chain() {
        if let Some(failed) = cause.downcast_ref::<Failed>() {
            return (failed.exit, chain_line(error));
        }
        if let Some(connect) = cause.downcast_ref::<herald::ConnectError>() {
            return connect_line(connect).unwrap_or_else(|| (Exit::Failure, chain_line(error)));
        }
        if is_not_found(cause) {
            return (Exit::NotFound, chain_line(error));
        }
    }
    let line = chain_line(error);
    if error.chain().any(is_stream_missing) {
        let (url, namespace) = TARGET
            .get()
            .cloned()
            .unwrap_or_else(|| ("URL".to_owned(), "NAMESPACE".to_owned()));
        return (
            Exit::NotFound,
            format!(
                "namespace {namespace} is not provisioned on {url} (its streams and buckets are \
                 missing); create them with `herald provision --server {url} --namespace \
                 {namespace}`"
            ),
        );
    }
    if line.to_lowercase().contains("permissions violation") {
        return (Exit::Refused, line);
    }
    (Exit::Failure, line)
}

/// The error and its causes on one line; a cause already contained in the text before it
/// is left out (async-nats errors repeat their source in their own message).
fn chain_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The innermost cause: an I/O error as its kind (`connection refused`), else its text.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match cause.downcast_ref::<std::io::Error>() {
        Some(io) => io.kind().to_string(),
        None => cause.to_string(),
    }
}

fn connect_line(error: &herald::ConnectError) -> Option<(Exit, String)> {
    Some(match error {
        herald::ConnectError::Unreachable { url, .. } => (
            Exit::Failure,
            format!(
                "cannot connect to NATS at {url} ({}): start a server with `herald dev`, or give \
                 the right URL with --server or NATS_URL",
                root_cause(error)
            ),
        ),
        herald::ConnectError::Unauthorized { url, .. } => (
            Exit::Refused,
            format!(
                "the NATS server at {url} refused the credentials ({}): check --user and \
                 --password, --token or --creds",
                root_cause(error)
            ),
        ),
        _ => return None,
    })
}

/// Library errors that say "no such thing".
fn is_not_found(cause: &(dyn std::error::Error + 'static)) -> bool {
    use herald_gateway::keys::KeyError;
    use herald_gateway::push::PushError;
    use herald_worker::cron::ScheduleAdminError;
    use herald_worker::{CancelError, PauseError};
    matches!(
        cause.downcast_ref::<PauseError>(),
        Some(PauseError::NotFound { .. })
    ) || matches!(
        cause.downcast_ref::<ScheduleAdminError>(),
        Some(ScheduleAdminError::NotFound { .. })
    ) || matches!(
        cause.downcast_ref::<KeyError>(),
        Some(KeyError::NotFound { .. })
    ) || matches!(
        cause.downcast_ref::<PushError>(),
        Some(PushError::NotFound { .. })
    ) || matches!(
        cause.downcast_ref::<CancelError>(),
        Some(CancelError::UnknownFunction { .. })
    ) || matches!(
        cause
            .downcast_ref::<async_nats::jetstream::stream::RawMessageError>()
            .map(|e| e.kind()),
        Some(async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound)
    ) || jetstream_code(cause) == Some(async_nats::jetstream::ErrorCode::NO_MESSAGE_FOUND)
        || cause.to_string().contains("error code 10037")
}

/// A JetStream stream (or the stream of a key-value bucket) that does not exist.
fn is_stream_missing(cause: &(dyn std::error::Error + 'static)) -> bool {
    jetstream_code(cause) == Some(async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
        || cause.to_string().contains("error code 10059")
}

fn jetstream_code(
    cause: &(dyn std::error::Error + 'static),
) -> Option<async_nats::jetstream::ErrorCode> {
    cause
        .downcast_ref::<async_nats::jetstream::Error>()
        .map(async_nats::jetstream::Error::error_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeated_in_its_parent_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(io).context("cannot connect: refused");
        assert_eq!(chain_line(&error), "cannot connect: refused");
    }

    #[test]
    fn failed_errors_keep_their_exit_code() {
        let error = anyhow::Error::new(Failed::not_found("no such run"));
        assert_eq!(describe(&error), (Exit::NotFound, "no such run".to_owned()));
        let error = anyhow::Error::new(Failed::refused("not confirmed")).context("purge");
        assert_eq!(
            describe(&error),
            (Exit::Refused, "purge: not confirmed".to_owned())
        );
    }
}
