//! The `serde_json` formatter of [`record`](super::record): [`CompactFormatter`]'s output,
//! with each value noted in the [`Recorder`].

use std::io::{self, Write as _};

use serde_json::Number;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

use super::record::Recorder;
use super::{TapeNode, offset};

impl Recorder {
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
        self.scalar(|| Some(TapeNode::Null), "null");
        self.write(writer, |w| CompactFormatter.write_null(w))
    }

    fn write_bool<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: bool) -> io::Result<()> {
        self.scalar(|| Some(TapeNode::Bool(value)), "a boolean");
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
        self.scalar(|| Some(TapeNode::Number(Number::from(value))), "an integer");
        self.write(writer, |w| CompactFormatter.write_i64(w, value))
    }

    fn write_i128<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: i128) -> io::Result<()> {
        self.scalar(
            || {
                i64::try_from(value)
                    .ok()
                    .map(|value| TapeNode::Number(Number::from(value)))
                    .or_else(|| {
                        u64::try_from(value)
                            .ok()
                            .map(|value| TapeNode::Number(Number::from(value)))
                    })
            },
            "a 128-bit integer beyond 64 bits",
        );
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
        self.scalar(|| Some(TapeNode::Number(Number::from(value))), "an integer");
        self.write(writer, |w| CompactFormatter.write_u64(w, value))
    }

    fn write_u128<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: u128) -> io::Result<()> {
        self.scalar(
            || {
                u64::try_from(value)
                    .ok()
                    .map(|value| TapeNode::Number(Number::from(value)))
            },
            "a 128-bit integer beyond 64 bits",
        );
        self.write(writer, |w| CompactFormatter.write_u128(w, value))
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // Written in f32's shortest digits, which a consumer reads back as the nearest f64:
        // read them back the same way.
        let mut digits = Vec::with_capacity(24);
        CompactFormatter.write_f32(&mut digits, value)?;
        self.scalar(
            || {
                std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|text| text.parse::<f64>().ok())
                    .and_then(Number::from_f64)
                    .map(TapeNode::Number)
            },
            "a float that is not finite",
        );
        self.write(writer, |w| w.write_all(&digits))
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        self.scalar(
            || Number::from_f64(value).map(TapeNode::Number),
            "a float that is not finite",
        );
        self.write(writer, |w| CompactFormatter.write_f64(w, value))
    }

    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        value: &str,
    ) -> io::Result<()> {
        self.scalar(|| None, "an arbitrary-precision number");
        self.write(writer, |w| CompactFormatter.write_number_str(w, value))
    }

    fn begin_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        if self.in_string {
            self.lose("a string inside a string");
        }
        self.write(writer, |w| CompactFormatter.begin_string(w))?;
        self.in_string = true;
        self.string_start = self.written;
        self.string_escaped = false;
        Ok(())
    }

    fn end_string<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.in_string = false;
        if self.following() {
            match (offset(self.string_start), offset(self.written)) {
                (Ok(start), Ok(end)) if self.string_escaped => {
                    // Decoded when the tape is finished.
                    self.escaped.push((self.nodes.len(), start, end));
                    self.nodes.push(TapeNode::Decoded(u32::MAX));
                }
                (Ok(start), Ok(end)) => self.nodes.push(TapeNode::Text { start, end }),
                _ => self.lose("text of 4 GiB or more"),
            }
        }
        self.write(writer, |w| CompactFormatter.end_string(w))
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if self.name.open {
            if self.name.fragments == 0 {
                self.names.push(fragment.as_bytes());
            }
            self.name.fragments += 1;
        }
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
        self.name.other |= self.name.open;
        self.write(writer, |w| {
            CompactFormatter.write_char_escape(w, char_escape)
        })
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open(false);
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
        self.open(true);
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
        self.name.open = true;
        self.write(writer, |w| CompactFormatter.begin_object_key(w, first))
    }

    fn end_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.end_name();
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
        self.lose("raw JSON");
        self.write(writer, |w| CompactFormatter.write_raw_fragment(w, fragment))
    }
}
