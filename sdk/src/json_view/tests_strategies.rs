//! What `tests_differential` generates: JSON documents as written (with their text and
//! their `Serialize` form, repeated names included), edits that break texts, and draft
//! 2020-12 schemas.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::{Map, Value, json};

/// Member names: few, so that objects repeat them.
pub(super) const NAMES: &[&str] = &["a", "b", "n", "é", "a\"b", "", "\u{1}", "1"];

/// A JSON document as written: numbers as their literal text, strings as characters, each
/// with whether to write it as a `\u` escape.
#[derive(Debug, Clone)]
pub(super) enum Doc {
    Null,
    Bool(bool),
    Number(String),
    String(Vec<(char, bool)>),
    Array(Vec<Doc>),
    Object(Vec<(Vec<(char, bool)>, Doc)>),
}

/// Written with `Serialize` as it is rendered as text, repeated names included: numbers
/// as the integer or float they read as (a literal beyond `f64` as a string), names that
/// read as integers mostly as integer map keys (`serde_json` quotes them), else strings.
impl serde::Serialize for Doc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let text =
            |characters: &[(char, bool)]| characters.iter().map(|(c, _)| c).collect::<String>();
        match self {
            Doc::Null => serializer.serialize_unit(),
            Doc::Bool(boolean) => serializer.serialize_bool(*boolean),
            Doc::Number(literal) => {
                if let Ok(unsigned) = literal.parse::<u64>() {
                    serializer.serialize_u64(unsigned)
                } else if let Ok(signed) = literal.parse::<i64>() {
                    serializer.serialize_i64(signed)
                } else {
                    match literal.parse::<f64>() {
                        Ok(float) if float.is_finite() => serializer.serialize_f64(float),
                        _ => serializer.serialize_str(literal),
                    }
                }
            }
            Doc::String(characters) => serializer.serialize_str(&text(characters)),
            Doc::Array(elements) => {
                let mut seq = serializer.serialize_seq(Some(elements.len()))?;
                for element in elements {
                    seq.serialize_element(element)?;
                }
                seq.end()
            }
            Doc::Object(members) => {
                let mut map = serializer.serialize_map(None)?;
                for (characters, value) in members {
                    let name = text(characters);
                    // The first character's escape flag picks the integer key or the string.
                    let as_integer = characters.first().is_some_and(|(_, flag)| !flag);
                    match name.parse::<i64>() {
                        Ok(number) if as_integer => map.serialize_entry(&number, value)?,
                        _ => map.serialize_entry(&name, value)?,
                    }
                }
                map.end()
            }
        }
    }
}

fn number_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        (-6_i64..7).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        select(vec![
            "-0",
            "-0.0",
            "0.5",
            "2.5",
            "1.0",
            "3e0",
            "1E+2",
            "-1.5e-3",
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "0.30000000000000004",
        ])
        .prop_map(str::to_owned),
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
    ]
}

fn characters() -> impl Strategy<Value = Vec<(char, bool)>> {
    let character = prop_oneof![
        4 => proptest::char::range('a', 'e'),
        1 => select(vec!['"', '\\', '/', '\u{0}', '\u{8}', '\u{c}', '\n', '\r', '\t', '\u{1f}']),
        1 => select(vec!['é', '✓', '😀', '\u{2028}', '\u{7f}', '\u{ffff}']),
        1 => any::<char>(),
    ];
    proptest::collection::vec((character, proptest::bool::weighted(0.1)), 0..8)
}

fn name() -> impl Strategy<Value = Vec<(char, bool)>> {
    prop_oneof![
        4 => (select(NAMES), proptest::bool::weighted(0.3))
            .prop_map(|(name, flag)| name.chars().map(|c| (c, flag)).collect()),
        1 => characters(),
    ]
}

pub(super) fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        1 => Just(Doc::Null),
        1 => any::<bool>().prop_map(Doc::Bool),
        3 => number_literal().prop_map(Doc::Number),
        2 => characters().prop_map(Doc::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Doc::Array),
            proptest::collection::vec((name(), inner), 0..5).prop_map(Doc::Object),
        ]
    })
}

/// Writes `doc` as JSON text, with whitespace where `spacing` says (one bit per place).
fn render(doc: &Doc, spacing: &mut u64, out: &mut String) {
    fn space(spacing: &mut u64, out: &mut String) {
        *spacing = spacing.rotate_left(1);
        if *spacing & 1 == 1 {
            out.push_str([" ", "\n", "\t", "\r\n "][(*spacing >> 1) as usize % 4]);
        }
    }
    match doc {
        Doc::Null => out.push_str("null"),
        Doc::Bool(boolean) => out.push_str(if *boolean { "true" } else { "false" }),
        Doc::Number(literal) => out.push_str(literal),
        Doc::String(characters) => render_string(characters, out),
        Doc::Array(elements) => {
            out.push('[');
            for (position, element) in elements.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                space(spacing, out);
                render(element, spacing, out);
                space(spacing, out);
            }
            out.push(']');
        }
        Doc::Object(members) => {
            out.push('{');
            for (position, (name, value)) in members.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                space(spacing, out);
                render_string(name, out);
                space(spacing, out);
                out.push(':');
                space(spacing, out);
                render(value, spacing, out);
            }
            space(spacing, out);
            out.push('}');
        }
    }
}

fn render_string(characters: &[(char, bool)], out: &mut String) {
    out.push('"');
    for &(character, as_unicode_escape) in characters {
        let short = match character {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '/' if as_unicode_escape => Some("\\/"),
            _ => None,
        };
        if as_unicode_escape || (short.is_none() && character < ' ') {
            let mut units = [0; 2];
            for unit in character.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else if let Some(short) = short {
            out.push_str(short);
        } else {
            out.push(character);
        }
    }
    out.push('"');
}

pub(super) fn text_of(doc: &Doc, spacing: u64) -> String {
    let mut spacing = spacing;
    let mut out = String::new();
    render(doc, &mut spacing, &mut out);
    out
}

/// One edit of a text: delete, insert or replace the byte at an index.
#[derive(Debug, Clone)]
pub(super) enum Edit {
    Delete(Index),
    Insert(Index, u8),
    Replace(Index, u8),
}

pub(super) fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        4 => select(b"{}[],:\"\\ 0123456789.eE+-tfnul/".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        any::<Index>().prop_map(Edit::Delete),
        (any::<Index>(), byte.clone()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        (any::<Index>(), byte).prop_map(|(at, byte)| Edit::Replace(at, byte)),
    ]
}

pub(super) fn apply(text: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Delete(at) if !text.is_empty() => {
            text.remove(at.index(text.len()));
        }
        Edit::Insert(at, byte) => text.insert(at.index(text.len() + 1), *byte),
        Edit::Replace(at, byte) if !text.is_empty() => {
            let at = at.index(text.len());
            text[at] = *byte;
        }
        _ => {}
    }
}

fn small_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-6_i64..7).prop_map(Value::from),
        select(vec![0.5, 1.0, 2.5, -0.0]).prop_map(Value::from),
        select(NAMES).prop_map(Value::from),
        Just(json!([1, "a"])),
        Just(json!({"a": 1})),
    ]
}

pub(super) fn schema() -> impl Strategy<Value = Value> {
    let types = vec![
        "null", "boolean", "integer", "number", "string", "array", "object",
    ];
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        select(types.clone()).prop_map(|t| json!({"type": t})),
        proptest::sample::subsequence(types, 1..3).prop_map(|t| json!({"type": t})),
        (-5_i64..6).prop_map(|n| json!({"minimum": n})),
        (-5_i64..6).prop_map(|n| json!({"maximum": n})),
        (-5_i64..6).prop_map(|n| json!({"exclusiveMinimum": n})),
        select(vec![json!(0.5), json!(2), json!(3), json!(0.001)])
            .prop_map(|m| json!({"multipleOf": m})),
        (0_u64..4).prop_map(|n| json!({"minLength": n})),
        (0_u64..4).prop_map(|n| json!({"maxLength": n})),
        select(vec!["^[a-e]*$", "é", "^$", "\\d", "^a"]).prop_map(|p| json!({"pattern": p})),
        select(vec!["uuid", "date-time", "email", "ipv4", "uri"])
            .prop_map(|f| json!({"format": f})),
        (0_u64..3).prop_map(|n| json!({"minItems": n})),
        (0_u64..3).prop_map(|n| json!({"maxItems": n})),
        Just(json!({"uniqueItems": true})),
        (0_u64..3).prop_map(|n| json!({"minProperties": n})),
        (0_u64..3).prop_map(|n| json!({"maxProperties": n})),
        proptest::sample::subsequence(NAMES, 0..3).prop_map(|names| json!({"required": names})),
        small_value().prop_map(|v| json!({"const": v})),
        proptest::collection::vec(small_value(), 1..4).prop_map(|values| {
            let mut unique: Vec<Value> = Vec::new();
            for value in values {
                if !unique.contains(&value) {
                    unique.push(value);
                }
            }
            json!({"enum": unique})
        }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let members = proptest::collection::btree_map(select(NAMES), inner.clone(), 0..3);
        prop_oneof![
            members
                .clone()
                .prop_map(|members| json!({"properties": members})),
            inner
                .clone()
                .prop_map(|s| json!({"additionalProperties": s})),
            inner.clone().prop_map(|s| json!({"items": s})),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|s| json!({"prefixItems": s})),
            inner.clone().prop_map(|s| json!({"contains": s})),
            inner.clone().prop_map(|s| json!({"propertyNames": s})),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|s| json!({"allOf": s})),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|s| json!({"anyOf": s})),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|s| json!({"oneOf": s})),
            inner.clone().prop_map(|s| json!({"not": s})),
            (select(vec!["^a", "é$", "^$"]), inner.clone())
                .prop_map(|(p, s)| json!({"patternProperties": {p: s}})),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(i, t, e)| json!({"if": i, "then": t, "else": e})),
            members
                .prop_map(|members| json!({"properties": members, "unevaluatedProperties": false})),
            // Several keywords in one schema object.
            proptest::collection::vec(inner, 2..4).prop_map(|schemas| {
                let mut merged = Map::new();
                for schema in schemas {
                    if let Value::Object(keywords) = schema {
                        merged.extend(keywords);
                    }
                }
                Value::Object(merged)
            }),
        ]
    })
}
