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

/// The step record of a wait's outcome: `{"id", "data"}` for an event, `null` for a timeout.
pub(crate) fn outcome_record(resolution: Resolution<'_>) -> StepRecord {
    let output = match resolution {
        Resolution::Event {
            event_type,
            id,
            data,
        } => serde_json::json!({
            "type": event_type,
            "id": id,
            "data": serde_json::from_slice::<serde_json::Value>(data).unwrap_or(serde_json::Value::Null),
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
            let value = serde_json::to_vec(&outcome_record(resolution))?;
            let ours = match kv.create(&key, value.into()).await {
                Ok(_) => true,
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    // Recorded before by this same resolution (a resolver that failed to
                    // wake the run and is trying again): wake it now.
                    let stored = kv.get(&key).await?;
                    let id = match resolution {
                        Resolution::Event { id, .. } => Some(id),
                        Resolution::Timeout => None,
                    };
                    let same = stored
                        .and_then(|bytes| serde_json::from_slice::<StepRecord>(&bytes).ok())
                        .and_then(|record| match record {
                            StepRecord::Ok { output, .. } => {
                                output.get("id").and_then(|v| v.as_str()).map(str::to_owned)
                            }
                            _ => None,
                        });
                    id.is_some() && same.as_deref() == id
                }
                Err(error) => return Err(error.into()),
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
