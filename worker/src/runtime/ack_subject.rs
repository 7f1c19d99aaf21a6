//! The two numbers a delivery needs from its `$JS.ACK.` reply subject (ADR-15): read
//! without [`async_nats::jetstream::Message::info`], which also parses the publish time
//! into a date (a sixth of reading a delivery).

/// The stream sequence and the delivery count of a `$JS.ACK.` subject, in either form of
/// ADR-15: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>` (7
/// tokens after the prefix), or with `<domain>.<account hash>` before the stream (9 or
/// more). `None` for anything else: the caller asks the client why.
pub(super) fn read(reply: &str) -> Option<(u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?.as_bytes();
    // The tokens' bounds, split by hand: `str::split` with a `char` searches with `memchr`
    // per token, which costs more than the whole subject's bytes.
    let mut tokens: [&[u8]; 9] = [&[]; 9];
    let mut count = 0;
    let mut start = 0;
    for (index, &byte) in rest.iter().enumerate() {
        if byte == b'.' {
            if let Some(token) = tokens.get_mut(count) {
                *token = &rest[start..index];
            }
            count += 1;
            start = index + 1;
        }
    }
    if let Some(token) = tokens.get_mut(count) {
        *token = &rest[start..];
    }
    count += 1;
    let first = match count {
        7 => 2,
        // A trailing token (and any later ones) follows the pending count.
        n if n >= 9 => 4,
        _ => return None,
    };
    // Every numeric token must be a number, as the client checks.
    let delivered = number(tokens[first])?;
    let stream_sequence = number(tokens[first + 1])?;
    number(tokens[first + 2])?;
    timestamp(tokens[first + 3])?;
    number(tokens[first + 4])?;
    Some((stream_sequence, delivered))
}

/// A token as `u64::from_str` reads it: ASCII digits after an optional `+`, no overflow.
fn number(token: &[u8]) -> Option<u64> {
    let digits = token.strip_prefix(b"+").unwrap_or(token);
    if digits.is_empty() {
        return None;
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
    fn refuses_what_the_client_refuses() {
        assert_eq!(read("_INBOX.abc"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3"), None);
        assert_eq!(read("$JS.ACK.S.c.x.2.3.4.5"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3.4.5.6"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3.notatime.5"), None);
    }
}
