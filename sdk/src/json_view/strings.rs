//! JSON string content: finding where it ends, decoding its escapes, and hashing member
//! names to find repeated ones.

use super::TapeError;

/// Decodes the content of a JSON string (between its quotes, starting at byte `at` of the
/// text), checking every escape and refusing control characters. A lone surrogate is not
/// a character: refused, as `serde_json` refuses it.
pub(super) fn unescape(content: &[u8], at: usize) -> Result<String, TapeError> {
    let syntax = |offset: usize| TapeError::Syntax { at: at + offset };
    let hex4 = |offset: usize| -> Result<u32, TapeError> {
        let digits = content.get(offset..offset + 4).ok_or(syntax(offset))?;
        let mut value = 0;
        for digit in digits {
            value = value * 16 + char::from(*digit).to_digit(16).ok_or(syntax(offset))?;
        }
        Ok(value)
    };
    let mut out = Vec::with_capacity(content.len());
    let mut position = 0;
    while let Some(&byte) = content.get(position) {
        match byte {
            b'\\' => {
                let escaped = match content.get(position + 1).copied() {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'b') => '\u{8}',
                    Some(b'f') => '\u{c}',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(b't') => '\t',
                    Some(b'u') => {
                        let first = hex4(position + 2)?;
                        if (0xDC00..0xE000).contains(&first) {
                            return Err(syntax(position));
                        }
                        let code = if (0xD800..0xDC00).contains(&first) {
                            if content.get(position + 6..position + 8) != Some(b"\\u") {
                                return Err(syntax(position));
                            }
                            let second = hex4(position + 8)?;
                            if !(0xDC00..0xE000).contains(&second) {
                                return Err(syntax(position));
                            }
                            position += 6;
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        } else {
                            first
                        };
                        position += 4;
                        char::from_u32(code).ok_or(syntax(position))?
                    }
                    _ => return Err(syntax(position)),
                };
                let mut buffer = [0; 4];
                out.extend_from_slice(escaped.encode_utf8(&mut buffer).as_bytes());
                position += 2;
            }
            0x00..=0x1f => return Err(syntax(position)),
            _ => {
                out.push(byte);
                position += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| syntax(0))
}

/// The index of the first byte at or after `from` that is `"`, `\` or a control character
/// (or the end), eight bytes at a time.
pub(super) fn skip_plain(bytes: &[u8], from: usize) -> usize {
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

/// How many member names of the open objects are kept as hashes; an object whose names go
/// beyond is checked name by name.
const HASHED_NAMES: usize = 64;

/// The member names of the objects a builder has open, as hashes: comparing them finds the
/// objects whose names may repeat, which alone are then checked name by name
/// ([`JsonTape::new`](super::JsonTape)). Kept inline: a tape allocates nothing for them.
#[derive(Debug)]
pub(super) struct NameHashes {
    hashes: [u32; HASHED_NAMES],
    /// Names pushed and not yet forgotten, some of them perhaps beyond `hashes`.
    len: usize,
}

impl Default for NameHashes {
    fn default() -> Self {
        NameHashes {
            hashes: [0; HASHED_NAMES],
            len: 0,
        }
    }
}

impl NameHashes {
    /// Where the names of an object that opens now start.
    pub(super) fn start(&self) -> usize {
        self.len
    }

    /// One more name of the innermost open object: its decoded bytes.
    pub(super) fn push(&mut self, name: &[u8]) {
        if let Some(slot) = self.hashes.get_mut(self.len) {
            *slot = name_hash(name);
        }
        self.len += 1;
    }

    /// Whether names pushed since `start` (one object's) may repeat, forgetting them.
    pub(super) fn close(&mut self, start: usize) -> bool {
        let repeated = match self.hashes.get(start..self.len) {
            Some(names) => {
                // One bit per hash first: only names whose bits meet are compared.
                let mut bits = 0_u64;
                names.iter().enumerate().any(|(position, name)| {
                    let bit = 1 << (name % 64);
                    let meets = bits & bit != 0;
                    bits |= bit;
                    meets && names[..position].contains(name)
                })
            }
            // Beyond the hashes kept.
            None => true,
        };
        self.len = start.min(self.len);
        repeated
    }
}

/// A 32-bit hash of a member name (a multiply-rotate hash, eight bytes at a time).
#[inline]
fn name_hash(name: &[u8]) -> u32 {
    const MULTIPLIER: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(MULTIPLIER);
    let mut hash = name.len() as u64;
    let mut chunks = name.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        hash = mix(hash, u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let word = rest
            .iter()
            .rev()
            .fold(0_u64, |word, byte| (word << 8) | u64::from(*byte));
        hash = mix(hash, word);
    }
    (hash >> 32) as u32
}
