//! The [`Event`] trait: a Rust type that is a Herald event.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::names::Namespace;

/// A typed event: its type string, its subject and its JSON Schema.
///
/// Derive it with `#[derive(Event)]` and `#[event(type = "source.connected")]`; the type
/// string is checked at compile time against protocol section 2. The type must also derive
/// `Serialize`, `Deserialize` and `JsonSchema`, which define its payload and its schema.
///
/// ```
/// use herald::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
/// #[event(type = "user.signup")]
/// struct UserSignup {
///     #[event(subject)]
///     user_id: u64,
///     email: String,
/// }
///
/// assert_eq!(UserSignup::TYPE, "user.signup");
/// assert_eq!(UserSignup::subject(&herald::Namespace::default()), "herald.events.user.signup");
/// assert_eq!(UserSignup::schema()["required"], serde_json::json!(["user_id", "email"]));
/// let event = UserSignup { user_id: 7, email: "a@example.com".into() };
/// assert_eq!(event.ce_subject().as_deref(), Some("7"));
/// ```
pub trait Event:
    Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static
{
    /// The event type, such as `source.connected`.
    const TYPE: &'static str;

    /// The subject events of this type are published to: `ns.events.<TYPE>`.
    fn subject(namespace: &Namespace) -> String {
        namespace.event_subject(Self::TYPE)
    }

    /// The JSON Schema (draft 2020-12) of the payload, as the type deserialises it.
    fn schema() -> serde_json::Value {
        crate::schema::schema_for::<Self>()
    }

    /// The entity this event is about (`ce-subject`), set with `#[event(subject)]` on a field.
    fn ce_subject(&self) -> Option<String> {
        None
    }
}
