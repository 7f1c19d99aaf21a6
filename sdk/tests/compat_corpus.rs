//! The compatibility corpus: schema pairs written for Herald, each with the expected verdict
//! under every mode. `backward` = the new schema reads old data; `forward` = the old schema
//! reads new data; FULL = both; a transitive mode over one older version equals its plain
//! form; NONE accepts everything.
#![allow(clippy::unwrap_used, missing_docs, dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use herald::compat::{CompatibilityMode, Verdict, check, reader_accepts};
use herald::schema::schema_for;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    old: Value,
    new: Value,
    backward: bool,
    forward: bool,
}

/// A pair of Rust types `old::T` and `new::T`.
macro_rules! types {
    ($name:ident, backward: $b:expr, forward: $f:expr, old { $($old:tt)* } new { $($new:tt)* }) => {
        mod $name {
            pub mod old {
                #[allow(unused_imports)]
                use super::super::*;
                $($old)*
            }
            pub mod new {
                #[allow(unused_imports)]
                use super::super::*;
                $($new)*
            }
        }
    };
}

macro_rules! type_case {
    ($name:ident, $b:expr, $f:expr) => {
        Case {
            name: stringify!($name),
            old: schema_for::<$name::old::T>(),
            new: schema_for::<$name::new::T>(),
            backward: $b,
            forward: $f,
        }
    };
}

// 1-10: fields on open and closed objects.
types!(add_optional_open, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub b: Option<String> } });
types!(add_optional_closed, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32, pub b: Option<String> } });
types!(add_required_open, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub plan: String } });
types!(add_required_closed, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32, pub plan: String } });
types!(add_defaulted_open, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, #[serde(default)] pub retries: u32 } });
types!(remove_optional_open, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub b: Option<String> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } });
types!(remove_required_open, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub b: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } });
types!(remove_optional_closed, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32, pub b: Option<String> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32 } });
types!(rename_field, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub user: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub user_id: String } });
types!(identical, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub b: Vec<String> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub b: Vec<String> } });

// 11-20: open/closed switches, optional vs required, nullability.
types!(becomes_closed, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32 } });
types!(becomes_open, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(deny_unknown_fields)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } });
types!(optional_becomes_required, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: Option<String> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: String } });
types!(required_becomes_optional, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: Option<String> } });
types!(required_gets_default, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[serde(default)] pub a: u32 } });
types!(option_of_u32_to_u64, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: Option<u32> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: Option<u64> } });
types!(nested_add_required, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub inner: Inner }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Inner { pub x: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub inner: Inner }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Inner { pub x: u32, pub y: u32 } });
types!(nested_add_optional, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub inner: Inner }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Inner { pub x: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub inner: Inner }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Inner { pub x: u32, pub y: Option<u32> } });
types!(new_optional_nested_object, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub a: u32, pub address: Option<Address> }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Address { pub city: String } });
types!(nested_type_renamed_same_shape, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub inner: Inner }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Inner { pub x: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub inner: Payload }
          #[derive(Serialize, Deserialize, JsonSchema)] pub struct Payload { pub x: u32 } });

// 21-30: numbers.
types!(narrow_u32_to_u8, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u8 } });
types!(widen_u8_to_u32, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u8 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u32 } });
types!(widen_i32_to_i64, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: i32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: i64 } });
types!(u64_to_i64, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u64 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: i64 } });
types!(u32_to_f64, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: f64 } });
types!(f64_to_u32, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: f64 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u32 } });
types!(range_narrowed, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(range(min = 1, max = 100))] pub n: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(range(min = 1, max = 10))] pub n: u32 } });
types!(range_widened, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(range(min = 5, max = 10))] pub n: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(range(min = 1, max = 10))] pub n: u32 } });
types!(range_added, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub n: u32 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(range(max = 1000))] pub n: u32 } });
types!(number_to_string, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub id: u64 } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub id: String } });

// 31-38: strings.
types!(length_narrowed, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(length(max = 10))] pub s: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(length(max = 5))] pub s: String } });
types!(length_widened, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(length(min = 2, max = 10))] pub s: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(length(min = 1, max = 20))] pub s: String } });
types!(pattern_added, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub s: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(regex(pattern = r"^[a-z]+$"))] pub s: String } });
types!(pattern_changed, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(regex(pattern = r"^[a-z]+$"))] pub s: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(regex(pattern = r"^[a-z0-9]+$"))] pub s: String } });
types!(pattern_removed, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(regex(pattern = r"^[a-z]+$"))] pub s: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub s: String } });
types!(email_format_added, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub email: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { #[schemars(email)] pub email: String } });
types!(uuid_to_string, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub id: uuid::Uuid } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub id: String } });
types!(bool_to_string, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub flag: bool } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub flag: String } });

// 39-48: enums and variants.
types!(enum_variant_added, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] #[serde(rename_all = "snake_case")] pub enum Plan { Free, Pro } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] #[serde(rename_all = "snake_case")] pub enum Plan { Free, Pro, Team } });
types!(enum_variant_removed, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] #[serde(rename_all = "snake_case")] pub enum Plan { Free, Pro, Team } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] #[serde(rename_all = "snake_case")] pub enum Plan { Free, Pro } });
types!(enum_variant_renamed, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] pub enum Plan { Free, Pro } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] #[serde(rename_all = "snake_case")] pub enum Plan { Free, Pro } });
types!(tagged_variant_added, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String }, Sso { provider: String } } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String }, Sso { provider: String }, Phone { number: String } } });
types!(tagged_variant_removed, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String }, Sso { provider: String } } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String } } });
types!(tagged_variant_gets_optional_field, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String }, Sso { provider: String } } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String, verified: Option<bool> }, Sso { provider: String } } });
types!(tagged_variant_gets_required_field, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String }, Sso { provider: String } } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "kind")] pub enum T { Email { address: String, verified: bool }, Sso { provider: String } } });
types!(externally_tagged_variant_added, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub enum T { Created { id: u32 }, Deleted { id: u32 } } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub enum T { Created { id: u32 }, Deleted { id: u32 }, Archived { id: u32 } } });
types!(adjacently_tagged_unchanged, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "t", content = "c")] pub enum T { A(u32), B(String) } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] #[serde(tag = "t", content = "c")] pub enum T { A(u32), B(String) } });
types!(field_becomes_enum, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: String } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub plan: Plan }
          #[derive(Serialize, Deserialize, JsonSchema)] #[serde(rename_all = "snake_case")] pub enum Plan { Free, Pro } });

// 49-56: arrays, maps, tuples, recursion.
types!(vec_item_type_changed, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub tags: Vec<String> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub tags: Vec<u32> } });
types!(vec_item_widened, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub ids: Vec<u16> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub ids: Vec<u32> } });
types!(vec_to_set, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub tags: Vec<String> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub tags: BTreeSet<String> } });
types!(map_value_widened, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub counts: HashMap<String, u32> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub counts: BTreeMap<String, u64> } });
types!(tuple_widened, backward: true, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub pair: (u8, String) } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub pair: (u16, String) } });
types!(tuple_arity_changed, backward: false, forward: false,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub pair: (u8, String) } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub pair: (u8, String, bool) } });
types!(recursive_unchanged, backward: true, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub name: String, pub children: Vec<T> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub name: String, pub children: Vec<T> } });
types!(recursive_add_required, backward: false, forward: true,
    old { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub name: String, pub children: Vec<T> } }
    new { #[derive(Serialize, Deserialize, JsonSchema)] pub struct T { pub name: String, pub size: u64, pub children: Vec<T> } });

fn raw_cases() -> Vec<Case> {
    let case = |name, old, new, backward, forward| Case {
        name,
        old,
        new,
        backward,
        forward,
    };
    vec![
        case(
            "string_to_nullable",
            json!({"type": "string"}),
            json!({"type": ["string", "null"]}),
            true,
            false,
        ),
        case(
            "const_to_enum",
            json!({"const": "a"}),
            json!({"enum": ["a", "b"]}),
            true,
            false,
        ),
        case(
            "minimum_becomes_exclusive",
            json!({"type": "number", "minimum": 0}),
            json!({"type": "number", "exclusiveMinimum": 0}),
            false,
            true,
        ),
        case(
            "maximum_becomes_exclusive",
            json!({"type": "number", "maximum": 10}),
            json!({"type": "number", "exclusiveMaximum": 10}),
            false,
            true,
        ),
        case(
            "multiple_of_narrowed",
            json!({"type": "integer", "multipleOf": 2}),
            json!({"type": "integer", "multipleOf": 4}),
            false,
            true,
        ),
        case(
            "min_items_relaxed",
            json!({"type": "array", "items": {"type": "string"}, "minItems": 1}),
            json!({"type": "array", "items": {"type": "string"}}),
            true,
            false,
        ),
        case(
            "any_to_string",
            json!({}),
            json!({"type": "string"}),
            false,
            true,
        ),
        case(
            "map_values_widened",
            json!({"type": "object", "additionalProperties": {"type": "integer"}}),
            json!({"type": "object", "additionalProperties": {"type": "number"}}),
            true,
            false,
        ),
        case(
            "all_of_identical",
            json!({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"required": ["a"]}]}),
            json!({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"required": ["a"]}]}),
            true,
            true,
        ),
        case(
            "reader_uses_not",
            json!({"type": "string"}),
            json!({"type": "string", "not": {"const": "x"}}),
            false,
            true,
        ),
        case(
            "union_narrowed",
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
            json!({"anyOf": [{"type": "string"}]}),
            false,
            true,
        ),
        case(
            "one_of_reordered",
            json!({"oneOf": [{"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]}, {"type": "object", "properties": {"k": {"const": "b"}}, "required": ["k"]}]}),
            json!({"oneOf": [{"type": "object", "properties": {"k": {"const": "b"}}, "required": ["k"]}, {"type": "object", "properties": {"k": {"const": "a"}}, "required": ["k"]}]}),
            true,
            true,
        ),
        case(
            "ref_vs_inline",
            json!({"type": "object", "properties": {"p": {"$ref": "#/$defs/P"}}, "$defs": {"P": {"type": "string"}}}),
            json!({"type": "object", "properties": {"p": {"type": "string"}}}),
            true,
            true,
        ),
        case(
            "unique_items_added",
            json!({"type": "array", "items": {"type": "integer"}}),
            json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true}),
            false,
            true,
        ),
        case(
            "uuid_format_dropped",
            json!({"type": "string", "format": "uuid"}),
            json!({"type": "string"}),
            true,
            false,
        ),
        case(
            "integer_to_number",
            json!({"type": "integer"}),
            json!({"type": "number"}),
            true,
            false,
        ),
        case(
            "odd_property_names",
            json!({"type": "object", "properties": {"a-b": {"type": "string"}}}),
            json!({"type": "object", "properties": {"a-b": {"type": "string"}, "c d": {"type": "integer"}}}),
            true,
            true,
        ),
        case("true_and_empty", json!(true), json!({}), true, true),
        case(
            "enum_to_range",
            json!({"enum": [1, 2, 3]}),
            json!({"type": "integer", "minimum": 1, "maximum": 3}),
            true,
            false,
        ),
        case(
            "prefix_items_extended_open",
            json!({"type": "array", "prefixItems": [{"type": "string"}]}),
            json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}),
            false,
            true,
        ),
        case(
            "max_items_added",
            json!({"type": "array", "items": {"type": "string"}}),
            json!({"type": "array", "items": {"type": "string"}, "maxItems": 3}),
            false,
            true,
        ),
        case(
            "nullable_union_to_type_array",
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
            json!({"type": ["string", "null"]}),
            true,
            true,
        ),
    ]
}

fn type_cases() -> Vec<Case> {
    vec![
        type_case!(add_optional_open, true, true),
        type_case!(add_optional_closed, true, false),
        type_case!(add_required_open, false, true),
        type_case!(add_required_closed, false, false),
        type_case!(add_defaulted_open, true, true),
        type_case!(remove_optional_open, true, true),
        type_case!(remove_required_open, true, false),
        type_case!(remove_optional_closed, false, true),
        type_case!(rename_field, false, false),
        type_case!(identical, true, true),
        type_case!(becomes_closed, true, true),
        type_case!(becomes_open, true, true),
        type_case!(optional_becomes_required, false, true),
        type_case!(required_becomes_optional, true, false),
        type_case!(required_gets_default, true, false),
        type_case!(option_of_u32_to_u64, true, false),
        type_case!(nested_add_required, false, true),
        type_case!(nested_add_optional, true, true),
        type_case!(new_optional_nested_object, true, true),
        type_case!(nested_type_renamed_same_shape, true, true),
        type_case!(narrow_u32_to_u8, false, true),
        type_case!(widen_u8_to_u32, true, false),
        type_case!(widen_i32_to_i64, true, false),
        type_case!(u64_to_i64, false, false),
        type_case!(u32_to_f64, true, false),
        type_case!(f64_to_u32, false, true),
        type_case!(range_narrowed, false, true),
        type_case!(range_widened, true, false),
        type_case!(range_added, false, true),
        type_case!(number_to_string, false, false),
        type_case!(length_narrowed, false, true),
        type_case!(length_widened, true, false),
        type_case!(pattern_added, false, true),
        type_case!(pattern_changed, false, false),
        type_case!(pattern_removed, true, false),
        type_case!(email_format_added, false, true),
        type_case!(uuid_to_string, true, false),
        type_case!(bool_to_string, false, false),
        type_case!(enum_variant_added, true, false),
        type_case!(enum_variant_removed, false, true),
        type_case!(enum_variant_renamed, false, false),
        type_case!(tagged_variant_added, true, false),
        type_case!(tagged_variant_removed, false, true),
        type_case!(tagged_variant_gets_optional_field, true, true),
        type_case!(tagged_variant_gets_required_field, false, true),
        type_case!(externally_tagged_variant_added, true, false),
        type_case!(adjacently_tagged_unchanged, true, true),
        type_case!(field_becomes_enum, false, true),
        type_case!(vec_item_type_changed, false, false),
        type_case!(vec_item_widened, true, false),
        type_case!(vec_to_set, false, true),
        type_case!(map_value_widened, true, false),
        type_case!(tuple_widened, true, false),
        type_case!(tuple_arity_changed, false, false),
        type_case!(recursive_unchanged, true, true),
        type_case!(recursive_add_required, false, true),
    ]
}

fn expected(case: &Case, mode: CompatibilityMode) -> bool {
    use CompatibilityMode::*;
    match mode {
        Backward | BackwardTransitive => case.backward,
        Forward | ForwardTransitive => case.forward,
        Full | FullTransitive => case.backward && case.forward,
        None => true,
    }
}

#[test]
fn the_corpus_has_the_expected_verdict_under_every_mode() {
    let cases: Vec<Case> = type_cases().into_iter().chain(raw_cases()).collect();
    assert!(cases.len() >= 60, "the corpus has {} pairs", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        for mode in CompatibilityMode::ALL {
            let report = check(mode, &case.new, &[(1, case.old.clone())]);
            if report.is_compatible() != expected(case, mode) {
                failures.push(format!(
                    "{} under {mode}: expected {}, got {report}",
                    case.name,
                    if expected(case, mode) {
                        "compatible"
                    } else {
                        "incompatible"
                    }
                ));
            }
            for (_, finding) in report.problems() {
                assert!(finding.path.starts_with('$'), "{}: {finding}", case.name);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} verdicts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn explanations_name_the_path_and_say_what_to_do() {
    let findings = reader_accepts(
        &schema_for::<add_required_open::old::T>(),
        &schema_for::<add_required_open::new::T>(),
    );
    let problem = findings
        .iter()
        .find(|f| f.verdict == Verdict::Incompatible)
        .unwrap();
    assert_eq!(problem.path, "$.plan");
    assert!(problem.change.contains("added as required"), "{problem}");
    assert!(
        problem.change.contains("make it optional with a default"),
        "{problem}"
    );

    let findings = reader_accepts(
        &schema_for::<enum_variant_added::new::T>(),
        &schema_for::<enum_variant_added::old::T>(),
    );
    let problem = findings
        .iter()
        .find(|f| f.verdict == Verdict::Incompatible)
        .unwrap();
    assert_eq!(problem.path, "$.plan");
    assert!(problem.change.contains("\"team\""), "{problem}");

    let findings = reader_accepts(
        &schema_for::<add_optional_closed::new::T>(),
        &schema_for::<add_optional_closed::old::T>(),
    );
    let problem = findings
        .iter()
        .find(|f| f.verdict == Verdict::Incompatible)
        .unwrap();
    assert_eq!(problem.path, "$.b");
    assert!(problem.change.contains("deny_unknown_fields"), "{problem}");

    let findings = reader_accepts(
        &schema_for::<pattern_changed::old::T>(),
        &schema_for::<pattern_changed::new::T>(),
    );
    assert!(
        findings
            .iter()
            .any(|f| f.verdict == Verdict::Unknown && f.path == "$.s"),
        "{findings:?}"
    );
}

#[test]
fn transitive_modes_check_every_version_and_plain_ones_only_the_latest() {
    let v1 = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let v2 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a"]});
    // v3 requires b: old v1 data lacks it, v2 data may lack it too.
    let v3 = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["a", "b"]});
    let existing = [(1, v1), (2, v2)];
    let backward = check(CompatibilityMode::Backward, &v3, &existing);
    assert_eq!(backward.checks.len(), 1);
    assert_eq!(backward.checks[0].version, 2);
    let transitive = check(CompatibilityMode::BackwardTransitive, &v3, &existing);
    assert_eq!(
        transitive
            .checks
            .iter()
            .map(|c| c.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(!transitive.is_compatible());
    assert!(transitive.to_string().contains("$.b"), "{transitive}");
    assert!(check(CompatibilityMode::None, &v3, &existing).is_compatible());
}
