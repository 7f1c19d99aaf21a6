//! The two numbers a delivery needs from its `$JS.ACK.` reply subject (ADR-15): read
//! without [`async_nats::jetstream::Message::info`], which also parses the publish time
//! into a date (a sixth of reading a delivery).

/// The stream sequence and the delivery count of a `$JS.ACK.` subject, in either form of
/// ADR-15: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>` (7
/// tokens after the prefix), or with `<domain>.<account hash>` before the stream (9 or
/// more). `None` for anything else: the caller asks the client why.
pub(super) fn read(reply: &str) -> Option<(u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let mut tokens: [&str; 9] = [""; 9];
    let mut count = 0;
    for token in rest.split('.') {
        if count < tokens.len() {
            tokens[count] = token;
        }
        count += 1;
    }
    let first = match count {
        7 => 2,
        // A trailing token (and any later ones) follows the pending count.
        n if n >= 9 => 4,
        _ => return None,
    };
    // Every numeric token must be a number, as the client checks.
    let number = |token: &str| token.parse::<u64>().ok();
    let delivered = number(tokens[first])?;
    let stream_sequence = number(tokens[first + 1])?;
    number(tokens[first + 2])?;
    tokens[first + 3].parse::<i128>().ok()?;
    number(tokens[first + 4])?;
    Some((stream_sequence, delivered))
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
    fn refuses_what_the_client_refuses() {
        assert_eq!(read("_INBOX.abc"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3"), None);
        assert_eq!(read("$JS.ACK.S.c.x.2.3.4.5"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3.4.5.6"), None);
        assert_eq!(read("$JS.ACK.S.c.1.2.3.notatime.5"), None);
    }
}
