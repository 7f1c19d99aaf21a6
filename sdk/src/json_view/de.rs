//! Decoding a typed value from a [`JsonTape`] that was just validated, instead of parsing
//! the text a second time with `serde_json`.
//!
//! The deserializer hands the visitor what `serde_json`'s reader would for the same text:
//! strings without escapes borrowed from the text, numbers as `serde_json::Number` visits
//! them, arrays and objects as sequences and maps (a repeated name is not followed here: the
//! caller falls back). Wherever `serde_json` does something the tape cannot repeat exactly
//! (raw values, 128-bit integers, non-string map keys read from strings), this deserializer
//! fails, and [`decode`]'s caller decodes the text with `serde_json` instead, so a decode
//! that succeeds here gives what `serde_json::from_slice` gives, and every error message is
//! `serde_json`'s own.

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde_json::Error;

use super::{JsonTape, TapeNode};

/// `serde_json`'s name for its raw value type, which only its own reader can fill.
const RAW_VALUE: &str = "$serde_json::private::RawValue";

/// Decodes `T` from `tape`, or fails (the caller then decodes the text with `serde_json`).
pub(crate) fn decode<T: de::DeserializeOwned>(tape: &JsonTape<'_>) -> Result<T, Error> {
    if tape.shadowed {
        return Err(de::Error::custom("a repeated name"));
    }
    T::deserialize(TapeDe { tape, index: 0 })
}

/// One node of the tape, as a `serde` deserializer.
#[derive(Clone, Copy)]
struct TapeDe<'a, 't> {
    tape: &'a JsonTape<'t>,
    index: usize,
}

impl<'a, 't> TapeDe<'a, 't> {
    fn node(&self) -> &'a TapeNode {
        self.tape.node(self.index)
    }

    fn at(&self, index: usize) -> TapeDe<'a, 't> {
        TapeDe {
            tape: self.tape,
            index,
        }
    }

    fn unexpected(&self) -> de::Unexpected<'a> {
        match self.node() {
            TapeNode::Null | TapeNode::Shadowed => de::Unexpected::Unit,
            TapeNode::Bool(boolean) => de::Unexpected::Bool(*boolean),
            TapeNode::Number(_) => de::Unexpected::Other("number"),
            TapeNode::Text { .. } | TapeNode::Decoded(_) => de::Unexpected::Other("string"),
            TapeNode::Array { .. } => de::Unexpected::Seq,
            TapeNode::Object { .. } => de::Unexpected::Map,
        }
    }
}

impl<'de> Deserializer<'de> for TapeDe<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match *self.node() {
            TapeNode::Null | TapeNode::Shadowed => visitor.visit_unit(),
            TapeNode::Bool(boolean) => visitor.visit_bool(boolean),
            TapeNode::Number(ref number) => number.deserialize_any(visitor),
            TapeNode::Text { start, end } => {
                match self.tape.text.get(start as usize..end as usize) {
                    Some(text) => visitor.visit_borrowed_str(text),
                    None => Err(de::Error::custom("a string outside the text")),
                }
            }
            TapeNode::Decoded(decoded) => match self.tape.decoded.get(decoded as usize) {
                Some(text) => visitor.visit_str(text),
                None => Err(de::Error::custom("a decoded string not kept")),
            },
            TapeNode::Array { len, .. } => {
                let mut elements = Elements {
                    de: self.at(self.index + 1),
                    left: len as usize,
                };
                let value = visitor.visit_seq(&mut elements)?;
                if elements.left > 0 {
                    return Err(de::Error::invalid_length(len as usize, &"fewer elements"));
                }
                Ok(value)
            }
            TapeNode::Object { end, .. } => {
                let mut members = Members {
                    de: self,
                    next: self.index + 1,
                    end: end as usize,
                    value: None,
                };
                let value = visitor.visit_map(&mut members)?;
                if members.next < members.end {
                    return Err(de::Error::custom("members left unread"));
                }
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node() {
            TapeNode::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == RAW_VALUE {
            return Err(de::Error::custom("a raw value"));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match *self.node() {
            TapeNode::Text { .. } | TapeNode::Decoded(_) => {
                let name = self.tape.string(self.index).unwrap_or_default();
                let name: de::value::StrDeserializer<'_, Error> = name.into_deserializer();
                visitor.visit_enum(name)
            }
            TapeNode::Object { len: 1, end, .. } => {
                let mut members = Members {
                    de: self,
                    next: self.index + 1,
                    end: end as usize,
                    value: None,
                };
                match members.next_member() {
                    Some((name, value)) => visitor.visit_enum(Variant { name, value }),
                    None => Err(de::Error::custom("an empty object")),
                }
            }
            _ => Err(de::Error::invalid_type(self.unexpected(), &"an enum")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match *self.node() {
            TapeNode::Text { .. } | TapeNode::Decoded(_) => {
                visitor.visit_bytes(self.tape.string(self.index).unwrap_or_default().as_bytes())
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_i128<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("a 128-bit integer"))
    }

    fn deserialize_u128<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("a 128-bit integer"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string unit unit_struct seq
        tuple tuple_struct map struct identifier
    }
}

/// An array's elements.
struct Elements<'a, 't> {
    /// The next element.
    de: TapeDe<'a, 't>,
    left: usize,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let element = self.de;
        self.de = element.at(element.tape.skip(element.index));
        seed.deserialize(element).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// An object's members, names that a later member repeats skipped (never present: see
/// [`decode`]).
struct Members<'a, 't> {
    de: TapeDe<'a, 't>,
    /// The node of the next member's name.
    next: usize,
    end: usize,
    /// The value of the member whose name was just read.
    value: Option<usize>,
}

impl<'a, 't> Members<'a, 't> {
    /// The next member: its name and its value's node.
    fn next_member(&mut self) -> Option<(&'a str, TapeDe<'a, 't>)> {
        let name = self.next_name()?;
        let text = self.de.tape.string(name)?;
        Some((text, self.de.at(name + 1)))
    }

    /// The node of the next member's name (its value follows it), its text not read.
    fn next_name(&mut self) -> Option<usize> {
        while self.next < self.end {
            let name = self.next;
            self.next = self.de.tape.skip(name + 1);
            if let TapeNode::Text { .. } | TapeNode::Decoded(_) = self.de.tape.node(name) {
                return Some(name);
            }
        }
        None
    }
}

impl<'de> MapAccess<'de> for Members<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.next_name() else {
            return Ok(None);
        };
        self.value = Some(name + 1);
        // The name node itself, so that a borrowed name stays borrowed from the text.
        seed.deserialize(Name(self.de.at(name))).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some(index) => seed.deserialize(self.de.at(index)),
            None => Err(de::Error::custom("a value before its name")),
        }
    }
}

/// `deserialize_*` methods of [`Name`] that refuse: such a key is left to `serde_json`.
macro_rules! refused_as_key {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
                Err(not_a_string_key())
            }
        )*
    };
}

/// A member's name as a map key: a string, as `serde_json` gives it. Keys that `serde_json`
/// would read as numbers or booleans (`HashMap<u32, _>`) fail here and fall back.
struct Name<'a, 't>(TapeDe<'a, 't>);

impl<'de> Deserializer<'de> for Name<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        char str string identifier ignored_any
    }

    // `serde_json` reads these from the name's text (`"1"` as a number); not repeated here.
    refused_as_key! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_option deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_seq deserialize_map
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(not_a_string_key())
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(not_a_string_key())
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(not_a_string_key())
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(not_a_string_key())
    }
}

/// A map key read other than as a string: left to `serde_json`.
fn not_a_string_key() -> Error {
    de::Error::custom("a map key read other than as a string")
}

/// The variant of an enum written as `{"name": value}`.
struct Variant<'a, 't> {
    name: &'a str,
    value: TapeDe<'a, 't>,
}

impl<'a, 'de> EnumAccess<'de> for Variant<'a, 'de> {
    type Error = Error;
    type Variant = TapeDe<'a, 'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let name: de::value::StrDeserializer<'_, Error> = self.name.into_deserializer();
        Ok((seed.deserialize(name)?, self.value))
    }
}

impl<'de> VariantAccess<'de> for TapeDe<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_any(visitor)
    }
}
