//! A function's durable consumer (protocol section 3): its config, and keeping it so.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::{self, consumer::pull};
use herald::Namespace;

use super::FunctionLoop;
use super::worker::WorkerError;
use crate::function::{Function, StartFrom};

/// Whether a function's consumer is bound; read by `/readyz`.
#[derive(Debug)]
pub(crate) struct Binding {
    id: String,
    /// Set when a pull failed and the consumer must be looked up (or re-created) again.
    needs_converge: AtomicBool,
    /// How many times the binding was lost: a consumer deleted and made again under the
    /// same name answers acks it never delivered, so a confirmation spans no loss.
    losses: std::sync::atomic::AtomicU64,
}

impl Binding {
    pub(crate) fn new(id: &str) -> Binding {
        Binding {
            id: id.to_owned(),
            needs_converge: AtomicBool::new(true),
            losses: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many times the binding was lost so far.
    pub(crate) fn losses(&self) -> u64 {
        self.losses.load(Ordering::SeqCst)
    }

    /// The function id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// True while the consumer is bound (no re-creation pending).
    pub(crate) fn is_bound(&self) -> bool {
        !self.needs_converge.load(Ordering::SeqCst)
    }

    pub(crate) fn lost(&self) {
        self.losses.fetch_add(1, Ordering::SeqCst);
        self.needs_converge.store(true, Ordering::SeqCst);
    }

    pub(crate) fn bound(&self) {
        self.needs_converge.store(false, Ordering::SeqCst);
    }

    /// True (once) when the consumer must be converged again.
    pub(crate) fn take_lost(&self) -> bool {
        self.needs_converge.swap(false, Ordering::SeqCst)
    }
}

/// How many replicas' windows a consumer's default `max_ack_pending` makes room for.
const REPLICAS_ROOM: usize = 16;

/// The `max_ack_pending` of a function that sets none: room for 16 replicas each holding
/// its whole window (16,384 at the default window). The server's own default, 1,000, is
/// less than one replica's window, so a second replica would add no throughput.
pub(crate) fn default_max_ack_pending(concurrency: usize) -> i64 {
    i64::try_from(super::window_size(concurrency).saturating_mul(REPLICAS_ROOM)).unwrap_or(i64::MAX)
}

/// The consumer config of protocol section 3.
pub(crate) fn consumer_config(function: &Function, namespace: &Namespace) -> pull::Config {
    let settings = &function.settings;
    let mut filter_subjects: Vec<String> = function
        .triggers
        .iter()
        .map(|t| namespace.event_subject(t))
        .collect();
    filter_subjects.push(namespace.redrive_subject(&function.id));
    let deliver_policy = match settings.start {
        StartFrom::New => jetstream::consumer::DeliverPolicy::New,
        StartFrom::All => jetstream::consumer::DeliverPolicy::All,
        StartFrom::Time(time) => jetstream::consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(time),
        },
    };
    pull::Config {
        durable_name: Some(function.id.to_string()),
        filter_subjects,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: herald::protocol::max_deliver(settings.attempts),
        max_ack_pending: settings
            .max_ack_pending
            .unwrap_or_else(|| default_max_ack_pending(settings.concurrency)),
        deliver_policy,
        ..Default::default()
    }
}

/// The update that makes `have` what Herald wants, or `None` when the fields Herald sets
/// already agree; fields set by the server or an operator are kept.
pub(crate) fn update_for(
    want: &pull::Config,
    have: &jetstream::consumer::Config,
) -> Option<jetstream::consumer::Config> {
    let mut want_filters = want.filter_subjects.clone();
    let mut have_filters = have.filter_subjects.clone();
    if have_filters.is_empty() && !have.filter_subject.is_empty() {
        have_filters.push(have.filter_subject.clone());
    }
    want_filters.sort();
    have_filters.sort();
    let same = want_filters == have_filters
        && want.ack_wait == have.ack_wait
        && want.max_deliver == have.max_deliver
        && (want.max_ack_pending == 0 || want.max_ack_pending == have.max_ack_pending)
        && have.ack_policy == jetstream::consumer::AckPolicy::Explicit;
    if same {
        return None;
    }
    Some(jetstream::consumer::Config {
        filter_subjects: want.filter_subjects.clone(),
        filter_subject: String::new(),
        ack_wait: want.ack_wait,
        max_deliver: want.max_deliver,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        max_ack_pending: if want.max_ack_pending == 0 {
            have.max_ack_pending
        } else {
            want.max_ack_pending
        },
        ..have.clone()
    })
}

impl FunctionLoop {
    /// Creates the consumer, or updates it when the fields Herald sets differ.
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

    /// Creates or updates the function's consumer (protocol section 3). When the server's
    /// limits refuse Herald's default `max_ack_pending`, the server's own default is left
    /// in place (a function that sets `max_ack_pending` gets the server's refusal).
    pub(crate) async fn converge(&self) -> Result<jetstream::consumer::PullConsumer, WorkerError> {
        let mut want = consumer_config(&self.function, self.shared.client.namespace());
        let result = match self.make_or_update(&want).await {
            Err(refused)
                if refused.over_limit && self.function.settings.max_ack_pending.is_none() =>
            {
                tracing::warn!(function = %self.function.id, wanted = want.max_ack_pending,
                    error = %refused.source,
                    "the server's limits refuse Herald's default max_ack_pending; the server's default \
                     is kept (set Function::max_ack_pending to choose one within the limits)");
                want.max_ack_pending = 0;
                self.make_or_update(&want).await
            }
            other => other,
        };
        let consumer = result.map_err(|refused| match self.function.settings.max_ack_pending {
            Some(wanted) if refused.over_limit => WorkerError::AckPendingAboveLimit {
                function: self.function.id.to_string(),
                wanted,
                source: refused.source,
            },
            _ => WorkerError::Consumer {
                function: self.function.id.to_string(),
                source: refused.source,
            },
        })?;
        self.binding.bound();
        Ok(consumer)
    }

    /// Looks the consumer up and updates it when it differs from `want`, or creates it.
    async fn make_or_update(
        &self,
        want: &pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, Refused> {
        let shared = &self.shared;
        let js = shared.client.jetstream();
        let name = self.function.id.as_ref();
        match js
            .get_consumer_from_stream::<pull::Config, _, _>(name, &shared.events_stream)
            .await
        {
            Ok(consumer) => {
                // The look-up answers with the consumer's info.
                let have = consumer.cached_info().config.clone();
                let Some(updated) = update_for(want, &have) else {
                    return Ok(consumer);
                };
                tracing::info!(function = %self.function.id, "consumer config differs; updating it");
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
                js.get_consumer_from_stream::<pull::Config, _, _>(name, &shared.events_stream)
                    .await
                    .map_err(Refused::other)
            }
            Err(lookup) => {
                tracing::debug!(function = %self.function.id, error = %lookup, "creating the consumer");
                let want = self
                    .starting_now(want.clone())
                    .await
                    .map_err(Refused::other)?;
                js.create_consumer_on_stream(want, &shared.events_stream)
                    .await
                    .map_err(|error| {
                        let over_limit = matches!(error.kind(),
                            jetstream::stream::ConsumerErrorKind::JetStream(error)
                                if over_ack_pending_limit(&error));
                        Refused::new(over_limit, error)
                    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn function() -> Function {
        crate::Function::new("f")
            .on_types(["a.b"])
            .attempts(3)
            .handler(|_e: crate::Envelope, _ctx: crate::Ctx| async {
                Ok::<(), crate::HandlerError>(())
            })
    }

    #[test]
    fn the_config_follows_the_protocol() {
        let namespace = Namespace::new("ns").unwrap();
        let config = consumer_config(&function(), &namespace);
        assert_eq!(config.durable_name.as_deref(), Some("f"));
        assert_eq!(config.filter_subjects, ["ns.events.a.b", "ns.redrive.f"]);
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
    }

    #[test]
    fn updates_only_what_herald_sets() {
        let namespace = Namespace::new("ns").unwrap();
        let want = consumer_config(&function(), &namespace);
        let mut have = jetstream::consumer::Config {
            durable_name: Some("f".into()),
            filter_subjects: vec!["ns.redrive.f".into(), "ns.events.a.b".into()],
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 16 * 1024,
            description: Some("set by an operator".into()),
            ..Default::default()
        };
        assert_eq!(update_for(&want, &have), None, "same set, other order");
        have.max_deliver = 7;
        let updated = update_for(&want, &have).expect("max_deliver differs");
        assert_eq!(updated.max_deliver, 5);
        assert_eq!(updated.max_ack_pending, 16 * 1024);
        assert_eq!(updated.description.as_deref(), Some("set by an operator"));
        have.max_deliver = 5;
        have.filter_subjects = vec![];
        have.filter_subject = "ns.events.a.b".into();
        assert!(
            update_for(&want, &have).is_some(),
            "the redrive filter is missing"
        );
        have.filter_subjects = vec!["ns.redrive.f".into(), "ns.events.a.b".into()];
        have.max_ack_pending = 1000;
        let raised = update_for(&want, &have).expect("the server's default of 1,000 is raised");
        assert_eq!(raised.max_ack_pending, 16 * 1024);
        // Within limits below the default, the worker asks for none (0): what the server
        // chose is kept.
        let within_limits = pull::Config {
            max_ack_pending: 0,
            ..want
        };
        have.max_ack_pending = 500;
        assert_eq!(update_for(&within_limits, &have), None);
    }

    #[test]
    fn the_default_max_ack_pending_has_room_for_sixteen_windows() {
        assert_eq!(default_max_ack_pending(1), 16 * 1024);
        assert_eq!(default_max_ack_pending(16), 16 * 1024);
        assert_eq!(default_max_ack_pending(5000), 16 * 5000);
        assert_eq!(default_max_ack_pending(usize::MAX), i64::MAX);
    }
}
