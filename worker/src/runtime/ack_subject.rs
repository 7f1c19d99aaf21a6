//! The two numbers a delivery needs from its `$JS.ACK.` reply subject (ADR-15): read
//! without [`async_nats::jetstream::Message::info`], which also parses the publish time
//! into a date (a sixth of reading a delivery).

/// The stream sequence and the delivery count of a `$JS.ACK.` subject, in either form of
/// ADR-15: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>` (7
/// tokens after the prefix), or with `<domain>.<account hash>` before the stream (9 or
/// more). `None` for anything else: the caller asks the client why.
pub(crate) fn read(reply: &str) -> Option<(u64, u64)> {
    fields(reply).map(|(stream_sequence, delivered, _)| (stream_sequence, delivered))
}

/// When the server stored the message, in ns since the epoch, as the client reads it (the
/// subject's timestamp token, within the dates `time` represents); `None` as for [`read`].
pub(crate) fn published_nanos(reply: &str) -> Option<i128> {
    let (_, _, nanos) = fields(reply)?;
    let nanos = std::str::from_utf8(nanos).ok()?.parse::<i128>().ok()?;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    Some(nanos)
}

/// [`read`]'s numbers and the timestamp token.
fn fields(reply: &str) -> Option<(u64, u64, &[u8])> {
    let rest = reply.strip_prefix("$JS.ACK.")?.as_bytes();
    // Where the first nine tokens end, found eight bytes at a time: a byte loop (or
    // `str::split`, a `memchr` per token) costs more than everything else a delivery reads.
    let mut dots = [rest.len(); 9];
    let mut found = 0;
    each_dot(rest, |at| {
        if let Some(dot) = dots.get_mut(found) {
            *dot = at;
        }
        found += 1;
    });
    let count = found + 1;
    let token = |index: usize| -> &[u8] {
        let start = match index {
            0 => 0,
            _ => dots[index - 1] + 1,
        };
        rest.get(start..dots[index]).unwrap_or_default()
    };
    let first = match count {
        7 => 2,
        // A trailing token (and any later ones) follows the pending count.
        n if n >= 9 => 4,
        _ => return None,
    };
    // Every numeric token must be a number, as the client checks: plain digits are seen
    // without a branch per byte, and anything else (a sign, a longer token) is read as the
    // standard parsers read it.
    let delivered = number(token(first))?;
    let stream_sequence = number(token(first + 1))?;
    let (consumer_sequence, nanos, pending) =
        (token(first + 2), token(first + 3), token(first + 4));
    if !(plain_digits(consumer_sequence) && plain_digits(nanos) && plain_digits(pending)) {
        number(consumer_sequence)?;
        timestamp(nanos)?;
        number(pending)?;
    }
    Some((stream_sequence, delivered, nanos))
}

/// Whether `token` is 1 to 19 ASCII digits: a number of `u64` and of `i128` alike.
fn plain_digits(token: &[u8]) -> bool {
    (1..=19).contains(&token.len())
        && token
            .iter()
            .fold(true, |digits, byte| digits & byte.is_ascii_digit())
}

/// Calls `found` with the index of each `.` in `bytes`, in order.
fn each_dot(bytes: &[u8], mut found: impl FnMut(usize)) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut chunks = bytes.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word) ^ (ONES * u64::from(b'.'));
        // The high bit of each byte that was a dot (now zero), exactly: no carry crosses
        // bytes, as each byte's low seven bits plus 0x7f stay within the byte.
        let mut dots = !(((word & LOWS) + LOWS) | word | LOWS);
        while dots != 0 {
            found(base + (dots.trailing_zeros() / 8) as usize);
            dots &= dots - 1;
        }
        base += 8;
    }
    for (offset, &byte) in chunks.remainder().iter().enumerate() {
        if byte == b'.' {
            found(base + offset);
        }
    }
}

/// A token as `u64::from_str` reads it: ASCII digits after an optional `+`, no overflow.
fn number(token: &[u8]) -> Option<u64> {
    let digits = token.strip_prefix(b"+").unwrap_or(token);
    if digits.is_empty() {
        return None;
    }
    // Nineteen digits cannot overflow a `u64`: no check per digit (the common case).
    if digits.len() <= 19 {
        let mut value = 0_u64;
        for &byte in digits {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            value = value * 10 + u64::from(digit);
        }
        return Some(value);
    }
    digits.iter().try_fold(0_u64, |value, &byte| {
        let digit = byte.checked_sub(b'0').filter(|d| *d <= 9)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The timestamp token as `i128::from_str` checks it: an optional sign, then digits (a
/// nanosecond count fits an `i128` many times over; longer tokens go to the parser).
fn timestamp(token: &[u8]) -> Option<()> {
    let digits = match token.first() {
        Some(b'+' | b'-') => &token[1..],
        _ => token,
    };
    if digits.is_empty() || digits.len() > 38 {
        return std::str::from_utf8(token)
            .ok()?
            .parse::<i128>()
            .ok()
            .map(drop);
    }
    digits.iter().all(u8::is_ascii_digit).then_some(())
}

#[cfg(test)]
mod tests {
    use super::read;

    #[test]
    fn reads_both_forms_of_adr_15() {
        let old = "$JS.ACK.NS_EVENTS.fn.3.1042.17.1764230400000000000.5";
        assert_eq!(read(old), Some((1042, 3)));
        let new = "$JS.ACK._.ACCHASH.NS_EVENTS.fn.1.7.7.1764230400000000000.0.TOKEN";
        assert_eq!(read(new), Some((7, 1)));
        let without_token = "$JS.ACK.hub.ACCHASH.S.c.2.9.9.1764230400000000000.0";
        assert_eq!(read(without_token), Some((9, 2)));
        let more = "$JS.ACK.hub.ACCHASH.S.c.2.9.9.1764230400000000000.0.TOKEN.extra";
        assert_eq!(read(more), Some((9, 2)));
    }

    #[test]
    fn numbers_read_as_the_standard_parsers_read_them() {
        for token in [
            "0",
            "7",
            "+7",
            "-7",
            "",
            "+",
            "-",
            "18446744073709551615",
            "18446744073709551616",
            "9999999999999999999",
            "99999999999999999999",
            "0000000000000000000000001",
            "00012",
            "1a",
            " 1",
            "1 ",
            "١",
        ] {
            assert_eq!(
                super::number(token.as_bytes()),
                token.parse::<u64>().ok(),
                "{token:?}"
            );
            assert_eq!(
                super::timestamp(token.as_bytes()).is_some(),
                token.parse::<i128>().is_ok(),
                "{token:?}"
            );
        }
        let long = "9".repeat(39);
        assert_eq!(super::timestamp(long.as_bytes()), None);
        let fits = "9".repeat(38);
        assert!(super::timestamp(fits.as_bytes()).is_some());
    }

    #[test]
    fn finds_every_dot_wherever_it_falls() {
        for subject in [
            "",
            ".",
            "a",
            "a.b",
            "........",
            ".........",
            "abcdefg.",
            "abcdefgh.",
            "abcdefgh.ijklmnop.q",
            "\u{80}.\u{ff}.x",
            "é.è..ü.",
        ] {
            let mut dots = Vec::new();
            super::each_dot(subject.as_bytes(), |at| dots.push(at));
            let expected: Vec<usize> = subject.match_indices('.').map(|(at, _)| at).collect();
            assert_eq!(dots, expected, "{subject:?}");
        }
    }

    #[test]
    fn reads_as_splitting_by_dots_reads() {
        let reference = |reply: &str| -> Option<(u64, u64)> {
            let tokens: Vec<&str> = reply.strip_prefix("$JS.ACK.")?.split('.').collect();
            let first = match tokens.len() {
                7 => 2,
                n if n >= 9 => 4,
                _ => return None,
            };
            let delivered = tokens[first].parse::<u64>().ok()?;
            let sequence = tokens[first + 1].parse::<u64>().ok()?;
            tokens[first + 2].parse::<u64>().ok()?;
            tokens[first + 3].parse::<i128>().ok()?;
            tokens[first + 4].parse::<u64>().ok()?;
            Some((sequence, delivered))
        };
        let streams = ["S", "NS_EVENTS", "a-much-longer-stream-name", ""];
        let consumers = ["c", "fn_with_a_long_name", ""];
        let tails = [
            "1.2.3.1764230400000000000.0",
            "12.345678.9.1764230400000000000.17",
            "1.2.3.4",
            "1.2.3.4.5.6",
            "1.x.3.4.5",
            "1.2.3.-5.0",
            "+1.2.3.4.5",
            "1.+2.3.4.5",
            "1..3.4.5",
            ".2.3.4.5",
            "1.2.3.4.",
            "9999999999999999999.18446744073709551615.3.17642304000000000000.1",
            "9999999999999999999.9999999999999999999.9999999999999999999.9999999999999999999.9999999999999999999",
            "1.2.3.+1764230400000000000.0",
            "1.2.3.00000000000000000000001764230400000000000.0",
        ];
        for stream in streams {
            for consumer in consumers {
                for tail in tails {
                    for prefix in ["", "hub.ACCHASH.", "_.A."] {
                        for suffix in ["", ".TOKEN", ".TOKEN.extra"] {
                            let reply =
                                format!("$JS.ACK.{prefix}{stream}.{consumer}.{tail}{suffix}");
                            assert_eq!(read(&reply), reference(&reply), "{reply}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reads_the_publish_time_as_the_client_does() {
        let at = "$JS.ACK.S.c.1.2.3.1764230400123456789.0";
        assert_eq!(super::published_nanos(at), Some(1_764_230_400_123_456_789));
        let signed = "$JS.ACK.hub.ACCHASH.S.c.1.2.3.+1764230400000000000.0.TOKEN";
        assert_eq!(
            super::published_nanos(signed),
            Some(1_764_230_400_000_000_000)
        );
        // Beyond the dates the client represents, and not an ack subject.
        let far = format!("$JS.ACK.S.c.1.2.3.{}.0", "9".repeat(38));
        assert_eq!(super::published_nanos(&far), None);
        assert_eq!(super::published_nanos("_INBOX.abc"), None);
    }

    #[test]
    fn refuses_what_the_client_refuses() {
        assert_eq!(read("_INBOX.abc"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3"), None);
        assert_eq!(read("$JS.ACK.S.c.x.2.3.4.5"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3.4.5.6"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3.notatime.5"), None);
    }
}
