//! A read-only view of JSON text, for validating the exact bytes a publish sends.
//!
//! Publishing serialises an event once, to the bytes it sends, and validates those bytes.
//! Going through a `serde_json::Value` for that (serialising to one, or parsing the bytes
//! into one) costs several times the serialisation itself: every key and string is
//! allocated. A [`JsonTape`] is instead one flat vector of nodes in document order: strings
//! are ranges of the text (only strings with escapes are decoded into their own
//! allocation), and a container records where its descendants end, so walking it follows
//! no pointers. `jsonschema` validates it through its custom-representation traits
//! ([`TapeJson`]).
//!
//! A tape is made two ways:
//! - [`record`] serialises a value with `serde_json` through a formatter that writes exactly
//!   what `serde_json::to_writer` writes and notes each value as it goes, so the bytes are
//!   never parsed;
//! - [`JsonTape::parse`] reads any JSON text, strictly (RFC 8259: UTF-8, no trailing commas,
//!   no leading zeros, no control characters in strings, at most 127 levels of nesting as
//!   `serde_json`), with numbers read the way `serde_json` reads them.
//!
//! Either way the tape holds the document a consumer gets by parsing the bytes with
//! `serde_json` (a recorded float is the `f64` written, which `serde_json` reads back
//! exactly with its `float_roundtrip` feature and otherwise at worst one unit in the last
//! place away).

use std::borrow::Cow;
use std::io::{self, Write as _};

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
use serde_json::{Number, Value};

/// The deepest nesting read: `serde_json`'s recursion limit refuses a 128th level.
const MAX_DEPTH: usize = 127;

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
    /// A string with escapes, between its quotes at `text[start..end]`; only while
    /// recording, [`Recorder::finish`] decodes it.
    Escaped {
        start: u32,
        end: u32,
    },
    /// A string with escapes, decoded: `decoded[index]`.
    Decoded(u32),
    /// `len` elements; `end` is the index of the first node after the last descendant.
    Array {
        len: u32,
        end: u32,
    },
    /// `len` members (2 × `len` children); `end` as for arrays.
    Object {
        len: u32,
        end: u32,
    },
}

/// JSON text as a flat list of nodes (see the module documentation).
#[derive(Debug)]
pub(crate) struct JsonTape<'t> {
    text: &'t str,
    nodes: Vec<TapeNode>,
    decoded: Vec<String>,
}

/// Why a text could not be read; the caller falls back to `serde_json` for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotJson;

fn offset(position: usize) -> Result<u32, NotJson> {
    u32::try_from(position).map_err(|_| NotJson)
}

impl<'t> JsonTape<'t> {
    /// Reads JSON text, or says it is not JSON (RFC 8259, within 127 levels of nesting).
    /// `nodes` is storage to reuse (cleared first).
    pub(crate) fn parse(bytes: &'t [u8], mut nodes: Vec<TapeNode>) -> Result<Self, NotJson> {
        let text = std::str::from_utf8(bytes).map_err(|_| NotJson)?;
        nodes.clear();
        let mut reader = Reader {
            bytes,
            position: 0,
            nodes,
            decoded: Vec::new(),
        };
        reader.skip_whitespace();
        reader.value(0)?;
        reader.skip_whitespace();
        if reader.position != bytes.len() {
            return Err(NotJson);
        }
        Ok(JsonTape {
            text,
            nodes: reader.nodes,
            decoded: reader.decoded,
        })
    }

    /// The node storage, for the next tape.
    pub(crate) fn into_nodes(self) -> Vec<TapeNode> {
        self.nodes
    }

    /// The root node.
    pub(crate) fn root(&self) -> TapeRef<'_> {
        TapeRef {
            tape: self,
            index: 0,
        }
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

    /// The string at `index`, which must be a string node.
    #[inline]
    fn string(&self, index: usize) -> &str {
        match *self.node(index) {
            TapeNode::Text { start, end } => {
                self.text.get(start as usize..end as usize).unwrap_or("")
            }
            TapeNode::Decoded(decoded) => self
                .decoded
                .get(decoded as usize)
                .map_or("", String::as_str),
            _ => "",
        }
    }
}

/// Serialises `value` as compact JSON, appending to `out` exactly the bytes
/// `serde_json::to_writer` writes, noting each value as it goes; [`Recorder::finish`] with
/// the bytes appended makes the tape. `nodes` is storage to reuse.
pub(crate) fn record<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    nodes: Vec<TapeNode>,
) -> Result<Recorder, serde_json::Error> {
    let mut recorder = Recorder::new(nodes);
    value.serialize(&mut serde_json::Serializer::with_formatter(
        out,
        &mut recorder,
    ))?;
    Ok(recorder)
}

/// How many containers deep [`record`] follows a value.
const RECORDED_DEPTH: usize = 64;

/// The state of [`record`]: the nodes so far and where the formatter is.
pub(crate) struct Recorder {
    nodes: Vec<TapeNode>,
    /// The open containers, innermost last: (node index, children so far) in
    /// `open[..depth]`.
    open: [(u32, u32); RECORDED_DEPTH],
    depth: usize,
    /// Bytes written so far.
    written: usize,
    /// Inside a string (a map key's number or bool is written inside one).
    in_string: bool,
    string_start: usize,
    string_escaped: bool,
    /// Something was written that the tape does not describe.
    lost: bool,
}

impl Recorder {
    fn new(mut nodes: Vec<TapeNode>) -> Recorder {
        nodes.clear();
        Recorder {
            nodes,
            open: [(0, 0); RECORDED_DEPTH],
            depth: 0,
            written: 0,
            in_string: false,
            string_start: 0,
            string_escaped: false,
            lost: false,
        }
    }

    /// The tape of `text`, the bytes [`record`] appended; or the node storage back when
    /// the value wrote something the recorder does not follow (raw JSON, 128-bit integers
    /// out of the 64-bit range, arbitrary-precision numbers, nesting deeper than 64), for
    /// the caller to [parse](JsonTape::parse) instead.
    pub(crate) fn finish(self, text: &[u8]) -> Result<JsonTape<'_>, Vec<TapeNode>> {
        let Recorder {
            mut nodes,
            lost,
            depth,
            written,
            ..
        } = self;
        let whole = match nodes.first() {
            Some(TapeNode::Array { end, .. } | TapeNode::Object { end, .. }) => {
                *end as usize == nodes.len()
            }
            Some(_) => nodes.len() == 1,
            None => false,
        };
        if lost || depth != 0 || !whole || written != text.len() {
            return Err(nodes);
        }
        let Ok(text) = std::str::from_utf8(text) else {
            return Err(nodes);
        };
        let mut decoded = Vec::new();
        for node in &mut nodes {
            if let TapeNode::Escaped { start, end } = *node {
                let Some(Ok(string)) = text
                    .as_bytes()
                    .get(start as usize..end as usize)
                    .map(unescape)
                else {
                    return Err(nodes);
                };
                let Ok(index) = u32::try_from(decoded.len()) else {
                    return Err(nodes);
                };
                decoded.push(string);
                *node = TapeNode::Decoded(index);
            }
        }
        Ok(JsonTape {
            text,
            nodes,
            decoded,
        })
    }

    /// Notes a scalar value (a number or literal inside a string is part of the string).
    fn scalar(&mut self, node: impl FnOnce() -> Option<TapeNode>) {
        if self.in_string || self.lost {
            return;
        }
        match node() {
            Some(node) => self.nodes.push(node),
            None => self.lost = true,
        }
    }

    fn open(&mut self, node: TapeNode) {
        if self.in_string || self.depth == RECORDED_DEPTH {
            self.lost = true;
        }
        if self.lost {
            return;
        }
        match u32::try_from(self.nodes.len()) {
            Ok(index) => {
                self.open[self.depth] = (index, 0);
                self.depth += 1;
                self.nodes.push(node);
            }
            Err(_) => self.lost = true,
        }
    }

    fn close(&mut self) {
        if self.lost {
            return;
        }
        let Some(depth) = self.depth.checked_sub(1) else {
            self.lost = true;
            return;
        };
        self.depth = depth;
        let (index, children) = self.open[depth];
        let Ok(end_index) = u32::try_from(self.nodes.len()) else {
            self.lost = true;
            return;
        };
        match &mut self.nodes[index as usize] {
            TapeNode::Array { len, end } | TapeNode::Object { len, end } => {
                (*len, *end) = (children, end_index);
            }
            _ => self.lost = true,
        }
    }

    /// One more element or member in the innermost container.
    #[inline]
    fn count_child(&mut self) {
        match self.depth.checked_sub(1) {
            Some(depth) => self.open[depth].1 += 1,
            None => self.lost = true,
        }
    }

    /// Writes through `write` (a [`CompactFormatter`] method), counting the bytes.
    fn write<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        write: impl FnOnce(&mut Counting<'_, W>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut counting = Counting {
            inner: writer,
            written: &mut self.written,
        };
        write(&mut counting)
    }
}

/// A writer that counts what passes through.
pub(crate) struct Counting<'w, W: ?Sized> {
    inner: &'w mut W,
    written: &'w mut usize,
}

impl<W: ?Sized + io::Write> io::Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        *self.written += written;
        Ok(written)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        *self.written += buf.len();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Each method writes what [`CompactFormatter`]'s does and notes the value.
impl Formatter for &mut Recorder {
    fn write_null<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.scalar(|| Some(TapeNode::Null));
        self.write(writer, |w| CompactFormatter.write_null(w))
    }

    fn write_bool<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: bool) -> io::Result<()> {
        self.scalar(|| Some(TapeNode::Bool(value)));
        self.write(writer, |w| CompactFormatter.write_bool(w, value))
    }

    fn write_i8<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i8) -> io::Result<()> {
        self.write_i64(writer, i64::from(value))
    }

    fn write_i16<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i16) -> io::Result<()> {
        self.write_i64(writer, i64::from(value))
    }

    fn write_i32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i32) -> io::Result<()> {
        self.write_i64(writer, i64::from(value))
    }

    fn write_i64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i64) -> io::Result<()> {
        // A consumer reads a non-negative integer as unsigned: `Number::from` does the same.
        self.scalar(|| Some(TapeNode::Number(Number::from(value))));
        self.write(writer, |w| CompactFormatter.write_i64(w, value))
    }

    fn write_i128<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i128) -> io::Result<()> {
        self.scalar(|| {
            i64::try_from(value)
                .ok()
                .map(|value| TapeNode::Number(Number::from(value)))
                .or_else(|| {
                    u64::try_from(value)
                        .ok()
                        .map(|value| TapeNode::Number(Number::from(value)))
                })
        });
        self.write(writer, |w| CompactFormatter.write_i128(w, value))
    }

    fn write_u8<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u8) -> io::Result<()> {
        self.write_u64(writer, u64::from(value))
    }

    fn write_u16<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u16) -> io::Result<()> {
        self.write_u64(writer, u64::from(value))
    }

    fn write_u32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u32) -> io::Result<()> {
        self.write_u64(writer, u64::from(value))
    }

    fn write_u64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u64) -> io::Result<()> {
        self.scalar(|| Some(TapeNode::Number(Number::from(value))));
        self.write(writer, |w| CompactFormatter.write_u64(w, value))
    }

    fn write_u128<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u128) -> io::Result<()> {
        self.scalar(|| {
            u64::try_from(value)
                .ok()
                .map(|value| TapeNode::Number(Number::from(value)))
        });
        self.write(writer, |w| CompactFormatter.write_u128(w, value))
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // Written in f32's shortest digits, which a consumer reads back as the nearest f64:
        // read them back the same way.
        let mut digits = Vec::with_capacity(24);
        CompactFormatter.write_f32(&mut digits, value)?;
        self.scalar(|| {
            std::str::from_utf8(&digits)
                .ok()
                .and_then(|text| text.parse::<f64>().ok())
                .and_then(Number::from_f64)
                .map(TapeNode::Number)
        });
        self.write(writer, |w| w.write_all(&digits))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        self.scalar(|| Number::from_f64(value).map(TapeNode::Number));
        self.write(writer, |w| CompactFormatter.write_f64(w, value))
    }

    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        self.scalar(|| None);
        self.write(writer, |w| CompactFormatter.write_number_str(w, value))
    }

    fn begin_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        if self.in_string {
            self.lost = true;
        }
        self.write(writer, |w| CompactFormatter.begin_string(w))?;
        self.in_string = true;
        self.string_start = self.written;
        self.string_escaped = false;
        Ok(())
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.in_string = false;
        let (start, end) = (offset(self.string_start), offset(self.written));
        let escaped = self.string_escaped;
        self.scalar(|| {
            let (start, end) = (start.ok()?, end.ok()?);
            Some(if escaped {
                TapeNode::Escaped { start, end }
            } else {
                TapeNode::Text { start, end }
            })
        });
        self.write(writer, |w| CompactFormatter.end_string(w))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.write(writer, |w| {
            CompactFormatter.write_string_fragment(w, fragment)
        })
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        self.string_escaped = true;
        self.write(writer, |w| {
            CompactFormatter.write_char_escape(w, char_escape)
        })
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(TapeNode::Array { len: 0, end: 0 });
        self.write(writer, |w| CompactFormatter.begin_array(w))
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close();
        self.write(writer, |w| CompactFormatter.end_array(w))
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.count_child();
        self.write(writer, |w| CompactFormatter.begin_array_value(w, first))
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.write(writer, |w| CompactFormatter.end_array_value(w))
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(TapeNode::Object { len: 0, end: 0 });
        self.write(writer, |w| CompactFormatter.begin_object(w))
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close();
        self.write(writer, |w| CompactFormatter.end_object(w))
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.count_child();
        self.write(writer, |w| CompactFormatter.begin_object_key(w, first))
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.write(writer, |w| CompactFormatter.end_object_key(w))
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.write(writer, |w| CompactFormatter.begin_object_value(w))
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.write(writer, |w| CompactFormatter.end_object_value(w))
    }

    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        self.lost = true;
        self.write(writer, |w| CompactFormatter.write_raw_fragment(w, fragment))
    }
}

/// The reading state of [`JsonTape::parse`].
struct Reader<'t> {
    bytes: &'t [u8],
    position: usize,
    nodes: Vec<TapeNode>,
    decoded: Vec<String>,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.position += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), NotJson> {
        if self.peek() == Some(byte) {
            self.position += 1;
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    fn literal(&mut self, word: &[u8], node: TapeNode) -> Result<(), NotJson> {
        if self.bytes[self.position..].starts_with(word) {
            self.position += word.len();
            self.nodes.push(node);
            Ok(())
        } else {
            Err(NotJson)
        }
    }

    /// One value at `depth` containers deep; the position is on its first byte.
    fn value(&mut self, depth: usize) -> Result<(), NotJson> {
        match self.peek().ok_or(NotJson)? {
            b'{' => self.container(depth + 1, b'}'),
            b'[' => self.container(depth + 1, b']'),
            b'"' => self.string(),
            b't' => self.literal(b"true", TapeNode::Bool(true)),
            b'f' => self.literal(b"false", TapeNode::Bool(false)),
            b'n' => self.literal(b"null", TapeNode::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(NotJson),
        }
    }

    /// An object (closed by `}`) or array (`]`); the position is on its opening bracket.
    fn container(&mut self, depth: usize, close: u8) -> Result<(), NotJson> {
        if depth > MAX_DEPTH {
            return Err(NotJson);
        }
        let object = close == b'}';
        let at = self.nodes.len();
        self.nodes.push(TapeNode::Null);
        self.position += 1;
        self.skip_whitespace();
        let mut len = 0;
        if self.peek() == Some(close) {
            self.position += 1;
        } else {
            loop {
                if object {
                    if self.peek() != Some(b'"') {
                        return Err(NotJson);
                    }
                    self.string()?;
                    self.skip_whitespace();
                    self.expect(b':')?;
                    self.skip_whitespace();
                }
                self.value(depth)?;
                len += 1;
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.position += 1;
                        self.skip_whitespace();
                    }
                    Some(byte) if byte == close => {
                        self.position += 1;
                        break;
                    }
                    _ => return Err(NotJson),
                }
            }
        }
        let (len, end) = (offset(len)?, offset(self.nodes.len())?);
        self.nodes[at] = if object {
            TapeNode::Object { len, end }
        } else {
            TapeNode::Array { len, end }
        };
        Ok(())
    }

    /// A string; the position is on its opening quote.
    fn string(&mut self) -> Result<(), NotJson> {
        let start = self.position + 1;
        let mut position = start;
        let mut escaped = false;
        loop {
            position = skip_plain(self.bytes, position);
            match self.bytes.get(position).copied().ok_or(NotJson)? {
                b'"' => break,
                b'\\' => {
                    // The escape is checked when decoding; skip the escaped byte.
                    escaped = true;
                    position += 2;
                }
                _ => return Err(NotJson),
            }
        }
        self.position = position + 1;
        if escaped {
            let decoded = unescape(&self.bytes[start..position])?;
            self.decoded.push(decoded);
            let index = offset(self.decoded.len() - 1)?;
            self.nodes.push(TapeNode::Decoded(index));
        } else {
            let (start, end) = (offset(start)?, offset(position)?);
            self.nodes.push(TapeNode::Text { start, end });
        }
        Ok(())
    }

    /// A number, read as `serde_json` reads it: an integer that fits `u64` (or, negative,
    /// `i64`) is one; anything else, `-0` included, is an `f64`, which must be finite.
    fn number(&mut self) -> Result<(), NotJson> {
        let start = self.position;
        let digits = |reader: &mut Self| {
            let from = reader.position;
            while let Some(b'0'..=b'9') = reader.peek() {
                reader.position += 1;
            }
            reader.position - from
        };
        let negative = self.peek() == Some(b'-');
        if negative {
            self.position += 1;
        }
        let integer_start = self.position;
        let integer_digits = digits(self);
        if integer_digits == 0 || (integer_digits > 1 && self.bytes[integer_start] == b'0') {
            return Err(NotJson);
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.position += 1;
            if digits(self) == 0 {
                return Err(NotJson);
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.position += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.position += 1;
            }
            if digits(self) == 0 {
                return Err(NotJson);
            }
            integer = false;
        }
        // ASCII digits and signs: always valid UTF-8.
        let literal =
            std::str::from_utf8(&self.bytes[start..self.position]).map_err(|_| NotJson)?;
        let exact = if !integer {
            None
        } else if negative {
            literal
                .parse::<i64>()
                .ok()
                .filter(|value| *value != 0)
                .map(Number::from)
        } else {
            literal.parse::<u64>().ok().map(Number::from)
        };
        let number = match exact {
            Some(number) => number,
            None => literal
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or(NotJson)?,
        };
        self.nodes.push(TapeNode::Number(number));
        Ok(())
    }
}

/// Decodes the content of a JSON string (between its quotes), checking every escape and
/// refusing control characters. A lone surrogate is not a character: refused, as
/// `serde_json` refuses it.
fn unescape(content: &[u8]) -> Result<String, NotJson> {
    let hex4 = |at: usize| -> Result<u32, NotJson> {
        let digits = content.get(at..at + 4).ok_or(NotJson)?;
        let mut value = 0;
        for digit in digits {
            value = value * 16 + char::from(*digit).to_digit(16).ok_or(NotJson)?;
        }
        Ok(value)
    };
    let mut out = Vec::with_capacity(content.len());
    let mut position = 0;
    while let Some(&byte) = content.get(position) {
        match byte {
            b'\\' => {
                let escaped = match content.get(position + 1).copied().ok_or(NotJson)? {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let first = hex4(position + 2)?;
                        if (0xDC00..0xE000).contains(&first) {
                            return Err(NotJson);
                        }
                        let code = if (0xD800..0xDC00).contains(&first) {
                            if content.get(position + 6..position + 8) != Some(b"\\u") {
                                return Err(NotJson);
                            }
                            let second = hex4(position + 8)?;
                            if !(0xDC00..0xE000).contains(&second) {
                                return Err(NotJson);
                            }
                            position += 6;
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        } else {
                            first
                        };
                        position += 4;
                        char::from_u32(code).ok_or(NotJson)?
                    }
                    _ => return Err(NotJson),
                };
                let mut buffer = [0; 4];
                out.extend_from_slice(escaped.encode_utf8(&mut buffer).as_bytes());
                position += 2;
            }
            0x00..=0x1f => return Err(NotJson),
            _ => {
                out.push(byte);
                position += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| NotJson)
}

/// The index of the first byte at or after `from` that is `"`, `\` or a control character
/// (or the end), eight bytes at a time.
fn skip_plain(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `word` is flagged when it is below `n` (n ≤ 0x80); the lowest flag is exact.
    let below = |word: u64, n: u64| word.wrapping_sub(ONES * n) & !word & HIGHS;
    let mut position = from;
    while let Some(chunk) = bytes.get(position..position + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let special = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if special != 0 {
            return position + (special.trailing_zeros() / 8) as usize;
        }
        position += 8;
    }
    while let Some(&byte) = bytes.get(position) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        position += 1;
    }
    position
}

/// A node of a [`JsonTape`]: what `jsonschema` walks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeRef<'a> {
    tape: &'a JsonTape<'a>,
    index: usize,
}

impl<'a> TapeRef<'a> {
    #[inline]
    fn node(&self) -> &'a TapeNode {
        self.tape.node(self.index)
    }

    /// The same value as a `serde_json::Value` (error paths and comparisons only).
    pub(crate) fn to_value(self) -> Value {
        match self.node() {
            TapeNode::Null => Value::Null,
            TapeNode::Bool(boolean) => Value::Bool(*boolean),
            TapeNode::Number(number) => Value::Number(number.clone()),
            TapeNode::Text { .. } | TapeNode::Escaped { .. } | TapeNode::Decoded(_) => {
                Value::String(self.tape.string(self.index).to_owned())
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
        let tape = buffer.insert(JsonTape {
            text: "",
            nodes: vec![TapeNode::Decoded(0)],
            decoded: vec![string.to_owned()],
        });
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
        match self.node() {
            TapeNode::Text { .. } | TapeNode::Escaped { .. } | TapeNode::Decoded(_) => {
                Some(Cow::Borrowed(self.tape.string(self.index)))
            }
            _ => None,
        }
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
            TapeNode::Null => JsonType::Null,
            TapeNode::Bool(_) => JsonType::Boolean,
            TapeNode::Number(_) => JsonType::Number,
            TapeNode::Text { .. } | TapeNode::Escaped { .. } | TapeNode::Decoded(_) => {
                JsonType::String
            }
            TapeNode::Array { .. } => JsonType::Array,
            TapeNode::Object { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` of unit variants compares strings: no conversion for the common cases.
        match (self.node(), expected) {
            (
                TapeNode::Text { .. } | TapeNode::Escaped { .. } | TapeNode::Decoded(_),
                Value::String(other),
            ) => self.tape.string(self.index) == other,
            (TapeNode::Text { .. } | TapeNode::Escaped { .. } | TapeNode::Decoded(_), _) => false,
            (TapeNode::Bool(boolean), _) => expected.as_bool() == Some(*boolean),
            (TapeNode::Null, _) => expected.is_null(),
            (TapeNode::Number(number), Value::Number(other)) => {
                jsonschema::json::cmp::equal_numbers(number, other)
            }
            (TapeNode::Number(_), _) => false,
            _ => jsonschema::json::cmp::equal(&TapeRef::to_value(*self), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(TapeRef::to_value(*self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref::<JsonTape<'a>>(self.tape) as usize,
            u32::try_from(self.index).unwrap_or(u32::MAX),
        ))
    }
}

/// An object node of a [`JsonTape`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeObject<'a>(TapeRef<'a>);

/// The members of a [`TapeObject`], in text order.
#[derive(Debug)]
pub(crate) struct Members<'a> {
    tape: &'a JsonTape<'a>,
    next: usize,
    left: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeRef<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = self.tape.string(self.next);
        let value = TapeRef {
            tape: self.tape,
            index: self.next + 1,
        };
        self.next = self.tape.skip(self.next + 1);
        Some((name, value))
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
        // The last of repeated names, as `serde_json::Value` (and so a consumer) keeps it.
        self.members()
            .filter(|(name, _)| *name == key.as_str())
            .last()
            .map(|(_, value)| value)
    }

    fn members(&self) -> Members<'a> {
        Members {
            tape: self.0.tape,
            next: self.0.index + 1,
            left: self.len(),
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
        let element = TapeRef {
            tape: self.tape,
            index: self.next,
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn same_as_serde_json(text: &str) {
        let tape = JsonTape::parse(text.as_bytes(), Vec::new());
        let expected = serde_json::from_str::<Value>(text);
        match (&tape, &expected) {
            (Ok(tape), Ok(expected)) => assert_eq!(&tape.root().to_value(), expected, "{text}"),
            (Err(_), Err(_)) => {}
            _ => panic!("{text}: tape {tape:?}, serde_json {expected:?}"),
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"a":"plain","b\n":"esc\"aped \u00e9 \ud83d\ude00 \/","c":[1,-2,2.5,true,null]}"#,
            r#" { "a" : [ ] , "b" : { } , "c" : [ [ 1 ] , { "d" : "" } ] } "#,
            "0",
            "-0",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e2",
            "1E+2",
            "-1.5e-3",
            "123.456",
            "1e400",
            "\"é ✓\"",
            "true",
            "null",
            r#"{"a":1,"a":2}"#,
        ] {
            same_as_serde_json(text);
        }
        let number = |text: &str| {
            JsonTape::parse(text.as_bytes(), Vec::new())
                .unwrap()
                .root()
                .to_value()
        };
        assert!(
            number("-0")
                .as_f64()
                .is_some_and(|v| v == 0.0 && v.is_sign_negative())
        );
        assert!(number("-0").as_i64().is_none());
        assert_eq!(number("7").as_u64(), Some(7));
        assert_eq!(number("-7").as_i64(), Some(-7));
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
            "NaN",
        ] {
            assert!(
                JsonTape::parse(text.as_bytes(), Vec::new()).is_err(),
                "{text:?}"
            );
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
        assert!(JsonTape::parse(b"\"\xff\"", Vec::new()).is_err());
        let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert!(JsonTape::parse(deep(127).as_bytes(), Vec::new()).is_ok());
        assert!(JsonTape::parse(deep(128).as_bytes(), Vec::new()).is_err());
        assert!(serde_json::from_str::<Value>(&deep(127)).is_ok());
        assert!(serde_json::from_str::<Value>(&deep(128)).is_err());
    }

    /// Serialises `value` with the recorder and checks the bytes and the tape against
    /// `serde_json`.
    fn records_like_serde_json<T: Serialize>(value: &T) -> bool {
        let mut out = b"prefix".to_vec();
        let recorder = record(value, &mut out, Vec::new()).unwrap();
        assert_eq!(&out[6..], serde_json::to_vec(value).unwrap().as_slice());
        let parsed: Value = serde_json::from_slice(&out[6..]).unwrap();
        match recorder.finish(&out[6..]) {
            Ok(tape) => {
                assert_eq!(tape.root().to_value(), parsed);
                true
            }
            Err(_) => false,
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
        // What the tape does not follow is left to the parser.
        assert!(!records_like_serde_json(&(u128::from(u64::MAX) + 1)));
        let mut deep = json!(1);
        for _ in 0..RECORDED_DEPTH + 1 {
            deep = json!([deep]);
        }
        assert!(!records_like_serde_json(&deep));
    }

    /// A pseudo-random JSON document (a fixed sequence per seed): nested containers,
    /// strings with escapes and non-ASCII, integers of every range, floats.
    fn document(seed: &mut u64, depth: u32) -> Value {
        let mut next = || {
            *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            *seed >> 33
        };
        let strings = [
            "",
            "plain",
            "quote\"",
            "line\nbreak",
            "é✓😀",
            "\u{1}ctl",
            "back\\",
        ];
        match next() % if depth > 4 { 6 } else { 8 } {
            0 => Value::Null,
            1 => Value::Bool(next() % 2 == 0),
            2 => json!(next()),
            3 => json!(-(next() as i64) - 1),
            4 => json!((next() as f64) / 7.0 - 1e6),
            5 => json!(strings[next() as usize % strings.len()]),
            6 => Value::Array((0..next() % 4).map(|_| document(seed, depth + 1)).collect()),
            _ => Value::Object(
                (0..next() % 4)
                    .map(|i| {
                        (
                            format!("{}{i}", strings[i as usize % strings.len()]),
                            document(seed, depth + 1),
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn recorded_and_parsed_tapes_hold_what_serde_json_reads() {
        let mut seed = 7;
        for _ in 0..2000 {
            let value = document(&mut seed, 0);
            let mut out = Vec::new();
            let recorder = record(&value, &mut out, Vec::new()).unwrap();
            let parsed: Value = serde_json::from_slice(&out).unwrap();
            let tape = recorder.finish(&out).unwrap();
            assert_eq!(tape.root().to_value(), parsed, "{value}");
            let reread = JsonTape::parse(&out, Vec::new()).unwrap();
            assert_eq!(reread.root().to_value(), parsed, "{value}");
        }
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
}
