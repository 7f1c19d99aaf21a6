//! Schema compatibility: can a reader schema read everything a writer schema lets through?
//!
//! Semantics (protocol section 5): writers emit only the properties they declare; readers
//! follow their content model, so an open object ignores unknown properties and
//! `additionalProperties: false` rejects them (serde without and with `deny_unknown_fields`).
//!
//! [`reader_accepts`] compares one writer with one reader and explains every difference as a
//! [`Finding`] with the JSON path of the data it concerns. [`check`] applies a
//! [`CompatibilityMode`] to a new schema and the existing versions. What the checker cannot
//! prove is reported as [`Verdict::Unknown`] and counts as incompatible (except under
//! [`CompatibilityMode::None`]). Constraints it does not understand on the *writer* side are
//! ignored, which only makes the writer look more permissive: the check stays sound.

use std::collections::HashSet;
use std::fmt;

use serde_json::Value;

mod checker;
mod facts;

use checker::Checker;

/// How new versions of a type must relate to the existing ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityMode {
    /// The new schema reads data written with the latest version (upgrade readers first).
    Backward,
    /// … with every version.
    BackwardTransitive,
    /// The latest version reads data written with the new schema (upgrade writers first).
    Forward,
    /// … every version reads it.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every version (the default).
    #[default]
    FullTransitive,
    /// No check.
    None,
}

impl CompatibilityMode {
    /// Every mode.
    pub const ALL: [CompatibilityMode; 7] = [
        CompatibilityMode::Backward,
        CompatibilityMode::BackwardTransitive,
        CompatibilityMode::Forward,
        CompatibilityMode::ForwardTransitive,
        CompatibilityMode::Full,
        CompatibilityMode::FullTransitive,
        CompatibilityMode::None,
    ];

    /// The name used in the registry (`FULL_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityMode::Backward => "BACKWARD",
            CompatibilityMode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityMode::Forward => "FORWARD",
            CompatibilityMode::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityMode::Full => "FULL",
            CompatibilityMode::FullTransitive => "FULL_TRANSITIVE",
            CompatibilityMode::None => "NONE",
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Backward
                | CompatibilityMode::BackwardTransitive
                | CompatibilityMode::Full
                | CompatibilityMode::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Forward
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::Full
                | CompatibilityMode::FullTransitive
        )
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityMode::BackwardTransitive
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CompatibilityMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CompatibilityMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown compatibility mode {s:?}; use one of {}",
                    CompatibilityMode::ALL.map(|m| m.as_str()).join(", ")
                )
            })
    }
}

/// The verdict on one difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Safe.
    Compatible,
    /// Breaks readers.
    Incompatible,
    /// The checker cannot prove it safe; counts as incompatible.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Compatible => "compatible",
            Verdict::Incompatible => "incompatible",
            Verdict::Unknown => "cannot prove (counts as incompatible)",
        })
    }
}

/// One difference between a writer and a reader schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// JSON path of the data concerned (`$.plan`, `$.items[]`, `$.tags{}`).
    pub path: String,
    /// What differs, and what to do about it.
    pub change: String,
    /// The verdict.
    pub verdict: Verdict,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.path, self.change, self.verdict)
    }
}

/// Every difference between what `writer` lets through and what `reader` accepts.
/// The reader can read all the writer's data when no finding is incompatible or unknown.
pub fn reader_accepts(writer: &Value, reader: &Value) -> Vec<Finding> {
    let mut checker = Checker {
        writer_root: writer,
        reader_root: reader,
        visiting: HashSet::new(),
        findings: Vec::new(),
    };
    checker.subset(writer, reader, "$");
    checker.findings
}

/// True when none of the findings breaks compatibility.
pub fn is_compatible(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.verdict == Verdict::Compatible)
}

/// One direction of one comparison made for a mode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirectionCheck {
    /// The existing version compared with.
    pub version: u32,
    /// `backward` (the new schema reads this version's data) or `forward` (this version
    /// reads the new schema's data).
    pub direction: &'static str,
    /// The differences.
    pub findings: Vec<Finding>,
}

/// The result of checking a new schema under a mode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompatibilityReport {
    /// The mode.
    pub mode: CompatibilityMode,
    /// Every comparison made.
    pub checks: Vec<DirectionCheck>,
}

impl CompatibilityReport {
    /// True when the new schema may be registered.
    pub fn is_compatible(&self) -> bool {
        self.mode == CompatibilityMode::None
            || self.checks.iter().all(|c| is_compatible(&c.findings))
    }

    /// The findings that break compatibility, with the version and direction.
    pub fn problems(&self) -> impl Iterator<Item = (&DirectionCheck, &Finding)> {
        self.checks.iter().flat_map(|check| {
            check
                .findings
                .iter()
                .filter(|f| f.verdict != Verdict::Compatible)
                .map(move |f| (check, f))
        })
    }
}

impl fmt::Display for CompatibilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_compatible() {
            return write!(f, "compatible under {}", self.mode);
        }
        write!(f, "incompatible under {}:", self.mode)?;
        for (check, finding) in self.problems() {
            let relation = if check.direction == "backward" {
                format!("reading version {} data", check.version)
            } else {
                format!("version {} reading new data", check.version)
            };
            write!(f, "\n  {finding} ({relation})")?;
        }
        Ok(())
    }
}

/// Checks `new` against `existing` versions (sorted by version) under `mode`.
pub fn check(
    mode: CompatibilityMode,
    new: &Value,
    existing: &[(u32, Value)],
) -> CompatibilityReport {
    let mut checks = Vec::new();
    if mode != CompatibilityMode::None {
        let against: Vec<&(u32, Value)> = if mode.transitive() {
            existing.iter().collect()
        } else {
            existing
                .iter()
                .max_by_key(|(v, _)| *v)
                .into_iter()
                .collect()
        };
        for (version, old) in against {
            if mode.backward() {
                checks.push(DirectionCheck {
                    version: *version,
                    direction: "backward",
                    findings: reader_accepts(old, new),
                });
            }
            if mode.forward() {
                checks.push(DirectionCheck {
                    version: *version,
                    direction: "forward",
                    findings: reader_accepts(new, old),
                });
            }
        }
    }
    CompatibilityReport { mode, checks }
}
