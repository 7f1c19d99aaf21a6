//! [`record`]: a value serialised by `serde_json`, noted into a tape as it is written.
//!
//! The formatter (`formatter`) is `serde_json`'s `CompactFormatter`, wrapped: each method
//! writes what the compact formatter writes and notes the value, so the bytes are exactly
//! those of `serde_json::to_writer` and never parsed again. This module keeps the state:
//! the nodes, the open containers and their member names.

use serde::Serialize;

use super::strings::{NameHashes, unescape};
use super::{JsonTape, TapeError, TapeNode, offset};

/// Serialises `value` as compact JSON, appending to `out` exactly the bytes
/// `serde_json::to_writer` writes, and returns the tape of the bytes appended, noted as they
/// were written. `nodes` is storage to reuse.
pub(crate) fn record<'o, T: Serialize + ?Sized>(
    value: &T,
    out: &'o mut Vec<u8>,
    nodes: Vec<TapeNode>,
) -> Result<JsonTape<'o>, RecordError> {
    let start = out.len();
    // The recorder stays in this frame (it is large; moving it costs a copy).
    let mut recorder = Recorder::new(nodes);
    value
        .serialize(&mut serde_json::Serializer::with_formatter(
            &mut *out,
            &mut recorder,
        ))
        .map_err(RecordError::Serialize)?;
    let out: &'o Vec<u8> = out;
    let text = out.get(start..).unwrap_or_default();
    recorder.finish(text).map_err(RecordError::NotFollowed)
}

/// Why [`record`] made no tape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// The value cannot be serialised to JSON.
    #[error(transparent)]
    Serialize(serde_json::Error),
    /// The value was serialised, but the recorder does not follow what it wrote: the
    /// caller [parses](JsonTape::parse) the bytes instead.
    #[error(transparent)]
    NotFollowed(TapeError),
}

/// How many containers deep [`record`] follows a value: as deep as `serde_json` reads.
const RECORDED_DEPTH: usize = 127;

/// No container is open.
const NONE_OPEN: u32 = u32::MAX;

/// The member name being written.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Name {
    /// Between `begin_object_key` and `end_object_key`.
    pub(super) open: bool,
    /// Text fragments written.
    pub(super) fragments: u32,
    /// Anything else written (an escape, a number or boolean map key).
    pub(super) other: bool,
}

/// The state of [`record`]: the nodes so far and where the formatter is.
///
/// While a container is open its node holds, besides its children so far (`len`), the
/// index of the container it is in (`end`) and, for an object, whether one of its names
/// was written otherwise than as one fragment of text (`repeats`): the open containers
/// need no storage of their own.
pub(crate) struct Recorder {
    pub(super) nodes: Vec<TapeNode>,
    /// The innermost open container's node, or [`NONE_OPEN`].
    innermost: u32,
    depth: usize,
    /// The member names of the open objects, one per member.
    pub(super) names: NameHashes,
    pub(super) name: Name,
    /// Some object's names may repeat.
    repeats: bool,
    /// Bytes written so far.
    pub(super) written: usize,
    /// Inside a string (a map key's number or bool is written inside one).
    pub(super) in_string: bool,
    pub(super) string_start: usize,
    pub(super) string_escaped: bool,
    /// Strings with escapes, decoded by [`Recorder::finish`]: (node index, the string's
    /// content between its quotes as byte offsets).
    pub(super) escaped: Vec<(usize, u32, u32)>,
    /// Why the tape does not describe what was written, if it does not.
    lost: Option<&'static str>,
}

impl Recorder {
    #[inline]
    fn new(mut nodes: Vec<TapeNode>) -> Recorder {
        nodes.clear();
        Recorder {
            nodes,
            innermost: NONE_OPEN,
            depth: 0,
            names: NameHashes::default(),
            name: Name::default(),
            repeats: false,
            written: 0,
            in_string: false,
            string_start: 0,
            string_escaped: false,
            escaped: Vec::new(),
            lost: None,
        }
    }

    /// The tape of `text`, the bytes [`record`] appended; or why the recorder does not
    /// follow what the value wrote (raw JSON, 128-bit integers out of the 64-bit range,
    /// arbitrary-precision numbers, nesting deeper than `serde_json` reads).
    fn finish<'t>(&mut self, text: &'t [u8]) -> Result<JsonTape<'t>, TapeError> {
        let (lost, depth, written, repeats) = (self.lost, self.depth, self.written, self.repeats);
        let mut nodes = std::mem::take(&mut self.nodes);
        let escaped = std::mem::take(&mut self.escaped);
        if let Some(reason) = lost {
            return Err(TapeError::NotFollowed(reason));
        }
        if depth != 0 || written != text.len() {
            return Err(TapeError::NotFollowed(
                "bytes other than those the recorder saw written",
            ));
        }
        let text = std::str::from_utf8(text)?;
        let mut decoded = Vec::with_capacity(escaped.len());
        for (index, start, end) in escaped {
            let content = text
                .as_bytes()
                .get(start as usize..end as usize)
                .ok_or(TapeError::NotFollowed("a string outside the text"))?;
            let string = unescape(content, start as usize)?;
            let slot = nodes
                .get_mut(index)
                .ok_or(TapeError::NotFollowed("a string outside the tape"))?;
            *slot = TapeNode::Decoded(offset(decoded.len())?);
            decoded.push(string);
        }
        JsonTape::new(text, nodes, decoded, repeats)
    }

    /// Notes that the tape no longer describes what is written, for `reason`.
    pub(super) fn lose(&mut self, reason: &'static str) {
        self.lost.get_or_insert(reason);
    }

    /// Whether the tape still describes what is written.
    pub(super) fn following(&self) -> bool {
        self.lost.is_none()
    }

    /// Notes a scalar value (a number or literal inside a string is part of the string).
    pub(super) fn scalar(&mut self, node: impl FnOnce() -> Option<TapeNode>, what: &'static str) {
        if self.in_string {
            // A map key written as a number or boolean.
            self.name.other |= self.name.open;
            return;
        }
        if self.lost.is_some() {
            return;
        }
        match node() {
            Some(node) => self.nodes.push(node),
            None => self.lose(what),
        }
    }

    /// Opens a container: `object`, else an array.
    pub(super) fn open(&mut self, object: bool) {
        if self.in_string {
            self.lose("a container inside a string");
        }
        if self.depth == RECORDED_DEPTH {
            self.lose("nesting deeper than serde_json reads");
        }
        if self.lost.is_some() {
            return;
        }
        let Ok(index) = u32::try_from(self.nodes.len()) else {
            return self.lose("more nodes than u32 counts");
        };
        let (len, end) = (0, self.innermost);
        self.nodes.push(if object {
            TapeNode::Object {
                len,
                end,
                repeats: false,
            }
        } else {
            TapeNode::Array { len, end }
        });
        self.innermost = index;
        self.depth += 1;
    }

    /// Closes the innermost container.
    pub(super) fn close(&mut self) {
        if self.lost.is_some() {
            return;
        }
        let Ok(end_index) = u32::try_from(self.nodes.len()) else {
            return self.lose("more nodes than u32 counts");
        };
        let names = &mut self.names;
        let outer = match self.nodes.get_mut(self.innermost as usize) {
            Some(TapeNode::Array { end, .. }) => std::mem::replace(end, end_index),
            Some(TapeNode::Object { len, end, repeats }) => {
                let start = names.start().saturating_sub(*len as usize);
                *repeats |= names.close(start);
                self.repeats |= *repeats;
                std::mem::replace(end, end_index)
            }
            _ => return self.lose("a container closed that was not open"),
        };
        self.innermost = outer;
        self.depth = self.depth.saturating_sub(1);
    }

    /// One more element or member in the innermost container.
    #[inline]
    pub(super) fn count_child(&mut self) {
        match self.nodes.get_mut(self.innermost as usize) {
            Some(TapeNode::Array { len, .. } | TapeNode::Object { len, .. }) => *len += 1,
            _ => self.lose("an element outside a container"),
        }
    }

    /// The member name just written: one more name of the innermost object (the formatter
    /// hashed its one text fragment), or, when it was written otherwise, a mark that the
    /// object's names are to be checked one by one.
    pub(super) fn end_name(&mut self) {
        let name = std::mem::take(&mut self.name);
        if name.fragments == 0 {
            self.names.push(b"");
        }
        if (name.other || name.fragments > 1)
            && let Some(TapeNode::Object { repeats, .. }) =
                self.nodes.get_mut(self.innermost as usize)
        {
            *repeats = true;
        }
    }
}
