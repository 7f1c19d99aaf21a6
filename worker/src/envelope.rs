//! Reading the envelope of a delivered event (protocol section 4), binary or structured mode.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use herald::headers;
use serde::de::DeserializeOwned;

use crate::function::EnvelopeMeta;

/// An event as delivered, for untyped handlers: the CloudEvents attributes and the raw data.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub(crate) meta: Arc<EnvelopeMeta>,
    pub(crate) data: Bytes,
    pub(crate) headers: HeaderMap,
}

impl Envelope {
    /// `ce-id`.
    pub fn id(&self) -> &str {
        &self.meta.id
    }
    /// `ce-type`.
    pub fn event_type(&self) -> &str {
        &self.meta.event_type
    }
    /// `ce-source`.
    pub fn source(&self) -> &str {
        &self.meta.source
    }
    /// `ce-time`, if given.
    pub fn time(&self) -> Option<&str> {
        self.meta.time.as_deref()
    }
    /// `ce-subject`, if given.
    pub fn subject(&self) -> Option<&str> {
        self.meta.subject.as_deref()
    }
    /// `ce-dataschema`, if given.
    pub fn data_schema(&self) -> Option<&str> {
        self.meta.data_schema.as_deref()
    }
    /// The data as JSON bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }
    /// The data decoded as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.data)
    }
    /// Every header as delivered.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

fn header(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name)
        .map(|value| headers::decode_value(value.as_str()).unwrap_or_else(|| value.to_string()))
}

/// Reads the envelope of a delivered message. Structured mode (`content-type:
/// application/cloudevents+json`) is normalised into attributes and data. Returns the
/// attributes, the data, or why the message cannot be read.
pub(crate) fn read(
    map: Option<&HeaderMap>,
    payload: &Bytes,
    subject: &str,
    events_prefix: &str,
    stream_sequence: u64,
) -> Result<(EnvelopeMeta, Bytes), String> {
    let empty = HeaderMap::new();
    let map = map.unwrap_or(&empty);
    let structured = map
        .get("content-type")
        .is_some_and(|v| v.as_str().starts_with("application/cloudevents+json"));
    if structured {
        let mut body: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload)
            .map_err(|e| format!("a structured CloudEvent whose body is not a JSON object: {e}"))?;
        let text = |body: &serde_json::Map<String, serde_json::Value>, key: &str| {
            body.get(key).and_then(|v| v.as_str()).map(str::to_owned)
        };
        let data = match body.remove("data") {
            Some(data) => Bytes::from(serde_json::to_vec(&data).map_err(|e| e.to_string())?),
            None => Bytes::from_static(b"null"),
        };
        let meta = EnvelopeMeta {
            id: text(&body, "id").unwrap_or_else(|| format!("seq-{stream_sequence}")),
            event_type: text(&body, "type")
                .or_else(|| subject.strip_prefix(events_prefix).map(str::to_owned))
                .unwrap_or_default(),
            source: text(&body, "source").unwrap_or_default(),
            time: text(&body, "time"),
            subject: text(&body, "subject"),
            data_schema: text(&body, "dataschema"),
        };
        return Ok((meta, data));
    }
    let meta = EnvelopeMeta {
        id: header(map, headers::ID)
            .or_else(|| header(map, headers::NATS_MSG_ID))
            .unwrap_or_else(|| format!("seq-{stream_sequence}")),
        event_type: header(map, headers::TYPE)
            .or_else(|| subject.strip_prefix(events_prefix).map(str::to_owned))
            .unwrap_or_default(),
        source: header(map, headers::SOURCE).unwrap_or_default(),
        time: header(map, headers::TIME),
        subject: header(map, headers::SUBJECT),
        data_schema: header(map, headers::DATA_SCHEMA),
    };
    Ok((meta, payload.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mode_reads_and_decodes_headers() {
        let mut map = HeaderMap::new();
        map.insert("ce-id", "abc");
        map.insert("ce-type", "user.signup");
        map.insert("ce-subject", "Jos%C3%A9");
        let payload = Bytes::from_static(b"{\"a\":1}");
        let (meta, data) = read(
            Some(&map),
            &payload,
            "ns.events.user.signup",
            "ns.events.",
            7,
        )
        .unwrap();
        assert_eq!(meta.id, "abc");
        assert_eq!(meta.event_type, "user.signup");
        assert_eq!(meta.subject.as_deref(), Some("José"));
        assert_eq!(data, payload);
    }

    #[test]
    fn missing_headers_fall_back_to_the_subject_and_sequence() {
        let payload = Bytes::from_static(b"{}");
        let (meta, _) = read(None, &payload, "ns.events.order.placed", "ns.events.", 42).unwrap();
        assert_eq!(meta.id, "seq-42");
        assert_eq!(meta.event_type, "order.placed");
    }

    #[test]
    fn structured_mode_is_normalised() {
        let mut map = HeaderMap::new();
        map.insert(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        );
        let body = br#"{"specversion":"1.0","id":"e1","type":"user.signup","source":"urn:x","data":{"email":"a@b.c"}}"#;
        let (meta, data) = read(
            Some(&map),
            &Bytes::from_static(body),
            "ns.events.user.signup",
            "ns.events.",
            1,
        )
        .unwrap();
        assert_eq!(meta.id, "e1");
        assert_eq!(meta.source, "urn:x");
        assert_eq!(&data[..], br#"{"email":"a@b.c"}"#);
        let bad = read(
            Some(&map),
            &Bytes::from_static(b"[1]"),
            "s",
            "ns.events.",
            1,
        );
        assert!(bad.is_err());
    }
}
