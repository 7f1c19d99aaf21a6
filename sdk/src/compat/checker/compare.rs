//! The checker's comparisons of one keyword family: types, objects, arrays, strings and
//! numbers.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Checker;
use crate::compat::Verdict;
use crate::compat::facts::*;

impl Checker<'_> {
    pub(super) fn compare_types(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) {
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

    pub(super) fn compare_facet(
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

    pub(super) fn compare_object(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) {
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

    pub(super) fn compare_array(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) {
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

    pub(super) fn compare_string(
        &mut self,
        w: &Map<String, Value>,
        r: &Map<String, Value>,
        path: &str,
    ) {
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

    pub(super) fn compare_number(
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
