//! Waiting for another event (`ctx.wait_for_event`) and cancelling on one (`cancel_on`),
//! without missing one sent right after the trigger (protocol section 11).
//!
//! A wait publishes its timeout as the run's continuation, stores a **registration**
//! (`_wait.<type>.<hash>.<F>.<event-key>.<step>` in `ns-runs`), makes sure the type's
//! matcher consumer exists, reads the events stream's last sequence `W`, and scans the
//! type's events from the run's trigger up to `W`. Events stored after `W` reach the
//! matcher consumer, which every worker pulls, holding every registration in memory (a KV
//! watch) and waiting, per batch, until its watch has applied every registration stored so
//! far. Whoever finds a match creates the step's record (first wins) and fires the run's
//! continuation early; the timeout creates the same record empty. One outcome, one wake.

pub(crate) mod cancel_on;
pub mod invoke;
pub(crate) mod matcher;
mod resolve;
mod scan;
mod step;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use resolve::{Resolution, resolve};
pub use step::WAIT_UNTIL;
pub use step::{AnyEvent, Awaited};

/// `herald-trigger-seq: <seq>`: on a continuation, the stream sequence of the event that
/// started the run (where a wait's look-back starts).
pub const TRIGGER_SEQ: &str = "herald-trigger-seq";
/// The first token of every registration key (no function id starts with `_`).
pub const REGISTRATION_PREFIX: &str = "_wait";
/// How long a type's matcher consumer lives without any worker pulling from it.
pub(crate) const MATCHER_INACTIVE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What an awaited event must carry: the value at a JSON pointer (RFC 6901) of its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub(crate) pointer: String,
    pub(crate) value: serde_json::Value,
}

impl Match {
    /// The event's field at `pointer` (`/invoice_id`, `/customer/id`) equals `value`.
    pub fn field(pointer: impl Into<String>, value: impl Serialize) -> Match {
        Match {
            pointer: pointer.into(),
            value: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// What a registration does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// A `wait_for_event` step: record the event as the step's output and wake the run.
    Wait,
    /// A `cancel_on`: cancel the run.
    Cancel,
}

/// A stored registration (`_wait.…` in `ns-runs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub(crate) kind: Kind,
    pub(crate) function: String,
    pub(crate) event_key: String,
    /// The step key (a wait), or `cancel` (a cancel_on).
    pub(crate) step: String,
    pub(crate) event_type: String,
    pub(crate) pointer: String,
    pub(crate) value: serde_json::Value,
    /// Only events stored after this sequence match (the run's trigger).
    pub(crate) after_seq: u64,
    /// The keys of the other registrations of a wait for any of several events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) siblings: Vec<String>,
}

impl Registration {
    /// `_wait.<type with / for .>.<hash>.<F>.<event-key>.<step>`.
    pub(crate) fn key(&self) -> String {
        format!(
            "{REGISTRATION_PREFIX}.{}.{}.{}.{}.{}",
            self.event_type.replace('.', "/"),
            match_hash(&self.pointer, &self.value),
            self.function,
            self.event_key,
            self.step
        )
    }

    /// The run key `F.<event-key>`.
    pub(crate) fn run_key(&self) -> String {
        herald::protocol::runs::run_key(&self.function, &self.event_key)
    }
}

/// The lookup hash of a pointer and a value: the first 16 hex digits of the SHA-256 of the
/// pointer, a newline and the value's compact JSON.
pub(crate) fn match_hash(pointer: &str, value: &serde_json::Value) -> String {
    let text = format!("{pointer}\n{value}");
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The durable name of an event type's matcher consumer: `herald-match-<12 hex digits of
/// the type's SHA-256>`.
pub fn matcher_durable(event_type: &str) -> String {
    let hex: String = Sha256::digest(event_type.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("herald-match-{hex}")
}

/// Whether `pointer` names a property of the type's JSON Schema (through `properties`, and
/// `$ref` into `$defs`); `Err` says why not.
pub(crate) fn check_pointer(schema: &serde_json::Value, pointer: &str) -> Result<(), String> {
    let Some(path) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON pointer (it starts with `/`)"
        ));
    };
    let mut node = schema;
    for token in path.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        node = resolve_ref(schema, node);
        let properties = node.get("properties").ok_or_else(|| {
            format!("{pointer:?}: the schema has no properties where {token:?} is looked up")
        })?;
        node = properties
            .get(&token)
            .ok_or_else(|| format!("{pointer:?}: the schema has no property {token:?}"))?;
    }
    Ok(())
}

fn resolve_ref<'a>(
    root: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> &'a serde_json::Value {
    match node.get("$ref").and_then(|r| r.as_str()) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|path| root.pointer(path))
            .unwrap_or(node),
        None => node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_checked_against_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "invoice_id": {"type": "string"},
                "customer": {"$ref": "#/$defs/Customer"}
            },
            "$defs": {"Customer": {"type": "object", "properties": {"id": {"type": "string"}}}}
        });
        assert!(check_pointer(&schema, "/invoice_id").is_ok());
        assert!(check_pointer(&schema, "/customer/id").is_ok());
        assert!(
            check_pointer(&schema, "/invoiceId")
                .unwrap_err()
                .contains("no property")
        );
        assert!(
            check_pointer(&schema, "invoice_id")
                .unwrap_err()
                .contains("JSON pointer")
        );
    }

    #[test]
    fn registrations_are_keyed_by_type_hash_run_and_step() {
        let registration = Registration {
            kind: Kind::Wait,
            function: "onboarding".into(),
            event_key: "ev-1".into(),
            step: "wait_for_invoice.2".into(),
            event_type: "billing.invoice_paid".into(),
            pointer: "/invoice_id".into(),
            value: json!("inv-9"),
            after_seq: 7,
            siblings: Vec::new(),
        };
        let key = registration.key();
        assert!(key.starts_with("_wait.billing/invoice_paid."), "{key}");
        assert!(
            key.ends_with(".onboarding.ev-1.wait_for_invoice.2"),
            "{key}"
        );
        assert_eq!(match_hash("/invoice_id", &json!("inv-9")).len(), 16);
        assert_ne!(
            match_hash("/invoice_id", &json!("inv-9")),
            match_hash("/invoice_id", &json!(9))
        );
        assert!(matcher_durable("billing.invoice_paid").starts_with("herald-match-"));
    }
}
