//! [`CronTrigger`]: a cron pattern and its time zone, checked the way nats-server reads them.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use sha2::{Digest, Sha256};

/// Aliases nats-server knows, with the 6-field pattern each stands for.
const ALIASES: [(&str, &str); 7] = [
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

/// Names nats-server accepts in the month and day-of-week fields.
const NAMES: [&str; 19] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "sun",
    "mon", "tue", "wed", "thu", "fri", "sat",
];

/// A cron pattern that nats-server would not accept, or a time zone it cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The pattern is not a cron pattern nats-server reads.
    #[error(
        "invalid cron pattern {pattern:?}: {reason}. A pattern has 5 fields (minute hour \
         day-of-month month day-of-week, e.g. `0 12 * * 5`) or 6 with seconds first \
         (`*/10 * * * * *`), with numbers, names (`mon`, `jan`), `*`, `,`, `-` and `/`, or is \
         one of @yearly @monthly @weekly @daily @hourly"
    )]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// The time zone is not an IANA zone name.
    #[error(
        "unknown time zone {zone:?} for cron pattern {pattern:?}: use an IANA name such as \
         `Europe/Paris` or `America/New_York` (fixed offsets like `+02:00` are not accepted); \
         the nats-server host needs time-zone data (tzdata) for it too"
    )]
    TimeZone {
        /// The pattern.
        pattern: String,
        /// The zone as given.
        zone: String,
    },
}

/// One cron trigger of a function: a pattern in a time zone (UTC by default).
#[derive(Debug, Clone)]
pub struct CronTrigger {
    given: String,
    pattern: String,
    time_zone: Option<String>,
    zone: Tz,
    cron: Cron,
}

impl PartialEq for CronTrigger {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.time_zone == other.time_zone
    }
}

impl Eq for CronTrigger {}

impl CronTrigger {
    /// Checks `pattern` (5 or 6 fields, or an alias) and `time_zone` (an IANA name; `None`
    /// or `UTC` for UTC).
    pub fn new(pattern: &str, time_zone: Option<&str>) -> Result<CronTrigger, CronError> {
        let given = pattern.trim().to_owned();
        let error = |reason: &str| CronError::Pattern {
            pattern: given.clone(),
            reason: reason.to_owned(),
        };
        let six = six_fields(&given).map_err(|reason| error(&reason))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .build()
            .parse(&six)
            .map_err(|e| error(&e.to_string()))?;
        let time_zone = time_zone.map(str::trim).filter(|zone| *zone != "UTC");
        let zone = match time_zone {
            None => Tz::UTC,
            Some(zone) => Tz::from_str(zone).map_err(|_| CronError::TimeZone {
                pattern: given.clone(),
                zone: zone.to_owned(),
            })?,
        };
        Ok(CronTrigger {
            given,
            pattern: six,
            time_zone: time_zone.map(str::to_owned),
            zone,
            cron,
        })
    }

    /// The pattern as given.
    pub fn given(&self) -> &str {
        &self.given
    }

    /// The 6-field pattern sent to the server (`Nats-Schedule`).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The IANA time zone, `None` for UTC.
    pub fn time_zone(&self) -> Option<&str> {
        self.time_zone.as_deref()
    }

    /// The trigger's id: the first 16 hex digits of the SHA-256 of the 6-field pattern, a
    /// newline and the zone (`UTC` when none). A changed pattern or zone is a new trigger.
    pub fn id(&self) -> String {
        let text = format!(
            "{}\n{}",
            self.pattern,
            self.time_zone.as_deref().unwrap_or("UTC")
        );
        Sha256::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The first tick strictly after `after`, in the trigger's zone.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<FixedOffset>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|time| time.fixed_offset())
    }

    /// The tick the server fired when it says the next one is `next`: the last tick
    /// strictly before it.
    pub fn tick_before(&self, next: DateTime<FixedOffset>) -> Option<DateTime<FixedOffset>> {
        let local = next.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, false)
            .ok()
            .map(|time| time.fixed_offset())
    }
}

/// The 6-field form of a pattern, after checking its characters against what nats-server's
/// cron parser reads (croner alone would accept `L`, `W`, `#` and `?`, which it does not).
fn six_fields(pattern: &str) -> Result<String, String> {
    if let Some((_, six)) = ALIASES.iter().find(|(alias, _)| *alias == pattern) {
        return Ok((*six).to_owned());
    }
    if pattern.starts_with("@every") {
        return Err(
            "`@every` is not supported for cron triggers; write it as a pattern \
                    (`*/10 * * * * *` is every 10 seconds)"
                .to_owned(),
        );
    }
    if pattern.starts_with('@') {
        return Err("unknown alias".to_owned());
    }
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    if fields.len() != 5 && fields.len() != 6 {
        return Err(format!("it has {} fields", fields.len()));
    }
    for field in &fields {
        if let Some(bad) = field
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/')))
        {
            return Err(format!("{bad:?} in field {field:?}"));
        }
        for word in field
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
        {
            if !NAMES.contains(&word.to_ascii_lowercase().as_str()) {
                return Err(format!("{word:?} is not a month or day name"));
            }
        }
    }
    Ok(if fields.len() == 5 {
        format!("0 {}", fields.join(" "))
    } else {
        fields.join(" ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    #[test]
    fn five_fields_gain_a_seconds_field() {
        let trigger = CronTrigger::new("0 12 * * 5", None).unwrap();
        assert_eq!(trigger.pattern(), "0 0 12 * * 5");
        assert_eq!(trigger.given(), "0 12 * * 5");
        assert_eq!(
            CronTrigger::new("*/1 * * * * *", None).unwrap().pattern(),
            "*/1 * * * * *"
        );
        assert_eq!(
            CronTrigger::new("@hourly", None).unwrap().pattern(),
            "0 0 * * * *"
        );
        assert_eq!(
            CronTrigger::new("0 9 * jan-mar mon-fri", None)
                .unwrap()
                .pattern(),
            "0 0 9 * jan-mar mon-fri"
        );
    }

    #[test]
    fn what_nats_server_would_refuse_is_refused_with_the_reason() {
        for (bad, why) in [
            ("* * * *", "4 fields"),
            ("0 0 L * *", "\"L\" is not a month or day name"),
            ("0 0 ? * 5", "'?'"),
            ("0 0 1W * *", "\"W\" is not"),
            ("0 0 * * 5#2", "'#'"),
            ("@every 10s", "`@every` is not supported"),
            ("@fortnightly", "unknown alias"),
            ("61 * * * *", ""),
        ] {
            let error = CronTrigger::new(bad, None).unwrap_err();
            let text = error.to_string();
            assert!(text.contains(why), "{bad}: {text}");
            assert!(
                text.contains("5 fields"),
                "{bad}: says what a pattern is: {text}"
            );
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        let paris = CronTrigger::new("0 12 * * 5", Some("Europe/Paris")).unwrap();
        assert_eq!(paris.time_zone(), Some("Europe/Paris"));
        assert_eq!(
            CronTrigger::new("0 12 * * 5", Some("UTC"))
                .unwrap()
                .time_zone(),
            None
        );
        for bad in ["+02:00", "Paris", ""] {
            let error = CronTrigger::new("0 12 * * 5", Some(bad)).unwrap_err();
            assert!(error.to_string().contains("IANA"), "{error}");
        }
    }

    #[test]
    fn the_id_changes_with_the_pattern_or_the_zone_only() {
        let a = CronTrigger::new("0 12 * * 5", None).unwrap();
        assert_eq!(a.id().len(), 16);
        assert_eq!(
            a.id(),
            CronTrigger::new("0 0 12 * * 5", Some("UTC")).unwrap().id()
        );
        assert_ne!(a.id(), CronTrigger::new("0 13 * * 5", None).unwrap().id());
        assert_ne!(
            a.id(),
            CronTrigger::new("0 12 * * 5", Some("Europe/Paris"))
                .unwrap()
                .id()
        );
    }

    #[test]
    fn ticks_in_a_zone_carry_its_offset_in_winter_and_summer() {
        let paris = CronTrigger::new("0 12 * * *", Some("Europe/Paris")).unwrap();
        let winter = paris
            .next_after(time("2026-11-26T08:00:00Z").to_utc())
            .unwrap();
        assert_eq!(winter.to_rfc3339(), "2026-11-26T12:00:00+01:00");
        let summer = paris
            .next_after(time("2026-07-01T08:00:00Z").to_utc())
            .unwrap();
        assert_eq!(summer.to_rfc3339(), "2026-07-01T12:00:00+02:00");
    }

    #[test]
    fn the_tick_fired_is_the_one_before_the_next() {
        let every_second = CronTrigger::new("*/1 * * * * *", None).unwrap();
        let tick = every_second
            .tick_before(time("2026-11-26T10:19:58+01:00"))
            .unwrap();
        assert_eq!(tick.to_utc().to_rfc3339(), "2026-11-26T09:19:57+00:00");
        let friday_noon = CronTrigger::new("0 12 * * 5", Some("Europe/Paris")).unwrap();
        let tick = friday_noon
            .tick_before(time("2026-12-04T12:00:00+01:00"))
            .unwrap();
        assert_eq!(tick.to_rfc3339(), "2026-11-27T12:00:00+01:00");
    }
}
