//! A function's durable consumers (protocol section 3): their configs and bindings;
//! `converge.rs` makes and keeps them so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::{self, consumer::pull};
use herald::Namespace;
use tokio::sync::Semaphore;

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

/// Which of a function's consumers a pull loop reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneKind {
    /// The function's own consumer, named by its id.
    Events,
    /// Its redrive consumer ([`herald::protocol::redrive_consumer`]).
    Redrive,
}

/// One consumer's binding and the places for messages pulled from it.
pub(crate) struct Lane {
    pub(crate) binding: Arc<Binding>,
    /// Places for messages held at once (pulled, not yet settled): `window_size` of them.
    pub(crate) window: Arc<Semaphore>,
    pub(crate) window_size: usize,
}

impl Lane {
    pub(crate) fn new(name: &str, window_size: usize) -> Lane {
        Lane {
            binding: Arc::new(Binding::new(name)),
            window: Arc::new(Semaphore::new(window_size)),
            window_size,
        }
    }
}

/// Whether a function reads its redrive subject through a consumer of its own: when it has
/// event triggers (a function with only cron triggers has the redrive subject as its one
/// filter) and no `max_ack_pending` of its own (which bounds its handlers cluster-wide, so
/// one consumer holds every message it has in flight). With more than one filter subject,
/// nats-server finds each next message of a consumer through its slower multi-filter path
/// (the README's tenth round): the function's consumer keeps one filter per trigger.
pub(crate) fn has_redrive_consumer(function: &Function) -> bool {
    !function.triggers.is_empty() && function.settings.max_ack_pending.is_none()
}

/// The deliver policy a function's settings ask for (`New` still to be made definite).
fn deliver_policy(start: &StartFrom) -> jetstream::consumer::DeliverPolicy {
    match start {
        StartFrom::New => jetstream::consumer::DeliverPolicy::New,
        StartFrom::All => jetstream::consumer::DeliverPolicy::All,
        StartFrom::Time(time) => jetstream::consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from(*time),
        },
    }
}

/// The config of a function's own consumer (protocol section 3): one filter per trigger,
/// and the redrive subject when the function has no redrive consumer.
pub(crate) fn consumer_config(function: &Function, namespace: &Namespace) -> pull::Config {
    let mut filter_subjects: Vec<String> = function
        .triggers
        .iter()
        .map(|t| namespace.event_subject(t))
        .collect();
    if !has_redrive_consumer(function) {
        filter_subjects.push(namespace.redrive_subject(&function.id));
    }
    pull::Config {
        durable_name: Some(function.id.to_string()),
        filter_subjects,
        ..common_config(function)
    }
}

/// The config of a function's redrive consumer (protocol section 3): the redrive subject
/// alone, with the function consumer's delivery settings. Its deliver policy is the
/// function's when both are made together; `converge.rs` sets another when it is made
/// for a function whose consumer already exists.
pub(crate) fn redrive_config(function: &Function, namespace: &Namespace) -> pull::Config {
    pull::Config {
        durable_name: Some(herald::protocol::redrive_consumer(&function.id)),
        filter_subjects: vec![namespace.redrive_subject(&function.id)],
        ..common_config(function)
    }
}

/// What both of a function's consumers share.
fn common_config(function: &Function) -> pull::Config {
    let settings = &function.settings;
    pull::Config {
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: herald::protocol::max_deliver(settings.attempts),
        max_ack_pending: settings
            .max_ack_pending
            .unwrap_or_else(|| default_max_ack_pending(settings.concurrency)),
        deliver_policy: deliver_policy(&settings.start),
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
        assert_eq!(config.filter_subjects, ["ns.events.a.b"]);
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        let redrive = redrive_config(&function(), &namespace);
        assert_eq!(redrive.durable_name.as_deref(), Some("f_REDRIVE"));
        assert_eq!(redrive.filter_subjects, ["ns.redrive.f"]);
        assert_eq!(redrive.max_deliver, config.max_deliver);
        assert_eq!(redrive.ack_wait, config.ack_wait);
        assert_eq!(redrive.max_ack_pending, config.max_ack_pending);
        assert_eq!(redrive.deliver_policy, config.deliver_policy);
    }

    #[test]
    fn the_redrive_subject_stays_on_the_one_consumer_of_a_function_that_bounds_its_messages() {
        let namespace = Namespace::new("ns").unwrap();
        assert!(has_redrive_consumer(&function()));
        // A function's own max_ack_pending bounds what it has in flight cluster-wide: one
        // consumer holds it all.
        let bounded = crate::Function::new("f")
            .on_types(["a.b"])
            .max_ack_pending(8)
            .handler(|_e: crate::Envelope, _ctx: crate::Ctx| async {
                Ok::<(), crate::HandlerError>(())
            });
        assert!(!has_redrive_consumer(&bounded));
        let config = consumer_config(&bounded, &namespace);
        assert_eq!(config.filter_subjects, ["ns.events.a.b", "ns.redrive.f"]);
        assert_eq!(config.max_ack_pending, 8);
        // Cron triggers only: the redrive subject is the consumer's one filter.
        let cron = crate::Function::new("c").cron("0 0 * * * *").handler(
            |_tick: crate::Tick, _ctx: crate::Ctx| async { Ok::<(), crate::HandlerError>(()) },
        );
        assert!(!has_redrive_consumer(&cron));
        assert_eq!(
            consumer_config(&cron, &namespace).filter_subjects,
            ["ns.redrive.c"]
        );
    }

    #[test]
    fn updates_only_what_herald_sets() {
        let namespace = Namespace::new("ns").unwrap();
        let want = consumer_config(&function(), &namespace);
        let mut have = jetstream::consumer::Config {
            durable_name: Some("f".into()),
            filter_subjects: vec!["ns.events.a.b".into()],
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 16 * 1024,
            description: Some("set by an operator".into()),
            ..Default::default()
        };
        assert_eq!(update_for(&want, &have), None, "the same config");
        have.max_deliver = 7;
        let updated = update_for(&want, &have).expect("max_deliver differs");
        assert_eq!(updated.max_deliver, 5);
        assert_eq!(updated.max_ack_pending, 16 * 1024);
        assert_eq!(updated.description.as_deref(), Some("set by an operator"));
        have.max_deliver = 5;
        have.filter_subjects = vec![];
        have.filter_subject = "ns.events.a.b".into();
        assert_eq!(
            update_for(&want, &have),
            None,
            "one filter, as filter_subject"
        );
        have.filter_subjects = vec!["ns.redrive.f".into(), "ns.events.a.b".into()];
        have.filter_subject = String::new();
        let moved = update_for(&want, &have).expect("the redrive subject moves to its consumer");
        assert_eq!(moved.filter_subjects, ["ns.events.a.b"]);
        have.filter_subjects = vec!["ns.events.a.b".into()];
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
