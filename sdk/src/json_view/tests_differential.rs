//! Generated cases (proptest): the tape against `serde_json` and `jsonschema` on
//! `serde_json::Value`.
//!
//! - [`JsonTape::parse`] accepts exactly the texts `serde_json::from_slice` accepts (JSON
//!   written with every kind of number, escape, whitespace and repeated names, then the
//!   same texts broken by random edits, and random bytes), and holds the `Value` that
//!   `serde_json` reads;
//! - the tape, parsed or [recorded](record), validates exactly as `jsonschema` validates
//!   that `Value`, for generated draft 2020-12 schemas (types, numbers, strings, formats,
//!   arrays, objects, `const`/`enum`, combinators, conditionals, unevaluated members), and
//!   [`CompiledSchema`]'s text methods report exactly what it reports on the `Value`.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use super::tests_strategies::{apply, doc, edit, schema, text_of};
use super::*;
use crate::schema::{CompiledSchema, SerializeError};

/// `node` is `value` as `jsonschema` sees it through the representation's traits: same
/// type and scalar, same members (each name once, found by `get`) and elements.
fn holds<'a>(node: TapeRef<'a>, value: &Value) -> Result<(), TestCaseError> {
    use jsonschema::json::{Array as _, Node as _, Object as _};
    prop_assert_eq!(node.json_type(), jsonschema::types::JsonType::from(value));
    prop_assert_eq!(node.is_null(), value.is_null());
    prop_assert_eq!(node.as_boolean(), value.as_bool());
    prop_assert_eq!(node.as_number(), value.as_number());
    let string = node.as_string();
    prop_assert_eq!(string.as_deref(), value.as_str());
    prop_assert!(node.equals_value(value), "{} does not equal itself", value);
    match value {
        Value::Array(elements) => {
            let array = node
                .as_array()
                .ok_or_else(|| TestCaseError::fail("not an array"))?;
            prop_assert_eq!(array.len(), elements.len());
            prop_assert_eq!(array.elements().count(), elements.len());
            for (element, expected) in array.elements().zip(elements) {
                holds(element, expected)?;
            }
        }
        Value::Object(members) => {
            let object = node
                .as_object()
                .ok_or_else(|| TestCaseError::fail("not an object"))?;
            prop_assert_eq!(object.len(), members.len());
            let names: Vec<&str> = object.members().map(|(name, _)| name).collect();
            prop_assert_eq!(names.len(), members.len(), "{:?} for {}", names, value);
            for (name, member) in object.members() {
                let expected = members
                    .get(name)
                    .ok_or_else(|| TestCaseError::fail(format!("{name} is not in {value}")))?;
                holds(member, expected)?;
                let found = object.get(&name.to_owned());
                prop_assert!(found.is_some());
                if let Some(found) = found {
                    holds(found, expected)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The tape of `text` holds what `serde_json` reads, or both refuse the text.
fn parses_like_serde_json(text: &[u8]) -> Result<(), TestCaseError> {
    let tape = JsonTape::parse(text, Vec::new());
    let value = serde_json::from_slice::<Value>(text);
    match (&tape, &value) {
        (Ok(tape), Ok(value)) => {
            prop_assert_eq!(&tape.root().to_value(), value);
            holds(tape.root(), value)?;
        }
        (Err(TapeError::Syntax { .. } | TapeError::NotUtf8(_)), Err(_)) => {}
        _ => prop_assert!(false, "tape {:?}, serde_json {:?}", tape, value),
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_reads_json_as_serde_json_reads_it(doc in doc(), spacing in any::<u64>()) {
        parses_like_serde_json(text_of(&doc, spacing).as_bytes())?;
    }

    #[test]
    fn parse_refuses_exactly_what_serde_json_refuses(
        doc in doc(),
        spacing in any::<u64>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let mut text = text_of(&doc, spacing).into_bytes();
        for edit in &edits {
            apply(&mut text, edit);
        }
        parses_like_serde_json(&text)?;
    }

    #[test]
    fn parse_takes_any_bytes_as_serde_json_does(
        bytes in proptest::collection::vec(
            prop_oneof![
                4 => select(b"{}[],:\"\\ 01239.eE+-tfnrulas\xc3\xa9".to_vec()),
                1 => any::<u8>(),
            ],
            0..24,
        ),
    ) {
        parses_like_serde_json(&bytes)?;
    }

    #[test]
    fn the_tape_validates_as_jsonschema_validates_values(
        doc in doc(),
        spacing in any::<u64>(),
        schema in schema(),
    ) {
        let text = text_of(&doc, spacing);
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            return Ok(());
        };
        let on_value = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema);
        let on_tape = jsonschema::options_for::<TapeJson>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema);
        let (on_value, on_tape) = match (on_value, on_tape) {
            (Ok(on_value), Ok(on_tape)) => (on_value, on_tape),
            (Err(_), Err(_)) => return Ok(()),
            (on_value, on_tape) => {
                return Err(TestCaseError::fail(format!(
                    "{schema}: value {:?}, tape {:?}",
                    on_value.err(),
                    on_tape.err()
                )));
            }
        };
        let valid = on_value.is_valid(&value);
        let parsed = JsonTape::parse(text.as_bytes(), Vec::new());
        prop_assert!(parsed.is_ok(), "{:?}", parsed);
        if let Ok(parsed) = parsed {
            prop_assert_eq!(on_tape.is_valid(parsed.root()), valid, "parsed {} against {}", text, schema);
        }
        // The value serialised by the recorder (no repeated names, compact).
        let mut out = Vec::new();
        let recorded = record(&value, &mut out, Vec::new());
        prop_assert!(recorded.is_ok(), "{:?}", recorded);
        if let Ok(recorded) = recorded {
            prop_assert_eq!(&recorded.root().to_value(), &value);
            holds(recorded.root(), &value)?;
            prop_assert_eq!(on_tape.is_valid(recorded.root()), valid, "recorded {} against {}", value, schema);
        }
        // The document serialised by the recorder, repeated names included.
        let mut out = Vec::new();
        let recorded = record(&doc, &mut out, Vec::new());
        prop_assert!(recorded.is_ok(), "{:?}", recorded);
        if let Ok(tape) = recorded {
            let read_back: Value = serde_json::from_str(tape.text)
                .map_err(|error| TestCaseError::fail(format!("{error}: {}", tape.text)))?;
            holds(tape.root(), &read_back)?;
            prop_assert_eq!(
                on_tape.is_valid(tape.root()),
                on_value.is_valid(&read_back),
                "recorded {} against {}", tape.text, schema
            );
        }
        // What `CompiledSchema` reports from text is what it reports from the value.
        if let Ok(compiled) = CompiledSchema::compile("t", schema.clone()) {
            let expected = compiled.validate(&value);
            prop_assert_eq!(&compiled.validate_json(text.as_bytes()), &expected);
            let mut bytes = Vec::new();
            let serialized = compiled.serialize_validated(&value, &mut bytes);
            match (serialized, expected) {
                (Ok(()), Ok(())) => {}
                (Err(SerializeError::Invalid(got)), Err(expected)) => prop_assert_eq!(got, expected),
                (got, expected) => prop_assert!(false, "{:?} != {:?}", got, expected),
            }
            prop_assert_eq!(bytes, serde_json::to_vec(&value).unwrap_or_default());
        }
    }
}
