//! Asking a consumer for messages: places in the window first, then a pull request for at
//! most that many, answered on the lane's inbox ([`super::inbox`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::{self, consumer::pull};
use tokio::sync::OwnedSemaphorePermit;

use super::FunctionLoop;
use super::consumer::LaneKind;

/// The most messages asked for in one pull request.
const MAX_PULL: usize = 1024;

/// How long one pull request waits for messages before it expires.
pub(super) const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How a lane's next request went.
pub(super) enum Requested {
    /// Sent, for as many messages as `places` holds.
    Sent {
        consumer: Box<jetstream::consumer::PullConsumer>,
        retiring: bool,
        places: OwnedSemaphorePermit,
    },
    /// The retiring redrive consumer was empty and is deleted: nothing more to ask.
    Retired,
    /// The consumer is gone and no longer wanted, or the worker is stopping.
    Over,
}

impl FunctionLoop {
    /// Takes places in the window of one of the function's consumers, then asks it for at
    /// most that many messages, answered on `inbox`. A consumer whose binding was lost is
    /// looked up (or made) again first; failures are retried with backoff. A retiring
    /// redrive consumer ([`super::converge`]) is deleted instead once it is empty.
    pub(super) async fn request(
        &self,
        kind: LaneKind,
        mut consumer: jetstream::consumer::PullConsumer,
        mut retiring: bool,
        inbox: Subject,
    ) -> Requested {
        let mut failures: u32 = 0;
        let concurrency = self.function.settings.concurrency.max(1);
        let lane = self.lane(kind);
        loop {
            if retiring && self.retire(&mut consumer).await {
                return Requested::Retired;
            }
            // Pull again once half the target is free (as nats.go's consumers do): fewer,
            // larger pull requests, while the open ones keep delivering. Places beyond the
            // target are waited for too, then given back: the target moves with the pace.
            let target = self.pace.target(concurrency, lane.window_size);
            let beyond = lane.window_size - target;
            let wanted = u32::try_from((target / 2).max(1) + beyond).unwrap_or(u32::MAX);
            let Ok(mut places) = Arc::clone(&lane.window).acquire_many_owned(wanted).await else {
                return Requested::Over;
            };
            drop(places.split(beyond));
            let extra = lane
                .window
                .available_permits()
                .min(target - places.num_permits());
            if extra > 0
                && let Ok(more) = Arc::clone(&lane.window)
                    .try_acquire_many_owned(u32::try_from(extra).unwrap_or(0))
            {
                places.merge(more);
            }
            if places.num_permits() > MAX_PULL {
                drop(places.split(places.num_permits() - MAX_PULL));
            }
            if lane.binding.take_lost() {
                match self.converge().await {
                    Ok(fresh) => {
                        tracing::info!(function = %self.function.id, consumer = lane.binding.id(),
                            "consumer re-created or re-bound");
                        match kind {
                            LaneKind::Events => consumer = fresh.events,
                            LaneKind::Redrive => {
                                // Gone, and no longer wanted: nothing is left to read.
                                let Some(redrive) = fresh.redrive else {
                                    return Requested::Over;
                                };
                                consumer = redrive.consumer;
                                retiring = redrive.retiring;
                            }
                        }
                    }
                    Err(error) => {
                        drop(places);
                        lane.binding.lost();
                        failures += 1;
                        tracing::warn!(function = %self.function.id, %error, "consumer not available; retrying");
                        if self.pause(failures).await {
                            return Requested::Over;
                        }
                        continue;
                    }
                }
            }
            let batch = pull::BatchConfig {
                batch: places.num_permits(),
                expires: Some(PULL_EXPIRES),
                ..pull::BatchConfig::default()
            };
            match consumer.request_batch(batch, inbox.clone()).await {
                Ok(()) => {
                    return Requested::Sent {
                        consumer: Box::new(consumer),
                        retiring,
                        places,
                    };
                }
                Err(error) => {
                    drop(places);
                    failures += 1;
                    lane.binding.lost();
                    tracing::warn!(function = %self.function.id, %error, "pull failed; retrying");
                    if self.pause(failures).await {
                        return Requested::Over;
                    }
                }
            }
        }
    }

    /// A pull request ended with an error: the binding is checked before the next pull.
    pub(super) fn request_failed(&self, kind: LaneKind, error: &dyn std::fmt::Display) {
        let binding = &self.lane(kind).binding;
        tracing::warn!(function = %self.function.id, consumer = binding.id(), %error,
            "pull request ended with an error");
        binding.lost();
    }

    /// Waits before a retry; true if the worker is stopping.
    pub(super) async fn pause(&self, failures: u32) -> bool {
        let pause = crate::backoff::Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            jitter: 0.2,
        }
        .delay(failures);
        tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = self.shared.stop.cancelled() => true,
        }
    }
}
