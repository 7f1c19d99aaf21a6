//! Making a function's consumers, and keeping them as configured (protocol section 3).
//!
//! A function with event triggers and no `max_ack_pending` of its own has two: its own,
//! filtered on its triggers, and its redrive consumer, filtered on `ns.redrive.F`. The
//! redrive consumer is always made or checked before the function's own consumer drops the
//! redrive subject, so that a function that ran with one consumer loses no redrive on the
//! way: the new consumer starts after the old one's ack floor. A redrive consumer that a
//! function no longer wants (it set `max_ack_pending`, or lost its triggers) is read until
//! it is empty, after the function's own consumer has taken the redrive subject back, and
//! then deleted.

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};

use super::FunctionLoop;
use super::consumer::{consumer_config, has_redrive_consumer, redrive_config, update_for};
use super::worker::WorkerError;

/// A function's consumers, made or checked.
pub(crate) struct Consumers {
    /// The function's own consumer.
    pub(crate) events: PullConsumer,
    /// Its redrive consumer, if it has one.
    pub(crate) redrive: Option<Redrive>,
}

/// A function's redrive consumer.
pub(crate) struct Redrive {
    pub(crate) consumer: PullConsumer,
    /// The function no longer wants it: it is read until empty, then deleted.
    pub(crate) retiring: bool,
}

impl FunctionLoop {
    /// Makes or checks the function's consumers: the redrive consumer first (when the
    /// function has one), then the function's own.
    pub(crate) async fn converge(&self) -> Result<Consumers, WorkerError> {
        let namespace = self.shared.client.namespace();
        let events_have = self.find_consumer(&self.function.id).await;
        let mut redrive = None;
        if has_redrive_consumer(&self.function) {
            let have = events_have.as_ref().map(PullConsumer::cached_info);
            let name = herald::protocol::redrive_consumer(&self.function.id);
            let redrive_have = self.find_consumer(&name).await;
            let mut want = redrive_config(&self.function, namespace);
            if redrive_have.is_none() {
                want = self.redrive_start(want, have).await?;
            }
            let consumer = self.converge_one(redrive_have, want).await?;
            self.redrive.binding.bound();
            redrive = Some(Redrive {
                consumer,
                retiring: false,
            });
        }
        let mut want = consumer_config(&self.function, namespace);
        if events_have.is_none() {
            want = self
                .starting_now(want)
                .await
                .map_err(|source| WorkerError::Consumer {
                    function: self.function.id.to_string(),
                    source,
                })?;
        }
        let events = self.converge_one(events_have, want).await?;
        self.events.binding.bound();
        if redrive.is_none()
            && let Some(consumer) = self
                .find_consumer(&herald::protocol::redrive_consumer(&self.function.id))
                .await
        {
            tracing::info!(function = %self.function.id,
                "the function no longer has a redrive consumer; reading the one left until it is empty");
            self.redrive.binding.bound();
            redrive = Some(Redrive {
                consumer,
                retiring: true,
            });
        }
        Ok(Consumers { events, redrive })
    }

    /// The consumer named `name` on the events stream, with its info, if it can be read.
    async fn find_consumer(&self, name: &str) -> Option<PullConsumer> {
        let shared = &self.shared;
        match shared
            .client
            .jetstream()
            .get_consumer_from_stream::<pull::Config, _, _>(name, &shared.events_stream)
            .await
        {
            Ok(consumer) => Some(consumer),
            Err(lookup) => {
                tracing::debug!(function = %self.function.id, consumer = name, error = %lookup,
                    "consumer not found; creating it");
                None
            }
        }
    }

    /// Where a new redrive consumer starts. Made with the function's own consumer, where
    /// that one starts. Made beside a function's consumer that still has the redrive
    /// subject (a function that ran with one consumer): after that consumer's ack floor,
    /// so that every redrive it has not acked is delivered again by the new one (one that
    /// both deliver meanwhile is found by its run record); the new one starts paused if the
    /// function is. Made beside one without it (the redrive consumer was deleted): new
    /// messages only, as the function's own consumer would be if it were deleted.
    async fn redrive_start(
        &self,
        mut want: pull::Config,
        events: Option<&jetstream::consumer::Info>,
    ) -> Result<pull::Config, WorkerError> {
        let subject = self
            .shared
            .client
            .namespace()
            .redrive_subject(&self.function.id);
        if let Some(info) = events {
            let config = &info.config;
            let had_subject =
                config.filter_subject == subject || config.filter_subjects.contains(&subject);
            if had_subject {
                tracing::info!(function = %self.function.id, after = info.ack_floor.stream_sequence,
                    "moving the function's redrive subject to a consumer of its own");
                want.deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: info.ack_floor.stream_sequence + 1,
                };
                if info.paused {
                    want.pause_until = config.pause_until;
                }
                return Ok(want);
            }
            tracing::info!(function = %self.function.id,
                "making the function's redrive consumer, for new messages (its own consumer exists)");
            want.deliver_policy = jetstream::consumer::DeliverPolicy::New;
            if info.paused {
                want.pause_until = config.pause_until;
            }
        }
        self.starting_now(want)
            .await
            .map_err(|source| WorkerError::Consumer {
                function: self.function.id.to_string(),
                source,
            })
    }

    /// `DeliverPolicy::New` made definite: by start sequence, after the last event stored
    /// now. A clustered consumer resolves `New` only when its replicas take up the assignment,
    /// after the create request was answered, so events stored in between (a producer that
    /// publishes as soon as the worker started) would be skipped.
    async fn starting_now(
        &self,
        mut want: pull::Config,
    ) -> Result<pull::Config, async_nats::Error> {
        if want.deliver_policy == jetstream::consumer::DeliverPolicy::New {
            // The look-up answers with the stream's info, its last sequence as of now.
            let stream = self
                .shared
                .client
                .jetstream()
                .get_stream(&self.shared.events_stream)
                .await?;
            let last = stream.cached_info().state.last_sequence;
            want.deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            };
        }
        Ok(want)
    }

    /// Creates a consumer (`have` is `None`) or updates it when the fields Herald sets
    /// differ. When the server's limits refuse Herald's default `max_ack_pending`, the
    /// server's own default is left in place (a function that sets `max_ack_pending` gets
    /// the server's refusal).
    async fn converge_one(
        &self,
        have: Option<PullConsumer>,
        mut want: pull::Config,
    ) -> Result<PullConsumer, WorkerError> {
        let result = match self.make_or_update(have.as_ref(), &want).await {
            Err(refused)
                if refused.over_limit && self.function.settings.max_ack_pending.is_none() =>
            {
                tracing::warn!(function = %self.function.id, wanted = want.max_ack_pending,
                    error = %refused.source,
                    "the server's limits refuse Herald's default max_ack_pending; the server's default \
                     is kept (set Function::max_ack_pending to choose one within the limits)");
                want.max_ack_pending = 0;
                self.make_or_update(have.as_ref(), &want).await
            }
            other => other,
        };
        result.map_err(|refused| match self.function.settings.max_ack_pending {
            Some(wanted) if refused.over_limit => WorkerError::AckPendingAboveLimit {
                function: self.function.id.to_string(),
                wanted,
                source: refused.source,
            },
            _ => WorkerError::Consumer {
                function: self.function.id.to_string(),
                source: refused.source,
            },
        })
    }

    /// Updates `have` when it differs from `want`, or creates `want`.
    async fn make_or_update(
        &self,
        have: Option<&PullConsumer>,
        want: &pull::Config,
    ) -> Result<PullConsumer, Refused> {
        let shared = &self.shared;
        let js = shared.client.jetstream();
        let Some(consumer) = have else {
            return js
                .create_consumer_on_stream(want.clone(), &shared.events_stream)
                .await
                .map_err(|error| {
                    let over_limit = matches!(error.kind(),
                        jetstream::stream::ConsumerErrorKind::JetStream(error)
                            if over_ack_pending_limit(&error));
                    Refused::new(over_limit, error)
                });
        };
        // The look-up answered with the consumer's info.
        let info = consumer.cached_info();
        let Some(updated) = update_for(want, &info.config) else {
            return Ok(consumer.clone());
        };
        tracing::info!(function = %self.function.id, consumer = %info.name,
            "consumer config differs; updating it");
        js.update_consumer_on_stream::<jetstream::consumer::Config, _>(
            updated,
            &shared.events_stream,
        )
        .await
        .map_err(|error| {
            let over_limit = matches!(error.kind(),
                jetstream::stream::ConsumerUpdateErrorKind::JetStream(error)
                    if over_ack_pending_limit(&error));
            Refused::new(over_limit, error)
        })?;
        js.get_consumer_from_stream::<pull::Config, _, _>(&info.name, &shared.events_stream)
            .await
            .map_err(Refused::other)
    }

    /// Deletes a retiring redrive consumer once nothing is pending on it or in flight
    /// from it (the function's own consumer has the redrive subject again, so what is
    /// published from now on reaches it). True when it is gone.
    pub(crate) async fn retire(&self, consumer: &mut PullConsumer) -> bool {
        let Ok(info) = consumer.info().await else {
            return false;
        };
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            return false;
        }
        let name = info.name.clone();
        match self
            .shared
            .client
            .jetstream()
            .delete_consumer_from_stream(&name, &self.shared.events_stream)
            .await
        {
            Ok(_) => {
                tracing::info!(function = %self.function.id, consumer = %name,
                    "the redrive consumer the function no longer has is empty; deleted");
                true
            }
            Err(error) => {
                tracing::debug!(function = %self.function.id, consumer = %name, %error,
                    "deleting the redrive consumer failed (another replica may have)");
                false
            }
        }
    }
}

/// Why a consumer could not be made or updated.
struct Refused {
    /// The server's limits refuse the `max_ack_pending` asked for.
    over_limit: bool,
    source: async_nats::Error,
}

impl Refused {
    fn new(over_limit: bool, error: impl Into<async_nats::Error>) -> Refused {
        Refused {
            over_limit,
            source: error.into(),
        }
    }

    fn other(error: impl Into<async_nats::Error>) -> Refused {
        Refused::new(false, error)
    }
}

/// The server's answer to a `max_ack_pending` above its, the account's or the stream's
/// limit (JetStream error 10121).
fn over_ack_pending_limit(error: &jetstream::Error) -> bool {
    error.error_code() == jetstream::ErrorCode::CONSUMER_MAX_PENDING_ACK_EXCESS
}
