//! A function's flow control as the runs bucket shows it (protocol sections 15–17).
//!
//! A function's limits themselves (how many, per what period, keyed how) are set in its
//! workers' code and are not stored in NATS. What is stored is their state while they are
//! in use, and the runs they decided: concurrency slots (`_slot.<scope>.<key>.<i>`), parked
//! runs (`_parked.<scope>.<key>.<F>.<event-key>`), throttle and rate-limit state
//! (`_throttle.<F>.<key>`, `_rate.<F>.<key>`), singleton locks (`_singleton.<F>.<key>`), the
//! runs' throttle and rate-limit decisions (`F.<event-key>.th`, `.rl`), open batches
//! (`_batch.<F>.<key>`) and the run records (`F.<event-key>`, `skipped` with its reason,
//! `batched`). This reads them all, in two ordered
//! consumers on the bucket's stream (latest value per key).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use serde::Serialize;

use super::OverviewError;

/// The most keys read from the runs bucket for one overview; past it the counts are partial
/// and [`FlowScan::complete`] is false.
pub const FLOW_SCAN_LIMIT: usize = 200_000;
/// How many keys with parked runs a function lists, most parked first.
pub const TOP_PARKED_KEYS: usize = 5;
/// How long a read waits for the next key before it takes what it has.
const NEXT_WITHIN: Duration = Duration::from_secs(2);

/// A concurrency limit seen in use by a function (its slots held or runs parked on it now).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConcurrencyInUse {
    /// The limit's scope: the function id for its own limit, `_shared-<name>` for a shared one.
    pub scope: String,
    /// The name of a shared limit (`shared_concurrency_limit(name, ..)`).
    pub shared_name: Option<String>,
    /// Slots held now, over all keys and every function sharing the limit.
    pub slots_held: u64,
    /// Keys with a slot held now.
    pub keys_active: u64,
    /// The limit is at least this: the highest slot number held now, plus one.
    pub limit_at_least: u32,
}

/// A key with runs parked waiting for a concurrency slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedKey {
    /// The limit's scope (as in [`ConcurrencyInUse::scope`]).
    pub scope: String,
    /// The key's token (the key itself, or `h-` and its hash; `_` for a function without a key).
    pub key: String,
    /// The function's runs parked on it.
    pub runs: u64,
}

/// What the runs bucket shows of one function's flow control.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowOverview {
    /// Its concurrency limits seen in use now, by scope.
    pub concurrency: Vec<ConcurrencyInUse>,
    /// Keys with a live throttle state: the function has a throttle.
    pub throttle_keys: u64,
    /// Keys with a live rate-limit state: the function has a rate limit.
    pub rate_limit_keys: u64,
    /// Singleton keys held by one of its runs now.
    pub singleton_keys_held: u64,
    /// Runs with a throttle decision recorded (within the records' lifetime).
    pub throttled_runs: u64,
    /// Runs with a rate-limit decision recorded (admitted or not).
    pub rate_limited_runs: u64,
    /// Its runs parked waiting for a concurrency slot, all keys.
    pub parked: u64,
    /// The keys with the most parked runs, most first (at most [`TOP_PARKED_KEYS`]).
    pub parked_top_keys: Vec<ParkedKey>,
    /// Its batches open now (section 19): collecting events, or closed and about to run.
    pub open_batches: u64,
    /// Events waiting in those open batches.
    pub events_in_open_batches: u64,
    /// Events recorded `batched` (within the records' lifetime): they joined a batch that
    /// ran or is running.
    pub batched_events: u64,
    /// Its runs recorded `skipped`, by reason (the record's detail before its first `:`,
    /// such as `rate_limited` or `singleton`).
    pub skipped: BTreeMap<String, u64>,
    /// The runs bucket held more than [`FLOW_SCAN_LIMIT`] keys of interest: the counts above
    /// are from the first ones read.
    pub partial: bool,
}

impl FlowOverview {
    /// Whether anything of flow control was seen for the function.
    pub fn is_empty(&self) -> bool {
        FlowOverview {
            partial: false,
            ..self.clone()
        } == FlowOverview::default()
    }
}

/// The flow control of every function seen in the runs bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowScan {
    /// By function id.
    pub functions: BTreeMap<String, FlowOverview>,
    /// False when the bucket held more than [`FLOW_SCAN_LIMIT`] keys of interest.
    pub complete: bool,
}

/// Reads every function's flow-control state from the runs bucket.
pub async fn scan_flow(client: &herald::Client) -> Result<FlowScan, OverviewError> {
    let stream_name = format!("KV_{}", client.namespace().runs_bucket());
    let prefix = format!("$KV.{}.", client.namespace().runs_bucket());
    let error = |source: async_nats::Error| OverviewError::Runs {
        stream: stream_name.clone(),
        source,
    };
    let stream = client
        .jetstream()
        .get_stream(&stream_name)
        .await
        .map_err(|e| error(e.into()))?;
    let state_keys = [
        "_slot.>",
        "_parked.>",
        "_throttle.>",
        "_rate.>",
        "_singleton.>",
        "_batch.>",
    ];
    // Run records and decisions: `F.<event-key>`, `F.<event-key>.th`, `F.<event-key>.rl`.
    let run_keys = ["*.*", "*.*.th", "*.*.rl"];
    let mut scan = Scan::default();
    let mut complete = true;
    for filters in [&state_keys[..], &run_keys[..]] {
        let filters = filters.iter().map(|f| format!("{prefix}{f}")).collect();
        let budget = FLOW_SCAN_LIMIT.saturating_sub(scan.read);
        complete &= read_latest(&stream, filters, budget, |key, value| {
            scan.add(key.strip_prefix(&prefix).unwrap_or(key), value);
        })
        .await
        .map_err(error)?;
    }
    Ok(FlowScan {
        functions: scan.finish(),
        complete,
    })
}

/// Hands the latest value of every key on `filters` to `each`, skipping deleted ones;
/// false when it stopped at `budget` keys.
async fn read_latest(
    stream: &jetstream::stream::Stream,
    filters: Vec<String>,
    budget: usize,
    mut each: impl FnMut(&str, &[u8]),
) -> Result<bool, async_nats::Error> {
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects: filters,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(true);
    }
    let mut messages = consumer.messages().await?;
    let mut read = 0;
    while read < budget {
        let Ok(Some(message)) = tokio::time::timeout(NEXT_WITHIN, messages.next()).await else {
            return Ok(true);
        };
        let message = message?;
        read += 1;
        let deleted = message.headers.as_ref().is_some_and(|h| {
            h.get("KV-Operation").is_some() || h.get("Nats-Marker-Reason").is_some()
        });
        if !deleted {
            each(message.subject.as_str(), &message.payload);
        }
        if message.info().map_or(true, |i| i.pending == 0) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A run record's fields that matter here.
#[derive(serde::Deserialize)]
struct RunRecordView {
    status: String,
    #[serde(default)]
    detail: Option<String>,
}

/// An open batch's members (`_batch.<F>.<token>`).
#[derive(serde::Deserialize)]
struct BatchView {
    #[serde(default)]
    members: Vec<serde_json::Value>,
}

/// A slot's value: `{"run":"F.<event-key>"}`.
#[derive(serde::Deserialize)]
struct SlotView {
    run: String,
}

#[derive(Default)]
struct Scan {
    read: usize,
    functions: BTreeMap<String, FlowOverview>,
    /// scope → (slots held, keys with a slot, highest slot number + 1).
    scopes: HashMap<String, (u64, std::collections::HashSet<String>, u32)>,
    /// Functions using a scope (from slots and parked runs).
    users: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// function → (scope, key) → parked runs.
    parked: HashMap<String, HashMap<(String, String), u64>>,
}

impl Scan {
    fn add(&mut self, key: &str, value: &[u8]) {
        self.read += 1;
        let tokens: Vec<&str> = key.split('.').collect();
        match tokens.as_slice() {
            ["_slot", scope, token, index] => {
                let entry = self.scopes.entry((*scope).to_owned()).or_default();
                entry.0 += 1;
                entry.1.insert((*token).to_owned());
                entry.2 = entry.2.max(index.parse::<u32>().map_or(0, |i| i + 1));
                if let Ok(slot) = serde_json::from_slice::<SlotView>(value)
                    && let Some((function, _)) = slot.run.split_once('.')
                {
                    self.uses(scope, function);
                }
            }
            ["_parked", scope, token, function, _event_key] => {
                self.uses(scope, function);
                *self
                    .parked
                    .entry((*function).to_owned())
                    .or_default()
                    .entry(((*scope).to_owned(), (*token).to_owned()))
                    .or_default() += 1;
            }
            ["_throttle", function, _] => self.function(function).throttle_keys += 1,
            ["_rate", function, _] => self.function(function).rate_limit_keys += 1,
            ["_singleton", function, _] => self.function(function).singleton_keys_held += 1,
            ["_batch", function, _] => {
                let members =
                    serde_json::from_slice::<BatchView>(value).map_or(0, |b| b.members.len());
                let overview = self.function(function);
                overview.open_batches += 1;
                overview.events_in_open_batches += members as u64;
            }
            [function, _, "th"] if !function.starts_with('_') => {
                self.function(function).throttled_runs += 1;
            }
            [function, _, "rl"] if !function.starts_with('_') => {
                self.function(function).rate_limited_runs += 1;
            }
            [function, _] if !function.starts_with('_') => {
                let record = serde_json::from_slice::<RunRecordView>(value).ok();
                if record.as_ref().is_some_and(|r| r.status == "batched") {
                    self.function(function).batched_events += 1;
                }
                if let Some(record) = record
                    && record.status == "skipped"
                {
                    let reason = record
                        .detail
                        .as_deref()
                        .and_then(|d| d.split(':').next())
                        .filter(|r| !r.trim().is_empty())
                        .unwrap_or("unknown")
                        .trim()
                        .to_owned();
                    *self.function(function).skipped.entry(reason).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    fn function(&mut self, function: &str) -> &mut FlowOverview {
        self.functions.entry(function.to_owned()).or_default()
    }

    fn uses(&mut self, scope: &str, function: &str) {
        self.users
            .entry(scope.to_owned())
            .or_default()
            .insert(function.to_owned());
    }

    fn finish(mut self) -> BTreeMap<String, FlowOverview> {
        for (scope, functions) in std::mem::take(&mut self.users) {
            let (slots_held, keys, limit_at_least) =
                self.scopes.get(&scope).cloned().unwrap_or_default();
            for function in functions {
                let limit = ConcurrencyInUse {
                    shared_name: scope.strip_prefix("_shared-").map(str::to_owned),
                    scope: scope.clone(),
                    slots_held,
                    keys_active: keys.len() as u64,
                    limit_at_least,
                };
                self.function(&function).concurrency.push(limit);
            }
        }
        for (function, keys) in std::mem::take(&mut self.parked) {
            let overview = self.function(&function);
            overview.parked = keys.values().sum();
            let mut top: Vec<ParkedKey> = keys
                .into_iter()
                .map(|((scope, key), runs)| ParkedKey { scope, key, runs })
                .collect();
            top.sort_by(|a, b| b.runs.cmp(&a.runs).then_with(|| a.key.cmp(&b.key)));
            top.truncate(TOP_PARKED_KEYS);
            overview.parked_top_keys = top;
        }
        self.functions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_attributed_to_their_functions() {
        let mut scan = Scan::default();
        scan.add("_slot.send._.0", br#"{"run":"send.e1"}"#);
        scan.add("_slot.send._.2", br#"{"run":"send.e2"}"#);
        scan.add("_slot._shared-db.t1.0", br#"{"run":"send.e1"}"#);
        scan.add("_parked.send._.send.e3", b"{}");
        scan.add("_parked.send._.send.e4", b"{}");
        scan.add("_parked._shared-db.t2.other.e5", b"{}");
        scan.add("_rate.send.t1", b"{}");
        scan.add(
            "send.e9",
            br#"{"status":"skipped","detail":"rate_limited: beyond 1 per 1s"}"#,
        );
        scan.add("send.e8", br#"{"status":"ok"}"#);
        scan.add("send.e9.rl", b"{}");
        let functions = scan.finish();
        let send = &functions["send"];
        assert_eq!(send.parked, 2);
        assert_eq!(send.parked_top_keys[0].runs, 2);
        assert_eq!(send.rate_limit_keys, 1);
        assert_eq!(send.rate_limited_runs, 1);
        assert_eq!(send.skipped["rate_limited"], 1);
        let own = send.concurrency.iter().find(|c| c.scope == "send").unwrap();
        assert_eq!((own.slots_held, own.limit_at_least), (2, 3));
        let shared = send
            .concurrency
            .iter()
            .find(|c| c.scope == "_shared-db")
            .unwrap();
        assert_eq!(shared.shared_name.as_deref(), Some("db"));
        assert_eq!(functions["other"].parked, 1);
    }

    #[test]
    fn open_batches_and_batched_events_are_counted() {
        let mut scan = Scan::default();
        scan.add(
            "_batch.views.acme",
            br#"{"batch":"b1","first_ms":1,"timer_ms":2,"members":[[1,"e1"],[2,"e2"]]}"#,
        );
        scan.add(
            "_batch.views.globex",
            br#"{"batch":"b2","members":[[3,"e3"]]}"#,
        );
        scan.add("views.e0", br#"{"status":"batched","detail":"b0"}"#);
        scan.add("views.b0", br#"{"status":"ok"}"#);
        let views = &scan.finish()["views"];
        assert_eq!(views.open_batches, 2);
        assert_eq!(views.events_in_open_batches, 3);
        assert_eq!(views.batched_events, 1);
    }
}
