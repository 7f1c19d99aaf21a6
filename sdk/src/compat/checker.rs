//! The [`Checker`]: one writer schema against one reader schema, following references and
//! unions; the per-keyword comparisons are in [`compare`].

mod compare;

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::facts::*;
use super::{Finding, Verdict, is_compatible};

pub(super) struct Checker<'a> {
    pub(super) writer_root: &'a Value,
    pub(super) reader_root: &'a Value,
    pub(super) visiting: HashSet<(String, String)>,
    pub(super) findings: Vec<Finding>,
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

    pub(super) fn subset(&mut self, writer: &Value, reader: &Value, path: &str) {
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
}
