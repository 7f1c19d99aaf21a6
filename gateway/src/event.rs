//! An event read from a request, normalised to what protocol section 4 stores.

use std::time::SystemTime;

use serde_json::Value;

use crate::problem::{EventProblem, PathMessage};

/// One event of a request, checked for the envelope rules and ready to validate.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    /// `ce-id`, also the dedup id.
    pub(crate) id: String,
    /// `ce-type`.
    pub(crate) event_type: String,
    /// `ce-source`, decoded.
    pub(crate) source: String,
    /// `ce-time` in Herald's fixed microsecond form.
    pub(crate) time: String,
    /// `ce-subject`, decoded.
    pub(crate) subject: Option<String>,
    /// `ce-dataschema` as sent.
    pub(crate) data_schema: Option<String>,
    /// Extension attributes: (name without `ce-`, decoded value).
    pub(crate) extensions: Vec<(String, String)>,
    /// The data.
    pub(crate) data: Value,
    /// The event's own trace context (`ce-traceparent` / `traceparent` attribute).
    pub(crate) trace: Option<(String, Option<String>)>,
}

/// Attributes that are not extensions.
pub(crate) const CORE_ATTRIBUTES: [&str; 11] = [
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "subject",
    "dataschema",
    "datacontenttype",
    "traceparent",
    "tracestate",
    "data",
];

/// Collects the envelope violations of one event while it is being read.
pub(crate) struct Checker {
    problem: EventProblem,
    prefix: String,
    /// Attributes whose field has another name in the request (Inngest's `name` is `type`).
    renames: Vec<(&'static str, &'static str)>,
}

impl Checker {
    /// `prefix`: how paths start, `$` (a single structured event), `$[3]` (in a batch) or
    /// empty (binary mode: headers).
    pub(crate) fn new(index: usize, prefix: impl Into<String>) -> Checker {
        Checker {
            problem: EventProblem {
                index,
                ..EventProblem::default()
            },
            prefix: prefix.into(),
            renames: Vec::new(),
        }
    }

    /// Reports attribute `attribute` at the request's field `field`.
    pub(crate) fn rename(mut self, attribute: &'static str, field: &'static str) -> Checker {
        self.renames.push((attribute, field));
        self
    }

    /// The path of attribute `name`: `$.id`, `$[3].id` or `ce-id`.
    pub(crate) fn path(&self, name: &str) -> String {
        let name = self
            .renames
            .iter()
            .find(|(attribute, _)| *attribute == name)
            .map_or(name, |(_, field)| field);
        if self.prefix.is_empty() {
            format!("ce-{name}")
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Records a violation at attribute `name`.
    pub(crate) fn fail(&mut self, name: &str, message: impl Into<String>) {
        let path = self.path(name);
        self.problem.violations.push(PathMessage {
            path,
            message: message.into(),
        });
    }

    /// A required attribute, checked as the protocol requires.
    pub(crate) fn required(&mut self, name: &str, value: Option<String>) -> String {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            self.fail(name, format!("the {name} attribute is required"));
            return String::new();
        };
        let check = match name {
            "id" => herald::check_event_id(&value)
                .map_err(|e| e.to_string())
                .map(|_| ()),
            "type" => herald::EventType::new(value.clone())
                .map_err(|e| e.to_string())
                .map(drop),
            "specversion" if value != "1.0" => Err(format!(
                "specversion {value:?} is not supported; use \"1.0\""
            )),
            _ => Ok(()),
        };
        if let Err(message) = check {
            self.fail(name, message);
        }
        match name {
            "id" => self.problem.id = Some(value.clone()),
            "type" => self.problem.event_type = Some(value.clone()),
            _ => {}
        }
        value
    }

    /// `time`, normalised (now when absent).
    pub(crate) fn time(&mut self, value: Option<String>) -> String {
        match value {
            None => herald::headers::format_time(SystemTime::now()),
            Some(text) => match normalise_time(&text) {
                Some(time) => time,
                None => {
                    self.fail("time", format!("{text:?} is not an RFC 3339 time"));
                    String::new()
                }
            },
        }
    }

    /// An extension attribute name must be lower-case letters and digits (CloudEvents).
    pub(crate) fn extension_name(&mut self, name: &str) -> bool {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            self.fail(
                name,
                "an extension attribute name is lower-case letters and digits, at most 64",
            );
        }
        valid
    }

    /// The problem, if any violation was recorded.
    pub(crate) fn finish(self) -> Result<(), EventProblem> {
        if self.problem.violations.is_empty() {
            Ok(())
        } else {
            Err(self.problem)
        }
    }
}

/// RFC 3339 text to Herald's `ce-time` form (UTC, microseconds, `Z`).
pub(crate) fn normalise_time(text: &str) -> Option<String> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(herald::headers::format_time(SystemTime::from(parsed)))
}

/// A milliseconds-since-epoch time (Inngest's `ts`) in Herald's form.
pub(crate) fn time_from_millis(millis: u64) -> String {
    herald::headers::format_time(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_normalised_to_utc_microseconds() {
        assert_eq!(
            normalise_time("2026-11-25T08:31:01+01:00").as_deref(),
            Some("2026-11-25T07:31:01.000000Z")
        );
        assert_eq!(
            normalise_time("2026-11-25T07:31:01.490068123Z").as_deref(),
            Some("2026-11-25T07:31:01.490068Z")
        );
        assert_eq!(normalise_time("yesterday"), None);
        assert_eq!(time_from_millis(1_000), "1970-01-01T00:00:01.000000Z");
    }
}
