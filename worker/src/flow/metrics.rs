//! The flow-control instruments (listed with the others in [`crate::telemetry`]): runs
//! parked and woken, the wait of a held-back run before its start, and runs skipped.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};

/// Why a run was held back: the `reason` of `herald.flow.parked`, `woken` and `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// No slot of a concurrency limit was free.
    Concurrency,
    /// A throttle reserved a later start.
    Throttle,
}

impl Held {
    fn as_str(self) -> &'static str {
        match self {
            Held::Concurrency => "concurrency",
            Held::Throttle => "throttle",
        }
    }
}

/// Why a run was skipped: the `reason` of `herald.flow.skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Beyond a rate limit.
    RateLimited,
    /// Its singleton key had a run going.
    Singleton,
}

impl Skip {
    fn as_str(self) -> &'static str {
        match self {
            Skip::RateLimited => "rate_limited",
            Skip::Singleton => "singleton",
        }
    }
}

/// The flow-control instruments.
#[derive(Debug, Clone)]
pub(crate) struct FlowMetrics {
    parked: Counter<u64>,
    woken: Counter<u64>,
    wait: Histogram<f64>,
    skipped: Counter<u64>,
}

fn attributes(function: &str, reason: &'static str) -> [KeyValue; 2] {
    [
        KeyValue::new("function", function.to_owned()),
        KeyValue::new("reason", reason),
    ]
}

impl FlowMetrics {
    pub(crate) fn new(meter: &Meter) -> FlowMetrics {
        FlowMetrics {
            parked: meter
                .u64_counter("herald.flow.parked")
                .with_description("Runs parked (acked, holding nothing) until a slot or their reserved start, by reason")
                .build(),
            woken: meter
                .u64_counter("herald.flow.woken")
                .with_description("Parked runs woken: by a freed concurrency slot, or by their throttle's schedule")
                .build(),
            wait: meter
                .f64_histogram("herald.flow.wait")
                .with_unit("s")
                .with_description("From the event's time to the start of a run that a concurrency limit parked or a throttle delayed")
                .build(),
            skipped: meter
                .u64_counter("herald.flow.skipped")
                .with_description("Runs skipped without running, by reason")
                .build(),
        }
    }

    /// A run of `function` parked.
    pub(crate) fn parked(&self, function: &str, reason: Held) {
        self.parked.add(1, &attributes(function, reason.as_str()));
    }

    /// A parked run of `function` woken.
    pub(crate) fn woken(&self, function: &str, reason: Held) {
        self.woken.add(1, &attributes(function, reason.as_str()));
    }

    /// A held-back run of `function` starts now; `event_time` is its `ce-time`.
    pub(crate) fn started_after_wait(
        &self,
        function: &str,
        reason: Held,
        event_time: Option<&str>,
    ) {
        if let Some(seconds) = event_time.and_then(crate::telemetry::seconds_since) {
            self.wait
                .record(seconds.max(0.0), &attributes(function, reason.as_str()));
        }
    }

    /// A run of `function` skipped.
    pub(crate) fn skipped(&self, function: &str, reason: Skip) {
        self.skipped.add(1, &attributes(function, reason.as_str()));
    }
}
