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
        max_ack_pending: settings.max_ack_pending.unwrap_or(0),
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
            let mut stream = self
                .shared
                .client
                .jetstream()
                .get_stream(&self.shared.events_stream)
                .await?;
            let last = stream.info().await?.state.last_sequence;
            want.deliver_policy = jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            };
        }
        Ok(want)
    }

    pub(crate) async fn converge(&self) -> Result<jetstream::consumer::PullConsumer, WorkerError> {
        let error = |source: async_nats::Error| WorkerError::Consumer {
            function: self.function.id.to_string(),
            source,
        };
        let shared = &self.shared;
        let want = consumer_config(&self.function, shared.client.namespace());
        let js = shared.client.jetstream();
        let consumer = match js
            .get_consumer_from_stream::<pull::Config, _, _>(
                self.function.id.as_ref(),
                &shared.events_stream,
            )
            .await
        {
            Ok(mut consumer) => {
                let have = consumer
                    .info()
                    .await
                    .map_err(|e| error(e.into()))?
                    .config
                    .clone();
                match update_for(&want, &have) {
                    None => consumer,
                    Some(updated) => {
                        tracing::info!(function = %self.function.id, "consumer config differs; updating it");
                        js.update_consumer_on_stream::<jetstream::consumer::Config, _>(
                            updated,
                            &shared.events_stream,
                        )
                        .await
                        .map_err(|e| error(e.into()))?;
                        js.get_consumer_from_stream::<pull::Config, _, _>(
                            self.function.id.as_ref(),
                            &shared.events_stream,
                        )
                        .await
                        .map_err(|e| error(e.into()))?
                    }
                }
            }
            Err(lookup) => {
                tracing::debug!(function = %self.function.id, error = %lookup, "creating the consumer");
                let want = self.starting_now(want).await.map_err(error)?;
                js.create_consumer_on_stream(want, &shared.events_stream)
                    .await
                    .map_err(|e| error(e.into()))?
            }
        };
        self.binding.bound();
        Ok(consumer)
    }
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
            max_ack_pending: 1000,
            description: Some("set by an operator".into()),
            ..Default::default()
        };
        assert_eq!(update_for(&want, &have), None, "same set, other order");
        have.max_deliver = 7;
        let updated = update_for(&want, &have).expect("max_deliver differs");
        assert_eq!(updated.max_deliver, 5);
        assert_eq!(
            updated.max_ack_pending, 1000,
            "kept: Herald does not set it"
        );
        assert_eq!(updated.description.as_deref(), Some("set by an operator"));
        have.max_deliver = 5;
        have.filter_subjects = vec![];
        have.filter_subject = "ns.events.a.b".into();
        assert!(
            update_for(&want, &have).is_some(),
            "the redrive filter is missing"
        );
    }
}
