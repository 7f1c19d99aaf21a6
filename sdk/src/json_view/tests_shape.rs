//! [`Shape`] against `jsonschema`: where a shape answers, it answers as `jsonschema` does.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

use super::{JsonTape, Shape, TapeJson};

fn tape_validator(schema: &Value) -> jsonschema::Validator<TapeJson> {
    jsonschema::options_for::<TapeJson>()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .expect("a schema jsonschema compiles")
}

/// The shape's answer for `document`, and `jsonschema`'s.
fn answers(shape: &Shape, schema: &Value, document: &Value) -> (Option<bool>, bool) {
    let text = serde_json::to_vec(document).expect("JSON");
    let tape = JsonTape::parse(&text, Vec::new()).expect("a tape");
    (
        shape.check(tape.root()),
        tape_validator(schema).is_valid(tape.root()),
    )
}

#[allow(dead_code)]
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Order {
    order_id: uuid::Uuid,
    total_cents: u64,
    quantity: u32,
    delta: i16,
    note: Option<String>,
    items: Vec<Item>,
    gift: Option<Item>,
    status: Status,
    payment: Payment,
    tags: std::collections::BTreeMap<String, u8>,
}

#[allow(dead_code)]
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Item {
    sku: String,
    quantity: u32,
}

#[allow(dead_code)]
#[derive(serde::Deserialize, schemars::JsonSchema)]
enum Status {
    Placed,
    Paid,
}

#[allow(dead_code)]
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind")]
enum Payment {
    Card { last4: String },
    Invoice,
}

fn order() -> Value {
    json!({
        "order_id": "0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
        "total_cents": 129900,
        "quantity": 2,
        "delta": -3,
        "note": null,
        "items": [{"sku": "A-1", "quantity": 1}, {"sku": "B-2", "quantity": 4}],
        "gift": {"sku": "G", "quantity": 1},
        "status": "Paid",
        "payment": {"kind": "Card", "last4": "4242"},
        "tags": {"vip": 1}
    })
}

#[test]
fn a_generated_schema_has_a_shape_that_answers_as_jsonschema_does() {
    let schema = crate::schema::schema_for::<Order>();
    let shape = Shape::compile(&schema).expect("schemars' output has a shape");
    let edits: Vec<(&str, Value)> = vec![
        ("", Value::Null),
        ("/order_id", json!("0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6")),
        ("/order_id", json!("0193A3B4-5C6D-7E8F-9A0B-1C2D3E4F5A6B")),
        ("/order_id", json!("0193a3b45c6d7e8f9a0b1c2d3e4f5a6b")),
        ("/total_cents", json!(-1)),
        ("/total_cents", json!("1")),
        ("/quantity", json!(4_294_967_296_u64)),
        ("/delta", json!(-32769)),
        ("/delta", json!(32767)),
        ("/note", json!("at the door")),
        ("/note", json!(5)),
        ("/items/1/quantity", json!(null)),
        ("/items/0/colour", json!("red")),
        ("/gift", json!(null)),
        ("/gift", json!({"sku": "G"})),
        ("/status", json!("Shipped")),
        ("/status", json!(1)),
        ("/payment", json!({"kind": "Invoice"})),
        ("/payment", json!({"kind": "Cash"})),
        ("/payment", json!({"last4": "4242"})),
        ("/tags/vip", json!(256)),
        ("/tags/new", json!(0)),
        ("/extra", json!({"anything": [1, 2]})),
    ];
    for (pointer, replacement) in edits {
        let mut document = order();
        if pointer.is_empty() {
            document = replacement;
        } else {
            let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
            match document.pointer_mut(parent) {
                Some(Value::Object(map)) => {
                    map.insert(name.to_owned(), replacement);
                }
                Some(Value::Array(list)) => {
                    list[name.parse::<usize>().expect("an index")] = replacement;
                }
                _ => panic!("{pointer}"),
            }
        }
        let (shape_says, jsonschema_says) = answers(&shape, &schema, &document);
        assert_eq!(
            shape_says,
            Some(jsonschema_says),
            "{pointer}: {document} against {schema}"
        );
    }
}

#[test]
fn a_float_against_an_integer_is_left_to_jsonschema() {
    let schema = json!({"type": "integer"});
    let shape = Shape::compile(&schema).expect("a shape");
    assert_eq!(answers(&shape, &schema, &json!(2.0)), (None, true));
    assert_eq!(answers(&shape, &schema, &json!(2.5)), (None, false));
    assert_eq!(answers(&shape, &schema, &json!(2)), (Some(true), true));
    let bounded = json!({"minimum": 3});
    let shape = Shape::compile(&bounded).expect("a shape");
    assert_eq!(answers(&shape, &bounded, &json!(2.5)), (None, false));
    assert_eq!(answers(&shape, &bounded, &json!("2")), (Some(true), true));
    // A `false` elsewhere settles it all the same.
    let both = json!({"type": "integer", "maximum": 1, "enum": ["a"]});
    let shape = Shape::compile(&both).expect("a shape");
    assert_eq!(answers(&shape, &both, &json!(2.0)), (Some(false), false));
}

#[test]
fn schemas_beyond_the_shapes_keywords_have_none() {
    for schema in [
        json!({"type": "string", "pattern": "^a"}),
        json!({"type": "string", "format": "date-time"}),
        json!({"type": "string", "minLength": 1}),
        json!({"minimum": 1.5}),
        json!({"enum": ["a", 1]}),
        json!({"const": 1}),
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}),
        json!({"$id": "https://example.com/order", "type": "object"}),
        json!({"properties": {"a": {"$anchor": "a"}}}),
        json!({"$ref": "other.json#/$defs/a"}),
        json!({"$defs": {"a/b": true}, "$ref": "#/$defs/a~1b"}),
        json!({"$ref": "#/$defs/missing"}),
        json!({"items": [{"type": "string"}]}),
        json!({"properties": {"a": {"not": {"type": "string"}}}}),
        json!({"anyOf": []}),
    ] {
        assert!(Shape::compile(&schema).is_none(), "{schema}");
    }
    // Formats `jsonschema` does not know, and annotations, are no obstacle.
    assert!(
        Shape::compile(&json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "t", "description": "d", "type": "integer", "format": "uint32",
            "minimum": 0, "default": 1, "examples": [1]
        }))
        .is_some()
    );
}

#[test]
fn a_reference_loop_is_left_to_jsonschema() {
    let schema = json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
    let shape = Shape::compile(&schema).expect("a shape");
    let text = br#"{"x": 1}"#;
    let tape = JsonTape::parse(text, Vec::new()).expect("a tape");
    assert_eq!(shape.check(tape.root()), None);
}

/// Names and strings the generated schemas and documents share, so that they meet.
const NAMES: &[&str] = &["a", "b", "kind", "é"];
const STRINGS: &[&str] = &[
    "a",
    "b",
    "Card",
    "",
    "0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b",
    "0193A3B4-5C6D-7E8F-9A0B-1C2D3E4F5A6B",
    "0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6g",
    "0193a3b4_5c6d-7e8f-9a0b-1c2d3e4f5a6b",
    "0193a3b45c6d7e8f9a0b1c2d3e4f5a6b",
    "{0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b}",
    "0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5aé",
];

fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        select(vec![
            json!(0),
            json!(-1),
            json!(3),
            json!(255),
            json!(256),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(2.0),
            json!(-0.0),
            json!(1.5),
        ]),
        select(STRINGS).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(select(NAMES).prop_map(str::to_owned), inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Schemas made only of the shape's keywords, `$ref`s to `$defs` named `d0` and `d1`.
fn subschema() -> impl Strategy<Value = Value> {
    let types = vec![
        "null", "boolean", "integer", "number", "string", "array", "object",
    ];
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        select(types.clone()).prop_map(|t| json!({"type": t})),
        proptest::sample::subsequence(types, 1..3).prop_map(|t| json!({"type": t})),
        select(vec![-1_i64, 0, 3, 255]).prop_map(|n| json!({"minimum": n})),
        select(vec![-1_i64, 0, 3, 255]).prop_map(|n| json!({"maximum": n})),
        Just(json!({"minimum": 0, "maximum": u64::MAX})),
        select(vec!["uuid", "uint32", "int64", "double"]).prop_map(|f| json!({"format": f})),
        proptest::sample::subsequence(NAMES, 0..3).prop_map(|names| json!({"required": names})),
        select(STRINGS).prop_map(|s| json!({"const": s})),
        proptest::sample::subsequence(STRINGS, 0..3).prop_map(|s| json!({"enum": s})),
        select(vec!["d0", "d1"]).prop_map(|d| json!({"$ref": format!("#/$defs/{d}")})),
        Just(json!({"title": "t", "description": "d"})),
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
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|s| json!({"anyOf": s})),
            proptest::collection::vec(inner.clone(), 1..3).prop_map(|s| json!({"oneOf": s})),
            // Several keywords in one schema object.
            proptest::collection::vec(inner, 2..4).prop_map(|schemas| {
                let mut merged = serde_json::Map::new();
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

fn schema() -> impl Strategy<Value = Value> {
    (subschema(), subschema(), subschema()).prop_map(|(root, d0, d1)| match root {
        Value::Object(mut root) => {
            root.insert("$defs".to_owned(), json!({"d0": d0, "d1": d1}));
            Value::Object(root)
        }
        // A boolean root cannot hold `$defs`: it is `d0`, referred to.
        boolean => json!({"$ref": "#/$defs/d0", "$defs": {"d0": boolean, "d1": d1}}),
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn where_a_shape_answers_it_answers_as_jsonschema_does(
        schema in schema(),
        documents in proptest::collection::vec(document(), 1..6),
    ) {
        let shape = Shape::compile(&schema);
        prop_assert!(shape.is_some(), "no shape for {}", schema);
        let Some(shape) = shape else { return Ok(()) };
        let validator = tape_validator(&schema);
        let on_values = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema)
            .expect("a schema jsonschema compiles");
        for document in documents {
            let text = serde_json::to_vec(&document).expect("JSON");
            let tape = JsonTape::parse(&text, Vec::new()).expect("a tape");
            let expected = on_values.is_valid(&document);
            prop_assert_eq!(validator.is_valid(tape.root()), expected);
            if let Some(answer) = shape.check(tape.root()) {
                prop_assert_eq!(answer, expected, "{} against {}", document, schema);
            }
        }
    }
}
