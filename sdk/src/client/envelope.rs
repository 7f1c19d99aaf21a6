//! The envelope headers of an event (protocol section 4), built per type: what every event
//! of a type carries alike is put in a map once, and each event's map is a copy of it with
//! the event's own values put in.
//!
//! A header map is a `HashMap` with SipHash keys. Copying one hashes nothing, where
//! putting a header in hashes its name (and makes the map grow when it is full), so the
//! three or four headers every event of a type shares cost a copy rather than a hash each.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};

/// The protocol's header names.
pub(super) mod names {
    use async_nats::header::HeaderName;

    use crate::headers;

    pub(in super::super) const SPEC_VERSION: HeaderName =
        HeaderName::from_static(headers::SPEC_VERSION);
    pub(in super::super) const ID: HeaderName = HeaderName::from_static(headers::ID);
    pub(in super::super) const TYPE: HeaderName = HeaderName::from_static(headers::TYPE);
    pub(in super::super) const SOURCE: HeaderName = HeaderName::from_static(headers::SOURCE);
    pub(in super::super) const TIME: HeaderName = HeaderName::from_static(headers::TIME);
    pub(in super::super) const DATA_SCHEMA: HeaderName =
        HeaderName::from_static(headers::DATA_SCHEMA);
    pub(in super::super) const SUBJECT: HeaderName = HeaderName::from_static(headers::SUBJECT);
    pub(in super::super) const NATS_MSG_ID: HeaderName =
        HeaderName::from_static(headers::NATS_MSG_ID);
    pub(in super::super) const TRACEPARENT: HeaderName =
        HeaderName::from_static(headers::TRACEPARENT);
    pub(in super::super) const TRACESTATE: HeaderName =
        HeaderName::from_static(headers::TRACESTATE);
}

/// The bytes one header takes in a message: its name, `: `, its value and CRLF.
fn header_len(name: &HeaderName, value: &HeaderValue) -> usize {
    AsRef::<str>::as_ref(name).len() + value.as_str().len() + 4
}

/// The headers that every event of one type carries with the same values (`ce-specversion`,
/// `ce-type`, `ce-source` and, when known, `ce-dataschema`), and places for the two that
/// carry the event's id.
#[derive(Debug, Clone)]
pub(super) struct TypeHeaders {
    map: HeaderMap,
    /// The bytes of the shared headers.
    shared_len: usize,
}

impl TypeHeaders {
    /// The shared headers of events of one type.
    pub(super) fn new(
        spec_version: HeaderValue,
        source: HeaderValue,
        event_type: HeaderValue,
        data_schema: Option<HeaderValue>,
    ) -> TypeHeaders {
        let mut headers = TypeHeaders {
            map: HeaderMap::new(),
            shared_len: 0,
        };
        let mut put = |name: HeaderName, value: HeaderValue| {
            headers.shared_len += header_len(&name, &value);
            headers.map.insert(name, value);
        };
        put(names::SPEC_VERSION, spec_version);
        put(names::TYPE, event_type);
        put(names::SOURCE, source);
        if let Some(data_schema) = data_schema {
            put(names::DATA_SCHEMA, data_schema);
        }
        // Places for the id's two headers, which every event's map overwrites
        // (`EventHeaders::new`): a copy has the room for them and needs not grow.
        headers.map.insert(names::ID, HeaderValue::new());
        headers.map.insert(names::NATS_MSG_ID, HeaderValue::new());
        headers
    }

    /// One event's headers: these, and its id as `ce-id` and `Nats-Msg-Id`.
    pub(super) fn event(&self, id: HeaderValue) -> EventHeaders {
        let mut headers = EventHeaders {
            map: self.map.clone(),
            len: self.shared_len,
        };
        headers.put(names::ID, id.clone());
        headers.put(names::NATS_MSG_ID, id);
        headers
    }
}

/// One event's headers, being put together.
#[derive(Debug)]
pub(super) struct EventHeaders {
    map: HeaderMap,
    /// The bytes of the headers so far.
    len: usize,
}

impl EventHeaders {
    /// Puts in a header of this event's own (replacing one of the same name).
    pub(super) fn put(&mut self, name: HeaderName, value: HeaderValue) {
        self.len += header_len(&name, &value);
        self.map.insert(name, value);
    }

    /// The map, and the bytes the headers take in the message (without the status line).
    pub(super) fn finish(self) -> (HeaderMap, usize) {
        (self.map, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(map: &HeaderMap) -> Vec<(String, Vec<String>)> {
        let mut pairs: Vec<_> = map
            .iter()
            .map(|(name, values)| {
                (
                    AsRef::<str>::as_ref(name).to_owned(),
                    values
                        .iter()
                        .map(|value| value.as_str().to_owned())
                        .collect(),
                )
            })
            .collect();
        pairs.sort();
        pairs
    }

    /// What building the map header by header gives, as `send` built it before.
    fn by_hand(headers: &[(HeaderName, &str)]) -> (HeaderMap, usize) {
        let mut map = HeaderMap::new();
        let mut len = 0;
        for (name, value) in headers {
            let value = HeaderValue::from(*value);
            len += header_len(name, &value);
            map.insert(name.clone(), value);
        }
        (map, len)
    }

    #[test]
    fn an_events_headers_are_the_types_and_its_own_with_nothing_left_of_the_places() {
        let shared = TypeHeaders::new(
            HeaderValue::from("1.0"),
            HeaderValue::from("billing"),
            HeaderValue::from("order.placed"),
            Some(HeaderValue::from("herald:schemas/order.placed/3")),
        );
        let id = "0193a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b";
        let mut event = shared.event(HeaderValue::from(id));
        event.put(names::SUBJECT, HeaderValue::from("customer-7"));
        let (map, len) = event.finish();
        let (expected, expected_len) = by_hand(&[
            (names::SPEC_VERSION, "1.0"),
            (names::ID, id),
            (names::TYPE, "order.placed"),
            (names::SOURCE, "billing"),
            (names::DATA_SCHEMA, "herald:schemas/order.placed/3"),
            (names::SUBJECT, "customer-7"),
            (names::NATS_MSG_ID, id),
        ]);
        assert_eq!(pairs(&map), pairs(&expected));
        assert_eq!(len, expected_len);
    }

    #[test]
    fn events_of_one_type_do_not_share_their_own_headers() {
        let shared = TypeHeaders::new(
            HeaderValue::from("1.0"),
            HeaderValue::from("billing"),
            HeaderValue::from("order.placed"),
            None,
        );
        let (first, _) = shared.event(HeaderValue::from("first")).finish();
        let mut second = shared.event(HeaderValue::from("second"));
        second.put(names::TIME, HeaderValue::from("2026-11-28T01:00:00Z"));
        let (second, _) = second.finish();
        assert_eq!(first.get(names::ID).map(HeaderValue::as_str), Some("first"));
        assert_eq!(
            first.get(names::NATS_MSG_ID).map(HeaderValue::as_str),
            Some("first")
        );
        assert_eq!(first.get(names::TIME), None);
        assert_eq!(first.get(names::DATA_SCHEMA), None);
        assert_eq!(
            second.get(names::ID).map(HeaderValue::as_str),
            Some("second")
        );
        assert_eq!(
            second.get(names::TIME).map(HeaderValue::as_str),
            Some("2026-11-28T01:00:00Z")
        );
        assert_eq!(first.len(), 5);
        assert_eq!(second.len(), 6);
    }
}
