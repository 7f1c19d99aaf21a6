//! The fate of one delivery as a value: [`Outcome`] and [`Facts`] in, [`Settlement`] out.
//!
//! [`decide`] is pure (no I/O, no clock, no randomness), so every rule of protocol section 3
//! ("Per delivery") and section 7 ("Attempts per step") is table-tested here without a server.
//! [`super::settle`] then carries the settlement out.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::dead_letter::DeadLetterReason;
use crate::function::{ErrorKind, HandlerError};

/// How long a durable sleep without a run state waits before it is tried again.
pub(crate) const SUSPEND_RETRY: Duration = Duration::from_secs(1);

/// What happened to a delivery before or during its attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The envelope cannot be read (protocol section 4).
    Unreadable(String),
    /// The delivery count is beyond the attempts: the worker of the last attempt died.
    BeyondAttempts,
    /// The sweeper found the event in a MAX_DELIVERIES advisory: it ran out of deliveries
    /// while no worker could dead-letter it.
    OutOfDeliveries,
    /// The run is recorded as finished (idempotent runs): nothing to do.
    AlreadyFinished,
    /// The run was cancelled (a cancel record, or a step refused after it): recorded
    /// `cancelled` with this reason and acked.
    Cancelled(String),
    /// The run parked waiting for an event: its continuation (the timeout) is scheduled,
    /// and a match fires it early.
    Parked {
        /// The waiting step.
        step_key: String,
    },
    /// The event was folded into its key's debounce window: the window's run handles it.
    Debounced,
    /// The event joined its key's batch (the batch's run handles it), or a batch's timer
    /// found no batch.
    Batched,
    /// The run is not to run at all (a cron tick while the previous one still runs): it is
    /// recorded `skipped` with this reason and acked.
    Skipped(String),
    /// The run may not start now (a throttle reserved it a later start, or no concurrency
    /// slot is free): it parks until its continuation fires (or is fired early).
    Delayed {
        /// When its continuation fires (Unix milliseconds).
        at_ms: u64,
        /// The continuation's `herald-wake`.
        wake: String,
    },
    /// Too many runs of the key are parked waiting for a concurrency slot.
    QueueFull(String),
    /// The runs bucket could not be read within the patience: whether the run finished is
    /// unknown, so the handler does not run now.
    StoreUnavailable(String),
    /// The payload was refused before the handler ran.
    Invalid {
        /// `SchemaViolation` or `DecodeError`.
        reason: DeadLetterReason,
        /// Why.
        error: String,
    },
    /// The handler returned `Ok`.
    Done,
    /// The handler returned an error.
    Failed(HandlerError),
    /// The handler panicked.
    Panicked(String),
    /// The handler ran past its timeout.
    TimedOut,
    /// Shutdown's grace period ended while the handler ran.
    Abandoned,
    /// Shutdown began while the delivery waited for a handler permit: it never started.
    NotStarted,
    /// The handler asked for a durable sleep (whatever it returned afterwards).
    Suspended {
        /// When the run wakes (Unix milliseconds).
        wake_at_ms: u64,
        /// The sleep's step key, named by the wake-up (`herald-wake`).
        step_key: String,
    },
}

/// What the decision needs to know besides the outcome; read before [`decide`] is called.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    /// The delivery count (1 for the first delivery).
    pub(crate) delivered: u32,
    /// The function's attempts budget.
    pub(crate) attempts: u32,
    /// The function's timeout, for the error text.
    pub(crate) timeout: Duration,
    /// The function's backoff.
    pub(crate) backoff: Backoff,
    /// A number in [0, 1) for the backoff's jitter, drawn by the caller.
    pub(crate) jitter_unit: f64,
    /// The server has scheduled messages (2.12+).
    pub(crate) schedules: bool,
    /// How a successful run is recorded (idempotent runs with a runs bucket).
    pub(crate) record: Record,
    /// Steps the attempt reached (0 without steps).
    pub(crate) position: u32,
    /// The step the attempt was inside when it ended, if any.
    pub(crate) step: Option<String>,
    /// Failures counted at `position`, this one included, when the run reached steps and
    /// the count was stored; `None` falls back to the delivery count.
    pub(crate) step_failures: Option<u32>,
    /// Now, in Unix milliseconds.
    pub(crate) now_ms: u64,
}

/// How a finished run is recorded (protocol section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    /// Not recorded: `idempotent(false)`, no runs bucket, or nothing left to record.
    Never,
    /// `F.<event-key>` = `ok` is stored before the ack.
    Always,
    /// A plain first delivery: acked with a confirmation, and recorded only when the
    /// confirmation does not come (the stream's deduplication catches republished events).
    IfAckUnconfirmed,
}

/// What is done with a delivery; carried out by [`super::settle`] alone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settlement {
    /// Acknowledge, storing the run's record `F.<event-key>` = `ok` as `record` says.
    Ack {
        /// Whether and when the record is stored.
        record: Record,
    },
    /// Acknowledge a run that parked (its continuation is already scheduled).
    Park(String),
    /// Record the run `skipped` with this reason, then acknowledge.
    Skip(String),
    /// Record the run `cancelled` with this reason, then acknowledge.
    Cancel(String),
    /// NAK with a delay: another attempt follows.
    Retry {
        /// The delay before the next delivery.
        delay: Duration,
        /// What failed.
        error: String,
    },
    /// NAK without delay: another replica takes it at once (shutdown).
    HandBack,
    /// Schedule a continuation of the run at `at_ms`, then acknowledge.
    Continue {
        /// When (Unix milliseconds).
        at_ms: u64,
        /// The sleep step the continuation wakes, if it is a durable sleep.
        wake: Option<String>,
        /// The failure that is retried by the continuation, if any.
        error: Option<String>,
    },
    /// Publish a dead letter, record the run, terminate, call `on_failure`.
    DeadLetter {
        /// `herald-dlq-reason`.
        reason: DeadLetterReason,
        /// `herald-dlq-error`.
        error: String,
        /// `herald-dlq-attempts`.
        attempts: u32,
        /// `herald-dlq-step`.
        step: Option<String>,
    },
}

/// Decides the fate of a delivery.
pub(crate) fn decide(outcome: Outcome, facts: &Facts) -> Settlement {
    let dead_letter = |reason, error: String, attempts| Settlement::DeadLetter {
        reason,
        error,
        attempts,
        step: facts.step.clone(),
    };
    match outcome {
        Outcome::Unreadable(error) => {
            dead_letter(DeadLetterReason::DecodeError, error, facts.delivered)
        }
        Outcome::BeyondAttempts => dead_letter(
            DeadLetterReason::MaxDeliveries,
            format!(
                "delivery {} is beyond the {} attempts: the worker running attempt {} crashed, \
                 hung or lost its connection",
                facts.delivered,
                facts.attempts,
                facts.delivered.saturating_sub(1)
            ),
            facts.attempts,
        ),
        Outcome::OutOfDeliveries => dead_letter(
            DeadLetterReason::MaxDeliveries,
            format!(
                "ran out of deliveries ({}) with no worker left to dead-letter it",
                facts.delivered
            ),
            facts.delivered,
        ),
        Outcome::AlreadyFinished | Outcome::Debounced | Outcome::Batched => Settlement::Ack {
            record: Record::Never,
        },
        Outcome::Skipped(reason) => Settlement::Skip(reason),
        Outcome::Delayed { at_ms, wake } => {
            if facts.schedules {
                Settlement::Continue {
                    at_ms,
                    wake: Some(wake),
                    error: None,
                }
            } else {
                dead_letter(
                    DeadLetterReason::TerminalError,
                    "throttles and concurrency limits need nats-server 2.12 or newer (scheduled messages) to delay a run"
                        .to_owned(),
                    facts.delivered,
                )
            }
        }
        Outcome::QueueFull(error) => {
            dead_letter(DeadLetterReason::QueueFull, error, facts.delivered)
        }
        Outcome::Parked { step_key } => Settlement::Park(step_key),
        Outcome::Cancelled(reason) => Settlement::Cancel(reason),
        Outcome::StoreUnavailable(error) => Settlement::Retry {
            delay: facts.backoff.delay_with(facts.delivered, facts.jitter_unit),
            error: format!("the runs bucket cannot be read: {error}"),
        },
        Outcome::Invalid { reason, error } => dead_letter(reason, error, facts.delivered),
        // A run that reached steps has stored state: its record is stored too.
        Outcome::Done => Settlement::Ack {
            record: match facts.record {
                Record::IfAckUnconfirmed if facts.position > 0 => Record::Always,
                record => record,
            },
        },
        Outcome::Abandoned | Outcome::NotStarted => Settlement::HandBack,
        Outcome::Suspended {
            wake_at_ms,
            step_key,
        } => {
            if facts.schedules {
                Settlement::Continue {
                    at_ms: wake_at_ms,
                    wake: Some(step_key),
                    error: None,
                }
            } else {
                dead_letter(
                    DeadLetterReason::TerminalError,
                    "ctx.sleep needs nats-server 2.12 or newer (scheduled messages); this server \
                     cannot wake the run"
                        .to_owned(),
                    facts.delivered,
                )
            }
        }
        Outcome::TimedOut => retry_or_dead_letter(
            DeadLetterReason::Timeout,
            format!(
                "the attempt ran longer than the timeout of {:?}",
                facts.timeout
            ),
            None,
            facts,
        ),
        Outcome::Panicked(panic) => retry_or_dead_letter(
            DeadLetterReason::HandlerError,
            format!("the handler panicked: {panic}"),
            None,
            facts,
        ),
        Outcome::Failed(error) => match error.kind {
            ErrorKind::Terminal => {
                let text = match &facts.step {
                    Some(step) => format!("step `{step}`: {}", error.message),
                    None => error.message,
                };
                dead_letter(DeadLetterReason::TerminalError, text, facts.delivered)
            }
            ErrorKind::Cancelled => Settlement::Cancel(error.message),
            // A sleep that left no wake time (no run state): try again shortly.
            ErrorKind::Suspend => Settlement::Retry {
                delay: SUSPEND_RETRY,
                error: error.message,
            },
            ErrorKind::Retry(after) => {
                retry_or_dead_letter(DeadLetterReason::HandlerError, error.message, after, facts)
            }
        },
    }
}

/// A retryable failure: counted per step for runs that reached steps, else per delivery.
fn retry_or_dead_letter(
    reason: DeadLetterReason,
    error: String,
    retry_after: Option<Duration>,
    facts: &Facts,
) -> Settlement {
    let dead_letter = |error, attempts| Settlement::DeadLetter {
        reason,
        error,
        attempts,
        step: facts.step.clone(),
    };
    let Some(failures) = facts.step_failures else {
        if facts.delivered >= facts.attempts {
            return dead_letter(error, facts.delivered);
        }
        let delay = retry_after
            .unwrap_or_else(|| facts.backoff.delay_with(facts.delivered, facts.jitter_unit));
        return Settlement::Retry { delay, error };
    };
    if failures >= facts.attempts {
        let place = match &facts.step {
            Some(step) => format!("step `{step}`"),
            None => format!("the code after step {}", facts.position),
        };
        return dead_letter(
            format!("{place} failed {failures} times: {error}"),
            failures,
        );
    }
    let delay =
        retry_after.unwrap_or_else(|| facts.backoff.delay_with(failures, facts.jitter_unit));
    if facts.delivered < facts.attempts || !facts.schedules {
        // Without schedules the next delivery beyond the budget dead-letters the run.
        return Settlement::Retry { delay, error };
    }
    // This delivery's budget was spent by earlier steps: continue in a fresh message.
    Settlement::Continue {
        at_ms: facts.now_ms + delay.as_millis() as u64,
        wake: None,
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            delivered: 1,
            attempts: 3,
            timeout: Duration::from_secs(5),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter: 0.0,
            },
            jitter_unit: 0.5,
            schedules: true,
            record: Record::Always,
            position: 0,
            step: None,
            step_failures: None,
            now_ms: 1_000_000,
        }
    }

    fn dead(reason: DeadLetterReason, error: &str, attempts: u32) -> Settlement {
        Settlement::DeadLetter {
            reason,
            error: error.to_owned(),
            attempts,
            step: None,
        }
    }

    fn retry(secs: u64, error: &str) -> Settlement {
        Settlement::Retry {
            delay: Duration::from_secs(secs),
            error: error.to_owned(),
        }
    }

    #[test]
    fn before_the_handler() {
        let beyond = Facts {
            delivered: 4,
            ..facts()
        };
        let cases: Vec<(Outcome, Facts, Settlement)> = vec![
            (
                Outcome::Unreadable("not JSON".into()),
                facts(),
                dead(DeadLetterReason::DecodeError, "not JSON", 1),
            ),
            (
                Outcome::BeyondAttempts,
                beyond,
                dead(
                    DeadLetterReason::MaxDeliveries,
                    "delivery 4 is beyond the 3 attempts: the worker running attempt 3 crashed, \
                     hung or lost its connection",
                    3,
                ),
            ),
            (
                Outcome::OutOfDeliveries,
                Facts {
                    delivered: 5,
                    ..facts()
                },
                dead(
                    DeadLetterReason::MaxDeliveries,
                    "ran out of deliveries (5) with no worker left to dead-letter it",
                    5,
                ),
            ),
            (
                Outcome::AlreadyFinished,
                facts(),
                Settlement::Ack {
                    record: Record::Never,
                },
            ),
            (
                Outcome::Cancelled("by hand".into()),
                Facts {
                    delivered: 2,
                    ..facts()
                },
                Settlement::Cancel("by hand".into()),
            ),
            (
                Outcome::Failed(crate::function::HandlerError {
                    kind: ErrorKind::Cancelled,
                    message: "by hand".into(),
                }),
                Facts {
                    delivered: 5,
                    step: Some("charge".into()),
                    ..facts()
                },
                Settlement::Cancel("by hand".into()),
            ),
            (
                Outcome::Parked {
                    step_key: "wait".into(),
                },
                Facts {
                    delivered: 5,
                    ..facts()
                },
                Settlement::Park("wait".into()),
            ),
            (
                Outcome::Debounced,
                Facts {
                    delivered: 3,
                    ..facts()
                },
                Settlement::Ack {
                    record: Record::Never,
                },
            ),
            (
                Outcome::Skipped("overlap".into()),
                Facts {
                    delivered: 9,
                    ..facts()
                },
                Settlement::Skip("overlap".into()),
            ),
            (
                Outcome::StoreUnavailable("timed out".into()),
                Facts {
                    delivered: 2,
                    ..facts()
                },
                retry(2, "the runs bucket cannot be read: timed out"),
            ),
            (
                Outcome::Invalid {
                    reason: DeadLetterReason::SchemaViolation,
                    error: "/n: not an integer".into(),
                },
                Facts {
                    delivered: 2,
                    ..facts()
                },
                dead(DeadLetterReason::SchemaViolation, "/n: not an integer", 2),
            ),
        ];
        for (outcome, facts, want) in cases {
            let label = format!("{outcome:?}");
            assert_eq!(decide(outcome, &facts), want, "{label}");
        }
    }

    #[test]
    fn after_the_handler_without_steps() {
        let last = Facts {
            delivered: 3,
            ..facts()
        };
        let unrecorded = Facts {
            record: Record::Never,
            ..facts()
        };
        let plain = Facts {
            record: Record::IfAckUnconfirmed,
            ..facts()
        };
        let plain_with_steps = Facts {
            record: Record::IfAckUnconfirmed,
            position: 2,
            ..facts()
        };
        let cases: Vec<(Outcome, Facts, Settlement)> = vec![
            (
                Outcome::Done,
                facts(),
                Settlement::Ack {
                    record: Record::Always,
                },
            ),
            (
                Outcome::Done,
                unrecorded,
                Settlement::Ack {
                    record: Record::Never,
                },
            ),
            // A plain first delivery is recorded only if its ack is not confirmed...
            (
                Outcome::Done,
                plain,
                Settlement::Ack {
                    record: Record::IfAckUnconfirmed,
                },
            ),
            // ...unless it reached steps, which stored state the record completes.
            (
                Outcome::Done,
                plain_with_steps,
                Settlement::Ack {
                    record: Record::Always,
                },
            ),
            (Outcome::Abandoned, facts(), Settlement::HandBack),
            (Outcome::NotStarted, facts(), Settlement::HandBack),
            (
                Outcome::Failed(HandlerError::retry("down")),
                facts(),
                retry(1, "down"),
            ),
            (
                Outcome::Failed(HandlerError::retry("down")),
                Facts {
                    delivered: 2,
                    ..facts()
                },
                retry(2, "down"),
            ),
            (
                Outcome::Failed(HandlerError::retry_after(Duration::from_secs(9), "429")),
                facts(),
                retry(9, "429"),
            ),
            (
                Outcome::Failed(HandlerError::retry("down")),
                last.clone(),
                dead(DeadLetterReason::HandlerError, "down", 3),
            ),
            (
                Outcome::Failed(HandlerError::terminal("bad credentials")),
                facts(),
                dead(DeadLetterReason::TerminalError, "bad credentials", 1),
            ),
            (
                Outcome::Panicked("boom".into()),
                facts(),
                retry(1, "the handler panicked: boom"),
            ),
            (
                Outcome::Panicked("boom".into()),
                last.clone(),
                dead(
                    DeadLetterReason::HandlerError,
                    "the handler panicked: boom",
                    3,
                ),
            ),
            (
                Outcome::TimedOut,
                facts(),
                retry(1, "the attempt ran longer than the timeout of 5s"),
            ),
            (
                Outcome::TimedOut,
                last,
                dead(
                    DeadLetterReason::Timeout,
                    "the attempt ran longer than the timeout of 5s",
                    3,
                ),
            ),
        ];
        for (outcome, facts, want) in cases {
            let label = format!("{outcome:?} at delivery {}", facts.delivered);
            assert_eq!(decide(outcome, &facts), want, "{label}");
        }
    }

    #[test]
    fn sleeps() {
        let sleep = || Outcome::Suspended {
            wake_at_ms: 5_000_000,
            step_key: "trial".into(),
        };
        assert_eq!(
            decide(sleep(), &facts()),
            Settlement::Continue {
                at_ms: 5_000_000,
                wake: Some("trial".into()),
                error: None
            }
        );
        let old_server = Facts {
            schedules: false,
            delivered: 2,
            ..facts()
        };
        match decide(sleep(), &old_server) {
            Settlement::DeadLetter {
                reason: DeadLetterReason::TerminalError,
                attempts: 2,
                error,
                ..
            } => assert!(error.contains("2.12"), "{error}"),
            other => panic!("a sleep on a server without schedules: {other:?}"),
        }
        let swallowed = HandlerError {
            kind: ErrorKind::Suspend,
            message: "sleeping".into(),
        };
        assert_eq!(
            decide(Outcome::Failed(swallowed), &facts()),
            Settlement::Retry {
                delay: SUSPEND_RETRY,
                error: "sleeping".into()
            }
        );
    }

    #[test]
    fn failures_inside_steps_count_per_step() {
        let in_step = |delivered, failures| Facts {
            delivered,
            position: 2,
            step: Some("charge".into()),
            step_failures: Some(failures),
            ..facts()
        };
        let failed = || Outcome::Failed(HandlerError::retry("card declined"));
        // The count of this step, not the delivery, sets the backoff.
        assert_eq!(decide(failed(), &in_step(2, 1)), retry(1, "card declined"));
        // The step's own budget is spent: dead letter naming it.
        assert_eq!(
            decide(failed(), &in_step(2, 3)),
            Settlement::DeadLetter {
                reason: DeadLetterReason::HandlerError,
                error: "step `charge` failed 3 times: card declined".into(),
                attempts: 3,
                step: Some("charge".into()),
            }
        );
        // The delivery budget was spent by earlier steps: a continuation, backoff for 2.
        assert_eq!(
            decide(failed(), &in_step(3, 2)),
            Settlement::Continue {
                at_ms: 1_002_000,
                wake: None,
                error: Some("card declined".into()),
            }
        );
        // Without schedules the delivery budget still rules.
        let old_server = Facts {
            schedules: false,
            ..in_step(3, 2)
        };
        assert_eq!(decide(failed(), &old_server), retry(2, "card declined"));
        // After the last step (not inside one).
        let after = Facts {
            step: None,
            ..in_step(2, 3)
        };
        assert_eq!(
            decide(failed(), &after),
            dead(
                DeadLetterReason::HandlerError,
                "the code after step 2 failed 3 times: card declined",
                3
            )
        );
        // A terminal error inside a step names it.
        assert_eq!(
            decide(
                Outcome::Failed(HandlerError::terminal("no such card")),
                &in_step(1, 1)
            ),
            Settlement::DeadLetter {
                reason: DeadLetterReason::TerminalError,
                error: "step `charge`: no such card".into(),
                attempts: 1,
                step: Some("charge".into()),
            }
        );
        // The count could not be stored: the delivery count decides.
        let uncounted = Facts {
            step_failures: None,
            ..in_step(3, 1)
        };
        assert_eq!(
            decide(failed(), &uncounted),
            Settlement::DeadLetter {
                reason: DeadLetterReason::HandlerError,
                error: "card declined".into(),
                attempts: 3,
                step: Some("charge".into()),
            }
        );
    }
}
