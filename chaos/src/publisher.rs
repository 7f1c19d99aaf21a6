//! Publishing the valid and the invalid events, paced over a window, pipelined, each retried
//! with the same id until the stream acks it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::HeaderMap;
use herald::protocol::header;
use herald::{Client, PublishOptions, headers};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::event::ChaosJob;

/// At most this many events wait for their stream ack at once.
const IN_FLIGHT: usize = 256;
/// How long one event may take to be stored, retries included (a leader election included).
const EVENT_DEADLINE: Duration = Duration::from_secs(90);
/// The pause between two tries of one event while the stream has no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// One event to publish.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Planned {
    /// A valid `chaos.job` with this `n`.
    Valid(u64),
    /// An invalid `chaos.job` payload, number `k`.
    Invalid(u64),
}

impl Planned {
    pub(crate) fn id(self) -> String {
        match self {
            Planned::Valid(n) => valid_id(n),
            Planned::Invalid(k) => format!("bad-{k}"),
        }
    }
}

/// The id of the valid event `n`.
pub(crate) fn valid_id(n: u64) -> String {
    format!("ev-{n}")
}

/// `valid` valid and `invalid` invalid events, the invalid ones spread evenly.
pub(crate) fn plan(valid: usize, invalid: usize) -> Vec<Planned> {
    let total = valid + invalid;
    let mut plan = Vec::with_capacity(total);
    let (mut next_valid, mut next_invalid) = (0_u64, 0_usize);
    for position in 0..total {
        // Invalid event k sits at floor((2k + 1) * total / (2 * invalid)): strictly
        // increasing positions, since total >= invalid.
        let invalid_here =
            next_invalid < invalid && position == (2 * next_invalid + 1) * total / (2 * invalid);
        if invalid_here {
            plan.push(Planned::Invalid(next_invalid as u64));
            next_invalid += 1;
        } else {
            plan.push(Planned::Valid(next_valid));
            next_valid += 1;
        }
    }
    plan
}

/// What publishing did.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Valid events stored: id and stream sequence.
    pub(crate) valid: Vec<(String, u64)>,
    /// Invalid events stored: id and stream sequence.
    pub(crate) invalid: Vec<(String, u64)>,
    /// Tries that failed and were repeated.
    pub(crate) retries: u64,
    /// Events never stored, with the last error.
    pub(crate) failures: Vec<String>,
    /// How long publishing took, from the first event to the last ack.
    pub(crate) took: Duration,
}

/// Publishes `plan`, event `j` at `start + window * j / len`, keeping up to [`IN_FLIGHT`]
/// acks outstanding.
pub(crate) async fn publish(client: Client, plan: Vec<Planned>, window: Duration) -> Published {
    let start = tokio::time::Instant::now();
    let total = plan.len().max(1) as u32;
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut published = Published::default();
    for (position, planned) in plan.into_iter().enumerate() {
        // The pace is the test's schedule, not a synchronisation.
        tokio::time::sleep_until(start + window * position as u32 / total).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tasks.spawn(async move {
            let outcome = publish_one(&client, planned).await;
            drop(permit);
            (planned, outcome)
        });
        while let Some(done) = tasks.try_join_next() {
            collect(&mut published, done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(&mut published, done);
    }
    published.took = start.elapsed();
    published
}

type Outcome = (Planned, (Result<u64, String>, u64));

fn collect(published: &mut Published, done: Result<Outcome, tokio::task::JoinError>) {
    match done {
        Ok((planned, (result, retries))) => {
            published.retries += retries;
            match (planned, result) {
                (Planned::Valid(_), Ok(seq)) => published.valid.push((planned.id(), seq)),
                (Planned::Invalid(_), Ok(seq)) => published.invalid.push((planned.id(), seq)),
                (_, Err(error)) => published
                    .failures
                    .push(format!("{}: {error}", planned.id())),
            }
        }
        Err(error) => published
            .failures
            .push(format!("a publishing task failed: {error}")),
    }
}

/// Publishes one event until the stream acks it; the same id every time, so a try whose ack
/// was lost and that is repeated is stored once. Returns its sequence and the retries.
async fn publish_one(client: &Client, planned: Planned) -> (Result<u64, String>, u64) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut retries = 0;
    loop {
        let outcome = match planned {
            Planned::Valid(n) => publish_valid(client, n).await,
            Planned::Invalid(k) => publish_invalid(client, k).await,
        };
        match outcome {
            Ok(sequence) => return (Ok(sequence), retries),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(id = planned.id(), %error, "publish failed, trying again");
                retries += 1;
                // Polling for a stream leader; the pause only spaces the tries.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                return (
                    Err(format!("not stored within {EVENT_DEADLINE:?}: {error}")),
                    retries,
                );
            }
        }
    }
}

async fn publish_valid(client: &Client, n: u64) -> Result<u64, String> {
    let options = PublishOptions {
        id: Some(valid_id(n)),
        ..Default::default()
    };
    let pending = client
        .publish_with(&ChaosJob { n }, options)
        .await
        .map_err(|e| e.to_string())?;
    let ack = pending.await.map_err(|e| e.to_string())?;
    Ok(ack.sequence)
}

/// An event whose payload breaks `chaos.job`'s schema (`n` must be an integer), published
/// with the raw client and the CloudEvents headers of protocol section 4, as a producer in
/// another language would.
async fn publish_invalid(client: &Client, k: u64) -> Result<u64, String> {
    let id = Planned::Invalid(k).id();
    let event_type = <ChaosJob as herald::Event>::TYPE;
    let mut map = HeaderMap::new();
    map.insert(header::SPEC_VERSION, header::SPEC_VERSION_VALUE);
    map.insert(header::ID, id.as_str());
    map.insert(header::TYPE, event_type);
    map.insert(header::SOURCE, "urn:herald:service:chaos");
    map.insert(
        header::TIME,
        headers::format_time(SystemTime::now()).as_str(),
    );
    map.insert(header::NATS_MSG_ID, id.as_str());
    let subject = client.namespace().event_subject(event_type);
    let ack = client
        .jetstream()
        .publish_with_headers(subject, map, r#"{"n":"x"}"#.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(ack.sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_has_every_event_once_and_spreads_the_invalid_ones() {
        for (valid, invalid) in [(3000, 20), (10, 10), (5, 0), (0, 3), (1, 7)] {
            let plan = plan(valid, invalid);
            let valid_count = plan
                .iter()
                .filter(|p| matches!(p, Planned::Valid(_)))
                .count();
            assert_eq!(valid_count, valid);
            assert_eq!(plan.len() - valid_count, invalid);
        }
        let plan = plan(3000, 20);
        let first = plan.iter().position(|p| matches!(p, Planned::Invalid(_)));
        assert_eq!(
            first,
            Some(75),
            "the first invalid event is not at the start"
        );
    }
}
