//! Inngest's event API body (`POST /e/{key}`): one event or an array of
//! `{name, data, id?, ts?, user?, v?}`, so existing Inngest clients send to Herald unchanged.

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::{Checker, Incoming, time_from_millis};
use crate::problem::{EventProblem, PathMessage, Problem};

/// The header in which Inngest clients send `millis,entropy`, from which event ids are
/// derived so that a client's retries deduplicate.
pub const EVENT_ID_SEED_HEADER: &str = "x-inngest-event-id-seed";

/// The `ce-source` of events received on `/e/{key}`, followed by the key id.
pub const SOURCE_PREFIX: &str = "urn:herald:gateway:inngest:";

/// How an Inngest `name` becomes a Herald type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NameMapping {
    /// Names must already be Herald event types (`user.signup`); `app/user.created` is
    /// refused with 400.
    #[default]
    Strict,
    /// `/` becomes `.` (`app/user.created` is stored as `app.user.created`).
    SlashToDot,
}

/// Reads the events of an Inngest request.
pub(crate) fn parse(
    headers: &HeaderMap,
    body: &[u8],
    key_id: &str,
    mapping: NameMapping,
    max_events: usize,
) -> Result<Vec<Incoming>, Problem> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        Problem::invalid(
            vec![EventProblem {
                violations: vec![PathMessage {
                    path: "$".to_owned(),
                    message: format!("the body is not JSON: {error}"),
                }],
                ..EventProblem::default()
            }],
            1,
        )
    })?;
    let (items, batch) = match &value {
        Value::Array(items) => (items.iter().collect::<Vec<_>>(), true),
        other => (vec![other], false),
    };
    if items.len() > max_events {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-events",
            format!("a request holds at most {max_events} events"),
        )
        .index(max_events));
    }
    let seed = headers
        .get(EVENT_ID_SEED_HEADER)
        .and_then(|v| v.to_str().ok());
    let source = format!("{SOURCE_PREFIX}{key_id}");
    let mut events = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let prefix = if batch {
            format!("$[{index}]")
        } else {
            "$".to_owned()
        };
        let result = match item.as_object() {
            Some(object) => one(object, index, prefix, seed, &source, mapping),
            None => Err(EventProblem {
                index,
                violations: vec![PathMessage {
                    path: prefix,
                    message: "an event is a JSON object with name and data".to_owned(),
                }],
                ..EventProblem::default()
            }),
        };
        match result {
            Ok(event) => events.push(event),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(events)
    } else {
        let total = events.len() + problems.len();
        Err(Problem::invalid(problems, total))
    }
}

fn one(
    object: &Map<String, Value>,
    index: usize,
    prefix: String,
    seed: Option<&str>,
    source: &str,
    mapping: NameMapping,
) -> Result<Incoming, EventProblem> {
    let mut check = Checker::new(index, prefix).rename("type", "name");
    let name = object.get("name").and_then(Value::as_str).map(|name| {
        if mapping == NameMapping::SlashToDot {
            name.replace('/', ".")
        } else {
            name.to_owned()
        }
    });
    if name.as_deref().is_some_and(|n| n.contains('/')) {
        check.fail(
            "type",
            "Inngest-style names with `/` are not Herald event types; use dots (user.signup), \
             or run the gateway with the slash-to-dot mapping",
        );
    }
    let event_type = check.required("type", name);
    let explicit_id = object
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    let id = explicit_id.unwrap_or_else(|| derived_id(seed, index));
    let id = check.required("id", Some(id));
    let time = match object.get("ts").and_then(Value::as_u64) {
        Some(millis) if millis > 0 => time_from_millis(millis),
        _ => check.time(None),
    };
    let data = match object.get("data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(data) => data.clone(),
    };
    check.finish()?;
    Ok(Incoming {
        id,
        event_type,
        source: source.to_owned(),
        time,
        subject: None,
        data_schema: None,
        extensions: Vec::new(),
        data,
        trace: None,
    })
}

/// An id derived from the client's seed and the event's position, so a retried request
/// carries the same ids; a fresh UUIDv7 without a seed.
fn derived_id(seed: Option<&str>, index: usize) -> String {
    match seed {
        Some(seed) => {
            let hash = Sha256::digest(format!("{seed}/{index}").as_bytes());
            let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("inngest-{hex}")
        }
        None => uuid::Uuid::now_v7().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_are_stable_per_position() {
        assert_eq!(derived_id(Some("1,abc"), 0), derived_id(Some("1,abc"), 0));
        assert_ne!(derived_id(Some("1,abc"), 0), derived_id(Some("1,abc"), 1));
        assert!(derived_id(Some("1,abc"), 0).starts_with("inngest-"));
    }
}
