//! `/schemas`: every registered type; `/schemas/{type}`: its versions, compatibility mode,
//! the diff between two versions, the functions that consume it; the AsyncAPI download.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use herald_worker::overview::{FunctionOverview, list_functions};
use maud::{Markup, html};

use crate::error::{PageError, PageResult};
use crate::layout::page;
use crate::state::AppState;
use crate::util::{encode, given, pattern_matches};

fn consumers<'a>(functions: &'a [FunctionOverview], event_type: &str) -> Vec<&'a str> {
    functions
        .iter()
        .filter(|f| f.triggers.iter().any(|t| pattern_matches(t, event_type)))
        .map(|f| f.function.as_str())
        .collect()
}

/// `GET /schemas`.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> PageResult<Markup> {
    let functions = list_functions(&state.client, false).await?;
    let mut rows = Vec::new();
    for event_type in state.registry.types().await? {
        let versions = state.registry.versions(&event_type).await?;
        let mode = state.registry.compatibility(&event_type).await?;
        rows.push((event_type, versions.last().copied(), mode));
    }
    let body = html! {
        h1 { "Schemas" }
        p { a href="/schemas/asyncapi.json" download="asyncapi.json" { "Download the AsyncAPI document" } }
        @if rows.is_empty() { p.muted { "No schemas registered (herald schemas push schemas/)." } } @else {
            table #schemas {
                thead { tr { th { "Type" } th.num { "Latest" } th { "Compatibility" } th { "Consumed by" } } }
                tbody { @for (event_type, latest, mode) in &rows {
                    tr data-type=(event_type) {
                        td { a href={ "/schemas/" (encode(event_type)) } { code { (event_type) } } }
                        td.num { (latest.map_or("–".to_owned(), |v| v.to_string())) }
                        td { code { (mode.as_str()) } }
                        td { @for f in consumers(&functions, event_type) { a href={ "/functions/" (encode(f)) } { (f) } " " } }
                    }
                } }
            }
        }
    };
    Ok(page(&state, "Schemas", "schemas", body))
}

/// A line diff (longest common subsequence) of two texts: `(' ' | '+' | '-', line)`.
pub(crate) fn diff_lines<'a>(old: &'a str, new: &'a str) -> Vec<(char, &'a str)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(('+', b[j]));
            j += 1;
        } else {
            out.push(('-', a[i]));
            i += 1;
        }
    }
    out
}

/// A version's schema pretty-printed without `$id` (which names the version, so the diff
/// keeps to what changed), when it was registered and by whom.
async fn version_text(
    registry: &herald::registry::Registry,
    event_type: &str,
    version: u32,
) -> Result<Option<(String, String, String)>, PageError> {
    let stored = registry.get(event_type, version).await?;
    Ok(stored.map(|s| {
        let mut schema = s.schema;
        if let Some(map) = schema.as_object_mut() {
            map.remove("$id");
        }
        (
            serde_json::to_string_pretty(&schema).unwrap_or_default(),
            s.created_at,
            s.source,
        )
    }))
}

/// `GET /schemas/{type}?from=N&to=M`.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(event_type): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult<Markup> {
    let versions = state.registry.versions(&event_type).await?;
    let Some(&latest) = versions.last() else {
        return Err(PageError::not_found(format!(
            "{event_type} has no registered schema"
        )));
    };
    let mode = state.registry.compatibility(&event_type).await?;
    let number = |name: &str, default: u32| {
        given(q.get(name))
            .and_then(|v| v.parse().ok())
            .filter(|v| versions.contains(v))
            .unwrap_or(default)
    };
    let to = number("to", latest);
    let from = number("from", to.saturating_sub(1).max(versions[0]));
    let text = |version: u32| version_text(&state.registry, &event_type, version);
    let mut stored = Vec::new();
    for version in &versions {
        if let Some((_, created_at, source)) = text(*version).await? {
            stored.push((*version, created_at, source));
        }
    }
    let (old, _, _) = text(from).await?.unwrap_or_default();
    let (new, _, _) = text(to).await?.unwrap_or_default();
    let functions = list_functions(&state.client, false).await?;
    let self_url = format!("/schemas/{}", encode(&event_type));
    let body = html! {
        h1 { "Schema " code { (event_type) } }
        dl.settings {
            dt { "Compatibility mode" } dd { code #mode { (mode.as_str()) } }
            dt { "Consumed by" } dd { @for f in consumers(&functions, &event_type) { a href={ "/functions/" (encode(f)) } { (f) } " " } }
            dt { "Send one" } dd { a href={ "/send?type=" (encode(&event_type)) } { "from a skeleton of version " (latest) } }
        }
        h2 { "Versions" }
        table #versions { thead { tr { th.num { "Version" } th { "Registered" } th { "By" } } }
            tbody { @for (version, created_at, source) in &stored {
                tr { td.num { a href={ (self_url) "?to=" (version) } { (version) } } td { (created_at) } td { code { (source) } } }
            } } }
        h2 { "Diff" }
        form.filters method="get" action=(self_url) {
            label { "from" select name="from" { @for v in &versions { option value=(v) selected[*v == from] { (v) } } } }
            label { "to" select name="to" { @for v in &versions { option value=(v) selected[*v == to] { (v) } } } }
            button type="submit" { "Compare" }
        }
        @if from == to { p.muted { "Version " (to) ":" } pre { (new) } } @else {
            pre.diff #diff { @for (kind, line) in diff_lines(&old, &new) {
                @match kind {
                    '+' => { span.add { "+ " (line) } }
                    '-' => { span.del { "- " (line) } }
                    _ => { "  " (line) "\n" }
                }
            } }
        }
    };
    Ok(page(&state, &event_type, "schemas", body))
}

/// `GET /schemas/asyncapi.json`.
pub(crate) async fn asyncapi(State(state): State<Arc<AppState>>) -> PageResult<Response> {
    let document = herald::asyncapi::document(&state.registry).await?;
    let body = serde_json::to_string_pretty(&document)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"asyncapi.json\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_diff_keeps_common_lines_and_marks_the_rest() {
        let diff = super::diff_lines("a\nb\nc", "a\nc\nd");
        assert_eq!(diff, [(' ', "a"), ('-', "b"), (' ', "c"), ('+', "d")]);
    }
}
