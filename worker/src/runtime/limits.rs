//! Throttle and rate limit at a run's start (protocol section 15): a GCRA decision per
//! run, stored after the key's new state (each write conditional on its key's last
//! sequence), so that a redelivered event gets the decision it got first and no start is
//! counted twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::protocol::header;
use serde::{Deserialize, Serialize};

use super::FunctionLoop;
use super::decide::Outcome;
use super::delivery::{Delivery, log};
use crate::dead_letter::DeadLetterReason;
use crate::flow::debounce::key_token;
use crate::flow::gcra::Gcra;
use crate::flow::limits::{Excess, PaceLimit, THROTTLE_WAKE, state_key};
use crate::flow::metrics::{Held, Skip};
use crate::run_store::{Lifetime, RunStoreError, Write, WriteError};
use crate::steps::RunState;

/// Conflicting writers tried again (each means another start of the key came in between).
const ROUNDS: usize = 50;
/// How long before its reserved start a parked run is woken: a schedule may fire late on a
/// loaded server, and a woken run waits out the rest in the worker.
const WAKE_LEAD: Duration = Duration::from_secs(2);
/// A reserved start closer than this is waited for in the worker rather than parked (the
/// server fires schedules in whole seconds, at least a second ahead, and the wake comes
/// [`WAKE_LEAD`] early).
const PARK_BEYOND: Duration = Duration::from_secs(4);
/// The least lateness after which a woken run gives up its reserved start and reserves
/// again (its worker died while it waited, or the wake came later than [`WAKE_LEAD`]):
/// starting that late would bunch it with the starts after it.
const LATE_AFTER: Duration = Duration::from_millis(100);

/// A run's decision under one limit: `F.<event-key>.rl` (rate limit) or `.th` (throttle).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Decision {
    /// Whether the run may start (a rate limit's `false` drops it).
    pub(crate) admitted: bool,
    /// When it may start (Unix µs; a throttle's reserved start).
    pub(crate) start_at_us: u64,
}

/// The key's state: `{"tat_us": N}`.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    tat_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl FunctionLoop {
    /// The function's rate limit, then its throttle; `Some` settles the delivery.
    pub(super) async fn paced(&self, delivery: &Delivery, run: &RunState) -> Option<Outcome> {
        let settings = &self.function.settings;
        // Limits pace run starts: the continuations of a run that started are not paced
        // again; a throttled run's own wake waits out the last fraction of a second.
        if delivery.header(header::CONTINUATION).is_some() {
            if delivery.header(header::WAKE) == Some(THROTTLE_WAKE)
                && let Some(throttle) = &settings.throttle
            {
                let key = decision_key(run, throttle);
                // From the leader: a follower may not have the decision yet.
                let read = crate::run_store::until(run.deadline(), || {
                    run.store.get_from_leader::<Decision>(&key)
                });
                let decision = match self.keep_alive(delivery, read).await {
                    Ok(Some(decision)) => decision,
                    // Never started without its reservation: a run that starts on a failed
                    // read bunches with every other run whose read failed with it (the
                    // bucket electing a leader). Tried again after the backoff.
                    Err(error) => {
                        return Some(Outcome::StoreUnavailable(format!(
                            "the throttle's decision cannot be read: {error}"
                        )));
                    }
                    // No decision left (removed by hand, say): a new reservation.
                    Ok(None) => {
                        let again = self.decision(delivery, run, throttle, None);
                        return match again.await {
                            Err(outcome) => Some(outcome),
                            Ok(decision) if !decision.admitted => Some(too_long(throttle)),
                            Ok(decision) => {
                                self.start_or_park(delivery, decision.start_at_us).await
                            }
                        };
                    }
                };
                self.flow_metrics().woken(&self.function.id, Held::Throttle);
                let late_after = Duration::from_micros(throttle.gcra().emission_us())
                    .max(LATE_AFTER)
                    .as_micros() as u64;
                if now_us() <= decision.start_at_us + late_after {
                    self.keep_alive(delivery, wait_until(decision.start_at_us))
                        .await;
                    self.flow_metrics().started_after_wait(
                        &self.function.id,
                        Held::Throttle,
                        delivery.meta.time(),
                    );
                    return None;
                }
                // Too late to keep its place: a new reservation, at the back.
                log!(
                    delivery,
                    debug,
                    "woken too late for its reserved start; reserving again"
                );
                let again = self.decision(delivery, run, throttle, Some(decision.start_at_us));
                return match again.await {
                    Err(outcome) => Some(outcome),
                    Ok(decision) if !decision.admitted => Some(too_long(throttle)),
                    Ok(decision) => self.start_or_park(delivery, decision.start_at_us).await,
                };
            }
            return None;
        }
        // Decisions in the order the events arrived (a throttle's starts keep it).
        if let Some(turn) = &run.turn {
            self.keep_alive(delivery, turn.turn()).await;
        }
        let decided = self.decide_start(delivery, run).await;
        if let Some(turn) = &run.turn {
            turn.leave();
        }
        match decided {
            Err(outcome) => Some(outcome),
            Ok(None) => None,
            Ok(Some(start_at_us)) => self.start_or_park(delivery, start_at_us).await,
        }
    }

    /// Waits for a reserved start in the worker if it is near, or parks the run until
    /// [`WAKE_LEAD`] before it (`Some` settles the delivery).
    async fn start_or_park(&self, delivery: &Delivery, start_at_us: u64) -> Option<Outcome> {
        let wait = Duration::from_micros(start_at_us.saturating_sub(now_us()));
        if wait < PARK_BEYOND {
            self.keep_alive(delivery, wait_until(start_at_us)).await;
            if wait > Duration::from_millis(1) {
                self.flow_metrics().started_after_wait(
                    &self.function.id,
                    Held::Throttle,
                    delivery.meta.time(),
                );
            }
            return None;
        }
        self.flow_metrics()
            .parked(&self.function.id, Held::Throttle);
        log!(
            delivery,
            debug,
            in_ms = wait.as_millis() as u64,
            "throttled"
        );
        let wake_ms = (start_at_us / 1000).saturating_sub(WAKE_LEAD.as_millis() as u64);
        Some(Outcome::Delayed {
            at_ms: wake_ms / 1000 * 1000,
            wake: THROTTLE_WAKE.to_owned(),
        })
    }

    /// The rate limit's and the throttle's decisions: `Err` settles the delivery, `Ok(Some)`
    /// is a throttle's reserved start (Unix µs), `Ok(None)` starts now.
    async fn decide_start(
        &self,
        delivery: &Delivery,
        run: &RunState,
    ) -> Result<Option<u64>, Outcome> {
        let settings = &self.function.settings;
        if let Some(limit) = &settings.rate_limit {
            match self.decision(delivery, run, limit, None).await {
                Ok(decision) if decision.admitted => {}
                Ok(_) => {
                    self.flow_metrics()
                        .skipped(&self.function.id, Skip::RateLimited);
                    return Err(Outcome::Skipped(format!(
                        "rate_limited: beyond {} per {:?}",
                        limit.limit, limit.period
                    )));
                }
                Err(error) => return Err(error),
            }
        }
        let Some(throttle) = settings.throttle.as_ref() else {
            return Ok(None);
        };
        let decision = self.decision(delivery, run, throttle, None).await?;
        if !decision.admitted {
            return Err(too_long(throttle));
        }
        Ok(Some(decision.start_at_us))
    }

    /// The turnstile lanes of a delivery: one per throttle or rate limit, `<prefix>.<key>`.
    /// A key that cannot be read gets no lane (the event is dead-lettered undecided).
    pub(super) fn pace_lanes(&self, delivery: &Delivery) -> Vec<String> {
        let settings = &self.function.settings;
        [&settings.throttle, &settings.rate_limit]
            .into_iter()
            .flatten()
            .filter_map(|limit| {
                let token = match &limit.key {
                    Some(key_of) => key_token(&key_of(&delivery.data).ok()?),
                    None => "_".to_owned(),
                };
                Some(format!("{}.{token}", limit.prefix()))
            })
            .collect()
    }

    /// The run's decision under `limit`: the stored one (unless it reserved the start at
    /// `replacing`), or a new one stored with the key's new state. An `Err` settles the
    /// delivery (the store cannot be reached).
    async fn decision(
        &self,
        delivery: &Delivery,
        run: &RunState,
        limit: &PaceLimit,
        replacing: Option<u64>,
    ) -> Result<Decision, Outcome> {
        let token = match &limit.key {
            // An event that does not decode is dead-lettered by the handler's path.
            Some(key_of) => match key_of(&delivery.data) {
                Ok(key) => key_token(&key),
                Err(_) => {
                    return Ok(Decision {
                        admitted: true,
                        start_at_us: 0,
                    });
                }
            },
            None => "_".to_owned(),
        };
        let decide = self.decide(run, limit, &token, replacing);
        let decided = self.keep_alive(delivery, decide).await;
        decided.map_err(|error| {
            Outcome::StoreUnavailable(format!("the {} cannot be decided: {error}", limit.prefix()))
        })
    }

    async fn decide(
        &self,
        run: &RunState,
        limit: &PaceLimit,
        token: &str,
        replacing: Option<u64>,
    ) -> Result<Decision, RunStoreError> {
        let gcra = limit.gcra();
        let decision_key = decision_key(run, limit);
        let state_key = state_key(limit, &self.function.id, token);
        let retention = run
            .store
            .ttl_seconds(Lifetime::Retention)
            .map(Duration::from_secs);
        let mut failures = 0;
        let mut rounds = 0;
        loop {
            let attempt = async {
                let stored = run.store.read_versioned(&decision_key).await?;
                if let Some((_, Some(bytes))) = &stored
                    && let Ok(decision) = serde_json::from_slice::<Decision>(bytes)
                    && replacing != Some(decision.start_at_us)
                {
                    return Ok(Ok(decision));
                }
                let (state_seq, tat_us) = match run.store.read_versioned(&state_key).await? {
                    Some((seq, Some(bytes))) => (
                        seq,
                        serde_json::from_slice::<State>(&bytes).map_or(0, |s| s.tat_us),
                    ),
                    Some((seq, None)) => (seq, 0),
                    None => (0, 0),
                };
                let now = now_us();
                let reservation = gcra.reserve(tat_us, now);
                let admitted = match limit.excess {
                    Excess::Drop => reservation.start_at_us <= now,
                    Excess::Delay => limit
                        .max_delay
                        .is_none_or(|max| reservation.start_at_us - now <= max.as_micros() as u64),
                };
                let decision = Decision {
                    admitted,
                    start_at_us: reservation.start_at_us,
                };
                if !admitted && limit.excess == Excess::Delay {
                    // Dead-lettered: nothing reserved, nothing to remember.
                    return Ok(Ok(decision));
                }
                let record = Write {
                    key: &decision_key,
                    value: serde_json::to_vec(&decision).unwrap_or_default().into(),
                    expected: stored.map_or(0, |(seq, _)| seq),
                    ttl: retention,
                };
                if admitted {
                    // The reservation first, then the decision: a decision never stands
                    // without its reservation. A crash or a lost race in between spends a
                    // reservation no run uses (the key admits one run fewer), never one more.
                    let state = serde_json::to_vec(&State {
                        tat_us: reservation.tat_us,
                    })
                    .unwrap_or_default();
                    let reserve = Write {
                        key: &state_key,
                        value: state.into(),
                        expected: state_seq,
                        ttl: Some(Gcra::record_ttl(reservation.tat_us, now)),
                    };
                    if let Err(error) = run.store.write_if(&reserve).await {
                        return Ok(Err(error));
                    }
                }
                // A conflict here: another attempt of this run decided first; step 1 reads
                // its decision.
                Ok::<_, RunStoreError>(run.store.write_if(&record).await.map(|_| decision))
            };
            match attempt.await {
                Ok(Ok(decision)) => return Ok(decision),
                Ok(Err(WriteError::Conflict)) if rounds < ROUNDS => rounds += 1,
                Ok(Err(WriteError::Conflict)) => {
                    return Err(crate::run_store::store_error("decide", &state_key)(
                        "too many concurrent starts of one key; trying again later",
                    ));
                }
                Ok(Err(WriteError::Failed(error))) | Err(error) => {
                    failures += 1;
                    if failures >= 8 {
                        return Err(error);
                    }
                    tokio::time::sleep(Duration::from_millis(50 << failures.min(5))).await;
                }
            }
        }
    }
}

/// The dead letter of a throttled run whose start would be beyond its `max_delay`.
fn too_long(throttle: &PaceLimit) -> Outcome {
    Outcome::Invalid {
        reason: DeadLetterReason::ThrottledTooLong,
        error: format!(
            "the throttle ({} per {:?}) would start the run in more than its max_delay of {:?}",
            throttle.limit,
            throttle.period,
            throttle.max_delay.unwrap_or_default()
        ),
    }
}

/// `F.<event-key>.<th|rl>`.
fn decision_key(run: &RunState, limit: &PaceLimit) -> String {
    format!("{}.{}", run.run_key, limit.decision_suffix())
}

/// Sleeps until `at_us` (Unix µs).
async fn wait_until(at_us: u64) {
    let wait = at_us.saturating_sub(now_us());
    if wait > 0 {
        tokio::time::sleep(Duration::from_micros(wait)).await;
    }
}
