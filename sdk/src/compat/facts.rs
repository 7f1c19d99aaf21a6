//! What the checker reads off a schema: keywords it skips or cannot compare, types,
//! bounds, finite values, and how unions are taken apart.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

pub(super) const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "$anchor",
    "contentEncoding",
    "contentMediaType",
];

/// Reader keywords the checker cannot compare.
pub(super) const UNSUPPORTED: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "dependentRequired",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "minProperties",
    "maxProperties",
];

pub(super) const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

pub(super) fn is_any(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

pub(super) fn is_nothing(schema: &Value) -> bool {
    matches!(schema, Value::Bool(false))
}

pub(super) fn json_text(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

/// The set of types a schema allows (`None` = every type).
pub(super) fn types_of(schema: &Map<String, Value>) -> Option<BTreeSet<&str>> {
    match schema.get("type") {
        Some(Value::String(t)) => Some([t.as_str()].into_iter().collect()),
        Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

pub(super) fn accepts_type(reader: &Option<BTreeSet<&str>>, t: &str) -> bool {
    match reader {
        None => true,
        Some(set) => set.contains(t) || (t == "integer" && set.contains("number")),
    }
}

/// Bounds implied by Rust integer formats that schemars emits.
pub(super) fn format_bounds(format: Option<&str>) -> (Option<f64>, Option<f64>) {
    let bits = |n: i32| 2f64.powi(n);
    match format {
        Some("int8") => (Some(-bits(7)), Some(bits(7) - 1.0)),
        Some("int16") => (Some(-bits(15)), Some(bits(15) - 1.0)),
        Some("int32") => (Some(-bits(31)), Some(bits(31) - 1.0)),
        Some("int64") => (Some(-bits(63)), Some(bits(63) - 1.0)),
        Some("uint8") => (Some(0.0), Some(bits(8) - 1.0)),
        Some("uint16") => (Some(0.0), Some(bits(16) - 1.0)),
        Some("uint32") => (Some(0.0), Some(bits(32) - 1.0)),
        Some("uint64") => (Some(0.0), Some(bits(64) - 1.0)),
        Some("uint") => (Some(0.0), None),
        _ => (None, None),
    }
}

/// A numeric range: (lower, lower exclusive, upper, upper exclusive).
pub(super) fn numeric_range(schema: &Map<String, Value>) -> (Option<f64>, bool, Option<f64>, bool) {
    let (format_min, format_max) = format_bounds(schema.get("format").and_then(Value::as_str));
    let mut lower = format_min.map(|v| (v, false));
    let mut upper = format_max.map(|v| (v, false));
    let tighter_lower = |current: Option<(f64, bool)>, candidate: (f64, bool)| match current {
        Some((v, e)) if v > candidate.0 || (v == candidate.0 && e) => Some((v, e)),
        _ => Some(candidate),
    };
    let tighter_upper = |current: Option<(f64, bool)>, candidate: (f64, bool)| match current {
        Some((v, e)) if v < candidate.0 || (v == candidate.0 && e) => Some((v, e)),
        _ => Some(candidate),
    };
    if let Some(v) = schema.get("minimum").and_then(Value::as_f64) {
        lower = tighter_lower(lower, (v, false));
    }
    if let Some(v) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
        lower = tighter_lower(lower, (v, true));
    }
    if let Some(v) = schema.get("maximum").and_then(Value::as_f64) {
        upper = tighter_upper(upper, (v, false));
    }
    if let Some(v) = schema.get("exclusiveMaximum").and_then(Value::as_f64) {
        upper = tighter_upper(upper, (v, true));
    }
    (
        lower.map(|l| l.0),
        lower.is_some_and(|l| l.1),
        upper.map(|u| u.0),
        upper.is_some_and(|u| u.1),
    )
}

pub(super) fn u64_of(schema: &Map<String, Value>, key: &str) -> Option<u64> {
    schema.get(key).and_then(Value::as_u64)
}

/// A schema that is only the union of `alternatives`.
pub(super) fn union_only(alternatives: &[Value]) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("anyOf".to_owned(), Value::Array(alternatives.to_vec()));
    map
}

/// The values of `enum` or `const`, if the schema is limited to them.
pub(super) fn finite_values(schema: &Map<String, Value>) -> Option<Vec<Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    schema.get("enum").and_then(Value::as_array).cloned()
}

/// `kind=Email` when an object alternative fixes a property to a constant (serde's tags).
pub(super) fn discriminator(schema: &Map<String, Value>) -> Option<String> {
    let properties = schema.get("properties")?.as_object()?;
    properties.iter().find_map(|(name, property)| {
        property
            .get("const")
            .map(|value| format!("{name}={}", json_text(value)))
    })
}

/// The writer's alternative with the union's sibling keywords added.
pub(super) fn merge(rest: &Map<String, Value>, alternative: &Value) -> Value {
    match alternative {
        Value::Object(map) => {
            let mut merged = map.clone();
            for (key, value) in rest {
                if !ANNOTATIONS.contains(&key.as_str()) {
                    merged.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            Value::Object(merged)
        }
        other => other.clone(),
    }
}
