//! [`Shape`]: the schemas most events have, checked on a tape in one walk.
//!
//! A schema generated for a plain Rust type uses a handful of keywords: `type`,
//! `properties`, `required`, `additionalProperties`, `items`, `$ref` to `#/$defs/…`,
//! `anyOf` and `oneOf` (options, enums), `enum` and `const` of strings, integer `minimum`
//! and `maximum`, and `format` (`uuid`, or one `jsonschema` does not know and so ignores,
//! such as `uint32`). A schema made of those and of annotations only is also compiled into
//! a `Shape`, which says whether a tape is valid with a walk over it and a lookup per
//! member name, where `jsonschema` calls a validator per keyword through its generic node
//! traits; on a typical event that is about a third of the time.
//!
//! A shape answers only where it is sure: for a number it cannot place exactly (a float
//! against `integer` or an integer bound) it says it does not know, and `jsonschema`
//! decides. Any other keyword, a `$schema` other than draft 2020-12's, an `$id` or anchor
//! anywhere, or a `$ref` elsewhere than `#`, `#/$defs/<name>` or `#/definitions/<name>`,
//! and the schema has no shape: `jsonschema` alone validates it. `tests_shape` holds the
//! answers to `jsonschema`'s on generated schemas and documents.

use std::collections::HashMap;

use jsonschema::json::{Array, Node as _, Object};
use serde_json::Value;

use super::{TapeNode, TapeRef};

/// Keywords that say nothing about validity.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
    "$defs",
    "definitions",
];

/// Keywords, anywhere in a document, that change how `$ref` resolves.
const RESOLUTION: &[&str] = &[
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$dynamicRef",
    "$recursiveRef",
    "$recursiveAnchor",
    "$vocabulary",
    "id",
];

/// The formats `jsonschema` checks in draft 2020-12 (others it ignores). Of these the
/// shape checks `uuid` itself; a schema with another has no shape.
const CHECKED_FORMATS: &[&str] = &[
    "date",
    "date-time",
    "duration",
    "email",
    "hostname",
    "idn-email",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "iri",
    "iri-reference",
    "json-pointer",
    "regex",
    "relative-json-pointer",
    "time",
    "uri",
    "uri-reference",
    "uri-template",
    "uuid",
];

/// The draft 2020-12 meta-schema, the one `$schema` a shape accepts.
const DRAFT_2020_12: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
];

/// How deep a check goes through `$ref`s and containers before it gives the question to
/// `jsonschema` (a tape nests at most 127 levels; only a `$ref` loop goes further).
const MAX_DEPTH: u32 = 512;

// `type` as bits.
const NULL: u8 = 1;
const BOOLEAN: u8 = 1 << 1;
const OBJECT: u8 = 1 << 2;
const ARRAY: u8 = 1 << 3;
const NUMBER: u8 = 1 << 4;
const STRING: u8 = 1 << 5;
const INTEGER: u8 = 1 << 6;
const ANY: u8 = NULL | BOOLEAN | OBJECT | ARRAY | NUMBER | STRING | INTEGER;

type Id = usize;

/// A schema compiled for [`Shape::check`].
#[derive(Debug)]
pub(crate) struct Shape {
    nodes: Vec<Rule>,
}

/// One schema object (or boolean schema) of the document.
#[derive(Debug, Default)]
struct Rule {
    /// The `false` schema.
    never: bool,
    /// The types of a rule that says nothing else (all of them for `true`).
    only_types: Option<u8>,
    /// `type`, as bits; `None`: any.
    types: Option<u8>,
    /// `properties` and the names `required` adds, in one list.
    names: Vec<Name>,
    /// The bits of `names` that `required` asks for.
    required: u64,
    /// Whether objects are looked at at all (`properties`, `required` or
    /// `additionalProperties`).
    objects: bool,
    additional: Additional,
    items: Option<Id>,
    refs: Vec<Id>,
    any_of: Vec<Id>,
    one_of: Vec<Id>,
    /// `enum`, all strings.
    one_of_strings: Option<Vec<String>>,
    /// `const`, a string.
    constant: Option<String>,
    uuid: bool,
    minimum: Option<i128>,
    maximum: Option<i128>,
}

/// A member name the rule knows.
impl Rule {
    /// Whether the rule says nothing but (perhaps) `type`.
    fn is_types_alone(&self) -> bool {
        !self.never
            && !self.objects
            && self.items.is_none()
            && self.refs.is_empty()
            && self.any_of.is_empty()
            && self.one_of.is_empty()
            && self.one_of_strings.is_none()
            && self.constant.is_none()
            && !self.uuid
            && self.minimum.is_none()
            && self.maximum.is_none()
    }
}

#[derive(Debug)]
struct Name {
    /// [`prefix`] of the name.
    prefix: u64,
    name: String,
    /// Its schema under `properties`; `None` for a name only `required` mentions.
    schema: Option<Id>,
    /// Its bit in `Rule::required`, or 0.
    bit: u64,
}

#[derive(Debug, Default)]
enum Additional {
    #[default]
    Any,
    Never,
    Schema(Id),
}

impl Shape {
    /// The shape of `schema`, if it has one (see the module's documentation).
    pub(crate) fn compile(schema: &Value) -> Option<Shape> {
        if mentions_resolution(schema) {
            return None;
        }
        let mut compiler = Compiler {
            root: schema,
            nodes: Vec::new(),
            pointers: HashMap::new(),
        };
        if let Some(map) = schema.as_object()
            && let Some(meta) = map.get("$schema")
            && !meta
                .as_str()
                .is_some_and(|meta| DRAFT_2020_12.contains(&meta))
        {
            return None;
        }
        let root = compiler.reserve();
        compiler.pointers.insert("#".to_owned(), root);
        compiler.fill(root, schema, true)?;
        Some(Shape {
            nodes: compiler.nodes,
        })
    }

    /// Whether the document at `value` is valid; `None` where the shape cannot say and
    /// `jsonschema` must.
    pub(crate) fn check(&self, value: TapeRef<'_>) -> Option<bool> {
        self.rule(0, value, 0)
    }

    /// Whether `value` is valid for the rule `id`; a rule of a type alone is checked here,
    /// without a call.
    #[inline]
    fn rule(&self, id: Id, value: TapeRef<'_>, depth: u32) -> Option<bool> {
        let rule = self.nodes.get(id)?;
        match rule.only_types {
            Some(types) => type_matches(types, value.node()),
            None => self.full(rule, value, depth),
        }
    }

    fn full(&self, rule: &Rule, value: TapeRef<'_>, depth: u32) -> Option<bool> {
        if rule.never {
            return Some(false);
        }
        if depth > MAX_DEPTH {
            return None;
        }
        // Whether every answer so far was sure; a `false` ends the walk at once, sure or
        // not of the rest.
        let mut sure = true;
        let node = value.node();
        if let Some(types) = rule.types
            && !keep(&mut sure, type_matches(types, node))
        {
            return Some(false);
        }
        match node {
            TapeNode::Object { .. } if rule.objects => {
                let object = value.as_object()?;
                let mut seen = 0_u64;
                for (name, member) in object.members() {
                    let (first, len) = (prefix(name.as_bytes()), name.len());
                    let known = rule.names.iter().find(|known| {
                        known.prefix == first
                            && known.name.len() == len
                            && (len <= 8 || known.name == name)
                    });
                    if let Some(known) = known {
                        seen |= known.bit;
                    }
                    let schema = match (known.and_then(|known| known.schema), &rule.additional) {
                        (Some(schema), _) | (None, &Additional::Schema(schema)) => schema,
                        (None, Additional::Any) => continue,
                        (None, Additional::Never) => return Some(false),
                    };
                    if !keep(&mut sure, self.rule(schema, member, depth + 1)) {
                        return Some(false);
                    }
                }
                if seen & rule.required != rule.required {
                    return Some(false);
                }
            }
            TapeNode::Array { .. } => {
                if let Some(items) = rule.items {
                    for element in value.as_array()?.elements() {
                        if !keep(&mut sure, self.rule(items, element, depth + 1)) {
                            return Some(false);
                        }
                    }
                }
            }
            TapeNode::Text { .. } | TapeNode::Decoded(_) => {
                let text = value.string()?;
                if rule
                    .one_of_strings
                    .as_ref()
                    .is_some_and(|strings| !strings.iter().any(|one| one == text))
                    || rule.constant.as_ref().is_some_and(|one| one != text)
                    || (rule.uuid && !is_uuid(text))
                {
                    return Some(false);
                }
            }
            TapeNode::Number(number) if rule.minimum.is_some() || rule.maximum.is_some() => {
                let exact = number
                    .as_u64()
                    .map(i128::from)
                    .or_else(|| number.as_i64().map(i128::from));
                match exact {
                    Some(exact) => {
                        if rule.minimum.is_some_and(|minimum| exact < minimum)
                            || rule.maximum.is_some_and(|maximum| exact > maximum)
                        {
                            return Some(false);
                        }
                    }
                    None => sure = false,
                }
            }
            _ => {}
        }
        // `enum` and `const` of strings hold no other kind of value.
        if !matches!(node, TapeNode::Text { .. } | TapeNode::Decoded(_))
            && (rule.one_of_strings.is_some() || rule.constant.is_some())
        {
            return Some(false);
        }
        for reference in &rule.refs {
            if !keep(&mut sure, self.rule(*reference, value, depth + 1)) {
                return Some(false);
            }
        }
        if !rule.any_of.is_empty() {
            let mut unsure = false;
            let mut any = false;
            for branch in &rule.any_of {
                match self.rule(*branch, value, depth + 1) {
                    Some(true) => {
                        any = true;
                        break;
                    }
                    Some(false) => {}
                    None => unsure = true,
                }
            }
            if !any && !keep(&mut sure, if unsure { None } else { Some(false) }) {
                return Some(false);
            }
        }
        if !rule.one_of.is_empty() {
            let (mut valid, mut unsure) = (0, false);
            for branch in &rule.one_of {
                match self.rule(*branch, value, depth + 1) {
                    Some(true) => valid += 1,
                    Some(false) => {}
                    None => unsure = true,
                }
            }
            let answer = match (valid, unsure) {
                (2.., _) => Some(false),
                (_, true) => None,
                (1, false) => Some(true),
                (_, false) => Some(false),
            };
            if !keep(&mut sure, answer) {
                return Some(false);
            }
        }
        sure.then_some(true)
    }
}

/// False for a `false` answer; an unsure one marks the answers so far `sure = false`.
fn keep(sure: &mut bool, answer: Option<bool>) -> bool {
    match answer {
        Some(answer) => answer,
        None => {
            *sure = false;
            true
        }
    }
}

/// Whether a value of this kind is of one of `types`; `None` for a float against
/// `integer` (whether it counts as an integer is `jsonschema`'s to say).
fn type_matches(types: u8, node: &TapeNode) -> Option<bool> {
    let bit = match node {
        TapeNode::Null | TapeNode::Shadowed => NULL,
        TapeNode::Bool(_) => BOOLEAN,
        TapeNode::Text { .. } | TapeNode::Decoded(_) => STRING,
        TapeNode::Array { .. } => ARRAY,
        TapeNode::Object { .. } => OBJECT,
        TapeNode::Number(number) => {
            if types & NUMBER != 0 {
                return Some(true);
            }
            if types & INTEGER == 0 {
                return Some(false);
            }
            return if number.is_u64() || number.is_i64() {
                Some(true)
            } else {
                None
            };
        }
    };
    Some(types & bit != 0)
}

/// The `uuid` format as `jsonschema` checks it: 36 characters, hyphens at 8, 13, 18 and
/// 23, hexadecimal digits of either case everywhere else (of 36 bytes, the `uuid` crate
/// reads exactly that form).
fn is_uuid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse_ascii(text.as_bytes()).is_ok()
}

/// The first eight bytes of a name (zeros past its end), which with its length tells most
/// names apart without comparing them.
fn prefix(name: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    let len = name.len().min(8);
    if let (Some(to), Some(from)) = (bytes.get_mut(..len), name.get(..len)) {
        to.copy_from_slice(from);
    }
    u64::from_le_bytes(bytes)
}

/// Whether any object of the document has a key that changes how references resolve.
fn mentions_resolution(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| RESOLUTION.contains(&key.as_str()) || mentions_resolution(value)),
        Value::Array(values) => values.iter().any(mentions_resolution),
        _ => false,
    }
}

struct Compiler<'s> {
    root: &'s Value,
    nodes: Vec<Rule>,
    /// The rule made for each `$ref` target so far.
    pointers: HashMap<String, Id>,
}

impl Compiler<'_> {
    fn reserve(&mut self) -> Id {
        self.nodes.push(Rule::default());
        self.nodes.len() - 1
    }

    fn compile(&mut self, schema: &Value) -> Option<Id> {
        // A `$ref` alone (with annotations) is its target.
        if let Some(map) = schema.as_object()
            && let Some(pointer) = map.get("$ref").and_then(Value::as_str)
            && map
                .keys()
                .all(|keyword| keyword == "$ref" || ANNOTATIONS.contains(&keyword.as_str()))
        {
            return self.reference(pointer);
        }
        let id = self.reserve();
        self.fill(id, schema, false)?;
        Some(id)
    }

    fn compile_all(&mut self, schemas: &Value) -> Option<Vec<Id>> {
        let schemas = schemas.as_array().filter(|schemas| !schemas.is_empty())?;
        schemas.iter().map(|schema| self.compile(schema)).collect()
    }

    /// The rule of the `$ref` target `pointer`.
    fn reference(&mut self, pointer: &str) -> Option<Id> {
        if let Some(id) = self.pointers.get(pointer) {
            return Some(*id);
        }
        let (container, name) = pointer
            .strip_prefix("#/$defs/")
            .map(|name| ("$defs", name))
            .or_else(|| {
                pointer
                    .strip_prefix("#/definitions/")
                    .map(|name| ("definitions", name))
            })?;
        // A plain name: no nested pointer, no escapes.
        if name.is_empty() || name.contains(['/', '~', '%']) {
            return None;
        }
        let root = self.root;
        let target = root.get(container)?.get(name)?;
        let id = self.reserve();
        self.pointers.insert(pointer.to_owned(), id);
        self.fill(id, target, false)?;
        Some(id)
    }

    fn fill(&mut self, id: Id, schema: &Value, root: bool) -> Option<()> {
        let map = match schema {
            Value::Bool(true) => return Some(()),
            Value::Bool(false) => {
                self.nodes.get_mut(id)?.never = true;
                return Some(());
            }
            Value::Object(map) => map,
            _ => return None,
        };
        let mut rule = Rule::default();
        let mut required: Vec<&str> = Vec::new();
        for (keyword, value) in map {
            match keyword.as_str() {
                "$schema" if root => {}
                "type" => rule.types = Some(types(value)?),
                "properties" => {
                    rule.objects = true;
                    for (name, schema) in value.as_object()? {
                        let schema = self.compile(schema)?;
                        rule.names.push(Name {
                            prefix: prefix(name.as_bytes()),
                            name: name.clone(),
                            schema: Some(schema),
                            bit: 0,
                        });
                    }
                }
                "required" => {
                    rule.objects = true;
                    for name in value.as_array()? {
                        required.push(name.as_str()?);
                    }
                }
                "additionalProperties" => {
                    rule.objects = true;
                    rule.additional = match value {
                        Value::Bool(true) => Additional::Any,
                        Value::Bool(false) => Additional::Never,
                        schema => Additional::Schema(self.compile(schema)?),
                    };
                }
                "items" => rule.items = Some(self.compile(value)?),
                "$ref" => {
                    let reference = self.reference(value.as_str()?)?;
                    rule.refs.push(reference);
                }
                "anyOf" => rule.any_of = self.compile_all(value)?,
                "oneOf" => rule.one_of = self.compile_all(value)?,
                "enum" => {
                    let strings = value
                        .as_array()?
                        .iter()
                        .map(|one| one.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()?;
                    rule.one_of_strings = Some(strings);
                }
                "const" => rule.constant = Some(value.as_str()?.to_owned()),
                "minimum" => rule.minimum = Some(integer(value)?),
                "maximum" => rule.maximum = Some(integer(value)?),
                "format" => match value.as_str()? {
                    "uuid" => rule.uuid = true,
                    format if CHECKED_FORMATS.contains(&format) => return None,
                    _ => {}
                },
                annotation if ANNOTATIONS.contains(&annotation) => {}
                _ => return None,
            }
        }
        for name in required {
            add_required(&mut rule, name)?;
        }
        rule.only_types = rule.is_types_alone().then(|| rule.types.unwrap_or(ANY));
        *self.nodes.get_mut(id)? = rule;
        Some(())
    }
}

/// Marks `name` required, adding it to the rule's names if `properties` has not; `None`
/// past 64 required names.
fn add_required(rule: &mut Rule, name: &str) -> Option<()> {
    let taken = rule.names.iter().filter(|known| known.bit != 0).count();
    let bit = 1_u64.checked_shl(u32::try_from(taken).ok()?)?;
    match rule.names.iter_mut().find(|known| known.name == name) {
        Some(known) if known.bit != 0 => {}
        Some(known) => known.bit = bit,
        None => rule.names.push(Name {
            prefix: prefix(name.as_bytes()),
            name: name.to_owned(),
            schema: None,
            bit,
        }),
    }
    rule.required = rule.names.iter().fold(0, |bits, known| bits | known.bit);
    Some(())
}

/// `type` as bits: one name or an array of names.
fn types(value: &Value) -> Option<u8> {
    let one = |name: &Value| {
        Some(match name.as_str()? {
            "null" => NULL,
            "boolean" => BOOLEAN,
            "object" => OBJECT,
            "array" => ARRAY,
            "number" => NUMBER,
            "string" => STRING,
            "integer" => INTEGER,
            _ => return None,
        })
    };
    match value {
        Value::Array(names) => names
            .iter()
            .try_fold(0, |bits, name| Some(bits | one(name)?)),
        name => one(name),
    }
}

/// A bound that is an integer (`u64` or `i64`).
fn integer(value: &Value) -> Option<i128> {
    value
        .as_u64()
        .map(i128::from)
        .or_else(|| value.as_i64().map(i128::from))
}
