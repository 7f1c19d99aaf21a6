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
    /// When the event happened: `ce-time`, else the time of its UUIDv7 id (RFC 3339 UTC).
    pub fn time(&self) -> Option<&str> {
        self.meta.time()
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

/// The first value of header `name`, found by comparing names: `HeaderMap::get` with a
/// `&str` copies the name into a fresh `HeaderName` and hashes it, per lookup, and a
/// delivery is looked at for a dozen headers.
pub(crate) fn find<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a async_nats::HeaderValue> {
    map.iter()
        .find(|(key, _)| AsRef::<str>::as_ref(*key) == name)
        .and_then(|(_, values)| values.first())
}

/// A header value as text: percent-decoded (section 4), else as it came.
fn text(value: &async_nats::HeaderValue) -> String {
    let value = value.as_str();
    if memchr::memchr(b'%', value.as_bytes()).is_none() {
        return value.to_owned();
    }
    headers::decode_value(value).unwrap_or_else(|| value.to_owned())
}

/// How many event types, sources and schema names each thread keeps interned (eight
/// types' worth).
const INTERNED: usize = 24;

thread_local! {
    /// The event types, sources and schema names this thread read last, as they came
    /// (before decoding) and as text.
    static NAMES: std::cell::RefCell<Vec<(Box<str>, Arc<str>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// [`text`] for a value that repeats across events (a type, a source, a schema): shared
/// with the events this thread read before instead of copied per event. Per thread, so
/// that reading takes no lock and the counts it touches stay on one core.
fn interned(value: &async_nats::HeaderValue) -> Arc<str> {
    let raw = value.as_str();
    NAMES.with_borrow_mut(|names| {
        if let Some((_, text)) = names.iter().find(|(seen, _)| **seen == *raw) {
            return Arc::clone(text);
        }
        let text: Arc<str> = text(value).into();
        if names.len() == INTERNED {
            // The oldest goes; a thread that reads many types shares fewer of them.
            names.remove(0);
        }
        names.push((raw.into(), Arc::clone(&text)));
        text
    })
}

/// What [`read`] makes of a delivered message.
pub(crate) struct Read {
    pub(crate) meta: EnvelopeMeta,
    pub(crate) data: Bytes,
    /// Whether any header is one of Herald's own (`herald-…`): a delivery without any
    /// needs no search for one.
    pub(crate) herald_headers: bool,
    /// Whether `Nats-Msg-Id` is the event id (as the protocol's publishers send it).
    pub(crate) msg_id_is_id: bool,
    /// Whether a `traceparent` header came.
    pub(crate) traced: bool,
}

/// The headers [`read`] looks at, found in one pass over the map.
#[derive(Default)]
struct Found<'a> {
    id: Option<&'a async_nats::HeaderValue>,
    msg_id: Option<&'a async_nats::HeaderValue>,
    event_type: Option<&'a async_nats::HeaderValue>,
    source: Option<&'a async_nats::HeaderValue>,
    time: Option<&'a async_nats::HeaderValue>,
    subject: Option<&'a async_nats::HeaderValue>,
    data_schema: Option<&'a async_nats::HeaderValue>,
    content_type: Option<&'a async_nats::HeaderValue>,
    herald: bool,
    traced: bool,
}

impl<'a> Found<'a> {
    fn scan(map: &'a HeaderMap) -> Found<'a> {
        let mut found = Found::default();
        for (name, values) in map.iter() {
            let Some(value) = values.first() else {
                continue;
            };
            let name: &str = name.as_ref();
            let slot = match name {
                headers::ID => &mut found.id,
                headers::NATS_MSG_ID => &mut found.msg_id,
                headers::TYPE => &mut found.event_type,
                headers::SOURCE => &mut found.source,
                headers::TIME => &mut found.time,
                headers::SUBJECT => &mut found.subject,
                headers::DATA_SCHEMA => &mut found.data_schema,
                "content-type" => &mut found.content_type,
                _ => {
                    found.herald |= name.starts_with("herald-");
                    found.traced |= name == headers::TRACEPARENT;
                    continue;
                }
            };
            *slot = Some(value);
        }
        found
    }
}

/// Reads the envelope of a delivered message. Structured mode (`content-type:
/// application/cloudevents+json`) is normalised into attributes and data. Returns the
/// attributes and the data, or why the message cannot be read.
///
/// Events of both forms of protocol section 4 are read alike. Those stored by older SDKs
/// carry `ce-datacontenttype: application/json` and `ce-time`; current ones carry neither
/// unless the publisher chose the id or the time: data without a content type is JSON, and
/// an event without `ce-time` happened when its UUIDv7 id was made.
pub(crate) fn read(
    map: Option<&HeaderMap>,
    payload: &Bytes,
    subject: &str,
    events_prefix: &str,
    stream_sequence: u64,
) -> Result<Read, String> {
    let found = map.map(Found::scan).unwrap_or_default();
    let structured = found
        .content_type
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
        let meta = EnvelopeMeta::new(
            text(&body, "id").unwrap_or_else(|| format!("seq-{stream_sequence}")),
            text(&body, "type")
                .or_else(|| subject.strip_prefix(events_prefix).map(str::to_owned))
                .unwrap_or_default()
                .into(),
            text(&body, "source").unwrap_or_default().into(),
            text(&body, "time"),
            text(&body, "subject"),
            text(&body, "dataschema").map(Arc::from),
        );
        return Ok(Read {
            msg_id_is_id: found.msg_id.is_some_and(|m| m.as_str() == meta.id),
            meta,
            data,
            herald_headers: found.herald,
            traced: found.traced,
        });
    }
    let id = found
        .id
        .or(found.msg_id)
        .map(text)
        .unwrap_or_else(|| format!("seq-{stream_sequence}"));
    let meta = EnvelopeMeta::new(
        id,
        found
            .event_type
            .map(interned)
            .or_else(|| subject.strip_prefix(events_prefix).map(Arc::from))
            .unwrap_or_default(),
        found.source.map(interned).unwrap_or_default(),
        found.time.map(text),
        found.subject.map(text),
        found.data_schema.map(interned),
    );
    Ok(Read {
        msg_id_is_id: found.msg_id.is_some_and(|m| m.as_str() == meta.id),
        meta,
        data: payload.clone(),
        herald_headers: found.herald,
        traced: found.traced,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_sources_are_shared_between_events_and_decoded() {
        let read_one = |event_type: &str, source: &str| {
            let mut map = HeaderMap::new();
            map.insert("ce-id", "abc");
            map.insert("ce-type", event_type);
            map.insert("ce-source", source);
            let payload = Bytes::from_static(b"{}");
            let Read { meta, .. } = read(Some(&map), &payload, "s", "ns.events.", 1).unwrap();
            meta
        };
        let (a, b) = (
            read_one("order.placed", "urn:a%2Fb"),
            read_one("order.placed", "urn:a%2Fb"),
        );
        assert_eq!((&*a.event_type, &*a.source), ("order.placed", "urn:a/b"));
        assert!(Arc::ptr_eq(&a.event_type, &b.event_type));
        assert!(Arc::ptr_eq(&a.source, &b.source));
        // More names than are kept: each still reads as it came.
        for n in 0..(2 * INTERNED) {
            let meta = read_one(&format!("type.{n}"), "urn:a%2Fb");
            assert_eq!(&*meta.event_type, format!("type.{n}"));
            assert_eq!(&*meta.source, "urn:a/b");
        }
        assert_eq!(
            &*read_one("order.placed", "urn:c").event_type,
            "order.placed"
        );
    }

    #[test]
    fn binary_mode_reads_and_decodes_headers() {
        let mut map = HeaderMap::new();
        map.insert("ce-id", "abc");
        map.insert("ce-type", "user.signup");
        map.insert("ce-subject", "Jos%C3%A9");
        let payload = Bytes::from_static(b"{\"a\":1}");
        let Read { meta, data, .. } = read(
            Some(&map),
            &payload,
            "ns.events.user.signup",
            "ns.events.",
            7,
        )
        .unwrap();
        assert_eq!(meta.id, "abc");
        assert_eq!(&*meta.event_type, "user.signup");
        assert_eq!(meta.subject.as_deref(), Some("José"));
        assert_eq!(data, payload);
    }

    fn signup_headers(id: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-type", "user.signup"),
            ("ce-source", "urn:herald:service:api"),
            ("ce-subject", "user-1"),
            ("Nats-Msg-Id", id),
        ] {
            map.insert(name, value);
        }
        map
    }

    fn read_signup(map: &HeaderMap) -> (EnvelopeMeta, Bytes) {
        let payload = Bytes::from_static(b"{\"email\":\"a@b.c\"}");
        let Read { meta, data, .. } = read(
            Some(map),
            &payload,
            "ns.events.user.signup",
            "ns.events.",
            3,
        )
        .unwrap();
        (meta, data)
    }

    /// Events stored by older SDKs carry `ce-datacontenttype: application/json` and
    /// `ce-time`; current ones carry neither (their UUIDv7 id tells the time). Both read
    /// the same.
    #[test]
    fn events_of_older_and_current_sdks_read_alike() {
        // A UUIDv7 made at 2026-11-25T07:31:01.490Z.
        let id = "01a2119d-74f2-7a1c-9f0e-2b3c4d5e6f70";
        let current = signup_headers(id);
        let mut older = current.clone();
        older.insert("ce-datacontenttype", "application/json");
        older.insert("ce-time", "2026-11-25T07:31:01.490000Z");
        let ((current_meta, current_data), (older_meta, older_data)) =
            (read_signup(&current), read_signup(&older));
        assert_eq!(format!("{current_meta:?}"), format!("{older_meta:?}"));
        assert_eq!(current_data, older_data);
        assert_eq!(current_meta.id, id);
        assert_eq!(&*current_meta.source, "urn:herald:service:api");
        assert_eq!(current_meta.time(), Some("2026-11-25T07:31:01.490000Z"));
        assert_eq!(current_meta.subject.as_deref(), Some("user-1"));
    }

    #[test]
    fn ce_time_wins_and_other_ids_tell_no_time() {
        let mut chosen = signup_headers("signup-42");
        assert_eq!(read_signup(&chosen).0.time(), None);
        chosen.insert("ce-time", "2026-11-25T08:00:00Z");
        assert_eq!(read_signup(&chosen).0.time(), Some("2026-11-25T08:00:00Z"));
        let mut uuid_v7 = signup_headers("01a2119d-74f2-7a1c-9f0e-2b3c4d5e6f70");
        uuid_v7.insert("ce-time", "2026-11-25T08:00:00Z");
        assert_eq!(read_signup(&uuid_v7).0.time(), Some("2026-11-25T08:00:00Z"));
    }

    #[test]
    fn an_event_is_as_old_as_its_time_or_its_ids() {
        let made = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let id = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            made.duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            0,
        ))
        .to_string();
        let (meta, _) = read_signup(&signup_headers(&id));
        let age = meta.seconds_since().expect("a UUIDv7 id tells the time");
        assert!((59.0..120.0).contains(&age), "{age}");
        // The time written out, when asked for, tells the same age.
        let written = crate::telemetry::seconds_since(meta.time().unwrap()).unwrap();
        assert!((written - age).abs() < 2.0, "{written} vs {age}");
        let mut given = signup_headers(&id);
        given.insert(
            "ce-time",
            herald::headers::format_time(made - std::time::Duration::from_secs(3600)),
        );
        let age = read_signup(&given).0.seconds_since().unwrap();
        assert!((3659.0..3720.0).contains(&age), "ce-time wins: {age}");
        assert_eq!(
            read_signup(&signup_headers("signup-42")).0.seconds_since(),
            None
        );
    }

    #[test]
    fn the_message_id_and_a_traceparent_are_noticed() {
        let payload = Bytes::from_static(b"{}");
        let read_of = |map: &HeaderMap| {
            read(
                Some(map),
                &payload,
                "ns.events.user.signup",
                "ns.events.",
                3,
            )
            .unwrap()
        };
        let map = signup_headers("signup-42");
        let plain = read_of(&map);
        assert!(plain.msg_id_is_id && !plain.traced);
        let mut other = map;
        other.insert("Nats-Msg-Id", "another");
        other.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let other = read_of(&other);
        assert!(!other.msg_id_is_id && other.traced);
    }

    #[test]
    fn herald_headers_are_noticed() {
        let payload = Bytes::from_static(b"{}");
        let read_with = |map: &HeaderMap| {
            read(Some(map), &payload, "ns.events.a", "ns.events.", 1)
                .unwrap()
                .herald_headers
        };
        let mut map = signup_headers("e1");
        assert!(!read_with(&map));
        map.insert("herald-replay", "r1");
        assert!(read_with(&map));
    }

    #[test]
    fn missing_headers_fall_back_to_the_subject_and_sequence() {
        let payload = Bytes::from_static(b"{}");
        let Read { meta, .. } =
            read(None, &payload, "ns.events.order.placed", "ns.events.", 42).unwrap();
        assert_eq!(meta.id, "seq-42");
        assert_eq!(&*meta.event_type, "order.placed");
    }

    #[test]
    fn structured_mode_is_normalised() {
        let mut map = HeaderMap::new();
        map.insert(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        );
        let body = br#"{"specversion":"1.0","id":"e1","type":"user.signup","source":"urn:x","data":{"email":"a@b.c"}}"#;
        let Read { meta, data, .. } = read(
            Some(&map),
            &Bytes::from_static(body),
            "ns.events.user.signup",
            "ns.events.",
            1,
        )
        .unwrap();
        assert_eq!(meta.id, "e1");
        assert_eq!(&*meta.source, "urn:x");
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
