//! A read-only view of JSON text, for validating the exact bytes a publish sends.
//!
//! Publishing serialises an event once, to the bytes it sends, and validates those bytes.
//! Going through a `serde_json::Value` for that (serialising to one, or parsing the bytes
//! into one) costs several times the serialisation itself: every key and string is
//! allocated. A [`JsonTape`] is instead one flat vector of nodes in document order: strings
//! are ranges of the text (only strings with escapes are decoded into their own
//! allocation), and a container records where its descendants end, so walking it follows
//! no pointers. `jsonschema` validates it through its custom-representation traits
//! ([`TapeJson`], in `node`).
//!
//! A tape is made two ways:
//! - [`record`] serialises a value with `serde_json` through a formatter that writes exactly
//!   what `serde_json::to_writer` writes and notes each value as it goes, so the bytes are
//!   never parsed (`record`, `formatter`);
//! - [`JsonTape::parse`] reads any JSON text, accepting exactly what `serde_json` accepts,
//!   with numbers read the way `serde_json` reads them (`parse`, `strings`).
//!
//! Either way the tape holds the document a consumer gets by parsing the bytes with
//! `serde_json` into a `Value`: a name repeated in one object is seen once, with its last
//! value, as `serde_json::Value` keeps it. (A recorded float is the `f64` written, which
//! `serde_json` reads back exactly with its `float_roundtrip` feature, which `jsonschema`
//! turns on.) The generated cases of `tests_differential` hold both to `serde_json` and to
//! `jsonschema` on `serde_json::Value`.
//!
//! No maintained crate reads JSON text into something `jsonschema` validates without a
//! `serde_json::Value` (its own representations are `serde_json`, Postgres `jsonb`, Python
//! and Ruby objects); the reader would have to be adapted here whatever it is.
//! `serde_json`'s own parser driven through a visitor into this tape took about 1.5× the
//! hand-written reader's time on a typical event (292 bytes, 11 names), so the reader
//! stays, held to `serde_json` by the tests.

mod de;
mod formatter;
mod node;
mod parse;
mod record;
pub(crate) mod scratch;
mod strings;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_decode;
#[cfg(test)]
mod tests_differential;
#[cfg(test)]
mod tests_strategies;

pub(crate) use de::decode;
pub(crate) use node::{TapeJson, TapeRef};
pub(crate) use record::{RecordError, record};

use serde_json::Number;

/// One node of a [`JsonTape`]. Containers are followed by their descendants; an object's
/// children alternate name and value. Positions are byte offsets into the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TapeNode {
    Null,
    Bool(bool),
    Number(Number),
    /// A string without escapes: `text[start..end]`.
    Text {
        start: u32,
        end: u32,
    },
    /// A string with escapes, decoded: `decoded[index]`.
    Decoded(u32),
    /// The name of an object member whose name a later member of the same object repeats:
    /// the member is skipped, as `serde_json::Value` keeps only the last.
    Shadowed,
    /// `len` elements; `end` is the index of the first node after the last descendant.
    Array {
        len: u32,
        end: u32,
    },
    /// `len` members seen (shadowed ones not counted; 2 children per member, shadowed
    /// ones included); `end` as for arrays. `repeats`: its names may repeat (equal hashes,
    /// or names not hashed), checked when the tape is made.
    Object {
        len: u32,
        end: u32,
        repeats: bool,
    },
}

/// JSON text as a flat list of nodes (see the module documentation).
#[derive(Debug)]
pub(crate) struct JsonTape<'t> {
    text: &'t str,
    nodes: Vec<TapeNode>,
    decoded: Vec<String>,
    /// Some object repeats a name (its earlier members are [`TapeNode::Shadowed`]).
    shadowed: bool,
}

/// Why a tape could not be made; the caller then goes through `serde_json::Value`, which
/// also says why text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TapeError {
    /// The text is not JSON: what `serde_json` refuses.
    #[error("not JSON (at byte {at})")]
    Syntax {
        /// Where the reader stopped.
        at: usize,
    },
    /// The text is not UTF-8, so not JSON.
    #[error("not JSON: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    /// A position or count beyond `u32` (text of 4 GiB or more).
    #[error("JSON text of 4 GiB or more")]
    TooLarge,
    /// What `serde_json` wrote is outside what the recorder follows (raw JSON, 128-bit
    /// integers beyond 64 bits, arbitrary-precision numbers, nesting deeper than the 127 levels
    /// `serde_json` reads).
    #[error("the recorder does not follow this value: {0}")]
    NotFollowed(&'static str),
}

/// A position or count as stored in a node.
fn offset(position: usize) -> Result<u32, TapeError> {
    u32::try_from(position).map_err(|_| TapeError::TooLarge)
}

/// Objects of more members than this look for repeated names with a hash set; smaller ones
/// compare names pairwise, which allocates nothing.
const PAIRWISE_NAMES: usize = 32;

impl<'t> JsonTape<'t> {
    /// A tape of `text` from nodes written in document order; where `repeats`, the names of
    /// objects marked `repeats` are checked and repeated ones shadowed.
    fn new(
        text: &'t str,
        nodes: Vec<TapeNode>,
        decoded: Vec<String>,
        repeats: bool,
    ) -> Result<JsonTape<'t>, TapeError> {
        let whole = match nodes.first() {
            Some(TapeNode::Array { end, .. } | TapeNode::Object { end, .. }) => {
                *end as usize == nodes.len()
            }
            Some(_) => nodes.len() == 1,
            None => false,
        };
        if !whole {
            return Err(TapeError::NotFollowed(
                "a tape of more or less than one value",
            ));
        }
        let mut tape = JsonTape {
            text,
            nodes,
            decoded,
            shadowed: false,
        };
        if repeats {
            tape.shadow_repeated_names();
        }
        Ok(tape)
    }

    /// The node storage, for the next tape.
    pub(crate) fn into_nodes(self) -> Vec<TapeNode> {
        self.nodes
    }

    /// The root node.
    pub(crate) fn root(&self) -> TapeRef<'_> {
        TapeRef::new(self, 0)
    }

    /// The node at `index` (`null` past the end, which a well-formed tape never reaches).
    #[inline]
    fn node(&self, index: usize) -> &TapeNode {
        self.nodes.get(index).unwrap_or(&TapeNode::Null)
    }

    /// The index of the first node after `index` and its descendants.
    #[inline]
    fn skip(&self, index: usize) -> usize {
        match self.node(index) {
            TapeNode::Array { end, .. } | TapeNode::Object { end, .. } => *end as usize,
            _ => index + 1,
        }
    }

    /// The string at `index`, if it is a string node.
    #[inline]
    fn string(&self, index: usize) -> Option<&str> {
        match *self.node(index) {
            TapeNode::Text { start, end } => self.text.get(start as usize..end as usize),
            TapeNode::Decoded(decoded) => self.decoded.get(decoded as usize).map(String::as_str),
            _ => None,
        }
    }

    /// Marks the name of every member whose name a later member of its object repeats
    /// ([`TapeNode::Shadowed`]) and counts only the others in the object's `len`.
    fn shadow_repeated_names(&mut self) {
        let mut shadowed = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if let TapeNode::Object {
                len,
                end,
                repeats: true,
            } = *node
                && len > 1
            {
                self.repeated_names(index, end as usize, len as usize, &mut shadowed);
            }
        }
        self.shadowed |= !shadowed.is_empty();
        for (object, name) in shadowed {
            if let Some(TapeNode::Object { len, .. }) = self.nodes.get_mut(object) {
                *len = len.saturating_sub(1);
            }
            if let Some(node) = self.nodes.get_mut(name) {
                *node = TapeNode::Shadowed;
            }
        }
    }

    /// Adds to `shadowed` (object index, name index) for each member of the object at
    /// `object` whose name a later member repeats.
    fn repeated_names(
        &self,
        object: usize,
        end: usize,
        members: usize,
        shadowed: &mut Vec<(usize, usize)>,
    ) {
        let names = |from: usize| {
            let mut next = from;
            std::iter::from_fn(move || {
                if next >= end {
                    return None;
                }
                let name = next;
                next = self.skip(name + 1);
                Some((name, self.string(name).unwrap_or("")))
            })
        };
        if members <= PAIRWISE_NAMES {
            for (index, name) in names(object + 1) {
                if names(self.skip(index + 1)).any(|(_, later)| later == name) {
                    shadowed.push((object, index));
                }
            }
        } else {
            let all: Vec<(usize, &str)> = names(object + 1).collect();
            let mut later = std::collections::HashSet::with_capacity(all.len());
            for (index, name) in all.into_iter().rev() {
                if !later.insert(name) {
                    shadowed.push((object, index));
                }
            }
        }
    }
}
