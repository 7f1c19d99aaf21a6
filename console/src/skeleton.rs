//! A payload skeleton generated from a JSON Schema (required properties, `const`, the first
//! `enum` value, example values for formats), and payload checks with errors by JSON path.

use herald::schema::{CompiledSchema, Violation};
use serde_json::{Map, Value, json};

/// How deep the skeleton follows nested schemas (recursive types end there).
const MAX_DEPTH: usize = 8;

/// A payload that has the shape `schema` asks for.
pub(crate) fn skeleton(schema: &Value) -> Value {
    build(schema, schema, 0)
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or(schema),
        None => schema,
    }
}

fn build(root: &Value, schema: &Value, depth: usize) -> Value {
    let schema = resolve(root, schema);
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
    {
        return first.clone();
    }
    if let Some(default) = schema.get("default") {
        return default.clone();
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(choices) = schema.get(key).and_then(Value::as_array)
            && let Some(choice) = choices
                .iter()
                .find(|c| c.get("type") != Some(&Value::String("null".into())))
        {
            return build(root, choice, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // `["string", "null"]`: the first that is not null.
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "null",
    };
    match kind {
        "object" => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut object = Map::new();
            if let Some(properties) = properties {
                for (name, property) in properties {
                    if required.is_empty() || required.contains(&name.as_str()) {
                        object.insert(name.clone(), build(root, property, depth + 1));
                    }
                }
            }
            Value::Object(object)
        }
        "array" => match schema.get("minItems").and_then(Value::as_u64) {
            Some(n) if n > 0 => Value::Array(
                (0..n.min(3))
                    .map(|_| build(root, schema.get("items").unwrap_or(&Value::Null), depth + 1))
                    .collect(),
            ),
            _ => json!([]),
        },
        "string" => match schema.get("format").and_then(Value::as_str) {
            Some("email") => json!("user@example.com"),
            Some("uuid") => json!(uuid::Uuid::now_v7().to_string()),
            Some("date-time") => json!(herald::headers::format_time(std::time::SystemTime::now())),
            Some("date") => json!("2026-01-01"),
            Some("uri") => json!("https://example.com/"),
            _ => json!(""),
        },
        "integer" => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(0)),
        "number" => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0)),
        "boolean" => json!(false),
        _ => Value::Null,
    }
}

/// Parses `text` as JSON and validates it against `schema`; the errors by JSON path.
pub(crate) fn check(event_type: &str, schema: &Value, text: &str) -> Result<Value, Vec<Violation>> {
    let value: Value = serde_json::from_str(text).map_err(|error| {
        vec![Violation {
            path: "$".into(),
            message: format!("not valid JSON: {error}"),
        }]
    })?;
    let compiled = CompiledSchema::compile(event_type, schema.clone()).map_err(|error| {
        vec![Violation {
            path: "$".into(),
            message: error.to_string(),
        }]
    })?;
    compiled.validate(&value)?;
    Ok(value)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_skeleton_has_the_required_fields_with_example_values() {
        let schema = json!({
            "type": "object",
            "required": ["email", "plan", "seats", "user"],
            "properties": {
                "email": {"type": "string", "format": "email"},
                "plan": {"enum": ["free", "pro"]},
                "seats": {"type": "integer", "minimum": 1},
                "note": {"type": ["string", "null"]},
                "user": {"$ref": "#/$defs/User"}
            },
            "$defs": {"User": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}
        });
        assert_eq!(
            skeleton(&schema),
            json!({"email": "user@example.com", "plan": "free", "seats": 1, "user": {"id": ""}})
        );
        let errors = check("t", &schema, r#"{"plan":"gold"}"#)
            .err()
            .unwrap_or_default();
        assert!(errors.iter().any(|v| v.path == "$.plan"), "{errors:?}");
        assert!(
            errors.iter().any(|v| v.message.contains("email")),
            "{errors:?}"
        );
        let invalid = check("t", &schema, "{").unwrap_err();
        assert_eq!(invalid[0].path, "$");
    }
}
