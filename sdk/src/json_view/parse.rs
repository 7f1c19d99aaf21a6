//! [`JsonTape::parse`]: JSON text read into a tape.
//!
//! A strict RFC 8259 reader that accepts exactly what `serde_json::from_slice` accepts
//! (UTF-8; no trailing commas, leading zeros or control characters in strings; at most
//! 127 levels of nesting) and reads numbers as it does. It is hand-written because
//! `serde_json`'s own parser, driven through a visitor into the same tape, took about 1.5×
//! as long on a typical event; the generated cases of `tests_differential` hold it to
//! `serde_json`.

use serde_json::Number;

use super::strings::{NameHashes, skip_plain, unescape};
use super::{JsonTape, TapeError, TapeNode, offset};

/// The deepest nesting read: `serde_json`'s recursion limit refuses a 128th level.
const MAX_DEPTH: usize = 127;

impl<'t> JsonTape<'t> {
    /// Reads JSON text as `serde_json::from_slice` does, or says why not. `nodes` is
    /// storage to reuse (cleared first).
    pub(crate) fn parse(bytes: &'t [u8], mut nodes: Vec<TapeNode>) -> Result<Self, TapeError> {
        let text = std::str::from_utf8(bytes)?;
        nodes.clear();
        let mut reader = Reader {
            bytes,
            position: 0,
            nodes,
            decoded: Vec::new(),
            names: NameHashes::default(),
            repeats: false,
        };
        reader.skip_whitespace();
        reader.value(0)?;
        reader.skip_whitespace();
        if reader.position != bytes.len() {
            return Err(reader.syntax());
        }
        JsonTape::new(text, reader.nodes, reader.decoded, reader.repeats)
    }
}

/// The reading state of [`JsonTape::parse`].
struct Reader<'t> {
    bytes: &'t [u8],
    position: usize,
    nodes: Vec<TapeNode>,
    decoded: Vec<String>,
    names: NameHashes,
    /// Some object's names may repeat.
    repeats: bool,
}

impl Reader<'_> {
    fn syntax(&self) -> TapeError {
        TapeError::Syntax { at: self.position }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.position += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), TapeError> {
        if self.peek() == Some(byte) {
            self.position += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    fn literal(&mut self, word: &[u8], node: TapeNode) -> Result<(), TapeError> {
        let rest = self.bytes.get(self.position..).unwrap_or_default();
        if rest.starts_with(word) {
            self.position += word.len();
            self.nodes.push(node);
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// One value at `depth` containers deep; the position is on its first byte.
    fn value(&mut self, depth: usize) -> Result<(), TapeError> {
        match self.peek() {
            Some(b'{') => self.container(depth + 1, b'}'),
            Some(b'[') => self.container(depth + 1, b']'),
            Some(b'"') => self.string(false),
            Some(b't') => self.literal(b"true", TapeNode::Bool(true)),
            Some(b'f') => self.literal(b"false", TapeNode::Bool(false)),
            Some(b'n') => self.literal(b"null", TapeNode::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.syntax()),
        }
    }

    /// An object (closed by `}`) or array (`]`); the position is on its opening bracket.
    fn container(&mut self, depth: usize, close: u8) -> Result<(), TapeError> {
        if depth > MAX_DEPTH {
            return Err(self.syntax());
        }
        let object = close == b'}';
        let at = self.nodes.len();
        let names = self.names.start();
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
                        return Err(self.syntax());
                    }
                    self.string(true)?;
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
                    _ => return Err(self.syntax()),
                }
            }
        }
        let (len, end) = (offset(len)?, offset(self.nodes.len())?);
        let node = if object {
            let repeats = self.names.close(names);
            self.repeats |= repeats;
            TapeNode::Object { len, end, repeats }
        } else {
            TapeNode::Array { len, end }
        };
        match self.nodes.get_mut(at) {
            Some(slot) => *slot = node,
            None => return Err(TapeError::NotFollowed("a container outside the tape")),
        }
        Ok(())
    }

    /// A string, an object member's name if `name`; the position is on its opening quote.
    fn string(&mut self, name: bool) -> Result<(), TapeError> {
        let start = self.position + 1;
        let mut position = start;
        let mut escaped = false;
        loop {
            position = skip_plain(self.bytes, position);
            match self.bytes.get(position) {
                Some(b'"') => break,
                Some(b'\\') => {
                    // The escape is checked when decoding; skip the escaped byte.
                    escaped = true;
                    position += 2;
                }
                _ => {
                    self.position = position;
                    return Err(self.syntax());
                }
            }
        }
        self.position = position + 1;
        let content = self.bytes.get(start..position).unwrap_or_default();
        if escaped {
            let decoded = unescape(content, start)?;
            if name {
                self.names.push(decoded.as_bytes());
            }
            let index = offset(self.decoded.len())?;
            self.decoded.push(decoded);
            self.nodes.push(TapeNode::Decoded(index));
        } else {
            if name {
                self.names.push(content);
            }
            let (start, end) = (offset(start)?, offset(position)?);
            self.nodes.push(TapeNode::Text { start, end });
        }
        Ok(())
    }

    /// A number, read as `serde_json` reads it: an integer that fits `u64` (or, negative,
    /// `i64`) is one; anything else, `-0` included, is an `f64`, which must be finite.
    fn number(&mut self) -> Result<(), TapeError> {
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
        let leading_zero = self.bytes.get(integer_start) == Some(&b'0');
        if integer_digits == 0 || (integer_digits > 1 && leading_zero) {
            return Err(self.syntax());
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.position += 1;
            if digits(self) == 0 {
                return Err(self.syntax());
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.position += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.position += 1;
            }
            if digits(self) == 0 {
                return Err(self.syntax());
            }
            integer = false;
        }
        // An integer of up to 19 digits fits `u64` as it is read: most numbers of an event.
        if integer && integer_digits <= 19 {
            let magnitude = self
                .bytes
                .get(integer_start..integer_start + integer_digits)
                .unwrap_or_default()
                .iter()
                .fold(0_u64, |value, digit| value * 10 + u64::from(digit - b'0'));
            let exact = if !negative {
                Some(Number::from(magnitude))
            } else if magnitude == 0 {
                // `-0` is a float, as `serde_json` reads it.
                None
            } else {
                0_i64.checked_sub_unsigned(magnitude).map(Number::from)
            };
            if let Some(number) = exact {
                self.nodes.push(TapeNode::Number(number));
                return Ok(());
            }
        }
        // ASCII digits and signs: always UTF-8.
        let literal = self
            .bytes
            .get(start..self.position)
            .and_then(|literal| std::str::from_utf8(literal).ok())
            .ok_or(TapeError::Syntax { at: start })?;
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
        // `str::parse` rounds correctly, as `serde_json` does with its `float_roundtrip`
        // feature, which `jsonschema` turns on.
        let number = match exact {
            Some(number) => number,
            None => literal
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or(TapeError::Syntax { at: start })?,
        };
        self.nodes.push(TapeNode::Number(number));
        Ok(())
    }
}
