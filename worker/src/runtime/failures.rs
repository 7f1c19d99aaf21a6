//! What an attempt's end means for its run: a pending durable sleep, and failures counted
//! per step (protocol section 7). Shared by the worker and [`crate::TestWorker`].

use super::decide::Outcome;
use crate::dead_letter;
use crate::function::ErrorKind;
use crate::run_store::{Lifetime, RunStoreError};
use crate::steps::{FailureRecord, RunState};

/// A durable sleep suspends the run whatever the handler made of its error.
pub(crate) fn with_suspension(outcome: Outcome, run: Option<&RunState>) -> Outcome {
    if let Some(step_key) = run.and_then(|r| r.parked.lock().clone())
        && matches!(outcome, Outcome::Done | Outcome::Failed(_))
    {
        return Outcome::Parked { step_key };
    }
    match (outcome, run.and_then(|r| r.suspend_until.lock().clone())) {
        (Outcome::Done | Outcome::Failed(_), Some((wake_at_ms, step_key))) => Outcome::Suspended {
            wake_at_ms,
            step_key,
        },
        (outcome, _) => outcome,
    }
}

/// Counts a retryable failure of a run that reached steps in `F.<event-key>.p`, within
/// the run's patience. `None` when there is nothing to count (not a retryable failure, or
/// no step reached); else the failures at this position, this one included.
pub(crate) async fn count_step_failure(
    run: &RunState,
    epoch: &str,
    outcome: &Outcome,
) -> Option<Result<u32, RunStoreError>> {
    let error = match outcome {
        Outcome::Failed(error) if matches!(error.kind, ErrorKind::Retry(_)) => {
            error.message.clone()
        }
        Outcome::Panicked(panic) => format!("the handler panicked: {panic}"),
        Outcome::TimedOut => "the attempt timed out".to_owned(),
        _ => return None,
    };
    let (position, step) = run.position.lock().clone();
    if position == 0 {
        return None;
    }
    let key = run.failure_key();
    let count = async {
        let previous = run
            .store
            .get_until::<FailureRecord>(&key, run.deadline())
            .await?
            .filter(|r| r.position == position && r.epoch == epoch);
        let failures = previous.map_or(1, |r| r.failures + 1);
        let record = FailureRecord {
            position,
            step,
            failures,
            error: dead_letter::one_line(&error),
            epoch: epoch.to_owned(),
        };
        run.store
            .put_until(&key, &record, Lifetime::Retention, run.deadline())
            .await?;
        Ok(failures)
    };
    Some(count.await)
}
