//! Resolving a registration: the first resolver records the outcome (KV create), then
//! wakes the run by firing its continuation early; later resolvers find the record.

use std::time::SystemTime;

use async_nats::jetstream::kv;
use herald::protocol::runs;

use super::{Kind, Registration};
use crate::steps::StepRecord;

/// How a wait ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolution<'a> {
    /// An event matched: its id and JSON data.
    Event {
        /// `ce-type`.
        event_type: &'a str,
        /// `ce-id`.
        id: &'a str,
        /// The payload.
        data: &'a [u8],
    },
    /// The timeout fired first.
    Timeout,
}

/// Who recorded a wait's outcome: `"by"` in its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// A matcher, which then wakes the run.
    Matcher,
    /// The waiting step's own look-back, which goes on in the same attempt.
    LookBack,
}

impl Resolver {
    fn as_str(self) -> &'static str {
        match self {
            Resolver::Matcher => "matcher",
            Resolver::LookBack => "wait",
        }
    }
}

/// The step record of a wait's outcome: `{"type", "id", "data", "by"}` for an event, `null`
/// for a timeout.
pub(crate) fn outcome_record(resolution: Resolution<'_>, by: Resolver) -> StepRecord {
    let output = match resolution {
        Resolution::Event {
            event_type,
            id,
            data,
        } => serde_json::json!({
            "type": event_type,
            "id": id,
            "data": serde_json::from_slice::<serde_json::Value>(data).unwrap_or(serde_json::Value::Null),
            "by": by.as_str(),
        }),
        Resolution::Timeout => serde_json::Value::Null,
    };
    StepRecord::Ok {
        output,
        attempts: 1,
        duration_ms: 0,
        finished_at: herald::headers::format_time(SystemTime::now()),
    }
}

/// Stores `record`, the outcome a waiting step's look-back found, and says whether that
/// step goes on: with `record` when it created it, with the stored record when an earlier
/// try did (a create that timed out yet was stored), and not at all (`None`) when a matcher
/// recorded the outcome first, because that matcher wakes the run. A create that fails
/// otherwise is tried again for up to 10 s (a leader election), then reported.
pub(crate) async fn record_look_back(
    kv: &kv::Store,
    key: &str,
    record: &StepRecord,
) -> Result<Option<StepRecord>, async_nats::Error> {
    if create(kv, key, serde_json::to_vec(record)?.into()).await? {
        return Ok(Some(record.clone()));
    }
    let stored = crate::run_store::leader_get(kv, key)
        .await?
        .and_then(|bytes| serde_json::from_slice::<StepRecord>(&bytes).ok());
    Ok(stored.filter(|stored| recorded_by(stored) != Some(Resolver::Matcher)))
}

/// Who recorded a wait's outcome record (`None` for a timeout).
fn recorded_by(record: &StepRecord) -> Option<Resolver> {
    let StepRecord::Ok { output, .. } = record else {
        return None;
    };
    match output.get("by").and_then(|v| v.as_str()) {
        Some("matcher") => Some(Resolver::Matcher),
        Some("wait") => Some(Resolver::LookBack),
        _ => None,
    }
}

/// A KV create tried again for up to 10 s when it fails otherwise than by the key existing
/// (a leader election); true when created, false when the key exists (perhaps stored by an
/// earlier try that timed out).
async fn create(kv: &kv::Store, key: &str, value: bytes::Bytes) -> Result<bool, async_nats::Error> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match kv.create(key, value.clone()).await {
            Ok(_) => return Ok(true),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error.into()),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Fires the run's continuation, trying again through a leader election (up to 30 s).
async fn wake(
    client: &herald::Client,
    registration: &Registration,
) -> Result<(), async_nats::Error> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match crate::cancel::fire_now(
            client,
            &registration.function,
            &registration.event_key,
            None,
            Some(&registration.step),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}

/// Records the outcome of `registration` unless another resolver did, wakes its run, and
/// removes the registration. True when this call decided the outcome.
pub(crate) async fn resolve(
    client: &herald::Client,
    kv: &kv::Store,
    registration: &Registration,
    resolution: Resolution<'_>,
) -> Result<bool, async_nats::Error> {
    let decided = match registration.kind {
        Kind::Wait => {
            let key = runs::step_record_key(&registration.run_key(), &registration.step);
            let value = serde_json::to_vec(&outcome_record(resolution, Resolver::Matcher))?;
            let ours = if create(kv, &key, value.into()).await? {
                true
            } else {
                // Recorded before by a matcher with this same event (a resolver that
                // failed to wake the run, or whose create timed out yet was stored, and
                // is trying again): wake it now. Read from the leader: a follower may
                // not have the record yet, and taking it as another's would leave the
                // run asleep until its timeout.
                let stored = crate::run_store::leader_get(kv, &key)
                    .await?
                    .and_then(|bytes| serde_json::from_slice::<StepRecord>(&bytes).ok());
                let id = match resolution {
                    Resolution::Event { id, .. } => Some(id),
                    Resolution::Timeout => None,
                };
                let same = stored
                    .filter(|s| recorded_by(s) == Some(Resolver::Matcher))
                    .and_then(|s| match s {
                        StepRecord::Ok { output, .. } => {
                            output.get("id").and_then(|v| v.as_str()).map(str::to_owned)
                        }
                        _ => None,
                    });
                id.is_some() && same.as_deref() == id
            };
            if ours {
                wake(client, registration).await?;
            }
            ours
        }
        Kind::Cancel => {
            let reason = format!(
                "cancel_on: {} with {} = {}",
                registration.event_type, registration.pointer, registration.value
            );
            let outcome = crate::cancel::cancel_key(
                client,
                kv,
                &registration.function,
                &registration.event_key,
                &reason,
            )
            .await
            .map_err(|e| async_nats::Error::from(e.to_string()))?;
            matches!(outcome, crate::CancelOutcome::Cancelled { .. })
        }
    };
    // The registration has served (with those of the other events a wait for any of
    // several awaited); a crash before this leaves them to the next resolver.
    let _ = kv.delete(registration.key()).await;
    for sibling in &registration.siblings {
        let _ = kv.delete(sibling).await;
    }
    Ok(decided)
}
