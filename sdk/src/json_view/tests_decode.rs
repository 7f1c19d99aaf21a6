//! Decoding from the tape ([`decode`]) against `serde_json::from_slice`: a decode that
//! succeeds gives what `serde_json` gives; what the tape cannot do exactly fails (and is
//! then left to `serde_json` by [`CompiledSchema::decode_validated`]).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use super::tests_strategies::{doc, text_of};
use super::*;
use crate::schema::{CompiledSchema, DecodeError};

/// Decodes `text` from its tape as `T`: `None` when the text is not JSON.
fn from_tape<T: serde::de::DeserializeOwned>(text: &str) -> Option<Result<T, serde_json::Error>> {
    let tape = JsonTape::parse(text.as_bytes(), Vec::new()).ok()?;
    Some(decode::<T>(&tape))
}

/// Where both succeed they agree; where `serde_json` fails the tape fails too.
fn agrees<T>(text: &str)
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let expected = serde_json::from_str::<T>(text);
    match (from_tape::<T>(text), expected) {
        (Some(Ok(value)), Ok(expected)) => assert_eq!(value, expected, "{text}"),
        (Some(Ok(value)), Err(error)) => {
            panic!("{text}: the tape decoded {value:?}, serde_json refused: {error}")
        }
        (Some(Err(_)) | None, _) => {}
    }
}

/// Decodes on the tape, asserting that it does (no fallback) and agrees.
fn decodes<T>(text: &str) -> T
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let expected: T = serde_json::from_str(text).expect("serde_json decodes it");
    let value = from_tape::<T>(text)
        .expect("JSON")
        .unwrap_or_else(|error| panic!("{text}: the tape did not decode it: {error}"));
    assert_eq!(value, expected);
    value
}

#[derive(Debug, PartialEq, Deserialize)]
enum Shape {
    Dot,
    Circle(f64),
    Rect { w: u32, h: u32 },
    Pair(i8, i8),
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "kind")]
enum Tagged {
    A { n: u8 },
    B,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u64),
    Text(String),
    List(Vec<Loose>),
}

#[derive(Debug, PartialEq, Deserialize)]
struct Order {
    id: String,
    amount: f64,
    count: u32,
    delta: i64,
    paid: bool,
    note: Option<String>,
    #[serde(default)]
    missing: Option<u8>,
    tags: Vec<String>,
    shapes: Vec<Shape>,
    tagged: Tagged,
    loose: Vec<Loose>,
    attributes: BTreeMap<String, Value>,
    pair: (u8, String),
    letter: char,
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    rest: HashMap<String, Value>,
}

const ORDER: &str = r#"{
    "id": "o-1\u00e9\n", "amount": 12.5e-1, "count": 3, "delta": -42, "paid": true,
    "note": null, "tags": ["a", "b\"c"],
    "shapes": ["Dot", {"Circle": 1.5}, {"Rect": {"w": 2, "h": 3}}, {"Pair": [-1, 1]}],
    "tagged": {"kind": "A", "n": 7}, "loose": [1, "x", [2, ["y"]]],
    "attributes": {"z": [1, 2.0, -3, 1e300], "a": {"b": null}},
    "pair": [9, "nine"], "letter": "λ", "type": "order.placed",
    "extra": {"deep": [true]}, "more": 18446744073709551615
}"#;

#[test]
fn a_rich_event_decodes_from_the_tape_as_serde_json_decodes_it() {
    let order: Order = decodes(ORDER);
    assert_eq!(order.shapes.len(), 4);
    assert_eq!(order.rest.len(), 2);
}

#[test]
fn unknown_members_and_unit_variants_decode() {
    #[derive(Debug, PartialEq, Deserialize)]
    struct Small {
        a: u8,
        b: Tagged,
    }
    decodes::<Small>(r#"{"x": [1, {"y": 2}], "a": 1, "b": {"kind": "B"}, "z": "w"}"#);
    decodes::<Shape>(r#""Dot""#);
    decodes::<Vec<Option<u8>>>("[1, null, 3]");
    decodes::<HashMap<String, Vec<f32>>>(r#"{"k": [1, 2.5, -0.0]}"#);
}

#[test]
fn what_the_tape_cannot_do_exactly_is_refused_not_guessed() {
    // A repeated name: serde_json refuses the struct, keeps the last for a map.
    assert!(from_tape::<Value>(r#"{"a": 1, "a": 2}"#).unwrap().is_err());
    // 128-bit integers and keys read as numbers are serde_json's to read (and raw values,
    // when serde_json's `raw_value` feature is on).
    assert!(
        from_tape::<u128>("340282366920938463463374607431768211455")
            .unwrap()
            .is_err()
    );
    assert!(
        from_tape::<HashMap<u32, u8>>(r#"{"1": 2}"#)
            .unwrap()
            .is_err()
    );
    assert!(
        from_tape::<HashMap<bool, u8>>(r#"{"true": 2}"#)
            .unwrap()
            .is_err()
    );
}

#[test]
fn wrong_types_fail_as_serde_json_fails() {
    for text in [
        r#"{"a": "1"}"#,
        r#"[1, 2, 3]"#,
        r#""Circle""#,
        r#"{"Dot": 1, "Circle": 2}"#,
        "-1",
        "1.5",
        "256",
        "null",
    ] {
        agrees::<HashMap<String, u8>>(text);
        agrees::<(u8, u8)>(text);
        agrees::<Shape>(text);
        agrees::<u8>(text);
        agrees::<Option<i8>>(text);
        agrees::<()>(text);
        agrees::<String>(text);
    }
}

#[test]
fn decode_validated_gives_serde_json_errors_and_every_violation() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": { "count": { "type": "integer", "maximum": 10 } },
        "required": ["count"]
    });
    let compiled = CompiledSchema::compile("t", schema).unwrap();
    #[derive(Debug, PartialEq, Deserialize)]
    struct Counted {
        count: u8,
    }
    assert_eq!(
        compiled
            .decode_validated::<Counted>(br#"{"count": 3}"#)
            .unwrap(),
        Counted { count: 3 }
    );
    match compiled.decode_validated::<Counted>(br#"{"count": 11}"#) {
        Err(DecodeError::Invalid(violations)) => {
            assert_eq!(violations.len(), 1);
            assert_eq!(violations[0].path, "$.count");
        }
        other => panic!("{other:?}"),
    }
    match compiled.decode_validated::<Counted>(b"{\"count\": ") {
        Err(DecodeError::Invalid(violations)) => {
            assert!(violations[0].message.starts_with("not JSON"));
        }
        other => panic!("{other:?}"),
    }
    // Valid for the schema, not for the type: serde_json's own error.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Named {
        name: String,
    }
    let expected = serde_json::from_slice::<Named>(br#"{"count": 3}"#).unwrap_err();
    match compiled.decode_validated::<Named>(br#"{"count": 3}"#) {
        Err(DecodeError::Decode(error)) => assert_eq!(error.to_string(), expected.to_string()),
        other => panic!("{other:?}"),
    }
    // A repeated name falls back to serde_json, which keeps the last for a map.
    let map: HashMap<String, u8> = compiled
        .decode_validated(br#"{"count": 1, "count": 2}"#)
        .unwrap();
    assert_eq!(map["count"], 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_document_decodes_as_a_value_as_serde_json_reads_it(doc in doc(), spacing in any::<u64>()) {
        let text = text_of(&doc, spacing);
        let tape = JsonTape::parse(text.as_bytes(), Vec::new());
        let expected = serde_json::from_str::<Value>(&text);
        if let (Ok(tape), Ok(expected)) = (tape, expected) {
            match decode::<Value>(&tape) {
                Ok(value) => prop_assert_eq!(value, expected),
                Err(_) => prop_assert!(tape.shadowed, "refused without a repeated name: {}", text),
            }
        }
    }
}
