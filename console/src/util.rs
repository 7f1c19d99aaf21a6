//! Small helpers: times, subject patterns, query values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix milliseconds as RFC 3339 with milliseconds (UTC).
pub(crate) fn format_ms(ms: u64) -> String {
    herald::headers::format_time(UNIX_EPOCH + Duration::from_millis(ms))
}

/// An RFC 3339 time as Unix milliseconds.
pub(crate) fn parse_ms(text: &str) -> Option<u64> {
    let time = OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?;
    u64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A query value, `None` when empty.
pub(crate) fn given(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A duration in milliseconds for people.
pub(crate) fn duration_text(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{:.1} min", ms as f64 / 60_000.0)
    } else {
        format!("{:.1} h", ms as f64 / 3_600_000.0)
    }
}

/// Whether a NATS-style pattern (`*` one token, `>` the rest) matches `text`.
pub(crate) fn pattern_matches(pattern: &str, text: &str) -> bool {
    let mut tokens = text.split('.');
    for part in pattern.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (part, Some(token)) if part == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// Percent-encodes a value for a URL path segment or query.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query string from pairs, leaving out empty values.
pub(crate) fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| {
            value
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", encode(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// JSON pretty-printed, or the bytes as text when they are not JSON.
pub(crate) fn pretty(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_nats_subjects_do() {
        assert!(pattern_matches("user.*", "user.signup"));
        assert!(!pattern_matches("user.*", "user.signup.v2"));
        assert!(pattern_matches("user.>", "user.signup.v2"));
        assert!(pattern_matches(">", "a"));
        assert!(!pattern_matches("order.placed", "user.signup"));
        assert_eq!(
            query(&[("a", Some("x y")), ("b", None), ("c", Some(""))]),
            "?a=x%20y"
        );
        assert_eq!(parse_ms("1970-01-01T00:00:01.5Z"), Some(1500));
    }
}
