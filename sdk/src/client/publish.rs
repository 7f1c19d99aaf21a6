//! Publishing: a type's entry and schema, found once per client; validating, setting the
//! envelope headers and sending.

use std::any::TypeId;
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use super::ack::map_publish_error;
use super::envelope::{TypeHeaders, names};
use super::{Client, PendingAck, PublishError, PublishOptions};
use crate::headers;
use crate::names::{EventType, check_event_id};
use crate::schema::{CompiledSchema, SerializeError};
use crate::{Event, trace};
use async_nats::Subject;
use async_nats::header::HeaderValue;
use async_nats::jetstream;

/// A schema this client validates against, and the registry version naming it.
pub(super) struct Known {
    schema: Arc<CompiledSchema>,
    data_schema: Option<String>,
}

impl Known {
    /// The `ce-dataschema` header value, if the registry names the version.
    fn data_schema_header(&self) -> Option<HeaderValue> {
        self.data_schema.clone().map(HeaderValue::from)
    }
}

/// What a client keeps per Rust event type, so that a publish formats and looks up nothing
/// it already knows.
pub(super) struct TypeEntry {
    /// `ns.events.T`, interned ([`interned_subject`]).
    subject: &'static str,
    /// `T` as the `ce-type` header value.
    type_header: HeaderValue,
    /// The headers every event of `T` carries alike, without `ce-dataschema`.
    headers: TypeHeaders,
    /// The same with `ce-dataschema`, once `known` is set and names a version.
    headers_with_schema: std::sync::OnceLock<Option<TypeHeaders>>,
    /// The length of the last payload of the type: the next one is serialised into a
    /// buffer of that size, which fits events of one size without growing.
    last_payload_len: AtomicUsize,
    /// The schema, compiled (and registered, with the registry) on the first validated
    /// publish; a failure leaves it unset for the next publish to try again.
    known: tokio::sync::OnceCell<Arc<Known>>,
}

/// `subject` as a `&'static str`, kept once per process for every client that publishes
/// to it. async-nats takes a subject by reference and clones it; a static one is cloned
/// without copying the bytes or touching a reference count that the connection's thread
/// also touches when it drops the subject. Only the subjects of typed events (`ns.events.T`
/// of a Rust type `T`) are interned, so there are as many as the program has event types
/// per namespace.
fn interned_subject(subject: String) -> &'static str {
    static SUBJECTS: std::sync::OnceLock<
        parking_lot::Mutex<std::collections::HashSet<&'static str>>,
    > = std::sync::OnceLock::new();
    let mut subjects = SUBJECTS.get_or_init(Default::default).lock();
    if let Some(interned) = subjects.get(subject.as_str()) {
        return interned;
    }
    let interned: &'static str = Box::leak(subject.into_boxed_str());
    subjects.insert(interned);
    interned
}

/// An event about to be sent: what its subject and headers are made of, besides what each
/// publish adds (id, time, trace context).
struct Outgoing<'h> {
    /// The event type (also the `event_type` of the published-events counter).
    event_type: opentelemetry::StringValue,
    subject: Subject,
    /// The headers its type's events carry alike (`ce-type`, `ce-dataschema`, …).
    headers: &'h TypeHeaders,
    /// `ce-subject` from the event (`PublishOptions::subject` overrides it), not encoded.
    ce_subject: Option<String>,
}

/// A `TypeId` is already a hash of the type: hashing it again (SipHash) would cost more
/// than the rest of a map lookup.
#[derive(Default)]
pub(super) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

/// The envelope header names, built once (protocol section 4).
/// A new event id: a UUIDv7, hyphenated, lower case.
fn new_event_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// `value` percent-encoded for a header, reusing its allocation when nothing needs encoding.
fn encoded_header_value(value: String) -> String {
    match headers::encode_value(&value) {
        std::borrow::Cow::Owned(encoded) => encoded,
        std::borrow::Cow::Borrowed(_) => value,
    }
}

impl Client {
    /// The headers this client's events of one type carry alike.
    fn type_headers(
        &self,
        event_type: HeaderValue,
        data_schema: Option<HeaderValue>,
    ) -> TypeHeaders {
        TypeHeaders::new(
            self.inner.spec_version_header.clone(),
            self.inner.source_header.clone(),
            event_type,
            data_schema,
        )
    }

    /// This client's entry for the Rust type `E`, created on first use.
    pub(super) fn type_entry<E: Event>(&self) -> Arc<TypeEntry> {
        let key = TypeId::of::<E>();
        if let Some(entry) = self.inner.by_rust_type.read().get(&key) {
            return Arc::clone(entry);
        }
        let entry = Arc::new(TypeEntry {
            subject: interned_subject(self.inner.namespace.event_subject(E::TYPE)),
            type_header: HeaderValue::from(E::TYPE),
            headers: self.type_headers(HeaderValue::from(E::TYPE), None),
            headers_with_schema: std::sync::OnceLock::new(),
            last_payload_len: AtomicUsize::new(256),
            known: tokio::sync::OnceCell::new(),
        });
        Arc::clone(self.inner.by_rust_type.write().entry(key).or_insert(entry))
    }

    /// The schema of `E`: compiled (and registered, with the registry) once.
    pub(super) async fn known<'e, E: Event>(
        &self,
        entry: &'e TypeEntry,
    ) -> Result<&'e Arc<Known>, PublishError> {
        entry
            .known
            .get_or_try_init(|| async {
                let schema = Arc::new(CompiledSchema::of::<E>()?);
                let data_schema = if self.inner.use_registry {
                    let registry = self.registry().await?;
                    Some(
                        registry
                            .register(E::TYPE, schema.schema())
                            .await?
                            .data_schema,
                    )
                } else {
                    None
                };
                let known = Arc::new(Known {
                    schema,
                    data_schema,
                });
                self.inner
                    .by_event_type
                    .write()
                    .entry(E::TYPE.to_owned())
                    .or_insert_with(|| Arc::clone(&known));
                Ok(known)
            })
            .await
    }

    /// The schema for untyped publishing of `event_type`: a local one, else (with the
    /// registry on) the latest registered version.
    async fn known_by_type(&self, event_type: &str) -> Result<Option<Arc<Known>>, PublishError> {
        if let Some(known) = self.inner.by_event_type.read().get(event_type) {
            return Ok(Some(Arc::clone(known)));
        }
        if !self.inner.use_registry {
            return Ok(None);
        }
        let registry = self.registry().await?;
        let Some(latest) = registry.latest(event_type).await? else {
            return Ok(None);
        };
        let schema = Arc::new(CompiledSchema::compile(event_type, latest.schema)?);
        let known = Arc::new(Known {
            schema,
            data_schema: Some(crate::registry::data_schema_urn(
                &self.inner.namespace,
                event_type,
                latest.version,
            )),
        });
        self.inner
            .by_event_type
            .write()
            .insert(event_type.to_owned(), Arc::clone(&known));
        Ok(Some(known))
    }

    /// Publishes a typed event: serialises it, validates it against its schema (unless
    /// validation is off), sets the envelope headers and sends it. The first `.await` sends;
    /// awaiting the returned [`PendingAck`] waits for the stream's ack.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<PendingAck, PublishError> {
        self.publish_with(event, PublishOptions::default()).await
    }

    /// [`publish`](Self::publish) with an id, subject, time or validation of your choice.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        options: PublishOptions,
    ) -> Result<PendingAck, PublishError> {
        let entry = self.type_entry::<E>();
        let known = if !options.validate.unwrap_or(self.inner.validate) {
            None
        } else if let Some(known) = entry.known.get() {
            Some(known)
        } else {
            Some(self.known::<E>(&entry).await?)
        };
        // Serialised once: the bytes validated are the bytes sent.
        let mut payload = Vec::with_capacity(entry.last_payload_len.load(Ordering::Relaxed));
        let serialized = match known {
            Some(known) => known.schema.serialize_validated(event, &mut payload),
            None => serde_json::to_writer(&mut payload, event).map_err(SerializeError::Json),
        };
        match serialized {
            Ok(()) => {}
            Err(SerializeError::Invalid(violations)) => {
                self.count_invalid(E::TYPE.into());
                return Err(PublishError::InvalidPayload {
                    event_type: E::TYPE.to_owned(),
                    violations,
                });
            }
            Err(SerializeError::Json(source)) => {
                return Err(PublishError::Serialize {
                    event_type: E::TYPE.to_owned(),
                    source,
                });
            }
        }
        entry
            .last_payload_len
            .store(payload.len(), Ordering::Relaxed);
        let headers = known
            .and_then(|known| {
                entry
                    .headers_with_schema
                    .get_or_init(|| {
                        let data_schema = known.data_schema_header()?;
                        Some(self.type_headers(entry.type_header.clone(), Some(data_schema)))
                    })
                    .as_ref()
            })
            .unwrap_or(&entry.headers);
        let ce_subject = match &options.subject {
            Some(_) => None,
            None => event.ce_subject(),
        };
        let event = Outgoing {
            event_type: E::TYPE.into(),
            subject: Subject::from_static(entry.subject),
            headers,
            ce_subject,
        };
        self.send(event, payload, options).await
    }

    /// Publishes an untyped JSON payload as an event of `event_type`. With validation on, the
    /// type's schema must be known to this client (see [`add_local_schema`](Self::add_local_schema)).
    pub async fn publish_value(
        &self,
        event_type: &str,
        data: &serde_json::Value,
        options: PublishOptions,
    ) -> Result<PendingAck, PublishError> {
        let event_type = EventType::new(event_type)?;
        let mut data_schema = None;
        if options.validate.unwrap_or(self.inner.validate) {
            let known = self
                .known_by_type(event_type.as_str())
                .await?
                .ok_or_else(|| PublishError::UnknownSchema {
                    event_type: event_type.to_string(),
                })?;
            data_schema.clone_from(&known.data_schema);
            known.schema.validate(data).map_err(|violations| {
                self.count_invalid(event_type.to_string().into());
                PublishError::InvalidPayload {
                    event_type: event_type.to_string(),
                    violations,
                }
            })?;
        }
        let payload = serde_json::to_vec(data).map_err(|source| PublishError::Serialize {
            event_type: event_type.to_string(),
            source,
        })?;
        let subject = self.inner.namespace.event_subject(event_type.as_str());
        let headers = self.type_headers(
            HeaderValue::from(event_type.as_str()),
            data_schema.map(HeaderValue::from),
        );
        let event = Outgoing {
            event_type: event_type.to_string().into(),
            subject: Subject::from(subject),
            headers: &headers,
            ce_subject: None,
        };
        self.send(event, payload, options).await
    }

    async fn send(
        &self,
        event: Outgoing<'_>,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<PendingAck, PublishError> {
        let Outgoing {
            event_type: metric_type,
            subject,
            headers: type_headers,
            ce_subject,
        } = event;
        let event_type = metric_type.as_str();
        // `ce-time` only where the id does not say when the event happened: a UUIDv7 id
        // made now does (protocol section 4).
        let time = (options.id.is_some() || options.time.is_some())
            .then(|| headers::format_time(options.time.unwrap_or_else(SystemTime::now)));
        let event_id = match options.id {
            Some(id) => {
                check_event_id(&id)?;
                id
            }
            None => new_event_id(),
        };
        // `HeaderValue::from` checks a value for line breaks: the constant ones are built
        // (and checked) once per client or type.
        let mut headers = type_headers.event(HeaderValue::from(event_id.clone()));
        if let Some(time) = time {
            headers.put(names::TIME, HeaderValue::from(time));
        }
        if let Some(ce_subject) = options.subject.or(ce_subject) {
            headers.put(
                names::SUBJECT,
                HeaderValue::from(encoded_header_value(ce_subject)),
            );
        }
        if let Some((traceparent, tracestate)) = trace::current_trace_headers() {
            headers.put(names::TRACEPARENT, HeaderValue::from(traceparent));
            if let Some(tracestate) = tracestate {
                headers.put(names::TRACESTATE, HeaderValue::from(tracestate));
            }
        }
        let (map, header_bytes) = headers.finish();
        // "NATS/1.0\r\n" and the closing "\r\n". async-nats checks the limit before sending;
        // the size is kept for the error message.
        let size = payload.len() + header_bytes + 12;
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .headers(map);
        match self
            .inner
            .jetstream
            .send_publish(subject.clone(), message)
            .await
        {
            Ok(ack) => Ok(PendingAck::new(
                ack,
                metric_type.clone(),
                event_id,
                Arc::clone(&self.inner),
            )),
            Err(error) => Err(
                match map_publish_error(
                    error,
                    subject.to_string(),
                    event_id,
                    &self.inner.nats,
                    event_type,
                    self.inner.max_pending_acks,
                ) {
                    PublishError::PayloadTooLarge {
                        event_type, max, ..
                    } => PublishError::PayloadTooLarge {
                        event_type,
                        size,
                        max,
                    },
                    other => other,
                },
            ),
        }
    }
}
