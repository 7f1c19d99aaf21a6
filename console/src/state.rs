//! The state shared by the console's handlers, and its live feeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_worker::overview::{FlowScan, OverviewError, scan_flow};
use herald_worker::{DeadLetters, RunStore};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::ConsoleError;
use crate::config::ConsoleConfig;
use crate::data::StoredEvent;
use crate::live::{self, Change};

/// How long the functions page reuses a flow-control scan.
const FLOW_FRESH_FOR: Duration = Duration::from_secs(3);

/// Aborts the feeds when the last handle on the state goes.
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Everything a handler needs.
pub(crate) struct AppState {
    pub(crate) client: herald::Client,
    pub(crate) config: ConsoleConfig,
    pub(crate) runs: RunStore,
    pub(crate) letters: DeadLetters,
    pub(crate) registry: herald::registry::Registry,
    /// New events, as they are stored.
    pub(crate) events: broadcast::Sender<Arc<StoredEvent>>,
    /// Activity records and dead letters, as they arrive.
    pub(crate) changes: broadcast::Sender<Arc<Change>>,
    /// How far the change feeds have read, for pages to ask their notices from.
    pub(crate) seen: Arc<live::Seen>,
    /// The last delivered sequence seen per function, for events per second.
    pub(crate) rates: Mutex<HashMap<String, (Instant, u64, f64)>>,
    /// The last flow-control scan of the runs bucket and when it was made.
    pub(crate) flow: tokio::sync::Mutex<Option<(Instant, Arc<FlowScan>)>>,
    pub(crate) _tasks: Tasks,
}

impl AppState {
    pub(crate) async fn new(
        client: herald::Client,
        config: ConsoleConfig,
    ) -> Result<Arc<AppState>, ConsoleError> {
        let runs = RunStore::open(&client).await?;
        let registry = client.registry().await?.clone();
        let (events, _) = broadcast::channel(1024);
        let (changes, _) = broadcast::channel(1024);
        let seen = Arc::new(live::Seen::default());
        let tasks = vec![
            tokio::spawn(live::follow_events(client.clone(), events.clone())),
            tokio::spawn(live::follow_activity(
                client.clone(),
                changes.clone(),
                Arc::clone(&seen),
            )),
            tokio::spawn(live::follow_dead_letters(
                client.clone(),
                changes.clone(),
                Arc::clone(&seen),
            )),
        ];
        Ok(Arc::new(AppState {
            letters: DeadLetters::new(client.clone()),
            client,
            config,
            runs,
            registry,
            events,
            changes,
            seen,
            rates: Mutex::new(HashMap::new()),
            flow: tokio::sync::Mutex::new(None),
            _tasks: Tasks(tasks),
        }))
    }

    /// The flow control of every function ([`scan_flow`]: every run record is read), made
    /// at most once per [`FLOW_FRESH_FOR`] however often pages refresh.
    pub(crate) async fn flow(&self) -> Result<Arc<FlowScan>, OverviewError> {
        let mut cached = self.flow.lock().await;
        if let Some((at, scan)) = cached.as_ref()
            && at.elapsed() < FLOW_FRESH_FOR
        {
            return Ok(Arc::clone(scan));
        }
        let scan = Arc::new(scan_flow(&self.client).await?);
        *cached = Some((Instant::now(), Arc::clone(&scan)));
        Ok(scan)
    }

    /// Events per second delivered to `function` since the previous call (its consumer's
    /// delivered stream sequence as the clock); the previous figure within a second.
    pub(crate) fn rate(&self, function: &str, delivered_seq: u64) -> Option<f64> {
        let now = Instant::now();
        let mut rates = self.rates.lock();
        match rates.get(function).copied() {
            Some((at, seq, rate)) => {
                let elapsed = now.duration_since(at).as_secs_f64();
                if elapsed < 1.0 {
                    return Some(rate);
                }
                let rate = delivered_seq.saturating_sub(seq) as f64 / elapsed;
                rates.insert(function.to_owned(), (now, delivered_seq, rate));
                Some(rate)
            }
            None => {
                rates.insert(function.to_owned(), (now, delivered_seq, 0.0));
                None
            }
        }
    }
}
