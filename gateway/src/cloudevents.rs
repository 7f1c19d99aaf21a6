//! The CloudEvents HTTP binding: binary, structured and batch modes.

use axum::http::{HeaderMap, StatusCode, header};
use herald::headers::decode_value;
use serde_json::{Map, Value};

use crate::event::{CORE_ATTRIBUTES, Checker, Incoming};
use crate::problem::{EventProblem, PathMessage, Problem};

/// `application/cloudevents+json`.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// `application/cloudevents-batch+json`.
pub const BATCH: &str = "application/cloudevents-batch+json";

/// The media type of a request, lower case, without parameters; `None` when absent.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether a media type carries JSON (`application/json`, `…+json`, `text/json`).
pub(crate) fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type == "text/json" || media_type.ends_with("+json")
}

/// Reads the events of a CloudEvents request; `max_events` bounds a batch.
pub(crate) fn parse(
    headers: &HeaderMap,
    body: &[u8],
    max_events: usize,
) -> Result<Vec<Incoming>, Problem> {
    let media = media_type(headers);
    match media.as_deref() {
        Some(STRUCTURED) => {
            let value = parse_json(body)?;
            let object = value
                .as_object()
                .ok_or_else(|| not_an_object("$", "a structured event is a JSON object"))?;
            if let Some(reason) = non_json_data(object) {
                return Err(Problem::media_type(reason));
            }
            structured(object, 0, "$".to_owned())
                .map(|event| vec![event])
                .map_err(|problem| Problem::invalid(vec![problem], 1))
        }
        Some(BATCH) => {
            let value = parse_json(body)?;
            let items = value.as_array().ok_or_else(|| {
                not_an_object("$", "a batch is a JSON array of structured events")
            })?;
            if items.len() > max_events {
                return Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-many-events",
                    format!("a batch holds at most {max_events} events"),
                )
                .detail(format!("this one holds {}", items.len()))
                .index(max_events));
            }
            if let Some((index, reason)) = items
                .iter()
                .enumerate()
                .find_map(|(index, item)| Some((index, non_json_data(item.as_object()?)?)))
            {
                return Err(Problem::media_type(reason).index(index));
            }
            let mut events = Vec::with_capacity(items.len());
            let mut problems = Vec::new();
            for (index, item) in items.iter().enumerate() {
                let prefix = format!("$[{index}]");
                let result = match item.as_object() {
                    Some(object) => structured(object, index, prefix),
                    None => Err(EventProblem {
                        index,
                        violations: vec![PathMessage {
                            path: prefix,
                            message: "a batch element is a JSON object".to_owned(),
                        }],
                        ..EventProblem::default()
                    }),
                };
                match result {
                    Ok(event) => events.push(event),
                    Err(problem) => problems.push(problem),
                }
            }
            if problems.is_empty() {
                Ok(events)
            } else {
                Err(Problem::invalid(problems, items.len()))
            }
        }
        Some(other) if other.starts_with("application/cloudevents") => Err(Problem::media_type(
            format!("{other} is not supported: send JSON ({STRUCTURED} or {BATCH})"),
        )),
        _ => binary(headers, body, media.as_deref()),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|error| {
        Problem::invalid(
            vec![EventProblem {
                violations: vec![PathMessage {
                    path: "$".to_owned(),
                    message: format!("the body is not JSON: {error}"),
                }],
                ..EventProblem::default()
            }],
            1,
        )
    })
}

fn not_an_object(path: &str, message: &str) -> Problem {
    Problem::invalid(
        vec![EventProblem {
            violations: vec![PathMessage {
                path: path.to_owned(),
                message: message.to_owned(),
            }],
            ..EventProblem::default()
        }],
        1,
    )
}

/// Binary mode: attributes in `ce-*` headers, the data in the body.
fn binary(headers: &HeaderMap, body: &[u8], media: Option<&str>) -> Result<Vec<Incoming>, Problem> {
    if !headers.contains_key("ce-specversion") {
        return Err(match media {
            Some(media) if !is_json(media) => Problem::media_type(format!(
                "{media} is not a CloudEvents mode: send ce-* headers with a JSON body, \
                 {STRUCTURED} or {BATCH}"
            )),
            _ => Problem::invalid(
                vec![EventProblem {
                    violations: vec![PathMessage {
                        path: "ce-specversion".to_owned(),
                        message: "a binary-mode event needs the ce-specversion, ce-id, ce-type \
                                  and ce-source headers"
                            .to_owned(),
                    }],
                    ..EventProblem::default()
                }],
                1,
            ),
        });
    }
    if let Some(media) = media.filter(|m| !is_json(m)) {
        return Err(Problem::media_type(format!(
            "the data of a Herald event is JSON; {media} is not"
        )));
    }
    let get = |name: &str| {
        headers
            .get(format!("ce-{name}"))
            .and_then(|v| v.to_str().ok())
            .and_then(decode_value)
    };
    let mut check = Checker::new(0, "");
    check.required("specversion", get("specversion"));
    if headers.contains_key("ce-datacontenttype") {
        check.fail(
            "datacontenttype",
            "must not appear in binary mode: Content-Type is the data content type",
        );
    }
    let id = check.required("id", get("id"));
    let event_type = check.required("type", get("type"));
    let source = check.required("source", get("source"));
    let time = check.time(get("time"));
    let mut extensions = Vec::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if CORE_ATTRIBUTES.contains(&attribute) || !check.extension_name(attribute) {
            continue;
        }
        match value.to_str().ok().and_then(decode_value) {
            Some(value) => extensions.push((attribute.to_owned(), value)),
            None => check.fail(attribute, "not a valid header value"),
        }
    }
    let data = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(data) => data,
            Err(error) => {
                check.fail("data", format!("the body is not JSON: {error}"));
                Value::Null
            }
        }
    };
    let trace = get("traceparent").map(|parent| (parent, get("tracestate")));
    check
        .finish()
        .map_err(|problem| Problem::invalid(vec![problem], 1))?;
    Ok(vec![Incoming {
        id,
        event_type,
        source,
        time,
        subject: get("subject"),
        data_schema: get("dataschema"),
        extensions,
        data,
        trace,
    }])
}

/// Why a structured event's data is not JSON, if it is not (415).
fn non_json_data(object: &Map<String, Value>) -> Option<String> {
    if object.contains_key("data_base64") {
        return Some("data_base64 (binary data) is not accepted: send JSON in data".to_owned());
    }
    let content_type = object.get("datacontenttype")?.as_str()?;
    let media = content_type.split(';').next().unwrap_or_default().trim();
    (!is_json(&media.to_ascii_lowercase())).then(|| {
        format!("datacontenttype {content_type} is not JSON: a Herald event's data is JSON")
    })
}

/// One structured event (alone or in a batch).
fn structured(
    object: &Map<String, Value>,
    index: usize,
    prefix: String,
) -> Result<Incoming, EventProblem> {
    let mut check = Checker::new(index, prefix);
    let text = |name: &str, check: &mut Checker| match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            check.fail(name, "must be a string");
            None
        }
    };
    {
        let value = text("specversion", &mut check);
        check.required("specversion", value)
    };
    let id = {
        let value = text("id", &mut check);
        check.required("id", value)
    };
    let event_type = {
        let value = text("type", &mut check);
        check.required("type", value)
    };
    let source = {
        let value = text("source", &mut check);
        check.required("source", value)
    };
    let time_text = text("time", &mut check);
    let time = check.time(time_text);
    text("datacontenttype", &mut check);
    let mut extensions = Vec::new();
    for (name, value) in object {
        if CORE_ATTRIBUTES.contains(&name.as_str()) || name == "data_base64" {
            continue;
        }
        if !check.extension_name(name) {
            continue;
        }
        match value {
            Value::String(s) => extensions.push((name.clone(), s.clone())),
            Value::Number(n) => extensions.push((name.clone(), n.to_string())),
            Value::Bool(b) => extensions.push((name.clone(), b.to_string())),
            _ => check.fail(
                name,
                "an extension attribute is a string, number or boolean",
            ),
        }
    }
    let trace =
        text("traceparent", &mut check).map(|parent| (parent, text("tracestate", &mut check)));
    let subject = text("subject", &mut check);
    let data_schema = text("dataschema", &mut check);
    check.finish()?;
    Ok(Incoming {
        id,
        event_type,
        source,
        time,
        subject,
        data_schema,
        extensions,
        data: object.get("data").cloned().unwrap_or(Value::Null),
        trace,
    })
}
