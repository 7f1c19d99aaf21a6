//! The flow-control methods of [`FunctionBuilder`]: throttle and rate limit, and the
//! `key`, `burst` and `max_delay` that configure the one added last.

use std::time::Duration;

use herald::Event;

use super::FunctionBuilder;
use crate::SingletonMode;
use crate::flow::limits::{Excess, FlowSlot, PaceLimit, Singleton};

impl<E: Event> FunctionBuilder<E> {
    /// Throttles the function's run starts to `limit` per `period` (per key with
    /// [`key`](Self::key), a burst with [`burst`](Self::burst)): a start beyond the pace is
    /// delayed, never dropped. The run is reserved the next start at the pace (so starts
    /// keep the order the events arrive in), acked and parked until then, holding no
    /// handler, permit or message; [`max_delay`](Self::max_delay) dead-letters an event
    /// whose start would be further out (`throttled_too_long`). Continuations of a run that
    /// started (sleeps, waits, retries) are not throttled again. Needs nats-server 2.12+.
    /// The period is between 1 s and 7 days.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "repo.starred")]
    /// # struct Starred { owner: String }
    /// use std::time::Duration;
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// // GitHub answers 429 beyond 10 calls a second per token: pace the calls per owner.
    /// let sync = Function::new("sync-stars")
    ///     .on::<Starred>()
    ///     .throttle(10, Duration::from_secs(1))
    ///     .burst(5)
    ///     .key(|e: &Starred| e.owner.clone())
    ///     .max_delay(Duration::from_secs(600))
    ///     .handler(|_e: Starred, _ctx: Ctx| async move { Ok::<(), HandlerError>(()) });
    /// assert!(sync.check().is_ok());
    /// ```
    pub fn throttle(mut self, limit: u32, period: Duration) -> Self {
        if self.settings.throttle.is_some() {
            self.flow_error("throttle is set twice");
        }
        self.settings.throttle = Some(PaceLimit {
            excess: Excess::Delay,
            limit,
            period,
            burst: 0,
            key: None,
            max_delay: None,
        });
        self.settings.last_flow = Some(FlowSlot::Throttle);
        self
    }

    /// Limits the function to `limit` runs per `period` (per key with [`key`](Self::key),
    /// a burst with [`burst`](Self::burst)) and drops the rest: an event beyond the pace is
    /// acked without running, recorded `skipped` with the reason `rate_limited`, and counted
    /// in `herald.function.runs` (`outcome=skipped`). The decision is stored with the run,
    /// so a redelivered event gets the same one. Starts are paced evenly: `limit` per
    /// `period` means one every `period / limit`, plus the burst at once. Needs
    /// nats-server 2.12+. The period is between 1 s and 7 days.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "user.login")]
    /// # struct Login { user_id: String }
    /// use std::time::Duration;
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// // At most one "new device" email per user every 10 minutes.
    /// let alert = Function::new("new-device-email")
    ///     .on::<Login>()
    ///     .rate_limit(1, Duration::from_secs(600))
    ///     .key(|e: &Login| e.user_id.clone())
    ///     .handler(|_e: Login, _ctx: Ctx| async move { Ok::<(), HandlerError>(()) });
    /// assert!(alert.check().is_ok());
    /// ```
    pub fn rate_limit(mut self, limit: u32, period: Duration) -> Self {
        if self.settings.rate_limit.is_some() {
            self.flow_error("rate_limit is set twice");
        }
        self.settings.rate_limit = Some(PaceLimit {
            excess: Excess::Drop,
            limit,
            period,
            burst: 0,
            key: None,
            max_delay: None,
        });
        self.settings.last_flow = Some(FlowSlot::RateLimit);
        self
    }

    /// One run per key at a time (per key with [`key`](Self::key); default one for the
    /// whole function): an event whose key has a run going (running, sleeping or waiting)
    /// is skipped ([`SingletonMode::Skip`], recorded `skipped`, reason `singleton`) or
    /// cancels that run and starts at once ([`SingletonMode::Cancel`]: the old run stops
    /// at its next step, recorded `cancelled`). The key is held by a lock in the runs
    /// bucket, released when the run ends; a lock whose run died is taken over once that
    /// run is recorded finished or dead-lettered. Needs idempotent runs (the default).
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "index.requested")]
    /// # struct IndexRequested { tenant: String }
    /// use herald_worker::{Ctx, Function, HandlerError, SingletonMode};
    ///
    /// // A reindex per tenant at a time; a newer request replaces the one running.
    /// let reindex = Function::new("reindex")
    ///     .on::<IndexRequested>()
    ///     .singleton(SingletonMode::Cancel)
    ///     .key(|e: &IndexRequested| e.tenant.clone())
    ///     .handler(|_e: IndexRequested, _ctx: Ctx| async move { Ok::<(), HandlerError>(()) });
    /// assert!(reindex.check().is_ok());
    /// ```
    pub fn singleton(mut self, mode: SingletonMode) -> Self {
        if self.settings.singleton.is_some() {
            self.flow_error("singleton is set twice");
        }
        self.settings.singleton = Some(Singleton { mode, key: None });
        self.settings.last_flow = Some(FlowSlot::Singleton);
        self
    }

    /// At most `limit` attempts of this function run at once per key ([`key`](Self::key);
    /// default one key), across all replicas; at most two such limits per function. A run
    /// holds a slot only while an attempt runs: a sleeping or waiting run, or one waiting
    /// for its retry, holds none. A run that finds no slot is **parked**: acked, holding no
    /// handler, permit or message, and woken when a slot of its key frees (oldest first, or as [`priority`](Self::priority) orders them),
    /// so a busy key never holds back the other keys. Slots are leases that expire 10 s
    /// after their worker died. [`max_parked`](Self::max_parked) caps the parked runs per
    /// key. Needs nats-server 2.12+.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "export.requested")]
    /// # struct ExportRequested { tenant_id: String }
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// // Three exports per tenant at a time, ten in all (a limit shared with other functions).
    /// let export = Function::new("export")
    ///     .on::<ExportRequested>()
    ///     .concurrency_limit(3)
    ///     .key(|e: &ExportRequested| e.tenant_id.clone())
    ///     .shared_concurrency_limit("warehouse", 10)
    ///     .handler(|_e: ExportRequested, _ctx: Ctx| async move { Ok::<(), HandlerError>(()) });
    /// assert!(export.check().is_ok());
    /// ```
    pub fn concurrency_limit(self, limit: u32) -> Self {
        self.add_concurrency(limit, None)
    }

    /// A concurrency limit named `name`, shared by every function that names it (each
    /// giving the same `limit`): at most `limit` attempts of all of them at once (per key
    /// with [`key`](Self::key)). Counts towards the two limits of a function.
    pub fn shared_concurrency_limit(self, name: &str, limit: u32) -> Self {
        self.add_concurrency(limit, Some(name.to_owned()))
    }

    /// The most runs of one key parked waiting for a slot of the
    /// [`concurrency_limit`](Self::concurrency_limit) added just before; an event beyond is
    /// dead-lettered with the reason `queue_full` (default: no cap).
    pub fn max_parked(mut self, runs: u32) -> Self {
        match self.settings.last_flow {
            Some(FlowSlot::Concurrency(index)) => {
                if let Some(limit) = self.settings.concurrency_limits.get_mut(index) {
                    limit.max_parked = Some(runs);
                }
            }
            _ => self.flow_error("max_parked needs concurrency_limit(..) before it"),
        }
        self
    }

    fn add_concurrency(mut self, limit: u32, shared: Option<String>) -> Self {
        if self.settings.concurrency_limits.len() == 2 {
            self.flow_error("a function has at most two concurrency limits");
        }
        self.settings
            .concurrency_limits
            .push(crate::flow::concurrency::ConcurrencyLimit {
                limit,
                shared,
                key: None,
                max_parked: None,
            });
        self.settings.last_flow = Some(FlowSlot::Concurrency(
            self.settings.concurrency_limits.len() - 1,
        ));
        self
    }

    /// Orders the runs waiting for a slot of a
    /// [`concurrency_limit`](Self::concurrency_limit): a run is ordered as if it had
    /// started waiting `priority(event)` seconds earlier (negative: later), so a freed slot
    /// goes to the run with the lowest "time it parked − factor" among the key's parked
    /// runs, and a run that finds a slot free while a better one is parked hands the slot
    /// to it. With a factor of 0 for every event, parked runs start first parked, first
    /// started. The factor is clamped to ±600 s (ten minutes), so a low-priority run waits
    /// at most ten minutes longer than it would have.
    ///
    /// Priority acts only where Herald holds a backlog, the runs parked by a concurrency
    /// limit: without one it does nothing (runs start in stream order, as many at once as
    /// the worker's concurrency allows), and a [`throttle`](Self::throttle) stays first
    /// come, first served.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema, herald::Event)]
    /// # #[event(type = "report.requested")]
    /// # struct ReportRequested { tenant: String, paid: bool }
    /// use herald_worker::{Ctx, Function, HandlerError};
    ///
    /// // One report per tenant at a time; a paying customer's report overtakes the free
    /// // ones that were waiting for less than two minutes.
    /// let report = Function::new("report")
    ///     .on::<ReportRequested>()
    ///     .concurrency_limit(1)
    ///     .key(|e: &ReportRequested| e.tenant.clone())
    ///     .priority(|e: &ReportRequested| if e.paid { 120 } else { 0 })
    ///     .handler(|_e: ReportRequested, _ctx: Ctx| async move { Ok::<(), HandlerError>(()) });
    /// assert!(report.check().is_ok());
    /// ```
    pub fn priority<F>(mut self, priority: F) -> Self
    where
        F: Fn(&E) -> i64 + Send + Sync + 'static,
    {
        if self.settings.priority.is_some() {
            self.flow_error("priority is set twice");
        }
        let factor: crate::flow::concurrency::PriorityOf =
            std::sync::Arc::new(move |payload: &[u8]| {
                serde_json::from_slice::<E>(payload)
                    .map(|event| priority(&event))
                    .map_err(|error| error.to_string())
            });
        self.settings.priority = Some(crate::flow::concurrency::Priority(factor));
        self
    }

    /// The key of the [`throttle`](Self::throttle), [`rate_limit`](Self::rate_limit),
    /// [`singleton`](Self::singleton) or [`concurrency_limit`](Self::concurrency_limit)
    /// added just before: each key has its own (default: one for the whole function).
    pub fn key<K, F>(mut self, key: F) -> Self
    where
        F: Fn(&E) -> K + Send + Sync + 'static,
        K: AsRef<str>,
    {
        let key_of: crate::flow::debounce::KeyOf = std::sync::Arc::new(move |payload: &[u8]| {
            serde_json::from_slice::<E>(payload)
                .map(|event| key(&event).as_ref().to_owned())
                .map_err(|error| error.to_string())
        });
        match self.settings.last_flow {
            Some(FlowSlot::Throttle) => {
                if let Some(limit) = self.settings.throttle.as_mut() {
                    limit.key = Some(key_of);
                }
            }
            Some(FlowSlot::RateLimit) => {
                if let Some(limit) = self.settings.rate_limit.as_mut() {
                    limit.key = Some(key_of);
                }
            }
            Some(FlowSlot::Singleton) => {
                if let Some(singleton) = self.settings.singleton.as_mut() {
                    singleton.key = Some(key_of);
                }
            }
            Some(FlowSlot::Concurrency(index)) => {
                if let Some(limit) = self.settings.concurrency_limits.get_mut(index) {
                    limit.key = Some(key_of);
                }
            }
            None => {
                self.flow_error(
                    "key needs throttle(..), rate_limit(..) or singleton(..) before it",
                );
            }
        }
        self
    }

    /// How many starts beyond the pace the [`throttle`](Self::throttle) or
    /// [`rate_limit`](Self::rate_limit) added just before lets through at once (default 0).
    pub fn burst(mut self, burst: u32) -> Self {
        if let Some(limit) = self.last_limit("burst") {
            limit.burst = burst;
        }
        self
    }

    /// The longest a [`throttle`](Self::throttle) delays a start; an event whose start would
    /// be later is dead-lettered with the reason `throttled_too_long` (default: no bound).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        match self.settings.throttle.as_mut() {
            Some(throttle) => throttle.max_delay = Some(delay),
            None => self.flow_error("max_delay needs throttle(limit, period) before it"),
        }
        self
    }

    fn last_limit(&mut self, what: &str) -> Option<&mut PaceLimit> {
        let exists = match self.settings.last_flow {
            Some(FlowSlot::Throttle) => self.settings.throttle.is_some(),
            Some(FlowSlot::RateLimit) => self.settings.rate_limit.is_some(),
            _ => false,
        };
        if !exists {
            self.flow_error(&format!(
                "{what} needs throttle(..) or rate_limit(..) before it"
            ));
            return None;
        }
        match self.settings.last_flow {
            Some(FlowSlot::Throttle) => self.settings.throttle.as_mut(),
            _ => self.settings.rate_limit.as_mut(),
        }
    }

    fn flow_error(&mut self, error: &str) {
        self.settings.flow_errors.push(error.to_owned());
    }
}
