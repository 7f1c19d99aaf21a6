//! JSON Schemas of events: generation from Rust types, canonical digests, compiled
//! validators, and the reviewed `schemas/` folder.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Event;
use crate::json_view::{JsonTape, RecordError, TapeJson, record, scratch};

mod dir;

pub use dir::{EventSchema, ExportOutcome, SchemaDir, SchemaDirError, StaleSchema};

/// The JSON Schema (draft 2020-12) of `E`, describing what `E` accepts when deserialising.
pub fn schema_for<E: schemars::JsonSchema + ?Sized>() -> Value {
    schemars::generate::SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<E>()
        .to_value()
}

/// The canonical JSON of a value: object keys sorted, no whitespace (protocol section 5).
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (index, key) in keys.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key.as_str()], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// The hex SHA-256 of the canonical JSON of a schema (protocol section 5).
pub fn digest(schema: &Value) -> String {
    let hash = Sha256::digest(canonical_json(schema).as_bytes());
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// One place where a payload breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON path of the offending value, `$` for the root (`$.plan`, `$.items[2].id`).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A schema that cannot be compiled into a validator.
#[derive(Debug, thiserror::Error)]
#[error("the schema of {event_type} is not a valid JSON Schema: {reason}")]
pub struct SchemaCompileError {
    /// The event type.
    pub event_type: String,
    /// What the compiler said.
    pub reason: String,
}

/// A compiled schema, ready to validate payloads quickly.
pub struct CompiledSchema {
    event_type: String,
    schema: Value,
    validator: jsonschema::Validator,
    /// The same schema for JSON text read in place ([`CompiledSchema::validate_json`]);
    /// `None` where this build cannot read text that way.
    text_validator: Option<jsonschema::Validator<TapeJson>>,
}

impl fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledSchema")
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

impl CompiledSchema {
    /// Compiles `schema` (draft 2020-12, formats checked) for `event_type`.
    pub fn compile(event_type: &str, schema: Value) -> Result<CompiledSchema, SchemaCompileError> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|error| SchemaCompileError {
                event_type: event_type.to_owned(),
                reason: error.to_string(),
            })?;
        // Compiles wherever the first did (same schema, same options); if it ever did not,
        // text is validated through `serde_json::Value` instead.
        let text_validator = jsonschema::options_for::<TapeJson>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .ok();
        Ok(CompiledSchema {
            event_type: event_type.to_owned(),
            schema,
            validator,
            text_validator,
        })
    }

    /// Compiles the generated schema of `E`.
    pub fn of<E: Event>() -> Result<CompiledSchema, SchemaCompileError> {
        CompiledSchema::compile(E::TYPE, E::schema())
    }

    /// The event type this schema is for.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The schema document.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// `Ok` if `payload` is valid, else every violation with its JSON path.
    pub fn validate(&self, payload: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(payload) {
            return Ok(());
        }
        Err(self
            .validator
            .iter_errors(payload)
            .map(|error| Violation {
                path: json_path(&error.instance_path().to_string()),
                message: error.to_string(),
            })
            .collect())
    }
}

impl CompiledSchema {
    /// [`validate`](Self::validate) for JSON text: `Ok` if `payload` is valid, else every
    /// violation with its JSON path (text that is not JSON is one violation at `$`).
    ///
    /// The text is read once into a tree whose strings borrow from it, a fraction of the
    /// cost of building a `serde_json::Value`; only an invalid payload is parsed again, into
    /// a `Value`, to collect its violations.
    pub fn validate_json(&self, payload: &[u8]) -> Result<(), Vec<Violation>> {
        if let Some(text_validator) = &self.text_validator
            && let Ok(tape) = JsonTape::parse(payload, scratch::take())
        {
            let valid = text_validator.is_valid(tape.root());
            scratch::give_back(tape.into_nodes());
            if valid {
                return Ok(());
            }
        }
        let value: Value = serde_json::from_slice(payload).map_err(|error| {
            vec![Violation {
                path: "$".to_owned(),
                message: format!("not JSON: {error}"),
            }]
        })?;
        self.validate(&value)
    }

    /// Validates JSON text and decodes it as `T`: what a worker does with each payload.
    ///
    /// A valid payload is decoded from the tape it was validated on rather than parsed a
    /// second time; a decode the tape cannot do exactly as `serde_json` would (a raw value,
    /// a 128-bit integer, a repeated name, a map key read as a number) is done by
    /// `serde_json::from_slice`, as is every failing one, so the value and any error are
    /// `serde_json`'s.
    ///
    /// ```
    /// use herald::schema::{CompiledSchema, DecodeError};
    ///
    /// let schema = serde_json::json!({
    ///     "type": "object",
    ///     "properties": { "n": { "type": "integer", "minimum": 1 } },
    ///     "required": ["n"]
    /// });
    /// let compiled = CompiledSchema::compile("demo", schema)?;
    /// let value: serde_json::Value = compiled.decode_validated(br#"{"n":2}"#)?;
    /// assert_eq!(value["n"], 2);
    /// assert!(matches!(
    ///     compiled.decode_validated::<serde_json::Value>(br#"{"n":0}"#),
    ///     Err(DecodeError::Invalid(_))
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode_validated<T: serde::de::DeserializeOwned>(
        &self,
        payload: &[u8],
    ) -> Result<T, DecodeError> {
        if let Some(text_validator) = &self.text_validator
            && let Ok(tape) = JsonTape::parse(payload, scratch::take())
        {
            let decoded = text_validator
                .is_valid(tape.root())
                .then(|| crate::json_view::decode::<T>(&tape));
            scratch::give_back(tape.into_nodes());
            match decoded {
                Some(Ok(value)) => return Ok(value),
                Some(Err(_)) => {
                    return serde_json::from_slice(payload).map_err(DecodeError::Decode);
                }
                // Invalid: its violations are collected below.
                None => {}
            }
        }
        self.validate_json(payload).map_err(DecodeError::Invalid)?;
        serde_json::from_slice(payload).map_err(DecodeError::Decode)
    }

    /// Serialises `value` as compact JSON, appending to `out` exactly the bytes
    /// `serde_json::to_writer` writes, and validates them: what a publish does.
    ///
    /// The serialiser notes each value as it writes it, so the bytes are validated without
    /// being parsed or turned into a `serde_json::Value` (values it does not follow, such as
    /// raw JSON, are parsed instead); only an invalid payload is parsed into a `Value`, to
    /// collect its violations. On [`SerializeError::Invalid`], `out` holds the invalid JSON.
    pub fn serialize_validated<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), SerializeError> {
        let start = out.len();
        let Some(text_validator) = &self.text_validator else {
            serde_json::to_writer(&mut *out, value).map_err(SerializeError::Json)?;
            return self
                .validate_json(&out[start..])
                .map_err(SerializeError::Invalid);
        };
        let valid = match record(value, out, scratch::take()) {
            Ok(tape) => {
                let valid = text_validator.is_valid(tape.root());
                scratch::give_back(tape.into_nodes());
                valid
            }
            Err(RecordError::Serialize(error)) => return Err(SerializeError::Json(error)),
            // What the recorder does not follow (raw JSON, say) is read from the bytes.
            Err(RecordError::NotFollowed(_)) => {
                return self
                    .validate_json(&out[start..])
                    .map_err(SerializeError::Invalid);
            }
        };
        if valid {
            return Ok(());
        }
        self.validate_json(&out[start..])
            .map_err(SerializeError::Invalid)
    }
}

/// Why [`CompiledSchema::decode_validated`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload breaks the schema (or is not JSON: one violation at `$`): every
    /// violation, with its JSON path.
    #[error("breaks its schema: {}", list(.0))]
    Invalid(Vec<Violation>),
    /// The payload is valid but does not decode as the type asked for.
    #[error("does not decode: {0}")]
    Decode(#[source] serde_json::Error),
}

/// Why [`CompiledSchema::serialize_validated`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SerializeError {
    /// The value cannot be serialised to JSON (a map with non-string keys, a failing
    /// `Serialize` implementation).
    #[error("cannot be serialised to JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The JSON breaks the schema: every violation, with its JSON path.
    #[error("breaks its schema: {}", list(.0))]
    Invalid(Vec<Violation>),
}

fn list(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns a JSON Pointer (`/items/2/id`) into a JSON path (`$.items[2].id`).
pub fn json_path(pointer: &str) -> String {
    let mut path = String::from("$");
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            path.push('[');
            path.push_str(&token);
            path.push(']');
        } else if !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            path.push('.');
            path.push_str(&token);
        } else {
            path.push_str(&format!("[{}]", Value::String(token)));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let value = json!({"b": [1, {"z": 1, "a": "x"}], "a": null});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":null,"b":[1,{"a":"x","z":1}]}"#
        );
    }

    #[test]
    fn digest_ignores_key_order() {
        let one = json!({"type": "object", "required": ["a"]});
        let two: Value =
            serde_json::from_str(r#"{ "required": ["a"], "type": "object" }"#).unwrap();
        assert_eq!(digest(&one), digest(&two));
        assert_eq!(digest(&one).len(), 64);
        assert_ne!(digest(&one), digest(&json!({"type": "object"})));
    }

    #[test]
    fn pointers_become_json_paths() {
        assert_eq!(json_path(""), "$");
        assert_eq!(json_path("/plan"), "$.plan");
        assert_eq!(json_path("/items/2/id"), "$.items[2].id");
        assert_eq!(json_path("/a~1b/c d"), r#"$["a/b"]["c d"]"#);
    }

    #[test]
    fn violations_carry_paths() {
        let schema = json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "items": {"type": "array", "items": {"type": "string"}}},
            "required": ["n"]
        });
        let compiled = CompiledSchema::compile("t", schema).unwrap();
        assert!(compiled.validate(&json!({"n": 1})).is_ok());
        let violations = compiled
            .validate(&json!({"n": "x", "items": ["a", 3]}))
            .unwrap_err();
        let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"$.n"), "{violations:?}");
        assert!(paths.contains(&"$.items[1]"), "{violations:?}");
        let missing = compiled.validate(&json!({})).unwrap_err();
        assert_eq!(missing[0].path, "$");
        assert!(missing[0].message.contains("\"n\""), "{missing:?}");
    }

    #[test]
    fn json_text_is_validated_like_values() {
        let schema = json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "items": {"type": "array", "items": {"type": "string"}}},
            "required": ["n"]
        });
        let compiled = CompiledSchema::compile("t", schema).unwrap();
        assert!(compiled.text_validator.is_some());
        assert!(compiled.validate_json(br#"{"n":1,"items":["a"]}"#).is_ok());
        let text = br#"{"n":"x","items":["a",3]}"#;
        let from_text = compiled.validate_json(text).unwrap_err();
        let from_value = compiled
            .validate(&serde_json::from_slice(text).unwrap())
            .unwrap_err();
        assert_eq!(from_text, from_value);
        let not_json = compiled.validate_json(b"{\"n\":").unwrap_err();
        assert_eq!(not_json[0].path, "$");
        assert!(not_json[0].message.starts_with("not JSON"), "{not_json:?}");
    }
}
