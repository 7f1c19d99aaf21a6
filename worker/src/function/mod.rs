//! [`Function`]: a named handler, its triggers and its settings.

mod batch;
mod builder;
mod ctx;
mod error;
mod flow;
mod handlers;
mod settings;

pub use batch::BatchBuilder;
pub use builder::FunctionBuilder;
pub use ctx::Ctx;
pub(crate) use ctx::{EnvelopeMeta, Publisher};
pub(crate) use error::ErrorKind;
pub use error::HandlerError;
pub(crate) use handlers::{BoxFuture, Decoded, ErasedHandler};
pub(crate) use settings::Settings;
pub use settings::{Overlap, SingletonMode, StartFrom};

use std::fmt;
use std::sync::Arc;

use std::marker::PhantomData;

use herald::EventType;

use crate::envelope::Envelope;

/// A function: an id, the event types that trigger it, its settings and its handler.
///
/// ```
/// use herald_worker::{Ctx, Function, HandlerError};
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
/// # #[event(type = "source.connected")]
/// # struct SourceConnected { source_id: String }
///
/// async fn backfill(event: SourceConnected, ctx: Ctx) -> Result<(), HandlerError> {
///     tracing::info!(source = %event.source_id, attempt = ctx.attempt(), "backfilling");
///     Ok(())
/// }
///
/// let function = Function::new("backfill-user-data")
///     .on::<SourceConnected>()
///     .attempts(5)
///     .concurrency(32)
///     .handler(backfill);
/// assert!(function.check().is_ok()); // start() checks it too
/// assert_eq!(function.id(), "backfill-user-data");
/// ```
#[derive(Clone)]
pub struct Function {
    /// Why the description cannot work, reported by `WorkerBuilder::start`.
    pub(crate) error: Option<FunctionError>,
    pub(crate) id: Arc<str>,
    pub(crate) triggers: Vec<String>,
    pub(crate) crons: Vec<crate::cron::CronTrigger>,
    pub(crate) settings: Settings,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) on_failure: Option<FailureHandler>,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("id", &self.id)
            .field("triggers", &self.triggers)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Function {
    /// Starts building a function with this id (`[a-z0-9][a-z0-9_-]{0,63}`, unique in the
    /// namespace; it names the durable consumer).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(id: impl Into<String>) -> FunctionBuilder<()> {
        FunctionBuilder {
            id: id.into(),
            triggers: Vec::new(),
            crons: Vec::new(),
            settings: Settings::default(),
            on_failure: None,
            _event: PhantomData,
        }
    }

    /// The function id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The trigger event types (patterns for untyped functions).
    pub fn triggers(&self) -> &[String] {
        &self.triggers
    }

    /// The cron triggers.
    pub fn crons(&self) -> &[crate::cron::CronTrigger] {
        &self.crons
    }

    /// The attempts budget.
    pub fn attempts(&self) -> u32 {
        self.settings.attempts
    }

    /// Whether the description can work: a valid id, at least one valid trigger, sane
    /// settings. [`WorkerBuilder::start`](crate::WorkerBuilder::start) checks this too and
    /// refuses to start otherwise; call it to fail earlier.
    pub fn check(&self) -> Result<(), FunctionError> {
        match &self.error {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// A dead-lettered run, as the failure handler sees it.
#[derive(Debug, Clone)]
pub struct FailedRun {
    /// The event.
    pub event: Envelope,
    /// Why it was dead-lettered.
    pub reason: crate::DeadLetterReason,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The step that failed, if the failure was in a step.
    pub step: Option<String>,
}

pub(crate) type FailureHandler =
    Arc<dyn Fn(FailedRun) -> BoxFuture<Result<(), HandlerError>> + Send + Sync>;

/// A function definition that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// The id breaks the rule.
    #[error(
        "invalid function id {id:?}: {reason}. A function id is 1 to 64 characters \
         `[a-z0-9][a-z0-9_-]*`, e.g. `backfill-user-data`"
    )]
    InvalidId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A trigger pattern is not an event type or a wildcard pattern.
    #[error(
        "invalid trigger {pattern:?} for function {function}: {reason}. A trigger is an event \
         type (`user.signup`) or a pattern with `*` for one token and `>` for the rest (`user.*`)"
    )]
    InvalidTrigger {
        /// The function.
        function: String,
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// No trigger.
    #[error("function {function} has no trigger; call .on::<YourEvent>() or .on_types([..])")]
    NoTrigger {
        /// The function.
        function: String,
    },
    /// A setting out of range.
    #[error("function {function}: {reason}")]
    InvalidSetting {
        /// The function.
        function: String,
        /// What is wrong.
        reason: String,
    },
    /// A cron trigger nats-server would not accept.
    #[error("function {function}: {reason}")]
    InvalidCron {
        /// The function.
        function: String,
        /// What is wrong.
        reason: String,
    },
    /// The event type's schema does not compile.
    #[error("function {function}: {reason}")]
    Schema {
        /// The function.
        function: String,
        /// The compiler's message.
        reason: String,
    },
}

/// Checks a function id against `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn check_function_id(id: &str) -> Result<(), FunctionError> {
    let error = |reason: String| FunctionError::InvalidId {
        id: id.to_owned(),
        reason,
    };
    let Some(first) = id.chars().next() else {
        return Err(error("it is empty".to_owned()));
    };
    if id.len() > 64 {
        return Err(error(format!("it is {} characters long", id.len())));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(error(format!("it starts with {first:?}")));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(error(format!("it contains {bad:?}")));
    }
    Ok(())
}

/// A trigger pattern: event-type tokens, `*` for one token, `>` as the last token.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        match *token {
            "*" => {}
            ">" if index == tokens.len() - 1 => {}
            ">" => return Err("`>` may only be the last token".to_owned()),
            token => {
                EventType::new(token).map_err(|e| e.reason().to_owned())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids() {
        assert!(check_function_id("backfill-user-data").is_ok());
        assert!(check_function_id(&"a".repeat(64)).is_ok());
        for bad in ["", "Backfill", "-x", "a.b", "a b", &"a".repeat(65)] {
            let error = check_function_id(bad).unwrap_err();
            assert!(error.to_string().contains("[a-z0-9]"), "{error}");
        }
    }

    #[test]
    fn trigger_patterns() {
        for good in ["user.signup", "user.*", "billing.>", ">", "*.created"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["User.x", "a.>.b", "a..b", ""] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_convert_with_their_chain() {
        let io = std::io::Error::other("disk full");
        let error: HandlerError = io.into();
        assert!(!error.is_terminal());
        assert_eq!(error.message(), "disk full");
        assert!(HandlerError::terminal("bad input").is_terminal());
    }
}
