//! Names derived from a namespace (protocol sections 1 to 3), and the rules for event types
//! and function ids.

use std::fmt;

/// A bad namespace, event type, function id or event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}. {rule}")]
pub struct NameError {
    what: &'static str,
    value: String,
    reason: String,
    rule: &'static str,
}

impl NameError {
    /// What kind of name was refused (`namespace`, `event type`, …).
    pub fn what(&self) -> &'static str {
        self.what
    }
    /// The refused value.
    pub fn value(&self) -> &str {
        &self.value
    }
    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

const NAMESPACE_RULE: &str =
    "A namespace is 1 to 32 characters `[a-z][a-z0-9_-]*`, e.g. `herald` or `staging`";
const EVENT_TYPE_RULE: &str = "An event type is lower-case tokens `[a-z0-9][a-z0-9_-]*` joined by \
     `.`, at most 128 characters, e.g. `source.connected` (protocol section 2)";
const EVENT_ID_RULE: &str =
    "An event id is 1 to 256 printable ASCII characters (protocol section 4)";

/// A namespace: the prefix of every subject, stream and bucket of one Herald deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    name: String,
    upper: String,
}

impl Namespace {
    /// Checks `name` against `[a-z][a-z0-9_-]{0,31}`.
    pub fn new(name: impl Into<String>) -> Result<Namespace, NameError> {
        let name = name.into();
        let error = |reason: String| NameError {
            what: "namespace",
            value: name.clone(),
            reason,
            rule: NAMESPACE_RULE,
        };
        let Some(first) = name.chars().next() else {
            return Err(error("it is empty".to_owned()));
        };
        if name.len() > 32 {
            return Err(error(format!("it is {} characters long", name.len())));
        }
        if !first.is_ascii_lowercase() {
            return Err(error(format!("it starts with {first:?}")));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(error(format!("it contains {bad:?}")));
        }
        let upper = name.to_ascii_uppercase().replace('-', "_");
        Ok(Namespace { name, upper })
    }

    /// The namespace as given (`herald`).
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The events stream, `NS_EVENTS`.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.upper)
    }

    /// The dead-letter stream, `NS_DLQ`.
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.upper)
    }

    /// The stream of per-attempt activity records, `NS_ACTIVITY` (protocol section 18).
    pub fn activity_stream(&self) -> String {
        format!("{}_ACTIVITY", self.upper)
    }

    /// The activity subject of one run, `ns.activity.F.<event-key>`.
    pub fn activity_subject(&self, function: &str, event_key: &str) -> String {
        format!("{}.activity.{function}.{event_key}", self.name)
    }

    /// Every activity subject, `ns.activity.>`.
    pub fn activity_wildcard(&self) -> String {
        format!("{}.activity.>", self.name)
    }

    /// The stream that keeps max-deliveries advisories, `NS_ADVISORIES`.
    pub fn advisories_stream(&self) -> String {
        format!("{}_ADVISORIES", self.upper)
    }

    /// The short-lived stream provisioning creates to learn how many replicas the
    /// JetStream cluster can place, `NS_REPLICAS_PROBE` (deleted at once).
    pub fn replicas_probe_stream(&self) -> String {
        format!("{}_REPLICAS_PROBE", self.upper)
    }

    /// The schema registry bucket, `ns-schemas`.
    pub fn schemas_bucket(&self) -> String {
        format!("{}-schemas", self.name)
    }

    /// The runs bucket, `ns-runs`.
    pub fn runs_bucket(&self) -> String {
        format!("{}-runs", self.name)
    }

    /// The API keys bucket of the HTTP gateway, `ns-keys`.
    pub fn keys_bucket(&self) -> String {
        format!("{}-keys", self.name)
    }

    /// The push functions bucket, `ns-push`.
    pub fn push_bucket(&self) -> String {
        format!("{}-push", self.name)
    }

    /// The subject of an event type, `ns.events.T`.
    pub fn event_subject(&self, event_type: &str) -> String {
        format!("{}{event_type}", crate::protocol::events_prefix(self))
    }

    /// Every event subject, `ns.events.>`.
    pub fn events_wildcard(&self) -> String {
        format!("{}>", crate::protocol::events_prefix(self))
    }

    /// Every redrive subject, `ns.redrive.>`.
    pub fn redrive_wildcard(&self) -> String {
        format!("{}.redrive.>", self.name)
    }

    /// The redrive subject of a function, `ns.redrive.F`.
    pub fn redrive_subject(&self, function: &str) -> String {
        format!("{}.redrive.{function}", self.name)
    }

    /// The dead-letter subject of a function, `ns.dlq.F`.
    pub fn dlq_subject(&self, function: &str) -> String {
        format!("{}.dlq.{function}", self.name)
    }

    /// Every dead-letter subject, `ns.dlq.>`.
    pub fn dlq_wildcard(&self) -> String {
        format!("{}.dlq.>", self.name)
    }

    /// The advisory subjects kept in `NS_ADVISORIES`.
    pub fn advisories_subject(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.*",
            self.events_stream()
        )
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace {
            name: "herald".to_owned(),
            upper: "HERALD".to_owned(),
        }
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A checked event type (protocol section 2), such as `source.connected`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(String);

impl EventType {
    /// Checks `value` against the rule of protocol section 2.
    pub fn new(value: impl Into<String>) -> Result<EventType, NameError> {
        let value = value.into();
        match check_event_type(&value) {
            Ok(()) => Ok(EventType(value)),
            Err(reason) => Err(NameError {
                what: "event type",
                value,
                reason,
                rule: EVENT_TYPE_RULE,
            }),
        }
    }

    /// The type as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The event-type rule; the derive macro carries an identical copy (checked at compile time).
fn check_event_type(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".to_owned());
    }
    if value.len() > 128 {
        return Err(format!("it is {} characters long", value.len()));
    }
    for token in value.split('.') {
        let Some(first) = token.chars().next() else {
            return Err("it has an empty token (two dots in a row, or a dot at an end)".to_owned());
        };
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            let hint = if first.is_ascii_uppercase() {
                " (upper case is not allowed)"
            } else if first == '*' || first == '>' {
                " (wildcards match types when subscribing; an event has one concrete type)"
            } else {
                ""
            };
            return Err(format!(
                "token {token:?} starts with {first:?}{hint}; a token starts with a-z or 0-9"
            ));
        }
        if let Some(bad) = token
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            let hint = if bad.is_ascii_uppercase() {
                " (upper case is not allowed)"
            } else {
                ""
            };
            return Err(format!("token {token:?} contains {bad:?}{hint}"));
        }
    }
    Ok(())
}

/// Checks a caller-chosen event id: 1 to 256 printable ASCII characters.
pub fn check_event_id(id: &str) -> Result<(), NameError> {
    let error = |reason: String| NameError {
        what: "event id",
        value: id.to_owned(),
        reason,
        rule: EVENT_ID_RULE,
    };
    if id.is_empty() {
        return Err(error("it is empty".to_owned()));
    }
    if id.len() > 256 {
        return Err(error(format!("it is {} characters long", id.len())));
    }
    if let Some(bad) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(error(format!("it contains {bad:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        let ns = Namespace::new("my-app").unwrap();
        assert_eq!(ns.events_stream(), "MY_APP_EVENTS");
        assert_eq!(ns.dlq_stream(), "MY_APP_DLQ");
        assert_eq!(ns.advisories_stream(), "MY_APP_ADVISORIES");
        assert_eq!(ns.schemas_bucket(), "my-app-schemas");
        assert_eq!(ns.runs_bucket(), "my-app-runs");
        assert_eq!(ns.event_subject("user.signup"), "my-app.events.user.signup");
        assert_eq!(ns.redrive_subject("f"), "my-app.redrive.f");
        assert_eq!(ns.dlq_subject("f"), "my-app.dlq.f");
        assert_eq!(
            ns.advisories_subject(),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MY_APP_EVENTS.*"
        );
        assert_eq!(Namespace::default(), Namespace::new("herald").unwrap());
    }

    #[test]
    fn bad_namespaces_say_why() {
        for bad in ["", "Herald", "1abc", "a.b", "a b", &"a".repeat(33)] {
            let error = Namespace::new(bad).unwrap_err();
            assert_eq!(error.what(), "namespace");
            assert!(error.to_string().contains("[a-z][a-z0-9_-]"), "{error}");
        }
        assert!(Namespace::new("a".repeat(32)).is_ok());
    }

    #[test]
    fn event_type_rule() {
        for good in [
            "source.connected",
            "user.signup.v2",
            "billing.invoice_paid",
            "a",
            "0-x",
        ] {
            assert!(EventType::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Source.connected",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a.*",
            "_a",
            &"a".repeat(129),
        ] {
            assert!(EventType::new(bad).is_err(), "{bad}");
        }
        let error = EventType::new("User.signup").unwrap_err();
        assert!(error.to_string().contains("upper case"), "{error}");
    }

    #[test]
    fn event_ids() {
        assert!(check_event_id("order-42").is_ok());
        assert!(check_event_id(&"x".repeat(256)).is_ok());
        assert!(check_event_id("").is_err());
        assert!(check_event_id("has space").is_err());
        assert!(check_event_id("é").is_err());
        assert!(check_event_id(&"x".repeat(257)).is_err());
    }
}
