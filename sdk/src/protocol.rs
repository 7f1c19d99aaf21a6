//! Every wire name of the Herald protocol (`docs/protocol.md`), defined once.
//!
//! Nothing else in Herald spells a subject, stream, bucket, key, header or message id as a
//! literal: it calls this module. Names derived from a namespace (streams, buckets, subjects)
//! are methods of [`Namespace`]; this module adds the prefixes and builders that are not
//! (the events prefix, the continuation subject, the `KV_` stream of a bucket), the header
//! names ([`header`]), the message ids ([`msg_id`]), the keys of the runs bucket ([`runs`])
//! and of the schema registry ([`registry_keys`]), and two rules that more than one crate
//! applies ([`max_deliver`], [`copy_headers_except_transport`]).
//!
//! ```
//! use herald::Namespace;
//! use herald::protocol::{self, header, msg_id, runs};
//!
//! let ns = Namespace::new("shop").unwrap();
//! assert_eq!(protocol::events_prefix(&ns), "shop.events.");
//! assert_eq!(protocol::schedule_subject(&ns, "mailer", "e1"), "shop.redrive.mailer.sched.e1");
//! assert_eq!(protocol::kv_stream(&ns.runs_bucket()), "KV_shop-runs");
//! assert_eq!(header::REPLAY, "herald-replay");
//! assert_eq!(msg_id::dead_letter("mailer", "SHOP_EVENTS", 7), "dlq:mailer:SHOP_EVENTS:7");
//! assert_eq!(runs::run_key("mailer", &runs::event_key("e1")), "mailer.e1");
//! assert_eq!(protocol::max_deliver(5), 7);
//! ```

use async_nats::HeaderMap;
use sha2::{Digest, Sha256};

pub use crate::names::Namespace;

/// The prefix of every event subject, `ns.events.` (an event of type `T` is on
/// `ns.events.T`, see [`Namespace::event_subject`]).
pub fn events_prefix(namespace: &Namespace) -> String {
    format!("{}.events.", namespace.as_str())
}

/// The event type of an event subject (`ns.events.T` gives `T`); `None` for other subjects.
pub fn event_type_of_subject<'a>(namespace: &Namespace, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(events_prefix(namespace).as_str())
        .filter(|rest| !rest.is_empty())
}

/// The prefix of the default `ce-source` of a client, `urn:herald:service:`, followed by the
/// program name.
pub const DEFAULT_SOURCE_PREFIX: &str = "urn:herald:service:";

/// The subject of a continuation (a scheduled message) of function `function` for the run of
/// `event_key`: `ns.redrive.F.sched.<event-key>`. It sits under `ns.redrive.>`, so
/// `NS_EVENTS` stores it, and no consumer filter matches it; the server publishes it to
/// [`Namespace::redrive_subject`] when it is due.
pub fn schedule_subject(namespace: &Namespace, function: &str, event_key: &str) -> String {
    format!("{}.sched.{event_key}", namespace.redrive_subject(function))
}

/// The prefix JetStream gives the stream that holds a key-value bucket.
pub const KV_STREAM_PREFIX: &str = "KV_";

/// The stream that holds the key-value bucket `bucket`: `KV_<bucket>`.
pub fn kv_stream(bucket: &str) -> String {
    format!("{KV_STREAM_PREFIX}{bucket}")
}

/// The JetStream API subject of direct gets from `stream` (`allow_direct`), which any
/// replica answers; a body with `multi_last` asks for the last message of many subjects.
pub fn direct_get_subject(stream: &str) -> String {
    format!("$JS.API.DIRECT.GET.{stream}")
}

/// The suffix of a function's redrive consumer's name: upper case, which no function id has.
pub const REDRIVE_CONSUMER_SUFFIX: &str = "_REDRIVE";

/// The durable name of function `function`'s redrive consumer on `NS_EVENTS`, filtered on
/// [`Namespace::redrive_subject`] alone: `<F>_REDRIVE` (protocol section 3). A function with
/// event triggers and no `max_ack_pending` of its own reads its redrive subject (redrives,
/// continuations, wake-ups, cron ticks, invocations) through it, so that its own consumer
/// has one filter subject per trigger.
pub fn redrive_consumer(function: &str) -> String {
    format!("{function}{REDRIVE_CONSUMER_SUFFIX}")
}

/// The function whose redrive consumer is named `consumer` ([`redrive_consumer`]), or
/// `None` when the name is not one.
pub fn redrive_consumer_function(consumer: &str) -> Option<&str> {
    consumer
        .strip_suffix(REDRIVE_CONSUMER_SUFFIX)
        .filter(|function| !function.is_empty())
}

/// The durable name of function `function`'s sweeper on `NS_ADVISORIES`:
/// `herald-sweeper-<F>`, shared by the function's replicas.
pub fn sweeper_durable(function: &str) -> String {
    format!("{SWEEPER_DURABLE}-{function}")
}

/// The subject of the MAX_DELIVERIES advisories of consumer `consumer` on `stream`:
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`.
pub fn max_deliveries_advisory_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// The durable name of the advisory sweeper's consumer on `NS_ADVISORIES`, shared by every
/// worker replica of a namespace.
pub const SWEEPER_DURABLE: &str = "herald-sweeper";

/// A function consumer's `max_deliver` for an attempts budget: `attempts + 2`. The two spare
/// deliveries let a worker dead-letter an event whose last attempt crashed, hung or lost its
/// connection, and retry a dead letter whose publish failed.
pub fn max_deliver(attempts: u32) -> i64 {
    i64::from(attempts) + 2
}

/// The attempts budget of a consumer whose `max_deliver` is `max_deliver` (the inverse of
/// [`max_deliver`]); `None` when the consumer does not follow the rule.
pub fn attempts_of_max_deliver(max_deliver: i64) -> Option<u32> {
    u32::try_from(max_deliver.checked_sub(2)?)
        .ok()
        .filter(|attempts| *attempts > 0)
}

/// The `ce-dataschema` value for version `version` of `event_type` in `namespace`:
/// `urn:ns:schema:T:N`.
pub fn data_schema_urn(namespace: &Namespace, event_type: &str, version: u32) -> String {
    format!("urn:{}:schema:{event_type}:{version}", namespace.as_str())
}

/// Parses `urn:ns:schema:T:N` into (T, N) when it belongs to `namespace`.
pub fn parse_data_schema(namespace: &Namespace, value: &str) -> Option<(String, u32)> {
    let rest = value
        .strip_prefix("urn:")?
        .strip_prefix(namespace.as_str())?
        .strip_prefix(":schema:")?;
    let (event_type, version) = rest.rsplit_once(':')?;
    Some((event_type.to_owned(), version.parse().ok()?))
}

/// Whether a header name is a transport header of NATS or JetStream (`Nats-*`, in any case).
pub fn is_transport_header(name: &str) -> bool {
    name.len() >= 5 && name.as_bytes()[..5].eq_ignore_ascii_case(b"nats-")
}

/// A copy of `headers` without any `Nats-*` header (compared case-insensitively) and without
/// the headers named in `extra_skip` (also case-insensitively). Dead letters, redrives,
/// replays and continuations carry the original's headers this way, then add their own
/// `Nats-Msg-Id` and schedule headers.
pub fn copy_headers_except_transport(headers: &HeaderMap, extra_skip: &[&str]) -> HeaderMap {
    let mut copy = HeaderMap::new();
    for (name, values) in headers.iter() {
        let text: &str = name.as_ref();
        if is_transport_header(text)
            || extra_skip
                .iter()
                .any(|skip| skip.eq_ignore_ascii_case(text))
        {
            continue;
        }
        for value in values {
            copy.append(name.clone(), value.clone());
        }
    }
    copy
}

/// Header names (protocol sections 4, 6 and 7) and the fixed values Herald writes in them.
pub mod header {
    /// `ce-specversion`: always [`SPEC_VERSION_VALUE`].
    pub const SPEC_VERSION: &str = "ce-specversion";
    /// `ce-id`: the event id.
    pub const ID: &str = "ce-id";
    /// `ce-type`: the event type.
    pub const TYPE: &str = "ce-type";
    /// `ce-source`: URI-reference of the producer.
    pub const SOURCE: &str = "ce-source";
    /// `ce-time`: RFC 3339 UTC time of the occurrence, written when the publisher chose the
    /// id or the time; without it, a UUIDv7 `ce-id` tells the time
    /// ([`time_of_event_id`](crate::headers::time_of_event_id)).
    pub const TIME: &str = "ce-time";
    /// `ce-datacontenttype`. Not written: an event without it carries JSON
    /// ([`JSON_CONTENT_TYPE`]), the only data of protocol version 1. Events stored by older
    /// SDKs carry it with that value; readers accept both.
    pub const DATA_CONTENT_TYPE: &str = "ce-datacontenttype";
    /// `ce-dataschema`: `urn:ns:schema:T:N` (see [`super::data_schema_urn`]).
    pub const DATA_SCHEMA: &str = "ce-dataschema";
    /// `ce-subject`: the entity the event is about.
    pub const SUBJECT: &str = "ce-subject";
    /// `content-type`: [`STRUCTURED_CONTENT_TYPE`] marks a structured-mode CloudEvent.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C `traceparent`.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C `tracestate`.
    pub const TRACESTATE: &str = "tracestate";

    /// `Nats-Msg-Id`: JetStream's deduplication id; equal to `ce-id` on events, built by
    /// [`super::msg_id`] on dead letters, redrives and replays.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// `Nats-Schedule`: when the server publishes a scheduled message
    /// ([`schedule_at`](super::schedule_at)), nats-server 2.12+.
    pub const NATS_SCHEDULE: &str = "Nats-Schedule";
    /// `Nats-Schedule-Target`: the subject a scheduled message is published to.
    pub const NATS_SCHEDULE_TARGET: &str = "Nats-Schedule-Target";
    /// `Nats-TTL`: a per-message age limit (nats-server 2.11+, on streams with
    /// `allow_msg_ttl`); [`TTL_NEVER`] keeps the message past the stream's `max_age`.
    pub const NATS_TTL: &str = "Nats-TTL";

    /// `herald-replay: <replay id>`: the delivery is a replay, a fresh run
    /// (see [`super::runs::replay_run_id`]).
    pub const REPLAY: &str = "herald-replay";
    /// `herald-continuation: 1`: the delivery is a scheduled continuation of a run.
    pub const CONTINUATION: &str = "herald-continuation";
    /// `herald-wake: <step-key>`: the continuation wakes this durable sleep.
    pub const WAKE: &str = "herald-wake";
    /// `herald-redrive-of: <dlq_seq>`: the delivery redrives this dead letter.
    pub const REDRIVE_OF: &str = "herald-redrive-of";

    /// `herald-dlq-function`: the function that dead-lettered the event.
    pub const DLQ_FUNCTION: &str = "herald-dlq-function";
    /// `herald-dlq-reason`: why (`handler_error`, `terminal_error`, …).
    pub const DLQ_REASON: &str = "herald-dlq-reason";
    /// `herald-dlq-error`: the last error, one line, at most 1024 bytes, percent-encoded.
    pub const DLQ_ERROR: &str = "herald-dlq-error";
    /// `herald-dlq-attempts`: attempts made.
    pub const DLQ_ATTEMPTS: &str = "herald-dlq-attempts";
    /// `herald-dlq-stream`: the original's stream.
    pub const DLQ_STREAM: &str = "herald-dlq-stream";
    /// `herald-dlq-stream-seq`: the original's stream sequence.
    pub const DLQ_STREAM_SEQ: &str = "herald-dlq-stream-seq";
    /// `herald-dlq-subject`: the original's subject.
    pub const DLQ_SUBJECT: &str = "herald-dlq-subject";
    /// `herald-dlq-time`: when it was dead-lettered (RFC 3339 UTC).
    pub const DLQ_TIME: &str = "herald-dlq-time";
    /// `herald-dlq-step`: the step that failed, for runs with durable steps.
    pub const DLQ_STEP: &str = "herald-dlq-step";
    /// The prefix of every `herald-dlq-*` header (not copied by a redrive).
    pub const DLQ_PREFIX: &str = "herald-dlq-";

    /// The CloudEvents version Herald writes in [`SPEC_VERSION`].
    pub const SPEC_VERSION_VALUE: &str = "1.0";
    /// The only data content type of protocol version 1, meant when [`DATA_CONTENT_TYPE`]
    /// is absent.
    pub const JSON_CONTENT_TYPE: &str = "application/json";
    /// The `content-type` of a structured-mode CloudEvent.
    pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
    /// The value of [`CONTINUATION`].
    pub const CONTINUATION_VALUE: &str = "1";
    /// The [`NATS_TTL`] value that keeps a message until it is removed explicitly.
    pub const TTL_NEVER: &str = "never";

    /// Every `herald-dlq-*` header name, in the order of protocol section 6.
    pub const DLQ_HEADERS: [&str; 9] = [
        DLQ_FUNCTION,
        DLQ_REASON,
        DLQ_ERROR,
        DLQ_ATTEMPTS,
        DLQ_STREAM,
        DLQ_STREAM_SEQ,
        DLQ_SUBJECT,
        DLQ_TIME,
        DLQ_STEP,
    ];

    /// Whether `name` is a `herald-dlq-*` header (case-insensitively).
    pub fn is_dead_letter_header(name: &str) -> bool {
        name.len() >= DLQ_PREFIX.len()
            && name.as_bytes()[..DLQ_PREFIX.len()].eq_ignore_ascii_case(DLQ_PREFIX.as_bytes())
    }
}

/// The [`header::NATS_SCHEDULE`] value of a message scheduled once at `rfc3339_utc` (whole
/// seconds, e.g. `2026-11-25T08:00:00Z`): `@at <time>`.
pub fn schedule_at(rfc3339_utc: &str) -> String {
    format!("@at {rfc3339_utc}")
}

/// `Nats-Msg-Id` values Herald builds (protocol section 6). Each makes one operation on one
/// message land once within the target stream's duplicate window.
pub mod msg_id {
    /// The id of the dead letter of `function` for the delivery at `stream_sequence` of
    /// `stream`: `dlq:F:<stream>:<seq>`. The worker and the sweeper build the same one.
    pub fn dead_letter(function: &str, stream: &str, stream_sequence: u64) -> String {
        format!("dlq:{function}:{stream}:{stream_sequence}")
    }

    /// The id of the redrive of the dead letter at `dlq_sequence` to `function`:
    /// `redrive:F:<dlq_seq>`.
    pub fn redrive(function: &str, dlq_sequence: u64) -> String {
        format!("redrive:{function}:{dlq_sequence}")
    }

    /// The id of the replay `replay_id` of the event at `stream_sequence` to `function`:
    /// `replay:F:<replay id>:<seq>`.
    pub fn replay(function: &str, replay_id: &str, stream_sequence: u64) -> String {
        format!("replay:{function}:{replay_id}:{stream_sequence}")
    }
}

/// Keys of the runs bucket `ns-runs` (protocol section 7).
///
/// A run is one function handling one event; its key is `F.<event-key>`
/// ([`run_key`](runs::run_key)), and its steps, failure position and failure-handler
/// markers live under it.
pub mod runs {
    use super::{Digest, Sha256};

    /// The run id of a replayed delivery: `<ce-id>#replay:<replay id>`, so a replay is a
    /// fresh run whose key differs from the original's.
    pub fn replay_run_id(event_id: &str, replay_id: &str) -> String {
        format!("{event_id}#replay:{replay_id}")
    }

    /// The key-safe form of a run id: the id itself when it matches `[A-Za-z0-9_-]{1,128}`,
    /// else `h-` and the hex SHA-256 of the id.
    pub fn event_key(event_id: &str) -> String {
        if key_safe(event_id) {
            event_id.to_owned()
        } else {
            let hash = Sha256::digest(event_id.as_bytes());
            let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
            format!("h-{hex}")
        }
    }

    /// A step name made key-safe: every character outside `[A-Za-z0-9_-]` becomes `_` (an
    /// empty name becomes `_`). Repeated names in one run get `.2`, `.3` appended
    /// ([`numbered_step_key`]).
    pub fn step_key_base(name: &str) -> String {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if key.is_empty() { "_".to_owned() } else { key }
    }

    /// The step key of the `occurrence`-th step (1-based) named with `base` in one run:
    /// `base`, then `base.2`, `base.3`…
    pub fn numbered_step_key(base: &str, occurrence: u32) -> String {
        if occurrence <= 1 {
            base.to_owned()
        } else {
            format!("{base}.{occurrence}")
        }
    }

    /// The run key of `function` for an event key: `F.<event-key>`. The finished run's
    /// record (`ok` or `dead_lettered`) is stored under it.
    pub fn run_key(function: &str, event_key: &str) -> String {
        let mut key = String::with_capacity(function.len() + 1 + event_key.len());
        key.push_str(function);
        key.push('.');
        key.push_str(event_key);
        key
    }

    /// [`run_key`] of the [`event_key`] of `event_id`, in one allocation when the id is its
    /// own key.
    ///
    /// ```
    /// use herald::protocol::runs;
    ///
    /// assert_eq!(runs::run_key_of_event("send-welcome", "signup-42"), "send-welcome.signup-42");
    /// assert_eq!(
    ///     runs::run_key_of_event("f", "a.b"),
    ///     runs::run_key("f", &runs::event_key("a.b"))
    /// );
    /// ```
    pub fn run_key_of_event(function: &str, event_id: &str) -> String {
        if key_safe(event_id) {
            run_key(function, event_id)
        } else {
            run_key(function, &event_key(event_id))
        }
    }

    /// Whether an id is its own event key: `[A-Za-z0-9_-]{1,128}`.
    fn key_safe(event_id: &str) -> bool {
        !event_id.is_empty()
            && event_id.len() <= 128
            // Without a branch per byte: every id read is checked to its end anyway.
            && event_id
                .bytes()
                .fold(true, |safe, b| safe & KEY_BYTES[usize::from(b)])
    }

    /// The bytes of `[A-Za-z0-9_-]`, as a table: one load per byte of an id, read for
    /// every delivery.
    const KEY_BYTES: [bool; 256] = {
        let mut table = [false; 256];
        let mut byte = 0;
        while byte < 256 {
            table[byte] =
                matches!(byte as u8, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-');
            byte += 1;
        }
        table
    };

    /// The prefix of every step record of a run: `F.<event-key>.s.`.
    pub fn steps_prefix(run_key: &str) -> String {
        format!("{run_key}.s.")
    }

    /// The key of a step record: `F.<event-key>.s.<step-key>`.
    pub fn step_record_key(run_key: &str, step_key: &str) -> String {
        format!("{run_key}.s.{step_key}")
    }

    /// The `ce-id` (and `Nats-Msg-Id`) of the event `ctx.send_event` publishes in step
    /// `step_key` of the run `run_key`: `<run key>.<step-key>`, or `h-` and the registry
    /// digest of that text when it is longer than 256 characters (the limit of an event id).
    pub fn send_event_id(run_key: &str, step_key: &str) -> String {
        let id = format!("{run_key}.{step_key}");
        if id.len() <= 256 {
            return id;
        }
        format!(
            "h-{}",
            crate::schema::digest(&serde_json::Value::String(id))
        )
    }

    /// The key of a run's failure position: `F.<event-key>.p`.
    pub fn failure_key(run_key: &str) -> String {
        format!("{run_key}.p")
    }

    /// The key that marks that the failure handler ran for the dead-lettered delivery at
    /// `stream_sequence`: `F.<event-key>.x.<stream_seq>`.
    pub fn failure_handled_key(run_key: &str, stream_sequence: u64) -> String {
        format!("{run_key}.x.{stream_sequence}")
    }
}

/// Keys of the schema registry bucket `ns-schemas` (protocol section 5).
pub mod registry_keys {
    /// The prefix of every version key, `ver.`.
    pub const VERSION_PREFIX: &str = "ver.";
    /// Every version key, `ver.>` (what workers watch).
    pub const VERSIONS_WILDCARD: &str = "ver.>";

    /// An immutable schema version: `ver.T.N`.
    pub fn version(event_type: &str, version: u32) -> String {
        format!("{VERSION_PREFIX}{event_type}.{version}")
    }

    /// The prefix of every version of a type: `ver.T.`.
    pub fn versions_of(event_type: &str) -> String {
        format!("{VERSION_PREFIX}{event_type}.")
    }

    /// Splits a version key `ver.T.N` into (T, N).
    pub fn parse_version(key: &str) -> Option<(&str, u32)> {
        let (event_type, version) = key.strip_prefix(VERSION_PREFIX)?.rsplit_once('.')?;
        Some((event_type, version.parse().ok()?))
    }

    /// The latest version of a type: `latest.T`.
    pub fn latest(event_type: &str) -> String {
        format!("latest.{event_type}")
    }

    /// The compatibility mode of a type: `cfg.T`.
    pub fn config(event_type: &str) -> String {
        format!("cfg.{event_type}")
    }

    /// Which type and version hold a schema digest: `digest.D`.
    pub fn digest(digest: &str) -> String {
        format!("digest.{digest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespace {
        Namespace::new("shop").unwrap()
    }

    #[test]
    fn a_redrive_consumer_is_named_so_that_no_function_id_can_be_it() {
        assert_eq!(redrive_consumer("send-welcome"), "send-welcome_REDRIVE");
        assert_eq!(
            redrive_consumer_function("send-welcome_REDRIVE"),
            Some("send-welcome")
        );
        assert_eq!(redrive_consumer_function("send-welcome"), None);
        assert_eq!(redrive_consumer_function("_REDRIVE"), None);
        // Function ids are `[a-z0-9][a-z0-9_-]*`: none ends with the suffix.
        assert!(
            REDRIVE_CONSUMER_SUFFIX
                .bytes()
                .any(|b| b.is_ascii_uppercase())
        );
    }

    #[test]
    fn an_id_is_its_own_key_exactly_when_every_character_is_key_safe() {
        for c in (0..=255_u8).map(char::from).chain(['é', '€', '😀']) {
            let id = format!("ab{c}");
            let safe = c.is_ascii_alphanumeric() || c == '_' || c == '-';
            assert_eq!(runs::event_key(&id) == id, safe, "{c:?}");
            assert_eq!(
                runs::run_key_of_event("f", &id),
                runs::run_key("f", &runs::event_key(&id))
            );
        }
    }

    #[test]
    fn subjects_and_streams() {
        assert_eq!(events_prefix(&ns()), "shop.events.");
        assert_eq!(
            event_type_of_subject(&ns(), "shop.events.order.placed"),
            Some("order.placed")
        );
        assert_eq!(event_type_of_subject(&ns(), "shop.redrive.f"), None);
        assert_eq!(event_type_of_subject(&ns(), "shopx.events.a"), None);
        assert_eq!(event_type_of_subject(&ns(), "shop.events."), None);
        assert_eq!(
            schedule_subject(&ns(), "mailer", "h-00ff"),
            "shop.redrive.mailer.sched.h-00ff"
        );
        assert_eq!(kv_stream("shop-runs"), "KV_shop-runs");
        assert_eq!(
            data_schema_urn(&ns(), "order.placed", 3),
            "urn:shop:schema:order.placed:3"
        );
        assert_eq!(
            parse_data_schema(&ns(), "urn:shop:schema:order.placed:3"),
            Some(("order.placed".to_owned(), 3))
        );
        assert_eq!(parse_data_schema(&ns(), "urn:other:schema:a:1"), None);
        assert_eq!(
            schedule_at("2026-11-25T08:00:00Z"),
            "@at 2026-11-25T08:00:00Z"
        );
    }

    #[test]
    fn max_deliver_is_attempts_plus_two() {
        assert_eq!(max_deliver(5), 7);
        assert_eq!(max_deliver(1), 3);
        assert_eq!(attempts_of_max_deliver(7), Some(5));
        assert_eq!(attempts_of_max_deliver(-1), None);
        assert_eq!(attempts_of_max_deliver(2), None);
    }

    #[test]
    fn message_ids() {
        assert_eq!(
            msg_id::dead_letter("f", "NS_EVENTS", 42),
            "dlq:f:NS_EVENTS:42"
        );
        assert_eq!(msg_id::redrive("f", 7), "redrive:f:7");
        assert_eq!(msg_id::replay("f", "r1", 9), "replay:f:r1:9");
    }

    #[test]
    fn run_keys() {
        assert_eq!(runs::event_key("signup-42_a"), "signup-42_a");
        let hashed = runs::event_key("has space");
        assert!(hashed.starts_with("h-") && hashed.len() == 66, "{hashed}");
        assert_eq!(runs::event_key(&"x".repeat(129)).len(), 66);
        assert_eq!(runs::event_key(&"x".repeat(128)), "x".repeat(128));
        assert_eq!(runs::event_key("").len(), 66);

        let replay = runs::replay_run_id("e1", "r7");
        assert_eq!(replay, "e1#replay:r7");
        assert!(runs::event_key(&replay).starts_with("h-"));

        assert_eq!(runs::step_key_base("charge card"), "charge_card");
        assert_eq!(runs::step_key_base("a.b/c"), "a_b_c");
        assert_eq!(runs::step_key_base(""), "_");
        assert_eq!(runs::numbered_step_key("mail", 1), "mail");
        assert_eq!(runs::numbered_step_key("mail", 3), "mail.3");

        let run = runs::run_key("f", "e1");
        assert_eq!(run, "f.e1");
        assert_eq!(runs::steps_prefix(&run), "f.e1.s.");
        assert_eq!(runs::step_record_key(&run, "mail.2"), "f.e1.s.mail.2");
        assert_eq!(runs::failure_key(&run), "f.e1.p");
        assert_eq!(runs::failure_handled_key(&run, 12), "f.e1.x.12");
    }

    #[test]
    fn registry_keys() {
        assert_eq!(
            registry_keys::version("order.placed", 2),
            "ver.order.placed.2"
        );
        assert_eq!(
            registry_keys::versions_of("order.placed"),
            "ver.order.placed."
        );
        assert_eq!(
            registry_keys::parse_version("ver.order.placed.12"),
            Some(("order.placed", 12))
        );
        assert_eq!(registry_keys::parse_version("latest.a.1"), None);
        assert_eq!(registry_keys::parse_version("ver.a.x"), None);
        assert_eq!(registry_keys::latest("a.b"), "latest.a.b");
        assert_eq!(registry_keys::config("a.b"), "cfg.a.b");
        assert_eq!(registry_keys::digest("00ff"), "digest.00ff");
    }

    #[test]
    fn transport_headers_are_dropped_in_any_case() {
        let mut original = HeaderMap::new();
        original.insert(header::NATS_MSG_ID, "x");
        original.insert("nats-expected-stream", "y");
        original.insert("NATS-TTL", "never");
        original.insert(header::ID, "e1");
        original.insert(header::WAKE, "sleep");
        original.append("x-multi", "1");
        original.append("x-multi", "2");
        let copy = copy_headers_except_transport(&original, &["HERALD-wake"]);
        let names: Vec<String> = copy.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(copy.get(header::ID).map(|v| v.as_str()), Some("e1"));
        assert_eq!(copy.get_all("x-multi").count(), 2);
        assert!(is_transport_header("Nats-Schedule"));
        assert!(!is_transport_header("nat"));
        assert!(!is_transport_header("natsx"));
    }

    #[test]
    fn dead_letter_headers_are_recognised() {
        for name in header::DLQ_HEADERS {
            assert!(header::is_dead_letter_header(name), "{name}");
        }
        assert!(header::is_dead_letter_header("Herald-DLQ-Reason"));
        assert!(!header::is_dead_letter_header(header::REDRIVE_OF));
    }
}
