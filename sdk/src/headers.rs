//! Envelope headers of protocol section 4: value encoding and time stamps. The header names
//! are defined in [`crate::protocol::header`] and re-exported here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::protocol::header::{
    DATA_CONTENT_TYPE, DATA_SCHEMA, ID, JSON_CONTENT_TYPE, NATS_MSG_ID, SOURCE, SPEC_VERSION,
    SPEC_VERSION_VALUE, SUBJECT, TIME, TRACEPARENT, TRACESTATE, TYPE,
};

/// Percent-encodes a header value as the CloudEvents HTTP binding does: space, `"`, `%` and
/// everything outside printable ASCII become `%XX` (of the UTF-8 bytes).
pub fn encode_value(value: &str) -> std::borrow::Cow<'_, str> {
    let needs = |b: u8| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'%';
    // Without an early exit the check runs over many bytes at once: values are short and
    // almost always need nothing.
    if !value.bytes().fold(false, |found, b| found | needs(b)) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for byte in value.bytes() {
        if needs(byte) {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(byte as char);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Percent-encodes free text for Herald's own headers (`herald-dlq-error`): `%` and bytes
/// outside printable ASCII become `%XX`; spaces stay, so the text reads as is.
pub fn encode_text(value: &str) -> std::borrow::Cow<'_, str> {
    let needs = |b: u8| !(0x20..=0x7e).contains(&b) || b == b'%';
    if !value.bytes().any(needs) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for byte in value.bytes() {
        if needs(byte) {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push(byte as char);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Decodes a percent-encoded header value; `None` if it is not valid UTF-8 once decoded.
pub fn decode_value(value: &str) -> Option<String> {
    if !value.contains('%') {
        return Some(value.to_owned());
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
            if let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(byte);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8(out).ok()
}

/// The time a UUIDv7 event id was made, to the millisecond: when an event published without
/// `ce-time` happened (protocol section 4). `None` for any other id: one that is not a UUID
/// in its hyphenated form (36 characters), or a UUID of another version or variant (the
/// 15th character is `7`, the 20th one of `89ab`).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let id = "0193f0e2-7c2e-7a1c-9f0e-2b3c4d5e6f70"; // a UUIDv7
/// let time = herald::headers::time_of_event_id(id).unwrap();
/// assert_eq!(time, UNIX_EPOCH + Duration::from_millis(0x0193_f0e2_7c2e));
/// assert_eq!(herald::headers::time_of_event_id("signup-42"), None);
/// ```
pub fn time_of_event_id(event_id: &str) -> Option<SystemTime> {
    // The hyphenated form only, as readers in other languages check it (protocol section 4):
    // read here by hand, as every delivery of an event without `ce-time` asks.
    let id = event_id.as_bytes();
    if id.len() != 36 {
        return None;
    }
    if id[14] != b'7' || !matches!(id[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B') {
        return None;
    }
    // The first 48 bits (12 hex digits, a hyphen after the 8th) are the Unix time in
    // milliseconds; every other digit is only checked. A table per byte: this runs for
    // every delivery.
    let mut millis: u64 = 0;
    let mut seen = 0;
    for part in [&id[..8], &id[9..13]] {
        for &c in part {
            let digit = HEX_DIGITS[usize::from(c)];
            seen |= digit;
            millis = millis << 4 | u64::from(digit & 0xf);
        }
    }
    for part in [&id[14..18], &id[19..23], &id[24..]] {
        seen = part
            .iter()
            .fold(seen, |seen, &c| seen | HEX_DIGITS[usize::from(c)]);
    }
    let hyphens = id[8] == b'-' && id[13] == b'-' && id[18] == b'-' && id[23] == b'-';
    let all_hex = hyphens && seen & NOT_HEX_BIT == 0;
    all_hex.then(|| UNIX_EPOCH + Duration::from_millis(millis))
}

/// Set in a [`HEX_DIGITS`] entry of a byte that is no hexadecimal digit.
const NOT_HEX_BIT: u8 = 0x10;

/// Each byte's value as a hexadecimal digit (upper or lower case), or [`NOT_HEX_BIT`].
const HEX_DIGITS: [u8; 256] = {
    let mut table = [NOT_HEX_BIT; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = match byte as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => NOT_HEX_BIT,
        };
        byte += 1;
    }
    table
};

/// When an event happened, as every reader tells it (protocol section 4): its `ce-time`,
/// else the time its UUIDv7 `ce-id` was made ([`time_of_event_id`], written as
/// [`format_time`] writes); `None` for an event with neither.
///
/// ```
/// use herald::headers::event_time;
///
/// let id = "0193f0e2-7c2e-7a1c-9f0e-2b3c4d5e6f70"; // a UUIDv7
/// assert_eq!(event_time(None, id).as_deref(), Some("2024-12-23T00:19:55.054000Z"));
/// let chosen = Some("2026-11-25T08:00:00Z".to_owned());
/// assert_eq!(event_time(chosen, id).as_deref(), Some("2026-11-25T08:00:00Z"));
/// assert_eq!(event_time(None, "signup-42"), None);
/// ```
pub fn event_time(ce_time: Option<String>, ce_id: &str) -> Option<String> {
    ce_time.or_else(|| time_of_event_id(ce_id).map(format_time))
}

/// Formats a time as RFC 3339 UTC with microseconds: `2026-11-25T07:30:00.123456Z`.
pub fn format_time(time: SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        // The formatted date and time of the last second seen on this thread: events
        // published within one second share it.
        static LAST_SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    LAST_SECOND.with(|cell| {
        let mut last = cell.borrow_mut();
        if last.0 != seconds {
            *last = (seconds, format_second(seconds));
        }
        let mut out = String::with_capacity(27);
        out.push_str(&last.1);
        out.push('.');
        for divisor in [100_000, 10_000, 1_000, 100, 10, 1] {
            out.push(char::from(b'0' + (micros / divisor % 10) as u8));
        }
        out.push('Z');
        out
    })
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second.
fn format_second(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        (second_of_day % 3600) / 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn printable_values_are_untouched() {
        assert!(matches!(
            encode_value("urn:herald:service:api"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn other_values_are_percent_encoded_and_decode_back() {
        let value = "user 42 \"é\" 100%";
        let encoded = encode_value(value);
        assert_eq!(encoded, "user%2042%20%22%C3%A9%22%20100%25");
        assert_eq!(decode_value(&encoded).as_deref(), Some(value));
        assert_eq!(decode_value("plain").as_deref(), Some("plain"));
        assert_eq!(decode_value("50%").as_deref(), Some("50%"));
    }

    #[test]
    fn text_keeps_spaces() {
        assert_eq!(encode_text("took too long"), "took too long");
        assert_eq!(encode_text("50% é"), "50%25 %C3%A9");
        assert_eq!(
            decode_value(&encode_text("50% é")).as_deref(),
            Some("50% é")
        );
    }

    /// What the `uuid` crate reads from an id, as [`time_of_event_id`] must read it.
    fn time_by_uuid(event_id: &str) -> Option<SystemTime> {
        if event_id.len() != 36 {
            return None;
        }
        let id = uuid::Uuid::try_parse(event_id).ok()?;
        if id.get_version_num() != 7 || id.get_variant() != uuid::Variant::RFC4122 {
            return None;
        }
        let (seconds, nanoseconds) = id.get_timestamp()?.to_unix();
        Some(UNIX_EPOCH + Duration::new(seconds, nanoseconds))
    }

    proptest::proptest! {
        #[test]
        fn ids_read_as_the_uuid_crate_reads_them(
            bytes in proptest::array::uniform16(proptest::prelude::any::<u8>()),
            version in 0u8..16,
            variant in 0u8..4,
            upper in proptest::prelude::any::<bool>(),
            flip in proptest::option::of((0usize..36, proptest::prelude::any::<u8>())),
        ) {
            let mut bytes = bytes;
            bytes[6] = (bytes[6] & 0x0f) | (version << 4);
            bytes[8] = (bytes[8] & 0x3f) | (variant << 6);
            let mut id = uuid::Uuid::from_bytes(bytes).hyphenated().to_string();
            if upper {
                id = id.to_uppercase();
            }
            if let Some((at, byte)) = flip {
                let mut raw = id.into_bytes();
                raw[at] = byte % 128;
                id = String::from_utf8(raw).unwrap();
            }
            proptest::prop_assert_eq!(time_of_event_id(&id), time_by_uuid(&id), "{}", id);
        }
    }

    #[test]
    fn only_uuid_v7_ids_tell_a_time() {
        let before = SystemTime::now() - Duration::from_millis(1);
        let id = uuid::Uuid::now_v7().to_string();
        let time = time_of_event_id(&id).unwrap();
        assert!(time >= before && time <= SystemTime::now(), "{id}");
        assert_eq!(time_of_event_id(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(time_of_event_id("signup-42"), None);
        assert_eq!(time_of_event_id(""), None);
        // Only the hyphenated form, as other languages' readers check it.
        let simple = uuid::Uuid::parse_str(&id).unwrap().simple().to_string();
        assert_eq!(time_of_event_id(&simple), None);
        assert_eq!(time_of_event_id(&id.to_uppercase()), Some(time));
        // Version 7 of another variant (the 20th character not one of `89ab`).
        let mut other_variant = id;
        other_variant.replace_range(19..20, "c");
        assert_eq!(time_of_event_id(&other_variant), None);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.5Z, a leap day.
        let leap = UNIX_EPOCH + Duration::from_millis(1_709_251_199_500);
        assert_eq!(format_time(leap), "2024-02-29T23:59:59.500000Z");
        let later = UNIX_EPOCH + Duration::from_secs(4_102_444_800);
        assert_eq!(format_time(later), "2100-01-01T00:00:00.000000Z");
    }
}
