//! Examples: what the tape reads, records and validates, next to `serde_json`. The
//! generated cases are in `tests_differential`.

use serde::Serialize;
use serde_json::{Value, json};

use super::*;

/// Parses `text` both ways: the tape must hold what `serde_json` reads, or both refuse it.
fn same_as_serde_json(text: &str) {
    let tape = JsonTape::parse(text.as_bytes(), Vec::new());
    let expected = serde_json::from_str::<Value>(text);
    match (&tape, &expected) {
        (Ok(tape), Ok(expected)) => assert_eq!(&tape.root().to_value(), expected, "{text}"),
        (Err(_), Err(_)) => {}
        _ => panic!("{text}: tape {tape:?}, serde_json {expected:?}"),
    }
}

fn parsed(text: &str) -> Value {
    JsonTape::parse(text.as_bytes(), Vec::new())
        .unwrap()
        .root()
        .to_value()
}

#[test]
fn reads_what_serde_json_reads() {
    for text in [
        r#"{"a":"plain","b\n":"esc\"aped \u00e9 \ud83d\ude00 \/","c":[1,-2,2.5,true,null]}"#,
        r#" { "a" : [ ] , "b" : { } , "c" : [ [ 1 ] , { "d" : "" } ] } "#,
        "0",
        "-0",
        "-0.0",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "1e2",
        "1E+2",
        "-1.5e-3",
        "123.456",
        "0.1",
        "2.2250738585072011e-308",
        "1.7976931348623157e308",
        "123456789012345678901234567890",
        "\"é ✓\"",
        "\"\\u0000\"",
        "true",
        "null",
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"b":2,"a":3,"a":{"x":[1]}}"#,
        r#"[{"k":1,"k":2},{"k":3}]"#,
        r#"{"\u0061":1,"a":2}"#,
        "\t\n\r [1]\n",
    ] {
        same_as_serde_json(text);
    }
    let number = parsed("-0");
    assert!(
        number
            .as_f64()
            .is_some_and(|v| v == 0.0 && v.is_sign_negative())
    );
    assert!(number.as_i64().is_none());
    assert_eq!(parsed("7").as_u64(), Some(7));
    assert_eq!(parsed("-7").as_i64(), Some(-7));
    assert_eq!(parsed(r#"{"a":1,"a":2}"#), json!({"a": 2}));
}

#[test]
fn refuses_what_is_not_json() {
    for text in [
        "",
        " ",
        "{",
        "[1,]",
        "[1 2]",
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        r#"{a:1}"#,
        r#"{1:1}"#,
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "+1",
        "tru",
        "nul",
        "\"unterminated",
        "\"tab\there\"",
        r#""\x""#,
        r#""\u12""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        "[] []",
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "[1]x",
    ] {
        let tape = JsonTape::parse(text.as_bytes(), Vec::new());
        assert!(
            matches!(tape, Err(TapeError::Syntax { .. })),
            "{text:?}: {tape:?}"
        );
        assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
    }
    assert!(matches!(
        JsonTape::parse(b"\"\xff\"", Vec::new()),
        Err(TapeError::NotUtf8(_))
    ));
    let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    assert!(JsonTape::parse(deep(127).as_bytes(), Vec::new()).is_ok());
    assert!(JsonTape::parse(deep(128).as_bytes(), Vec::new()).is_err());
    assert!(serde_json::from_str::<Value>(&deep(127)).is_ok());
    assert!(serde_json::from_str::<Value>(&deep(128)).is_err());
}

#[test]
fn reuses_node_storage() {
    let nodes = Vec::with_capacity(64);
    let tape = JsonTape::parse(br#"{"a":[1,2]}"#, nodes).unwrap();
    let nodes = tape.into_nodes();
    assert!(nodes.capacity() >= 64);
    let tape = JsonTape::parse(b"[true]", nodes).unwrap();
    assert_eq!(tape.root().to_value(), json!([true]));
}

/// Serialises `value` with the recorder and checks the bytes and the tape against
/// `serde_json`; false when the recorder does not follow the value.
fn records_like_serde_json<T: Serialize>(value: &T) -> bool {
    let mut out = b"prefix".to_vec();
    let recorded = record(value, &mut out, Vec::new()).map(|tape| tape.root().to_value());
    assert_eq!(&out[6..], serde_json::to_vec(value).unwrap().as_slice());
    let parsed: Value = serde_json::from_slice(&out[6..]).unwrap();
    match recorded {
        Ok(recorded) => {
            assert_eq!(recorded, parsed);
            true
        }
        Err(error) => {
            assert!(
                matches!(error, RecordError::NotFollowed(TapeError::NotFollowed(_))),
                "{error}"
            );
            false
        }
    }
}

#[test]
fn recording_writes_and_notes_what_serde_json_writes() {
    use std::collections::BTreeMap;
    #[derive(Serialize)]
    struct Event<'a> {
        id: uuid::Uuid,
        text: &'a str,
        count: u32,
        delta: i64,
        ratio: f64,
        small: f32,
        nothing: Option<u8>,
        nan: f64,
        tags: Vec<&'a str>,
        nested: BTreeMap<i32, Vec<bool>>,
        flags: BTreeMap<bool, ()>,
        bytes: &'a serde_bytes_like::Bytes,
        unit: (),
        kind: Kind,
    }
    #[derive(Serialize)]
    enum Kind {
        Plain,
        #[allow(dead_code)]
        Tuple(u8, String),
    }
    mod serde_bytes_like {
        /// Serialises as `serialize_bytes` (an array of numbers in JSON).
        pub(super) struct Bytes(pub(super) Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
    let event = Event {
        id: uuid::Uuid::from_u128(7),
        text: "quote \" back\\slash \u{1} tab\t é ✓ 😀",
        count: 3,
        delta: -4,
        ratio: 0.1,
        small: 0.1,
        nothing: None,
        nan: f64::NAN,
        tags: vec!["a", "", "c\n"],
        nested: BTreeMap::from([(-1, vec![true]), (2, vec![])]),
        flags: BTreeMap::from([(true, ())]),
        bytes: &serde_bytes_like::Bytes(vec![0, 255]),
        unit: (),
        kind: Kind::Plain,
    };
    assert!(records_like_serde_json(&event));
    assert!(records_like_serde_json(&Kind::Tuple(1, "x".into())));
    assert!(records_like_serde_json(
        &json!([1, -1, 1.5, "s", null, {"k": {}}])
    ));
    assert!(records_like_serde_json(&u128::from(u64::MAX)));
    assert!(records_like_serde_json(&-1_i128));
    assert!(records_like_serde_json(&"only a string"));
    // What the tape does not follow is left to the parser.
    assert!(!records_like_serde_json(&(u128::from(u64::MAX) + 1)));
    // As deep as `serde_json` reads (127 containers), and one deeper.
    let mut deep = json!(1);
    for _ in 0..127 {
        deep = json!([deep]);
    }
    assert!(records_like_serde_json(&deep));
    let mut out = Vec::new();
    assert!(matches!(
        record(&json!([deep]), &mut out, Vec::new()),
        Err(RecordError::NotFollowed(TapeError::NotFollowed(_)))
    ));
}

/// A `Serialize` that writes the same name twice, as `#[serde(flatten)]` can.
struct Repeated;

impl Serialize for Repeated {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("n", &100)?;
        map.serialize_entry("other", "x")?;
        map.serialize_entry("n", &1)?;
        map.end()
    }
}

#[test]
fn a_repeated_name_is_seen_once_with_its_last_value() {
    let mut out = Vec::new();
    let tape = record(&Repeated, &mut out, Vec::new()).unwrap();
    assert_eq!(tape.root().to_value(), json!({"n": 1, "other": "x"}));
    let schema = json!({
        "properties": {"n": {"maximum": 10}},
        "minProperties": 2,
        "maxProperties": 2
    });
    let on_tape = jsonschema::options_for::<TapeJson>()
        .build(&schema)
        .unwrap();
    assert!(on_tape.is_valid(tape.root()));
    drop(tape);
    assert_eq!(out, br#"{"n":100,"other":"x","n":1}"#);
    let reversed = JsonTape::parse(br#"{"n":1,"other":"x","n":100}"#, Vec::new()).unwrap();
    assert!(!on_tape.is_valid(reversed.root()));
    let many: String = (0..40)
        .map(|i| format!("\"k{}\":{i}", i % 35))
        .collect::<Vec<_>>()
        .join(",");
    same_as_serde_json(&format!("{{{many}}}"));
}

/// jsonschema's own checks of a custom representation.
#[test]
fn meets_the_contract_of_a_jsonschema_representation() {
    let text = serde_json::to_vec(&jsonschema::json::conformance::document()).unwrap();
    let parsed = JsonTape::parse(&text, Vec::new()).unwrap();
    jsonschema::json::conformance::assert_conformance::<TapeJson>(&parsed.root());
    let mut out = Vec::new();
    let document = jsonschema::json::conformance::document();
    let recorded = record(&document, &mut out, Vec::new()).unwrap();
    jsonschema::json::conformance::assert_conformance::<TapeJson>(&recorded.root());
}

#[test]
fn validates_like_serde_json_values() {
    let schema = json!({
        "type": "object",
        "required": ["id", "plan", "n"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "plan": {"enum": ["free", "pro", null]},
            "n": {"type": "integer", "minimum": 1, "maximum": 10},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "uniqueItems": true},
            "ratio": {"type": "number", "multipleOf": 0.5},
            "extra": {"const": {"k": [1, 2.0]}},
            "names": {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}
        },
        "additionalProperties": false
    });
    let on_tape = jsonschema::options_for::<TapeJson>()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let on_value = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let id = r#""id":"0193f0e2-7c2e-7a1c-9f0e-2b3c4d5e6f70""#;
    for (text, valid) in [
        (format!(r#"{{{id},"plan":"pro","n":3}}"#), true),
        (
            format!(r#"{{{id},"plan":null,"n":10,"tags":["a","bc"]}}"#),
            true,
        ),
        (format!(r#"{{{id},"plan":"pro","n":3,"ratio":1.5}}"#), true),
        (
            format!(r#"{{{id},"plan":"pro","n":3,"extra":{{"k":[1.0,2]}}}}"#),
            true,
        ),
        (
            format!(r#"{{{id},"plan":"pro","n":3,"names":{{"ab":1}}}}"#),
            true,
        ),
        (format!(r#"{{{id},"plan":"pro","n":1,"n":3}}"#), true),
        (format!(r#"{{{id},"plan":"pro","n":0,"n":3}}"#), true),
        (format!(r#"{{{id},"plan":"gold","n":3}}"#), false),
        (format!(r#"{{{id},"plan":"pro","n":0}}"#), false),
        (format!(r#"{{{id},"plan":"pro","n":3,"n":0}}"#), false),
        (format!(r#"{{{id},"plan":"pro","n":2.5}}"#), false),
        (format!(r#"{{{id},"plan":"pro","n":3,"ratio":1.2}}"#), false),
        (
            format!(r#"{{{id},"plan":"pro","n":3,"tags":["abcd"]}}"#),
            false,
        ),
        (
            format!(r#"{{{id},"plan":"pro","n":3,"tags":["a","a"]}}"#),
            false,
        ),
        (format!(r#"{{{id},"plan":"pro","n":3,"x":1}}"#), false),
        (
            format!(r#"{{{id},"plan":"pro","n":3,"extra":{{"k":[1]}}}}"#),
            false,
        ),
        (
            format!(r#"{{{id},"plan":"pro","n":3,"names":{{"A":1}}}}"#),
            false,
        ),
        (
            r#"{"id":"not-a-uuid","plan":"pro","n":3}"#.to_owned(),
            false,
        ),
        (r#"{"plan":"pro","n":3}"#.to_owned(), false),
        ("[]".to_owned(), false),
    ] {
        let tape = JsonTape::parse(text.as_bytes(), Vec::new()).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(on_tape.is_valid(tape.root()), valid, "{text}");
        assert_eq!(on_value.is_valid(&value), valid, "{text}");
    }
}
