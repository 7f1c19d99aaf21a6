//! A function's settings and their defaults.

use std::time::{Duration, SystemTime};

use crate::backoff::Backoff;

/// Where a new function's consumer starts reading the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Only events published after the consumer is created (default).
    #[default]
    New,
    /// Every event still retained in the log (backfill).
    All,
    /// Events published at or after this time.
    Time(SystemTime),
}

/// A function's settings; defaults as in the architecture's defaults table.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Duration,
    pub(crate) ack_wait: Duration,
    pub(crate) concurrency: usize,
    pub(crate) max_ack_pending: Option<i64>,
    pub(crate) start: StartFrom,
    pub(crate) idempotent: bool,
    pub(crate) max_step_output: usize,
    pub(crate) overlap: Overlap,
    pub(crate) debounce: Option<crate::flow::debounce::Debounce>,
    /// Set by `debounce_timeout`, checked against `debounce`.
    pub(crate) debounce_timeout: Option<Duration>,
    pub(crate) cancel_on: Vec<crate::wait::cancel_on::CancelOn>,
    pub(crate) start_timeout: Option<Duration>,
    pub(crate) finish_timeout: Option<Duration>,
    pub(crate) throttle: Option<crate::flow::limits::PaceLimit>,
    pub(crate) rate_limit: Option<crate::flow::limits::PaceLimit>,
    pub(crate) singleton: Option<crate::flow::limits::Singleton>,
    pub(crate) concurrency_limits: Vec<crate::flow::concurrency::ConcurrencyLimit>,
    /// The order of the runs parked for a concurrency slot.
    pub(crate) priority: Option<crate::flow::concurrency::Priority>,
    /// Batching: the handler gets a key's events together.
    pub(crate) batch: Option<crate::flow::batch::Batch>,
    /// The flow control that `key` and `burst` configure: the last one added.
    pub(crate) last_flow: Option<crate::flow::limits::FlowSlot>,
    /// Misuses of the flow-control builder, reported by `check`.
    pub(crate) flow_errors: Vec<String>,
}

/// What a [singleton](crate::FunctionBuilder::singleton) function does with an event whose
/// key already has a run going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SingletonMode {
    /// The new run is skipped: recorded `skipped` (reason `singleton`) without running
    /// (default).
    #[default]
    Skip,
    /// The running one is cancelled (it stops at its next step, recorded `cancelled`) and
    /// the new one starts at once.
    Cancel,
}

/// What a cron tick does while the previous tick of the same trigger still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overlap {
    /// The tick is skipped: recorded `skipped` (reason `overlap`) without running (default).
    #[default]
    Skip,
    /// The tick runs alongside.
    Allow,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            attempts: 5,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(300),
            ack_wait: Duration::from_secs(30),
            concurrency: 16,
            max_ack_pending: None,
            start: StartFrom::New,
            idempotent: true,
            max_step_output: 256 * 1024,
            overlap: Overlap::Skip,
            debounce: None,
            debounce_timeout: None,
            cancel_on: Vec::new(),
            start_timeout: None,
            finish_timeout: None,
            throttle: None,
            rate_limit: None,
            singleton: None,
            concurrency_limits: Vec::new(),
            priority: None,
            batch: None,
            last_flow: None,
            flow_errors: Vec::new(),
        }
    }
}

impl Settings {
    /// Whether the function keeps other records per run (flow control, `cancel_on`, start
    /// and finish timeouts): its runs are then recorded always, not
    /// only when their ack is not confirmed (protocol section 7), so that a run's records
    /// tell its whole story; one more record is a small share of what those runs store.
    pub(crate) fn records_every_run(&self) -> bool {
        self.debounce.is_some()
            || !self.cancel_on.is_empty()
            || self.start_timeout.is_some()
            || self.finish_timeout.is_some()
            || self.throttle.is_some()
            || self.rate_limit.is_some()
            || self.singleton.is_some()
            || !self.concurrency_limits.is_empty()
            || self.batch.is_some()
    }

    /// A setting that works per event and so not with batching, if one is set.
    pub(crate) fn batch_conflict(&self) -> Option<&'static str> {
        [
            (self.debounce.is_some(), "debounce"),
            (!self.cancel_on.is_empty(), "cancel_on"),
            (self.throttle.is_some(), "throttle"),
            (self.rate_limit.is_some(), "rate_limit"),
            (self.singleton.is_some(), "singleton"),
            (self.priority.is_some(), "priority"),
            (
                self.concurrency_limits.iter().any(|l| l.key.is_some()),
                "a keyed concurrency_limit",
            ),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}
