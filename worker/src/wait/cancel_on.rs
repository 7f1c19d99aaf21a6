//! `cancel_on`: registrations made when a run starts, resolved by the same look-back and
//! matcher as waits, whose resolution cancels the run (protocol section 11).

use std::sync::Arc;

use super::matcher::ensure_consumer;
use super::scan::scan;
use super::{Kind, Registration};

/// The value a run's trigger gives the cancelling event's field.
pub(crate) type ValueOf = Arc<dyn Fn(&[u8]) -> Result<serde_json::Value, String> + Send + Sync>;

/// One `cancel_on` of a function.
#[derive(Clone)]
pub(crate) struct CancelOn {
    pub(crate) event_type: String,
    pub(crate) pointer: String,
    pub(crate) value_of: ValueOf,
    /// Why the pointer does not fit the cancelling type's schema, if it does not.
    pub(crate) invalid: Option<String>,
}

impl std::fmt::Debug for CancelOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelOn")
            .field("event_type", &self.event_type)
            .field("pointer", &self.pointer)
            .finish_non_exhaustive()
    }
}

/// The registrations of a run for its function's `cancel_on`s.
pub(crate) fn registrations(
    cancel_on: &[CancelOn],
    function: &str,
    event_key: &str,
    payload: &[u8],
    trigger_sequence: u64,
) -> Vec<Registration> {
    cancel_on
        .iter()
        .enumerate()
        .filter_map(|(index, on)| {
            let value = (on.value_of)(payload).ok()?;
            Some(Registration {
                kind: Kind::Cancel,
                function: function.to_owned(),
                event_key: event_key.to_owned(),
                step: format!("cancel-{index}"),
                event_type: on.event_type.clone(),
                pointer: on.pointer.clone(),
                value,
                after_seq: trigger_sequence,
                siblings: Vec::new(),
            })
        })
        .collect()
}

/// Stores the registrations, then looks back from the trigger: the reason to cancel when a
/// cancelling event was already stored.
pub(crate) async fn register(
    client: &herald::Client,
    kv: &async_nats::jetstream::kv::Store,
    registrations: &[Registration],
) -> Result<Option<String>, async_nats::Error> {
    for registration in registrations {
        kv.put(registration.key(), serde_json::to_vec(registration)?.into())
            .await?;
        ensure_consumer(client, &registration.event_type).await?;
    }
    let Some(first) = registrations.first() else {
        return Ok(None);
    };
    let mut events = client
        .jetstream()
        .get_stream(client.namespace().events_stream())
        .await?;
    let watermark = events.info().await?.state.last_sequence;
    for registration in registrations {
        if let Some(found) = scan(
            client,
            &registration.event_type,
            &registration.pointer,
            &registration.value,
            first.after_seq,
            watermark,
        )
        .await?
        {
            return Ok(Some(format!(
                "cancel_on: {} {} with {} = {}",
                registration.event_type, found.id, registration.pointer, registration.value
            )));
        }
    }
    Ok(None)
}

/// Removes a finished run's registrations.
pub(crate) async fn unregister(
    kv: &async_nats::jetstream::kv::Store,
    registrations: &[Registration],
) {
    for registration in registrations {
        let _ = kv.delete(registration.key()).await;
    }
}
