//! The tape as `jsonschema` reads it: its custom-representation traits
//! (`jsonschema::json::{Json, Node, Object, Array}`) over [`JsonTape`] nodes.

use std::borrow::Cow;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use serde_json::{Number, Value};

use super::{JsonTape, TapeNode};

/// A node of a [`JsonTape`]: what `jsonschema` walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeRef<'a> {
    tape: &'a JsonTape<'a>,
    index: usize,
}

impl<'a> TapeRef<'a> {
    pub(super) fn new(tape: &'a JsonTape<'a>, index: usize) -> TapeRef<'a> {
        TapeRef { tape, index }
    }

    #[inline]
    fn node(&self) -> &'a TapeNode {
        self.tape.node(self.index)
    }

    #[inline]
    fn string(&self) -> Option<&'a str> {
        self.tape.string(self.index)
    }

    /// The same value as a `serde_json::Value` (error paths and comparisons only).
    pub(crate) fn to_value(self) -> Value {
        match self.node() {
            TapeNode::Null | TapeNode::Shadowed => Value::Null,
            TapeNode::Bool(boolean) => Value::Bool(*boolean),
            TapeNode::Number(number) => Value::Number(number.clone()),
            TapeNode::Text { .. } | TapeNode::Decoded(_) => {
                Value::String(self.string().unwrap_or_default().to_owned())
            }
            TapeNode::Array { .. } => {
                Value::Array(TapeArray(self).elements().map(TapeRef::to_value).collect())
            }
            TapeNode::Object { .. } => Value::Object(
                TapeObject(self)
                    .members()
                    .map(|(name, value)| (name.to_owned(), value.to_value()))
                    .collect(),
            ),
        }
    }
}

/// The [`JsonTape`] representation for `jsonschema` validators (`Validator<TapeJson>`).
#[derive(Debug)]
pub(crate) struct TapeJson;

impl Json for TapeJson {
    type Node<'a> = TapeRef<'a>;
    type PreparedKey = String;
    type StringBuffer = Option<JsonTape<'static>>;

    // Looking a name up scans the members, so one pass over them never costs more than the
    // lookups it replaces.
    const KEYS_PER_LOOKUP: usize = 16;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(
        buffer: &mut Option<JsonTape<'static>>,
        string: &str,
        f: impl FnOnce(Self::Node<'_>) -> T,
    ) -> T {
        let tape = match buffer {
            Some(tape) => {
                // The one string of the buffer's tape, its allocation reused.
                match tape.decoded.first_mut() {
                    Some(decoded) => {
                        decoded.clear();
                        decoded.push_str(string);
                    }
                    None => tape.decoded.push(string.to_owned()),
                }
                tape
            }
            None => buffer.insert(JsonTape {
                text: "",
                nodes: vec![TapeNode::Decoded(0)],
                decoded: vec![string.to_owned()],
                shadowed: false,
            }),
        };
        f(tape.root())
    }
}

impl<'a> Node<'a, TapeJson> for TapeRef<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        matches!(self.node(), TapeNode::Object { .. }).then_some(TapeObject(*self))
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        matches!(self.node(), TapeNode::Array { .. }).then_some(TapeArray(*self))
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.string().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.node() {
            TapeNode::Number(number) => Some(number),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.node() {
            TapeNode::Bool(boolean) => Some(*boolean),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.node(), TapeNode::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.node() {
            TapeNode::Null | TapeNode::Shadowed => JsonType::Null,
            TapeNode::Bool(_) => JsonType::Boolean,
            TapeNode::Number(_) => JsonType::Number,
            TapeNode::Text { .. } | TapeNode::Decoded(_) => JsonType::String,
            TapeNode::Array { .. } => JsonType::Array,
            TapeNode::Object { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` of unit variants compares strings: no conversion for the common cases.
        match (self.node(), expected) {
            (TapeNode::Text { .. } | TapeNode::Decoded(_), Value::String(other)) => {
                self.string() == Some(other.as_str())
            }
            (TapeNode::Text { .. } | TapeNode::Decoded(_), _) => false,
            (TapeNode::Bool(boolean), _) => expected.as_bool() == Some(*boolean),
            (TapeNode::Null | TapeNode::Shadowed, _) => expected.is_null(),
            (TapeNode::Number(number), Value::Number(other)) => {
                jsonschema::json::cmp::equal_numbers(number, other)
            }
            (TapeNode::Number(_), _) => false,
            (TapeNode::Array { .. } | TapeNode::Object { .. }, _) => {
                jsonschema::json::cmp::equal(&TapeRef::to_value(*self), expected)
            }
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(TapeRef::to_value(*self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref::<JsonTape<'a>>(self.tape).addr(),
            u32::try_from(self.index).unwrap_or(u32::MAX),
        ))
    }
}

/// An object node of a [`JsonTape`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeObject<'a>(TapeRef<'a>);

/// The members of a [`TapeObject`] in text order, shadowed ones skipped.
#[derive(Debug)]
pub(crate) struct Members<'a> {
    tape: &'a JsonTape<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.end {
            let name = self.next;
            self.next = self.tape.skip(name + 1);
            if let Some(name_text) = self.tape.string(name) {
                return Some((name_text, TapeRef::new(self.tape, name + 1)));
            }
        }
        None
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeRef<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        match self.0.node() {
            TapeNode::Object { len, .. } => *len as usize,
            _ => 0,
        }
    }

    fn get(&self, key: &String) -> Option<TapeRef<'a>> {
        // Names are unique once repeated ones are shadowed.
        self.members()
            .find(|(name, _)| *name == key.as_str())
            .map(|(_, value)| value)
    }

    fn members(&self) -> Members<'a> {
        let end = match self.0.node() {
            TapeNode::Object { end, .. } => *end as usize,
            _ => self.0.index,
        };
        Members {
            tape: self.0.tape,
            next: self.0.index + 1,
            end,
        }
    }
}

/// An array node of a [`JsonTape`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeArray<'a>(TapeRef<'a>);

/// The elements of a [`TapeArray`].
#[derive(Debug)]
pub(crate) struct Elements<'a> {
    tape: &'a JsonTape<'a>,
    next: usize,
    left: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let element = TapeRef::new(self.tape, self.next);
        self.next = self.tape.skip(self.next);
        Some(element)
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeRef<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        match self.0.node() {
            TapeNode::Array { len, .. } => *len as usize,
            _ => 0,
        }
    }

    fn elements(&self) -> Elements<'a> {
        Elements {
            tape: self.0.tape,
            next: self.0.index + 1,
            left: self.len(),
        }
    }
}
