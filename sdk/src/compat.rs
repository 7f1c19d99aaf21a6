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

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

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

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "$anchor",
    "contentEncoding",
    "contentMediaType",
];

/// Reader keywords the checker cannot compare.
const UNSUPPORTED: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "dependentRequired",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "minProperties",
    "maxProperties",
];

const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

struct Checker<'a> {
    writer_root: &'a Value,
    reader_root: &'a Value,
    visiting: HashSet<(String, String)>,
    findings: Vec<Finding>,
}

fn is_any(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn is_nothing(schema: &Value) -> bool {
    matches!(schema, Value::Bool(false))
}

fn json_text(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 60 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(57).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

/// The set of types a schema allows (`None` = every type).
fn types_of(schema: &Map<String, Value>) -> Option<BTreeSet<&str>> {
    match schema.get("type") {
        Some(Value::String(t)) => Some([t.as_str()].into_iter().collect()),
        Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn accepts_type(reader: &Option<BTreeSet<&str>>, t: &str) -> bool {
    match reader {
        None => true,
        Some(set) => set.contains(t) || (t == "integer" && set.contains("number")),
    }
}

/// Bounds implied by Rust integer formats that schemars emits.
fn format_bounds(format: Option<&str>) -> (Option<f64>, Option<f64>) {
    let bits = |n: i32| 2f64.powi(n);
    match format {
        Some("int8") => (Some(-bits(7)), Some(bits(7) - 1.0)),
        Some("int16") => (Some(-bits(15)), Some(bits(15) - 1.0)),
        Some("int32") => (Some(-bits(31)), Some(bits(31) - 1.0)),
        Some("int64") => (Some(-bits(63)), Some(bits(63) - 1.0)),
        Some("uint8") => (Some(0.0), Some(bits(8) - 1.0)),
        Some("uint16") => (Some(0.0), Some(bits(16) - 1.0)),
        Some("uint32") => (Some(0.0), Some(bits(32) - 1.0)),
        Some("uint64") => (Some(0.0), Some(bits(64) - 1.0)),
        Some("uint") => (Some(0.0), None),
        _ => (None, None),
    }
}

/// A numeric range: (lower, lower exclusive, upper, upper exclusive).
fn numeric_range(schema: &Map<String, Value>) -> (Option<f64>, bool, Option<f64>, bool) {
    let (format_min, format_max) = format_bounds(schema.get("format").and_then(Value::as_str));
    let mut lower = format_min.map(|v| (v, false));
    let mut upper = format_max.map(|v| (v, false));
    let tighter_lower = |current: Option<(f64, bool)>, candidate: (f64, bool)| match current {
        Some((v, e)) if v > candidate.0 || (v == candidate.0 && e) => Some((v, e)),
        _ => Some(candidate),
    };
    let tighter_upper = |current: Option<(f64, bool)>, candidate: (f64, bool)| match current {
        Some((v, e)) if v < candidate.0 || (v == candidate.0 && e) => Some((v, e)),
        _ => Some(candidate),
    };
    if let Some(v) = schema.get("minimum").and_then(Value::as_f64) {
        lower = tighter_lower(lower, (v, false));
    }
    if let Some(v) = schema.get("exclusiveMinimum").and_then(Value::as_f64) {
        lower = tighter_lower(lower, (v, true));
    }
    if let Some(v) = schema.get("maximum").and_then(Value::as_f64) {
        upper = tighter_upper(upper, (v, false));
    }
    if let Some(v) = schema.get("exclusiveMaximum").and_then(Value::as_f64) {
        upper = tighter_upper(upper, (v, true));
    }
    (
        lower.map(|l| l.0),
        lower.is_some_and(|l| l.1),
        upper.map(|u| u.0),
        upper.is_some_and(|u| u.1),
    )
}

fn u64_of(schema: &Map<String, Value>, key: &str) -> Option<u64> {
    schema.get(key).and_then(Value::as_u64)
}

impl<'a> Checker<'a> {
    fn push(&mut self, path: &str, verdict: Verdict, change: impl Into<String>) {
        self.findings.push(Finding {
            path: path.to_owned(),
            change: change.into(),
            verdict,
        });
    }

    /// Follows `$ref` (local `#/$defs/..` or `#/definitions/..`), merging sibling keywords.
    fn resolve(&self, root: &'a Value, schema: &'a Value) -> (Option<String>, Value) {
        let Some(map) = schema.as_object() else {
            return (None, schema.clone());
        };
        let Some(reference) = map.get("$ref").and_then(Value::as_str) else {
            return (None, schema.clone());
        };
        let target = reference
            .strip_prefix("#/$defs/")
            .map(|name| ("$defs", name))
            .or_else(|| {
                reference
                    .strip_prefix("#/definitions/")
                    .map(|name| ("definitions", name))
            })
            .and_then(|(section, name)| root.get(section).and_then(|defs| defs.get(name)));
        let resolved = match (reference, target) {
            ("#", _) => root.clone(),
            (_, Some(target)) => target.clone(),
            _ => return (Some(reference.to_owned()), Value::Null),
        };
        let mut merged = match resolved {
            Value::Object(target_map) => target_map,
            other => return (Some(reference.to_owned()), other),
        };
        for (key, value) in map {
            if key != "$ref" && !ANNOTATIONS.contains(&key.as_str()) {
                merged.insert(key.clone(), value.clone());
            }
        }
        (Some(reference.to_owned()), Value::Object(merged))
    }

    /// A trial comparison whose findings are returned rather than recorded.
    fn trial(&mut self, writer: &Value, reader: &Value, path: &str) -> Vec<Finding> {
        let saved = std::mem::take(&mut self.findings);
        self.subset(writer, reader, path);
        std::mem::replace(&mut self.findings, saved)
    }

    fn subset(&mut self, writer: &Value, reader: &Value, path: &str) {
        let (writer_ref, writer) = self.resolve(self.writer_root, writer);
        let (reader_ref, reader) = self.resolve(self.reader_root, reader);
        if writer.is_null() && writer_ref.is_some() {
            self.push(
                path,
                Verdict::Unknown,
                format!(
                    "the writer's {} cannot be resolved",
                    writer_ref.unwrap_or_default()
                ),
            );
            return;
        }
        if reader.is_null() && reader_ref.is_some() {
            self.push(
                path,
                Verdict::Unknown,
                format!(
                    "the reader's {} cannot be resolved",
                    reader_ref.unwrap_or_default()
                ),
            );
            return;
        }
        if let (Some(w), Some(r)) = (&writer_ref, &reader_ref) {
            // Recursive types: a pair already being compared is assumed to hold.
            if !self.visiting.insert((w.clone(), r.clone())) {
                return;
            }
            self.subset_resolved(&writer, &reader, path);
            self.visiting.remove(&(w.clone(), r.clone()));
            return;
        }
        self.subset_resolved(&writer, &reader, path);
    }

    fn subset_resolved(&mut self, writer: &Value, reader: &Value, path: &str) {
        if is_nothing(writer) || is_any(reader) {
            return;
        }
        if is_nothing(reader) {
            self.push(
                path,
                Verdict::Incompatible,
                "the reader accepts nothing here",
            );
            return;
        }
        let empty = Map::new();
        let w = writer.as_object().unwrap_or(&empty);
        let r = reader.as_object().unwrap_or(&empty);
        if writer.as_object().is_none() && !is_any(writer) {
            self.push(
                path,
                Verdict::Unknown,
                "the writer's schema here is not an object",
            );
            return;
        }
        for keyword in UNSUPPORTED {
            if r.contains_key(*keyword) && w.get(*keyword) != r.get(*keyword) {
                self.push(
                    path,
                    Verdict::Unknown,
                    format!("the reader uses `{keyword}`, which the checker cannot compare"),
                );
                return;
            }
        }

        // The reader's allOf: every part must accept the writer.
        if let Some(parts) = r.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.subset(writer, part, path);
            }
            let mut rest = r.clone();
            rest.remove("allOf");
            self.subset(writer, &Value::Object(rest), path);
            return;
        }
        // The writer's allOf of objects: merged into one schema that lets through at least
        // what the intersection does (properties and required sets united, the first value
        // of every other keyword).
        if let Some(parts) = w.get("allOf").and_then(Value::as_array)
            && let Some(merged) = self.merge_all_of(w, parts)
        {
            self.subset(&merged, reader, path);
            return;
        }
        // Otherwise it is enough that one part fits the reader (the intersection is smaller).
        if let Some(parts) = w.get("allOf").and_then(Value::as_array) {
            let mut rest = w.clone();
            rest.remove("allOf");
            let mut candidates: Vec<Value> = parts.clone();
            if !is_any(&Value::Object(rest.clone())) {
                candidates.push(Value::Object(rest));
            }
            let mut best: Option<Vec<Finding>> = None;
            for part in &candidates {
                let findings = self.trial(part, reader, path);
                if is_compatible(&findings) {
                    self.findings.extend(findings);
                    return;
                }
                if best.as_ref().is_none_or(|b| findings.len() < b.len()) {
                    best = Some(findings);
                }
            }
            if candidates.len() == 1 {
                self.findings.extend(best.unwrap_or_default());
            } else {
                self.push(path, Verdict::Unknown, "the writer combines schemas with `allOf`; no single part is accepted by the reader");
            }
            return;
        }

        // The writer's alternatives: each must be accepted.
        let writer_alternatives = w
            .get("anyOf")
            .or_else(|| w.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(alternatives) = writer_alternatives {
            let mut rest = w.clone();
            rest.remove("anyOf");
            rest.remove("oneOf");
            for alternative in alternatives {
                let combined = merge(&rest, alternative);
                self.subset(&combined, reader, path);
            }
            return;
        }

        // Finite writers: check each value against the reader with the real validator.
        if let Some(values) = finite_values(w) {
            self.finite_subset(&values, reader, path);
            return;
        }

        // The reader's alternatives: one must accept the whole writer.
        let reader_alternatives = r
            .get("anyOf")
            .or_else(|| r.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(alternatives) = reader_alternatives {
            let mut rest = r.clone();
            rest.remove("anyOf");
            rest.remove("oneOf");
            self.subset(writer, &Value::Object(rest), path);
            self.reader_union(writer, w, alternatives, path);
            return;
        }

        if let Some(values) = finite_values(r) {
            let listed: Vec<String> = values.iter().map(json_text).collect();
            self.push(
                path,
                Verdict::Incompatible,
                format!(
                    "the reader accepts only {}, the writer is not limited to those values (an enum or constant was introduced)",
                    listed.join(", ")
                ),
            );
            return;
        }

        self.compare_types(w, r, path);
    }

    fn reader_union(
        &mut self,
        writer: &Value,
        w: &Map<String, Value>,
        alternatives: &[Value],
        path: &str,
    ) {
        // A writer of several types is checked one type at a time (`["string", "null"]`
        // against `anyOf: [string, null]`).
        if let Some(types) = types_of(w)
            && types.len() > 1
        {
            for t in types {
                let mut single = w.clone();
                single.insert("type".to_owned(), Value::String(t.to_owned()));
                let single = Value::Object(single);
                let findings = self.trial(&single, &Value::Object(union_only(alternatives)), path);
                self.findings.extend(findings);
            }
            return;
        }
        let mut best: Option<Vec<Finding>> = None;
        for alternative in alternatives {
            let findings = self.trial(writer, alternative, path);
            if is_compatible(&findings) {
                self.findings.extend(findings);
                return;
            }
            if best.as_ref().is_none_or(|b| findings.len() < b.len()) {
                best = Some(findings);
            }
        }
        if let Some(tag) = discriminator(w) {
            self.push(
                path,
                Verdict::Incompatible,
                format!(
                    "the writer's variant {tag} is not accepted by any of the reader's alternatives (a variant was removed or changed); keep it in the reader"
                ),
            );
        } else if alternatives.len() == 1 {
            self.findings.extend(best.unwrap_or_default());
        } else {
            let detail = best
                .unwrap_or_default()
                .iter()
                .filter(|f| f.verdict != Verdict::Compatible)
                .map(|f| format!("{} {}", f.path, f.change))
                .next()
                .unwrap_or_default();
            self.push(
                path,
                Verdict::Unknown,
                format!("no single alternative of the reader accepts everything the writer sends (closest: {detail})"),
            );
        }
    }

    fn merge_all_of(&self, w: &Map<String, Value>, parts: &[Value]) -> Option<Value> {
        let mut merged = w.clone();
        merged.remove("allOf");
        let mut properties = merged
            .remove("properties")
            .and_then(|p| p.as_object().cloned())
            .unwrap_or_default();
        let mut required: Vec<Value> = merged
            .remove("required")
            .and_then(|r| r.as_array().cloned())
            .unwrap_or_default();
        for part in parts {
            let (_, part) = self.resolve(self.writer_root, part);
            let part = part.as_object()?;
            if part.contains_key("anyOf")
                || part.contains_key("oneOf")
                || part.contains_key("allOf")
            {
                return None;
            }
            for (key, value) in part {
                match key.as_str() {
                    "properties" => {
                        for (name, schema) in value.as_object()? {
                            properties
                                .entry(name.clone())
                                .or_insert_with(|| schema.clone());
                        }
                    }
                    "required" => {
                        for name in value.as_array()? {
                            if !required.contains(name) {
                                required.push(name.clone());
                            }
                        }
                    }
                    _ => {
                        merged.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        if !properties.is_empty() {
            merged.insert("properties".to_owned(), Value::Object(properties));
        }
        if !required.is_empty() {
            merged.insert("required".to_owned(), Value::Array(required));
        }
        Some(Value::Object(merged))
    }

    fn finite_subset(&mut self, values: &[Value], reader: &Value, path: &str) {
        let mut document = match reader {
            Value::Object(map) => map.clone(),
            Value::Bool(true) => return,
            _ => Map::new(),
        };
        for section in ["$defs", "definitions"] {
            if let Some(defs) = self.reader_root.get(section) {
                document
                    .entry(section.to_owned())
                    .or_insert_with(|| defs.clone());
            }
        }
        let validator = match jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(document))
        {
            Ok(validator) => validator,
            Err(error) => {
                self.push(
                    path,
                    Verdict::Unknown,
                    format!("the reader's schema here does not compile: {error}"),
                );
                return;
            }
        };
        for value in values {
            if !validator.is_valid(value) {
                self.push(
                    path,
                    Verdict::Incompatible,
                    format!(
                        "the writer may send {}, which the reader rejects (a removed enum value or variant, or a narrowed constant); keep accepting it in the reader",
                        json_text(value)
                    ),
                );
            }
        }
    }

    fn compare_types(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let writer_types = types_of(w);
        let reader_types = types_of(r);
        let Some(writer_types) = writer_types else {
            if let Some(reader_types) = &reader_types {
                let listed: Vec<&str> = reader_types.iter().copied().collect();
                self.push(
                    path,
                    Verdict::Incompatible,
                    format!(
                        "the writer may send any type, the reader accepts only {}",
                        listed.join(" or ")
                    ),
                );
            } else {
                // Neither restricts the type: compare every facet the reader constrains.
                for t in TYPES {
                    self.compare_facet(t, w, r, path);
                }
            }
            return;
        };
        for t in &writer_types {
            if !accepts_type(&reader_types, t) {
                let hint = if *t == "null" {
                    " (an optional value became required); keep it optional in the reader"
                } else {
                    " (a type was narrowed or changed); a new type needs a new event type"
                };
                self.push(
                    path,
                    Verdict::Incompatible,
                    format!("the writer may send {t}, which the reader does not accept{hint}"),
                );
                continue;
            }
            self.compare_facet(t, w, r, path);
        }
        if let Some(reader_types) = &reader_types {
            let added: Vec<&&str> = reader_types
                .iter()
                .filter(|t| {
                    !(writer_types.contains(**t)
                        || (**t == "number" && writer_types.contains("integer")))
                })
                .collect();
            if !added.is_empty() {
                let listed: Vec<&str> = added.iter().map(|t| **t).collect();
                self.push(
                    path,
                    Verdict::Compatible,
                    format!(
                        "the reader also accepts {}, which the writer never sends",
                        listed.join(", ")
                    ),
                );
            }
        }
    }

    fn compare_facet(
        &mut self,
        t: &str,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) {
        match t {
            "object" => self.compare_object(w, r, path),
            "array" => self.compare_array(w, r, path),
            "string" => self.compare_string(w, r, path),
            "number" | "integer" => self.compare_number(t, w, r, path),
            _ => {}
        }
    }

    fn compare_object(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let empty = Map::new();
        let writer_properties = w
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let reader_properties = r
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required = |m: &Map<String, Value>| -> BTreeSet<String> {
            m.get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let writer_required = required(w);
        let reader_required = required(r);
        let reader_additional = r
            .get("additionalProperties")
            .cloned()
            .unwrap_or(Value::Bool(true));
        let writer_additional = w
            .get("additionalProperties")
            .cloned()
            .unwrap_or(Value::Bool(true));
        let property_path = |name: &str| {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty() {
                format!("{path}.{name}")
            } else {
                format!("{path}[{}]", Value::String(name.to_owned()))
            }
        };

        for (name, writer_schema) in writer_properties {
            let at = property_path(name);
            match reader_properties.get(name) {
                Some(reader_schema) => self.subset(writer_schema, reader_schema, &at),
                None if reader_additional == Value::Bool(false) => self.push(
                    &at,
                    Verdict::Incompatible,
                    format!(
                        "the writer sends `{name}`, the reader rejects unknown properties (additionalProperties: false, serde's deny_unknown_fields); declare `{name}` in the reader or drop deny_unknown_fields"
                    ),
                ),
                None if is_any(&reader_additional) => self.push(
                    &at,
                    Verdict::Compatible,
                    format!("the writer sends `{name}`, the reader does not declare it and ignores it"),
                ),
                None => self.subset(writer_schema, &reader_additional, &at),
            }
        }
        for name in &reader_required {
            let at = property_path(name);
            let writer_is_map =
                matches!(&writer_additional, Value::Object(_)) && !is_any(&writer_additional);
            if !writer_properties.contains_key(name) && !writer_is_map {
                self.push(
                    &at,
                    Verdict::Incompatible,
                    format!("the reader requires `{name}`, the writer never sends it (a property added as required); make it optional with a default"),
                );
            } else if !writer_required.contains(name) {
                self.push(
                    &at,
                    Verdict::Incompatible,
                    format!("the reader requires `{name}`, the writer may omit it (an optional property became required); keep it optional with a default"),
                );
            }
        }
        for name in reader_properties.keys() {
            if !writer_properties.contains_key(name) && !reader_required.contains(name) {
                self.push(
                    &property_path(name),
                    Verdict::Compatible,
                    format!("the reader's optional `{name}` is never sent by the writer; the reader uses its default"),
                );
            }
        }
        // A writer that is a map (additionalProperties with a schema) may send any key.
        if let Value::Object(_) = writer_additional
            && !is_any(&writer_additional)
        {
            let at = format!("{path}{{}}");
            if reader_additional == Value::Bool(false) {
                self.push(
                    &at,
                    Verdict::Incompatible,
                    "the writer sends arbitrary keys, the reader rejects unknown properties",
                );
            } else {
                self.subset(&writer_additional, &reader_additional, &at);
            }
        }
    }

    fn compare_array(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let any = Value::Bool(true);
        let writer_prefix = w
            .get("prefixItems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let reader_prefix = r
            .get("prefixItems")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let writer_items = w.get("items").unwrap_or(&any).clone();
        let reader_items = r.get("items").unwrap_or(&any).clone();
        let positions = writer_prefix.len().max(reader_prefix.len());
        for index in 0..positions {
            let writer_item = writer_prefix.get(index).unwrap_or(&writer_items);
            let reader_item = reader_prefix.get(index).unwrap_or(&reader_items);
            self.subset(writer_item, reader_item, &format!("{path}[{index}]"));
        }
        self.subset(&writer_items, &reader_items, &format!("{path}[]"));

        let writer_min = u64_of(w, "minItems").unwrap_or(0);
        let reader_min = u64_of(r, "minItems").unwrap_or(0);
        if reader_min > writer_min {
            self.push(path, Verdict::Incompatible, format!("the reader needs at least {reader_min} items, the writer may send {writer_min}; keep the lower bound"));
        }
        let writer_max = u64_of(w, "maxItems");
        if let Some(reader_max) = u64_of(r, "maxItems")
            && writer_max.is_none_or(|m| m > reader_max)
        {
            let sent = writer_max.map_or("any number of".to_owned(), |m| format!("up to {m}"));
            self.push(path, Verdict::Incompatible, format!("the reader takes at most {reader_max} items, the writer may send {sent}; keep the upper bound"));
        }
        let unique = |m: &Map<String, Value>| {
            m.get("uniqueItems")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        if unique(r) && !unique(w) {
            self.push(
                path,
                Verdict::Incompatible,
                "the reader requires unique items, the writer may repeat them",
            );
        }
    }

    fn compare_string(&mut self, w: &Map<String, Value>, r: &Map<String, Value>, path: &str) {
        let writer_min = u64_of(w, "minLength").unwrap_or(0);
        let reader_min = u64_of(r, "minLength").unwrap_or(0);
        if reader_min > writer_min {
            self.push(path, Verdict::Incompatible, format!("the reader needs at least {reader_min} characters, the writer may send {writer_min} (a narrowed length)"));
        }
        if let Some(reader_max) = u64_of(r, "maxLength") {
            let writer_max = u64_of(w, "maxLength");
            if writer_max.is_none_or(|m| m > reader_max) {
                let sent = writer_max.map_or("any length".to_owned(), |m| format!("up to {m}"));
                self.push(path, Verdict::Incompatible, format!("the reader takes at most {reader_max} characters, the writer may send {sent} (a narrowed length)"));
            }
        }
        if let Some(reader_pattern) = r.get("pattern").and_then(Value::as_str) {
            match w.get("pattern").and_then(Value::as_str) {
                Some(writer_pattern) if writer_pattern == reader_pattern => {}
                Some(writer_pattern) => self.push(
                    path,
                    Verdict::Unknown,
                    format!("the reader's pattern `{reader_pattern}` differs from the writer's `{writer_pattern}`; the checker cannot prove every written string matches"),
                ),
                None => self.push(
                    path,
                    Verdict::Incompatible,
                    format!("the reader requires the pattern `{reader_pattern}`, the writer has none (a new constraint)"),
                ),
            }
        }
        if let Some(reader_format) = r.get("format").and_then(Value::as_str) {
            match w.get("format").and_then(Value::as_str) {
                Some(writer_format) if writer_format == reader_format => {}
                Some(writer_format) => self.push(
                    path,
                    Verdict::Incompatible,
                    format!("the reader requires the format `{reader_format}`, the writer sends `{writer_format}`"),
                ),
                None => self.push(
                    path,
                    Verdict::Incompatible,
                    format!("the reader requires the format `{reader_format}`, the writer does not (a new constraint)"),
                ),
            }
        }
    }

    fn compare_number(
        &mut self,
        t: &str,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) {
        let (w_lower, w_lower_ex, w_upper, w_upper_ex) = numeric_range(w);
        let (r_lower, r_lower_ex, r_upper, r_upper_ex) = numeric_range(r);
        if let Some(r_lower) = r_lower {
            let fits = w_lower.is_some_and(|w_lower| {
                w_lower > r_lower || (w_lower == r_lower && (!r_lower_ex || w_lower_ex))
            });
            if !fits {
                let sent = w_lower.map_or("any value".to_owned(), |v| format!("values from {v}"));
                self.push(path, Verdict::Incompatible, format!("the reader accepts values from {r_lower}{}, the writer may send {sent} (a narrowed range)", if r_lower_ex { " (exclusive)" } else { "" }));
            }
        }
        if let Some(r_upper) = r_upper {
            let fits = w_upper.is_some_and(|w_upper| {
                w_upper < r_upper || (w_upper == r_upper && (!r_upper_ex || w_upper_ex))
            });
            if !fits {
                let sent = w_upper.map_or("any value".to_owned(), |v| format!("values up to {v}"));
                self.push(path, Verdict::Incompatible, format!("the reader accepts values up to {r_upper}{}, the writer may send {sent} (a narrowed range)", if r_upper_ex { " (exclusive)" } else { "" }));
            }
        }
        if let Some(reader_step) = r.get("multipleOf").and_then(Value::as_f64) {
            let writer_step = w.get("multipleOf").and_then(Value::as_f64);
            let divides =
                |step: f64| (step / reader_step - (step / reader_step).round()).abs() < 1e-9;
            let fits = match writer_step {
                Some(step) => divides(step),
                None => t == "integer" && reader_step == 1.0,
            };
            if !fits {
                self.push(
                    path,
                    Verdict::Incompatible,
                    format!("the reader requires multiples of {reader_step}, the writer does not"),
                );
            }
        }
        let writer_integer =
            types_of(w).is_some_and(|ts| ts.contains("integer") && !ts.contains("number"));
        let reader_integer =
            types_of(r).is_some_and(|ts| ts.contains("integer") && !ts.contains("number"));
        if t == "number" && reader_integer && !writer_integer {
            self.push(
                path,
                Verdict::Incompatible,
                "the writer may send fractional numbers, the reader takes only integers",
            );
        }
    }
}

/// A schema that is only the union of `alternatives`.
fn union_only(alternatives: &[Value]) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("anyOf".to_owned(), Value::Array(alternatives.to_vec()));
    map
}

/// The values of `enum` or `const`, if the schema is limited to them.
fn finite_values(schema: &Map<String, Value>) -> Option<Vec<Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    schema.get("enum").and_then(Value::as_array).cloned()
}

/// `kind=Email` when an object alternative fixes a property to a constant (serde's tags).
fn discriminator(schema: &Map<String, Value>) -> Option<String> {
    let properties = schema.get("properties")?.as_object()?;
    properties.iter().find_map(|(name, property)| {
        property
            .get("const")
            .map(|value| format!("{name}={}", json_text(value)))
    })
}

/// The writer's alternative with the union's sibling keywords added.
fn merge(rest: &Map<String, Value>, alternative: &Value) -> Value {
    match alternative {
        Value::Object(map) => {
            let mut merged = map.clone();
            for (key, value) in rest {
                if !ANNOTATIONS.contains(&key.as_str()) {
                    merged.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            Value::Object(merged)
        }
        other => other.clone(),
    }
}
